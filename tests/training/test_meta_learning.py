# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Tests of the meta-learning outer loops (`metagan_hub.training.meta_learning`).

The reference computations below re-implement the inner loop with `gan_step` and the documented randomness protocol
of [`MetaLearner`]: task `i` of meta step `s` draws everything from `learner.task_generator(s, i)`, first the seed of
the DiffAugment generator, then per inner step the support indices, `z_d` and `z_g`.

Run as a script under `torchrun` (see `test_two_processes_match_one_process`), this file is also the worker of the
two-process test.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metagan_hub import MetaGANDiscriminator, MetaGANGenerator
from metagan_hub.training.gan_step import GANStepConfig, gan_step
from metagan_hub.training.losses import discriminator_loss, generator_loss
from metagan_hub.training.meta_learning import MetaLearner, MetaLearningConfig, NonFiniteMetaStepError
from metagan_hub.training.tasks import Task
from tests.testing_utils import assert_outputs_close

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZE, CHANNELS, LATENT = 16, 1, 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_models(seed: int = 0) -> tuple[MetaGANGenerator, MetaGANDiscriminator]:
    torch.manual_seed(seed)
    g = MetaGANGenerator(latent_dim=LATENT, sample_size=SIZE, out_channels=CHANNELS, block_out_channels=(16, 8))
    d = MetaGANDiscriminator(sample_size=SIZE, in_channels=CHANNELS, block_out_channels=(8, 16))
    return g, d


