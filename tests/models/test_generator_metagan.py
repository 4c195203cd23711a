"""Fast CPU tests of `MetaGANGenerator`: shapes, value range, batch independence, config checks, save/load."""

import json
import os
from types import SimpleNamespace

import pytest
import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file
from torch import nn

from metagan_hub import MetaGANGenerator, MetaGANGeneratorOutput
from metagan_hub.models import generator_metagan, layers
from metagan_hub.models.generator_metagan import FUSED_UPSAMPLING_MIN_BATCH
from metagan_hub.models.layers import activate, make_activation
from tests.testing_utils import assert_outputs_close

LATENT_DIM = 8
# tiny widths per resolution: log2(sample_size) - 2 blocks
TINY_BLOCKS = {16: (16, 8), 32: (8, 8, 8), 64: (8, 8, 4, 4), 128: (8, 4, 4, 4, 4)}
NORM_TYPES = ("group", "pixel", "layer", "none")
ACT_FNS = ("leaky_relu", "relu", "silu", "gelu")
DTYPES = {None: torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def tiny_generator(sample_size: int = 16, out_channels: int = 1, **kwargs) -> MetaGANGenerator:
    torch.manual_seed(0)
    config = dict(latent_dim=LATENT_DIM, sample_size=sample_size, out_channels=out_channels)
    config["block_out_channels"] = TINY_BLOCKS[sample_size]
    config.update(kwargs)
    return MetaGANGenerator(**config)


def public_config(model) -> dict:
    return {k: v for k, v in model.config.items() if not k.startswith("_")}


def latents(n: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(n, LATENT_DIM, generator=torch.Generator().manual_seed(seed)) * scale


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("out_channels", [1, 3])
@pytest.mark.parametrize("sample_size", [16, 32, 64, 128])
def test_forward_shape_and_range(sample_size, out_channels):
    model = tiny_generator(sample_size, out_channels)
    # large latents push activations into tanh saturation: the range must still hold
    out = model(latents(3, scale=10.0))
    assert isinstance(out, MetaGANGeneratorOutput)
    sample = out.sample
    assert sample.shape == (3, out_channels, sample_size, sample_size)
    assert sample.dtype == torch.float32
    assert torch.isfinite(sample).all()
    assert sample.min() >= -1.0 and sample.max() <= 1.0
    assert sample.std() > 0  # not a constant image


@pytest.mark.parametrize("act_fn", ACT_FNS)
def test_forward_each_activation(act_fn):
    model = tiny_generator(act_fn=act_fn)
    sample = model(latents(2)).sample
    assert sample.shape == (2, 1, 16, 16)
    assert sample.abs().max() <= 1.0


def test_return_dict_false_gives_tuple():
    model = tiny_generator()
    z = latents(2)
    out = model(z, return_dict=False)
    assert type(out) is tuple and len(out) == 1
    assert torch.equal(out[0], model(z).sample)  # the same object on the same input twice: exact


def test_default_block_out_channels_halve_to_32():
    model = MetaGANGenerator(latent_dim=LATENT_DIM, sample_size=32)
    assert list(model.config.block_out_channels) == [128, 64, 32]
    assert len(model.blocks) == 3


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_sample_does_not_depend_on_rest_of_batch(norm_type):
    model = tiny_generator(norm_type=norm_type)
    model.train()  # the stricter mode: BatchNorm would use batch statistics here
    z = latents(4)
    alone = model(z[:1]).sample  # batch size 1 works
    assert alone.shape == (1, 1, 16, 16)
    in_batch = model(z).sample[:1]
    with_others = model(torch.cat([z[:1], latents(5, seed=1)])).sample[:1]
    torch.testing.assert_close(in_batch, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(with_others, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_no_transposed_conv_or_batchnorm(norm_type):
    model = tiny_generator(32, 3, norm_type=norm_type)
    for name, module in model.named_modules():
        assert not isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d), name
        assert not isinstance(module, nn.modules.batchnorm._BatchNorm), name
        assert not isinstance(module, nn.modules.instancenorm._InstanceNorm), name
        # every weight matrix lives in a layer LoRA can target
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim >= 2:
            assert isinstance(module, nn.Linear | nn.Conv2d), name


@pytest.mark.parametrize("sample_size, out_channels", [(16, 1), (32, 3)])
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_fused_upsampling_gives_the_same_images_and_gradients(sample_size, out_channels, norm_type):
    torch.manual_seed(0)
    model = tiny_generator(sample_size, out_channels, norm_type=norm_type).double()
    z = latents(5).double()
    plain = model(z).sample
    plain_grads = torch.autograd.grad(plain.square().sum(), list(model.parameters()))
    assert model.fused_upsampling is None  # auto: with autograd on, the plain path
    model.enable_fused_upsampling()
    assert model.fused_upsampling is True and all(block.fused_upsampling for block in model.blocks)
    fused = model(z).sample
    fused_grads = torch.autograd.grad(fused.square().sum(), list(model.parameters()))
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-12)
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    model.enable_fused_upsampling(False)
    assert model.fused_upsampling is False


def _fresh_images(model: MetaGANGenerator, z: torch.Tensor) -> torch.Tensor:
    """The fused path's images with every kept kernel dropped: what the weights give now."""
    for block in model.blocks:
        block._fused_kernel_cache = None
    with torch.no_grad():
        return model(z).sample


@pytest.mark.parametrize("out_channels", [1, 3])
def test_one_channel_output_convolution_as_shifted_sums(monkeypatch, out_channels):
    calls = []
    original = generator_metagan.conv3x3_to_one_channel
    monkeypatch.setattr(generator_metagan, "conv3x3_to_one_channel", lambda *a: calls.append(1) or original(*a))
    torch.manual_seed(0)
    model = tiny_generator(16, out_channels).double()
    n = FUSED_UPSAMPLING_MIN_BATCH
    z = latents(n).double()
    with torch.no_grad():
        fast = model(z).sample  # auto: CPU inference of a large batch
        taken = len(calls)
        model(z[: n - 1])  # too small a batch: the plain convolution
        assert len(calls) == taken
        model.enable_fused_upsampling(False)
        plain = model(z).sample
    assert len(calls) == taken == (1 if out_channels == 1 else 0)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)
    conv = nn.Conv2d(8, 1, 3, padding=1)
    x = torch.randn(4, 8, 8, 8).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(original(x, conv), conv(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_shifted_sums_add_the_taps_in_the_order_of_a_padded_convolution(memory_format):
    # the unpadded form adds each tap where it reaches, in tap order: bit for bit what summing the 9 shifted partial
    # sums of a zero-padded input gives (the form earlier releases computed), also on a non-square map
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 1, 3, padding=1)
    x = torch.randn(5, 8, 6, 9).contiguous(memory_format=memory_format)
    taps = conv.weight[0].permute(1, 2, 0).reshape(9, -1, 1, 1)
    with torch.no_grad():
        partial = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1)), taps)  # [N, 9, H + 2, W + 2]
        padded = conv.bias.view(1, 1, 1, 1) + partial[:, 0:1, :6, :9]
        for k in range(1, 9):
            padded = padded + partial[:, k : k + 1, k // 3 : k // 3 + 6, k % 3 : k % 3 + 9]
        out = generator_metagan.conv3x3_to_one_channel(x, conv)
        assert out.shape == (5, 1, 6, 9) and out.is_contiguous()
        assert torch.equal(out, padded)
        torch.testing.assert_close(out, conv(x), rtol=0, atol=1e-5)


def test_fused_kernel_is_kept_between_calls_and_follows_the_weights(monkeypatch):
    builds = []
    original = generator_metagan.fused_upsampling_kernel
    monkeypatch.setattr(generator_metagan, "fused_upsampling_kernel", lambda w: builds.append(1) or original(w))
    torch.manual_seed(0)
    model = tiny_generator(16)
    model.enable_fused_upsampling()
    z = latents(4)
    with torch.no_grad():
        first = model(z).sample
        assert len(builds) == len(model.blocks)
        assert torch.equal(model(z).sample, first)  # the kept kernel: bit-identical, not built again
    with torch.inference_mode():
        assert torch.equal(model(z).sample, first)
    assert len(builds) == len(model.blocks)
    # with autograd the kernel is built in the graph every call, and gradients reach conv1
    out = model(z).sample
    assert len(builds) == 2 * len(model.blocks)
    assert torch.autograd.grad(out.sum(), model.blocks[0].conv1.weight)[0].abs().sum() > 0

    def changed(change) -> None:
        before = _fresh_images(model, z)  # keeps fresh kernels of the current weights
        change()
        with torch.no_grad():
            after = model(z).sample
        assert not torch.equal(after, before)
        assert torch.equal(after, _fresh_images(model, z))

    conv = model.blocks[0].conv1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def optimizer_step():
        optimizer.zero_grad()
        model(z).sample.square().sum().backward()
        optimizer.step()

    changed(optimizer_step)  # in place
    changed(lambda: model.load_state_dict({k: v + 0.01 for k, v in model.state_dict().items()}))
    changed(lambda: setattr(conv.weight, "data", conv.weight.data * 1.5))  # new storage, version not bumped

    def same_address_new_values():  # in place without autograd, the storage and address unchanged
        with torch.no_grad():
            conv.weight.mul_(0.5)

    changed(same_address_new_values)

    def through_data():  # `.data` writes do not bump the version counter
        conv.weight.data.copy_(conv.weight.data * 0.9)

    changed(through_data)
    ema = EMAModel(list(model.parameters()), decay=0.5, foreach=False)
    ema.step([p.detach() + 0.05 for p in model.parameters()])
    changed(lambda: ema.copy_to(list(model.parameters())))  # what adapt(ema_decay=...) does at its end
    model.double()  # another dtype: a kernel of that dtype
    with torch.no_grad():
        assert model(z.double()).sample.dtype == torch.float64
    assert model.blocks[0]._fused_kernel_cache[1].dtype == torch.float64


def test_fused_kernel_with_weights_made_in_inference_mode():
    with torch.inference_mode():
        model = tiny_generator(16)  # inference tensors: no version counter, values compared
        model.enable_fused_upsampling()
        z = latents(4)
        first = model(z).sample
        assert all(block._fused_kernel_cache is not None for block in model.blocks)
        for p in model.parameters():
            p.add_(0.01)
        fused = model(z).sample
        model.enable_fused_upsampling(False)
        torch.testing.assert_close(fused, model(z).sample, rtol=0, atol=1e-5)  # follows the new weights
        assert not torch.equal(fused, first)


def test_fused_upsampling_runs_a_transposed_convolution(monkeypatch):
    calls = []
    original = torch.nn.functional.conv_transpose2d
    monkeypatch.setattr(torch.nn.functional, "conv_transpose2d", lambda *a, **k: calls.append(1) or original(*a, **k))
    model = tiny_generator(16)
    n = FUSED_UPSAMPLING_MIN_BATCH
    model(latents(n))  # auto, autograd on: plain
    with torch.no_grad():
        model(latents(n - 1))  # auto, too small a batch: plain
    assert calls == []
    with torch.no_grad():
        model(latents(n))  # auto, CPU inference of a large batch: fused
    assert len(calls) == len(model.blocks)
    model.enable_fused_upsampling(False)
    with torch.no_grad():
        model(latents(n))
    assert len(calls) == len(model.blocks)
    model.enable_fused_upsampling()
    model(latents(2))
    assert len(calls) == 2 * len(model.blocks)
    with pytest.raises(ValueError, match="enabled"):
        model.enable_fused_upsampling("yes")


def test_cpu_inference_path_gives_the_same_contiguous_images():
    """Autograd off: channels_last feature maps and auto-fused upsampling; the images match the training path."""
    torch.manual_seed(0)
    model = tiny_generator(16, 3).double()
    z = latents(FUSED_UPSAMPLING_MIN_BATCH + 3).double()
    with torch.no_grad():
        fast = model(z).sample
    plain = model(z).sample.detach()
    assert fast.is_contiguous()
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)


