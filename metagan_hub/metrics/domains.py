# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Evaluation domains: held-out classes with a pool of shots, disjoint real images, and an evaluation classifier.

Every few-shot result is read on an [`EvaluationDomain`]: a fixed list of classes that the meta-checkpoint never saw,
each with

- a **shot pool** ([`EvaluationDomain.shots`] draws `k` shots from it with a seed),
- **real held-out images** ([`EvaluationDomain.real`]), disjoint from every image of the shot pool, that samples are
  compared with,
- **classifier-training images**, disjoint from both, on which the domain's [`EvaluationClassifier`] is trained
  ([`EvaluationDomain.classifier`]); its accuracy on the real held-out images is the ceiling
  ([`EvaluationDomain.real_accuracy`]).

Domains ([`EVALUATION_DOMAINS`]):

- `"kanji"`: the held-out (test) classes of the class split used in meta-training (`KanjiVGDataset`, 20 renders per
  class, `split_classes(seed=0)`). Shots come from the renders that meta-training and `scripts/evaluate_metagan.py`
  use (render seed 0; seed 0 of [`EvaluationDomain.shots`] gives the first `k`, the shots `evaluate_metagan.py`
  takes); real images and classifier-training images from render seeds that neither shots nor meta-training use.
- `"fonts"`: the same held-out kanji drawn with the installed CJK font faces (class = character, samples = faces), a
  drawing style the checkpoint never saw; each class's faces are split between shot pool, real images and classifier
  training.
- `"digits"`: scikit-learn's 8x8 digits upsampled (10 classes): another domain; each class's images are split.

Example:

```py
>>> from metagan_hub.metrics import get_evaluation_domain

>>> domain = get_evaluation_domain("digits")
>>> domain.classes[:3], domain.num_classes
(['0', '1', '2'], 10)
>>> domain.shots(3, k=5, seed=0).shape, domain.real(3).shape[1:]
(torch.Size([5, 1, 32, 32]), torch.Size([1, 32, 32]))
```
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch

from ..data.base import check_resolution_channels, uint8_to_float
from ..data.cache import resolve_cache_dir
from .classifiers import ClassifierRecipe, EvaluationClassifier, load_evaluation_classifier

logger = logging.getLogger(__name__)

EVALUATION_DOMAINS = ("kanji", "fonts", "digits")
MIN_RESOLUTION = 8

#: kanji render seeds: shots use the meta-training renders (seed 0, as `train_metagan.py --seed 0` and
#: `evaluate_metagan.py`); real held-out images and classifier-training images use seeds no script trains with.
KANJI_SHOT_RENDER_SEED = 0
KANJI_REAL_RENDER_SEED = 1_000_003
KANJI_CLASSIFIER_RENDER_SEED = 2_000_003


