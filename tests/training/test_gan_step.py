# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
import pytest
import torch

from metagan_hub import MetaGANDiscriminator, MetaGANGenerator
from metagan_hub.training.augment import DiffAugment
from metagan_hub.training.gan_step import GANStepConfig, gan_step


def _models():
    torch.manual_seed(0)
    g = MetaGANGenerator(latent_dim=8, sample_size=16, block_out_channels=(16, 8)).double()
    d = MetaGANDiscriminator(sample_size=16, block_out_channels=(8, 16), minibatch_std_group_size=2).double()
    return g, d


def _run(joint: bool, loss: str, steps: int = 3):
    g, d = _models()
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.99))
    config = GANStepConfig(loss=loss, r1_interval=2, augment=DiffAugment(), joint_discriminator_forward=joint)
    data = torch.Generator().manual_seed(1)
    aug = torch.Generator().manual_seed(2)
    calls = []
    d.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    for step in range(steps):
        real = torch.rand(4, 1, 16, 16, generator=data, dtype=torch.float64) * 2 - 1
        z_d, z_g = torch.randn(2, 4, 8, generator=data, dtype=torch.float64)
        ok, _ = gan_step(g, d, opt_g, opt_d, real, z_d, z_g, config, aug, step=step)
        assert ok
    return g, d, calls


