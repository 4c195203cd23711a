"""The bundled meta-checkpoints: the full-width `metagan-kanji-32`, its half-width sibling `metagan-kanji-32-small`
(what the demo and the app take by default on CPUs without native bf16) and `metagan-kanji-32-variety` (the full-width
model meta-trained further with a diversity term, for more varied samples). All must load as ordinary pipelines,
share the held-out split, adapt, and carry a card; the small one must really be about 3x cheaper (a quarter of the
multiply-adds), and the small and variety cards must state how they compare with the full one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from metagan_hub import MetaGANPipeline
from metagan_hub.hub.model_card import variety_adapt_options, variety_setting
from metagan_hub.metrics.classifiers import EvaluationClassifier

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
FULL, SMALL = CHECKPOINTS / "metagan-kanji-32", CHECKPOINTS / "metagan-kanji-32-small"
VARIETY = CHECKPOINTS / "metagan-kanji-32-variety"


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
    return {
        name: MetaGANPipeline.from_pretrained(path)
        for name, path in (("full", FULL), ("small", SMALL), ("variety", VARIETY))
    }


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


def _relative_links(text: str) -> list[str]:
    """Targets of the Markdown links `[...](target)` in `text` that are not web addresses or in-page anchors."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t.split("#")[0] for t in targets if not t.startswith(("http://", "https://", "#"))]


def test_full_card_is_readable_and_its_experiment_log_sits_beside_it(pipes):
    """The full-width card holds what a user needs to choose the model (the few-shot benchmark's main table and the
    diffusion rival's tables) at a size a Hub page can show; the experiment history lives in `EXPERIMENTS.md` beside
    it, which the card names. Every relative link of the cards and of the log resolves."""
    card = (FULL / "README.md").read_text(encoding="utf-8")
    log = (FULL / "EXPERIMENTS.md").read_text(encoding="utf-8")
    assert len(card.encode("utf-8")) < 64 * 2**10, "the full card holds the history again: move it to the log"
    assert "[EXPERIMENTS.md](EXPERIMENTS.md)" in card
    assert json.loads((FULL / "metagan_hub.json").read_text(encoding="utf-8"))["evaluation"] in card
    for claim in (
        "| kanji (30) | **this model (Reptile)** |",  # the main table against pretrain and fresh weights
        "rival − this model, kanji (30 classes)",  # the rival's full table per domain
        "rival − this model, digits (10 classes)",
        "rival − this model, font glyphs (30 classes)",
    ):
        assert claim in card, claim
    assert "#### The noise floor" not in card and "#### Noise floor" in log  # the history is not written twice
    for folder in (FULL, SMALL, VARIETY, CHECKPOINTS.parent):  # and the project README, which links into them
        for name in ("README.md", "EXPERIMENTS.md"):
            if (folder / name).is_file():
                for target in _relative_links((folder / name).read_text(encoding="utf-8")):
                    assert (folder / target).exists(), f"{folder.name}/{name} links to a missing {target}"


def test_small_adapts(pipes):
    shots = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    adapted = pipes["small"].adapt(
        shots, num_steps=3, mixed_precision="no", generator=torch.Generator().manual_seed(0)
    )
    out = adapted(batch_size=4, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert out.shape == (4, 1, 32, 32) and torch.isfinite(out).all()


def test_variety_is_the_full_width_model_meta_trained_with_a_diversity_term(pipes):
    full, variety = pipes["full"], pipes["variety"]
    for name in ("generator", "discriminator"):
        config, full_config = (
            {k: v for k, v in getattr(p, name).config.items() if not k.startswith("_")} for p in (variety, full)
        )
        assert config == full_config, name
        moved = [
            n
            for (n, p), q in zip(
                getattr(variety, name).state_dict().items(), getattr(full, name).state_dict().values()
            )
            if not torch.equal(p, q)
        ]
        assert moved, f"the variety {name} has the full-width model's weights"
    training = variety.card_info["training"]
    assert training["algorithm"] == "reptile" and training["diversity_loss"] == "mixdl"
    assert training["diversity_weight"] == 100 and training["meta_steps"] == 183  # the second of its two runs
    assert training["heldout_examples"] == full.card_info["training"]["heldout_examples"]
    assert not any(p.name.startswith("checkpoint-") for p in VARIETY.iterdir())
    # 4.9 MiB of generator and discriminator, 1.4 MiB of copy encoder
    assert sum(p.stat().st_size for p in VARIETY.rglob("*") if p.is_file()) < 7 * 2**20
    # its card recommends the measured variety setting, the near-copy filter included, and states the comparisons
    assert variety_setting(variety.card_info) == {
        "shot_augment": 1.0,
        "latent_scale": 1.25,
        "copy_margin": 1.25,
        "copy_stop": 0.3,
    }
    card = (VARIETY / "README.md").read_text(encoding="utf-8")
    for claim in (
        "metagan-kanji-32` at `adapt()`'s defaults",
        "the rival at 3×",
        "pooled-pretrain",
        "98x",
        "copy encoder",
    ):
        assert claim in card, claim
    assert json.loads((VARIETY / "metagan_hub.json").read_text(encoding="utf-8"))["evaluation"] in card


def test_variety_adapts_and_samples_with_its_setting(pipes):
    pipe = pipes["variety"]
    setting = variety_setting(pipe.card_info)
    shots = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    adapted = pipe.adapt(
        shots,
        num_steps=3,
        mixed_precision="no",
        generator=torch.Generator().manual_seed(0),
        **variety_adapt_options(setting),
    )
    # copy_stop is on (3 steps are too few for it to stop: its checks are only recorded)
    record = adapted.card_info["adaptation"]
    assert record["shot_augment"] == 1.0 and record["copy_stop"] == 0.3 and record["copy_stop_step"] is None
    out = adapted(
        batch_size=24,
        generator=torch.Generator().manual_seed(0),
        latent_scale=setting["latent_scale"],
        avoid_copies_of=shots,
        copy_margin=setting["copy_margin"],
        output_type="pt",
    ).images
    assert out.shape == (24, 1, 32, 32) and torch.isfinite(out).all()


def test_variety_filters_in_a_copy_encoder_that_never_saw_a_benchmark_class(pipes):
    from metagan_hub.metrics.domains import _kanji_test_classes

    encoder = pipes["variety"].copy_encoder
    assert isinstance(encoder, EvaluationClassifier) and not encoder.training
    assert (encoder.config.resolution, encoder.config.channels, encoder.num_classes) == (32, 1, 2000)
    # stored without the classifier's linear head (the filter uses the features; the class list stays as its record)
    assert encoder.head is None and sum(p.numel() for p in encoder.parameters()) < 100_000
    train, test = _kanji_test_classes(0, None)  # the class split of meta-training and of the kanji benchmark
    assert set(encoder.classes) <= set(train) and not set(encoder.classes) & set(test)
    training = encoder.config.training
    assert training["num_train_images"] == 2000 * 20 and training["recipe"]["num_epochs"] == 6
    assert "training classes of class split seed 0" in training["data"]
    # the other bundled models filter in their discriminator's features, as their cards measured
    assert pipes["full"].copy_encoder is None and pipes["small"].copy_encoder is None
