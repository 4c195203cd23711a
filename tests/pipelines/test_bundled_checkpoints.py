"""The two bundled meta-checkpoints: the full-width `metagan-kanji-32` and its half-width sibling
`metagan-kanji-32-small` (what the demo and the app take by default on CPUs without native bf16). Both must load as
ordinary pipelines, share the held-out split, adapt, and carry a card; the small one must really be about 3x cheaper
(a quarter of the multiply-adds) and its card must state how it compares with the full one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metagan_hub import MetaGANPipeline
from metagan_hub.hub.model_card import variety_setting

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
FULL, SMALL = CHECKPOINTS / "metagan-kanji-32", CHECKPOINTS / "metagan-kanji-32-small"


def _conv_macs(model: torch.nn.Module, sample: torch.Tensor) -> int:
    """Multiply-adds of the convolutions and linear layers of one forward pass of `sample`."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        else:
            total += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in handles:
            h.remove()
    return total


@pytest.fixture(scope="module")
def pipes() -> dict[str, MetaGANPipeline]:
    return {"full": MetaGANPipeline.from_pretrained(FULL), "small": MetaGANPipeline.from_pretrained(SMALL)}


def test_small_is_the_half_width_sibling(pipes):
    full, small = pipes["full"], pipes["small"]
    assert list(full.generator.config.block_out_channels) == [128, 64, 32]
    assert list(small.generator.config.block_out_channels) == [64, 32, 16]
    assert list(small.discriminator.config.block_out_channels) == [16, 32, 64]
    for key in ("sample_size", "latent_dim", "out_channels"):
        assert small.generator.config[key] == full.generator.config[key]
    latents = torch.randn(2, full.generator.config.latent_dim, generator=torch.Generator().manual_seed(0))
    images = torch.zeros(2, 1, 32, 32)
    g_ratio = _conv_macs(small.generator, latents) / _conv_macs(full.generator, latents)
    d_ratio = _conv_macs(small.discriminator, images) / _conv_macs(full.discriminator, images)
    assert 0.2 < g_ratio < 0.3 and 0.2 < d_ratio < 0.3, (g_ratio, d_ratio)
    # no training leftovers in the bundled folder, and small files
    assert not any(p.name.startswith("checkpoint-") for p in SMALL.iterdir())
    assert sum(p.stat().st_size for p in SMALL.rglob("*") if p.is_file()) < 3 * 2**20


def test_same_heldout_split_and_an_honest_card(pipes):
    full, small = pipes["full"], pipes["small"]
    assert small.card_info["training"]["heldout_examples"] == full.card_info["training"]["heldout_examples"]
    assert small.card_info["training"]["algorithm"] == "reptile"
    card = (SMALL / "README.md").read_text(encoding="utf-8")
    assert "metagan-kanji-32" in card and "recognis" in card  # the comparison with the full-width model
    record = json.loads((SMALL / "metagan_hub.json").read_text(encoding="utf-8"))
    assert record["evaluation"], "the small checkpoint's card must state its benchmark comparison"
    # the variety setting was measured to help the full-width model only (the half-width one copies no shots at its
    # defaults and only loses recognisability with it), so only the full-width card recommends one
    assert variety_setting(full.card_info) == {"shot_augment": 1.0, "latent_scale": 1.5}
    assert variety_setting(small.card_info) is None


def test_small_adapts(pipes):
    shots = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    adapted = pipes["small"].adapt(
        shots, num_steps=3, mixed_precision="no", generator=torch.Generator().manual_seed(0)
    )
    out = adapted(batch_size=4, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert out.shape == (4, 1, 32, 32) and torch.isfinite(out).all()
