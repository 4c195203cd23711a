# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Glyphs of installed fonts as a few-shot dataset: class = character, samples = font faces.

With the Japanese fonts packaged by Debian/Ubuntu this gives thousands of kanji classes with up to about 27 distinct
styles each (gothic, mincho, brush, pixel...). Install a few with

```bash
apt-get install -y fontconfig fonts-ipafont-gothic fonts-ipafont-mincho fonts-vlgothic fonts-misaki
```

or all of them with

```bash
apt-get install -y fonts-ipafont-gothic fonts-ipafont-mincho fonts-ipaexfont-gothic fonts-ipaexfont-mincho \\
    fonts-takao-gothic fonts-takao-mincho fonts-vlgothic fonts-sawarabi-gothic fonts-sawarabi-mincho \\
    fonts-horai-umefont fonts-konatu fonts-kouzan-mouhitsu fonts-aoyagi-kouzan-t fonts-aoyagi-soseki \\
    fonts-hanazono fonts-kiloji fonts-misaki fonts-monapo fonts-morisawa-bizud-gothic fonts-morisawa-bizud-mincho \\
    fonts-motoya-l-cedar fonts-motoya-l-maruberi fonts-oradano-mincho-gsrr fonts-dejima-mincho fonts-seto \\
    fonts-yusei-magic fonts-yozvox-yozfont fonts-arphic-ukai fonts-arphic-uming fonts-wqy-zenhei
```

Fonts are found with fontconfig (`fc-list :lang=ja`) or by scanning the usual font folders, or are given as files
and folders with `font_paths`. The environment variable `METAGAN_HUB_FONT_DIRS` (folders separated by `os.pathsep`)
replaces that search by a scan of the given folders; set it empty to hide every installed font (as on a machine
without fonts). What a face cannot draw is filtered out: glyphs that render as the face's `.notdef`
glyph (missing), placeholder glyphs shared by many characters ("tofu" boxes), empty renders, and (near-)exact duplicate
images within a class (e.g. a proportional and a fixed-width variant of the same face). Last-resort fonts, which draw a
box for every character, are skipped. Optionally, kanjivg renders of the same character are added as extra "hands".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ._strokes import StrokeJitter
from .base import ArrayClassDataset, check_background
from .cache import cache_key, load_arrays, resolve_cache_dir, save_arrays
from .kanjivg import (
    LICENSE_NOTE as KANJIVG_LICENSE_NOTE,
)
from .kanjivg import (
    _pool_context,
    default_num_workers,
    kanjivg_characters,
    kanjivg_files,
    render_glyphs,
)

logger = logging.getLogger(__name__)

FONT_EXTENSIONS = (".ttf", ".otf", ".ttc", ".otc")
SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
# if set, the folders (separated by os.pathsep) searched instead of fontconfig and SYSTEM_FONT_DIRS; empty: none
FONT_DIRS_ENV = "METAGAN_HUB_FONT_DIRS"
# fonts that draw a placeholder box for every character
EXCLUDED_FONT_NAMES = ("lastresort",)
# a code point that is never assigned, so every face draws its `.notdef` glyph for it
_NONCHARACTER = "\ufdd0"
APT_INSTALL_HINT = (
    "apt-get install -y fontconfig fonts-ipafont-gothic fonts-ipafont-mincho fonts-vlgothic fonts-misaki"
)


@dataclass(frozen=True)
class FontFace:
    """One face of a font file (`.ttc` collections hold several)."""

    path: str
    index: int = 0
    name: str = ""

    def __str__(self) -> str:
        return self.name or (f"{self.path}#{self.index}" if self.index else self.path)


def _is_excluded(path: str) -> bool:
    name = os.path.basename(path).lower().replace("-", "").replace("_", "")
    return any(bad in name for bad in EXCLUDED_FONT_NAMES)


