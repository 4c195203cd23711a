"""Fast CPU tests of `MetaGANDiscriminator`: shapes, spectral norm, minibatch-std, freezing, checks, save/load."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils import parametrize

from metagan_hub import MetaGANDiscriminator, MetaGANDiscriminatorOutput
from metagan_hub.models import discriminator_metagan
from tests.testing_utils import assert_outputs_close

# tiny widths per resolution: log2(sample_size) - 2 blocks, image side first
TINY_BLOCKS = {16: (8, 16), 32: (4, 8, 8), 64: (4, 4, 8, 8), 128: (4, 4, 4, 8, 8)}
ACT_FNS = ("leaky_relu", "relu", "silu", "gelu")
DTYPES = {None: torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def tiny_discriminator(sample_size: int = 16, in_channels: int = 1, **kwargs) -> MetaGANDiscriminator:
    torch.manual_seed(0)
    config = dict(sample_size=sample_size, in_channels=in_channels, block_out_channels=TINY_BLOCKS[sample_size])
    config.update(kwargs)
    return MetaGANDiscriminator(**config)


def images(n: int, channels: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def public_config(model) -> dict:
    return {k: v for k, v in model.config.items() if not k.startswith("_")}


def sn_layers(model: MetaGANDiscriminator) -> list[nn.Module]:
    layers = [model.conv_in, model.conv_out, model.fc]
    for block in model.blocks:
        layers += [block.conv1, block.conv2]
    return layers


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("sample_size", [16, 32, 64, 128])
def test_forward_shape(sample_size, in_channels):
    model = tiny_discriminator(sample_size, in_channels)
    assert model.num_blocks == len(TINY_BLOCKS[sample_size])
    x = images(3, in_channels, sample_size).requires_grad_(True)
    out = model(x)
    assert isinstance(out, MetaGANDiscriminatorOutput)
    assert out.logits.shape == (3,)
    assert out.logits.dtype == torch.float32
    assert torch.isfinite(out.logits).all()
    # gradients reach the input (R1 / gradient penalties need them)
    (grad,) = torch.autograd.grad(out.logits.sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0


@pytest.mark.parametrize("act_fn", ACT_FNS)
def test_forward_each_activation(act_fn):
    logits = tiny_discriminator(act_fn=act_fn)(images(2)).logits
    assert logits.shape == (2,) and torch.isfinite(logits).all()


def test_return_dict_false_gives_tuple():
    model = tiny_discriminator()
    x = images(2)
    out = model(x, return_dict=False)
    assert type(out) is tuple and len(out) == 1
    assert torch.equal(out[0], model(x).logits)  # the same object on the same input twice: exact


def test_default_block_out_channels_mirror_the_generator():
    model = MetaGANDiscriminator(sample_size=32)
    assert list(model.config.block_out_channels) == [32, 64, 128]


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_without_minibatch_std_a_sample_does_not_depend_on_the_batch(spectral_norm):
    model = tiny_discriminator(minibatch_std=False, spectral_norm=spectral_norm).eval()
    x = images(4)
    alone = model(x[:1]).logits  # batch size 1 works
    assert alone.shape == (1,)
    torch.testing.assert_close(model(x).logits[:1], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(model(torch.cat([x[:1], images(3, seed=1)])).logits[:1], alone, rtol=0, atol=1e-5)


def test_minibatch_std_on_adds_a_feature_that_sees_the_batch():
    on, off = tiny_discriminator(minibatch_std=True), tiny_discriminator(minibatch_std=False)
    assert on.mbstd is not None and off.mbstd is None
    assert on.conv_out.in_channels == off.conv_out.in_channels + 1
    x = images(4)
    # the same image judged alongside different companions gets a different score
    a = on(x).logits[0]
    b = on(torch.cat([x[:1], images(3, seed=1) * 0.1])).logits[0]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 6, 7, 8])
def test_minibatch_std_accepts_any_batch_size(batch_size):
    model = tiny_discriminator(minibatch_std=True, minibatch_std_group_size=4)
    logits = model(images(batch_size)).logits
    assert logits.shape == (batch_size,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("batch_size, group_size", [(4, 4), (3, 4), (2, 4), (8, 4), (5, 2), (1, 4)])
def test_num_batches_scores_stacked_batches_as_separate_calls(batch_size, group_size):
    model = tiny_discriminator(minibatch_std=True, minibatch_std_group_size=group_size).double()
    a, b = images(batch_size).double(), images(batch_size, seed=1).double()
    separate = torch.cat([model(a).logits, model(b).logits])
    torch.testing.assert_close(model(torch.cat([a, b]), num_batches=2).logits, separate, rtol=0, atol=1e-12)
    # without num_batches the minibatch-std groups mix the two batches (when a group spans them)
    if batch_size % group_size == 0 and batch_size > 1:
        assert not torch.allclose(model(torch.cat([a, b])).logits, separate, rtol=0, atol=1e-9)


@pytest.mark.parametrize("num_batches", [0, -1, 3, 2.0, True])
def test_bad_num_batches_raises(num_batches):
    model = tiny_discriminator()
    with pytest.raises(ValueError, match="num_batches"):
        model(images(4), num_batches=num_batches)


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_in_place_activations_leave_logits_and_features_bit_identical(monkeypatch, spectral_norm):
    """Without autograd the activations run in place; no logit, block feature or input feature changes."""
    model = tiny_discriminator(spectral_norm=spectral_norm).eval()
    x = images(8)
    with torch.no_grad():
        fast, fast_input = model(x, return_features=True), model.input_features(x)
        monkeypatch.setattr(discriminator_metagan, "activate", lambda act, h: act(h))
        plain, plain_input = model(x, return_features=True), model.input_features(x)
    assert torch.equal(fast.logits, plain.logits) and torch.equal(fast_input, plain_input)
    for a, b in zip(fast.features, plain.features):
        assert torch.equal(a, b)


def test_spectral_norm_on_and_off():
    off = tiny_discriminator(spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in off.modules())

    on = tiny_discriminator(spectral_norm=True)
    layers = sn_layers(on)
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    with torch.no_grad():
        for m in layers:
            m.parametrizations.weight.original.mul_(10.0)  # scaling the raw weight must not change the norm
    on.train()
    on(images(2))  # one power iteration
    with torch.no_grad():
        for m in layers:
            w = m.weight
            sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
            assert sigma == pytest.approx(1.0, abs=0.05), m


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_no_transposed_conv_or_batchnorm(spectral_norm):
    model = tiny_discriminator(32, 3, spectral_norm=spectral_norm)
    for name, module in model.named_modules():
        assert not isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d), name
        assert not isinstance(module, nn.modules.batchnorm._BatchNorm), name
        assert not isinstance(module, nn.modules.instancenorm._InstanceNorm), name


# ---------------------------------------------------------------- freezing


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_freeze_blocks_sets_requires_grad(spectral_norm):
    model = tiny_discriminator(32, spectral_norm=spectral_norm)
    assert model.num_blocks == 3

    def trainable(module):
        flags = {p.requires_grad for p in module.parameters()}
        assert len(flags) == 1
        return flags.pop()

    for n in [2, 0, 3, 1, 0]:  # any order, and 0 unfreezes everything again
        model.freeze_blocks(n)
        assert trainable(model.conv_in) is (n == 0)
        for i, block in enumerate(model.blocks):
            assert trainable(block) is (i >= n), (n, i)
        assert trainable(model.conv_out) and trainable(model.fc)

    model.freeze_blocks(1)
    model(images(2, size=32)).logits.sum().backward()
    for name, p in model.named_parameters():
        frozen = name.startswith(("conv_in.", "blocks.0."))
        assert (p.grad is None) is frozen, name


@pytest.mark.parametrize("n", [-1, 4, 100, 1.0, True, None, "1"])
def test_freeze_blocks_rejects_bad_n(n):
    model = tiny_discriminator(32)
    model.freeze_blocks(2)
    with pytest.raises(ValueError, match="3"):  # names the number of blocks
        model.freeze_blocks(n)
    # a rejected call changes nothing
    assert not any(p.requires_grad for p in model.blocks[1].parameters())
    assert all(p.requires_grad for p in model.blocks[2].parameters())


# ---------------------------------------------------------------- bad input


@pytest.fixture
def no_allocation(monkeypatch):
    """Make any layer construction fail loudly, so a check that runs after allocating is caught."""

    def boom(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} allocated before the config was checked")

    for cls in (nn.Linear, nn.Conv2d):
        monkeypatch.setattr(cls, "__init__", boom)


BAD_CONFIGS = [
    (dict(sample_size=37), "sample_size"),
    (dict(sample_size=8), "sample_size"),
    (dict(sample_size=16.0), "sample_size"),
    (dict(in_channels=0), "in_channels"),
    (dict(in_channels=2), "in_channels"),
    (dict(in_channels=1.0), "in_channels"),
    (dict(in_channels=3.0), "in_channels"),
    (dict(block_out_channels=(8, 16, 32)), "block_out_channels"),
    (dict(block_out_channels=(8,)), "block_out_channels"),
    (dict(block_out_channels=(8, 0)), "block_out_channels"),
    (dict(block_out_channels=(8.0, 16)), "block_out_channels"),
    (dict(block_out_channels=8), "block_out_channels"),
    (dict(act_fn="tanh"), "act_fn"),
    (dict(spectral_norm="yes"), "spectral_norm"),
    (dict(minibatch_std=1), "minibatch_std"),
    (dict(minibatch_std_group_size=0), "minibatch_std_group_size"),
    (dict(minibatch_std_group_size=2.0), "minibatch_std_group_size"),
]


@pytest.mark.parametrize(
    "bad, argument", BAD_CONFIGS, ids=[f"{k}={v!r}" for (c, _) in BAD_CONFIGS for k, v in c.items()]
)
def test_bad_config_raises_before_allocating(no_allocation, bad, argument):
    config = dict(sample_size=16, in_channels=1, block_out_channels=(8, 16))
    config.update(bad)
    with pytest.raises(ValueError, match=argument):
        MetaGANDiscriminator(**config)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 1, 32, 32), (2, 1, 16, 8), (1, 16, 16), (2, 1, 1, 16, 16)])
def test_wrong_input_shape_raises(shape):
    model = tiny_discriminator()
    with pytest.raises(ValueError, match="sample"):
        model(torch.zeros(shape))
    with pytest.raises(ValueError, match="sample"):
        model.block_features(torch.zeros(shape))
    with pytest.raises(ValueError, match="sample"):
        model.input_features(torch.zeros(shape))


def test_input_features_are_the_first_convolution_and_activation_and_run_no_block():
    model = tiny_discriminator().eval()
    x = images(3)
    ran = []
    hooks = [b.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, b in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            got = model.input_features(x)
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == [] and got.shape == (3, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(got, torch.nn.functional.leaky_relu(model.conv_in(x), 0.2))
        # the blocks start from them
        assert torch.equal(model.blocks[0](got), model.block_features(x, num_blocks=1)[0])


@pytest.mark.parametrize("sample_size", [16, 32])
def test_block_features_are_the_forward_features_of_the_blocks_run(sample_size):
    model = tiny_discriminator(sample_size).eval()
    x = images(4, size=sample_size)
    with torch.no_grad():
        everything = model(x, return_features=True).features
        for n in range(1, model.num_blocks + 1):
            first = model.block_features(x, num_blocks=n)
            assert len(first) == n
            for got, want in zip(first, everything):
                assert torch.equal(got, want)
        assert len(model.block_features(x)) == model.num_blocks


@pytest.mark.parametrize("num_blocks", [0, 3, -1, 1.0, True])
def test_block_features_rejects_bad_num_blocks(num_blocks):
    with pytest.raises(ValueError, match="`num_blocks` must be an integer between 1 and 2"):
        tiny_discriminator().block_features(images(2), num_blocks=num_blocks)


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("variant", [None, "fp16", "bf16"])
def test_save_load_round_trip(tmp_path, variant):
    dtype = DTYPES[variant]
    model = tiny_discriminator(32, 3, spectral_norm=True, minibatch_std_group_size=2, act_fn="gelu")
    model(images(2, 3, 32))  # advance the spectral-norm power iteration: its state must round-trip too
    model = nn.Module.to(model, dtype).eval()  # diffusers convention: cast, then save with the matching variant
    model.save_pretrained(tmp_path, variant=variant)

    weight_name = "diffusion_pytorch_model" + (f".{variant}" if variant else "") + ".safetensors"
    assert sorted(os.listdir(tmp_path)) == sorted(["config.json", weight_name])
    for root, _, files in os.walk(tmp_path):
        assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)], root
    assert {t.dtype for t in load_file(tmp_path / weight_name).values()} == {dtype}
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    assert saved["_class_name"] == "MetaGANDiscriminator"
    assert saved["spectral_norm"] is True and saved["minibatch_std_group_size"] == 2

    loaded = MetaGANDiscriminator.from_pretrained(tmp_path, variant=variant, dtype=dtype)
    assert isinstance(loaded, MetaGANDiscriminator)
    assert loaded.dtype == dtype
    assert public_config(loaded) == public_config(model)
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    assert any(k.endswith("_u") for k in original)  # spectral-norm state is part of the checkpoint
    for key in original:
        assert reloaded[key].dtype == dtype, key
        assert torch.equal(original[key], reloaded[key]), key
    # the state dict round trip is exact (above); the forward passes of the two instances agree up to kernel rounding:
    # the reloaded tensors sit at other memory alignments, for which BLAS/oneDNN may sum in another order
    x = images(4, 3, 32).to(dtype)
    with torch.no_grad():
        assert_outputs_close(loaded.eval()(x).logits, model(x).logits)


def test_round_trip_comparison_catches_a_wrong_spectral_norm_state(tmp_path):
    """The float32 tolerance of the round-trip forward comparison still sees a wrongly restored spectral-norm state.

    Two wrong states: every `u` vector one power iteration stale (as if a checkpoint kept the vectors from before the
    last training forward), and one layer's `u` re-initialized at random.
    """
    model = tiny_discriminator(32, 3, spectral_norm=True, minibatch_std_group_size=2, act_fn="gelu")
    stale = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("_u")}
    model(images(2, 3, 32))  # one power iteration: the saved `u` vectors differ from `stale`
    model.eval().save_pretrained(tmp_path)
    x = images(4, 3, 32)
    with torch.no_grad():
        expected = model(x).logits
        loaded = MetaGANDiscriminator.from_pretrained(tmp_path).eval()
        assert_outputs_close(loaded(x).logits, expected)  # restored correctly: passes

        wrong = MetaGANDiscriminator.from_pretrained(tmp_path).eval()
        wrong.load_state_dict({**wrong.state_dict(), **stale})
        with pytest.raises(AssertionError, match="not close"):
            assert_outputs_close(wrong(x).logits, expected)

        wrong = MetaGANDiscriminator.from_pretrained(tmp_path).eval()
        key = "conv_in.parametrizations.weight.0._u"
        u = torch.randn(wrong.state_dict()[key].shape, generator=torch.Generator().manual_seed(1))
        wrong.load_state_dict({**wrong.state_dict(), key: u / u.norm()})
        with pytest.raises(AssertionError, match="not close"):
            assert_outputs_close(wrong(x).logits, expected)
