import numpy as np
import pytest
import torch
from PIL import Image

from metagan_hub.data import HFImageDataset, ImageFolderDataset, get_dataset
from metagan_hub.training.tasks import TaskSampler


def make_folder(root, classes=("alpha", "beta", "gamma"), per_class=3):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            mode, size = [("RGB", (12, 20)), ("L", (9, 9)), ("RGBA", (30, 15))][i % 3]
            color = {"RGB": (c * 80, 0, 0), "L": c * 80, "RGBA": (c * 80, 0, 0, 255)}[mode]
            Image.new(mode, size, color).save(root / name / f"{i}.png")
    return root


def test_image_folder(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "alpha" / "nested").mkdir()
    Image.new("L", (4, 4), 0).save(root / "alpha" / "nested" / "deep.webp")
    (root / ".hidden").mkdir()
    Image.new("L", (4, 4), 0).save(root / "loose.png")  # not in a class folder: ignored
    ds = get_dataset("imagefolder", root=root, resolution=8, channels=3)
    assert isinstance(ds, ImageFolderDataset)
    assert ds.class_names == ["alpha", "beta", "gamma"]
    assert [ds.num_images(i) for i in range(3)] == [4, 3, 3]
    x = ds.class_images(1)
    assert x.shape == (3, 3, 8, 8) and x.min() >= -1 and x.max() <= 1


def test_image_folder_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class subfolders"):
        ImageFolderDataset(tmp_path)
    root = make_folder(tmp_path / "a")
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder '.*empty' holds no image files"):
        ImageFolderDataset(root)
    root = make_folder(tmp_path / "b")
    data = (root / "beta" / "0.png").read_bytes()
    (root / "beta" / "0.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"beta/0\.png"):
        ImageFolderDataset(root)


def test_single_class_folder_is_rejected_for_meta_training(tmp_path):
    root = make_folder(tmp_path / "one", classes=("only",), per_class=6)
    ds = ImageFolderDataset(root, resolution=8)
    with pytest.raises(ValueError, match=r"1 class\(es\) \['only'\].*min_classes=2"):
        TaskSampler(ds, shots=2)
    assert TaskSampler(ds, shots=2, min_classes=1).sample().class_name == "only"
    with pytest.raises(ValueError, match="at least one training class"):
        ds.split_classes()


def _hf_dataset(labels, label_feature=None):
    datasets = pytest.importorskip("datasets")
    images = [Image.new("L", (6 + i, 6), i * 20) for i in range(len(labels))]
    features = {"image": datasets.Image(), "label": label_feature or datasets.Value("string")}
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=datasets.Features(features))


def test_hf_dataset_string_labels():
    ds = HFImageDataset(_hf_dataset(["b", "a", "b", "c", "a"]), resolution=4)
    assert ds.class_names == ["a", "b", "c"]
    assert [ds.num_images(i) for i in range(3)] == [2, 2, 1]
    # dataset order is kept inside a class: rows 1 and 4 hold gray levels 20 and 80
    assert ds.class_images_uint8(0)[:, 0, 0, 0].tolist() == [20, 80]


def test_hf_dataset_class_label_and_columns():
    datasets = pytest.importorskip("datasets")
    labels = datasets.ClassLabel(names=["cat", "dog", "unused"])
    raw = _hf_dataset([1, 0, 1], label_feature=labels).rename_column("image", "picture")
    ds = get_dataset("hf", dataset_name=raw, image_column="picture", resolution=4, channels=3)
    assert ds.class_names == ["cat", "dog"]
    assert ds.class_images(1).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"`image_column`='image' is not a column.*\['picture', 'label'\]"):
        HFImageDataset(raw)
    with pytest.raises(ValueError, match=r"`label_column`='y' is not a column"):
        HFImageDataset(raw, image_column="picture", label_column="y")
    with pytest.raises(ValueError, match=r"`split`='test' is not a split.*\['train'\]"):
        HFImageDataset(datasets.DatasetDict({"train": raw}), split="test", image_column="picture")


def test_hf_local_imagefolder(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    root = make_folder(tmp_path / "imgs", classes=("x", "y"), per_class=2)
    ds = HFImageDataset(str(root), resolution=4, cache_dir=tmp_path / "hf_cache")
    assert ds.class_names == ["x", "y"] and [ds.num_images(i) for i in range(2)] == [2, 2]
    assert torch.equal(ds.class_images_uint8(1), ImageFolderDataset(root, resolution=4).class_images_uint8(1))
    assert np.isfinite(ds.class_images(0).numpy()).all()
