# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Per-image pixel statistics and how much they vary: which global factors a generator varies less than the data.

Feature-space metrics (recall, coverage, relative diversity) say *that* samples vary too little; these say *in what*.
Each image gets four numbers ([`IMAGE_STATISTICS`]), and [`statistic_spread`] compares their standard deviation over
generated images with that over real images: 1 means the samples vary a statistic as much as the real images do.

- `mean`: mean pixel value (brightness; on ink-on-paper images, how much ink).
- `contrast`: standard deviation of the pixel values.
- `edge_density`: mean absolute difference between horizontally and vertically adjacent pixels.
- `structure_scale`: `2 * mean |x - median(x)| / (mean |dx| + mean |dy|)`, in pixels: for dark strokes on a light
  background (or the reverse) roughly the stroke width, for other images the typical size of what stands out from the
  background. Images with no edges get 0.

Meta-training validation (`scripts/train_metagan.py`) reports the spreads of the unadapted and the adapted samples
against the held-out renders.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

IMAGE_STATISTICS = ("mean", "contrast", "edge_density", "structure_scale")
"""The per-image statistics of [`image_statistics`], in order."""


def _check_images(images: torch.Tensor, name: str, min_images: int = 1) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`{name}` must be a tensor of shape (N, C, H, W), got {got}.")
    if images.shape[0] < min_images or images.shape[2] < 2 or images.shape[3] < 2:
        raise ValueError(
            f"`{name}` needs at least {min_images} image(s) of at least 2x2 pixels, got shape {tuple(images.shape)}."
        )
    if not images.is_floating_point() or not torch.isfinite(images).all():
        raise ValueError(f"`{name}` must hold finite floating-point pixel values.")
    return images.detach().double().cpu()


def image_statistics(images: torch.Tensor) -> dict[str, torch.Tensor]:
    r"""
    The [`IMAGE_STATISTICS`] of every image (channels pooled).

    Args:
        images (`torch.Tensor` of shape `(N, C, H, W)`): floating-point images, any value range (the metagan_hub
            convention is `[-1, 1]`).

    Returns:
        `dict[str, torch.Tensor]`: one float64 tensor of shape `(N,)` per statistic, in the order of
        [`IMAGE_STATISTICS`].

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics.image_statistics import image_statistics

    >>> page = torch.ones(2, 1, 32, 32)  # white
    >>> page[0, :, 8:24, 15:17] = -1  # a black vertical stroke 2 pixels wide
    >>> page[1, :, 8:24, 14:18] = -1  # 4 pixels wide
    >>> [round(v, 1) for v in image_statistics(page)["structure_scale"].tolist()]
    [1.7, 3.1]
    ```
    """
    return _statistics(_check_images(images, "images"))


def _statistics(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """[`image_statistics`] of images already checked and converted by `_check_images`."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    mean = flat.mean(dim=1)
    contrast = flat.std(dim=1, unbiased=False)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().reshape(n, -1).mean(dim=1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().reshape(n, -1).mean(dim=1)
    edges = dx + dy
    deviation = (flat - flat.median(dim=1, keepdim=True).values).abs().mean(dim=1)
    scale = torch.where(edges > 0, 2 * deviation / edges.clamp_min(1e-12), torch.zeros_like(edges))
    return {"mean": mean, "contrast": contrast, "edge_density": edges / 2, "structure_scale": scale}


def statistic_spread(fake_images: torch.Tensor, real_images: torch.Tensor) -> dict[str, float]:
    r"""
    How much generated images vary each of the [`IMAGE_STATISTICS`] relative to real images: the standard deviation of
    the statistic over `fake_images` divided by that over `real_images`. Below 1 the samples vary it less than the
    data (a dropped factor, e.g. bold and thin strokes); above 1, more. A statistic that is constant over the real
    images has no defined ratio and is reported as `nan` (with a warning).

    Args:
        fake_images (`torch.Tensor` of shape `(N, C, H, W)`): generated images, N >= 2.
        real_images (`torch.Tensor` of shape `(M, C', H', W')`): real images in the same value range, M >= 2 (their
            size may differ from the samples').

    Returns:
        `dict[str, float]`: one ratio per statistic, in the order of [`IMAGE_STATISTICS`].

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics.image_statistics import statistic_spread

    >>> real = torch.ones(8, 1, 16, 16)
    >>> for i in range(8):
    ...     real[i, :, 4:12, 7 : 8 + i % 4] = -1  # strokes 1-4 pixels wide
    >>> fake = real[[0, 1, 0, 1]]  # only the thin ones
    >>> spread = statistic_spread(fake, real)
    >>> spread["structure_scale"] < 1, statistic_spread(real, real)["structure_scale"]
    (True, 1.0)
    ```
    """
    fake = _statistics(_check_images(fake_images, "fake_images", min_images=2))
    real = _statistics(_check_images(real_images, "real_images", min_images=2))
    out = {}
    for name in IMAGE_STATISTICS:
        real_std = float(real[name].std())
        if real_std == 0.0:
            logger.warning("statistic_spread: %r is constant over the real images; its ratio is nan.", name)
            out[name] = float("nan")
        else:
            out[name] = float(fake[name].std()) / real_std
    return out
