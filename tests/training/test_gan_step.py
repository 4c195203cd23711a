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


def test_mode_seeking_weight_adds_the_regularizer_to_the_generator_update_only():
    def one_step(weight: float):
        g, d = _models()
        opt_g = torch.optim.SGD(g.parameters(), lr=0.1)
        opt_d = torch.optim.SGD(d.parameters(), lr=0.1)
        data = torch.Generator().manual_seed(1)
        real = torch.rand(4, 1, 16, 16, generator=data, dtype=torch.float64) * 2 - 1
        z_d, z_g = torch.randn(2, 4, 8, generator=data, dtype=torch.float64)
        ok, logs = gan_step(g, d, opt_g, opt_d, real, z_d, z_g, GANStepConfig(mode_seeking_weight=weight))
        assert ok
        return g, d, logs

    g0, d0, logs0 = one_step(0.0)
    g1, d1, logs1 = one_step(0.5)
    assert "ms_loss" not in logs0 and logs1["ms_loss"] > 0
    assert logs0["g_loss"] == logs1["g_loss"]  # the adversarial part is reported on its own
    assert all(torch.equal(a, b) for a, b in zip(d0.parameters(), d1.parameters()))  # D updates first
    assert any(not torch.equal(a, b) for a, b in zip(g0.parameters(), g1.parameters()))


@pytest.mark.parametrize("weight", [-0.1, float("nan"), True])
def test_mode_seeking_weight_must_be_non_negative(weight):
    with pytest.raises(ValueError, match="mode_seeking_weight"):
        GANStepConfig(mode_seeking_weight=weight)
