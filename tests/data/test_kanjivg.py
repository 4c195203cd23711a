import dataclasses
import os

import numpy as np
import pytest
import torch

from metagan_hub.data import LICENSE_NOTE, KanjiVGDataset, StrokeJitter, get_dataset, kanjivg_characters
from metagan_hub.data import cache as cache_module
from metagan_hub.data import kanjivg as kanjivg_module
from metagan_hub.data._strokes import parse_svg_path, render_strokes
from metagan_hub.data.kanjivg import kanjivg_files, render_glyphs

CHARS = "一二三永人大木水火土金日月山川田"


def small(**kwargs):
    args = {"resolution": 16, "samples_per_class": 4, "characters": CHARS[:6], **kwargs}
    return KanjiVGDataset(**args)


# -- SVG path parsing -----------------------------------------------------------------------------------------------
def test_parse_absolute_and_relative_commands():
    (p,) = parse_svg_path("M10,20 L40,20 l0,30 C40,60 50,60 50,50 s10,-10 10,0")
    assert p.shape == (13, 2)  # 4 cubic segments
    np.testing.assert_allclose(p[0], [10, 20])
    np.testing.assert_allclose(p[3], [40, 20])
    np.testing.assert_allclose(p[6], [40, 50])
    np.testing.assert_allclose(p[9], [50, 50])
    # smooth curve: first control point is the reflection of the previous second control point (50, 60)
    np.testing.assert_allclose(p[10], [50, 40])
    np.testing.assert_allclose(p[12], [60, 50])
    np.testing.assert_allclose(p[1], [20, 20])  # lines become cubics with controls at 1/3 and 2/3


def test_parse_compact_numbers_implicit_lineto_and_close():
    (p,) = parse_svg_path("m1.5.5 2-1e0-.5.5z")
    np.testing.assert_allclose(p[0], [1.5, 0.5])
    np.testing.assert_allclose(p[3], [3.5, -0.5])
    np.testing.assert_allclose(p[6], [3.0, 0.0])
    np.testing.assert_allclose(p[-1], [1.5, 0.5])  # closed back to the start
    assert len(parse_svg_path("M0,0 H5 V5 M9,9 Q10,10 11,9 T13,9")) == 2


@pytest.mark.parametrize("d,match", [("M0,0 A5,5 0 0 1 10,10", "unsupported"), ("10,10", "must start"),
                                     ("M0,0 C1,1 2,2", "missing")])  # fmt: skip
def test_parse_errors(d, match):
    with pytest.raises(ValueError, match=match):
        parse_svg_path(d)


def test_clean_render_is_deterministic_and_thin_lines_are_drawn():
    strokes = parse_svg_path("M10,54 L99,54")
    images = render_strokes(strokes, 2, 32, np.random.default_rng(0), StrokeJitter.none())
    assert images.shape == (2, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images[0], images[1])
    assert images[:, 15:17].max() > 200 and images[:, :8].max() == 0  # a horizontal bar in the middle


# -- stroke styles --------------------------------------------------------------------------------------------------
CROSS = "M10,30 L99,30 M30,10 L30,99"  # one horizontal and one vertical bar that do not overlap much


def _bars(jitter, samples=1):
    horizontal = render_strokes(parse_svg_path("M10,30 L99,30"), samples, 32, np.random.default_rng(0), jitter)
    vertical = render_strokes(parse_svg_path("M54,10 L54,99"), samples, 32, np.random.default_rng(0), jitter)
    return horizontal.astype(np.int64), vertical.astype(np.int64)


def test_stroke_styles_are_off_by_default_and_keep_the_cache_keys():
    jitter = StrokeJitter()
    assert not jitter.styled and not StrokeJitter.none().styled
    assert not {"width_contrast", "taper", "pixelate", "pixel_grid"} & set(jitter.to_dict())
    styled = StrokeJitter(taper=0.5)
    assert styled.styled and styled.to_dict()["taper"] == 0.5 and styled.to_dict()["pixel_grid"] == [10, 16]
    assert small(jitter=styled).cache_path != small().cache_path


def test_width_contrast_draws_vertical_parts_bolder_than_horizontal_ones():
    clean = StrokeJitter.none()
    plain_h, plain_v = _bars(clean)
    assert abs(plain_h.sum() - plain_v.sum()) < 0.05 * plain_h.sum()  # same length, same width
    h, v = _bars(dataclasses.replace(clean, width_contrast=0.95))  # its contrast: U(0, 0.95), drawn from the seed
    assert v.sum() > 1.5 * h.sum()
    assert h.sum() < plain_h.sum() < v.sum()


