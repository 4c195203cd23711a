# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""The class-structured image dataset interface shared by every data source.

A [`ClassImageDataset`] is a list of classes, each with a few images. Images are stored as uint8 and converted to
float32 in [-1, 1] only when a class is read, so thousands of classes fit in little memory. Class splits
([`ClassImageDataset.split_classes`]) return disjoint views; held-out classes are never seen in meta-training.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

SUPPORTED_CHANNELS = (1, 3)
BACKGROUNDS = ("white", "black")


def check_resolution_channels(resolution: int, channels: int, resolution_name: str = "resolution") -> None:
    """Raise a `ValueError` unless `resolution` is an integer >= 2 and `channels` is 1 or 3."""
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer) or resolution < 2:
        raise ValueError(f"`{resolution_name}` must be an integer >= 2, got {resolution!r}.")
    if isinstance(channels, bool) or channels not in SUPPORTED_CHANNELS:
        raise ValueError(f"`channels` must be one of {SUPPORTED_CHANNELS}, got {channels!r}.")


def check_background(background: str) -> None:
    if background not in BACKGROUNDS:
        raise ValueError(f"`background` must be one of {BACKGROUNDS}, got {background!r}.")


def default_split_sizes(num_classes: int) -> tuple[int, int, int]:
    """Class counts `(train, val, test)` of [`ClassImageDataset.split_classes`] with its default 10% / 20% held out."""
    num_val, num_test = max(1, round(0.1 * num_classes)), max(1, round(0.2 * num_classes))
    return num_classes - num_val - num_test, num_val, num_test


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 images to float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


def convert_channels_uint8(images: torch.Tensor, channels: int) -> torch.Tensor:
    """
    Convert uint8 `[N, C, H, W]` images between 1 and 3 channels: gray is repeated to RGB, RGB is mapped to gray with
    the ITU-R 601-2 luma weights that Pillow's `convert("L")` uses.
    """
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    if c == 3 and channels == 1:
        weights = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)
        gray = (images.to(torch.int32) * weights).sum(1, keepdim=True).add_(500).div_(1000, rounding_mode="floor")
        return gray.to(torch.uint8)
    raise ValueError(f"cannot convert images with {c} channels to {channels} channels.")


