# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Few-shot generation quality metrics: one metric per function in a registry (as stylegan2-ada's `metric_main`).

Every metric takes generated and real image features (`[N, D]` float tensors) and returns a float. Features come from
[`extract_features`]: `"pixels"` (images average-pooled to 16×16 and flattened; no pretrained network needed) is the
default, so results are reproducible offline. Numbers are only comparable between runs that use the same feature
space, sample counts and seeds, which [`compute_metrics`] records with each result.

Example:

```py
>>> import torch
>>> from metagan_hub.metrics import compute_metrics

>>> fake, real = torch.rand(64, 1, 32, 32) * 2 - 1, torch.rand(16, 1, 32, 32) * 2 - 1
>>> result = compute_metrics(fake, real, metrics=("kid", "nn_real", "diversity"))
>>> sorted(result["metrics"])
['diversity', 'kid', 'nn_real']
```
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from metagan_hub.metrics.classifiers import (  # noqa: F401  (public re-exports)
    ClassifierRecipe,
    EvaluationClassifier,
    fit_classifier,
    load_evaluation_classifier,
    train_evaluation_classifier,
)
from metagan_hub.metrics.domains import (  # noqa: F401  (public re-exports)
    EVALUATION_DOMAINS,
    EvaluationDomain,
    get_evaluation_domain,
)
from metagan_hub.metrics.fewshot import (  # noqa: F401  (public re-exports)
    CLASSIFIER_GAIN_METHODS,
    FEWSHOT_METRICS,
    classifier_gain,
    copy_rate,
    copy_threshold,
    density_coverage,
    evaluate_class,
    frechet_distance,
    kid,
    precision_recall,
    recognisability,
    relative_diversity,
)
from metagan_hub.metrics.image_statistics import (  # noqa: F401  (public re-exports)
    IMAGE_STATISTICS,
    image_statistics,
    statistic_spread,
)

logger = logging.getLogger(__name__)

METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {}
FEATURE_SPACES = ("pixels",)


def _cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # exact differences rather than the matmul expansion, which loses precision for near-identical images
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def register_metric(name: str):
    """Decorator adding a metric `fn(fake_features, real_features) -> float` to [`METRICS`]."""

    def wrap(fn):
        METRICS[name] = fn
        return fn

    return wrap


def extract_features(images: torch.Tensor, space: str = "pixels", size: int = 16) -> torch.Tensor:
    """Features of images `[N, C, H, W]` in `[-1, 1]`: `"pixels"` average-pools to `size`×`size` and flattens."""
    if space not in FEATURE_SPACES:
        raise ValueError(f"`space` must be one of {FEATURE_SPACES}, got {space!r}.")
    if images.ndim != 4:
        raise ValueError(f"`images` must have shape [N, C, H, W], got {tuple(images.shape)}.")
    x = images.float()
    if x.shape[-1] != size:
        x = F.adaptive_avg_pool2d(x, size)  # [N, C, size, size]
    return x.flatten(1)  # [N, C * size * size]


@register_metric("kid")
def kernel_inception_distance(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel `(x·y / d + 1)^3` (Bińkowski et al. 2018)."""
    d = fake.shape[1]

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / d + 1) ** 3

    m, n = fake.shape[0], real.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"KID needs at least 2 generated and 2 real samples, got {m} and {n}.")
    kxx, kyy, kxy = k(fake, fake), k(real, real), k(fake, real)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


@register_metric("nn_real")
def nearest_real_distance(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Mean distance from each generated sample to its nearest real image (lower = closer to the class)."""
    return float(_cdist(fake, real).min(dim=1).values.mean())


@register_metric("nn_fake")
def nearest_fake_distance(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Mean distance from each real image to its nearest generated sample (lower = the class is covered)."""
    return float(_cdist(real, fake).min(dim=1).values.mean())


@register_metric("diversity")
def diversity(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Mean pairwise distance between generated samples (near 0 = mode collapse)."""
    dist = _cdist(fake, fake)
    n = fake.shape[0]
    return float(dist.sum() / max(n * (n - 1), 1))


def heldout_distance(samples: torch.Tensor, real: torch.Tensor) -> float:
    """
    Symmetric nearest-neighbour (Chamfer) RMS pixel distance between generated `samples` and held-out `real` images,
    both `[N, C, H, W]` in `[-1, 1]` at full resolution: the mean of (each sample's RMS distance to its nearest real
    image) and (each real image's RMS distance to its nearest sample). Lower is better; the second term penalizes mode
    collapse. This is the `heldout_distance` that meta-training validation and `scripts/evaluate_metagan.py` report.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics import heldout_distance

    >>> real = torch.zeros(4, 1, 8, 8)
    >>> heldout_distance(real + 0.5, real)
    0.5
    ```
    """
    if samples.ndim != 4 or real.ndim != 4 or samples.shape[1:] != real.shape[1:]:
        raise ValueError(
            f"`samples` and `real` must both be [N, C, H, W] with the same C, H, W, got {tuple(samples.shape)} and "
            f"{tuple(real.shape)}."
        )
    a = samples.detach().cpu().reshape(samples.shape[0], -1).double()  # [S, D]
    b = real.detach().cpu().reshape(real.shape[0], -1).double()  # [R, D]
    dist = _cdist(a, b) / math.sqrt(a.shape[1])  # [S, R] RMS distances
    return float(0.5 * (dist.min(dim=1).values.mean() + dist.min(dim=0).values.mean()))


def compute_metrics(
    fake_images: torch.Tensor,
    real_images: torch.Tensor,
    metrics: Sequence[str] = ("kid", "nn_real", "nn_fake", "diversity"),
    space: str = "pixels",
) -> dict[str, Any]:
    """
    Compute `metrics` between generated and real images (`[N, C, H, W]` in `[-1, 1]`).

    Returns:
        `dict`: `{"metrics": {name: value}, "num_fake": ..., "num_real": ..., "space": ...}`.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; available: {sorted(METRICS)}.")
    fake = extract_features(fake_images, space)
    real = extract_features(real_images, space)
    return {
        "metrics": {name: METRICS[name](fake, real) for name in metrics},
        "num_fake": int(fake.shape[0]),
        "num_real": int(real.shape[0]),
        "space": space,
    }
