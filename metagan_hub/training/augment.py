# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""
Differentiable augmentation (DiffAugment, Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training").

With only a handful of real images the discriminator memorizes them and GAN training collapses. DiffAugment applies
the *same family* of random, differentiable transformations to real and generated images, in the discriminator step
and in the generator step, so the discriminator never sees un-augmented images and the generator still receives
gradients through the augmentation. It is shared by meta-training and few-shot adaptation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

AUGMENT_POLICIES = ("translation", "cutout", "color")

# Policies are always applied in this order, whatever order they are given in: color first (so that it does not
# shift the fill value of the translated border and of the cut-out square), then translation, then cutout.
_APPLY_ORDER = ("color", "translation", "cutout")


def _rand(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """`n` uniform numbers in `[0, 1)` drawn in float32 on `x.device` and cast to `x.dtype`, shaped `[n, 1, 1, 1]`.

    Drawing in float32 keeps the random stream identical whether or not the images are in reduced precision."""
    r = torch.rand(n, 1, 1, 1, generator=generator, device=x.device, dtype=torch.float32)
    return r.to(x.dtype)  # [N, 1, 1, 1]


class DiffAugment(torch.nn.Module):
    r"""
    DiffAugment: random, differentiable image augmentations for GAN training on few images.

    Apply the same instance to real **and** generated images before the discriminator, in both the discriminator and
    the generator updates. Every operation is differentiable with respect to the input, so the generator is trained
    through it. Each image in the batch gets its own random parameters; all randomness is drawn from the `generator`
    passed to [`~DiffAugment.forward`], so the same seed gives bit-identical results.

    Policies (always applied in the order color → translation → cutout):

    - `"color"`: random brightness (add `U(-0.5, 0.5)`), saturation (scale the deviation from the per-pixel channel
      mean by `U(0, 2)`; a no-op for 1-channel images) and contrast (scale the deviation from the per-image mean by
      `U(0.5, 1.5)`).
    - `"translation"`: shift each image by a random whole number of pixels in `[-r·H, r·H]` × `[-r·W, r·W]`
      (`r = translation_ratio`, rounded to pixels), filling the uncovered border with `fill_value`.
    - `"cutout"`: set one random square of `cutout_ratio·H` × `cutout_ratio·W` pixels (whose center can lie anywhere
      in the image, so it may be clipped at the border) to `fill_value`.

    Outputs are not clipped, so color augmentation can leave `[-1, 1]`, as in the original method.

    Args:
        policies (`Sequence[str]` or `str`, *optional*, defaults to `("translation", "cutout", "color")`):
            Which augmentations to apply, a subset of `AUGMENT_POLICIES` (a comma-separated string is accepted too).
            `None` or empty makes the module the identity.
        translation_ratio (`float`, *optional*, defaults to 0.125):
            Largest shift as a fraction of the image size, in `[0, 1)`.
        cutout_ratio (`float`, *optional*, defaults to 0.5):
            Side of the cut-out square as a fraction of the image size, in `[0, 1]`.
        fill_value (`float`, *optional*, defaults to 0.0):
            Value written into the translated border and the cut-out square. `0.0` is the middle of the `[-1, 1]`
            range, as in the original method; use `-1.0` or `1.0` for a black or white background.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.training.augment import DiffAugment

    >>> augment = DiffAugment(("translation", "cutout", "color"))
    >>> images = torch.rand(4, 1, 32, 32) * 2 - 1  # [N, C, H, W] in [-1, 1]
    >>> out = augment(images, generator=torch.Generator().manual_seed(0))
    >>> out.shape
    torch.Size([4, 1, 32, 32])
    >>> torch.equal(out, augment(images, generator=torch.Generator().manual_seed(0)))
    True
    ```
    """

    def __init__(
        self,
        policies: Sequence[str] | str | None = ("translation", "cutout", "color"),
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        fill_value: float = 0.0,
    ):
        super().__init__()
        if policies is None:
            policies = ()
        elif isinstance(policies, str):
            policies = [p.strip() for p in policies.split(",") if p.strip()]
        policies = tuple(policies)
        unknown = [p for p in policies if p not in AUGMENT_POLICIES]
        if unknown:
            raise ValueError(
                f"`policies` contains unknown augmentation {unknown[0]!r} (got {policies!r}); "
                f"allowed names are {AUGMENT_POLICIES}."
            )
        if not 0.0 <= translation_ratio < 1.0:
            raise ValueError(f"`translation_ratio` must be in [0, 1), got {translation_ratio!r}.")
        if not 0.0 <= cutout_ratio <= 1.0:
            raise ValueError(f"`cutout_ratio` must be in [0, 1], got {cutout_ratio!r}.")
        self.policies = tuple(p for p in _APPLY_ORDER if p in policies)
        self.translation_ratio = float(translation_ratio)
        self.cutout_ratio = float(cutout_ratio)
        self.fill_value = float(fill_value)

    def extra_repr(self) -> str:
        return (
            f"policies={self.policies}, translation_ratio={self.translation_ratio}, "
            f"cutout_ratio={self.cutout_ratio}, fill_value={self.fill_value}"
        )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """
        Augment a batch of images.

        Args:
            x (`torch.Tensor` of shape `(N, C, H, W)`):
                Images in `[-1, 1]`; any `C` (1 and 3 are the usual ones) and any floating dtype.
            generator (`torch.Generator`, *optional*):
                Source of all randomness; must live on `x.device`. `None` uses torch's global generator.

        Returns:
            `torch.Tensor` of the same shape and dtype as `x`. With no policies, `x` itself is returned.
        """
        if x.ndim != 4:
            raise ValueError(f"`x` must have shape [N, C, H, W], got shape {tuple(x.shape)}.")
        for policy in self.policies:
            if policy == "color":
                x = self._color(x, generator)
            elif policy == "translation":
                x = self._translation(x, generator)
            else:
                x = self._cutout(x, generator)
        return x

    # ------------------------------------------------------------------ policies
    def _color(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, c = x.shape[:2]
        # brightness: one offset per image
        x = x + (_rand(n, x, generator) - 0.5)
        # saturation: scale the deviation from the per-pixel mean over channels (always drawn, so the random
        # stream does not depend on C; the deviation is exactly zero for one channel, so that case is skipped)
        saturation = _rand(n, x, generator) * 2
        if c > 1:
            mean = x.mean(dim=1, keepdim=True)  # [N, 1, H, W]
            x = (x - mean) * saturation + mean
        # contrast: scale the deviation from the per-image mean
        contrast = _rand(n, x, generator) + 0.5
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [N, 1, 1, 1]
        return (x - mean) * contrast + mean

    def _translation(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, c, h, w = x.shape
        max_dy, max_dx = int(h * self.translation_ratio + 0.5), int(w * self.translation_ratio + 0.5)
        if max_dy == 0 and max_dx == 0:
            return x
        dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), generator=generator, device=x.device)  # [N, 1, 1]
        dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), generator=generator, device=x.device)  # [N, 1, 1]
        # Output pixel (i, j) reads input pixel (i - dy, j - dx). In a copy padded by one pixel of `fill_value`,
        # that is index (i - dy + 1, j - dx + 1); indices that fall outside the image are clamped onto the padding.
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        rows = (rows - dy + 1).clamp(0, h + 1).expand(n, h, w)  # [N, H, W]
        cols = (cols - dx + 1).clamp(0, w + 1).expand(n, h, w)  # [N, H, W]
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=self.fill_value)  # [N, C, H+2, W+2]
        batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)  # [N, H, W]
        out = padded.permute(0, 2, 3, 1)[batch, rows, cols]  # [N, H, W, C]
        return out.permute(0, 3, 1, 2).contiguous()  # [N, C, H, W]

    def _cutout(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, c, h, w = x.shape
        size_y, size_x = int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5)
        if size_y == 0 or size_x == 0:
            return x
        # center anywhere in the image (one extra position for even sizes, so both borders are reached equally)
        cy = torch.randint(0, h + (1 - size_y % 2), (n, 1), generator=generator, device=x.device)  # [N, 1]
        cx = torch.randint(0, w + (1 - size_x % 2), (n, 1), generator=generator, device=x.device)  # [N, 1]
        top, left = cy - size_y // 2, cx - size_x // 2
        rows = torch.arange(h, device=x.device).view(1, h)
        cols = torch.arange(w, device=x.device).view(1, w)
        in_rows = (rows >= top) & (rows < top + size_y)  # [N, H]
        in_cols = (cols >= left) & (cols < left + size_x)  # [N, W]
        cut = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)  # [N, 1, H, W]
        return x.masked_fill(cut, self.fill_value)


