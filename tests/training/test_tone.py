"""Tone matching: the curve (fit, apply, store in the generator) and `adapt(..., tone_match=True)`."""

from __future__ import annotations

import math

import pytest
import torch

import metagan_hub.training.adaptation as adaptation
from metagan_hub import MetaGANGenerator, MetaGANPipeline
from metagan_hub.models.layers import apply_tone_curve
from metagan_hub.training.tone import TONE_CURVE_POINTS, fit_tone_curve, match_tone, tone_fit_latents
from tests.testing_utils import tiny_pipeline

SIZE = 16


def crisp_shots(n: int = 5, ink: float = 0.2, seed: int = 0) -> torch.Tensor:
    """Black-and-white shots with a share `ink` of white pixels, `[n, 1, 16, 16]` in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(n, 1, SIZE, SIZE, generator=g) < ink, 1.0, -1.0)


def mid_grey(x: torch.Tensor) -> float:
    return float(((x > -0.8) & (x < 0.8)).float().mean())


# ------------------------------------------------------------------------------------------------------- the curve


def test_apply_identity_curve_and_interpolation():
    x = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    identity = torch.linspace(-1, 1, 17).repeat(2, 1)
    assert torch.allclose(apply_tone_curve(x, identity), x, atol=1e-6)
    # channel 0 inverted, channel 1 squashed to 0: channels get their own curve
    curve = torch.stack([torch.linspace(1, -1, 3), torch.zeros(3)])
    out = apply_tone_curve(x, curve)
    assert torch.allclose(out[:, 0], -x[:, 0], atol=1e-6) and torch.equal(out[:, 1], torch.zeros_like(x[:, 1]))
    with pytest.raises(ValueError, match=r"`curve` must have shape \(channels=2"):
        apply_tone_curve(x, torch.zeros(1, 5))


def test_fit_matches_the_reference_distribution_and_keeps_the_order():
    g = torch.Generator().manual_seed(0)
    soft = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
    reference = torch.rand(5, 1, 8, 8, generator=g) ** 3 * 2 - 1  # skewed towards -1
    curve = fit_tone_curve(soft, reference)
    assert curve.shape == (1, TONE_CURVE_POINTS) and curve.dtype == torch.float32
    assert (curve.diff(dim=1) >= 0).all() and curve.abs().max() <= 1
    matched = apply_tone_curve(soft, curve)
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    assert torch.allclose(matched.double().quantile(q), reference.double().quantile(q), atol=0.05)
    assert not torch.allclose(soft.double().quantile(q), reference.double().quantile(q), atol=0.05)
    # one monotone map for all samples and pixels: a brighter pixel stays at least as bright
    order = soft.reshape(-1).argsort()
    assert (matched.reshape(-1)[order].diff() >= -1e-6).all()
    # samples already distributed like the reference: (close to) the identity
    same = fit_tone_curve(soft, soft)
    assert (same - torch.linspace(-1, 1, TONE_CURVE_POINTS)).abs().max() < 0.03


@pytest.mark.parametrize(
    "samples, reference, kwargs, match",
    [
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, 3, 4, 4), {}, r"`samples` has 1 channels but `reference` has 3"),
        (torch.full((2, 1, 4, 4), math.nan), torch.zeros(2, 1, 4, 4), {}, r"`samples` contains NaN"),
        (torch.zeros(2, 1, 4, 4), torch.zeros(0, 1, 4, 4), {}, r"`reference` must be a non-empty tensor"),
        (torch.zeros(2, 4, 4), torch.zeros(2, 1, 4, 4), {}, r"`samples` must be a non-empty tensor of shape"),
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), {"num_points": 1}, r"`num_points` must be an integer"),
    ],
)
def test_fit_rejects_bad_input(samples, reference, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_tone_curve(samples, reference, **kwargs)


# ------------------------------------------------------------------------------------------ the curve in the model


def test_generator_stores_the_curve_and_round_trips_it(tmp_path):
    model = MetaGANGenerator(latent_dim=8, sample_size=SIZE, block_out_channels=(16, 8)).eval()
    assert model.tone_curve is None and "tone_curve" not in model.state_dict()  # default: nothing new saved
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    plain = model(z).sample
    model.set_tone_curve(torch.tensor([[-1.0, -1.0, 1.0]]))
    toned = model(z).sample
    assert model.config.tone_curve_points == 3 and not torch.allclose(toned, plain)
    assert torch.allclose(toned, apply_tone_curve(plain, model.tone_curve))
    model.save_pretrained(tmp_path / "g")
    loaded = MetaGANGenerator.from_pretrained(tmp_path / "g").eval()
    assert torch.equal(loaded.tone_curve, model.tone_curve) and torch.allclose(loaded(z).sample, toned)
    model.set_tone_curve(None)
    assert model.config.tone_curve_points == 0 and "tone_curve" not in model.state_dict()
    assert torch.equal(model(z).sample, plain)


@pytest.mark.parametrize(
    "curve, match",
    [
        (torch.tensor([[1.0, -1.0]]), "non-decreasing"),
        (torch.tensor([[-2.0, 1.0]]), r"within \[-1, 1\]"),
        (torch.tensor([[-1.0, math.nan]]), "finite"),
        (torch.zeros(2, 5), r"shape \(1, points >= 2\), got \(2, 5\)"),
        ([[-1.0, 1.0]], r"shape \(1, points >= 2\), got list"),
    ],
)
def test_bad_curves_are_refused(curve, match):
    model = MetaGANGenerator(latent_dim=8, sample_size=SIZE, block_out_channels=(16, 8))
    with pytest.raises(ValueError, match=match):
        model.set_tone_curve(curve)
    assert model.tone_curve is None


@pytest.mark.parametrize("points", [1, -2, 2.5, True])
def test_bad_curve_size_in_the_config_is_refused(points):
    with pytest.raises(
        ValueError, match=rf"`tone_curve_points` must be 0 \(no curve\) or an integer >= 2, got {points}"
    ):
        MetaGANGenerator(latent_dim=8, sample_size=SIZE, block_out_channels=(16, 8), tone_curve_points=points)


# --------------------------------------------------------------------------------------------- adapt(tone_match=…)


def test_adapt_tone_match_fits_the_curve_without_changing_the_gan_steps(tmp_path):
    pipe, shots = tiny_pipeline(), crisp_shots()
    plain = pipe.adapt(shots, num_steps=3, generator=torch.Generator().manual_seed(7), tone_match=False)
    snaps = {}
    toned = pipe.adapt(  # tone_match=None (the default): on for full adaptation
        shots,
        num_steps=3,
        generator=torch.Generator().manual_seed(7),
        snapshot_steps=[0, 3],
        snapshot_callback=lambda step, g: snaps.__setitem__(step, g),
    )
    a, b = plain.generator.state_dict(), toned.generator.state_dict()
    assert set(b) - set(a) == {"tone_curve"} and all(torch.equal(a[k], b[k]) for k in a)  # same GAN steps
    # the curve is the one match_tone fits on the returned weights with the adaptation seed's fit latents
    expected = MetaGANGenerator.from_config(plain.generator.config)
    expected.load_state_dict(a)
    match_tone(expected, shots, tone_fit_latents(8, seed=7))
    assert torch.equal(expected.tone_curve, toned.generator.tone_curve)
    assert torch.equal(snaps[3].tone_curve, toned.generator.tone_curve) and snaps[0].tone_curve is not None
    # the samples get the shots' crisp tones (the tiny untrained generator's are grey)
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    assert mid_grey(toned.generator(z).sample) < 0.5 * mid_grey(plain.generator(z).sample)
    assert toned.card_info["adaptation"]["tone_match"] is True and plain.card_info["adaptation"]["tone_match"] is False
    assert pipe.generator.tone_curve is None  # the pipeline adapted from is untouched
    toned.save_pretrained(tmp_path / "toned")
    reloaded = MetaGANPipeline.from_pretrained(tmp_path / "toned")
    reloaded.set_progress_bar_config(disable=True)
    assert torch.equal(reloaded.generator.tone_curve, toned.generator.tone_curve)
    assert reloaded.card_info["adaptation"]["tone_match"] is True
    assert "| tone_match | True |" in (tmp_path / "toned" / "README.md").read_text(encoding="utf-8")
    same = dict(batch_size=4, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.allclose(
        reloaded(**same).images, toned(**dict(same, generator=torch.Generator().manual_seed(0))).images
    )
    # adapting the adapted pipeline again: with tone_match=False its curve stays, by default a new one is fitted
    other = crisp_shots(ink=0.6, seed=1)
    again = reloaded.adapt(other, num_steps=2, generator=torch.Generator().manual_seed(0), tone_match=False)
    assert torch.equal(again.generator.tone_curve, reloaded.generator.tone_curve)
    refit = reloaded.adapt(other, num_steps=2, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(refit.generator.tone_curve, reloaded.generator.tone_curve)


def test_tone_match_default_is_off_with_lora():
    pytest.importorskip("peft")
    seed = torch.Generator().manual_seed(0)
    adapted = tiny_pipeline().adapt(crisp_shots(), num_steps=2, lora_rank=2, generator=seed)
    assert adapted.card_info["adaptation"]["tone_match"] is False and adapted.generator.tone_curve is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tone_match": "yes"}, r"`tone_match` must be True, False or None.*got 'yes'"),
        ({"tone_match": 1}, r"`tone_match` must be True, False or None.*got 1"),
        ({"tone_match": True, "lora_rank": 4}, r"`tone_match=True`.*LoRA adapter.*lora_rank=4"),
    ],
)
def test_adapt_refuses_bad_tone_match(kwargs, match, monkeypatch):
    monkeypatch.setattr(adaptation, "gan_step", lambda *a, **k: pytest.fail("trained before rejecting bad input"))
    with pytest.raises(ValueError, match=match):
        tiny_pipeline().adapt(crisp_shots(), num_steps=2, **kwargs)
