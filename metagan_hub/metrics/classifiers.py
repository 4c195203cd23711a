# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Evaluation classifiers: small CNNs trained on real images of an evaluation domain, never on the shots.

An [`EvaluationClassifier`] judges generated samples of a held-out class: its logits give *recognisability* (the share
of samples assigned to the target class, read against the classifier's accuracy on real held-out images, the
ceiling) and its penultimate layer is a learned feature space for KID, FD, precision / recall and diversity.

[`train_evaluation_classifier`] trains one deterministically (fixed seeds; the same seed, data, recipe and thread count
give an identical state dict) with small affine jitter, so that it generalises to images that are not exact renders.
[`load_evaluation_classifier`] loads the classifier of an evaluation domain from the cache, or trains and caches it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin  # imported by name: diffusers looks these up on this module
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..data.cache import cache_key, resolve_cache_dir

if TYPE_CHECKING:
    from .domains import EvaluationDomain

logger = logging.getLogger(__name__)

CLASSIFIER_CACHE_SUBDIR = "classifiers"
#: bump when the architecture or the training code changes what a given recipe produces
CLASSIFIER_FORMAT_VERSION = 1


class EvaluationClassifier(ModelMixin, ConfigMixin):
    """
    A small CNN classifier over the classes of an evaluation domain; its penultimate layer is a feature space.

    Architecture: `len(block_out_channels)` blocks of (`layers_per_block` × [3×3 conv, BatchNorm, ReLU]) with 2×2 max
    pooling between blocks, global average pooling to a `block_out_channels[-1]`-dimensional feature vector
    ([`features`]), then dropout and one linear layer to the class logits ([`forward`]). Use it in `eval()` mode for
    evaluation ([`load_evaluation_classifier`] returns it so): BatchNorm then uses its running statistics, so every
    image's features are independent of the batch it comes in.

    Args:
        classes (`Sequence[str]`): class names, in logit order.
        domain (`str`, defaults to `"custom"`): the evaluation domain the classifier was trained for.
        resolution (`int`, defaults to 32): side length of the images it accepts.
        channels (`int`, defaults to 1): channels of the images it accepts.
        block_out_channels (`Sequence[int]`, defaults to `(16, 32, 64, 128)`): output channels of each block.
        layers_per_block (`int`, defaults to 1): conv layers per block.
        dropout (`float`, defaults to 0.1): dropout before the linear layer (training only).
        heldout_accuracy (`float`, *optional*): accuracy on the domain's real held-out images, recorded by
            [`train_evaluation_classifier`]: the ceiling every recognisability result is read against.
        heldout_accuracy_per_class (`list[float]`, *optional*): the same per evaluation class.
        training (`dict`, *optional*): the training recipe, seed, image counts and data description.
        with_head (`bool`, defaults to `True`): whether it has its linear layer to the class logits. Without it
            ([`without_head`]) it is a feature encoder only, as a pipeline's copy encoder stores it: [`features`]
            work, logits ([`forward`], [`embed`], [`predict`]) raise a `ValueError`; `classes` and the held-out
            accuracy still record what it was trained on.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics.classifiers import EvaluationClassifier

    >>> clf = EvaluationClassifier(classes=["a", "b", "c"], resolution=16, block_out_channels=(8, 16)).eval()
    >>> images = torch.rand(4, 1, 16, 16) * 2 - 1
    >>> clf(images).shape, clf.features(images).shape
    (torch.Size([4, 3]), torch.Size([4, 16]))
    ```
    """

    @register_to_config
    def __init__(
        self,
        classes: Sequence[str],
        domain: str = "custom",
        resolution: int = 32,
        channels: int = 1,
        block_out_channels: Sequence[int] = (16, 32, 64, 128),
        layers_per_block: int = 1,
        dropout: float = 0.1,
        heldout_accuracy: float | None = None,
        heldout_accuracy_per_class: list[float] | None = None,
        training: dict | None = None,
        with_head: bool = True,
    ):
        super().__init__()
        classes = list(classes)
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"`classes` must hold at least 2 distinct class names, got {len(classes)} names.")
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
            raise ValueError(f"`resolution` must be an integer >= 4, got {resolution!r}.")
        if channels not in (1, 3):
            raise ValueError(f"`channels` must be 1 or 3, got {channels!r}.")
        widths = list(block_out_channels)
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"`block_out_channels` must be positive integers, got {block_out_channels!r}.")
        if resolution >> (len(widths) - 1) < 1:
            raise ValueError(
                f"`resolution` {resolution} is too small for {len(widths)} blocks (each block after the first halves "
                "the image); use fewer `block_out_channels`."
            )
        if isinstance(layers_per_block, bool) or not isinstance(layers_per_block, int) or layers_per_block < 1:
            raise ValueError(f"`layers_per_block` must be a positive integer, got {layers_per_block!r}.")
        if not isinstance(with_head, bool):
            raise ValueError(f"`with_head` must be True or False, got {with_head!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")

        layers: list[nn.Module] = []
        in_ch = channels
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(layers_per_block):
                layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                in_ch = width
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(in_ch, len(classes)) if with_head else None

    @property
    def classes(self) -> list[str]:
        """Class names, in logit order."""
        return list(self.config.classes)

    @property
    def num_classes(self) -> int:
        return len(self.config.classes)

    @property
    def feature_dim(self) -> int:
        """Dimension of [`features`]."""
        return int(self.config.block_out_channels[-1])

    def without_head(self) -> EvaluationClassifier:
        """
        A feature encoder with this classifier's [`features`]: the same convolution and BatchNorm weights (copied) and
        config, without the linear layer to the logits (`with_head=False`). A pipeline's copy encoder needs only the
        features; the bundled one's 2,000-class layer was 1 MB of its 1.4 MB.

        Example:

        ```py
        >>> import torch
        >>> from metagan_hub.metrics.classifiers import EvaluationClassifier

        >>> clf = EvaluationClassifier(classes=["a", "b"], resolution=16, block_out_channels=(8, 16)).eval()
        >>> encoder = clf.without_head()
        >>> images = torch.rand(3, 1, 16, 16) * 2 - 1
        >>> torch.equal(encoder.features(images), clf.features(images)), encoder.head, encoder.classes
        (True, None, ['a', 'b'])
        ```
        """
        config = {key: value for key, value in self.config.items() if not key.startswith("_")}
        encoder = EvaluationClassifier(**{**config, "with_head": False})
        encoder.body.load_state_dict(self.body.state_dict())
        if encoder.dtype != self.dtype:
            encoder = encoder.to(dtype=self.dtype)
        return encoder.to(self.device).train(self.training)

    def _check_head(self, method: str) -> None:
        if self.head is None:
            raise ValueError(
                f"`{method}` needs class logits, but this {self.config.domain!r} encoder was saved without its "
                "classification head (with_head=False, a copy encoder): use `features()`."
            )

    @property
    def heldout_accuracy(self) -> float | None:
        """Accuracy on the domain's real held-out images (the ceiling), as recorded when it was trained."""
        return self.config.heldout_accuracy

    def check_images(self, images: torch.Tensor, argument: str = "images") -> None:
        """Raise a `ValueError` unless `images` is a float tensor `[N, channels, resolution, resolution]`."""
        expected = f"[N, {self.config.channels}, {self.config.resolution}, {self.config.resolution}]"
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"`{argument}` must be a torch.Tensor {expected} in [-1, 1], got {type(images).__name__}.")
        shape = tuple(images.shape)
        if (
            images.ndim != 4
            or shape[1] != self.config.channels
            or shape[2] != self.config.resolution
            or shape[3] != self.config.resolution
        ):
            raise ValueError(
                "an evaluation classifier that does not match the data: the "
                f"{self.config.domain!r} classifier expects `{argument}` of shape {expected}, got {list(shape)}."
            )
        if not images.is_floating_point():
            raise ValueError(f"`{argument}` must be a float tensor in [-1, 1], got dtype {images.dtype}.")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """
        Penultimate-layer features `[N, feature_dim]` of `images` `[N, C, H, W]` in `[-1, 1]` (globally average-pooled
        last block). Differentiable; wrap in `torch.no_grad()` for evaluation, or use [`embed`].
        """
        self.check_images(images)
        x = images.to(device=self.device, dtype=self.dtype)
        x = self.body(x)  # [N, D, h, w]
        return x.mean(dim=(2, 3))  # [N, D]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits `[N, num_classes]` of `images` `[N, C, H, W]` in `[-1, 1]`."""
        self._check_head("forward")
        return self.head(self.drop(self.features(images)))

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Logits `[N, num_classes]` and features `[N, feature_dim]` of `images`, in batches, without gradients, as
        float32 on the CPU. Call on a classifier in `eval()` mode.
        """
        self._check_head("embed")
        self.check_images(images)
        if self.training:
            logger.warning("EvaluationClassifier.embed() called in training mode; call .eval() first")
        logits, feats = [], []
        for start in range(0, images.shape[0], batch_size):
            f = self.features(images[start : start + batch_size])
            logits.append(self.head(f).float().cpu())
            feats.append(f.float().cpu())
        if not feats:
            return torch.zeros(0, self.num_classes), torch.zeros(0, self.feature_dim)
        return torch.cat(logits), torch.cat(feats)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Predicted class indices `[N]` (argmax of the logits)."""
        self._check_head("predict")
        return self.embed(images, batch_size)[0].argmax(dim=1)


