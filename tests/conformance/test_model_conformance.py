# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""`MetaGANGenerator` and `MetaGANDiscriminator` checked on the points diffusers' model testers check for diffusers
models: outputs and `return_dict`, determinism, config round trips, `save_pretrained` / `from_pretrained` (with
`low_cpu_mem_usage`, variants and dtypes), training-mode forward/backward, layerwise casting, LoRA on our layer names,
and refusing configurations too large for the machine before anything is allocated."""

from __future__ import annotations

import json

import pytest
import torch

from metagan_hub import MetaGANDiscriminator, MetaGANGenerator
from metagan_hub.hub.safety import NonFiniteWeightsError
from tests.conformance.common import (
    LATENT_DIM,
    SIZE,
    assert_same_state,
    images,
    latents,
    tiny_discriminator,
    tiny_generator,
)
from tests.testing_utils import assert_outputs_close

pytestmark = pytest.mark.usefixtures("one_torch_thread")


MODELS = {
    "generator": (tiny_generator, lambda n=4: latents(n), lambda out: out.sample, (LATENT_DIM,)),
    "discriminator": (tiny_discriminator, lambda n=4: images(n), lambda out: out.logits, (1, SIZE, SIZE)),
}


@pytest.fixture(params=sorted(MODELS))
def kind(request):
    return request.param


def run(model, x):
    with torch.no_grad():
        return MODELS["generator" if isinstance(model, MetaGANGenerator) else "discriminator"][2](model(x))


def test_outputs_and_return_dict(kind):
    make, inputs, field, _ = MODELS[kind]
    model, x = make(), inputs()
    with torch.no_grad():
        out = model(x)
        as_tuple = model(x, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    assert torch.equal(as_tuple[0], field(out))  # the same object on the same input twice: exact
    expected = (4, 1, SIZE, SIZE) if kind == "generator" else (4,)
    assert field(out).shape == expected


def test_determinism_and_eval_mode(kind):
    make, inputs, _, _ = MODELS[kind]
    model, x = make(), inputs()
    assert not model.training  # no dropout or batch statistics: eval and train forwards agree
    first = run(model, x)
    assert torch.equal(first, run(model, x))  # the same object twice: exact
    model.train()
    assert_outputs_close(run(model, x), first)


def test_from_config_round_trip(kind):
    make, inputs, _, _ = MODELS[kind]
    model = make()
    clone = type(model).from_config(model.config)
    assert dict(clone.config) == dict(model.config)
    clone.load_state_dict(model.state_dict())
    assert_outputs_close(run(clone.eval(), inputs()), run(model, inputs()))


@pytest.mark.parametrize("low_cpu_mem_usage", [True, False])
def test_save_load_with_low_cpu_mem_usage(kind, tmp_path, low_cpu_mem_usage):
    make, inputs, _, _ = MODELS[kind]
    model = make()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == type(model).__name__ and "_name_or_path" not in config
    loaded = type(model).from_pretrained(tmp_path, low_cpu_mem_usage=low_cpu_mem_usage).eval()
    assert_same_state(model, loaded)
    assert_outputs_close(run(loaded, inputs()), run(model, inputs()))
    # a re-save of the loaded model does not record the folder it came from
    loaded.save_pretrained(tmp_path / "again")
    assert str(tmp_path) not in (tmp_path / "again" / "config.json").read_text()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_save_load_variant_and_dtype(kind, tmp_path, dtype):
    make, inputs, _, _ = MODELS[kind]
    model = make().to(dtype)
    model.save_pretrained(tmp_path, variant="half")
    assert (tmp_path / "diffusion_pytorch_model.half.safetensors").is_file()
    loaded = type(model).from_pretrained(tmp_path, variant="half", dtype=dtype)
    assert loaded.dtype == dtype
    assert_same_state(model, loaded)
    upcast = type(model).from_pretrained(tmp_path, variant="half", dtype=torch.float32)
    assert upcast.dtype == torch.float32


def test_training_forward_backward_reaches_every_parameter(kind):
    make, inputs, field, _ = MODELS[kind]
    model = make().train()
    out = field(model(inputs()))
    out.float().square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())


@pytest.mark.parametrize("storage_dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16])
def test_layerwise_casting(kind, storage_dtype):
    make, inputs, _, _ = MODELS[kind]
    model, x = make(), inputs(8)
    reference = run(model, x)
    model.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=torch.float32)
    stored = {p.dtype for n, p in model.named_parameters() if "norm" not in n}
    assert stored == {storage_dtype}
    out = run(model, x)
    assert out.dtype == torch.float32 and out.shape == reference.shape and torch.isfinite(out).all()
    tolerance = 0.2 if storage_dtype.itemsize == 1 else 0.02
    assert (out - reference).abs().mean() <= tolerance * (reference.abs().mean() + 0.1)


def test_layerwise_casting_with_fused_upsampling_matches_plain_path():
    model = tiny_generator()
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    x = latents(40)
    plain = run(model, x)
    model.enable_fused_upsampling(True)  # never fuses under casting: its hook casts inside conv1.forward only
    assert torch.equal(run(model, x), plain)


# ---------------------------------------------------------------- LoRA on our layer names

LORA_TARGETS = {"generator": ["proj", "conv1", "conv2", "conv_out"], "discriminator": ["conv1", "conv2", "fc"]}


def test_lora_add_save_load_fuse_unload(tmp_path):
    peft = pytest.importorskip("peft")
    model = tiny_generator()
    x = latents(4)
    base = run(model, x)
    config = peft.LoraConfig(r=2, lora_alpha=2, target_modules=LORA_TARGETS["generator"], init_lora_weights=False)
    model.add_adapter(config, adapter_name="default")
    wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(LORA_TARGETS["generator"])
    with_lora = run(model, x)
    assert not torch.allclose(with_lora, base)  # random (non-zero) adapter weights change the output
    model.save_lora_adapter(tmp_path, weight_name="lora.safetensors", safe_serialization=True)

    fresh = tiny_generator()
    fresh.load_lora_adapter(tmp_path, prefix=None, weight_name="lora.safetensors", adapter_name="default")
    assert_outputs_close(run(fresh, x), with_lora)
    fresh.fuse_lora()
    fresh.unload_lora()
    assert not any(hasattr(m, "lora_A") for m in fresh.modules())
    assert set(fresh.state_dict()) == set(tiny_generator().state_dict())  # plain weights again, no base_layer keys
    # merged weights W + BA are a different float32 sum than W x + B(A x): a few ulps more than kernel rounding
    fused = run(fresh, x)
    torch.testing.assert_close(fused, with_lora, rtol=1e-4, atol=1e-5)

    fresh.save_pretrained(tmp_path / "fused")
    reloaded = MetaGANGenerator.from_pretrained(tmp_path / "fused")
    assert_outputs_close(run(reloaded.eval(), x), fused)


def test_lora_on_discriminator_layers():
    peft = pytest.importorskip("peft")
    model = tiny_discriminator()
    config = peft.LoraConfig(r=2, target_modules=LORA_TARGETS["discriminator"])
    model = peft.inject_adapter_in_model(config, model)
    logits = model(images(4)).logits
    logits.sum().backward()
    trainable = [n for n, p in model.named_parameters() if "lora_" in n]
    assert trainable and all(model.get_parameter(n).grad is not None for n in trainable)


# ---------------------------------------------------------------- hardening


@pytest.mark.parametrize(
    ("cls", "kwargs", "named"),
    [
        (MetaGANGenerator, {"block_out_channels": (10**6, 8)}, "block_out_channels"),
        (MetaGANGenerator, {"latent_dim": 10**9}, "latent_dim"),
        (MetaGANDiscriminator, {"block_out_channels": (8, 10**6)}, "block_out_channels"),
    ],
)
def test_configs_too_large_for_the_machine_fail_before_allocating(cls, kwargs, named, monkeypatch):
    allocated = []
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", lambda self: allocated.append(self))
    monkeypatch.setattr(torch.nn.Conv2d, "reset_parameters", lambda self: allocated.append(self))
    config = {"sample_size": SIZE, **kwargs}
    with pytest.raises(ValueError, match=rf"{named}=.*parameters, .* in float32, more than this machine") as err:
        cls(**config)
    assert "Nothing was allocated" in str(err.value)
    assert not allocated


def test_parameter_estimates_are_exact_for_the_default_norm():
    for gen in (tiny_generator(), MetaGANGenerator(sample_size=32)):
        c = gen.config
        estimate = gen.estimate_num_parameters(c.latent_dim, c.out_channels, tuple(c.block_out_channels))
        assert estimate == sum(p.numel() for p in gen.parameters())
    for disc in (tiny_discriminator(), MetaGANDiscriminator(sample_size=32, minibatch_std=False)):
        c = disc.config
        estimate = disc.estimate_num_parameters(c.in_channels, tuple(c.block_out_channels), c.minibatch_std)
        assert estimate == sum(p.numel() for p in disc.parameters())


def test_model_with_non_finite_weight_is_not_saved(kind, tmp_path):
    model = MODELS[kind][0]()
    name, param = next(iter(model.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match=rf"`{name}`"):
        model.save_pretrained(tmp_path)
    assert not any(tmp_path.iterdir())
