# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""scikit-learn's 8x8 handwritten digits (10 classes, about 180 images each): a zero-download smoke-test dataset."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from .base import ArrayClassDataset, check_background

logger = logging.getLogger(__name__)


class DigitsDataset(ArrayClassDataset):
    """
    The 1,797 8x8 digits of `sklearn.datasets.load_digits`, one class per digit, resized to `resolution` (bicubic when
    enlarging, box filter when shrinking). Ink is dark on white by default, like the other glyph sources.

    Args:
        resolution (`int`, defaults to 32): image side length.
        channels (`int`, defaults to 1): 1 or 3 (gray repeated).
        background (`str`, defaults to `"white"`): `"white"` (dark ink) or `"black"` (white ink).

    Example:

    ```py
    >>> from metagan_hub.data import DigitsDataset
    >>> dataset = DigitsDataset(resolution=16)
    >>> dataset.num_classes, dataset.num_images(0), dataset.class_images(0).shape[1:]
    (10, 178, torch.Size([1, 16, 16]))
    ```
    """

    def __init__(self, resolution: int = 32, channels: int = 1, background: str = "white"):
        super().__init__(resolution=resolution, channels=channels)
        check_background(background)
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise ImportError(
                "the digits data source needs scikit-learn: `pip install scikit-learn` "
                "(or `pip install 'metagan-hub[data]'`)."
            ) from err
        digits = load_digits()
        coverage = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # [N, 8, 8]
        if background == "white":
            coverage = 255 - coverage
        order = np.argsort(digits.target, kind="stable")
        resample = Image.Resampling.BICUBIC if self.resolution >= 8 else Image.Resampling.BOX
        size = (self.resolution, self.resolution)
        images = np.stack([np.asarray(Image.fromarray(coverage[i]).resize(size, resample)) for i in order])
        counts = np.bincount(digits.target, minlength=10)
        offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
        self.background = background
        self._set_arrays(images[:, None], offsets, [str(d) for d in range(10)])