@pytest.mark.parametrize("loss", ["nonsaturating", "wgan-gp"])
def test_joint_discriminator_forward_trains_like_separate_calls(loss):
    g_sep, d_sep, calls_sep = _run(False, loss)
    g_joint, d_joint, calls_joint = _run(True, loss)
    assert 8 in calls_joint and 8 not in calls_sep  # real + fake in one call on the steps without R1
    for a, b in zip(
        list(g_sep.parameters()) + list(d_sep.parameters()), list(g_joint.parameters()) + list(d_joint.parameters())
    ):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def _one_sgd_step(config: GANStepConfig):
    """One GAN step of freshly built models with SGD at 0.1 on a fixed batch; returns `(g, d, logs)`."""
    g, d = _models()
    opt_g = torch.optim.SGD(g.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(d.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(1)
    real = torch.rand(4, 1, 16, 16, generator=data, dtype=torch.float64) * 2 - 1
    z_d, z_g = torch.randn(2, 4, 8, generator=data, dtype=torch.float64)
    ok, logs = gan_step(g, d, opt_g, opt_d, real, z_d, z_g, config)
    assert ok
    return g, d, logs


def test_mode_seeking_weight_adds_the_regularizer_to_the_generator_update_only():
    g0, d0, logs0 = _one_sgd_step(GANStepConfig(mode_seeking_weight=0.0))
    g1, d1, logs1 = _one_sgd_step(GANStepConfig(mode_seeking_weight=0.5))
    assert "ms_loss" not in logs0 and logs1["ms_loss"] > 0
    # two separately built model pairs: compared up to rounding (tests/testing_utils.py)
    assert logs0["g_loss"] == pytest.approx(logs1["g_loss"], rel=1e-12)  # the adversarial part is reported on its own
    for a, b in zip(d0.parameters(), d1.parameters()):  # D updates first: the term cannot reach it
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert any(not torch.equal(a, b) for a, b in zip(g0.parameters(), g1.parameters()))


@pytest.mark.parametrize("weight", [-0.1, float("nan"), True])
def test_mode_seeking_weight_must_be_non_negative(weight):
    with pytest.raises(ValueError, match="mode_seeking_weight"):
        GANStepConfig(mode_seeking_weight=weight)


def test_master_weights_optimizer_steps_float32_masters_and_refreshes_the_compute_copy():
    import copy

    from metagan_hub.training.gan_step import MasterWeightsOptimizer, compute_copy_pairs

    torch.manual_seed(0)
    master = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    master[0].requires_grad_(False)  # frozen: never stepped, never rounded
    frozen_before = master[0].weight.detach().clone()
    compute = copy.deepcopy(master).to(torch.bfloat16)
    reference = copy.deepcopy(master)  # float32 training with the same bf16 gradients
    opt = MasterWeightsOptimizer(
        compute_copy_pairs(compute, master), torch.optim.Adam(master[1].parameters(), lr=0.1, betas=(0.0, 0.99))
    )
    ref_opt = torch.optim.Adam(reference[1].parameters(), lr=0.1, betas=(0.0, 0.99))
    x = torch.randn(8, 4)
    for _ in range(3):
        opt.zero_grad()
        compute(x.to(torch.bfloat16)).float().square().mean().backward()
        grads = [p.grad.float() for p in compute[1].parameters()]
        assert all(p.grad is None for p in compute[0].parameters())
        opt.step()
        for p, g in zip(reference[1].parameters(), grads):
            p.grad = g
        ref_opt.step()
    # the masters got exactly the float32 update from the compute copy's gradients ...
    for p, q in zip(master[1].parameters(), reference[1].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)  # exact: the same elementwise Adam update on the same values
    # ... keep full precision, and the compute copy holds them rounded
    assert any(not torch.equal(p, p.to(torch.bfloat16).float()) for p in master[1].parameters())
    for c, m in zip(compute[1].parameters(), master[1].parameters()):
        assert c.dtype == torch.bfloat16 and torch.equal(c, m.to(torch.bfloat16))
    assert torch.equal(master[0].weight, frozen_before)


def test_compute_copy_pairs_needs_two_copies_of_one_model():
    from metagan_hub.training.gan_step import compute_copy_pairs

    with pytest.raises(ValueError, match="copies of the same model"):
        compute_copy_pairs(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_master_weights_optimizer_skips_parameters_without_gradient_like_the_optimizer_would():
    import copy

    from metagan_hub.training.gan_step import MasterWeightsOptimizer, compute_copy_pairs

    torch.manual_seed(0)
    master = torch.nn.ModuleDict({"used": torch.nn.Linear(2, 1), "unused": torch.nn.Linear(2, 1)})
    compute = copy.deepcopy(master).to(torch.bfloat16)
    opt = MasterWeightsOptimizer(compute_copy_pairs(compute, master), torch.optim.Adam(master.parameters(), lr=0.1))
    for step in range(2):
        opt.zero_grad()
        modules = ["used", "unused"] if step == 0 else ["used"]
        sum(compute[k](torch.ones(1, 2, dtype=torch.bfloat16)).float().sum() for k in modules).backward()
        unused_before = [p.detach().clone() for p in master["unused"].parameters()]
        opt.step()
    # step 1: Adam's momentum from step 0 would move "unused" if it got a zero gradient instead of none
    assert all(torch.equal(p, q) for p, q in zip(master["unused"].parameters(), unused_before))
    assert all(p.grad is None for p in master["unused"].parameters())


def test_generator_image_regularizer_adds_to_the_generator_update_only():
    seen = []

    def regularizer(fake):
        seen.append((fake.shape, fake.dtype, fake.requires_grad))
        return (fake - 1).square().mean(), {"pull": 1.0}

    g0, d0, logs0 = _one_sgd_step(GANStepConfig())
    g1, d1, logs1 = _one_sgd_step(GANStepConfig(generator_image_regularizer=regularizer))
    assert seen == [((4, 1, 16, 16), torch.float32, True)]  # the generator update's images, float32, with gradient
    assert "pull" not in logs0 and logs1["pull"] == 1.0
    for a, b in zip(d0.parameters(), d1.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert any(not torch.equal(a, b) for a, b in zip(g0.parameters(), g1.parameters()))


def test_generator_extra_images_share_the_generator_pass_and_stay_away_from_the_discriminator(monkeypatch):
    import sys

    from metagan_hub.training.diversity import ShotReconstruction

    targets = torch.zeros(3, 1, 16, 16, dtype=torch.float64)
    extra = ShotReconstruction(torch.randn(3, 8, generator=torch.Generator().manual_seed(5)), targets, weight=2.0)
    g_calls, d_calls = [], []
    real_models = _models

    def spy_models():
        g, d = real_models()
        g.register_forward_pre_hook(lambda module, args: g_calls.append(args[0].shape[0]))
        d.register_forward_pre_hook(lambda module, args: d_calls.append(args[0].shape[0]))
        return g, d

    monkeypatch.setattr(sys.modules[__name__], "_models", spy_models)
    g0, d0, logs0 = _one_sgd_step(GANStepConfig())
    plain_g, plain_d = list(g_calls), list(d_calls)
    g_calls.clear()
    d_calls.clear()
    g1, d1, logs1 = _one_sgd_step(GANStepConfig(generator_extra_images=extra))
    # one generator pass of 4 + 3 latents in the generator update; the discriminator sees the same batches as without
    assert plain_g == [4, 4] and g_calls == [4, 7]
    assert d_calls == plain_d
    assert "shot_reconstruction" not in logs0 and logs1["shot_reconstruction"] > 0 and extra.updates == 1
    for a, b in zip(d0.parameters(), d1.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)  # the discriminator update is unchanged
    assert any(not torch.equal(a, b) for a, b in zip(g0.parameters(), g1.parameters()))


def test_image_regularizer_sees_only_the_batch_when_extra_images_ride_along():
    # shot reconstruction with the near-copy repulsion term: the repulsion must judge the update's own samples, never
    # the shot latents' images that are meant to draw the shots
    from metagan_hub.training.diversity import ShotReconstruction

    seen = []

    def image_term(fake):
        seen.append(fake.detach().clone())
        return fake.square().mean(), {"image_term": 1.0}

    anchors = torch.randn(3, 8, generator=torch.Generator().manual_seed(5))
    extra = ShotReconstruction(anchors, torch.zeros(3, 1, 16, 16), weight=2.0)
    _, _, logs = _one_sgd_step(GANStepConfig(generator_image_regularizer=image_term, generator_extra_images=extra))
    _, _, plain_logs = _one_sgd_step(GANStepConfig(generator_image_regularizer=image_term))
    assert [x.shape[0] for x in seen] == [4, 4]
    torch.testing.assert_close(seen[0], seen[1], rtol=1e-10, atol=1e-12)  # the same 4 images with or without
    assert logs["image_term"] == plain_logs["image_term"] == 1.0 and "shot_reconstruction" in logs