def _unique_indices(images: torch.Tensor) -> list[int]:
    """Indices of the first occurrence of every distinct image (compared byte for byte), in order."""
    seen: set[bytes] = set()
    keep = []
    for i in range(images.shape[0]):
        digest = hashlib.blake2b(images[i].numpy().tobytes(), digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
            keep.append(i)
    return keep


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    return int(value)


class EvaluationDomain(abc.ABC):
    """
    Held-out classes of one evaluation domain, with shots, disjoint real images and an evaluation classifier.

    Build one with [`get_evaluation_domain`]. Images are `[N, C, H, W]` float32 in `[-1, 1]` at the domain's
    `resolution` and `channels` (dark ink on white, like the training data). Data is rendered or loaded from the
    cache on first use.

    Attributes:
        name (`str`): the domain's name (one of [`EVALUATION_DOMAINS`]).
        description (`str`): one line for tables.
        classes (`list[str]`): the evaluation classes, in a fixed order.
        classifier_classes (`list[str]`): the classes of the evaluation classifier: the evaluation classes first (so
            [`classifier_label`] of class `c` is `c`), then any confuser classes.
        resolution (`int`), channels (`int`): image size.
        classifier_seed (`int`), classifier_recipe ([`ClassifierRecipe`]): how the classifier is trained.
    """

    name: str = ""
    description: str = ""
    classifier_seed: int = 0

    def __init__(self, resolution: int, channels: int, cache_dir: str | os.PathLike | None = None):
        check_resolution_channels(resolution, channels)
        if resolution < MIN_RESOLUTION:
            raise ValueError(
                f"`resolution` must be at least {MIN_RESOLUTION} for an evaluation domain, got {resolution}."
            )
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.cache_dir = resolve_cache_dir(cache_dir)
        self.classifier_recipe = ClassifierRecipe()
        self._classifier: EvaluationClassifier | None = None
        self._real_accuracy: list[float] | None = None

    # -- to implement ---------------------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def classes(self) -> list[str]:
        """The evaluation classes, in a fixed order."""
        raise NotImplementedError

    @property
    def classifier_classes(self) -> list[str]:
        return self.classes

    @abc.abstractmethod
    def shot_pool_uint8(self, class_index: int) -> torch.Tensor:
        """Every image that [`shots`] may return for the class, uint8 `[P, C, H, W]`, in pool order."""
        raise NotImplementedError

    @abc.abstractmethod
    def real_uint8(self, class_index: int) -> torch.Tensor:
        """The real held-out images of the class, uint8 `[M, C, H, W]`."""
        raise NotImplementedError

    @abc.abstractmethod
    def classifier_training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images `[N, C, H, W]` and labels `[N]` (indices into [`classifier_classes`]) to train on."""
        raise NotImplementedError

    @abc.abstractmethod
    def classifier_params(self) -> dict[str, Any]:
        """Everything that determines the classifier's training and held-out data (hashed into its cache name)."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def classifier_description(self) -> str:
        """What the classifier is trained on, for its config."""
        raise NotImplementedError

    # -- public interface -----------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def check_class_index(self, class_index: int) -> int:
        """Return `class_index` as an `int`, or raise a `ValueError` unless it is in `[0, num_classes)`."""
        n = self.num_classes
        if isinstance(class_index, bool) or not isinstance(class_index, int | np.integer) or not 0 <= class_index < n:
            raise ValueError(
                f"`class_index` must be an integer in [0, {n}) for the {self.name!r} domain, got {class_index!r}."
            )
        return int(class_index)

    def shot_pool_size(self, class_index: int) -> int:
        """Number of images [`shots`] can draw from for the class (the largest allowed `k`)."""
        return int(self.shot_pool_uint8(self.check_class_index(class_index)).shape[0])

    def shots(self, class_index: int, k: int, seed: int = 0) -> torch.Tensor:
        """
        `k` shots of class `class_index`, float32 `[k, C, H, W]` in `[-1, 1]`, drawn without replacement from the
        class's shot pool: `seed=0` takes the first `k` images of the pool (for kanji, exactly the shots
        `scripts/evaluate_metagan.py` uses), any other seed a seeded random choice (same seed, same shots).
        """
        c = self.check_class_index(class_index)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
        pool = self.shot_pool_uint8(c)
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"`k` must be a positive integer, got {k!r}.")
        if k > pool.shape[0]:
            raise ValueError(
                f"`k`={k} is larger than the shot pool of class {self.classes[c]!r} of the {self.name!r} domain "
                f"({pool.shape[0]} images); use k <= {pool.shape[0]}."
            )
        if seed == 0:
            chosen = torch.arange(k)
        else:
            chosen = torch.from_numpy(np.random.default_rng([int(seed), c]).permutation(pool.shape[0])[:k])
        return uint8_to_float(pool[chosen])

    def real(self, class_index: int) -> torch.Tensor:
        """Real held-out images of the class, float32 `[M, C, H, W]` in `[-1, 1]`, disjoint from every shot."""
        return uint8_to_float(self.real_uint8(self.check_class_index(class_index)))

    def classifier_label(self, class_index: int) -> int:
        """Index of the class in the domain's evaluation classifier."""
        return self.check_class_index(class_index)

    @property
    def classifier(self) -> EvaluationClassifier:
        """The domain's [`EvaluationClassifier`] (`eval()` mode), loaded from the cache or trained and cached."""
        if self._classifier is None:
            self._classifier = load_evaluation_classifier(self, cache_dir=self.cache_dir)
        return self._classifier

    @classifier.setter
    def classifier(self, classifier: EvaluationClassifier) -> None:
        from .classifiers import check_classifier_matches

        check_classifier_matches(classifier, self)
        self._classifier = classifier.eval()
        self._real_accuracy = None

    def real_accuracy_per_class(self) -> list[float]:
        """The classifier's accuracy on each class's real held-out images: the per-class ceiling."""
        if self._real_accuracy is None:
            clf = self.classifier
            self._real_accuracy = [
                float((clf.predict(self.real(c)) == self.classifier_label(c)).float().mean())
                for c in range(self.num_classes)
            ]
        return list(self._real_accuracy)

    @property
    def real_accuracy(self) -> float:
        """The classifier's accuracy on all real held-out images (the ceiling recognisability is read against)."""
        recorded = self.classifier.config.heldout_accuracy
        if recorded is not None:
            return float(recorded)
        counts = [self.real_uint8(c).shape[0] for c in range(self.num_classes)]
        return float(np.average(self.real_accuracy_per_class(), weights=counts))

    def check_images(self, images: torch.Tensor, argument: str = "images") -> None:
        """Raise a `ValueError` unless `images` is `[N, channels, resolution, resolution]` (no silent resizing)."""
        expected = [self.channels, self.resolution, self.resolution]
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or list(images.shape[1:]) != expected:
            got = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(
                f"`{argument}` must have shape [N, {self.channels}, {self.resolution}, {self.resolution}] to match "
                f"the {self.name!r} evaluation domain, got {got}; resize them explicitly or build the domain at that "
                "resolution and channel count."
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, num_classes={self.num_classes}, resolution={self.resolution}, "
            f"channels={self.channels})"
        )