@pytest.mark.parametrize("act_fn", ["leaky_relu", "relu", "silu", "gelu"])
def test_activate_is_in_place_only_without_autograd_and_gives_the_same_values(act_fn):
    act = make_activation(act_fn)
    x = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    expected = act(x.clone())
    with torch.no_grad():
        y = x.clone()
        out = activate(act, y)
    assert torch.equal(out, expected)
    assert (out.data_ptr() == y.data_ptr()) == (act_fn != "gelu")  # GELU has no in-place form
    y = x.clone()
    out = activate(act, y)  # autograd on: a new tensor, the input untouched
    assert out.data_ptr() != y.data_ptr() and torch.equal(y, x) and torch.equal(out, expected)


@pytest.mark.parametrize("norm_type", ["group", "none"])
def test_in_place_activations_leave_the_images_and_features_bit_identical(monkeypatch, norm_type):
    """The inference path's in-place activations change no value, also of the returned block features."""
    torch.manual_seed(0)
    model = tiny_generator(16, norm_type=norm_type).eval()
    z = latents(FUSED_UPSAMPLING_MIN_BATCH + 3)
    with torch.no_grad():
        fast = model(z, return_features=True)
        monkeypatch.setattr(generator_metagan, "activate", lambda act, x: act(x))
        plain = model(z, return_features=True)
    assert torch.equal(fast.sample, plain.sample)
    for a, b in zip(fast.features, plain.features):
        assert torch.equal(a, b)


