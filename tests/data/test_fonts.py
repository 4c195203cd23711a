import os
import shutil

import numpy as np
import pytest

from metagan_hub.data import FontGlyphDataset, get_dataset
from metagan_hub.data.fonts import _render_face, find_system_fonts, font_faces, resolve_font_paths
from tests.testing_utils import missing_cjk_fonts

ALL_FONTS = find_system_fonts(None)
LATIN_ONLY = [f for f in ALL_FONTS if os.path.basename(f) == "DejaVuSans.ttf"]
NO_CJK = missing_cjk_fonts()
needs_cjk = pytest.mark.skipif(NO_CJK is not None, reason=f"Japanese fonts: {NO_CJK}")
needs_latin = pytest.mark.skipif(not LATIN_ONLY, reason="DejaVuSans.ttf is not installed")
needs_any = pytest.mark.skipif(not ALL_FONTS, reason="no fonts installed")


def test_missing_font_path_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"font path '.*nope\.ttf' does not exist"):
        FontGlyphDataset(characters="A", font_paths=[tmp_path / "nope.ttf"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a font file"):
        resolve_font_paths(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="holds no font files"):
        FontGlyphDataset(characters="A", font_paths=tmp_path)
    (tmp_path / "fake.ttf").write_text("not a font")
    with pytest.raises(ValueError, match=r"fake\.ttf' cannot be opened as a font"):
        FontGlyphDataset(characters="A", font_paths=tmp_path / "fake.ttf")


def test_font_dirs_variable_replaces_the_system_search(tmp_path, monkeypatch):
    monkeypatch.setenv("METAGAN_HUB_FONT_DIRS", "")  # hides every installed font
    assert find_system_fonts("ja") == [] and find_system_fonts(None) == []
    with pytest.raises(ValueError, match="no usable fonts found on this machine"):
        FontGlyphDataset(characters="A")
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "sub" / "Face.ttf").write_bytes(b"")
    (tmp_path / "a" / "LastResort.otf").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("x")
    monkeypatch.setenv("METAGAN_HUB_FONT_DIRS", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "missing")]))
    assert find_system_fonts("ja") == [os.path.realpath(tmp_path / "a" / "sub" / "Face.ttf")]


def test_no_fonts_installed_gives_install_hint(monkeypatch):
    import metagan_hub.data.fonts as fonts_module

    monkeypatch.setattr(fonts_module, "find_system_fonts", lambda lang="ja": [])
    with pytest.raises(ValueError, match="no usable fonts found on this machine.*apt-get install"):
        FontGlyphDataset(characters="A")


@needs_any
def test_characters_must_be_single_characters():
    with pytest.raises(ValueError, match="single characters"):
        FontGlyphDataset(characters=["ab", "c"], font_paths=(LATIN_ONLY or ALL_FONTS)[:1])


def test_last_resort_fonts_are_skipped(tmp_path):
    (tmp_path / "LastResort-Regular.ttf").write_text("x")
    assert resolve_font_paths([tmp_path / "LastResort-Regular.ttf"]) == []


@needs_latin
def test_font_lacking_glyphs_is_filtered():
    ds = FontGlyphDataset(characters="AB一永", font_paths=LATIN_ONLY, min_samples=1, resolution=16, use_cache=False)
    assert ds.class_names == ["A", "B"]  # DejaVu Sans has no kanji
    assert ds.filter_counts["missing"] + ds.filter_counts.get("empty", 0) == 2
    assert ds.filter_counts["dropped_classes"] == 2
    with pytest.raises(ValueError, match="no character has at least min_samples=2"):
        FontGlyphDataset(characters="AB", font_paths=LATIN_ONLY, use_cache=False).load()


@needs_any
def test_placeholder_and_empty_glyphs_are_filtered():
    path = (LATIN_ONLY or ALL_FONTS)[0]
    # the same bitmap drawn for four "different" characters is a placeholder box; a space draws nothing
    out, ok, counts = _render_face((path, 0, ["A", "A", "A", "A", "B", " "], 8, 2, 0.85, 3))
    assert ok.tolist() == [False, False, False, False, True, False]
    assert counts == {"placeholder": 4, "empty": 1}
    assert out[4].max() > 0


@needs_any
def test_exact_duplicate_faces_are_dropped(tmp_path):
    path = (LATIN_ONLY or ALL_FONTS)[0]
    for name in ("one.ttf", "two.ttf"):
        shutil.copy(path, tmp_path / name)
    faces = font_faces(resolve_font_paths(tmp_path))
    assert len(faces) == 2
    ds = FontGlyphDataset(characters="AB", font_paths=tmp_path, min_samples=1, resolution=16, use_cache=False)
    assert [ds.num_images(i) for i in range(ds.num_classes)] == [1, 1]
    assert ds.duplicate_faces == {str(faces[1]): str(faces[0])}
    assert set(ds.sample_faces(0)) == {str(faces[0])}


@needs_cjk
def test_system_cjk_fonts():
    ds = get_dataset("fonts", characters="永山川あA", resolution=16, channels=3)
    assert ds.num_classes >= 3 and "永" in ds.class_names
    i = ds.class_names.index("永")
    x = ds.class_images(i)
    assert x.shape[1:] == (3, 16, 16) and ds.num_images(i) >= 2
    flat = x.flatten(1)
    assert (flat[:, None] != flat[None]).any(-1).sum() == len(x) * (len(x) - 1)  # all samples distinct
    assert len(ds.sample_faces(i)) == ds.num_images(i)
    # cache hit equals cache miss
    again = get_dataset("fonts", characters="永山川あA", resolution=16, channels=3)
    assert again.cache_path == ds.cache_path and again.cache_path.is_file()
    assert np.array_equal(again.storage.numpy(), ds.storage.numpy()) and again.class_names == ds.class_names


@needs_cjk
def test_kanjivg_hands_mixed_in():
    ds = FontGlyphDataset(characters="永A", resolution=16, include_kanjivg=3, use_cache=False)
    i = ds.class_names.index("永")
    assert ds.sample_faces(i)[-3:] == ["kanjivg"] * 3
    assert "CC BY-SA 3.0" in ds.license_note
    if "A" in ds.class_names:  # kanjivg draws "A" as well
        assert "kanjivg" in ds.sample_faces(ds.class_names.index("A"))
