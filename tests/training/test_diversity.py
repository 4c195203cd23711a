"""Diversity-preserving adaptation (`adapt(diversity_loss=...)`, `metagan_hub/training/diversity.py`) on tiny models:
the consistency and contrastive terms behave as their papers say, gradients reach only the adapted generator, the
frozen starting generator is untouched, the options reach the model card and come back, and bad input fails early."""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch

from metagan_hub import MetaGANPipeline
from metagan_hub.training.diversity import (
    CDC_PAPER_WEIGHT,
    MIXDL_PAPER_WEIGHT,
    DiversityRegularizer,
    PatchDiscriminator,
    contrastive_correspondence_loss,
    mix_latents,
    mixup_distance_loss,
    sample_anchor_latents,
    sample_mixup_coefficients,
)
from metagan_hub.training.losses import discriminator_loss, pairwise_similarity_consistency_loss
from tests.testing_utils import tiny_pipeline

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def shots(n: int = 3) -> torch.Tensor:
    x = -torch.ones(n, 1, SIZE, SIZE)
    for i in range(n):
        x[i, :, 2 + i : 10 + i, 4:12] = 1.0
    return x


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- features
def test_generator_features_do_not_change_the_images():
    gen = tiny_pipeline().generator
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    plain = gen(z).sample
    out = gen(z, return_features=True)
    # the same object twice on the same input: the images are bitwise the same with or without features
    assert torch.equal(out.sample, plain)
    assert [tuple(f.shape) for f in out.features] == [(4, 16, 8, 8), (4, 8, 16, 16)]
    assert gen(z).features is None
    sample, features = gen(z, return_dict=False, return_features=True)
    assert torch.equal(sample, plain) and len(features) == 2


def test_discriminator_features_do_not_change_the_logits():
    disc = tiny_pipeline().discriminator
    x = torch.rand(4, 1, SIZE, SIZE) * 2 - 1
    out = disc(x, return_features=True)
    assert torch.equal(out.logits, disc(x).logits)  # same object, same input
    assert [tuple(f.shape) for f in out.features] == [(4, 16, 8, 8), (4, 16, 4, 4)]


# ---------------------------------------------------------------- CDC consistency term
def test_consistency_zero_for_the_source_itself_and_positive_after_a_perturbation():
    source = tiny_pipeline().generator
    adapted = copy.deepcopy(source)
    reg = DiversityRegularizer("cdc", source, weight=1.0)
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    loss, logs = reg.generator_term(z, adapted(z, return_features=True).features)
    # (source runs without autograd, in channels_last, the adapted copy with it: equal up to rounding)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for p in adapted.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    loss, logs = reg.generator_term(z, adapted(z, return_features=True).features)
    assert float(loss.detach()) > 1e-4 and logs["cdc_g"] == pytest.approx(float(loss.detach()), rel=1e-5)