@pytest.fixture
def warm_up_blocks(monkeypatch):
    """Reset the once-per-process allocator warm-up and record the blocks it asks for (`calls`); with `refuse` set,
    asking fails as an allocation without memory would."""
    blocks, real = SimpleNamespace(calls=[], refuse=False), torch.empty

    def empty(*args, **kwargs):
        if args and args[0] == layers.ALLOCATOR_WARM_UP_BYTES:
            blocks.calls.append(args[0])
            if blocks.refuse:
                raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(layers, "_allocator_warmed_up", False)
    monkeypatch.setattr(torch, "empty", empty)
    return blocks


def test_cpu_inference_warms_up_the_allocator_once_and_training_does_not(warm_up_blocks):
    model = tiny_generator(16)
    model(latents(2))  # autograd on: no warm-up
    assert warm_up_blocks.calls == [] and not layers._allocator_warmed_up
    with torch.no_grad():
        model(latents(2))
        model(latents(2))
    assert warm_up_blocks.calls == [layers.ALLOCATOR_WARM_UP_BYTES] and layers._allocator_warmed_up


def test_allocator_warm_up_that_cannot_allocate_does_not_stop_sampling(warm_up_blocks):
    warm_up_blocks.refuse = True
    model = tiny_generator(16).eval()
    with torch.no_grad():
        images = model(latents(3)).sample
        model(latents(3))
    assert images.shape == (3, 1, 16, 16) and layers._allocator_warmed_up
    assert warm_up_blocks.calls == [layers.ALLOCATOR_WARM_UP_BYTES]  # not retried on every call