def find_system_fonts(lang: str | None = "ja") -> list[str]:
    """
    Font files installed on this machine that support `lang`, found with fontconfig (`fc-list :lang=<lang>`); without
    fontconfig, every font file under the usual font folders. If the environment variable `METAGAN_HUB_FONT_DIRS` is
    set, every font file under the folders it lists (separated by `os.pathsep`) instead, whatever their language; set
    it empty to find none. Symbolic links are resolved and duplicates removed.

    Args:
        lang (`str`, *optional*, defaults to `"ja"`): fontconfig language tag; `None` lists all fonts.

    Returns:
        `list[str]`: sorted real paths of font files (empty if none is installed).

    Example:

    ```py
    >>> from metagan_hub.data.fonts import find_system_fonts
    >>> fonts = find_system_fonts("ja")  # e.g. ['/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf', ...]
    ```
    """
    paths: list[str] = []
    override = os.environ.get(FONT_DIRS_ENV)
    if override is not None:
        for folder in filter(None, override.split(os.pathsep)):
            folder = os.path.expanduser(folder)
            if os.path.isdir(folder):
                paths.extend(_scan_font_folder(folder))
        real = {os.path.realpath(p) for p in paths if os.path.isfile(p)}
        return sorted(p for p in real if not _is_excluded(p))
    fc_list = shutil.which("fc-list")
    if fc_list is not None:
        cmd = [fc_list, "--format", "%{file}\n"] + ([f":lang={lang}"] if lang else [])
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
            paths = [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError) as err:
            logger.warning("fc-list failed (%s); scanning the font folders instead", err)
            fc_list = None
    if fc_list is None:
        for folder in SYSTEM_FONT_DIRS:
            folder = os.path.expanduser(folder)
            if os.path.isdir(folder):
                paths.extend(_scan_font_folder(folder))
    real = {os.path.realpath(p) for p in paths if p.lower().endswith(FONT_EXTENSIONS) and os.path.isfile(p)}
    return sorted(p for p in real if not _is_excluded(p))


def _scan_font_folder(folder: str) -> list[str]:
    found = []
    for root, _dirs, files in os.walk(folder, followlinks=True):
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(FONT_EXTENSIONS))
    return sorted(found)