@pytest.mark.parametrize("method", ["cdc", "dcl"])
def test_gradient_reaches_only_the_adapted_generator(method):
    source = tiny_pipeline().generator
    adapted = copy.deepcopy(source)
    with torch.no_grad():
        for p in adapted.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    reg = DiversityRegularizer(method, source, weight=1.0)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(4))
    loss, _ = reg.generator_term(z, adapted(z, return_features=True).features)
    loss.backward()
    assert all(p.grad is None for p in source.parameters())
    # every layer up to the last block gets a gradient (the output convolution is not part of the block features)
    grads = {name: p.grad for name, p in adapted.named_parameters() if not name.startswith("conv_out")}
    assert all(g is not None for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0


def test_cdc_default_weight_matches_the_paper_scale():
    # the paper's lambda on a mean over N(N-1) entries == lambda / (N - 1) on our per-sample KL
    src, ada = torch.randn(4, 10), torch.randn(4, 10)
    ours = pairwise_similarity_consistency_loss(src, ada) * CDC_PAPER_WEIGHT / 3
    log_p = torch.log_softmax(_offdiag(src), 1)
    log_q = torch.log_softmax(_offdiag(ada), 1)
    paper = (
        CDC_PAPER_WEIGHT * torch.nn.functional.kl_div(log_q, log_p, reduction="sum", log_target=True) / 12
    )  # mean over the 4 x 3 entries
    assert float(ours) == pytest.approx(float(paper), rel=1e-5)


def _offdiag(x: torch.Tensor) -> torch.Tensor:
    x = torch.nn.functional.normalize(x, dim=1)
    n = x.shape[0]
    return (x @ x.T)[~torch.eye(n, dtype=torch.bool)].reshape(n, n - 1)


# ---------------------------------------------------------------- DCL contrastive term
def test_dcl_generator_term_is_low_when_correspondence_holds_and_log_n_when_collapsed():
    n = 6
    source = torch.randn(n, 32, generator=torch.Generator().manual_seed(0))
    matched = contrastive_correspondence_loss(source + 0.01 * torch.randn(n, 32), source)
    collapsed = contrastive_correspondence_loss(source[:1].expand(n, 32).clone(), source)
    shuffled = contrastive_correspondence_loss(source.roll(1, dims=0), source)
    # the paper's argument: the InfoNCE bound is tight (loss near 0) when each adapted sample still corresponds to
    # its own source sample, and a collapsed generator pays at least log N
    assert float(matched) < 0.05
    assert float(collapsed) >= math.log(n) - 1e-4
    assert float(shuffled) > float(collapsed)


def test_dcl_discriminator_term_pulls_fakes_to_source_and_away_from_real():
    g = torch.Generator().manual_seed(0)
    source, real = torch.randn(4, 16, generator=g), torch.randn(5, 16, generator=g)
    near_source = contrastive_correspondence_loss(source + 0.01 * torch.randn(4, 16, generator=g), source, real)
    copies_real = contrastive_correspondence_loss(real[:4].clone(), source, real)
    assert float(near_source) < 0.05 < float(copies_real)


def test_dcl_discriminator_term_trains_the_discriminator():
    pipe = tiny_pipeline()
    reg = DiversityRegularizer("dcl", pipe.generator, weight=1.0)
    disc = copy.deepcopy(pipe.discriminator)
    z = torch.randn(4, 8)
    with torch.no_grad():
        fake = pipe.generator(z).sample
    loss, logs = reg.discriminator_term(disc, shots(3), fake, z)
    loss.backward()
    assert "dcl_d" in logs and any(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())


def test_dcl_discriminator_term_is_lazy_with_the_same_average_strength():
    pipe = tiny_pipeline()
    z = torch.randn(4, 8)
    with torch.no_grad():
        fake = pipe.generator(z).sample
    every = DiversityRegularizer("dcl", pipe.generator, weight=1.0)
    lazy = DiversityRegularizer("dcl", pipe.generator, weight=1.0, discriminator_interval=3)
    full, _ = every.discriminator_term(pipe.discriminator, shots(3), fake, z)
    on, logs_on = lazy.discriminator_term(pipe.discriminator, shots(3), fake, z, step=6)
    off, logs_off = lazy.discriminator_term(pipe.discriminator, shots(3), fake, z, step=7)
    assert float(on.detach()) == pytest.approx(3 * float(full.detach()), rel=1e-5)
    assert float(off) == 0.0 and logs_off == {} and "dcl_d" in logs_on


def test_contrastive_loss_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        contrastive_correspondence_loss(torch.randn(3, 4), torch.randn(3, 4), temperature=0)
    with pytest.raises(ValueError, match="same shape"):
        contrastive_correspondence_loss(torch.randn(3, 4), torch.randn(3, 5))


# ---------------------------------------------------------------- CDC anchors and patch discriminator
def test_patch_discriminator_scores_patches_and_trains_with_the_gan_losses():
    disc = tiny_pipeline().discriminator
    patch = PatchDiscriminator(disc)
    x = torch.rand(4, 1, SIZE, SIZE) * 2 - 1
    assert torch.equal(patch(x).logits, disc(x).logits)  # image level: the wrapped discriminator itself
    patch.patch_level = True
    logits = patch(x).logits
    assert logits.shape == (4, 1, 8, 8)  # one logit per position of block 0's 8x8 output
    loss, logs = discriminator_loss("nonsaturating", lambda y, num_batches=1: patch(y).logits, x, -x, r1_gamma=1.0)
    loss.backward()
    assert patch.patch_head[0].weight.grad is not None and logs["r1"] > 0
    assert disc.fc.weight.grad is None  # the image-level head is skipped on patch-level calls


def test_anchor_latents_are_near_distinct_anchors():
    anchors = torch.randn(5, 8)
    z = sample_anchor_latents(anchors, 4, torch.Generator().manual_seed(0))
    nearest = torch.cdist(z, anchors).argmin(dim=1)
    assert len(set(nearest.tolist())) == 4
    assert float(torch.cdist(z, anchors).min(dim=1).values.max()) < 0.5


# ---------------------------------------------------------------- MixDL mixup distance term
def test_mixup_coefficients_lie_on_the_simplex_and_mixes_keep_the_latent_scale():
    c = sample_mixup_coefficients(2000, 4, torch.Generator().manual_seed(0))
    assert c.shape == (2000, 4) and bool((c >= 0).all())
    assert torch.allclose(c.sum(dim=1), torch.ones(2000))
    # flat Dirichlet: every coordinate has mean 1/K and variance (K - 1) / (K^2 (K + 1)) = 0.0375 for K = 4
    assert torch.allclose(c.mean(dim=0), torch.full((4,), 0.25), atol=0.02)
    assert float(c.var(dim=0).mean()) == pytest.approx(0.0375, rel=0.15)
    assert torch.equal(c, sample_mixup_coefficients(2000, 4, torch.Generator().manual_seed(0)))
    # for a fixed coefficient row, mixes of standard normal latents are standard normal again (a plain convex mix
    # would shrink them by ||c||)
    row = c[:1].expand(20000, 4)
    z = torch.randn(20000, 4, 16, generator=torch.Generator().manual_seed(1))
    mixes = torch.stack([mix_latents(z[i], row[i : i + 1])[0] for i in range(0, 20000, 10)])
    assert float(mixes.std()) == pytest.approx(1.0, abs=0.03)
    exact = mix_latents(torch.eye(4), torch.tensor([[0.6, 0.8, 0.0, 0.0]]))
    assert torch.allclose(exact, torch.tensor([[0.6, 0.8, 0.0, 0.0]]))


def test_mixup_distance_term_rewards_in_between_mixes_and_punishes_collapse():
    g = torch.Generator().manual_seed(0)
    anchors = torch.randn(4, 64, generator=g)
    c = sample_mixup_coefficients(6, 4, g)
    between = c @ anchors  # features that look in between, in proportion
    collapsed = anchors[:1].expand(6, 64)  # every mix snaps onto the first anchor
    wrong = anchors[torch.argmin(c, dim=1)]  # every mix onto the anchor it holds least of
    low, high, worst = (float(mixup_distance_loss(anchors, m, c)) for m in (between, collapsed, wrong))
    assert low < high and low < worst
    assert min(low, high, worst) >= 0  # a KL divergence
    # a list of layers is averaged
    both = mixup_distance_loss([anchors, anchors], [between, wrong], c)
    assert float(both) == pytest.approx((low + worst) / 2, rel=1e-5)
    # zero exactly when the similarities are the coefficients up to a constant (softmax ignores it): a unit mix
    # [x, sqrt(1 - |x|^2)] has cosine x_j with the unit anchor e_j in 5 dimensions
    coefficients = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    x = coefficients - 0.25
    unit_anchors = torch.cat([torch.eye(4), torch.zeros(4, 1)], dim=1)
    mix = torch.cat([x, (1 - x.square().sum()).sqrt().reshape(1, 1)], dim=1)
    assert float(mixup_distance_loss(unit_anchors, mix, coefficients)) == pytest.approx(0.0, abs=1e-6)
    assert float(mixup_distance_loss(unit_anchors, unit_anchors[:1], coefficients)) > 0.1  # onto the smallest share


def test_mixup_distance_term_gradient_reaches_anchors_and_mixes():
    anchors = torch.randn(3, 10, requires_grad=True)
    mixes = torch.randn(3, 10, requires_grad=True)
    c = sample_mixup_coefficients(3, 3, torch.Generator().manual_seed(0))
    mixup_distance_loss(anchors, mixes, c).backward()
    assert float(anchors.grad.abs().sum()) > 0 and float(mixes.grad.abs().sum()) > 0


def test_mixup_distance_term_bad_input():
    a, m = torch.randn(3, 5), torch.randn(2, 5)
    with pytest.raises(ValueError, match="coefficients"):
        mixup_distance_loss(a, m, torch.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="layers"):
        mixup_distance_loss([a, a], [m], torch.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=">= 2 anchors"):
        mixup_distance_loss(a[:1], m, torch.ones(2, 1))
    with pytest.raises(ValueError, match="values per sample"):
        mixup_distance_loss(a, torch.randn(2, 6), torch.full((2, 3), 1 / 3))


def test_mixdl_regularizer_draws_anchors_then_mixes_and_scores_them():
    adapted = tiny_pipeline().generator
    reg = DiversityRegularizer("mixdl", None, weight=2.0)
    with pytest.raises(ValueError, match="generator_latents"):  # no mixes drawn yet
        reg.generator_term(torch.randn(4, 8), adapted(torch.randn(4, 8), return_features=True).features)
    g = torch.Generator().manual_seed(5)
    z = reg.generator_latents(3, 8, g)
    plain = torch.randn(3, 8, generator=torch.Generator().manual_seed(5))
    assert z.shape == (6, 8) and torch.equal(z[:3], plain)  # the anchors are the usual draw
    assert torch.allclose(z[3:], mix_latents(plain, reg._coefficients))
    loss, logs = reg.generator_term(z, adapted(z, return_features=True).features)
    assert float(loss.detach()) == pytest.approx(2.0 * logs["mixdl_g"], rel=1e-5) and logs["mixdl_g"] > 0
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in adapted.parameters() if p.grad is not None) > 0
    with pytest.raises(ValueError, match="mixes"):  # latents of another draw
        reg.generator_term(z[:4], adapted(z[:4], return_features=True).features)
    with pytest.raises(ValueError, match="source generator"):
        DiversityRegularizer("cdc", None, weight=1.0)
    # the other methods draw exactly the latents adapt() drew before
    cdc = DiversityRegularizer("cdc", adapted, weight=1.0)
    assert torch.equal(cdc.generator_latents(3, 8, torch.Generator().manual_seed(5)), plain)


