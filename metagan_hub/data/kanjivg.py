# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""KanjiVG glyphs rendered as an Omniglot-like few-shot dataset: class = character, samples = random "hands".

The stroke drawings come from the `kanjivg` package on PyPI (about 6,700 characters: 6,431 kanji plus kana, digits,
Latin letters and punctuation). Each sample renders the strokes of a character with a random stroke width, a small
global affine map (rotation, scale, aspect, shear, translation), per-stroke endpoint and control-point jitter and an
optional elastic distortion, all drawn from a generator seeded by `(seed, code point)`: the same options give the
same images on every machine, in any number of worker processes, at any resolution. Rendered arrays are cached on
disk (see [`metagan_hub.data.cache`]).

Licence: KanjiVG is copyright (C) 2009-2025 Ulrich Apel and released under the Creative Commons
Attribution-Share Alike 3.0 licence (CC BY-SA 3.0, https://creativecommons.org/licenses/by-sa/3.0/). Images rendered
from it, and models trained on them, should carry the attribution in [`LICENSE_NOTE`].
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ._strokes import StrokeJitter, read_svg_strokes, render_strokes
from .base import ArrayClassDataset, check_background
from .cache import cache_key, load_arrays, resolve_cache_dir, save_arrays

logger = logging.getLogger(__name__)

LICENSE_NOTE = (
    "Training images were rendered from KanjiVG (https://kanjivg.tagaini.net), copyright (C) Ulrich Apel, "
    "licensed under Creative Commons Attribution-Share Alike 3.0 "
    "(CC BY-SA 3.0, https://creativecommons.org/licenses/by-sa/3.0/)."
)

CHARACTER_SETS = ("kanji", "kana", "all")
KANJIVG_VIEW_BOX = 109.0
# glyphs per worker job; small enough to balance load, large enough to amortize process overhead
_JOB_CLASSES = 64
# below this many glyphs rendering stays in this process
_PARALLEL_MIN_GLYPHS = 4000


def is_kanji(char: str) -> bool:
    """Whether `char` is a CJK unified or compatibility ideograph."""
    c = ord(char)
    return 0x3400 <= c <= 0x4DBF or 0x4E00 <= c <= 0x9FFF or 0xF900 <= c <= 0xFAFF or c >= 0x20000


def is_kana(char: str) -> bool:
    """Whether `char` is hiragana or katakana."""
    return 0x3040 <= ord(char) <= 0x30FF


def kanjivg_dir(kanji_dir: str | os.PathLike | None = None) -> Path:
    """
    The folder of KanjiVG SVG files: `kanji_dir` if given, else the `kanji/` folder installed by the `kanjivg`
    package.

    Raises:
        `ImportError`: when `kanji_dir` is not given and the `kanjivg` package is not installed.
        `ValueError`: when the folder does not exist.
    """
    if kanji_dir is None:
        try:
            dist = importlib.metadata.distribution("kanjivg")
        except importlib.metadata.PackageNotFoundError as err:
            raise ImportError(
                "the kanjivg data source needs the `kanjivg` package: `pip install kanjivg` "
                "(or `pip install 'metagan-hub[data]'`)."
            ) from err
        folder = Path(dist.locate_file("kanji"))
        if not folder.is_dir():  # unusual layouts: look the folder up in the installed file list
            svg = next((f for f in dist.files or () if f.suffix == ".svg"), None)
            if svg is not None:
                folder = Path(dist.locate_file(svg)).parent
    else:
        folder = Path(kanji_dir)
    if not folder.is_dir():
        raise ValueError(f"`kanji_dir` {str(folder)!r} is not a folder of KanjiVG SVG files.")
    return folder


@functools.lru_cache(maxsize=8)
def _list_svgs(folder: str, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    files = []
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext != ".svg" or "-" in stem:
            continue
        try:
            files.append((chr(int(stem, 16)), os.path.join(folder, name)))
        except ValueError:
            continue
    return tuple(sorted(files, key=lambda item: ord(item[0])))


def kanjivg_files(kanji_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """
    Map each character to its KanjiVG SVG file (the base drawing `<hex code point>.svg`; variant drawings such as
    `04e14-Kaisho.svg` are skipped), in code-point order.
    """
    folder = kanjivg_dir(kanji_dir)
    files = dict(_list_svgs(str(folder), folder.stat().st_mtime_ns))
    if not files:
        raise ValueError(f"`kanji_dir` {str(folder)!r} holds no KanjiVG SVG files named like '04e00.svg'.")
    return files


def kanjivg_characters(character_set: str = "kanji", kanji_dir: str | os.PathLike | None = None) -> list[str]:
    """
    The characters KanjiVG draws, in code-point order.

    Args:
        character_set (`str`): `"kanji"` (CJK ideographs, 6,431 in kanjivg 20260714), `"kana"` or `"all"`.
        kanji_dir (`str` or `os.PathLike`, *optional*): folder of SVG files; defaults to the installed package.

    Example:

    ```py
    >>> from metagan_hub.data.kanjivg import kanjivg_characters
    >>> "永" in kanjivg_characters("kanji"), "あ" in kanjivg_characters("kana")
    (True, True)
    ```
    """
    if character_set not in CHARACTER_SETS:
        raise ValueError(f"`character_set` must be one of {CHARACTER_SETS}, got {character_set!r}.")
    chars = list(kanjivg_files(kanji_dir))
    if character_set == "kanji":
        chars = [c for c in chars if is_kanji(c)]
    elif character_set == "kana":
        chars = [c for c in chars if is_kana(c)]
    return chars


def class_rng(seed: int, char: str) -> np.random.Generator:
    """The generator of all random variation of `char`'s samples (independent of resolution and job split)."""
    return np.random.default_rng([int(seed), ord(char)])


def _render_job(job: tuple) -> np.ndarray:
    """Render `samples` hands of each `(char, svg path)`; returns uint8 `[len(items) * samples, H, W]` coverage."""
    items, samples, resolution, seed, jitter, supersample = job
    out = np.empty((len(items) * samples, resolution, resolution), dtype=np.uint8)
    for i, (char, path) in enumerate(items):
        try:
            strokes = read_svg_strokes(path)
        except (OSError, ValueError) as err:
            raise ValueError(f"could not read the KanjiVG drawing of {char!r} from {path}: {err}") from err
        if not strokes:
            raise ValueError(f"the KanjiVG drawing of {char!r} in {path} has no strokes.")
        out[i * samples : (i + 1) * samples] = render_strokes(
            strokes, samples, resolution, class_rng(seed, char), jitter, KANJIVG_VIEW_BOX, supersample
        )
    return out


def _pool_context():
    # Forking is cheap and keeps already-imported modules; workers only use numpy and Pillow.
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def default_num_workers() -> int:
    """Worker processes used for large renders: the CPUs this process may run on (at most 16)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 16))


def render_glyphs(
    files: Sequence[tuple[str, str | os.PathLike]],
    samples_per_class: int,
    resolution: int,
    seed: int,
    jitter: StrokeJitter,
    supersample: int,
    num_workers: int | None = None,
) -> np.ndarray:
    """
    Render `samples_per_class` hands of every `(character, svg_path)` in `files`.

    Returns:
        `np.ndarray`: uint8 ink coverage `[len(files) * samples_per_class, resolution, resolution]`, class after class.
    """
    items = [(c, str(p)) for c, p in files]
    total = len(items) * samples_per_class
    if num_workers is None:
        num_workers = default_num_workers() if total >= _PARALLEL_MIN_GLYPHS else 0
    jobs = [
        (items[i : i + _JOB_CLASSES], samples_per_class, resolution, seed, jitter, supersample)
        for i in range(0, len(items), _JOB_CLASSES)
    ]
    if num_workers <= 1 or len(jobs) <= 1:
        parts = [_render_job(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=min(num_workers, len(jobs)), mp_context=_pool_context()) as pool:
            parts = list(pool.map(_render_job, jobs))
    if not parts:
        return np.zeros((0, resolution, resolution), dtype=np.uint8)
    return np.concatenate(parts)


class KanjiVGDataset(ArrayClassDataset):
    """
    KanjiVG characters rendered with random, seeded variation: class = character, samples = "hands".

    The class list is known at construction; images are rendered (or loaded from the cache) on first access or by
    [`~ArrayClassDataset.load`]. Rendering 6,000 classes x 20 samples at 32x32 takes a couple of minutes on two
    cores the first time; later runs load the cached array in about a second. Ink is dark on a white background by
    default (`background="black"` gives white ink on black).

    Licence: KanjiVG is CC BY-SA 3.0; models trained on this data should include [`LICENSE_NOTE`] (also available
    as `dataset.license_note`) in their model card.

    Args:
        resolution (`int`, defaults to 32): image side length.
        channels (`int`, defaults to 1): 1 or 3 (gray repeated).
        samples_per_class (`int`, defaults to 20): rendered hands per character (Omniglot has 20 drawers).
        character_set (`str`, defaults to `"kanji"`): `"kanji"`, `"kana"` or `"all"` KanjiVG characters.
        characters (`str` or `Sequence[str]`, *optional*): explicit characters to use instead of `character_set`
            (a string is split into its characters).
        max_classes (`int`, *optional*): keep only the first `max_classes` characters in code-point order.
        seed (`int`, defaults to 0): seed of the render variation.
        jitter (`StrokeJitter`, *optional*): amount of variation; defaults to `StrokeJitter()`. `elastic` defaults
            to 0; pass e.g. `StrokeJitter(elastic=2.0)` for smooth elastic distortion, or
            `StrokeJitter(width_contrast=0.6, taper=0.6, pixelate=0.1)` for type-like stroke styles.
        supersample (`int`, *optional*): strokes are drawn at `resolution * supersample` and box-filtered down;
            defaults to the smallest factor that gives a canvas of at least 128 pixels (at least 2).
        background (`str`, defaults to `"white"`): `"white"` (dark ink) or `"black"` (white ink).
        cache_dir (`str` or `os.PathLike`, *optional*): cache folder (default `$METAGAN_HUB_CACHE` or
            `~/.cache/metagan_hub`).
        use_cache (`bool`, defaults to `True`): read and write the on-disk cache.
        num_workers (`int`, *optional*): worker processes for rendering; defaults to all CPUs for large renders and
            0 (render in this process) for small ones.
        kanji_dir (`str` or `os.PathLike`, *optional*): folder of KanjiVG SVG files; defaults to the installed
            `kanjivg` package.

    Example:

    ```py
    >>> from metagan_hub.data import KanjiVGDataset
    >>> dataset = KanjiVGDataset(resolution=32, samples_per_class=4, characters="一二三永", use_cache=False)
    >>> dataset.class_names
    ['一', '三', '二', '永']
    >>> dataset.class_images(3).shape
    torch.Size([4, 1, 32, 32])
    ```
    """

    license_note = LICENSE_NOTE

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        samples_per_class: int = 20,
        character_set: str = "kanji",
        characters: str | Sequence[str] | None = None,
        max_classes: int | None = None,
        seed: int = 0,
        jitter: StrokeJitter | None = None,
        supersample: int | None = None,
        background: str = "white",
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        num_workers: int | None = None,
        kanji_dir: str | os.PathLike | None = None,
    ):
        super().__init__(resolution=resolution, channels=channels)
        if isinstance(samples_per_class, bool) or not isinstance(samples_per_class, int) or samples_per_class < 1:
            raise ValueError(f"`samples_per_class` must be a positive integer, got {samples_per_class!r}.")
        if max_classes is not None and (
            isinstance(max_classes, bool) or not isinstance(max_classes, int) or max_classes < 1
        ):
            raise ValueError(f"`max_classes` must be None or a positive integer, got {max_classes!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"`seed` must be an integer, got {seed!r}.")
        if jitter is None:
            jitter = StrokeJitter()
        if not isinstance(jitter, StrokeJitter):
            raise ValueError(f"`jitter` must be a StrokeJitter, got {type(jitter).__name__}.")
        if supersample is None:
            supersample = max(2, -(-128 // self.resolution))
        if isinstance(supersample, bool) or not isinstance(supersample, int) or supersample < 1:
            raise ValueError(f"`supersample` must be a positive integer, got {supersample!r}.")
        check_background(background)

        files = kanjivg_files(kanji_dir)
        if characters is not None:
            chars = list(characters)
            if not chars:
                raise ValueError("`characters` is empty.")
            missing = [c for c in dict.fromkeys(chars) if c not in files]
            if missing:
                shown = "".join(missing[:20]) + ("..." if len(missing) > 20 else "")
                raise ValueError(f"KanjiVG has no drawing of {len(missing)} requested character(s): {shown!r}.")
            chars = sorted(set(chars), key=ord)
        else:
            all_chars = kanjivg_characters(character_set, kanji_dir)
            chars = [c for c in all_chars if c in files]
        if max_classes is not None:
            chars = chars[:max_classes]
        if not chars:
            raise ValueError(f"no KanjiVG characters selected (character_set={character_set!r}).")

        self.samples_per_class = samples_per_class
        self.seed = seed
        self.jitter = jitter
        self.supersample = supersample
        self.background = background
        self.use_cache = use_cache
        self.num_workers = num_workers
        self.cache_dir = resolve_cache_dir(cache_dir)
        self._chars = chars
        self._files = [files[c] for c in chars]

    # The class list is known without rendering.
    @property
    def num_classes(self) -> int:
        return len(self._chars)

    @property
    def class_names(self) -> list[str]:
        return list(self._chars)

    def num_images(self, index: int) -> int:
        self._check_index(index)
        return self.samples_per_class

    def render_params(self) -> dict:
        """Every parameter that affects the rendered pixels (hashed into the cache file name)."""
        try:
            version = importlib.metadata.version("kanjivg")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return {
            "source": "kanjivg",
            "kanjivg_version": version,
            "renderer": 1,
            "characters": "".join(self._chars),
            "samples_per_class": self.samples_per_class,
            "resolution": self.resolution,
            "seed": self.seed,
            "jitter": self.jitter.to_dict(),
            "supersample": self.supersample,
            "background": self.background,
        }

    @property
    def cache_path(self) -> Path:
        """The cache file of these render parameters."""
        return self.cache_dir / "kanjivg" / f"kanjivg-{self.resolution}px-{cache_key(self.render_params())}.npz"

    def _build(self):
        names = list(self._chars)
        offsets = np.arange(len(names) + 1) * self.samples_per_class
        if self.use_cache:
            cached = load_arrays(self.cache_path)
            if cached is not None and cached.get("images") is not None:
                images = cached["images"]
                if images.shape == (len(names) * self.samples_per_class, 1, self.resolution, self.resolution):
                    logger.info("loaded %d KanjiVG glyphs from %s", images.shape[0], self.cache_path)
                    return images, offsets, names
                logger.warning("cache file %s has an unexpected shape; rendering again", self.cache_path)
        logger.info(
            "rendering %d KanjiVG characters x %d samples at %dx%d",
            len(names),
            self.samples_per_class,
            self.resolution,
            self.resolution,
        )
        coverage = render_glyphs(
            list(zip(names, self._files)),
            self.samples_per_class,
            self.resolution,
            self.seed,
            self.jitter,
            self.supersample,
            self.num_workers,
        )
        if self.background == "white":
            np.subtract(255, coverage, out=coverage)
        images = coverage[:, None]  # [total, 1, H, W]
        if self.use_cache:
            try:
                save_arrays(self.cache_path, images=images)
            except OSError as err:
                logger.warning("could not write the cache file %s: %s", self.cache_path, err)
        return images, offsets, names