def make_tasks(n: int, shots: int = 4, queries: int = 3, seed: int = 123) -> list[Task]:
    gen = torch.Generator().manual_seed(seed)
    tasks = []
    for i in range(n):
        images = torch.rand(shots + queries, CHANNELS, SIZE, SIZE, generator=gen) * 2 - 1  # [K+Q, C, H, W]
        tasks.append(Task(class_index=i, support=images[:shots], query=images[shots:]))
    return tasks


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def reference_inner_loop(
    learner: MetaLearner, support: torch.Tensor, gen: torch.Generator
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Adapt deep copies of the meta-weights with plain `gan_step` calls and fresh SGD optimizers."""
    cfg = learner.config
    assert cfg.inner_optimizer == "sgd"
    g = copy.deepcopy(learner.generator)
    d = copy.deepcopy(learner.discriminator)
    opt_g = torch.optim.SGD(g.parameters(), lr=cfg.inner_lr)
    opt_d = torch.optim.SGD(d.parameters(), lr=cfg.inner_lr)
    aug_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
    step_config = GANStepConfig(
        loss=cfg.loss,
        r1_gamma=cfg.r1_gamma,
        gp_lambda=cfg.gp_lambda,
        wgan_drift=cfg.wgan_drift,
        augment=learner.augment,
        mode_seeking_weight=cfg.mode_seeking_weight,
    )
    for _ in range(cfg.inner_steps):
        idx = torch.randint(0, support.shape[0], (cfg.inner_batch_size,), generator=gen)
        z_d = torch.randn(cfg.inner_batch_size, LATENT, generator=gen)
        z_g = torch.randn(cfg.inner_batch_size, LATENT, generator=gen)
        ok, _ = gan_step(g, d, opt_g, opt_d, support[idx], z_d, z_g, step_config, aug_gen)
        assert ok
    return g, d


def config(**overrides) -> MetaLearningConfig:
    values = dict(inner_steps=3, inner_lr=1.0, inner_optimizer="sgd", inner_batch_size=4, augment=())
    values.update(overrides)
    return MetaLearningConfig(**values)


# ---------------------------------------------------------------------------------------------------- Reptile


def test_reptile_sgd_outer_step_is_the_interpolation_toward_the_mean_adapted_weights():
    g, d = make_models()
    learner = MetaLearner(g, d, config(algorithm="reptile", outer_optimizer="sgd", meta_lr=0.25), seed=7)
    tasks = make_tasks(2)
    meta_g, meta_d = params(g), params(d)
    adapted = [reference_inner_loop(learner, t.support, learner.task_generator(5, i)) for i, t in enumerate(tasks)]

    logs = learner.meta_step(tasks, step=5)

    assert logs["nonfinite"] == 0.0
    for model, meta, idx in ((g, meta_g, 0), (d, meta_d, 1)):
        for p, p0, qa, qb in zip(model.parameters(), meta, adapted[0][idx].parameters(), adapted[1][idx].parameters()):
            expected = p0 + 0.25 * ((qa.detach() + qb.detach()) / 2 - p0)  # meta + eps * (mean adapted - meta)
            torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)
    # the inner loops really moved the weights, so the check above is not vacuous
    assert max((a - b).abs().max().item() for a, b in zip(meta_g, params(adapted[0][0]))) > 1e-3


@pytest.mark.parametrize("algorithm", ["reptile", "fomaml"])
def test_proximal_weight_pulls_the_outer_update_towards_the_start_weights(algorithm):
    tasks = make_tasks(2)
    cfg = dict(algorithm=algorithm, outer_optimizer="sgd", meta_lr=0.25)
    g, d = make_models()
    pulled = MetaLearner(g, d, config(**cfg, proximal_weight=0.5), seed=7)
    plain_g, plain_d = make_models()
    plain = MetaLearner(plain_g, plain_d, config(**cfg), seed=7)
    start = params(g) + params(d)
    pulled.meta_step(tasks, step=0)
    plain.meta_step(tasks, step=0)
    # at the start the pull is zero: the first step is the plain one, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(params(g) + params(d), params(plain_g) + params(plain_d)))

    # from the same weights, the plain update of step 1 minus meta_lr * weight * (meta - start)
    before = params(g) + params(d)
    pulled.meta_step(tasks, step=1)
    plain.meta_step(tasks, step=1)
    moved = max((a - b).abs().max().item() for a, b in zip(before, start))
    assert 0.25 * 0.5 * moved > 1e-4  # step 0 moved the weights: the pull of step 1 is far above the tolerance
    for p, q, p1, p0 in zip(params(g) + params(d), params(plain_g) + params(plain_d), before, start):
        torch.testing.assert_close(p, q - 0.25 * 0.5 * (p1 - p0), rtol=0, atol=1e-6)


def test_proximal_weight_needs_its_start_weights_in_a_loaded_state():
    g, d = make_models()
    state = MetaLearner(g, d, config(algorithm="reptile")).state_dict()
    state["config"]["proximal_weight"] = 0.5
    learner = MetaLearner(*make_models(), config(algorithm="reptile", proximal_weight=0.5))
    with pytest.raises(ValueError, match="without the start weights"):
        learner.load_state_dict(state)


def test_reptile_sgd_meta_lr_one_jumps_to_the_adapted_weights():
    g, d = make_models()
    learner = MetaLearner(g, d, config(algorithm="reptile", outer_optimizer="sgd", meta_lr=1.0))
    task = make_tasks(1)[0]
    ref_g, ref_d = reference_inner_loop(learner, task.support, learner.task_generator(0, 0))
    learner.meta_step([task], step=0)
    for model, ref in ((g, ref_g), (d, ref_d)):
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-6)


def test_reptile_adam_first_outer_step_moves_by_meta_lr_toward_the_adapted_weights():
    g, d = make_models()
    meta_lr = 1e-3
    learner = MetaLearner(g, d, config(algorithm="reptile", meta_lr=meta_lr))
    task = make_tasks(1)[0]
    meta_g = params(g)
    ref_g, _ = reference_inner_loop(learner, task.support, learner.task_generator(0, 0))
    learner.meta_step([task], step=0)
    for p, p0, q in zip(g.parameters(), meta_g, ref_g.parameters()):
        delta = p0 - q.detach()  # the outer "gradient"
        # Adam's bias-corrected first step is lr * g / (|g| + eps), i.e. about lr * sign(g)
        expected = p0 - meta_lr * delta / (delta.abs() + 1e-8)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-8)


def test_inner_loop_never_modifies_meta_weights_before_the_outer_update():
    g, d = make_models()
    learner = MetaLearner(g, d, config(algorithm="reptile"))
    before = params(g) + params(d)
    ok, _, g_upd, d_upd, lr_grad = learner._meta_update(make_tasks(2), step=0, task_offset=0)
    assert lr_grad is None  # no learned inner learning rates
    assert ok
    after = params(g) + params(d)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert any(u.abs().max() > 0 for u in g_upd + d_upd)


# ---------------------------------------------------------------------------------------------------- FOMAML


def reference_fomaml_gradients(learner: MetaLearner, task: Task, step: int, index: int):
    """Adapt on the support set, then backpropagate the query losses into `.grad` of the adapted copies."""
    cfg = learner.config
    gen = learner.task_generator(step, index)
    g, d = reference_inner_loop(learner, task.support, gen)
    aug_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
    z = torch.randn(task.query.shape[0], LATENT, generator=gen)

    def d_fn(x):
        return d(x).logits

    fake = g(z).sample
    d_loss, _ = discriminator_loss(
        cfg.loss,
        d_fn,
        task.query,
        fake.detach(),
        r1_gamma=cfg.r1_gamma,
        gp_lambda=cfg.gp_lambda,
        wgan_drift=cfg.wgan_drift,
        augment=learner.augment,
        generator=aug_gen,
    )
    d.zero_grad()
    d_loss.backward()
    d_grads = [p.grad.clone() for p in d.parameters()]
    g_loss, _ = generator_loss(cfg.loss, d_fn, fake, augment=learner.augment, generator=aug_gen)
    if cfg.mode_seeking_weight:  # MSGAN's ratio written out for the first pair (3 queries: one pair, one left out)
        ratio = (fake[0] - fake[1]).abs().mean() / (z[0] - z[1]).abs().mean()
        g_loss = g_loss + cfg.mode_seeking_weight / (ratio + 1e-5)
    g.zero_grad()
    g_loss.backward()  # also fills d's .grad, which is ignored
    g_grads = [p.grad.clone() for p in g.parameters()]
    return g_grads, d_grads


@pytest.mark.parametrize(("loss", "mode_seeking"), [("nonsaturating", 0.0), ("wgan-gp", 0.0), ("nonsaturating", 0.05)])
def test_fomaml_meta_gradient_equals_query_gradient_at_adapted_weights(loss, mode_seeking):
    g, d = make_models()
    cfg = config(algorithm="fomaml", loss=loss, outer_optimizer="sgd", meta_lr=1.0, mode_seeking_weight=mode_seeking)
    learner = MetaLearner(g, d, cfg)
    tasks = make_tasks(2)
    refs = [reference_fomaml_gradients(learner, t, step=3, index=i) for i, t in enumerate(tasks)]
    meta_g, meta_d = params(g), params(d)

    learner.meta_step(tasks, step=3)

    # with SGD at lr 1 the outer step subtracts exactly the mean meta-gradient
    for model, meta, idx in ((g, meta_g, 0), (d, meta_d, 1)):
        for k, (p, p0) in enumerate(zip(model.parameters(), meta)):
            expected_grad = (refs[0][idx][k] + refs[1][idx][k]) / 2
            torch.testing.assert_close(p0 - p.detach(), expected_grad, rtol=1e-4, atol=1e-6)


def test_fomaml_needs_query_images():
    g, d = make_models()
    learner = MetaLearner(g, d, config(algorithm="fomaml"))
    task = make_tasks(1)[0]
    with pytest.raises(ValueError, match="queries"):
        learner.meta_step([Task(class_index=0, support=task.support, query=task.support[:0])], step=0)


# ---------------------------------------------------------------------------------------------------- pretrain


def test_pretrain_trains_the_meta_weights_in_place():
    g, d = make_models()
    learner = MetaLearner(g, d, config(algorithm="pretrain", inner_steps=2, meta_lr=1e-3))
    before = params(g)
    logs = learner.meta_step(make_tasks(3), step=0)
    assert logs["nonfinite"] == 0.0 and {"d_loss", "g_loss"} <= set(logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, params(g)))


@pytest.mark.parametrize("algorithm", ["reptile", "fomaml", "pretrain"])
def test_mode_seeking_weight_changes_only_what_the_generator_loss_touches(algorithm):
    """Pretrain's first D update comes before any G update, so only G differs; the meta-learners' inner loops feed
    G's change into D as well. Weight 0 is the plain loss, bit for bit."""
    results = {}
    for weight in (0.0, 0.0, 1.0):
        g, d = make_models()
        cfg = config(algorithm=algorithm, inner_steps=1, meta_lr=1e-3, inner_lr=0.1, mode_seeking_weight=weight)
        logs = MetaLearner(g, d, cfg).meta_step(make_tasks(2), step=0)
        assert logs["nonfinite"] == 0.0
        results.setdefault(weight, []).append((params(g), params(d)))
    (g0, d0), (g0_again, d0_again) = results[0.0]
    (g1, d1) = results[1.0][0]
    # separately built models: compared up to kernel rounding (tests/testing_utils.py)
    for a, b in zip(g0 + d0, g0_again + d0_again):
        assert_outputs_close(a, b)
    assert any(not torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(g0, g1))
    if algorithm == "pretrain":
        for a, b in zip(d0, d1):
            assert_outputs_close(a, b)


COVERAGE_WEIGHT, COVERAGE_EPS, COVERAGE_SAMPLES = 0.5, 0.25, 6


def coverage_config(**overrides) -> MetaLearningConfig:
    """Reptile with the query-set coverage term and an SGD outer step of `COVERAGE_EPS`."""
    return config(
        algorithm="reptile",
        outer_optimizer="sgd",
        meta_lr=COVERAGE_EPS,
        query_coverage_weight=COVERAGE_WEIGHT,
        query_coverage_samples=COVERAGE_SAMPLES,
        **overrides,
    )


def check_coverage_outer_step(cfg: MetaLearningConfig, features=None):
    """One meta step must give meta + eps * (adapted - meta) - eps * w * grad for G, where grad is the coverage
    gradient (`coverage_loss(..., features=features)`) of the query images at the adapted generator, drawn from the
    task's generator after its inner loop, and plain Reptile for D. Returns `(loss, grads, samples, task)` of the
    reference computation."""
    from metagan_hub.training.losses import coverage_loss

    g, d = make_models()
    learner = MetaLearner(g, d, cfg, seed=3, coverage_features=features)
    task = make_tasks(1)[0]
    meta_g, meta_d = params(g), params(d)
    gen = learner.task_generator(0, 0)
    ref_g, ref_d = reference_inner_loop(learner, task.support, gen)
    z = torch.randn(COVERAGE_SAMPLES, LATENT, generator=gen)  # drawn after the inner loop's randomness
    samples = ref_g(z).sample
    loss, _ = coverage_loss(samples, task.query, features=features)
    grads = torch.autograd.grad(loss, list(ref_g.parameters()))

    logs = learner.meta_step([task], step=0)

    assert logs["nonfinite"] == 0.0 and logs["coverage_loss"] == pytest.approx(loss.item(), rel=1e-5)
    eps, weight = COVERAGE_EPS, COVERAGE_WEIGHT
    for p, p0, q, grad in zip(g.parameters(), meta_g, ref_g.parameters(), grads):
        expected = p0 + eps * (q.detach() - p0) - eps * weight * grad
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)
    for p, p0, q in zip(d.parameters(), meta_d, ref_d.parameters()):
        torch.testing.assert_close(p.detach(), p0 + eps * (q.detach() - p0), rtol=0, atol=1e-6)
    return loss, grads, samples.detach(), task