@dataclass
class ClassifierRecipe:
    """
    How an [`EvaluationClassifier`] is trained (recorded in its config and hashed into its cache folder name).

    Args:
        num_epochs (`int`): passes over the training images.
        batch_size (`int`): images per step.
        learning_rate (`float`): peak AdamW learning rate (one-cycle: linear warm-up over 5% of the steps, then
            cosine decay to zero).
        weight_decay (`float`): AdamW weight decay.
        label_smoothing (`float`): cross-entropy label smoothing.
        max_rotation (`float`): affine jitter, degrees.
        max_scale (`float`): affine jitter, relative scale change (uniform in `[1 - s, 1 + s]`).
        max_translation (`float`): affine jitter, fraction of the image size.
        max_shear (`float`): affine jitter, shear factor.
        block_out_channels (`tuple[int, ...]`): classifier widths.
        layers_per_block (`int`): conv layers per block.
        dropout (`float`): dropout before the linear layer.
    """

    num_epochs: int = 15
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    max_rotation: float = 8.0
    max_scale: float = 0.1
    max_translation: float = 0.06
    max_shear: float = 0.1
    block_out_channels: tuple[int, ...] = (16, 32, 64, 128)
    layers_per_block: int = 1
    dropout: float = 0.1

    def __post_init__(self):
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        for name in ("num_epochs", "batch_size", "layers_per_block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        for name in ("learning_rate",):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)!r}.")
        for name in ("weight_decay", "label_smoothing", "max_rotation", "max_scale", "max_translation", "max_shear"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d


def affine_jitter(images: torch.Tensor, recipe: ClassifierRecipe, generator: torch.Generator) -> torch.Tensor:
    """
    Random small affine transforms (rotation, scale, shear, translation) of `images` `[N, C, H, W]` in `[-1, 1]`,
    drawn from `generator`; pixels from outside the image repeat the border (the background of glyph images).
    """
    n = images.shape[0]

    def uniform(scale: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * scale

    angle = uniform(math.radians(recipe.max_rotation))
    scale = 1 + uniform(recipe.max_scale)
    shear = uniform(recipe.max_shear)
    shift = torch.stack([uniform(2 * recipe.max_translation), uniform(2 * recipe.max_translation)], dim=1)  # [N, 2]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + shear
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _check_labelled(images: torch.Tensor, labels: torch.Tensor, num_classes: int, argument: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"`{argument}` must be a tensor [N, C, H, W], got {getattr(images, 'shape', images)!r}.")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise ValueError(f"the labels of `{argument}` must be a tensor [{images.shape[0]}] of class indices.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"the labels of `{argument}` must lie in [0, {num_classes}).")


def _as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(127.5).sub_(1.0)
    return images.to(torch.float32)


@torch.no_grad()
def classifier_accuracy(
    classifier: EvaluationClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512
) -> float:
    """Share of `images` (float in [-1, 1] or uint8) whose predicted class equals `labels`."""
    if images.shape[0] == 0:
        raise ValueError("`images` is empty: cannot compute an accuracy.")
    was_training = classifier.training
    classifier.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        pred = classifier.predict(_as_float(images[start : start + batch_size]))
        correct += int((pred == labels[start : start + batch_size]).sum())
    classifier.train(was_training)
    return correct / images.shape[0]


@torch.no_grad()
def recalibrate_batch_norm(
    classifier: EvaluationClassifier, images: torch.Tensor, batch_size: int = 128, max_images: int = 8192
) -> None:
    """
    Re-estimate the BatchNorm running statistics as exact averages over (up to `max_images` evenly spaced) unaugmented
    training `images`: the running averages of a short training run still remember their initial values.
    """
    norms = [m for m in classifier.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    idx = torch.linspace(0, images.shape[0] - 1, min(images.shape[0], max_images)).round().long().unique()
    was_training = classifier.training
    classifier.train()
    try:
        for start in range(0, idx.numel(), batch_size):
            classifier.features(_as_float(images[idx[start : start + batch_size]]))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        classifier.train(was_training)


def fit_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    *,
    domain: str = "custom",
    recipe: ClassifierRecipe | None = None,
    seed: int = 0,
    heldout: tuple[torch.Tensor, torch.Tensor] | None = None,
    num_threads: int | None = None,
    description: str | None = None,
) -> EvaluationClassifier:
    """
    Train an [`EvaluationClassifier`] on labelled images, deterministically.

    The initial weights, the shuffling, the dropout and the affine jitter all come from `seed`: the same images,
    labels, recipe, seed and thread count give an identical state dict (the float results of different thread counts
    may differ in the last bits).

    Args:
        images (`torch.Tensor`): uint8 (0-255) or float (`[-1, 1]`) training images `[N, C, H, W]`.
        labels (`torch.Tensor`): class indices `[N]` into `classes`.
        classes (`Sequence[str]`): class names.
        domain (`str`, defaults to `"custom"`): recorded in the config.
        recipe (`ClassifierRecipe`, *optional*): training recipe; defaults to `ClassifierRecipe()`.
        seed (`int`, defaults to 0): seed of everything random.
        heldout (`tuple[torch.Tensor, torch.Tensor]`, *optional*): `(images, labels)` of real held-out images of the
            evaluation classes; their accuracy is recorded as `heldout_accuracy` (with `heldout_accuracy_per_class`
            over the labels that occur).
        num_threads (`int`, *optional*): torch threads while training (restored afterwards); default: unchanged.
        description (`str`, *optional*): a description of the training data, recorded in the config.

    Returns:
        [`EvaluationClassifier`] in `eval()` mode.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics.classifiers import ClassifierRecipe, fit_classifier

    >>> images = torch.zeros(40, 1, 16, 16)
    >>> images[20:, :, :8] = 1.0  # class "b": the upper half is bright
    >>> labels = torch.tensor([0] * 20 + [1] * 20)
    >>> recipe = ClassifierRecipe(num_epochs=3, batch_size=8, block_out_channels=(8, 16))
    >>> clf = fit_classifier(images, labels, ["a", "b"], recipe=recipe, heldout=(images, labels))
    >>> clf.config.heldout_accuracy
    1.0
    ```
    """
    recipe = recipe or ClassifierRecipe()
    classes = list(classes)
    _check_labelled(images, labels, len(classes), "images")
    if heldout is not None:
        _check_labelled(heldout[0], heldout[1], len(classes), "heldout")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer, got {seed!r}.")
    n, channels, resolution = images.shape[0], images.shape[1], images.shape[2]
    if n == 0:
        raise ValueError("`images` is empty: nothing to train the classifier on.")
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        start_time = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clf = EvaluationClassifier(
                classes=classes,
                domain=domain,
                resolution=int(resolution),
                channels=int(channels),
                block_out_channels=recipe.block_out_channels,
                layers_per_block=recipe.layers_per_block,
                dropout=recipe.dropout,
            )
            generator = torch.Generator().manual_seed(seed)
            steps_per_epoch = math.ceil(n / recipe.batch_size)
            total_steps = steps_per_epoch * recipe.num_epochs
            warmup = max(1, round(0.05 * total_steps))
            optimizer = torch.optim.AdamW(clf.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)

            def lr_at(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
            clf.train()
            step = 0
            for epoch in range(recipe.num_epochs):
                order = torch.randperm(n, generator=generator)
                epoch_loss = 0.0
                for start in range(0, n, recipe.batch_size):
                    idx = order[start : start + recipe.batch_size]
                    if idx.numel() < 2:  # BatchNorm needs two images
                        continue
                    x = affine_jitter(_as_float(images[idx]), recipe, generator)
                    loss = F.cross_entropy(clf(x), labels[idx], label_smoothing=recipe.label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    epoch_loss += loss.item() * idx.numel()
                logger.info(
                    "classifier %s epoch %d/%d: loss %.4f", domain, epoch + 1, recipe.num_epochs, epoch_loss / n
                )
            recalibrate_batch_norm(clf, images, recipe.batch_size)
            clf.eval()
        seconds = time.perf_counter() - start_time
        heldout_accuracy, per_class = None, None
        if heldout is not None and heldout[0].shape[0] > 0:
            pred = torch.cat(
                [clf.predict(_as_float(heldout[0][i : i + 512])) for i in range(0, heldout[0].shape[0], 512)]
            )
            correct = (pred == heldout[1]).float()
            heldout_accuracy = float(correct.mean())
            present = sorted(set(heldout[1].tolist()))
            per_class = [float(correct[heldout[1] == c].mean()) for c in present]
        clf.register_to_config(
            heldout_accuracy=heldout_accuracy,
            heldout_accuracy_per_class=per_class,
            training={
                "format": CLASSIFIER_FORMAT_VERSION,
                "seed": seed,
                "recipe": recipe.to_dict(),
                "num_train_images": int(n),
                "num_heldout_images": int(heldout[0].shape[0]) if heldout is not None else 0,
                "steps": step,
                "seconds": round(seconds, 1),
                "num_threads": torch.get_num_threads(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "data": description,
            },
        )
    finally:
        torch.set_num_threads(old_threads)
    return clf


def train_evaluation_classifier(
    domain: EvaluationDomain,
    *,
    recipe: ClassifierRecipe | None = None,
    seed: int | None = None,
    num_threads: int | None = 1,
) -> EvaluationClassifier:
    """
    Train the evaluation classifier of an evaluation domain on its classifier-training images (disjoint from every
    possible shot and from the real held-out images) and record its accuracy on the real held-out images of the
    evaluation classes (the ceiling).

    Args:
        domain ([`EvaluationDomain`]): the domain (see [`get_evaluation_domain`]).
        recipe (`ClassifierRecipe`, *optional*): defaults to the domain's `classifier_recipe`.
        seed (`int`, *optional*): defaults to the domain's `classifier_seed`.
        num_threads (`int`, *optional*, defaults to 1): torch threads while training. One thread makes the rebuilt
            classifier bitwise identical wherever the same kind of CPU builds it, whatever its core count; `None`
            keeps the current setting.

    Returns:
        [`EvaluationClassifier`] in `eval()` mode, not yet saved (see [`load_evaluation_classifier`]).

    Example:

    ```py
    >>> from metagan_hub.metrics import ClassifierRecipe, get_evaluation_domain, train_evaluation_classifier

    >>> domain = get_evaluation_domain("digits", resolution=16)
    >>> recipe = ClassifierRecipe(num_epochs=1, block_out_channels=(8, 16))
    >>> clf = train_evaluation_classifier(domain, recipe=recipe)
    >>> clf.classes == domain.classifier_classes, 0.0 <= clf.heldout_accuracy <= 1.0
    (True, True)
    ```
    """
    recipe = recipe or domain.classifier_recipe
    seed = domain.classifier_seed if seed is None else seed
    images, labels = domain.classifier_training_data()
    real, real_labels = [], []
    for c in range(domain.num_classes):
        r = domain.real_uint8(c)
        real.append(r)
        real_labels.append(torch.full((r.shape[0],), domain.classifier_label(c), dtype=torch.long))
    heldout = (torch.cat(real), torch.cat(real_labels))
    logger.info(
        "training the %r evaluation classifier: %d classes, %d images, %d held-out real images",
        domain.name,
        len(domain.classifier_classes),
        images.shape[0],
        heldout[0].shape[0],
    )
    clf = fit_classifier(
        images,
        labels,
        domain.classifier_classes,
        domain=domain.name,
        recipe=recipe,
        seed=seed,
        heldout=heldout,
        num_threads=num_threads,
        description=domain.classifier_description,
    )
    clf.register_to_config(training={**clf.config.training, "cache_key": classifier_cache_key(domain, recipe, seed)})
    return clf


def classifier_cache_key(
    domain: EvaluationDomain, recipe: ClassifierRecipe | None = None, seed: int | None = None
) -> str:
    """Hash of everything that determines a domain's classifier: its data, recipe, seed and code version."""
    recipe = recipe or domain.classifier_recipe
    seed = domain.classifier_seed if seed is None else seed
    return cache_key(
        {
            "classifier_format": CLASSIFIER_FORMAT_VERSION,
            "domain": domain.classifier_params(),
            "recipe": recipe.to_dict(),
            "seed": seed,
        }
    )


def classifier_cache_path(
    domain: EvaluationDomain,
    cache_dir: str | os.PathLike | None = None,
    recipe: ClassifierRecipe | None = None,
    seed: int | None = None,
) -> Path:
    """The cache folder of a domain's classifier: `<cache>/classifiers/<domain>-<res>px-<C>ch-<hash>`."""
    key = classifier_cache_key(domain, recipe, seed)
    name = f"{domain.name}-{domain.resolution}px-{domain.channels}ch-{key}"
    return resolve_cache_dir(cache_dir) / CLASSIFIER_CACHE_SUBDIR / name


def save_classifier(classifier: EvaluationClassifier, folder: str | os.PathLike) -> Path:
    """`save_pretrained` into a temporary sibling folder, then move it into place (readers never see half a folder)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        classifier.save_pretrained(tmp, safe_serialization=True)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def check_classifier_matches(classifier: EvaluationClassifier, domain: EvaluationDomain) -> None:
    """Raise a `ValueError` unless `classifier` was trained for `domain` (classes, resolution, channels)."""
    cfg = classifier.config
    problems = []
    if cfg.resolution != domain.resolution or cfg.channels != domain.channels:
        problems.append(
            f"it takes {cfg.channels}x{cfg.resolution}x{cfg.resolution} images, the domain has "
            f"{domain.channels}x{domain.resolution}x{domain.resolution}"
        )
    if list(cfg.classes) != list(domain.classifier_classes):
        problems.append(f"its {len(cfg.classes)} classes differ from the domain's {len(domain.classifier_classes)}")
    if problems:
        raise ValueError(
            f"an evaluation classifier that does not match the data: the {cfg.domain!r} classifier does not fit the "
            f"{domain.name!r} domain: {'; '.join(problems)}."
        )


def load_evaluation_classifier(
    domain: EvaluationDomain | str,
    cache_dir: str | os.PathLike | None = None,
    build: bool = True,
    *,
    path: str | os.PathLike | None = None,
    num_threads: int | None = 1,
) -> EvaluationClassifier:
    """
    The evaluation classifier of a domain, in `eval()` mode: loaded from `path` or the cache, or trained (with the
    domain's recipe and seed) and written to the cache.

    Args:
        domain ([`EvaluationDomain`] or `str`): the domain, or its name (built at 32x32, 1 channel).
        cache_dir (`str` or `os.PathLike`, *optional*): cache folder (default `$METAGAN_HUB_CACHE` or
            `~/.cache/metagan_hub`); classifiers live under `classifiers/`.
        build (`bool`, defaults to `True`): train and cache the classifier if it is not cached; with `False` a missing
            classifier raises `FileNotFoundError`.
        path (`str` or `os.PathLike`, *optional*): load this saved classifier folder instead (checked to match).
        num_threads (`int`, *optional*, defaults to 1): torch threads while training (see
            [`train_evaluation_classifier`]).

    Example:

    ```py
    >>> import tempfile
    >>> from metagan_hub.metrics import ClassifierRecipe, get_evaluation_domain, load_evaluation_classifier

    >>> domain = get_evaluation_domain("digits", resolution=16)
    >>> domain.classifier_recipe = ClassifierRecipe(num_epochs=1, block_out_channels=(8, 16))  # a quick one
    >>> cache = tempfile.mkdtemp()
    >>> trained = load_evaluation_classifier(domain, cache_dir=cache)  # trained and cached
    >>> loaded = load_evaluation_classifier(domain, cache_dir=cache, build=False)  # read from the cache
    >>> loaded.config.heldout_accuracy == trained.config.heldout_accuracy
    True
    ```
    """
    if isinstance(domain, str):
        from .domains import get_evaluation_domain

        domain = get_evaluation_domain(domain, cache_dir=cache_dir)
    if path is not None:
        clf = EvaluationClassifier.from_pretrained(path).eval()
        check_classifier_matches(clf, domain)
        return clf
    folder = classifier_cache_path(domain, cache_dir)
    if (folder / "config.json").is_file():
        try:
            clf = EvaluationClassifier.from_pretrained(folder).eval()
        except (OSError, ValueError, RuntimeError) as err:
            logger.warning("ignoring unreadable cached classifier %s (%s)", folder, err)
        else:
            check_classifier_matches(clf, domain)
            logger.info("loaded the %r evaluation classifier from %s", domain.name, folder)
            return clf
    if not build:
        raise FileNotFoundError(
            f"no cached evaluation classifier for the {domain.name!r} domain at {folder}; build it with "
            f"`python scripts/train_eval_classifiers.py --domain {domain.name}` or pass build=True."
        )
    clf = train_evaluation_classifier(domain, num_threads=num_threads)
    try:
        save_classifier(clf, folder)
        logger.info("cached the %r evaluation classifier in %s", domain.name, folder)
    except OSError as err:
        logger.warning("could not cache the evaluation classifier in %s: %s", folder, err)
    return clf