def test_taper_draws_strokes_bolder_at_their_start():
    h, _ = _bars(dataclasses.replace(StrokeJitter.none(), taper=1.9))
    first, second = h[0, :, :16].sum(), h[0, :, 16:].sum()  # the bar runs left to right
    assert first > 1.3 * second
    plain, _ = _bars(StrokeJitter.none())
    assert abs(plain[0, :, :16].sum() - plain[0, :, 16:].sum()) < 0.25 * plain[0, :, :16].sum()


def test_pixelate_draws_bitmap_glyphs_and_styles_are_seeded():
    jitter = StrokeJitter(pixelate=1.0, pixel_grid=(8, 8))
    strokes = parse_svg_path(CROSS)
    images = render_strokes(strokes, 3, 32, np.random.default_rng(1), jitter)
    assert set(np.unique(images)) <= {0, 255} and images.max() == 255
    for image in images:  # 8 x 8 cells of 4 x 4 pixels
        cells = image.reshape(8, 4, 8, 4)
        assert (cells == cells[:, :1, :, :1]).all()
    again = render_strokes(strokes, 3, 32, np.random.default_rng(1), jitter)
    assert np.array_equal(images, again)
    mixed = StrokeJitter(width_contrast=0.5, taper=0.5, pixelate=0.5)
    first = render_strokes(strokes, 8, 32, np.random.default_rng(2), mixed)
    assert np.array_equal(first, render_strokes(strokes, 8, 32, np.random.default_rng(2), mixed))
    assert not np.array_equal(first, render_strokes(strokes, 8, 32, np.random.default_rng(2), StrokeJitter()))
    blocky = [set(np.unique(x)) <= {0, 255} for x in first]
    assert 0 < sum(blocky) < 8  # about half of the samples are bitmap glyphs


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width_contrast": -0.1}, r"`width_contrast` must be a number in \[0, 1\), got -0.1"),
        ({"width_contrast": 1.0}, r"`width_contrast` must be a number in \[0, 1\), got 1.0"),
        ({"taper": float("nan")}, r"`taper` must be a number in \[0, 2\), got nan"),
        ({"taper": True}, r"`taper` must be a number in \[0, 2\), got True"),
        ({"pixelate": 1.5}, r"`pixelate` must be a number in \[0, 1\], got 1.5"),
        ({"pixel_grid": (1, 4)}, r"`pixel_grid` must be a tuple \(low, high\) .* got \(1, 4\)"),
        ({"pixel_grid": (12, 8)}, r"`pixel_grid` must be a tuple \(low, high\) .* got \(12, 8\)"),
        ({"pixel_grid": [8, 12]}, r"`pixel_grid` must be a tuple \(low, high\) .* got \[8, 12\]"),
    ],
)
def test_stroke_styles_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StrokeJitter(**kwargs)


# -- the dataset ----------------------------------------------------------------------------------------------------
def test_characters_and_license():
    kanji = kanjivg_characters("kanji")
    assert len(kanji) > 6000 and "一" in kanji and "あ" not in kanji
    assert len(kanjivg_characters("all")) > len(kanji) > len(kanjivg_characters("kana")) > 100
    assert "CC BY-SA 3.0" in LICENSE_NOTE and "KanjiVG" in LICENSE_NOTE
    assert "CC BY-SA 3.0" in (kanjivg_module.__doc__ or "")
    ds = small()
    assert ds.license_note == LICENSE_NOTE
    assert all(split.license_note == LICENSE_NOTE for split in ds.split_classes(num_val=1, num_test=1))


def test_lazy_class_list_and_shapes():
    ds = get_dataset("kanjivg", resolution=16, channels=3, samples_per_class=3, characters="永一", lazy=True)
    assert ds.class_names == ["一", "永"]  # code-point order
    assert ds.num_images(1) == 3 and ds._images is None  # nothing rendered yet
    x = ds.class_images(1)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    assert -1 <= x.min() < 0 and x.max() == 1  # ink and white paper
    assert KanjiVGDataset(character_set="kanji", max_classes=5).num_classes == 5
    eager = get_dataset("kanjivg", resolution=16, samples_per_class=3, characters="永一")
    assert eager._images is not None and eager.cache_path.is_file()


def test_variation_varies():
    ds = KanjiVGDataset(resolution=32, samples_per_class=8, characters=CHARS, use_cache=False)
    x = torch.stack([ds.class_images(i) for i in range(ds.num_classes)]).flatten(2)  # [C, S, D]
    c, s, _ = x.shape
    # samples of one class all differ
    for i in range(c):
        assert torch.cdist(x[i], x[i])[~torch.eye(s, dtype=torch.bool)].min() > 0
    # classes differ more than samples: distances and a leave-one-out nearest-class-mean classifier
    dist = torch.cdist(x.flatten(0, 1), x.flatten(0, 1)).view(c, s, c, s)
    same = torch.stack([dist[i, :, i][~torch.eye(s, dtype=torch.bool)].mean() for i in range(c)]).mean()
    other = torch.stack([dist[i, :, j].mean() for i in range(c) for j in range(c) if i != j]).mean()
    assert same < other
    correct = 0
    for i in range(c):
        for k in range(s):
            means = x.mean(1).clone()
            means[i] = (x[i].sum(0) - x[i, k]) / (s - 1)
            correct += int(torch.cdist(x[i, k][None], means).argmin() == i)
    assert correct / (c * s) > 0.6