def test_query_coverage_adds_the_weighted_coverage_gradient_at_the_adapted_weights():
    """Reptile with the query-set coverage term in pixel space (the default)."""
    _, grads, _, _ = check_coverage_outer_step(coverage_config())
    assert max(grad.abs().max().item() for grad in grads) > 1e-4  # the term is not vacuous


def test_query_coverage_in_feature_space_follows_the_frozen_feature_network():
    """The same outer step with distances between a frozen network's unit feature vectors: the expected update
    uses coverage_loss(..., features=net); the network is put in eval mode, frozen, and left unchanged."""
    from metagan_hub.training.losses import coverage_loss

    torch.manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Conv2d(CHANNELS, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Dropout())
    net_before = [p.detach().clone() for p in net.parameters()]
    cfg = coverage_config(query_coverage_space="features")
    with pytest.raises(ValueError, match="coverage_features"):
        MetaLearner(*make_models(), cfg, seed=3)

    loss, grads, samples, task = check_coverage_outer_step(cfg, features=net)

    assert not net.training and not any(p.requires_grad for p in net.parameters())
    pixel_loss, _ = coverage_loss(samples, task.query)
    assert loss.item() != pytest.approx(pixel_loss.item(), rel=1e-2)  # not the pixel-space term
    assert max(grad.abs().max().item() for grad in grads) > 1e-4
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net_before))
    with pytest.raises(ValueError, match="query_coverage_space.*'pixels', 'features'"):
        MetaLearningConfig(query_coverage_space="logits")