# ---------------------------------------------------------------- bad input


@pytest.fixture
def no_allocation(monkeypatch):
    """Make any layer construction fail loudly, so a check that runs after allocating is caught."""

    def boom(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} allocated before the config was checked")

    for cls in (nn.Linear, nn.Conv2d, nn.GroupNorm):
        monkeypatch.setattr(cls, "__init__", boom)


BAD_CONFIGS = [
    (dict(sample_size=37), "sample_size"),
    (dict(sample_size=8), "sample_size"),
    (dict(sample_size=256), "sample_size"),
    (dict(sample_size=16.0), "sample_size"),
    (dict(sample_size="16"), "sample_size"),
    (dict(out_channels=0), "out_channels"),
    (dict(out_channels=2), "out_channels"),
    (dict(out_channels=1.0), "out_channels"),
    (dict(out_channels=True), "out_channels"),
    (dict(block_out_channels=(16, 8, 4)), "block_out_channels"),
    (dict(block_out_channels=(16,)), "block_out_channels"),
    (dict(block_out_channels=()), "block_out_channels"),
    (dict(block_out_channels=(16, 0)), "block_out_channels"),
    (dict(block_out_channels=(16, -8)), "block_out_channels"),
    (dict(block_out_channels=(16.0, 8)), "block_out_channels"),
    (dict(block_out_channels=(16, True)), "block_out_channels"),
    (dict(block_out_channels=16), "block_out_channels"),
    (dict(norm_type="batch"), "norm_type"),
    (dict(norm_type="instance"), "norm_type"),
    (dict(act_fn="tanh"), "act_fn"),
    (dict(latent_dim=0), "latent_dim"),
    (dict(latent_dim=-3), "latent_dim"),
    (dict(latent_dim=8.0), "latent_dim"),
    (dict(latent_dim=True), "latent_dim"),
    (dict(norm_num_groups=0), "norm_num_groups"),
    (dict(norm_num_groups=2.5), "norm_num_groups"),
]