def test_mixdl_default_weight_matches_the_paper_scale():
    # the paper's weight on a KL averaged over K x K entries (torch's KLDivLoss default) == weight / K on our rows
    g = torch.Generator().manual_seed(0)
    anchors, mixes = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    c = sample_mixup_coefficients(4, 4, g)
    ours = mixup_distance_loss(anchors, mixes, c) * MIXDL_PAPER_WEIGHT / 4
    cos = torch.nn.functional.normalize(mixes, dim=1) @ torch.nn.functional.normalize(anchors, dim=1).T
    kl = torch.nn.functional.kl_div(torch.log_softmax(cos, 1), torch.softmax(c, 1), reduction="sum")
    paper = MIXDL_PAPER_WEIGHT * kl / 16  # mean over the 4 x 4 entries
    assert float(ours) == pytest.approx(float(paper), rel=1e-5)
    pipe = tiny_pipeline()
    adapted = pipe.adapt(shots(), num_steps=1, diversity_loss="mixdl", generator=torch.Generator().manual_seed(0))
    assert adapted.card_info["adaptation"]["diversity_weight"] == pytest.approx(MIXDL_PAPER_WEIGHT / 4)


# ---------------------------------------------------------------- adapt()
@pytest.mark.parametrize(
    "options",
    [
        {"diversity_loss": "cdc"},
        {"diversity_loss": "cdc", "cdc_anchor_interval": 0, "diversity_batch_size": 5},
        {"diversity_loss": "dcl", "diversity_weight": 0.5},
        {"diversity_loss": "mixdl", "diversity_weight": 0.5, "diversity_batch_size": 3},
    ],
    ids=["cdc", "cdc-no-anchors", "dcl", "mixdl"],
)
def test_adapt_keeps_the_source_bit_identical_and_records_the_options(options):
    pipe = tiny_pipeline()
    before_g, before_d = state(pipe.generator), state(pipe.discriminator)
    adapted = pipe.adapt(shots(), num_steps=6, generator=torch.Generator().manual_seed(0), **options)
    # bitwise: adapt() promises never to modify the pipeline it adapts
    for before, model in ((before_g, pipe.generator), (before_d, pipe.discriminator)):
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    adapted_g = adapted.generator.state_dict()  # (plus the tone curve adapt() fits by default)
    assert any(not torch.equal(v, adapted_g[k]) for k, v in before_g.items())
    record = adapted.card_info["adaptation"]
    assert record["diversity_loss"] == options["diversity_loss"]
    assert record["diversity_batch_size"] == options.get("diversity_batch_size", 4)
    key = f"{options['diversity_loss']}_g"
    assert all(key in row for row in record["losses"])
    if options["diversity_loss"] == "cdc":
        assert record["diversity_weight"] == pytest.approx(CDC_PAPER_WEIGHT / (record["diversity_batch_size"] - 1))
        assert record["cdc_anchor_interval"] == options.get("cdc_anchor_interval", 4)
        assert set(adapted.discriminator.state_dict()) == set(before_d)  # the patch head is not part of the result
    elif options["diversity_loss"] == "mixdl":
        assert record["diversity_weight"] == 0.5
        assert not any("dcl_d" in row for row in record["losses"])
    else:
        assert record["diversity_weight"] == 0.5
        # lazy: the discriminator-side term runs on the lazy-R1 steps (every r1_interval = 4 steps)
        assert [("dcl_d" in row) for row in record["losses"]] == [s % 4 == 0 for s in range(6)]