def resolve_font_paths(font_paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """
    Expand font files and folders (searched recursively) into a sorted list of font files.

    Raises:
        `ValueError`: naming a path that does not exist, or a file that is not a font file.
    """
    if isinstance(font_paths, str | os.PathLike):
        font_paths = [font_paths]
    files: list[str] = []
    for p in font_paths:
        path = os.fspath(p)
        if not os.path.exists(path):
            raise ValueError(f"font path {path!r} does not exist.")
        if os.path.isdir(path):
            found = _scan_font_folder(path)
            if not found:
                raise ValueError(f"font folder {path!r} holds no font files ({', '.join(FONT_EXTENSIONS)}).")
            files.extend(found)
        elif path.lower().endswith(FONT_EXTENSIONS):
            files.append(path)
        else:
            raise ValueError(f"font path {path!r} is not a font file; allowed extensions: {FONT_EXTENSIONS}.")
    real = {os.path.realpath(f) for f in files}
    return sorted(f for f in real if not _is_excluded(f))


def font_faces(files: Sequence[str], strict: bool = False) -> list[FontFace]:
    """
    The faces of font files: one per `.ttf`/`.otf`, every face of a `.ttc`/`.otc` collection.

    Args:
        files (`Sequence[str]`): font files.
        strict (`bool`, defaults to `False`): raise a `ValueError` naming a file that cannot be opened as a font
            (otherwise it is skipped with a warning).
    """
    faces = []
    for path in files:
        index = 0
        while True:
            try:
                font = ImageFont.truetype(path, size=16, index=index)
            except OSError as err:
                if index == 0:
                    if strict:
                        raise ValueError(f"font file {path!r} cannot be opened as a font: {err}") from err
                    logger.warning("skipping font file %s: %s", path, err)
                break
            family, style = font.getname()
            faces.append(FontFace(path, index, f"{family} {style}".strip() if family else os.path.basename(path)))
            if not path.lower().endswith((".ttc", ".otc")) or index >= 63:
                break
            index += 1
    return faces


def _draw_centered(font: ImageFont.FreeTypeFont, char: str, canvas: int) -> np.ndarray | None:
    """Draw `char` with its ink box centered on a `canvas` x `canvas` image; `None` if the glyph has no extent."""
    left, top, right, bottom = font.getbbox(char)
    if right <= left or bottom <= top:
        return None
    image = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(image).text(
        ((canvas - (left + right)) // 2, (canvas - (top + bottom)) // 2), char, font=font, fill=255
    )
    return np.asarray(image)


def _render_face(job: tuple) -> tuple[np.ndarray, np.ndarray, dict]:
    """
    Render `chars` with one face. Returns uint8 coverage `[len(chars), H, W]`, a bool mask of usable glyphs, and
    counts of what was filtered.
    """
    path, index, chars, resolution, supersample, glyph_scale, max_shared = job
    canvas = resolution * supersample
    font = ImageFont.truetype(path, size=max(1, round(canvas * glyph_scale)), index=index)
    try:
        notdef = _draw_centered(font, _NONCHARACTER, canvas)
    except (OSError, ValueError):
        notdef = None
    out = np.zeros((len(chars), resolution, resolution), dtype=np.uint8)
    ok = np.zeros(len(chars), dtype=bool)
    hashes: list[bytes | None] = [None] * len(chars)
    counts = Counter()
    min_ink = 255 * canvas * canvas * 1e-4
    for i, char in enumerate(chars):
        try:
            big = _draw_centered(font, char, canvas)
        except (OSError, ValueError):  # e.g. characters outside a bitmap font's strikes
            big = None
        if big is None or big.sum(dtype=np.int64) < min_ink:
            counts["empty"] += 1
            continue
        if notdef is not None and np.array_equal(big, notdef):
            counts["missing"] += 1
            continue
        small = Image.fromarray(big).reduce(supersample) if supersample > 1 else Image.fromarray(big)
        out[i] = np.asarray(small)
        ok[i] = True
        hashes[i] = hashlib.blake2b(big.tobytes(), digest_size=16).digest()
    # a bitmap shared by many characters is a placeholder ("tofu") glyph, not a drawing of those characters
    shared = Counter(h for h in hashes if h is not None)
    for i, h in enumerate(hashes):
        if h is not None and shared[h] > max_shared:
            ok[i] = False
            counts["placeholder"] += 1
    return out, ok, dict(counts)


class FontGlyphDataset(ArrayClassDataset):
    """
    Characters drawn with installed fonts: class = character, samples = distinct font faces.

    Glyphs are centered on their ink box and scaled by `glyph_scale` of the em size, drawn at `resolution *
    supersample` and box-filtered down; ink is dark on white by default. Images are rendered (or loaded from the
    cache) on first access or by [`~ArrayClassDataset.load`]. Classes with fewer than `min_samples` usable images
    after filtering are dropped, so `class_names` is only known after rendering. Samples of a class appear in face
    order; [`sample_faces`] names the face of every image.

    Args:
        resolution (`int`, defaults to 32): image side length.
        channels (`int`, defaults to 1): 1 or 3 (gray repeated).
        characters (`str` or `Sequence[str]`, *optional*): characters to draw (a string is split into characters;
            classes are in code-point order); defaults to the kanji of the `kanjivg` package.
        font_paths (`str`, `os.PathLike` or a sequence of them, *optional*): font files or folders (searched
            recursively); defaults to the fonts fontconfig lists for `lang`.
        lang (`str`, *optional*, defaults to `"ja"`): fontconfig language used to find system fonts.
        max_classes (`int`, *optional*): use only the first `max_classes` characters.
        min_samples (`int`, defaults to 2): drop classes with fewer usable images.
        glyph_scale (`float`, defaults to 0.85): font size as a fraction of the image size.
        supersample (`int`, defaults to 2): render at `resolution * supersample` and box-filter down.
        max_shared (`int`, defaults to 3): a bitmap that a face draws for more than this many characters is treated
            as a placeholder and dropped.
        duplicate_face_threshold (`float`, defaults to 10.0): a face whose glyphs differ from those of an earlier
            face by at most this median mean absolute pixel difference (0-255 scale, at the output resolution) is a
            duplicate face (e.g. the same design installed twice, or its proportional-width variant) and is dropped
            entirely; distinct styles differ by 20-60. Use -1 to keep every face.
        min_difference (`float`, defaults to 0.0): then, within each class, an image whose mean absolute pixel
            difference to an earlier image of the class is at most this value is dropped; 0 drops exact duplicates.
        include_kanjivg (`int`, defaults to 0): add this many kanjivg renders of each character (when kanjivg draws
            it) as extra "hands", after the font faces.
        kanjivg_seed (`int`, defaults to 0): seed of those kanjivg renders.
        kanjivg_jitter (`StrokeJitter`, *optional*): variation of those kanjivg renders.
        background (`str`, defaults to `"white"`): `"white"` (dark ink) or `"black"` (white ink).
        cache_dir (`str` or `os.PathLike`, *optional*): cache folder (default `$METAGAN_HUB_CACHE` or
            `~/.cache/metagan_hub`).
        use_cache (`bool`, defaults to `True`): read and write the on-disk cache.
        num_workers (`int`, *optional*): worker processes (one face per job); defaults to all CPUs for large renders.

    Example:

    ```py
    >>> from metagan_hub.data import FontGlyphDataset
    >>> dataset = FontGlyphDataset(characters="永山川", resolution=32)  # needs Japanese fonts installed
    >>> dataset.class_names, dataset.num_images(0) >= 2
    (['山', '川', '永'], True)
    ```
    """

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        characters: str | Sequence[str] | None = None,
        font_paths: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        lang: str | None = "ja",
        max_classes: int | None = None,
        min_samples: int = 2,
        glyph_scale: float = 0.85,
        supersample: int = 2,
        max_shared: int = 3,
        duplicate_face_threshold: float = 10.0,
        min_difference: float = 0.0,
        include_kanjivg: int = 0,
        kanjivg_seed: int = 0,
        kanjivg_jitter: StrokeJitter | None = None,
        background: str = "white",
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        num_workers: int | None = None,
    ):
        super().__init__(resolution=resolution, channels=channels)
        for name, value, low in (
            ("min_samples", min_samples, 1),
            ("supersample", supersample, 1),
            ("max_shared", max_shared, 1),
            ("include_kanjivg", include_kanjivg, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
        if max_classes is not None and (
            isinstance(max_classes, bool) or not isinstance(max_classes, int) or max_classes < 1
        ):
            raise ValueError(f"`max_classes` must be None or a positive integer, got {max_classes!r}.")
        if isinstance(min_difference, bool) or not isinstance(min_difference, int | float) or not min_difference >= 0:
            raise ValueError(f"`min_difference` must be a non-negative number, got {min_difference!r}.")
        if isinstance(duplicate_face_threshold, bool) or not isinstance(duplicate_face_threshold, int | float):
            raise ValueError(f"`duplicate_face_threshold` must be a number, got {duplicate_face_threshold!r}.")
        if not isinstance(glyph_scale, int | float) or not 0.1 <= glyph_scale <= 1.5:
            raise ValueError(f"`glyph_scale` must be a number in [0.1, 1.5], got {glyph_scale!r}.")
        check_background(background)

        if font_paths is not None:
            files = resolve_font_paths(font_paths)
            faces = font_faces(files, strict=True)
        else:
            faces = font_faces(find_system_fonts(lang))
        if not faces:
            where = f"in {font_paths!r}" if font_paths is not None else f"on this machine (fontconfig lang={lang!r})"
            raise ValueError(
                f"no usable fonts found {where}; install some with `{APT_INSTALL_HINT}` or pass `font_paths`."
            )

        if characters is None:
            chars = kanjivg_characters("kanji")
        else:
            bad = [c for c in characters if not isinstance(c, str) or len(c) != 1]
            if bad:
                raise ValueError(f"`characters` must be single characters, got {bad[:5]!r}.")
            chars = sorted(set(characters), key=ord)
            if not chars:
                raise ValueError("`characters` is empty.")
        if max_classes is not None:
            chars = chars[:max_classes]

        self.faces = faces
        self.characters = chars
        self.min_samples = min_samples
        self.glyph_scale = float(glyph_scale)
        self.supersample = supersample
        self.max_shared = max_shared
        self.min_difference = float(min_difference)
        self.duplicate_face_threshold = float(duplicate_face_threshold)
        #: dropped duplicate face -> the earlier face it duplicates (filled when the images are built)
        self.duplicate_faces: dict[str, str] = {}
        self.include_kanjivg = include_kanjivg
        self.kanjivg_seed = kanjivg_seed
        self.kanjivg_jitter = kanjivg_jitter if kanjivg_jitter is not None else StrokeJitter()
        self.background = background
        self.use_cache = use_cache
        self.num_workers = num_workers
        self.cache_dir = resolve_cache_dir(cache_dir)
        self.filter_counts: dict[str, int] = {}
        self._sample_faces: np.ndarray | None = None
        if include_kanjivg:
            self.license_note = KANJIVG_LICENSE_NOTE

    @property
    def face_names(self) -> list[str]:
        """Names of the font faces, in sample order (kanjivg hands, if any, are named `"kanjivg"`)."""
        return [str(f) for f in self.faces] + (["kanjivg"] if self.include_kanjivg else [])

    def sample_faces(self, index: int) -> list[str]:
        """The face name of every image of class `index`."""
        index = self._check_index(index)
        self.load()
        names = self.face_names
        ids = self._sample_faces[self.offsets[index] : self.offsets[index + 1]]
        return [names[i] for i in ids]

    def render_params(self) -> dict:
        """Every parameter that affects the images (hashed into the cache file name)."""
        faces = []
        for face in self.faces:
            stat = os.stat(face.path)
            faces.append([face.path, face.index, stat.st_size, stat.st_mtime_ns])
        params = {
            "source": "fonts",
            "renderer": 1,
            "faces": faces,
            "characters": "".join(self.characters),
            "resolution": self.resolution,
            "glyph_scale": self.glyph_scale,
            "supersample": self.supersample,
            "min_samples": self.min_samples,
            "max_shared": self.max_shared,
            "min_difference": self.min_difference,
            "duplicate_face_threshold": self.duplicate_face_threshold,
            "background": self.background,
            "include_kanjivg": self.include_kanjivg,
        }
        if self.include_kanjivg:
            params["kanjivg"] = {"seed": self.kanjivg_seed, "jitter": self.kanjivg_jitter.to_dict()}
        return params

    @property
    def cache_path(self) -> Path:
        """The cache file of these render parameters."""
        return self.cache_dir / "fonts" / f"fonts-{self.resolution}px-{cache_key(self.render_params())}.npz"

    def _build(self):
        if self.use_cache:
            cached = load_arrays(self.cache_path)
            if cached is not None and {"images", "offsets", "class_names", "sample_faces"} <= set(cached):
                self._sample_faces = cached["sample_faces"]
                if "info" in cached:
                    info = json.loads(str(cached["info"]))
                    self.filter_counts, self.duplicate_faces = info["filter_counts"], info["duplicate_faces"]
                logger.info("loaded %d font glyphs from %s", cached["images"].shape[0], self.cache_path)
                return cached["images"], cached["offsets"].tolist(), cached["class_names"].tolist()
        images, offsets, names, sample_faces = self._render()
        self._sample_faces = sample_faces
        if self.use_cache:
            try:
                save_arrays(
                    self.cache_path,
                    images=images,
                    offsets=np.asarray(offsets, dtype=np.int64),
                    class_names=np.asarray(names, dtype=str),
                    sample_faces=sample_faces,
                    info=np.asarray(
                        json.dumps({"filter_counts": self.filter_counts, "duplicate_faces": self.duplicate_faces})
                    ),
                )
            except OSError as err:
                logger.warning("could not write the cache file %s: %s", self.cache_path, err)
        return images, offsets, names

    def _render(self):
        chars, res = self.characters, self.resolution
        logger.info("rendering %d characters with %d font faces at %dx%d", len(chars), len(self.faces), res, res)
        jobs = [(f.path, f.index, chars, res, self.supersample, self.glyph_scale, self.max_shared) for f in self.faces]
        num_workers = self.num_workers
        if num_workers is None:
            num_workers = default_num_workers() if len(chars) * len(jobs) >= 4000 else 0
        if num_workers <= 1 or len(jobs) <= 1:
            results = [_render_face(job) for job in jobs]
        else:
            with ProcessPoolExecutor(max_workers=min(num_workers, len(jobs)), mp_context=_pool_context()) as pool:
                results = list(pool.map(_render_face, jobs))
        coverage = np.stack([r[0] for r in results], axis=1)  # [num_chars, num_faces, H, W]
        usable = np.stack([r[1] for r in results], axis=1)  # [num_chars, num_faces]
        counts = Counter()
        for face, (_, ok, face_counts) in zip(self.faces, results):
            counts.update(face_counts)
            logger.debug("font face %s draws %d of %d characters (%s)", face, int(ok.sum()), len(chars), face_counts)

        extra = None
        if self.include_kanjivg:
            files = kanjivg_files()
            drawn = [(c, files[c]) for c in chars if c in files]
            kvg = render_glyphs(
                drawn,
                self.include_kanjivg,
                res,
                self.kanjivg_seed,
                self.kanjivg_jitter,
                max(2, -(-128 // res)),
                self.num_workers,
            ).reshape(len(drawn), self.include_kanjivg, res, res)
            extra = {c: kvg[i] for i, (c, _) in enumerate(drawn)}

        # duplicate faces: compare each face with every earlier kept face on (up to 256) characters both draw
        self.duplicate_faces = {}
        kept_faces: list[int] = []
        probe = np.linspace(0, len(chars) - 1, min(len(chars), 256)).round().astype(int)
        for j in range(len(self.faces)):
            for k in kept_faces:
                both = probe[usable[probe, j] & usable[probe, k]]
                if len(both) == 0:
                    continue
                a, b = coverage[both, j].astype(np.int16), coverage[both, k].astype(np.int16)
                if np.median(np.abs(a - b).mean(axis=(1, 2))) <= self.duplicate_face_threshold:
                    self.duplicate_faces[str(self.faces[j])] = str(self.faces[k])
                    counts["duplicate_face"] += int(usable[:, j].sum())
                    usable[:, j] = False
                    break
            else:
                kept_faces.append(j)
        if self.duplicate_faces:
            logger.info("dropped duplicate font faces: %s", self.duplicate_faces)

        kanjivg_id = len(self.faces)
        images, offsets, names, sample_faces = [], [0], [], []
        for i, char in enumerate(chars):
            keep = np.flatnonzero(usable[i])
            # duplicate images within a class (the same face installed twice, proportional variants...): an image
            # whose mean absolute difference to an image kept before is at most `min_difference`
            unique: list[int] = []
            for j in keep:
                if unique:
                    kept = coverage[i, unique].astype(np.int16)
                    diff = np.abs(kept - coverage[i, j].astype(np.int16)).mean(axis=(1, 2))
                    if diff.min() <= self.min_difference:
                        counts["duplicate"] += 1
                        continue
                unique.append(int(j))
            class_images = [coverage[i, j] for j in unique]
            faces_of_class = list(unique)
            if extra is not None and char in extra:
                class_images.extend(extra[char])
                faces_of_class.extend([kanjivg_id] * self.include_kanjivg)
            if len(class_images) < self.min_samples:
                counts["dropped_classes"] += 1
                continue
            images.extend(class_images)
            sample_faces.extend(faces_of_class)
            offsets.append(offsets[-1] + len(class_images))
            names.append(char)
        self.filter_counts = dict(counts)
        logger.info("font glyph filtering: %s; %d classes kept", dict(counts), len(names))
        if not names:
            raise ValueError(
                f"no character has at least min_samples={self.min_samples} usable glyphs in the "
                f"{len(self.faces)} font face(s) {[str(f) for f in self.faces][:5]}; filtered: {dict(counts)}."
            )
        stacked = np.stack(images)
        if self.background == "white":
            np.subtract(255, stacked, out=stacked)
        return stacked[:, None], offsets, names, np.asarray(sample_faces, dtype=np.int32)