class _SplitDomain(EvaluationDomain, abc.ABC):
    """A domain whose classes each hold a few images, split per class into shot pool / real / classifier-training."""

    split_seed: int = 0

    @abc.abstractmethod
    def _class_images_uint8(self, class_index: int) -> torch.Tensor:
        """All images of the class, uint8 `[N, C, H, W]`."""
        raise NotImplementedError

    @abc.abstractmethod
    def _split_sizes(self, n: int) -> tuple[int, int]:
        """`(shot pool, real)` sizes of a class with `n` distinct images; the rest trains the classifier."""
        raise NotImplementedError

    @cached_property
    def _splits(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        splits = []
        for c in range(self.num_classes):
            images = self._class_images_uint8(c)
            unique = _unique_indices(images)  # exact duplicates would put one image on both sides of a split
            order = np.random.default_rng([self.split_seed, c]).permutation(len(unique))
            idx = torch.as_tensor([unique[i] for i in order], dtype=torch.long)
            pool, real = self._split_sizes(len(unique))
            splits.append((idx[:pool], idx[pool : pool + real], idx[pool + real :]))
        return splits

    def shot_pool_uint8(self, class_index: int) -> torch.Tensor:
        c = self.check_class_index(class_index)
        return self._class_images_uint8(c)[self._splits[c][0]]

    def real_uint8(self, class_index: int) -> torch.Tensor:
        c = self.check_class_index(class_index)
        return self._class_images_uint8(c)[self._splits[c][1]]

    def classifier_training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for c in range(self.num_classes):
            train = self._class_images_uint8(c)[self._splits[c][2]]
            images.append(train)
            labels.append(torch.full((train.shape[0],), self.classifier_label(c), dtype=torch.long))
        return torch.cat(images), torch.cat(labels)


class DigitsDomain(_SplitDomain):
    """
    scikit-learn's 8x8 handwritten digits upsampled to `resolution` (10 classes, about 180 images each): per class,
    after removing exact duplicates, a seeded permutation gives 20 shot-pool images, 60 real held-out images and the
    rest (about 95) for classifier training.
    """

    name = "digits"
    description = "scikit-learn digits (8x8, upsampled): 10 classes"
    split_seed = 0
    classifier_seed = 0
    shot_pool = 20
    num_real = 60

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        cache_dir: str | os.PathLike | None = None,
        *,
        num_classes: int | None = None,
    ):
        super().__init__(resolution, channels, cache_dir)
        from ..data.digits import DigitsDataset

        self._dataset = DigitsDataset(resolution=self.resolution, channels=self.channels)
        n = 10 if num_classes is None else _check_int(num_classes, "num_classes", 2)
        if n > 10:
            raise ValueError(f"`num_classes` must be at most 10 for the 'digits' domain, got {num_classes!r}.")
        self._classes = self._dataset.class_names[:n]
        self.description = f"scikit-learn digits (8x8 upsampled to {self.resolution}): {n} classes"

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def _class_images_uint8(self, class_index: int) -> torch.Tensor:
        return self._dataset.class_images_uint8(class_index)

    def _split_sizes(self, n: int) -> tuple[int, int]:
        return self.shot_pool, self.num_real

    def classifier_params(self) -> dict[str, Any]:
        return {
            "domain": self.name,
            "resolution": self.resolution,
            "channels": self.channels,
            "classes": self.classes,
            "split_seed": self.split_seed,
            "shot_pool": self.shot_pool,
            "num_real": self.num_real,
        }

    @property
    def classifier_description(self) -> str:
        return (
            f"scikit-learn digits at {self.resolution}x{self.resolution}: per class the images left after "
            f"{self.shot_pool} shot-pool and {self.num_real} real held-out images (split seed {self.split_seed})"
        )


