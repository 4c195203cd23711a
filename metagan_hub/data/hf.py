# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""A Hugging Face `datasets` dataset with an image column and a label column as a class-structured dataset."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import ArrayClassDataset, check_background
from .images import _hf_item_to_pil, check_columns, pil_to_uint8

logger = logging.getLogger(__name__)


def _load_hf_dataset(dataset_name: Any, split: str, cache_dir: str | os.PathLike | None, **load_kwargs):
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "the hf data source needs the `datasets` package: `pip install datasets` "
            "(or `pip install 'metagan-hub[data]'`)."
        ) from err
    if isinstance(dataset_name, datasets.Dataset):
        return dataset_name
    if isinstance(dataset_name, datasets.DatasetDict | Mapping):
        if split not in dataset_name:
            raise ValueError(
                f"`split`={split!r} is not a split of the dataset; available splits: {list(dataset_name)}."
            )
        return dataset_name[split]
    if not isinstance(dataset_name, str | os.PathLike):
        raise ValueError(
            f"`dataset_name` must be a Hub dataset id, a local folder or a `datasets.Dataset`, got "
            f"{type(dataset_name).__name__}."
        )
    name = os.fspath(dataset_name)
    if os.path.isdir(name) and not os.path.exists(os.path.join(name, "README.md")):
        # a plain local folder of class subfolders: the `imagefolder` builder infers the labels from folder names
        return datasets.load_dataset("imagefolder", data_dir=name, split=split, cache_dir=cache_dir, **load_kwargs)
    return datasets.load_dataset(name, split=split, cache_dir=cache_dir, **load_kwargs)


class HFImageDataset(ArrayClassDataset):
    """
    Classes from the label column of a Hugging Face `datasets` dataset, images from its image column (the
    `--image_column` / `--label_column` convention of the diffusers example scripts).

    Images are decoded and converted at construction (see [`metagan_hub.data.images`]) and kept as uint8. Class
    names come from a `ClassLabel` feature when the label column has one (classes without images are skipped), else
    from the sorted distinct label values.

    Args:
        dataset_name (`str`, `os.PathLike`, `datasets.Dataset` or `datasets.DatasetDict`): a Hub dataset id, a local
            folder (loaded with the `imagefolder` builder unless it holds a dataset card), or a dataset object.
        split (`str`, defaults to `"train"`): split to read.
        image_column (`str`, defaults to `"image"`): column holding the images.
        label_column (`str`, defaults to `"label"`): column holding the class labels.
        resolution (`int`, defaults to 32): image side length.
        channels (`int`, defaults to 1): 1 or 3.
        background (`str`, defaults to `"white"`): color that transparent pixels are composited on.
        cache_dir (`str` or `os.PathLike`, *optional*): `datasets` cache folder.
        max_images (`int`, *optional*): read only the first `max_images` rows.
        **load_kwargs: passed to `datasets.load_dataset`.

    Raises:
        `ValueError`: when a column or split is missing (listing the available ones), or an image cannot be decoded.

    Example:

    ```py
    >>> from metagan_hub.data import HFImageDataset
    >>> dataset = HFImageDataset(
    ...     "my_images/", image_column="image", label_column="label", resolution=32
    ... )  # doctest: +SKIP
    >>> dataset.num_classes  # doctest: +SKIP
    2
    ```
    """

    def __init__(
        self,
        dataset_name: Any,
        split: str = "train",
        image_column: str = "image",
        label_column: str = "label",
        resolution: int = 32,
        channels: int = 1,
        background: str = "white",
        cache_dir: str | os.PathLike | None = None,
        max_images: int | None = None,
        **load_kwargs: Any,
    ):
        super().__init__(resolution=resolution, channels=channels)
        check_background(background)
        if max_images is not None and (
            isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1
        ):
            raise ValueError(f"`max_images` must be None or a positive integer, got {max_images!r}.")
        ds = _load_hf_dataset(dataset_name, split, cache_dir, **load_kwargs)
        check_columns(ds, {"image_column": image_column, "label_column": label_column})
        if max_images is not None and len(ds) > max_images:
            ds = ds.select(range(max_images))
        if len(ds) == 0:
            raise ValueError(f"the dataset {dataset_name!r} (split {split!r}) has no rows.")

        labels = list(ds[label_column])
        feature = ds.features.get(label_column)
        label_names = getattr(feature, "names", None)
        if label_names is not None:
            values = sorted(set(labels))
            names = [label_names[v] for v in values]
        else:
            try:
                values = sorted(set(labels))
            except TypeError as err:
                raise ValueError(f"the labels in column {label_column!r} cannot be sorted: {err}") from err
            names = [str(v) for v in values]
        class_of = {v: i for i, v in enumerate(values)}
        rows_of_class: list[list[int]] = [[] for _ in values]
        for row, label in enumerate(labels):
            rows_of_class[class_of[label]].append(row)

        column = ds.select_columns([image_column])
        images = np.zeros((len(ds), self.channels, self.resolution, self.resolution), dtype=np.uint8)
        for row in range(len(ds)):
            image, name = _hf_item_to_pil(column[row][image_column], row, image_column)
            images[row] = pil_to_uint8(image, self.resolution, self.channels, background, name, row)
        order = [row for rows in rows_of_class for row in rows]
        offsets = np.concatenate([[0], np.cumsum([len(rows) for rows in rows_of_class])]).tolist()
        self.background = background
        self.image_column, self.label_column = image_column, label_column
        self._set_arrays(images[order], offsets, names)
        logger.info("read %d images of %d classes from %r", len(ds), len(names), dataset_name)
