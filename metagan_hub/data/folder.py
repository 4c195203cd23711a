# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""User images in a folder with one subfolder per class: `root/<class name>/*.png|jpg|webp|...`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .base import ArrayClassDataset, check_background
from .images import IMAGE_EXTENSIONS, list_image_files, pil_to_uint8, read_image_file

logger = logging.getLogger(__name__)


class ImageFolderDataset(ArrayClassDataset):
    """
    Classes from the subfolders of `root`; every image file inside a class folder (searched recursively, hidden
    files and folders skipped) is a sample of that class.

    Images of any size and mode are converted as documented in [`metagan_hub.data.images`]: shorter side resized to
    `resolution` and center-cropped, converted to gray or RGB, alpha composited on `background`. All images are read
    at construction and kept as uint8.

    Args:
        root (`str` or `os.PathLike`): the folder of class folders. Class names are the subfolder names, sorted.
        resolution (`int`, defaults to 32): image side length.
        channels (`int`, defaults to 1): 1 or 3.
        background (`str`, defaults to `"white"`): color that transparent pixels are composited on.

    Raises:
        `ValueError`: when `root` does not exist or has no class subfolders, when a class folder holds no images
            (naming the folder), or when an image file is unreadable or truncated (naming the file).

    Example:

    ```py
    >>> from metagan_hub.data import ImageFolderDataset
    >>> dataset = ImageFolderDataset("my_glyphs/", resolution=32, channels=1)  # doctest: +SKIP
    >>> dataset.class_names[:2], dataset.class_images(0).shape[1:]  # with my_glyphs/<class>/*.png  # doctest: +SKIP
    (['alpha', 'beta'], torch.Size([1, 32, 32]))
    ```
    """

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: int = 32,
        channels: int = 1,
        background: str = "white",
    ):
        super().__init__(resolution=resolution, channels=channels)
        check_background(background)
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"`root` {str(root)!r} is not a folder; expected a folder with one subfolder per class.")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise ValueError(
                f"`root` {str(root)!r} has no class subfolders; expected images in {str(root)}/<class name>/ "
                f"with extensions {IMAGE_EXTENSIONS}."
            )
        stray = list_image_files(root)
        if stray:
            logger.warning("ignoring %d image files directly inside %s (not in a class folder)", len(stray), root)
        images, offsets, names = [], [0], []
        for class_dir in class_dirs:
            files = list_image_files(class_dir, recursive=True)
            if not files:
                raise ValueError(
                    f"class folder {str(class_dir)!r} holds no image files; allowed extensions: {IMAGE_EXTENSIONS}."
                )
            for f in files:
                images.append(pil_to_uint8(read_image_file(f), self.resolution, self.channels, background, str(f)))
            offsets.append(len(images))
            names.append(class_dir.name)
        self.root = root
        self.background = background
        self._set_arrays(np.stack(images), offsets, names)
        logger.info("read %d images of %d classes from %s", len(images), len(names), root)