class DatasetSplitDomain(_SplitDomain):
    """
    An evaluation domain made from the classes of any class-structured dataset, for example the validation classes of
    a meta-training run (`scripts/train_metagan.py --yardstick_classes`): per class, after removing exact duplicates, a
    seeded permutation gives a shot pool of `shot_pool` images, `num_real` real held-out images (default: half of the
    rest) and the rest, which trains the classifier. The classifier tells the domain's classes apart, and from the
    classes of `confusers` if given (all their images train it; e.g. meta-training classes, so that recognising a
    class takes more than telling a handful of classes apart); it is trained on first use and cached like the other
    domains', keyed by a hash of the images themselves.

    Args:
        dataset ([`ClassImageDataset`]): the classes (e.g. the `val` part of `dataset.split_classes()`).
        num_classes (`int`, *optional*): use only the first `num_classes` classes (default: all).
        shot_pool (`int`, defaults to 5): images per class that [`shots`] may draw from.
        num_real (`int`, *optional*): real held-out images per class (default: half of what the shot pool leaves).
        split_seed (`int`, defaults to 0): seed of the per-class split.
        name (`str`, defaults to `"validation"`): the domain's name in logs and classifier configs.
        confusers ([`ClassImageDataset`], *optional*): further classes for the classifier only.
        cache_dir (`str` or `os.PathLike`, *optional*): where the classifier is cached (default: the dataset's
            `cache_dir`, or that of the dataset a [`ClassSubset`] views, else `$METAGAN_HUB_CACHE` or
            `~/.cache/metagan_hub`).

    Example:

    ```py
    >>> from metagan_hub.data import get_dataset
    >>> from metagan_hub.metrics.domains import DatasetSplitDomain

    >>> _, val, _ = get_dataset("digits", resolution=16).split_classes(num_val=3, num_test=2, seed=0)
    >>> domain = DatasetSplitDomain(val, shot_pool=5)
    >>> domain.num_classes, domain.shots(0, k=5).shape, domain.real(0).shape[0] > 50
    (3, torch.Size([5, 1, 16, 16]), True)
    ```
    """

    classifier_seed = 0

    def __init__(
        self,
        dataset: Any,
        *,
        num_classes: int | None = None,
        shot_pool: int = 5,
        num_real: int | None = None,
        split_seed: int = 0,
        name: str = "validation",
        confusers: Any = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        if cache_dir is None:  # a ClassSubset (e.g. a split's validation classes) has the cache of what it views
            viewed = getattr(dataset, "parent", None)
            cache_dir = getattr(dataset, "cache_dir", None) or getattr(viewed, "cache_dir", None)
        super().__init__(dataset.resolution, dataset.channels, cache_dir)
        if confusers is not None and (confusers.resolution, confusers.channels) != (self.resolution, self.channels):
            raise ValueError(
                f"`confusers` must have the dataset's resolution and channels ({self.resolution}, {self.channels}), "
                f"got ({confusers.resolution}, {confusers.channels})."
            )
        self._confusers = confusers
        self._dataset = dataset
        n = dataset.num_classes if num_classes is None else _check_int(num_classes, "num_classes", 1)
        if n > dataset.num_classes:
            raise ValueError(f"`num_classes` must be at most the dataset's {dataset.num_classes} classes, got {n}.")
        if n < 2:
            raise ValueError(f"an evaluation domain needs at least 2 classes for its classifier, got {n}.")
        self.shot_pool = _check_int(shot_pool, "shot_pool", 1)
        self.num_real = None if num_real is None else _check_int(num_real, "num_real", 2)
        self.split_seed = _check_int(split_seed, "split_seed", 0)
        self.name = str(name)
        self._classes = list(dataset.class_names[:n])
        for c in range(n):  # fail now, naming the class, rather than in the middle of an evaluation
            count = len(_unique_indices(dataset.class_images_uint8(c)))
            if count < self.shot_pool + (self.num_real or 2) + 1:
                raise ValueError(
                    f"class {self._classes[c]!r} has {count} distinct images; a shot pool of {self.shot_pool}, "
                    f"{self.num_real or 2} real held-out images and 1 classifier-training image need "
                    f"{self.shot_pool + (self.num_real or 2) + 1}."
                )
        self.description = f"{n} classes of {type(dataset).__name__} (shot pool {self.shot_pool} per class)"

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def classifier_classes(self) -> list[str]:
        extra = [] if self._confusers is None else [f"confuser:{name}" for name in self._confusers.class_names]
        return self.classes + extra

    def classifier_training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = super().classifier_training_data()
        if self._confusers is None:
            return images, labels
        extra = [self._confusers.class_images_uint8(j) for j in range(self._confusers.num_classes)]
        extra_labels = [torch.full((x.shape[0],), self.num_classes + j, dtype=torch.long) for j, x in enumerate(extra)]
        return torch.cat([images, *extra]), torch.cat([labels, *extra_labels])

    def _class_images_uint8(self, class_index: int) -> torch.Tensor:
        return self._dataset.class_images_uint8(class_index)

    def _split_sizes(self, n: int) -> tuple[int, int]:
        real = self.num_real if self.num_real is not None else max(2, (n - self.shot_pool) // 2)
        return self.shot_pool, real

    def classifier_params(self) -> dict[str, Any]:
        return {
            "domain": self.name,
            "resolution": self.resolution,
            "channels": self.channels,
            "classes": self.classes,
            "split_seed": self.split_seed,
            "shot_pool": self.shot_pool,
            "num_real": self.num_real,
            "images": self._images_digest,
            "classifier_classes": self.classifier_classes,
        }

    @cached_property
    def _images_digest(self) -> str:
        digest = hashlib.sha256()
        parts = [self._class_images_uint8(c) for c in range(self.num_classes)]
        if self._confusers is not None:
            parts += [self._confusers.class_images_uint8(j) for j in range(self._confusers.num_classes)]
        for images in parts:
            digest.update(str(tuple(images.shape)).encode())
            digest.update(images.contiguous().numpy().tobytes())
        return digest.hexdigest()[:24]

    @property
    def classifier_description(self) -> str:
        return (
            f"{self.description}: per class the images left after the shot pool and the real held-out images (split "
            f"seed {self.split_seed})"
        )


def _kanji_test_classes(split_seed: int, cache_dir) -> tuple[list[str], list[str]]:
    """`(train, test)` class names of the KanjiVG class split meta-training uses (no rendering)."""
    from ..data.kanjivg import KanjiVGDataset

    full = KanjiVGDataset(resolution=32, samples_per_class=20, seed=0, cache_dir=cache_dir)
    train, _, test = full.split_classes(seed=split_seed)
    return train.class_names, test.class_names


class KanjiDomain(EvaluationDomain):
    """
    The held-out (test) classes of the KanjiVG class split used by `scripts/train_metagan.py` (20 renders per class,
    `split_classes(seed=0)`: 1,286 of 6,431 kanji), in the split's order.

    - Shot pool: the 20 renders with render seed 0 that meta-training and `scripts/evaluate_metagan.py` use (seed 0
      of [`shots`] gives the first `k`, as `evaluate_metagan.py` does).
    - Real held-out images: `num_real` renders with render seed 1,000,003.
    - Classifier: over the evaluation classes plus `num_confuser_classes` training-split classes as confusers (a
      seeded choice), trained on `classifier_samples` renders per class with render seed 2,000,003 (never the shots,
      never the real held-out renders). A classifier over all 6,431 classes (64,000+ training renders) does not
      train in the minutes a shared 2-core machine gives it; the confusers keep it from only having to tell held-out
      classes apart.

    Args:
        num_classes (`int`, *optional*, defaults to 300): use the first `num_classes` test classes (`None`: all
            1,286). The benchmark's main table needs at least 30.
        split_seed (`int`, defaults to 0): the class split seed of meta-training (`train_metagan.py --split_seed`).
        num_real (`int`, defaults to 20): real held-out renders per class.
        classifier_samples (`int`, defaults to 10): classifier-training renders per class.
        num_confuser_classes (`int`, defaults to 128): training-split classes added to the classifier.
    """

    name = "kanji"
    classifier_seed = 0

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        cache_dir: str | os.PathLike | None = None,
        *,
        num_classes: int | None = 300,
        split_seed: int = 0,
        num_real: int = 20,
        classifier_samples: int = 10,
        num_confuser_classes: int = 128,
    ):
        super().__init__(resolution, channels, cache_dir)
        self.split_seed = _check_int(split_seed, "split_seed", 0)
        self.num_real = _check_int(num_real, "num_real", 2)
        self.classifier_samples = _check_int(classifier_samples, "classifier_samples", 1)
        self.num_confuser_classes = _check_int(num_confuser_classes, "num_confuser_classes", 0)
        train, test = _kanji_test_classes(self.split_seed, cache_dir)
        if num_classes is not None:
            test = test[: _check_int(num_classes, "num_classes", 1)]
        self._classes = list(test)
        order = np.random.default_rng([self.split_seed, 7]).permutation(len(train))
        self._confusers = [train[i] for i in sorted(order[: self.num_confuser_classes].tolist())]
        self.samples_per_class = 20
        self.description = (
            f"KanjiVG held-out classes (test split, seed {self.split_seed}): {len(test)} classes, "
            f"shots from the meta-training renders, {self.num_real} other renders as real images"
        )

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def classifier_classes(self) -> list[str]:
        return self._classes + self._confusers

    def _renders(self, characters: Sequence[str], samples: int, seed: int):
        from ..data.kanjivg import KanjiVGDataset

        return KanjiVGDataset(
            resolution=self.resolution,
            channels=self.channels,
            samples_per_class=samples,
            characters=characters,
            seed=seed,
            cache_dir=self.cache_dir,
        ).load()

    @cached_property
    def _shot_data(self):
        # the render of a character depends only on (seed, character): these are the pixels of the full dataset
        return self._renders(self._classes, self.samples_per_class, KANJI_SHOT_RENDER_SEED)

    @cached_property
    def _real_data(self):
        return self._renders(self._classes, self.num_real, KANJI_REAL_RENDER_SEED)

    @staticmethod
    def _index_of(dataset) -> dict[str, int]:
        return {name: i for i, name in enumerate(dataset.class_names)}

    def shot_pool_uint8(self, class_index: int) -> torch.Tensor:
        c = self.check_class_index(class_index)
        data = self._shot_data
        return data.class_images_uint8(self._index_of(data)[self._classes[c]])

    def real_uint8(self, class_index: int) -> torch.Tensor:
        c = self.check_class_index(class_index)
        data = self._real_data
        return data.class_images_uint8(self._index_of(data)[self._classes[c]])

    def classifier_training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        classes = self.classifier_classes
        data = self._renders(classes, self.classifier_samples, KANJI_CLASSIFIER_RENDER_SEED)
        index = self._index_of(data)
        images = torch.cat([data.class_images_uint8(index[name]) for name in classes])
        labels = torch.arange(len(classes)).repeat_interleave(self.classifier_samples)
        return images, labels

    def classifier_params(self) -> dict[str, Any]:
        return {
            "domain": self.name,
            "resolution": self.resolution,
            "channels": self.channels,
            "split_seed": self.split_seed,
            "classes": "".join(self.classifier_classes),
            "classifier_samples": self.classifier_samples,
            "classifier_render_seed": KANJI_CLASSIFIER_RENDER_SEED,
            "num_real": self.num_real,
            "real_render_seed": KANJI_REAL_RENDER_SEED,
        }

    @property
    def classifier_description(self) -> str:
        return (
            f"KanjiVG renders (render seed {KANJI_CLASSIFIER_RENDER_SEED}, {self.classifier_samples} per class) of "
            f"{len(self._classes)} held-out test classes and {len(self._confusers)} training-split confuser classes"
        )


class FontsDomain(_SplitDomain):
    """
    The held-out kanji of the KanjiVG class split, drawn with the installed CJK font faces (class = character, samples
    = distinct faces after [`FontGlyphDataset`]'s duplicate filtering): a drawing style the checkpoint never saw.

    Per class, a seeded permutation of its faces gives the shot pool (40% of the faces, at most `max_shot_pool`), the
    real held-out images (half of the rest, at least 2, at most `max_real`) and the faces that train the classifier
    (the rest, at least 1). With the ~32 distinct faces of Debian's Japanese font packages a class has 26-28 faces:
    10 shots, 8 real images, 8-10 classifier-training faces. Classes drawn by fewer than `min_faces` distinct faces
    are left out; with too few faces installed the domain raises a `ValueError` saying how many it needs.

    Args:
        num_classes (`int`, *optional*, defaults to 300): draw the first `num_classes` held-out kanji of the test split
            (`None`: all 1,286); those with fewer than `min_faces` faces are then left out.
        font_paths (*optional*): font files or folders instead of the system's CJK fonts.
        min_faces (`int`, defaults to 12): distinct faces a character needs (at least 4: 1 shot, 2 real images, 1 to
            train the classifier; 12 gives a shot pool of 5).
        max_shot_pool (`int`, defaults to 10), max_real (`int`, defaults to 10): caps of the per-class split.
        split_seed (`int`, defaults to 0): seed of the per-class face split.
    """

    name = "fonts"
    classifier_seed = 0
    split_seed = 0

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        cache_dir: str | os.PathLike | None = None,
        *,
        num_classes: int | None = 300,
        font_paths: Any = None,
        min_faces: int = 12,
        max_shot_pool: int = 10,
        max_real: int = 10,
        split_seed: int = 0,
    ):
        super().__init__(resolution, channels, cache_dir)
        self.min_faces = _check_int(min_faces, "min_faces", 4)
        self.max_shot_pool = _check_int(max_shot_pool, "max_shot_pool", 1)
        self.max_real = _check_int(max_real, "max_real", 2)
        self.split_seed = _check_int(split_seed, "split_seed", 0)
        self.num_classes_requested = None if num_classes is None else _check_int(num_classes, "num_classes", 2)
        self.font_paths = font_paths
        # few images per class: more passes (measured, 298 classes: 20 epochs 0.875 held-out accuracy, 40 epochs 0.909)
        self.classifier_recipe = ClassifierRecipe(num_epochs=40)
        _, test_chars = _kanji_test_classes(0, cache_dir)
        self._characters = test_chars[: self.num_classes_requested]

    @cached_property
    def _data(self):
        from ..data.fonts import FontGlyphDataset

        try:
            dataset = FontGlyphDataset(
                resolution=self.resolution,
                channels=self.channels,
                characters=self._characters,
                font_paths=self.font_paths,
                min_samples=self.min_faces,
                cache_dir=self.cache_dir,
            )
            faces = len(dataset.faces)
            dataset.load()
        except ValueError as err:
            raise ValueError(
                f"the 'fonts' evaluation domain needs CJK font faces that draw at least min_faces={self.min_faces} "
                f"distinct glyphs per character (1+ shots, 2+ real images, 1+ classifier-training image): {err}"
            ) from err
        names = dataset.class_names
        if len(names) < 2:
            raise ValueError(
                f"the 'fonts' evaluation domain needs at least 2 characters drawn by min_faces={self.min_faces} "
                f"distinct font faces; the {faces} installed face(s) give {len(names)}. Install more CJK fonts "
                "(see metagan_hub.data.fonts) or lower `min_faces` (at least 4)."
            )
        index = {name: i for i, name in enumerate(dataset.class_names)}
        return dataset, names, [index[n] for n in names]

    @property
    def classes(self) -> list[str]:
        return list(self._data[1])

    @property
    def description(self) -> str:  # type: ignore[override]
        dataset = self._data[0]
        return (
            f"CJK font glyphs of held-out kanji: {self.num_classes} classes, {len(dataset.faces)} faces "
            f"({len(dataset.duplicate_faces)} duplicate faces dropped)"
        )

    def _class_images_uint8(self, class_index: int) -> torch.Tensor:
        dataset, _, rows = self._data
        return dataset.class_images_uint8(rows[class_index])

    def _split_sizes(self, n: int) -> tuple[int, int]:
        pool = max(1, min(self.max_shot_pool, round(0.4 * n), n - 3))
        real = max(2, min(self.max_real, (n - pool) // 2))
        return pool, real  # n >= min_faces >= 4 leaves at least one classifier-training face

    def classifier_params(self) -> dict[str, Any]:
        dataset = self._data[0]
        return {
            "domain": self.name,
            "resolution": self.resolution,
            "channels": self.channels,
            "render": dataset.render_params(),
            "classes": "".join(self.classes),
            "split_seed": self.split_seed,
            "min_faces": self.min_faces,
            "max_shot_pool": self.max_shot_pool,
            "max_real": self.max_real,
        }

    @property
    def classifier_description(self) -> str:
        return (
            f"CJK font glyphs of {self.num_classes} held-out kanji: per class the faces left after the shot pool and "
            f"the real held-out faces (split seed {self.split_seed})"
        )


_DOMAIN_CLASSES = {"kanji": KanjiDomain, "fonts": FontsDomain, "digits": DigitsDomain}


def get_evaluation_domain(
    name: str,
    *,
    resolution: int = 32,
    channels: int = 1,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> EvaluationDomain:
    """
    Build an evaluation domain by name.

    Args:
        name (`str`): one of [`EVALUATION_DOMAINS`]: `"kanji"`, `"fonts"` or `"digits"`.
        resolution (`int`, defaults to 32): image side length (the benchmark resolution of the bundled checkpoint).
        channels (`int`, defaults to 1): 1 (gray) or 3 (gray repeated).
        cache_dir (`str` or `os.PathLike`, *optional*): cache of renders and classifiers (default
            `$METAGAN_HUB_CACHE` or `~/.cache/metagan_hub`).
        **kwargs: domain options, e.g. `num_classes=` for `"kanji"` and `"fonts"` (see [`KanjiDomain`],
            [`FontsDomain`]).

    Returns:
        [`EvaluationDomain`]

    Example:

    ```py
    >>> from metagan_hub.metrics import get_evaluation_domain
    >>> domain = get_evaluation_domain("digits", resolution=16)
    >>> domain.classifier_label(7), domain.shots(7, k=3, seed=1).shape
    (7, torch.Size([3, 1, 16, 16]))
    ```
    """
    if name not in _DOMAIN_CLASSES:
        raise ValueError(f"unknown evaluation domain {name!r}; choose one of {EVALUATION_DOMAINS}.")
    return _DOMAIN_CLASSES[name](resolution=resolution, channels=channels, cache_dir=cache_dir, **kwargs)
