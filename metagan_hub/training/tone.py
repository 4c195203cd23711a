# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Tone matching: a monotone output curve that gives an adapted generator's pixel values the shots' distribution."""

from __future__ import annotations

import torch

# grid points of the fitted curve over [-1, 1] (steps of 1/64; linear in between)
TONE_CURVE_POINTS = 129
# samples the curve is fitted on: one forward pass of the generator (with the sort, 0.35 s for the half-width and
# 0.95 s for the full-width 32x32 bundled model on one AVX2 core)
TONE_FIT_SAMPLES = 256


def fit_tone_curve(
    samples: torch.Tensor, reference: torch.Tensor, num_points: int = TONE_CURVE_POINTS
) -> torch.Tensor:
    r"""
    Fit a per-channel monotone tone curve that maps the pixel-value distribution of `samples` onto that of
    `reference` (histogram matching: the curve sends each value's quantile among all sample pixels to the same
    quantile among the reference pixels). One curve for all samples, so samples that differ in ink or brightness
    still differ afterwards; only the overall tone (e.g. soft grey edges where the shots are crisp) changes.

    Args:
        samples (`torch.Tensor` of shape `(N, C, H, W)`): generated images in `[-1, 1]`.
        reference (`torch.Tensor` of shape `(K, C, H', W')`): the images to match (the shots), in `[-1, 1]`.
        num_points (`int`, defaults to 129): grid points of the curve over `[-1, 1]`.

    Returns:
        `torch.Tensor` of shape `(C, num_points)`: float32, non-decreasing along the points, in `[-1, 1]`; pass it
        to [`~metagan_hub.MetaGANGenerator.set_tone_curve`].

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.models.layers import apply_tone_curve
    >>> from metagan_hub.training.tone import fit_tone_curve

    >>> g = torch.Generator().manual_seed(0)
    >>> soft = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1  # uniform grey levels
    >>> crisp = torch.where(torch.rand(5, 1, 8, 8, generator=g) < 0.8, -1.0, 1.0)  # 80% black, 20% white
    >>> matched = apply_tone_curve(soft, fit_tone_curve(soft, crisp))
    >>> round(float((matched < 0).float().mean()), 1)
    0.8
    ```
    """
    for name, x in (("samples", samples), ("reference", reference)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.numel() == 0:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"`{name}` must be a non-empty tensor of shape (N, C, H, W), got {got}.")
        if not torch.isfinite(x).all():
            raise ValueError(f"`{name}` contains NaN or inf values.")
    if samples.shape[1] != reference.shape[1]:
        raise ValueError(
            f"`samples` has {samples.shape[1]} channels but `reference` has {reference.shape[1]}; they must match."
        )
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"`num_points` must be an integer >= 2, got {num_points!r}.")
    grid = torch.linspace(-1.0, 1.0, num_points, dtype=torch.float64)
    rows = []
    for c in range(samples.shape[1]):
        values = samples[:, c].detach().reshape(-1).double().cpu().clamp(-1, 1).sort().values
        ref = reference[:, c].detach().reshape(-1).double().cpu().clamp(-1, 1)
        # empirical CDF of the samples at each grid point (the share of sample pixels <= it), then that quantile
        # of the reference pixels (linear interpolation between order statistics)
        cdf = torch.searchsorted(values, grid, right=True).double() / values.numel()
        rows.append(torch.quantile(ref, cdf))
    curve = torch.stack(rows).float()
    return torch.cummax(curve, dim=1).values.clamp(-1, 1)  # guard the monotonicity against rounding


def tone_fit_latents(latent_dim: int, seed: int, num_samples: int = TONE_FIT_SAMPLES) -> torch.Tensor:
    """The fixed latents `adapt(..., tone_match=True)` fits its curve on: drawn from their own generator seeded with
    `seed + 1` (`seed`: the adaptation's), so the adaptation's own random stream is not touched."""
    return torch.randn(num_samples, latent_dim, generator=torch.Generator().manual_seed((seed + 1) % 2**64))


def match_tone(model: torch.nn.Module, shots: torch.Tensor, latents: torch.Tensor) -> None:
    r"""
    Fit and set the tone curve of a [`~metagan_hub.MetaGANGenerator`] (any curve it had is dropped first): its
    samples of `latents` are matched to the pixel values of `shots` with [`fit_tone_curve`].

    Args:
        model ([`~metagan_hub.MetaGANGenerator`]): the generator to give a curve.
        shots (`torch.Tensor` of shape `(K, C, H, W)`): the images to match, in `[-1, 1]`.
        latents (`torch.Tensor` of shape `(N, latent_dim)`): the latents of the samples the curve is fitted on.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANGenerator
    >>> from metagan_hub.training.tone import match_tone, tone_fit_latents

    >>> model = MetaGANGenerator(latent_dim=16, sample_size=16, block_out_channels=(16, 8)).eval()
    >>> shots = torch.where(torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(0)) < 0.9, -1.0, 1.0)
    >>> match_tone(model, shots, tone_fit_latents(16, seed=0))
    >>> model.config.tone_curve_points
    129
    ```
    """
    model.set_tone_curve(None)
    with torch.no_grad():
        samples = model(latents.to(shots.device)).sample.float()
    model.set_tone_curve(fit_tone_curve(samples, shots))
