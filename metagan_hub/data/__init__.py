# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Class-structured image data sources (kanjivg glyphs, system fonts, image folders, HF datasets, digits).

Every source is a [`ClassImageDataset`]: a list of classes with a few images each, returned as `[N, C, H, W]`
tensors (uint8, or float32 in [-1, 1]) at a requested resolution and channel count, with deterministic
train / validation / test class splits. [`get_dataset`] builds a source by name; [`load_images`] converts a user's
few shots for adaptation.

The embedded default, `"kanjivg"`, renders the stroke drawings of the KanjiVG project, which are licensed under
CC BY-SA 3.0; see [`LICENSE_NOTE`] for the attribution to include in model cards.

Example:

```py
>>> from metagan_hub.data import get_dataset
>>> dataset = get_dataset("kanjivg", resolution=32, samples_per_class=20, max_classes=60)  # 60 kanji x 20 hands
>>> train, val, test = dataset.split_classes(seed=0)
>>> train.class_images(0).shape
torch.Size([20, 1, 32, 32])
```

Without `max_classes` the same call renders all 6,431 kanji (minutes of work the first time on a small machine; the
renders are cached on disk, see [`resolve_cache_dir`]).
"""

from __future__ import annotations

from typing import Any

from ._strokes import StrokeJitter
from .base import ArrayClassDataset, ClassImageDataset, ClassSubset
from .cache import resolve_cache_dir
from .digits import DigitsDataset
from .folder import ImageFolderDataset
from .fonts import FontGlyphDataset, find_system_fonts
from .hf import HFImageDataset
from .images import IMAGE_EXTENSIONS, load_images
from .kanjivg import LICENSE_NOTE, KanjiVGDataset, kanjivg_characters

DATASETS = ("kanjivg", "fonts", "digits", "imagefolder", "hf")


def get_dataset(
    name: str, *, resolution: int = 32, channels: int = 1, lazy: bool = False, **kwargs: Any
) -> ClassImageDataset:
    """
    Build a class-structured dataset by name, with its images ready in memory.

    Rendered sources (`"kanjivg"`, `"fonts"`) render or load their cache here unless `lazy=True`, so that in a
    multi-process run wrapping this call in `accelerator.main_process_first()` renders once and lets the other
    processes read the cache.

    Args:
        name (`str`): one of
            - `"kanjivg"`: rendered KanjiVG characters ([`KanjiVGDataset`]; e.g. `samples_per_class=20`, `seed=0`),
            - `"fonts"`: glyphs of installed fonts ([`FontGlyphDataset`]; e.g. `font_paths=[...]`),
            - `"digits"`: scikit-learn's 8x8 digits ([`DigitsDataset`]),
            - `"imagefolder"`: `root/<class>/*.png` ([`ImageFolderDataset`]; needs `root=...`),
            - `"hf"`: a `datasets` dataset ([`HFImageDataset`]; needs `dataset_name=...`, optional `split="train"`,
              `image_column="image"`, `label_column="label"`).
        resolution (`int`, defaults to 32): image side length.
        channels (`int`, defaults to 1): 1 (gray) or 3 (RGB).
        lazy (`bool`, defaults to `False`): leave rendered sources unrendered until their images are first read.
        **kwargs: passed to the source's constructor.

    Returns:
        [`ClassImageDataset`]

    Example:

    ```py
    >>> from metagan_hub.data import get_dataset
    >>> get_dataset("digits", resolution=16, channels=3).class_images(0).shape
    torch.Size([178, 3, 16, 16])
    ```
    """
    if name in ("kanjivg", "fonts"):
        source = KanjiVGDataset if name == "kanjivg" else FontGlyphDataset
        dataset = source(resolution=resolution, channels=channels, **kwargs)
        return dataset if lazy else dataset.load()
    if name == "digits":
        return DigitsDataset(resolution=resolution, channels=channels, **kwargs)
    if name == "imagefolder":
        root = kwargs.pop("root", None)
        if root is None:
            raise ValueError('get_dataset("imagefolder") needs `root=...`, the folder of class subfolders.')
        return ImageFolderDataset(root, resolution=resolution, channels=channels, **kwargs)
    if name == "hf":
        dataset_name = kwargs.pop("dataset_name", None)
        if dataset_name is None:
            raise ValueError('get_dataset("hf") needs `dataset_name=...`, a Hub dataset id, folder or Dataset.')
        return HFImageDataset(dataset_name, resolution=resolution, channels=channels, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}.")


__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "LICENSE_NOTE",
    "ArrayClassDataset",
    "ClassImageDataset",
    "ClassSubset",
    "DigitsDataset",
    "FontGlyphDataset",
    "HFImageDataset",
    "ImageFolderDataset",
    "KanjiVGDataset",
    "StrokeJitter",
    "find_system_fonts",
    "get_dataset",
    "kanjivg_characters",
    "load_images",
    "resolve_cache_dir",
]
