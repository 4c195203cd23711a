# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Rivals of the meta-learned GAN built from standard diffusers parts, for side-by-side few-shot comparisons.

[`adapt_diffusion`] fine-tunes a pretrained diffusers DDPM (`UNet2DModel` + `DDPMScheduler`) on a few images with
one of [`DIFFUSION_RECIPES`]; [`sample_diffusion`] samples it with DDIM.
"""

from .diffusion import (
    DIFFUSION_RECIPES,
    LORA_TARGET_MODULES,
    DiffusionAdaptationOutput,
    adapt_diffusion,
    predicted_original,
    sample_diffusion,
)

__all__ = [
    "DIFFUSION_RECIPES",
    "LORA_TARGET_MODULES",
    "DiffusionAdaptationOutput",
    "adapt_diffusion",
    "predicted_original",
    "sample_diffusion",
]