@pytest.mark.parametrize("method", ["mixdl", "cdc"])
def test_lazy_diversity_term_runs_on_every_kth_update_with_k_times_the_weight(method):
    # diversity_interval=k: the generator-side term (and MixDL's mixes) only on steps 0, k, 2k, ..., weighted by k
    pipe = tiny_pipeline()
    options = {"diversity_loss": method, "diversity_weight": 0.5, "generator": torch.Generator().manual_seed(0)}
    if method == "cdc":
        options["cdc_anchor_interval"] = 0
    lazy = pipe.adapt(shots(), num_steps=7, diversity_interval=3, **options).card_info["adaptation"]
    assert lazy["diversity_interval"] == 3
    assert [f"{method}_g" in row for row in lazy["losses"]] == [s % 3 == 0 for s in range(7)]
    reg = DiversityRegularizer(method, pipe.generator, 0.5, generator_interval=3)
    assert [reg.applies_to_generator(s) for s in range(4)] == [True, False, False, True]
    eager = DiversityRegularizer(method, pipe.generator, 0.5)
    z_gen = torch.Generator().manual_seed(1)
    latents = reg.generator_latents(4, pipe.generator.config.latent_dim, z_gen)
    if method == "mixdl":
        eager._coefficients = reg._coefficients
    features = copy.deepcopy(pipe.generator)(latents + 0.1, return_features=True).features
    lazy_loss, _ = reg.generator_term(latents, features)
    eager_loss, _ = eager.generator_term(latents, features)
    assert eager_loss.item() > 0
    assert lazy_loss.item() == pytest.approx(3 * eager_loss.item())
    # interval 1 is the default: the same result as leaving it out, bit for bit
    a = pipe.adapt(
        shots(), num_steps=3, diversity_interval=1, **{**options, "generator": torch.Generator().manual_seed(0)}
    )
    b = pipe.adapt(shots(), num_steps=3, **{**options, "generator": torch.Generator().manual_seed(0)})
    assert all(torch.equal(v, b.generator.state_dict()[k]) for k, v in a.generator.state_dict().items())


