import numpy as np
import pytest
import torch
from PIL import Image

from metagan_hub.data.images import load_images, load_images_uint8


def test_pil_images_of_mixed_sizes_and_modes():
    images = [
        Image.new("RGB", (40, 30), (255, 0, 0)),
        Image.new("L", (7, 9), 128),
        Image.new("1", (16, 16), 1),
        Image.new("P", (20, 20), 3),
        Image.new("CMYK", (12, 40), (0, 0, 0, 0)),
        Image.fromarray(np.full((10, 10), 65535, np.uint16)),  # 16-bit gray
    ]
    gray = load_images(images, sample_size=8, channels=1)
    assert gray.shape == (6, 1, 8, 8) and gray.dtype == torch.float32
    assert gray.min() >= -1 and gray.max() <= 1
    assert abs(gray[0].mean().item() - (76 / 127.5 - 1)) < 1e-6  # pure red -> luma 76
    assert gray[2].min() == 1 and gray[4].min() == 1 and gray[5].min() == 1  # white
    rgb = load_images(images, sample_size=8, channels=3)
    assert rgb.shape == (6, 3, 8, 8)
    torch.testing.assert_close(rgb[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    assert torch.equal(rgb[1, 0], rgb[1, 2])  # gray repeated


def test_color_and_cropping_are_reported_once_per_call(caplog):
    red, gray_rgb = Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (8, 8), (9, 9, 9))
    with caplog.at_level("INFO", logger="metagan_hub.data.images"):
        load_images([red, gray_rgb, Image.new("L", (8, 8))], sample_size=8, channels=1)
    messages = [r.getMessage() for r in caplog.records]
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert messages[0].startswith("1 of 3 images are in color; this 1-channel model sees them in grayscale")
    assert messages[1].startswith("1 of 3 images are not square")  # an RGB image with equal channels is gray
    caplog.clear()
    with caplog.at_level("INFO", logger="metagan_hub.data.images"):
        load_images([red.resize((8, 8))], sample_size=8, channels=3)  # RGB model, square: nothing to report
    assert caplog.records == []


def test_alpha_is_composited_on_the_background():
    transparent_red = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    half = Image.new("LA", (4, 4), (0, 128))
    white = load_images([transparent_red, half], sample_size=4, channels=3)
    assert (white[0] == 1).all()  # fully transparent -> white background, not red
    assert abs(white[1].mean().item() - (127 / 127.5 - 1)) < 0.02  # black at 50% on white -> mid gray
    black = load_images([transparent_red], sample_size=4, channels=1, background="black")
    assert (black == -1).all()
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert (load_images([palette], sample_size=4, channels=1) == 1).all()


def test_resize_shorter_side_and_center_crop():
    array = np.full((32, 64), 255, np.uint8)
    array[:, 16:48] = 0  # black center square, white sides
    out = load_images([Image.fromarray(array)], sample_size=16, channels=1)
    assert out.shape == (1, 1, 16, 16) and out.max() < -0.8  # black (up to filter ringing at the crop edge)
    tall = load_images([Image.fromarray(array.T.copy())], sample_size=16, channels=1)
    assert tall.max() < -0.8


def test_numpy_inputs():
    u8 = np.zeros((3, 10, 10, 3), np.uint8)
    u8[..., 1] = 255
    out = load_images(u8, sample_size=10, channels=3)
    torch.testing.assert_close(out[:, :, 0, 0], torch.tensor([[-1.0, 1.0, -1.0]] * 3))
    floats = np.full((2, 6, 6, 1), 0.5, np.float32)
    assert load_images(floats, sample_size=6, channels=1).abs().max() < 0.01
    rgba = np.zeros((1, 4, 4, 4), np.float64)  # fully transparent black -> white
    assert (load_images(rgba, sample_size=4, channels=1) == 1).all()


def test_tensor_inputs_are_kept_exact_or_resized_in_float():
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(load_images(x, sample_size=8, channels=3), x)
    gray = load_images(x, sample_size=8, channels=1)
    torch.testing.assert_close(gray[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    resized = load_images(torch.zeros(2, 1, 12, 20), sample_size=6, channels=3)
    assert resized.shape == (2, 3, 6, 6) and resized.abs().max() < 1e-6
    assert load_images(x[0], sample_size=8, channels=3).shape == (1, 3, 8, 8)
    assert load_images_uint8(x, sample_size=8, channels=3).dtype == torch.uint8


def test_folder_and_file_paths(tmp_path):
    for i, size in enumerate([(10, 10), (30, 20), (5, 50)]):
        Image.new("RGB", size, (i * 100, 0, 0)).save(tmp_path / f"{i}.png")
    Image.new("L", (9, 9), 0).save(tmp_path / "3.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    Image.new("L", (9, 9), 0).save(tmp_path / "sub" / "ignored.png")
    out = load_images(tmp_path, sample_size=8, channels=1)
    assert out.shape == (4, 1, 8, 8)
    assert load_images(str(tmp_path / "1.png"), sample_size=8, channels=3).shape == (1, 3, 8, 8)
    assert load_images([tmp_path / "0.png", str(tmp_path / "3.jpg")], sample_size=4, channels=1).shape[0] == 2


def test_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"img": [Image.new("RGB", (6, 6), (0, 0, 0)), Image.new("RGB", (8, 8), (255, 255, 255))], "label": [0, 1]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")}),
    )
    out = load_images(ds, sample_size=4, channels=1, image_column="img")
    assert out.shape == (2, 1, 4, 4) and out[0].max() == -1 and out[1].min() == 1
    with pytest.raises(ValueError, match=r"`image_column`='image' is not a column.*\['img', 'label'\]"):
        load_images(ds, sample_size=4, channels=1)


# -- bad input ------------------------------------------------------------------------------------------------------
def _truncated_png(path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "make_input,match",
    [
        (lambda p: [], "`images` is empty"),
        (lambda p: np.zeros((0, 4, 4, 3), np.uint8), "`images` is empty"),
        (lambda p: torch.zeros(0, 1, 4, 4), "`images` is empty"),
        (lambda p: p, "holds no image files"),
        (lambda p: p / "missing", "does not exist"),
        (lambda p: [Image.new("L", (1, 8))], r"image 0 is 1x8 pixels"),
        (lambda p: torch.full((1, 1, 4, 4), float("nan")), "NaN or infinite"),
        (lambda p: torch.full((1, 1, 4, 4), float("inf")), "NaN or infinite"),
        (lambda p: torch.full((1, 1, 4, 4), 2.0), r"\[-1, 1\], got min 2 and max 2"),
        (lambda p: torch.zeros(1, 2, 4, 4), "C in"),
        (lambda p: torch.zeros(1, 1, 4, 4, dtype=torch.uint8), "floating point"),
        (lambda p: np.full((1, 4, 4, 3), np.nan, np.float32), "NaN or infinite"),
        (lambda p: np.full((1, 4, 4, 3), 255.0), r"\[0, 1\]"),
        (lambda p: np.zeros((1, 4, 4, 3), np.int32), "dtype int32"),
        (lambda p: np.zeros((4, 4)), r"\[N, H, W, C\]"),
        (lambda p: [Image.new("F", (4, 4))], "unsupported mode 'F'"),
        (lambda p: [Image.new("HSV", (4, 4))], "unsupported mode 'HSV'"),
        (lambda p: [3], r"`images\[0\]` is a int"),
        (lambda p: 3.0, "unsupported type float"),
    ],
)
def test_bad_inputs(tmp_path, make_input, match):
    with pytest.raises(ValueError, match=match):
        load_images(make_input(tmp_path), sample_size=4, channels=1)


def test_unreadable_and_truncated_files_are_named(tmp_path):
    _truncated_png(tmp_path / "broken.png")
    with pytest.raises(ValueError, match=r"broken\.png.*truncated"):
        load_images(tmp_path, sample_size=4, channels=1)
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        load_images([tmp_path / "broken.png"], sample_size=4, channels=1)


@pytest.mark.parametrize("kwargs,match", [({"sample_size": 1}, "sample_size"), ({"channels": 4}, "channels"),
                                          ({"background": "red"}, "background")])  # fmt: skip
def test_bad_options(kwargs, match):
    args = {"sample_size": 4, "channels": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        load_images([Image.new("L", (4, 4))], **args)