def test_query_coverage_needs_query_images_and_an_inner_loop():
    g, d = make_models()
    learner = MetaLearner(g, d, config(algorithm="reptile", query_coverage_weight=1.0))
    no_query = [Task(class_index=0, support=make_tasks(1)[0].support, query=torch.zeros(0, CHANNELS, SIZE, SIZE))]
    with pytest.raises(ValueError, match="query_coverage_weight.*query images"):
        learner.meta_step(no_query, step=0)
    with pytest.raises(ValueError, match="query_coverage_weight.*'pretrain'"):
        MetaLearningConfig(algorithm="pretrain", query_coverage_weight=1.0)


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("algorithm", ["reptile", "fomaml", "pretrain"])
def test_non_finite_losses_skip_the_update_and_stop_after_a_bounded_number(algorithm, caplog):
    g, d = make_models()
    learner = MetaLearner(g, d, config(algorithm=algorithm, inner_steps=1, max_nonfinite_steps=2))
    bad = make_tasks(2)
    bad[0] = Task(class_index=0, support=torch.full_like(bad[0].support, float("nan")), query=bad[0].query)
    before = params(g) + params(d)

    logs = learner.meta_step(bad, step=0)
    assert logs["nonfinite"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, params(g) + params(d)))
    assert "update skipped" in caplog.text
    with pytest.raises(NonFiniteMetaStepError, match="2 meta steps in a row"):
        learner.meta_step(bad, step=1)
    assert all(torch.equal(a, b) for a, b in zip(before, params(g) + params(d)))

    # a good step resets the counter
    learner.nonfinite_in_a_row = 1
    assert learner.meta_step(make_tasks(2), step=2)["nonfinite"] == 0.0
    assert learner.nonfinite_in_a_row == 0