def test_adapt_without_diversity_records_none_and_matches_explicit_none():
    pipe = tiny_pipeline()
    a = pipe.adapt(shots(), num_steps=3, generator=torch.Generator().manual_seed(0))
    b = pipe.adapt(shots(), num_steps=3, generator=torch.Generator().manual_seed(0), diversity_loss=None)
    rec = a.card_info["adaptation"]
    assert (rec["diversity_loss"], rec["diversity_weight"], rec["diversity_batch_size"]) == (None, None, None)
    # same pipeline, same seed, same process: adapt() is bit-exact on CPU
    assert all(torch.equal(v, b.generator.state_dict()[k]) for k, v in a.generator.state_dict().items())


def test_adapt_with_diversity_is_deterministic():
    pipe = tiny_pipeline()
    runs = [
        pipe.adapt(shots(), num_steps=5, generator=torch.Generator().manual_seed(3), diversity_loss="cdc")
        for _ in range(2)
    ]
    sd = [r.generator.state_dict() for r in runs]
    assert all(torch.equal(v, sd[1][k]) for k, v in sd[0].items())  # same object, seed, process: bitwise


@pytest.mark.parametrize("method", ["cdc", "dcl", "mixdl"])
def test_adapt_bf16(method):
    pipe = tiny_pipeline()
    before = state(pipe.generator)
    adapted = pipe.adapt(
        shots(), num_steps=4, mixed_precision="bf16", generator=torch.Generator().manual_seed(0), diversity_loss=method
    )
    assert adapted.generator.dtype == torch.float32
    assert all(torch.isfinite(v).all() for v in adapted.generator.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in pipe.generator.state_dict().items())


def test_adapt_with_lora_uses_the_base_model_as_source():
    pytest.importorskip("peft")
    pipe = tiny_pipeline()
    before = state(pipe.generator)
    adapted = pipe.adapt(
        shots(), num_steps=4, lora_rank=2, generator=torch.Generator().manual_seed(0), diversity_loss="cdc"
    )
    assert adapted.has_lora and not getattr(pipe.generator, "peft_config", None)
    assert all(torch.equal(before[k], v) for k, v in pipe.generator.state_dict().items())
    assert all(math.isfinite(row["cdc_g"]) for row in adapted.card_info["adaptation"]["losses"])