# largest variation of `random_affine` at strength 1: rotation (degrees), relative scale, shear, translation (fraction
# of the image size)
SHOT_AFFINE_RANGES = {"rotation": 10.0, "scale": 0.1, "shear": 0.1, "translation": 0.05}
# largest shot-augmentation strength (3: rotations up to 30 degrees)
MAX_SHOT_AUGMENT = 3.0


def check_shot_augment(value: Any, name: str = "shot_augment") -> float:
    """`value` as a float if it is a shot-augmentation strength between 0 (off) and `MAX_SHOT_AUGMENT`, else a
    `ValueError` naming the argument `name`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= MAX_SHOT_AUGMENT:
        raise ValueError(f"`{name}` must be a number between 0 (off) and {MAX_SHOT_AUGMENT:g}, got {value!r}.")
    return float(value)


def random_affine(images: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""
    A random small affine map of each image: rotation, scale, shear and translation drawn uniformly up to `strength`
    times [`SHOT_AFFINE_RANGES`] (at strength 1: up to 10 degrees, ±10% scale per axis, shear 0.1, a shift of 5% of
    the image), resampled bilinearly with the border pixels repeated outside the image.

    `adapt(..., shot_augment=strength)` applies it to the real images of each step. Unlike [`DiffAugment`], which
    transforms real and generated images alike so that the generator does not learn it, this changes what counts as
    real: the generator learns slanted, shifted and rescaled versions of the shots as well.

    Args:
        images (`torch.Tensor` of shape `(N, C, H, W)`): images in `[-1, 1]`, float32.
        strength (`float`): non-negative; 0 returns `images` unchanged.
        generator (`torch.Generator`, *optional*): source of the randomness (a CPU generator); `None` uses torch's
            global one.

    Returns:
        `torch.Tensor` of the shape, dtype and device of `images`.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.training.augment import random_affine

    >>> images = torch.rand(4, 1, 32, 32) * 2 - 1
    >>> out = random_affine(images, 1.0, generator=torch.Generator().manual_seed(0))
    >>> out.shape, torch.equal(out, random_affine(images, 1.0, generator=torch.Generator().manual_seed(0)))
    (torch.Size([4, 1, 32, 32]), True)
    >>> random_affine(images, 0.0) is images
    True
    ```
    """
    if images.ndim != 4:
        raise ValueError(f"`images` must have shape [N, C, H, W], got shape {tuple(images.shape)}.")
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0.0 <= strength < float("inf"):
        raise ValueError(f"`strength` must be a non-negative finite number, got {strength!r}.")
    if strength == 0:
        return images
    n = images.shape[0]
    r = SHOT_AFFINE_RANGES
    u = torch.rand(n, 6, generator=generator) * 2 - 1  # [N, 6] in [-1, 1], drawn on the CPU
    angle = torch.deg2rad(u[:, 0] * r["rotation"] * strength)  # [N]
    scale_x = 1 + u[:, 1] * r["scale"] * strength  # [N]
    scale_y = 1 + u[:, 2] * r["scale"] * strength  # [N]
    shear = u[:, 3] * r["shear"] * strength  # [N]
    shift = u[:, 4:] * 2 * r["translation"] * strength  # [N, 2]; grid coordinates span 2 per image side
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output -> input coordinates: rotation @ shear @ scale, then the shift
    a = cos * scale_x
    b = (cos * shear - sin) * scale_y
    c = sin * scale_x
    d = (sin * shear + cos) * scale_y
    theta = torch.stack([torch.stack([a, b, shift[:, 0]], 1), torch.stack([c, d, shift[:, 1]], 1)], 1)  # [N, 2, 3]
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)  # [N, H, W, 2]
    out = torch.nn.functional.grid_sample(
        images, grid, mode="bilinear", padding_mode="border", align_corners=False
    )  # [N, C, H, W]
    if images.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out