def test_seed_and_jitter_control_the_variation():
    a, b, c = small(use_cache=False), small(use_cache=False), small(seed=1, use_cache=False)
    assert torch.equal(a.class_images_uint8(2), b.class_images_uint8(2))
    assert not torch.equal(a.class_images_uint8(2), c.class_images_uint8(2))
    clean = small(jitter=StrokeJitter.none(), use_cache=False).class_images_uint8(2)
    assert (clean == clean[0]).all()
    elastic = small(jitter=StrokeJitter(elastic=3.0), use_cache=False).class_images_uint8(2)
    assert not torch.equal(elastic, a.class_images_uint8(2))


def test_parallel_render_equals_serial():
    files = list(kanjivg_files().items())[1000:1070]  # two worker jobs
    serial = render_glyphs(files, 1, 8, 0, StrokeJitter(), 4, num_workers=0)
    parallel = render_glyphs(files, 1, 8, 0, StrokeJitter(), 4, num_workers=2)
    assert serial.shape == (70, 8, 8) and np.array_equal(serial, parallel)


# -- cache ----------------------------------------------------------------------------------------------------------
def test_cache_hit_equals_cache_miss(_isolated_cache, monkeypatch):
    miss = small()
    miss_images = miss.storage.clone()
    assert miss.cache_path.is_file() and str(miss.cache_path).startswith(str(_isolated_cache))
    assert not [f for f in miss.cache_path.parent.iterdir() if f.name.endswith(".tmp")]

    def no_render(*args, **kwargs):
        raise AssertionError("rendered although the cache holds these images")

    monkeypatch.setattr(kanjivg_module, "render_glyphs", no_render)
    hit = small()
    assert torch.equal(hit.storage, miss_images)
    # any change of a render parameter is a different cache entry
    assert small(seed=1).cache_path != miss.cache_path
    assert small(jitter=StrokeJitter(elastic=1.0)).cache_path != miss.cache_path
    assert small(resolution=20).cache_path != miss.cache_path


def test_cache_dir_argument_and_env(tmp_path, _isolated_cache):
    assert small().cache_path.parent.parent == _isolated_cache
    assert small(cache_dir=tmp_path / "elsewhere").cache_path.parent.parent == tmp_path / "elsewhere"
    ds = small(cache_dir=tmp_path / "off", use_cache=False)
    ds.load()
    assert not (tmp_path / "off").exists()


def test_damaged_cache_file_is_rebuilt(caplog):
    good = small().storage.clone()
    path = small().cache_path
    path.write_bytes(path.read_bytes()[:100])  # truncated, as if written by a killed process without os.replace
    with caplog.at_level("WARNING"):
        again = small()
        assert torch.equal(again.storage, good)
    assert "unreadable cache file" in caplog.text
    assert torch.equal(small().storage, good)  # rewritten correctly


def test_atomic_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "x.npz"

    def exploding_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.np, "savez", exploding_savez)
    with pytest.raises(OSError, match="disk full"):
        cache_module.save_arrays(target, images=np.zeros(3))
    assert os.listdir(tmp_path) == []


def test_cache_env_default(monkeypatch, tmp_path):
    monkeypatch.setenv("METAGAN_HUB_CACHE", str(tmp_path / "env"))
    assert cache_module.resolve_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("METAGAN_HUB_CACHE")
    assert cache_module.resolve_cache_dir().parts[-2:] == (".cache", "metagan_hub")


# -- bad input ------------------------------------------------------------------------------------------------------
def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no drawing of 1 requested character"):
        KanjiVGDataset(characters="一\u00e9")
    with pytest.raises(ValueError, match="samples_per_class"):
        KanjiVGDataset(samples_per_class=0)
    with pytest.raises(ValueError, match="character_set"):
        KanjiVGDataset(character_set="hanzi")
    with pytest.raises(ValueError, match="background"):
        KanjiVGDataset(background="grey")
    with pytest.raises(ValueError, match="kanji_dir"):
        KanjiVGDataset(kanji_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="no KanjiVG SVG files"):
        KanjiVGDataset(kanji_dir=tmp_path)


def test_broken_svg_names_the_file(tmp_path):
    (tmp_path / "04e00.svg").write_text('<svg><path d="M0,0 A1,1 0 0 1 5,5"/></svg>')
    ds = KanjiVGDataset(kanji_dir=tmp_path, characters="一", use_cache=False)
    with pytest.raises(ValueError, match="04e00.svg"):
        ds.load()