def test_options_round_trip_through_the_model_card(tmp_path):
    pipe = tiny_pipeline()
    adapted = pipe.adapt(
        shots(),
        num_steps=2,
        generator=torch.Generator().manual_seed(0),
        diversity_loss="cdc",
        diversity_weight=12.5,
        diversity_batch_size=6,
        cdc_anchor_interval=2,
    )
    adapted.save_pretrained(tmp_path)
    with open(os.path.join(tmp_path, "metagan_hub.json"), encoding="utf-8") as f:
        on_disk = json.load(f)["adaptation"]
    loaded = MetaGANPipeline.from_pretrained(tmp_path).card_info["adaptation"]
    for rec in (on_disk, loaded):
        assert rec["diversity_loss"] == "cdc"
        assert rec["diversity_weight"] == 12.5
        assert rec["diversity_batch_size"] == 6
        assert rec["cdc_anchor_interval"] == 2


@pytest.mark.parametrize(
    "options, match",
    [
        ({"diversity_loss": "ewc"}, "diversity_loss"),
        ({"diversity_loss": "CDC"}, "diversity_loss"),
        ({"diversity_loss": "cdc", "diversity_weight": -1.0}, "diversity_weight"),
        ({"diversity_loss": "cdc", "diversity_weight": float("nan")}, "diversity_weight"),
        ({"diversity_loss": "dcl", "diversity_weight": float("inf")}, "diversity_weight"),
        ({"diversity_loss": "cdc", "diversity_weight": True}, "diversity_weight"),
        ({"diversity_loss": "cdc", "diversity_batch_size": 2}, "diversity_batch_size"),
        ({"diversity_loss": "dcl", "diversity_batch_size": 0}, "diversity_batch_size"),
        ({"diversity_loss": "cdc", "batch_size": 2}, "batch_size"),
        ({"diversity_weight": 1.0}, "diversity_loss"),
        ({"diversity_batch_size": 8}, "diversity_loss"),
        ({"diversity_loss": "dcl", "cdc_anchor_interval": 4}, "cdc_anchor_interval"),
        ({"diversity_loss": "cdc", "cdc_anchor_interval": -1}, "cdc_anchor_interval"),
        ({"diversity_loss": "mixdl", "diversity_batch_size": 1}, "diversity_batch_size"),
        ({"diversity_loss": "mixdl", "batch_size": 1}, "batch_size"),
        ({"diversity_loss": "mixdl", "cdc_anchor_interval": 2}, "cdc_anchor_interval"),
        ({"diversity_loss": "mixdl", "diversity_weight": -0.5}, "diversity_weight"),
        ({"diversity_loss": "mixdl", "diversity_interval": 0}, "diversity_interval"),
        ({"diversity_loss": "cdc", "diversity_interval": 1.5}, "diversity_interval"),
        ({"diversity_loss": "dcl", "diversity_interval": True}, "diversity_interval"),
        ({"diversity_interval": 2}, "diversity_loss"),
    ],
)
def test_bad_diversity_options(options, match):
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match=match):
        pipe.adapt(shots(), num_steps=1, **options)


def test_adapt_script_passes_and_records_the_diversity_options(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    tiny_pipeline().save_pretrained(tmp_path / "base")
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, shot in enumerate(shots(3)):
        MetaGANPipeline.numpy_to_pil(((shot.permute(1, 2, 0) + 1) / 2).numpy()[None])[0].save(folder / f"{i}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    args = ["--pretrained_model_name_or_path", str(tmp_path / "base"), "--train_data_dir", str(folder)]
    args += ["--num_steps", "2", "--output_dir", str(tmp_path / "out"), "--validation_images", "0"]
    args += ["--diversity_loss", "dcl", "--diversity_weight", "0.25", "--diversity_batch_size", "5"]
    args += ["--diversity_interval", "3"]
    result = subprocess.run(
        [sys.executable, str(repo / "scripts" / "adapt_metagan.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("adaptation.json", "metagan_hub.json"):
        with open(tmp_path / "out" / name, encoding="utf-8") as f:
            record = json.load(f)
        record = record.get("adaptation", record)
        assert (record["diversity_loss"], record["diversity_weight"], record["diversity_batch_size"]) == (
            "dcl",
            0.25,
            5,
        )
        assert record["diversity_interval"] == 3