def test_task_shape_must_match_the_generator():
    g, d = make_models()
    learner = MetaLearner(g, d, config())
    wrong = Task(class_index=0, support=torch.zeros(4, 3, SIZE, SIZE), query=None)
    with pytest.raises(ValueError, match=r"support.*\(K, 1, 16, 16\)"):
        learner.meta_step([wrong], step=0)
    with pytest.raises(ValueError, match="at least one task"):
        learner.meta_step([], step=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"algorithm": "maml"}, "algorithm"),
        ({"loss": "l2"}, "loss"),
        ({"inner_optimizer": "rmsprop"}, "inner_optimizer"),
        ({"outer_optimizer": "lamb"}, "outer_optimizer"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"meta_lr": float("nan")}, "meta_lr"),
        ({"inner_lr": -1.0}, "inner_lr"),
        ({"r1_gamma": -0.1}, "r1_gamma"),
        ({"mode_seeking_weight": -1.0}, "mode_seeking_weight"),
        ({"mode_seeking_weight": float("inf")}, "mode_seeking_weight"),
        ({"query_coverage_weight": -1.0}, "query_coverage_weight"),
        ({"query_coverage_weight": float("nan")}, "query_coverage_weight"),
        ({"query_coverage_samples": 0}, "query_coverage_samples"),
        ({"proximal_weight": -0.1}, "`proximal_weight` must be a non-negative finite number, got -0.1"),
        ({"proximal_weight": float("nan")}, "`proximal_weight` must be a non-negative finite number"),
        ({"algorithm": "pretrain", "proximal_weight": 1.0}, "`proximal_weight` needs an inner loop"),
        ({"augment": ("rotate",)}, "rotate"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaLearningConfig(**kwargs)


def test_fp16_on_cpu_is_refused_with_a_hint_to_use_bf16():
    g, d = make_models()
    with pytest.raises(ValueError, match="bf16"):
        MetaLearner(g, d, config(mixed_precision="fp16"))


def test_figr_preset():
    cfg = MetaLearningConfig.figr()
    assert (cfg.algorithm, cfg.loss, cfg.inner_steps, cfg.inner_lr, cfg.inner_optimizer, cfg.meta_lr) == (
        "reptile",
        "wgan-gp",
        10,
        1e-3,
        "sgd",
        1e-4,
    )
    assert cfg.outer_optimizer == "adam" and cfg.augment == ()
    assert MetaLearningConfig.figr(inner_steps=5).inner_steps == 5


# ---------------------------------------------------------------------------------------------------- state


@pytest.mark.parametrize(
    "options", [{}, {"query_coverage_weight": 1.0, "query_coverage_samples": 4}, {"proximal_weight": 0.5}]
)
def test_state_dict_round_trip_continues_bit_for_bit(options):
    tasks = make_tasks(2)
    g, d = make_models()
    learner = MetaLearner(g, d, config(algorithm="reptile", meta_lr=1e-3, **options))
    learner.meta_step(tasks, step=0)
    state = copy.deepcopy(learner.state_dict())
    g_state, d_state = copy.deepcopy(g.state_dict()), copy.deepcopy(d.state_dict())
    learner.meta_step(tasks, step=1)

    g2, d2 = make_models(seed=99)
    g2.load_state_dict(g_state)
    d2.load_state_dict(d_state)
    resumed = MetaLearner(g2, d2, config(algorithm="reptile", meta_lr=1e-3, **options))
    resumed.load_state_dict(state)
    resumed.meta_step(tasks, step=1)
    # exact: resuming is promised to continue bit for bit
    assert all(torch.equal(a, b) for a, b in zip(params(g) + params(d), params(g2) + params(d2)))


def test_load_state_dict_names_differing_keys():
    g, d = make_models()
    state = MetaLearner(g, d, config(algorithm="reptile")).state_dict()
    other = MetaLearner(*make_models(), config(algorithm="reptile", inner_steps=5, loss="hinge"))
    with pytest.raises(ValueError, match=r"keys \['inner_steps', 'loss'\] differ"):
        other.load_state_dict(state)


# ---------------------------------------------------------------------------------------------------- 2 processes

WORKER_STEPS = 2
WORKER_TASKS_PER_RANK = 2
# The 1- vs 2-process comparison uses SGD outer steps: the averaged update differs between the two runs only by float
# summation order, and Adam's first steps (about lr * sign(update)) would amplify that rounding noise into
# lr-sized differences on parameters whose true update is zero (e.g. convolution biases followed by GroupNorm).
WORKER_CONFIGS = {
    "reptile": dict(algorithm="reptile", outer_optimizer="sgd", meta_lr=0.5),
    "fomaml": dict(algorithm="fomaml", outer_optimizer="sgd", meta_lr=0.1),
    "pretrain": dict(algorithm="pretrain", meta_lr=1e-3, inner_steps=2),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(out_dir: str) -> None:
    """Runs in each of the two processes: meta-train on this rank's share of the same global tasks."""
    from accelerate import Accelerator

    torch.set_num_threads(1)
    accelerator = Accelerator()
    assert accelerator.num_processes == 2, accelerator.distributed_type
    rank = accelerator.process_index
    n = WORKER_TASKS_PER_RANK
    for name, kwargs in WORKER_CONFIGS.items():
        g, d = make_models()
        learner = MetaLearner(g, d, config(**kwargs), accelerator=accelerator, seed=3)
        for step in range(WORKER_STEPS):
            tasks = make_tasks(2 * n, seed=1000 + step)
            learner.meta_step(tasks[rank * n : (rank + 1) * n], step=step)  # task_offset defaults to rank * n
        torch.save({"g": g.state_dict(), "d": d.state_dict()}, os.path.join(out_dir, f"{name}-rank{rank}.pt"))
    accelerator.wait_for_everyone()
    accelerator.end_training()


def test_two_processes_match_one_process(tmp_path):
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        __file__,
        "--worker",
        str(tmp_path),
    ]
    result = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    n = WORKER_TASKS_PER_RANK
    for name, kwargs in WORKER_CONFIGS.items():
        ranks = [torch.load(tmp_path / f"{name}-rank{r}.pt") for r in range(2)]
        for part in ("g", "d"):  # exact: every rank applies the same all-reduced update to the same weights
            for key, value in ranks[0][part].items():
                assert torch.equal(value, ranks[1][part][key]), (name, part, key)
        if name == "pretrain":
            continue  # pooled batches differ by construction between 1 and 2 processes
        g, d = make_models()
        learner = MetaLearner(g, d, config(**kwargs), seed=3)
        for step in range(WORKER_STEPS):
            learner.meta_step(make_tasks(2 * n, seed=1000 + step), step=step, task_offset=0)
        for part, model in (("g", g), ("d", d)):
            for key, value in model.state_dict().items():
                torch.testing.assert_close(
                    ranks[0][part][key],
                    value,
                    rtol=1e-5,
                    atol=1e-6,
                    msg=lambda m, at=f"{name} {part}.{key}": f"{at}: {m}",
                )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
    else:
        raise SystemExit("usage: torchrun --nproc_per_node 2 test_meta_learning.py --worker OUT_DIR")
