import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from metagan_hub.data import ArrayClassDataset, ClassSubset, DigitsDataset, get_dataset
from metagan_hub.data.base import convert_channels_uint8, default_split_sizes, uint8_to_float

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "metagan_hub"


def make_dataset(num_classes=12, per_class=(3, 5), resolution=4, channels=1, stored_channels=1):
    rng = np.random.default_rng(0)
    counts = [per_class[i % len(per_class)] for i in range(num_classes)]
    images = rng.integers(0, 256, (sum(counts), stored_channels, resolution, resolution), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
    names = [f"c{i:02d}" for i in range(num_classes)]
    return ArrayClassDataset(images, offsets, names, resolution=resolution, channels=channels)


def test_array_dataset_interface():
    ds = make_dataset()
    assert ds.num_classes == 12 and len(ds) == 12
    assert ds.class_names[3] == "c03"
    assert [ds.num_images(i) for i in range(3)] == [3, 5, 3]
    u8 = ds.class_images_uint8(1)
    assert u8.dtype == torch.uint8 and u8.shape == (5, 1, 4, 4)
    x = ds.class_images(1)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x, u8.float() / 127.5 - 1)
    # a copy: modifying it does not touch the storage
    u8.zero_()
    assert ds.class_images_uint8(1).any()
    assert ds.nbytes == ds.storage.numel()
    with pytest.raises(IndexError, match="class index"):
        ds.class_images(12)


def test_uint8_float_mapping():
    x = uint8_to_float(torch.tensor([0, 255, 128], dtype=torch.uint8))
    assert x[0] == -1 and x[1] == 1 and abs(x[2].item()) < 0.01


def test_channel_conversion():
    gray = make_dataset(channels=3)
    rgb = gray.class_images_uint8(0)
    assert rgb.shape[1] == 3 and torch.equal(rgb[:, 0], rgb[:, 2])
    colour = make_dataset(channels=1, stored_channels=3)
    assert colour.class_images_uint8(0).shape[1] == 1
    pixel = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert convert_channels_uint8(pixel, 1).item() == 76  # Pillow's convert("L") value for pure red


@pytest.mark.parametrize("kwargs", [{"resolution": 1}, {"channels": 2}, {"resolution": 4.0}])
def test_bad_resolution_or_channels(kwargs):
    args = {"resolution": 4, "channels": 1, **kwargs}
    with pytest.raises(ValueError, match="resolution|channels"):
        ArrayClassDataset(np.zeros((1, 1, 4, 4), np.uint8), [0, 1], ["a"], **args)


def test_bad_arrays():
    with pytest.raises(ValueError, match="offsets"):
        ArrayClassDataset(np.zeros((2, 1, 4, 4), np.uint8), [0, 1], ["a"], resolution=4, channels=1)
    with pytest.raises(ValueError, match="class_names"):
        ArrayClassDataset(np.zeros((2, 1, 4, 4), np.uint8), [0, 2], ["a", "b"], resolution=4, channels=1)
    with pytest.raises(ValueError, match="uint8"):
        ArrayClassDataset(np.zeros((2, 1, 4, 4), np.float32), [0, 2], ["a"], resolution=4, channels=1)


def test_split_disjoint_covering_and_deterministic():
    ds = make_dataset(num_classes=20)
    train, val, test = ds.split_classes(seed=3, num_val=4, num_test=5)
    names = [set(s.class_names) for s in (train, val, test)]
    assert [len(n) for n in names] == [11, 4, 5]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert names[0] | names[1] | names[2] == set(ds.class_names)
    again = ds.split_classes(seed=3, num_val=4, num_test=5)
    assert [s.class_names for s in again] == [s.class_names for s in (train, val, test)]
    other = ds.split_classes(seed=4, num_val=4, num_test=5)
    assert other[2].class_names != test.class_names
    # views read the parent's images
    for i, name in enumerate(train.class_names):
        j = ds.class_names.index(name)
        assert torch.equal(train.class_images_uint8(i), ds.class_images_uint8(j))
        assert train.num_images(i) == ds.num_images(j)


def test_split_defaults_and_errors():
    ds = make_dataset(num_classes=10)
    train, val, test = ds.split_classes()
    assert (train.num_classes, val.num_classes, test.num_classes) == default_split_sizes(10) == (7, 1, 2)
    with pytest.raises(ValueError, match="at least one training class"):
        ds.split_classes(num_val=5, num_test=5)
    with pytest.raises(ValueError, match="num_val"):
        ds.split_classes(num_val=-1, num_test=1)
    with pytest.raises(ValueError, match="at least one training class"):
        make_dataset(num_classes=2).split_classes()


def test_subset_of_subset_points_to_root():
    ds = make_dataset()
    sub = ds.subset([5, 2, 9]).subset([2, 0])
    assert isinstance(sub, ClassSubset) and sub.parent is ds
    assert sub.class_names == ["c09", "c05"]
    with pytest.raises(ValueError, match="distinct"):
        ds.subset([1, 1])


def test_split_and_tasks_identical_in_a_fresh_process():
    """A fresh interpreter (different hash seed) gets the same split and the same task stream."""
    code = textwrap.dedent(
        f"""
        import json, sys, types
        pkg = types.ModuleType("metagan_hub"); pkg.__path__ = [{str(PACKAGE_DIR)!r}]; sys.modules["metagan_hub"] = pkg
        import numpy as np
        from metagan_hub.data.base import ArrayClassDataset
        from metagan_hub.training.tasks import TaskSampler
        images = np.zeros((60, 1, 4, 4), dtype=np.uint8)
        dataset = ArrayClassDataset(images, list(range(0, 61, 6)), list("abcdefghij"), resolution=4, channels=1)
        train, val, test = dataset.split_classes(seed=5, num_val=2, num_test=3)
        tasks = TaskSampler(train, shots=3, queries=2, seed=9, rank=1, world_size=2).sample_batch(3)
        print(json.dumps([train.class_names, val.class_names, test.class_names,
                          [[t.class_index] + t.image_indices.tolist() for t in tasks]]))
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    theirs = json.loads(out.stdout.strip().splitlines()[-1])

    from metagan_hub.training.tasks import TaskSampler

    images = np.zeros((60, 1, 4, 4), dtype=np.uint8)
    dataset = ArrayClassDataset(images, list(range(0, 61, 6)), list("abcdefghij"), resolution=4, channels=1)
    train, val, test = dataset.split_classes(seed=5, num_val=2, num_test=3)
    tasks = TaskSampler(train, shots=3, queries=2, seed=9, rank=1, world_size=2).sample_batch(3)
    ours = [train.class_names, val.class_names, test.class_names]
    ours.append([[t.class_index] + t.image_indices.tolist() for t in tasks])
    assert theirs == ours


def test_digits_source():
    ds = get_dataset("digits", resolution=12, channels=3)
    assert ds.num_classes == 10 and ds.class_names == [str(d) for d in range(10)]
    assert sum(ds.num_images(i) for i in range(10)) == 1797
    x = ds.class_images(0)
    assert x.shape[1:] == (3, 12, 12)
    # dark ink on a white background: mostly paper
    assert x.mean() > 0.2
    black = DigitsDataset(resolution=8, background="black")
    assert black.class_images(0).mean() < -0.2


def test_get_dataset_errors():
    with pytest.raises(ValueError, match="unknown dataset 'omniglot'"):
        get_dataset("omniglot")
    with pytest.raises(ValueError, match="root"):
        get_dataset("imagefolder")
    with pytest.raises(ValueError, match="dataset_name"):
        get_dataset("hf")
