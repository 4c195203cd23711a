# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Near-copy filter: find generated images that sit closer to one of a few reference images (the shots a pipeline
was adapted on) than those images sit to each other, judged in the adapted discriminator's features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.layers import check_positive_float

# The feature space: the second-to-last down block's output of the discriminator (128x8x8 for a 32x32 model),
# average-pooled over 2x2 cells and scaled to unit length, so distances compare patterns, not activation strength.
# Of the spaces probed on held-out classes (each block, pooled or not, L2 or cosine, the unadapted discriminator,
# pixels) it told the evaluation classifier's copies from the other samples best on kanji and font glyphs, and within
# 0.02 of the best on digits (ROC AUC; the bundled model's card).
COPY_FILTER_BLOCK = -2
COPY_FILTER_POOL = 2
# At most this many latents per requested image are drawn in all before the filter gives up on replacing copies.
MAX_DRAWS_PER_IMAGE = 4
# In a batch of at least COPY_CAP_MIN_BATCH images, at most this fraction counts as near-copies: the closest ones.
# Where a generator's samples sit within the shots' own spacing (digits), the distance rule alone flagged 27-31% of
# the samples against 1-2% copies by the evaluation classifier; on kanji the cap also drops flags that were not copies
# (held-out classes, the bundled model's card).
COPY_CAP_FRACTION = 0.2
COPY_CAP_MIN_BATCH = 20


def discriminator_features(
    discriminator: torch.nn.Module, images: torch.Tensor, block: int = COPY_FILTER_BLOCK, chunk_size: int = 64
) -> torch.Tensor:
    """
    The near-copy filter's features of `images` `[N, C, H, W]` in `[-1, 1]`: the output of down block `block` (a
    negative index counts from the last) of `discriminator` (a [`~metagan_hub.MetaGANDiscriminator`]),
    average-pooled over 2x2 cells, flattened and scaled to unit length; float32 `[N, F]`. Only the blocks up to
    `block` run. They come before the minibatch-std layer, so each image's features do not depend on the rest of
    the batch or on `chunk_size`.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANDiscriminator
    >>> from metagan_hub.pipelines.copy_filter import discriminator_features

    >>> disc = MetaGANDiscriminator(sample_size=32, in_channels=1)
    >>> features = discriminator_features(disc, torch.rand(3, 1, 32, 32) * 2 - 1)
    >>> features.shape, features.norm(dim=1).round(decimals=4).tolist()
    (torch.Size([3, 2048]), [1.0, 1.0, 1.0])
    ```
    """
    num_blocks = discriminator.num_blocks
    if isinstance(block, bool) or not isinstance(block, int) or not -num_blocks <= block < num_blocks:
        raise ValueError(
            f"`block` must be an integer between {-num_blocks} and {num_blocks - 1} (a down block of the "
            f"discriminator), got {block!r}."
        )
    last = block % num_blocks  # index of the block whose output is used
    chunks = []
    with torch.no_grad():
        for start in range(0, images.shape[0], chunk_size):
            x = images[start : start + chunk_size].to(discriminator.device, discriminator.dtype)
            x = x.contiguous(memory_format=torch.channels_last)  # fast with channels_last weights, neutral without
            features = discriminator.block_features(x, num_blocks=last + 1)[-1].float()  # [n, C, h, w]
            pooled = F.avg_pool2d(features, COPY_FILTER_POOL).flatten(1)  # [n, F]
            chunks.append(F.normalize(pooled, dim=1))
    return torch.cat(chunks)


def copy_threshold_of_references(reference_features: torch.Tensor, copy_margin: float = 1.0) -> float:
    """
    `copy_margin` times the median, over the reference images `[K, F]` (K >= 2), of each one's distance to its nearest
    other reference image: samples closer than this to a reference count as its near-copies.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.pipelines.copy_filter import copy_threshold_of_references

    >>> copy_threshold_of_references(torch.tensor([[0.0], [1.0], [3.0]]), copy_margin=0.5)
    0.5
    ```
    """
    check_positive_float("copy_margin", copy_margin)
    k = reference_features.shape[0]
    if k < 2:
        raise ValueError(f"A copy threshold needs at least 2 reference images, got {k}.")
    distances = torch.cdist(reference_features, reference_features)  # [K, K]
    distances.fill_diagonal_(float("inf"))
    return float(copy_margin * distances.amin(dim=1).median())


def nearest_reference_distance(features: torch.Tensor, reference_features: torch.Tensor) -> torch.Tensor:
    """Distance `[N]` from each sample's features `[N, F]` to the nearest reference `[K, F]`."""
    return torch.cdist(features, reference_features).amin(dim=1)


def capped_copy_threshold(threshold: float, distances: torch.Tensor) -> float:
    """
    `threshold` lowered, for a batch of at least `COPY_CAP_MIN_BATCH` samples, to the `COPY_CAP_FRACTION` quantile of
    their nearest-reference `distances` `[N]`, so that at most that fraction of the batch counts as near-copies.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.pipelines.copy_filter import capped_copy_threshold

    >>> capped_copy_threshold(5.0, torch.arange(100.0))  # the distance rule is the lower one here
    5.0
    >>> round(capped_copy_threshold(50.0, torch.arange(100.0)), 4)
    19.8
    >>> capped_copy_threshold(50.0, torch.arange(10.0))  # too few samples for a cap
    50.0
    ```
    """
    if distances.numel() < COPY_CAP_MIN_BATCH:
        return threshold
    return min(threshold, float(distances.float().quantile(COPY_CAP_FRACTION)))