@pytest.mark.parametrize(
    "bad, argument", BAD_CONFIGS, ids=[f"{k}={v!r}" for (c, _) in BAD_CONFIGS for k, v in c.items()]
)
def test_bad_config_raises_before_allocating(no_allocation, bad, argument):
    config = dict(latent_dim=LATENT_DIM, sample_size=16, out_channels=1, block_out_channels=(16, 8))
    config.update(bad)
    with pytest.raises(ValueError, match=argument):
        MetaGANGenerator(**config)


@pytest.mark.parametrize("shape", [(2, LATENT_DIM + 1), (LATENT_DIM,), (2, LATENT_DIM, 1), (2, 1, 4, 4)])
def test_wrong_latent_shape_raises(shape):
    model = tiny_generator()
    with pytest.raises(ValueError, match="latents"):
        model(torch.randn(shape))


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("variant", [None, "fp16", "bf16"])
def test_save_load_round_trip(tmp_path, variant):
    dtype = DTYPES[variant]
    model = tiny_generator(32, 3, norm_type="layer", act_fn="silu")
    model = nn.Module.to(model, dtype).eval()  # diffusers convention: cast, then save with the matching variant
    model.save_pretrained(tmp_path, variant=variant)

    weight_name = "diffusion_pytorch_model" + (f".{variant}" if variant else "") + ".safetensors"
    assert sorted(os.listdir(tmp_path)) == sorted(["config.json", weight_name])
    for root, _, files in os.walk(tmp_path):
        assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)], root
    assert {t.dtype for t in load_file(tmp_path / weight_name).values()} == {dtype}
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    assert saved["_class_name"] == "MetaGANGenerator"
    assert saved["norm_type"] == "layer" and saved["act_fn"] == "silu" and saved["out_channels"] == 3

    loaded = MetaGANGenerator.from_pretrained(tmp_path, variant=variant, dtype=dtype)
    assert isinstance(loaded, MetaGANGenerator)
    assert loaded.dtype == dtype
    assert public_config(loaded) == public_config(model)
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    for key in original:
        assert reloaded[key].dtype == dtype, key
        assert torch.equal(original[key], reloaded[key]), key
    # exact state dicts (above); two instances' forward passes agree up to kernel rounding (see tests/testing_utils.py)
    z = latents(4).to(dtype)
    with torch.no_grad():
        assert_outputs_close(loaded(z).sample, model(z).sample)


def test_variant_file_is_not_found_without_variant(tmp_path):
    tiny_generator().save_pretrained(tmp_path, variant="fp16")
    with pytest.raises((OSError, EnvironmentError, ValueError)):
        MetaGANGenerator.from_pretrained(tmp_path)