class ClassImageDataset(abc.ABC):
    """
    Abstract base class of every class-structured image source.

    Subclasses set `resolution` and `channels` at construction and implement [`num_classes`], [`class_names`] and
    [`class_images_uint8`]. Images of a class are returned as `[N, C, H, W]` tensors with `C == channels` and
    `H == W == resolution`, either uint8 ([`class_images_uint8`]) or float32 in [-1, 1] ([`class_images`]).

    Args:
        resolution (`int`): side length of the square images.
        channels (`int`): 1 (grayscale) or 3 (RGB).

    Example:

    ```py
    >>> from metagan_hub.data import get_dataset
    >>> dataset = get_dataset("digits", resolution=16)
    >>> dataset.num_classes, dataset.class_names[:3]
    (10, ['0', '1', '2'])
    >>> dataset.class_images(0).shape[1:]
    torch.Size([1, 16, 16])
    >>> train, val, test = dataset.split_classes(seed=0, num_val=2, num_test=2)
    >>> train.num_classes, val.num_classes, test.num_classes
    (6, 2, 2)
    ```
    """

    #: A licence / attribution note that model cards of models trained on this data should include, if any.
    license_note: str | None = None

    def __init__(self, resolution: int, channels: int):
        check_resolution_channels(resolution, channels)
        self.resolution = int(resolution)
        self.channels = int(channels)

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Number of classes."""

    @property
    @abc.abstractmethod
    def class_names(self) -> list[str]:
        """Names of the classes, in index order."""

    @abc.abstractmethod
    def class_images_uint8(self, index: int) -> torch.Tensor:
        """All images of class `index` as a uint8 tensor `[N, C, H, W]` (a copy: safe to modify)."""

    def class_images(self, index: int) -> torch.Tensor:
        """All images of class `index` as a float32 tensor `[N, C, H, W]` in [-1, 1]."""
        return uint8_to_float(self.class_images_uint8(index))

    def num_images(self, index: int) -> int:
        """Number of images of class `index`."""
        return int(self.class_images_uint8(index).shape[0])

    def select_images_uint8(self, index: int, image_indices: torch.Tensor) -> torch.Tensor:
        """The images `image_indices` of class `index` as uint8 `[len(image_indices), C, H, W]`."""
        return self.class_images_uint8(index)[torch.as_tensor(image_indices, dtype=torch.long)]

    def _check_index(self, index: int) -> int:
        n = self.num_classes
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or not -n <= index < n:
            raise IndexError(f"class index must be an integer in [0, {n}), got {index!r}.")
        return int(index) % n

    def __len__(self) -> int:
        return self.num_classes

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, resolution={self.resolution}, "
            f"channels={self.channels})"
        )

    def subset(self, class_indices: Sequence[int]) -> ClassSubset:
        """
        A view on the classes `class_indices` (in that order), sharing this dataset's storage.

        Args:
            class_indices (`Sequence[int]`): distinct class indices of this dataset.
        """
        return ClassSubset(self, class_indices)

    def split_classes(
        self, seed: int = 0, num_val: int | None = None, num_test: int | None = None
    ) -> tuple[ClassImageDataset, ClassImageDataset, ClassImageDataset]:
        """
        Split the classes into disjoint train / validation / test views, deterministically from `seed`.

        The split depends only on `seed`, `num_classes`, `num_val` and `num_test`, so every process (and every run)
        gets the same split. Inside each split the classes keep this dataset's order.

        Args:
            seed (`int`): seed of the class permutation.
            num_val (`int`, *optional*): number of validation classes; defaults to 10% of the classes (at least 1).
            num_test (`int`, *optional*): number of test classes; defaults to 20% of the classes (at least 1).

        Returns:
            `tuple[ClassImageDataset, ClassImageDataset, ClassImageDataset]`: the train, validation and test views.
            The training view always gets at least one class.

        Example:

        ```py
        >>> from metagan_hub.data import get_dataset
        >>> train, val, test = get_dataset("digits", resolution=8).split_classes(seed=1, num_val=1, num_test=3)
        >>> sorted(train.class_names + val.class_names + test.class_names) == [str(d) for d in range(10)]
        True
        ```
        """
        n = self.num_classes
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ValueError(f"`seed` must be an integer, got {seed!r}.")
        _, default_val, default_test = default_split_sizes(n)
        num_val = default_val if num_val is None else num_val
        num_test = default_test if num_test is None else num_test
        for name, value in (("num_val", num_val), ("num_test", num_test)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
        if num_val + num_test >= n:
            raise ValueError(
                f"cannot split {n} classes into num_val={num_val} validation and num_test={num_test} test classes "
                f"and still keep at least one training class: num_val + num_test must be at most {n - 1}."
            )
        generator = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(n, generator=generator).tolist()
        val = sorted(perm[:num_val])
        test = sorted(perm[num_val : num_val + num_test])
        train = sorted(perm[num_val + num_test :])
        return self.subset(train), self.subset(val), self.subset(test)


class ClassSubset(ClassImageDataset):
    """
    A view on some classes of another [`ClassImageDataset`]; images are read from the parent on demand.

    Args:
        parent (`ClassImageDataset`): the dataset to view (a view of a view refers to the root dataset).
        class_indices (`Sequence[int]`): distinct class indices of `parent`.
    """

    def __init__(self, parent: ClassImageDataset, class_indices: Sequence[int]):
        indices = [parent._check_index(i) for i in class_indices]
        if len(set(indices)) != len(indices):
            raise ValueError(f"`class_indices` must be distinct, got {list(class_indices)!r}.")
        if isinstance(parent, ClassSubset):
            indices = [parent.parent_indices[i] for i in indices]
            parent = parent.parent
        super().__init__(parent.resolution, parent.channels)
        self.parent = parent
        self.parent_indices = indices
        self.license_note = parent.license_note

    @property
    def num_classes(self) -> int:
        return len(self.parent_indices)

    @property
    def class_names(self) -> list[str]:
        names = self.parent.class_names
        return [names[i] for i in self.parent_indices]

    def class_images_uint8(self, index: int) -> torch.Tensor:
        return self.parent.class_images_uint8(self.parent_indices[self._check_index(index)])

    def num_images(self, index: int) -> int:
        return self.parent.num_images(self.parent_indices[self._check_index(index)])

    def select_images_uint8(self, index: int, image_indices: torch.Tensor) -> torch.Tensor:
        return self.parent.select_images_uint8(self.parent_indices[self._check_index(index)], image_indices)


class ArrayClassDataset(ClassImageDataset):
    """
    A dataset held in memory as one uint8 array of all images, class after class.

    Subclasses that build their arrays lazily (rendered sources) override [`_build`] and pass `images=None`;
    the arrays are then built on first access (or by calling [`load`]).

    Args:
        images (`np.ndarray` or `torch.Tensor`, *optional*): uint8 `[total, C, H, W]` with `C` in {1, 3}.
        offsets (`Sequence[int]`, *optional*): `num_classes + 1` increasing offsets; class `i` holds images
            `offsets[i]:offsets[i + 1]`.
        class_names (`Sequence[str]`, *optional*): one name per class.
        resolution (`int`): must equal `H` and `W` of `images`.
        channels (`int`): channels returned (stored gray images are repeated to RGB, RGB mapped to gray as needed).

    Example:

    ```py
    >>> import numpy as np
    >>> from metagan_hub.data.base import ArrayClassDataset
    >>> images = np.zeros((5, 1, 8, 8), dtype=np.uint8)
    >>> ds = ArrayClassDataset(images, offsets=[0, 2, 5], class_names=["a", "b"], resolution=8, channels=3)
    >>> ds.num_images(1), ds.class_images(1).shape
    (3, torch.Size([3, 3, 8, 8]))
    ```
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor | None = None,
        offsets: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        *,
        resolution: int,
        channels: int,
    ):
        super().__init__(resolution, channels)
        self._images: torch.Tensor | None = None
        self._offsets: list[int] | None = None
        self._class_names: list[str] | None = None
        if images is not None:
            self._set_arrays(images, offsets, class_names)

    # -- storage -------------------------------------------------------------------------------------------------
    def _set_arrays(self, images, offsets, class_names) -> None:
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("`images` must be a uint8 array [total, C, H, W].")
        if images.shape[1] not in SUPPORTED_CHANNELS or tuple(images.shape[2:]) != (self.resolution,) * 2:
            raise ValueError(
                f"`images` must have shape [total, 1 or 3, {self.resolution}, {self.resolution}], "
                f"got {list(images.shape)}."
            )
        offsets = [int(o) for o in offsets] if offsets is not None else None
        if offsets is None or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != images.shape[0]:
            raise ValueError(f"`offsets` must start at 0 and end at {images.shape[0]}, got {offsets!r}.")
        if any(b < a for a, b in zip(offsets[:-1], offsets[1:])):
            raise ValueError("`offsets` must be non-decreasing.")
        class_names = [str(c) for c in class_names] if class_names is not None else None
        if class_names is None or len(class_names) != len(offsets) - 1:
            raise ValueError(f"`class_names` must hold {len(offsets) - 1} names, got {class_names!r}.")
        self._images, self._offsets, self._class_names = images, offsets, class_names

    def _build(self) -> tuple[np.ndarray | torch.Tensor, Sequence[int], Sequence[str]]:
        """Return `(images, offsets, class_names)`; implemented by lazily built subclasses."""
        raise NotImplementedError(f"{type(self).__name__} was constructed without images.")

    def load(self) -> ArrayClassDataset:
        """Build (render, read or load from cache) the images now instead of on first access. Returns `self`."""
        if self._images is None:
            self._set_arrays(*self._build())
        return self

    @property
    def storage(self) -> torch.Tensor:
        """The uint8 storage `[total, C, H, W]` of all classes (C as stored, which may differ from `channels`)."""
        return self.load()._images

    @property
    def offsets(self) -> list[int]:
        """`num_classes + 1` offsets of the classes in [`storage`]."""
        return self.load()._offsets

    @property
    def nbytes(self) -> int:
        """Bytes of image storage."""
        images = self.storage
        return images.numel() * images.element_size()

    # -- interface -----------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.load()._class_names)

    @property
    def class_names(self) -> list[str]:
        return list(self.load()._class_names)

    def class_images_uint8(self, index: int) -> torch.Tensor:
        index = self._check_index(index)
        start, stop = self.offsets[index], self.offsets[index + 1]
        images = self.storage[start:stop]  # [N, C_stored, H, W] view
        converted = convert_channels_uint8(images, self.channels)
        return converted.clone() if converted is images else converted

    def select_images_uint8(self, index: int, image_indices: torch.Tensor) -> torch.Tensor:
        index = self._check_index(index)
        start = self.offsets[index]
        indices = torch.as_tensor(image_indices, dtype=torch.long)
        images = self.storage[start : self.offsets[index + 1]].index_select(0, indices)  # a copy
        return convert_channels_uint8(images, self.channels)

    def num_images(self, index: int) -> int:
        index = self._check_index(index)
        return self.offsets[index + 1] - self.offsets[index]
