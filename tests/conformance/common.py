# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Tiny components and helpers shared by the conformance tests.

The conformance tests check, for `MetaGANPipeline`, `MetaGANGenerator` and `MetaGANDiscriminator`, the points that
diffusers' own pipeline and model testers check for diffusers classes (save/load round trips, dtypes, devices,
outputs, determinism, batching, progress bars, layerwise casting, LoRA, training), plus the loading, saving and
publishing guarantees of metagan_hub itself. Not applicable here: inference steps, prompts and attention processors.
"""

from __future__ import annotations

import os

import torch

from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline

LATENT_DIM = 8
SIZE = 16
GEN_BLOCKS = (16, 8)
DISC_BLOCKS = (8, 16)


def tiny_generator(seed: int = 0, **kwargs) -> MetaGANGenerator:
    torch.manual_seed(seed)
    config = {"latent_dim": LATENT_DIM, "sample_size": SIZE, "block_out_channels": GEN_BLOCKS, **kwargs}
    return MetaGANGenerator(**config).eval()


def tiny_discriminator(seed: int = 0, **kwargs) -> MetaGANDiscriminator:
    torch.manual_seed(seed)
    return MetaGANDiscriminator(**{"sample_size": SIZE, "block_out_channels": DISC_BLOCKS, **kwargs}).eval()


def tiny_pipeline(seed: int = 0, discriminator: bool = True) -> MetaGANPipeline:
    pipe = MetaGANPipeline(
        generator=tiny_generator(seed), discriminator=tiny_discriminator(seed + 1) if discriminator else None
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: MetaGANPipeline, seed: int = 0, batch_size: int = 4, **kwargs) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    return pipe(batch_size=batch_size, generator=generator, output_type="pt", **kwargs).images


def latents(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, LATENT_DIM, generator=torch.Generator().manual_seed(seed))  # [N, latent_dim]


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # [N, 1, S, S]


def all_files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs)


def text_files(folder) -> dict[str, str]:
    """The text of every config, card, sidecar and `.py` file under `folder`."""
    out = {}
    for rel in all_files(folder):
        if rel.endswith((".json", ".md", ".py", ".txt", ".yaml")):
            with open(os.path.join(folder, rel), encoding="utf-8") as f:
                out[rel] = f.read()
    return out


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module, dtype: torch.dtype | None = None) -> None:
    """State dicts round-trip exactly through safetensors (bitwise is promised here)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        expected = sa[key] if dtype is None else sa[key].to(dtype)
        assert sb[key].dtype == expected.dtype, key
        assert torch.equal(expected, sb[key]), key
