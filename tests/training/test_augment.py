# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
import pytest
import torch

from metagan_hub.training.augment import AUGMENT_POLICIES, SHOT_AFFINE_RANGES, DiffAugment, random_affine


def _images(n: int = 4, c: int = 1, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # [N, C, H, W]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_unknown_policy_raises_naming_argument_value_and_allowed():
    with pytest.raises(ValueError, match="policies") as err:
        DiffAugment(("translation", "blur"))
    assert "'blur'" in str(err.value)
    for name in AUGMENT_POLICIES:
        assert name in str(err.value)


@pytest.mark.parametrize("kwargs", [{"translation_ratio": 1.0}, {"translation_ratio": -0.1}, {"cutout_ratio": 1.5}])
def test_bad_ratio_raises(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DiffAugment(**kwargs)


@pytest.mark.parametrize("policies", [(), None, []])
def test_empty_policies_is_identity(policies):
    x = _images()
    assert DiffAugment(policies)(x, generator=_gen()) is x


def test_comma_separated_string_and_order_do_not_matter():
    x = _images(c=3)
    a = DiffAugment("color, cutout")(x, generator=_gen(1))
    b = DiffAugment(("cutout", "color"))(x, generator=_gen(1))
    assert torch.equal(a, b)


def test_rejects_non_4d_input():
    with pytest.raises(ValueError, match="x"):
        DiffAugment()(torch.zeros(1, 8, 8))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("policy", [*AUGMENT_POLICIES, "all"])
def test_changes_images_keeps_shape_and_dtype(policy, channels):
    policies = AUGMENT_POLICIES if policy == "all" else (policy,)
    x = _images(n=8, c=channels)
    out = DiffAugment(policies)(x, generator=_gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("policy", [*AUGMENT_POLICIES, "all"])
def test_same_seed_identical_different_seed_different(policy):
    policies = AUGMENT_POLICIES if policy == "all" else (policy,)
    augment = DiffAugment(policies)
    x = _images(n=8, c=3)
    assert torch.equal(augment(x, generator=_gen(3)), augment(x, generator=_gen(3)))
    assert not torch.equal(augment(x, generator=_gen(3)), augment(x, generator=_gen(4)))


def test_global_rng_when_no_generator():
    torch.manual_seed(0)
    a = DiffAugment()(_images())
    torch.manual_seed(0)
    b = DiffAugment()(_images())
    assert torch.equal(a, b)


@pytest.mark.parametrize("policy", [*AUGMENT_POLICIES, "all"])
def test_differentiable_gradcheck(policy):
    policies = AUGMENT_POLICIES if policy == "all" else (policy,)
    augment = DiffAugment(policies)
    x = _images(n=2, c=3, h=4, w=4).double().requires_grad_(True)
    # the same random parameters at every evaluation, so the map is a fixed (piecewise) linear function of x
    assert torch.autograd.gradcheck(lambda t: augment(t, generator=_gen(5)), (x,))
    augment(x, generator=_gen(5)).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """Reference: x shifted by (dy, dx) pixels, uncovered border set to `fill`. x is [C, H, W]."""
    c, h, w = x.shape
    out = torch.full_like(x, fill)
    src = x[:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[:, max(0, dy) : max(0, dy) + src.shape[1], max(0, dx) : max(0, dx) + src.shape[2]] = src
    return out


@pytest.mark.parametrize("fill", [0.0, -1.0])
def test_translation_is_an_integer_shift_with_fill(fill):
    x = torch.arange(16 * 2 * 8 * 8, dtype=torch.float32).view(16, 2, 8, 8) + 10  # distinct values, none == fill
    out = DiffAugment(("translation",), translation_ratio=0.25, fill_value=fill)(x, generator=_gen(2))
    assert out.shape == x.shape
    seen = set()
    for i in range(x.shape[0]):
        matches = [
            (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(out[i], _shift(x[i], dy, dx, fill))
        ]
        assert len(matches) == 1, f"sample {i} is not a shift by at most 2 pixels"
        seen.add(matches[0])
    assert len(seen) > 1  # shifts are drawn per image


@pytest.mark.parametrize("fill", [0.0, -1.0])
def test_cutout_fills_one_clipped_square(fill):
    x = torch.full((32, 3, 8, 8), 0.5)
    out = DiffAugment(("cutout",), cutout_ratio=0.5, fill_value=fill)(x, generator=_gen(0))
    areas = set()
    for i in range(x.shape[0]):
        cut = out[i] == fill  # [C, H, W]
        assert torch.equal(cut, cut[:1].expand_as(cut))  # same region in every channel
        assert torch.equal(out[i][~cut], x[i][~cut])  # everything else untouched
        rows, cols = cut[0].any(dim=1).nonzero().flatten(), cut[0].any(dim=0).nonzero().flatten()
        assert rows.numel() > 0, "cutout must fill a region"
        assert 1 <= rows.numel() <= 4 and 1 <= cols.numel() <= 4
        # the region is a rectangle of contiguous rows and columns
        assert rows.max() - rows.min() + 1 == rows.numel() and cols.max() - cols.min() + 1 == cols.numel()
        assert cut[0].sum() == rows.numel() * cols.numel()
        areas.add(int(cut[0].sum()))
    assert 16 in areas  # a full 4x4 square when it lies inside the image


def test_color_on_grayscale_is_per_image_affine():
    # brightness + contrast only (saturation is a no-op for one channel): out - mean(out) = k * (x - mean(x))
    x = _images(n=8, c=1)
    out = DiffAugment(("color",))(x, generator=_gen(0))
    xc = x - x.mean(dim=(1, 2, 3), keepdim=True)
    oc = out - out.mean(dim=(1, 2, 3), keepdim=True)
    k = (oc * xc).sum(dim=(1, 2, 3)) / xc.square().sum(dim=(1, 2, 3))  # [N]
    torch.testing.assert_close(oc, k.view(-1, 1, 1, 1) * xc, atol=1e-5, rtol=1e-5)
    assert ((k >= 0.5 - 1e-5) & (k <= 1.5 + 1e-5)).all()


def test_color_saturation_changes_channel_differences_on_rgb():
    x = _images(n=8, c=3)
    out = DiffAugment(("color",))(x, generator=_gen(0))
    assert not torch.allclose(out[:, 0] - out[:, 1], x[:, 0] - x[:, 1], atol=1e-3)


def test_bfloat16_input():
    x = _images(c=3).bfloat16()
    out = DiffAugment()(x, generator=_gen(0))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


# ------------------------------------------------------------------------------------------- random_affine (shots)


def _dot(size: int = 32) -> torch.Tensor:
    x = -torch.ones(64, 1, size, size)
    x[:, :, size // 2 - 1 : size // 2 + 1, size // 2 - 1 : size // 2 + 1] = 1.0  # a 2x2 bright dot at the centre
    return x  # [64, 1, 32, 32]


def _centroid(x: torch.Tensor) -> torch.Tensor:
    w = (x + 1).clamp(min=0)[:, 0]  # [N, H, W]
    rows = torch.arange(x.shape[-2], dtype=x.dtype).view(1, -1, 1)
    cols = torch.arange(x.shape[-1], dtype=x.dtype).view(1, 1, -1)
    total = w.sum(dim=(1, 2))
    return torch.stack([(w * rows).sum(dim=(1, 2)) / total, (w * cols).sum(dim=(1, 2)) / total], 1)  # [N, 2]


def test_random_affine_is_seeded_and_zero_strength_is_the_identity():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert random_affine(x, 0.0) is x
    a = random_affine(x, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, random_affine(x, 1.0, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, random_affine(x, 1.0, torch.Generator().manual_seed(4)))
    assert a.shape == x.shape and a.dtype == x.dtype
    # a constant image stays constant (border pixels repeat, bilinear weights sum to 1)
    flat = torch.full((2, 1, 16, 16), 0.25)
    assert torch.allclose(random_affine(flat, 3.0, torch.Generator().manual_seed(0)), flat)


def test_random_affine_moves_a_dot_within_the_documented_shift():
    size = 32
    dot = _dot(size)
    moved = _centroid(random_affine(dot, 1.0, torch.Generator().manual_seed(0))) - _centroid(dot)  # [N, 2] in pixels
    # the centre moves only by the shift: up to `translation` of the image size (half a grid step of slack)
    limit = SHOT_AFFINE_RANGES["translation"] * size + 0.5
    assert moved.abs().max() <= limit
    assert moved.abs().max() > limit / 2  # and it does move: 64 draws reach at least half the range
    # stronger is further
    stronger = _centroid(random_affine(dot, 2.0, torch.Generator().manual_seed(0))) - _centroid(dot)
    assert stronger.abs().mean() > moved.abs().mean()


@pytest.mark.parametrize("strength", [-0.1, float("nan"), float("inf"), True, "1"])
def test_random_affine_rejects_bad_strength(strength):
    with pytest.raises(ValueError, match="`strength`"):
        random_affine(torch.zeros(1, 1, 8, 8), strength)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        random_affine(torch.zeros(8, 8), 1.0)
