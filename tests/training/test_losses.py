# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
import pytest
import torch
import torch.nn.functional as F

from metagan_hub.training.augment import DiffAugment
from metagan_hub.training.losses import (
    LOSS_TYPES,
    WGAN_DRIFT,
    coverage_loss,
    discriminator_loss,
    generator_loss,
    mode_seeking_loss,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 4, c: int = 1, size: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=_gen(seed)) * 2 - 1  # [N, C, H, W]


class LinearD(torch.nn.Module):
    """D(x) = <w, x> + b: its input gradient is w for every image, so penalties are known in closed form."""

    def __init__(self, dim: int, seed: int = 0):
        super().__init__()
        g = _gen(seed)
        self.w = torch.nn.Parameter(torch.randn(dim, generator=g) * 0.5)
        self.b = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b  # [N]


class QuadraticD(torch.nn.Module):
    """D(x) = a/2 * ||x||^2: its input gradient is a * x."""

    def __init__(self, a: float = 0.7):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.a * x.flatten(1).square().sum(dim=1)  # [N]


class ConvD(torch.nn.Module):
    def __init__(self, channels: int = 3, size: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(channels, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * (size // 2) ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(F.leaky_relu(self.conv(x), 0.2), 2)  # [N, 8, H/2, W/2]
        return self.fc(h.flatten(1)).squeeze(1)  # [N]


# ---------------------------------------------------------------- argument checks
def test_unknown_loss_type_raises_naming_argument():
    d = LinearD(16)
    x = _images()
    with pytest.raises(ValueError, match="loss_type") as err:
        discriminator_loss("lsgan", d, x, x)
    assert "'lsgan'" in str(err.value) and "wgan-gp" in str(err.value)
    with pytest.raises(ValueError, match="loss_type"):
        generator_loss("lsgan", d, x)


def test_bad_arguments_raise():
    d = LinearD(16)
    x = _images()
    with pytest.raises(ValueError, match="r1_gamma"):
        discriminator_loss("nonsaturating", d, x, x, r1_gamma=-1.0)
    with pytest.raises(ValueError, match="gp_lambda"):
        discriminator_loss("wgan-gp", d, x, x, gp_lambda=-1.0)
    with pytest.raises(ValueError, match="batch size"):
        discriminator_loss("wgan-gp", d, x, x[:2])
    with pytest.raises(ValueError, match="discriminator"):
        discriminator_loss("hinge", lambda t: t.flatten(1), x, x)


# ---------------------------------------------------------------- hand-computed values
@pytest.mark.parametrize("r1_gamma", [0.0, 2.0])
def test_nonsaturating_matches_hand_computed(r1_gamma):
    real, fake = _images(seed=1), _images(seed=2)
    d = LinearD(16)
    w, b = d.w.detach(), d.b.detach()
    dr, df = real.flatten(1) @ w + b, fake.flatten(1) @ w + b
    r1 = r1_gamma / 2 * w.square().sum()  # ||grad_x D|| = ||w|| for every image
    expected = torch.log1p(torch.exp(-dr)).mean() + torch.log1p(torch.exp(df)).mean() + r1

    loss, logs = discriminator_loss("nonsaturating", d, real, fake, r1_gamma=r1_gamma)
    torch.testing.assert_close(loss, expected)
    assert logs["r1"] == pytest.approx(float(r1), abs=1e-6)
    assert logs["d_real"] == pytest.approx(float(dr.mean()), abs=1e-6)
    assert logs["d_fake"] == pytest.approx(float(df.mean()), abs=1e-6)
    assert logs["d_loss"] == pytest.approx(float(expected), abs=1e-6)

    # the R1 term trains D: d/dw [gamma/2 ||w||^2] = gamma * w (create_graph=True)
    loss.backward()
    grad_w = (-torch.sigmoid(-dr)[:, None] * real.flatten(1)).mean(0) + (
        torch.sigmoid(df)[:, None] * fake.flatten(1)
    ).mean(0)
    torch.testing.assert_close(d.w.grad, grad_w + r1_gamma * w)


@pytest.mark.parametrize("r1_gamma", [0.0, 0.5])
def test_hinge_matches_hand_computed(r1_gamma):
    real, fake = _images(seed=1), _images(seed=2)
    d = LinearD(16)
    w, b = d.w.detach(), d.b.detach()
    dr, df = real.flatten(1) @ w + b, fake.flatten(1) @ w + b
    expected = (1 - dr).clamp(min=0).mean() + (1 + df).clamp(min=0).mean() + r1_gamma / 2 * w.square().sum()
    loss, logs = discriminator_loss("hinge", d, real, fake, r1_gamma=r1_gamma)
    torch.testing.assert_close(loss, expected)
    assert set(logs) == {"d_loss", "d_real", "d_fake", "r1"}
    assert all(isinstance(v, float) for v in logs.values())


@pytest.mark.parametrize("wgan_drift", [WGAN_DRIFT, 0.0])
def test_wgan_gp_matches_hand_computed(wgan_drift):
    real, fake = _images(seed=1), _images(seed=2)
    d = LinearD(16)
    w, b = d.w.detach(), d.b.detach()
    dr, df = real.flatten(1) @ w + b, fake.flatten(1) @ w + b
    norm = w.square().sum().sqrt()  # ||grad D(x_hat)|| = ||w|| wherever x_hat lies
    expected = df.mean() - dr.mean() + 10.0 * (norm - 1) ** 2 + wgan_drift * dr.square().mean()

    loss, logs = discriminator_loss(
        "wgan-gp", d, real, fake, gp_lambda=10.0, generator=_gen(), wgan_drift=wgan_drift, r1_gamma=5.0
    )
    torch.testing.assert_close(loss, expected)
    assert set(logs) == {"d_loss", "d_real", "d_fake", "gp"}
    assert logs["gp"] == pytest.approx(float(10.0 * (norm - 1) ** 2), rel=1e-5)

    # the penalty trains D: d/dw [lambda (||w|| - 1)^2] = 2 lambda (||w|| - 1) w / ||w||
    loss.backward()
    grad_w = (
        fake.flatten(1).mean(0)
        - real.flatten(1).mean(0)
        + 2 * 10.0 * (norm - 1) * w / norm
        + wgan_drift * 2 * (dr[:, None] * real.flatten(1)).mean(0)
    )
    torch.testing.assert_close(d.w.grad, grad_w)


def test_wgan_gp_quadratic_critic():
    # real == fake, so the interpolate is x itself whatever the weights: ||grad|| = a * ||x||
    x = _images(n=3, seed=4)
    d = QuadraticD(a=0.7)
    dx = 0.35 * x.flatten(1).square().sum(1)
    gp = 10.0 * (0.7 * x.flatten(1).norm(dim=1) - 1).square().mean()
    expected = WGAN_DRIFT * dx.square().mean() + gp
    loss, logs = discriminator_loss("wgan-gp", d, x, x, generator=_gen())
    torch.testing.assert_close(loss, expected)
    assert logs["gp"] == pytest.approx(float(gp), rel=1e-5)


def test_r1_is_taken_on_the_augmented_real_images():
    real, fake = _images(n=4, c=3, size=8, seed=1), _images(n=4, c=3, size=8, seed=2)
    d = QuadraticD(a=0.7)
    augment = DiffAugment()
    aug_real = augment(real, generator=_gen(7))  # real is augmented first, from the same stream
    r1 = 3.0 / 2 * (0.7**2 * aug_real.flatten(1).square().sum(1)).mean()
    _, logs = discriminator_loss("nonsaturating", d, real, fake, r1_gamma=3.0, augment=augment, generator=_gen(7))
    assert logs["r1"] == pytest.approx(float(r1), rel=1e-5)
    assert logs["d_real"] == pytest.approx(float(0.35 * aug_real.flatten(1).square().sum(1).mean()), rel=1e-5)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_generator_loss_matches_hand_computed_and_reaches_fake(loss_type):
    d = LinearD(16)
    fake = _images(seed=3).requires_grad_(True)
    df = fake.detach().flatten(1) @ d.w.detach() + d.b.detach()
    expected = torch.log1p(torch.exp(-df)).mean() if loss_type == "nonsaturating" else -df.mean()
    loss, logs = generator_loss(loss_type, d, fake)
    torch.testing.assert_close(loss, expected)
    assert logs == {"g_loss": pytest.approx(float(expected), abs=1e-6)}
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


# ---------------------------------------------------------------- behaviour
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_fake_is_detached_in_discriminator_loss(loss_type):
    d = ConvD(channels=1)
    real = _images(c=1, size=8)
    fake = _images(c=1, size=8, seed=1).requires_grad_(True)
    loss, _ = discriminator_loss(loss_type, d, real, fake, r1_gamma=1.0, augment=DiffAugment(), generator=_gen())
    loss.backward()
    assert fake.grad is None
    assert all(p.grad is not None for p in d.parameters())


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_deterministic_given_generator(loss_type):
    d = ConvD()
    real, fake = _images(c=3, size=8, seed=1), _images(c=3, size=8, seed=2)

    def run(seed):
        loss, logs = discriminator_loss(
            loss_type, d, real, fake, r1_gamma=1.0, augment=DiffAugment(), generator=_gen(seed)
        )
        g_loss, _ = generator_loss(loss_type, d, fake, augment=DiffAugment(), generator=_gen(seed))
        return loss, logs, g_loss

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and torch.equal(a[2], b[2])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[2], c[2])


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_bf16_autocast_close_to_fp32(loss_type):
    d = ConvD()
    real, fake = _images(c=3, size=8, seed=1), _images(c=3, size=8, seed=2)
    kwargs = {"r1_gamma": 1.0, "augment": DiffAugment(), "generator": None}

    ref, ref_logs = discriminator_loss(loss_type, d, real, fake, **{**kwargs, "generator": _gen()})
    ref_g, _ = generator_loss(loss_type, d, fake, augment=DiffAugment(), generator=_gen())
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss, logs = discriminator_loss(loss_type, d, real, fake, **{**kwargs, "generator": _gen()})
        g_loss, _ = generator_loss(loss_type, d, fake, augment=DiffAugment(), generator=_gen())
    assert loss.dtype == torch.float32 and g_loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(g_loss)
    torch.testing.assert_close(loss, ref, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(g_loss, ref_g, rtol=1e-2, atol=1e-3)
    penalty = "gp" if loss_type == "wgan-gp" else "r1"
    assert ref_logs[penalty] > 0
    assert logs[penalty] == pytest.approx(ref_logs[penalty], rel=5e-2, abs=1e-4)
    loss.backward()  # the penalty's double backward works in bf16
    assert all(torch.isfinite(p.grad).all() for p in d.parameters())


def test_penalties_under_no_grad_report_values():
    d = LinearD(16)
    real, fake = _images(seed=1), _images(seed=2)
    ref, ref_logs = discriminator_loss("nonsaturating", d, real, fake, r1_gamma=2.0)
    with torch.no_grad():
        loss, logs = discriminator_loss("nonsaturating", d, real, fake, r1_gamma=2.0)
        gp_loss, gp_logs = discriminator_loss("wgan-gp", d, real, fake, generator=_gen())
    assert not loss.requires_grad and not gp_loss.requires_grad
    torch.testing.assert_close(loss, ref.detach())
    assert logs == ref_logs and gp_logs["gp"] > 0


class GroupedD(torch.nn.Module):
    """A discriminator whose score depends on the batch (like minibatch-std) and that takes `num_batches`."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.8))
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor, num_batches: int = 1) -> torch.Tensor:
        self.calls.append(x.shape[0])
        y = x.flatten(1).view(num_batches, -1, x[0].numel())  # [B, N, D]
        return (self.w * y.mean(dim=2) + y.std(dim=(1, 2), keepdim=True).squeeze(2)).flatten()  # [B * N]


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_joint_forward_matches_two_calls_in_one_call(loss_type):
    real, fake = _images(4, seed=1), _images(4, seed=2)
    kwargs = dict(augment=DiffAugment(), r1_gamma=0.0)
    two = GroupedD()
    ref, ref_logs = discriminator_loss(loss_type, two, real, fake, generator=_gen(), **kwargs)
    one = GroupedD()
    loss, logs = discriminator_loss(loss_type, one, real, fake, generator=_gen(), joint_forward=True, **kwargs)
    torch.testing.assert_close(loss, ref)
    assert logs == pytest.approx(ref_logs)
    assert two.calls[:2] == [4, 4] and one.calls[0] == 8  # (wgan-gp adds one call on the interpolates)
    ref.backward()
    loss.backward()
    torch.testing.assert_close(one.w.grad, two.w.grad)


def test_joint_forward_falls_back_to_two_calls_for_r1_and_unequal_batches():
    d = GroupedD()
    discriminator_loss("nonsaturating", d, _images(4), _images(4, seed=1), r1_gamma=1.0, joint_forward=True)
    assert d.calls == [4, 4]
    d = GroupedD()
    discriminator_loss("nonsaturating", d, _images(4), _images(2, seed=1), joint_forward=True)
    assert d.calls == [4, 2]


# ---------------------------------------------------------------------------------------------------- mode seeking


def test_mode_seeking_loss_is_the_inverse_distance_ratio_of_paired_halves():
    fake = torch.tensor([0.0, 1.0, 0.5, -1.0, 9.0]).view(5, 1, 1, 1)  # pairs (0, 2) and (1, 3); the 5th is left out
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [1.0, 3.0], [7.0, 7.0]])
    loss, logs = mode_seeking_loss(fake, z)
    image_distance = (0.5 + 2.0) / 2
    latent_distance = (2.0 + 0.0 + 0.0 + 2.0) / 4
    expected = 1.0 / (image_distance / latent_distance + 1e-5)
    assert loss.item() == pytest.approx(expected) and logs["ms_loss"] == pytest.approx(expected)


def test_mode_seeking_gradient_pushes_paired_images_apart():
    fake = (torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.1).requires_grad_(True)
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    before = (fake[:3] - fake[3:]).abs().mean().item()
    loss, _ = mode_seeking_loss(fake, z)
    loss.backward()
    with torch.no_grad():
        moved = fake - 0.01 * fake.grad
    assert (moved[:3] - moved[3:]).abs().mean().item() > before


def test_mode_seeking_loss_needs_pairs():
    with pytest.raises(ValueError, match="at least 2 images"):
        mode_seeking_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 8))
    with pytest.raises(ValueError, match="one latent per image"):
        mode_seeking_loss(torch.zeros(4, 1, 4, 4), torch.zeros(3, 8))


def test_generator_loss_adds_the_weighted_mode_seeking_term():
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1), torch.nn.Flatten(0))
    fake = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    plain, plain_logs = generator_loss("nonsaturating", d, fake)
    both, logs = generator_loss("nonsaturating", d, fake, latents=z, mode_seeking_weight=0.5)
    ms, _ = mode_seeking_loss(fake, z)
    torch.testing.assert_close(both, plain + 0.5 * ms)
    assert logs["g_loss"] == plain_logs["g_loss"] and logs["ms_loss"] == pytest.approx(ms.item())
    with pytest.raises(ValueError, match="needs the `latents`"):
        generator_loss("nonsaturating", d, fake, mode_seeking_weight=0.5)


def test_pairwise_similarity_consistency_loss_zero_when_equal_positive_after_collapse_and_source_detached():
    from metagan_hub.training.losses import pairwise_similarity_consistency_loss

    torch.manual_seed(0)
    source = [torch.randn(6, 4, 3, 3), torch.randn(6, 10)]
    assert float(pairwise_similarity_consistency_loss(source, [s.clone() for s in source])) == pytest.approx(
        0, abs=1e-7
    )
    src = torch.randn(6, 10, requires_grad=True)
    adapted = torch.randn(6, 10, requires_grad=True)
    loss = pairwise_similarity_consistency_loss(src, 0.05 * adapted + src[:1].detach())  # samples collapse together
    assert loss > 0
    loss.backward()
    assert src.grad is None  # the source side is detached
    assert adapted.grad is not None and adapted.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("src", "ada", "kwargs", "match"),
    [
        (torch.randn(2, 4), torch.randn(2, 4), {}, "at least 3"),
        (torch.randn(4, 4), torch.randn(4, 5), {}, "same shape"),
        ([torch.randn(4, 4)], [], {}, "same number"),
        (torch.randn(4, 4), torch.randn(4, 4), {"temperature": 0.0}, "temperature"),
        (torch.randn(4, 4), torch.randn(4, 4), {"temperature": float("nan")}, "temperature"),
    ],
)
def test_pairwise_similarity_consistency_loss_bad_input(src, ada, kwargs, match):
    from metagan_hub.training.losses import pairwise_similarity_consistency_loss

    with pytest.raises(ValueError, match=match):
        pairwise_similarity_consistency_loss(src, ada, **kwargs)


def test_coverage_loss_is_the_mean_nearest_sample_distance_of_each_target():
    gen = torch.Generator().manual_seed(0)
    fake = torch.rand(5, 1, 4, 4, generator=gen, requires_grad=True)
    targets = torch.rand(3, 1, 4, 4, generator=gen)
    loss, logs = coverage_loss(fake, targets)
    expected = torch.stack([((fake - t) ** 2).mean(dim=(1, 2, 3)).min() for t in targets]).mean()
    torch.testing.assert_close(loss, expected)
    assert logs["coverage_loss"] == pytest.approx(expected.item())
    # zero when every target is a sample; only the nearest samples get a gradient
    assert coverage_loss(torch.cat([targets, fake.detach()]), targets)[0].item() == pytest.approx(0.0, abs=1e-6)
    (grad,) = torch.autograd.grad(loss, fake)
    chosen = {int(((fake - t) ** 2).mean(dim=(1, 2, 3)).argmin()) for t in targets}
    assert {i for i in range(5) if grad[i].abs().sum() > 0} == chosen


def test_coverage_loss_in_feature_space_uses_unit_feature_vectors_and_no_target_gradient():
    gen = torch.Generator().manual_seed(1)
    proj = torch.randn(16, 6, generator=gen)

    def features(x):
        return x.flatten(1) @ proj  # [B, 6]

    fake = torch.rand(5, 1, 4, 4, generator=gen, requires_grad=True)
    targets = torch.rand(3, 1, 4, 4, generator=gen, requires_grad=True)
    loss, logs = coverage_loss(fake, targets, features=features)
    f = torch.nn.functional.normalize(features(fake), dim=1)
    t = torch.nn.functional.normalize(features(targets), dim=1)
    expected = torch.stack([((f - row) ** 2).sum(dim=1).min() for row in t]).mean()
    torch.testing.assert_close(loss, expected)
    assert logs["coverage_loss"] == pytest.approx(expected.item(), rel=1e-5)
    fake_grad, target_grad = torch.autograd.grad(loss, [fake, targets], allow_unused=True)
    assert target_grad is None and fake_grad.abs().sum() > 0
    # near in features, far in pixels: a brighter copy of each target has the same direction of features
    brighter = (targets.detach() * 3.0).requires_grad_()
    assert coverage_loss(brighter, targets.detach(), features=features)[0].item() == pytest.approx(0.0, abs=1e-5)
    assert coverage_loss(brighter, targets.detach())[0].item() > 0.1


def test_coverage_loss_rejects_mismatched_or_empty_batches():
    with pytest.raises(ValueError, match="same"):
        coverage_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="at least one"):
        coverage_loss(torch.zeros(0, 1, 4, 4), torch.zeros(2, 1, 4, 4))
