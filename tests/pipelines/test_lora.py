"""LoRA adaptation (`adapt(lora_rank=r)`): only the adapter trains, it saves alone as a small safetensors file that
reproduces the adapted images on a freshly loaded base (from a folder or the loopback Hub), and it can be fused or
saved as a full pipeline."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from safetensors import safe_open

from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline
from metagan_hub.pipelines.pipeline_metagan import LORA_WEIGHT_NAME
from tests.testing_utils import assert_outputs_close, tiny_pipeline

pytest.importorskip("peft")

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def shots(n: int = 5, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # [N, 1, S, S]


def images(pipe: MetaGANPipeline, n: int = 8, seed: int = 1) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=n, generator=torch.Generator().manual_seed(seed), output_type="pt").images


def adapt_lora(pipe: MetaGANPipeline, rank: int = 2, num_steps: int = 3, **kwargs) -> MetaGANPipeline:
    return pipe.adapt(
        shots(), num_steps=num_steps, lora_rank=rank, generator=torch.Generator().manual_seed(0), **kwargs
    )


@pytest.fixture
def base_dir(tmp_path):
    """A tiny base pipeline saved to a folder (the "meta-checkpoint")."""
    path = tmp_path / "base"
    tiny_pipeline().save_pretrained(path)
    return path


def load_base(path) -> MetaGANPipeline:
    pipe = MetaGANPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_only_the_adapter_trains(base_dir):
    base = load_base(base_dir)
    meta_g = {k: v.clone() for k, v in base.generator.state_dict().items()}
    meta_d = {k: v.clone() for k, v in base.discriminator.state_dict().items()}
    adapted = adapt_lora(base, rank=2)
    assert adapted.has_lora and not base.has_lora
    assert not hasattr(base.generator, "peft_config")

    lora_state = adapted.generator.state_dict()
    lora_keys = [k for k in lora_state if "lora_" in k]
    assert lora_keys and all(lora_state[k].shape[0] == 2 or lora_state[k].shape[1] == 2 for k in lora_keys)
    # every meta-weight of the generator, wrapped as `base_layer` or not, is unchanged
    base_weights = {k.replace(".base_layer.", "."): v for k, v in lora_state.items() if "lora_" not in k}
    assert base_weights.keys() == meta_g.keys()
    assert all(torch.equal(base_weights[k], meta_g[k]) for k in meta_g)
    # the adapter did train (PEFT initializes lora_B to zero)
    lora_b = [lora_state[k] for k in lora_keys if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)
    assert not torch.equal(images(adapted), images(base))
    # the discriminator is trained in full, apart from the layers the default FreezeD keeps
    frozen = ("conv_in.", "blocks.0.")
    assert all(torch.equal(adapted.discriminator.state_dict()[k], meta_d[k]) == k.startswith(frozen) for k in meta_d)
    assert adapted.card_info["adaptation"]["lora_rank"] == 2


def test_adapter_trains_at_the_lora_multiple_of_the_learning_rate(base_dir):
    # Adam's first step with beta1 = 0 moves a weight by lr * g / (|g| + eps): by the learning rate itself unless the
    # gradient is tiny, so the largest move after one step shows each network's rate: the adapter (lora_B starts at
    # zero) at LORA_LR_MULTIPLIER x, the discriminator (adapted in full) at `learning_rate`
    from metagan_hub.training.adaptation import LORA_LR_MULTIPLIER

    base = load_base(base_dir)
    meta_d = {k: v.clone() for k, v in base.discriminator.state_dict().items()}
    adapted = adapt_lora(base, rank=2, num_steps=1, learning_rate=1e-3)
    lora_b = torch.cat([v.flatten() for k, v in adapted.generator.state_dict().items() if "lora_B" in k])
    moved = lora_b[lora_b != 0].abs()
    assert moved.numel() > 0.5 * lora_b.numel()
    assert moved.max().item() == pytest.approx(1e-3 * LORA_LR_MULTIPLIER, rel=1e-3)
    d_moves = torch.cat([(v - meta_d[k]).flatten() for k, v in adapted.discriminator.state_dict().items()])
    d_moved = d_moves[d_moves != 0].abs()
    assert d_moved.numel() > 0
    assert d_moved.max().item() == pytest.approx(1e-3, rel=1e-3)
    record = adapted.card_info["adaptation"]
    assert record["learning_rate"] == 1e-3 and record["lora_learning_rate"] == pytest.approx(1e-3 * LORA_LR_MULTIPLIER)


def test_save_lora_weights_then_load_into_fresh_base_reproduces_images(base_dir, tmp_path):
    base = load_base(base_dir)
    adapted = adapt_lora(base, rank=2, ema_decay=0.9)
    expected = images(adapted)

    weight_path = adapted.save_lora_weights(tmp_path / "adapter")
    assert os.path.basename(weight_path) == LORA_WEIGHT_NAME
    assert sorted(os.listdir(tmp_path / "adapter")) == sorted([LORA_WEIGHT_NAME, "README.md", "metagan_hub.json"])
    card = (tmp_path / "adapter" / "README.md").read_text(encoding="utf-8")
    local = os.path.basename(os.path.normpath(base_dir))  # a local base: named, no empty link
    assert f"A LoRA adapter for the Meta-GAN `{local}` (a local checkpoint that is not on the Hub)" in card
    assert f'MetaGANPipeline.from_pretrained("path/to/{local}")' in card and "]()" not in card
    with safe_open(weight_path, "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys)

    fresh = load_base(base_dir)
    assert not torch.equal(images(fresh), expected)
    returned = fresh.load_lora_weights(tmp_path / "adapter")
    assert returned is fresh and fresh.has_lora
    # a fresh base with the reloaded adapter is another instance: equal up to kernel rounding (tests/testing_utils.py)
    assert_outputs_close(images(fresh), expected)
    assert_outputs_close(images(fresh, n=3, seed=5), images(adapted, n=3, seed=5))
    assert fresh.card_info["adaptation"]["lora_rank"] == 2

    with pytest.raises(ValueError, match="already has a LoRA adapter"):
        fresh.load_lora_weights(tmp_path / "adapter")
    with pytest.raises(ValueError, match="no LoRA adapter"):
        base.save_lora_weights(tmp_path / "nothing")
    with pytest.raises(ValueError, match="no LoRA weight file"):
        load_base(base_dir).load_lora_weights(base_dir)


def test_adapter_card_points_at_hub_base(base_dir, tmp_path):
    from huggingface_hub import ModelCard

    base = load_base(base_dir)
    base.card_info["name_or_path"] = "org/base"
    adapted = adapt_lora(base)
    adapted.save_lora_weights(tmp_path / "adapter", repo_id="me/my-lora")
    card = ModelCard.load(tmp_path / "adapter" / "README.md")
    assert card.data.base_model == "org/base" and card.data.base_model_relation == "adapter"  # the Hub's model tree
    assert "lora" in card.data.tags
    assert 'from_pretrained("org/base")' in card.text and 'load_lora_weights("me/my-lora")' in card.text
    assert "## Limitations" in card.text and "less faithful than full adaptation" in " ".join(card.text.split())
    shots = adapted.card_info["adaptation"]["shots"]
    assert f"## Data\n\nAdapted on the {shots} images given to `adapt()`." in card.text
    info = json.loads((tmp_path / "adapter" / "metagan_hub.json").read_text(encoding="utf-8"))
    assert info["base_model"] == "org/base" and len(info["adaptation"]["losses"]) == 3


def test_adapter_file_is_at_most_5_percent_of_the_full_model(tmp_path):
    # a realistic default-size 32x32 model; one step is enough to have an adapter to save
    torch.manual_seed(0)
    pipe = MetaGANPipeline(generator=MetaGANGenerator(sample_size=32), discriminator=MetaGANDiscriminator())
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "full")
    full = sum(
        os.path.getsize(tmp_path / "full" / part / "diffusion_pytorch_model.safetensors")
        for part in ("generator", "discriminator")
    )
    adapted = pipe.adapt(
        shots(size=32), num_steps=1, batch_size=4, lora_rank=4, generator=torch.Generator().manual_seed(0)
    )
    adapter = os.path.getsize(adapted.save_lora_weights(tmp_path / "adapter"))
    assert full > 1_000_000  # a realistic model, not a toy
    assert adapter <= 0.05 * full, (adapter, full)


def test_fuse_lora_keeps_images_and_removes_adapter(base_dir, tmp_path):
    adapted = adapt_lora(load_base(base_dir))
    expected = images(adapted)
    assert adapted.fuse_lora() is adapted
    assert not adapted.has_lora
    assert not any("lora_" in k or "base_layer" in k for k in adapted.generator.state_dict())
    torch.testing.assert_close(images(adapted), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no LoRA adapter to fuse"):
        adapted.fuse_lora()
    adapted.save_pretrained(tmp_path / "fused")
    torch.testing.assert_close(images(load_base(tmp_path / "fused")), expected, atol=1e-5, rtol=0)


def test_fast_generation_keeps_lora_images(base_dir):
    """Fused upsampling cannot fold a LoRA delta into its kernel: adapted convolutions take the plain path."""
    adapted = adapt_lora(load_base(base_dir))
    expected = images(adapted)
    adapted.enable_fast_generation()
    assert adapted.generator.fused_upsampling
    torch.testing.assert_close(images(adapted), expected, atol=1e-5, rtol=0)


def test_save_pretrained_of_lora_pipeline_writes_plain_full_weights(base_dir, tmp_path):
    adapted = adapt_lora(load_base(base_dir))
    expected = images(adapted)
    adapted.save_pretrained(tmp_path / "full")
    # the live pipeline keeps its adapter; the saved one has merged weights and no `base_layer` / `lora_` keys
    assert adapted.has_lora
    with safe_open(tmp_path / "full" / "generator" / "diffusion_pytorch_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora_" in k or "base_layer" in k for k in keys)
    reloaded = load_base(tmp_path / "full")
    assert not reloaded.has_lora
    torch.testing.assert_close(images(reloaded), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(images(adapted), expected, atol=0, rtol=0)  # the same object: saving changed nothing


def test_push_lora_only_to_hub_and_load_by_repo_id(base_dir, hub_server, hub_repo_id, hf_cache, tmp_path):
    adapted = adapt_lora(load_base(base_dir))
    expected = images(adapted)
    adapted.push_to_hub(hub_repo_id, lora_only=True)
    uploaded = hub_server.uploaded_paths(hub_repo_id) - {".gitattributes"}
    assert uploaded == {LORA_WEIGHT_NAME, "README.md", "metagan_hub.json"}  # no generator/ or discriminator/
    fresh = load_base(base_dir).load_lora_weights(hub_repo_id)
    assert_outputs_close(images(fresh), expected)


def test_lora_without_peft_names_the_extra(monkeypatch):
    import diffusers.pipelines.pipeline_loading_utils as loading_utils

    pipe = tiny_pipeline()
    # simulate an environment without PEFT: `import peft` fails and diffusers does not look for it
    monkeypatch.setitem(sys.modules, "peft", None)
    monkeypatch.setattr(loading_utils, "is_peft_available", lambda: False)
    with pytest.raises(ImportError):
        import peft  # noqa: F401
    with pytest.raises(ImportError, match=r"metagan-hub\[lora\]"):
        pipe.adapt(shots(), num_steps=1, lora_rank=2)
    # without lora_rank adaptation still works
    adapted = pipe.adapt(shots(), num_steps=1, generator=torch.Generator().manual_seed(0))
    assert not adapted.has_lora


def test_bf16_lora_trains_only_the_adapter_in_float32_and_reloads_exactly(base_dir, tmp_path):
    base = load_base(base_dir)
    meta_g = {k: v.clone() for k, v in base.generator.state_dict().items()}
    adapted = adapt_lora(base, rank=2, mixed_precision="bf16")
    state = adapted.generator.state_dict()
    # the base weights are untouched (never rounded to bf16), the adapter trained and comes back as float32
    base_weights = {k.replace(".base_layer.", "."): v for k, v in state.items() if "lora_" not in k}
    assert all(torch.equal(base_weights[k], meta_g[k]) for k in meta_g)
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and all(t.dtype == torch.float32 and t.abs().sum() > 0 for t in lora_b)
    adapted.save_lora_weights(tmp_path / "adapter")
    fresh = load_base(base_dir).load_lora_weights(tmp_path / "adapter")
    assert_outputs_close(images(fresh), images(adapted))


def test_save_lora_weights_does_not_log_diffusers_empty_keep_in_fp32_warning(base_dir, tmp_path):
    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(level=logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    modeling_logger = logging.getLogger("diffusers.models.modeling_utils")
    collect = Collect()
    modeling_logger.addHandler(collect)
    try:
        adapted = adapt_lora(load_base(base_dir), rank=2)
        adapted.save_lora_weights(tmp_path / "adapter")
        assert not any("should be kept in float32" in m for m in collect.messages)
        # the filter is removed again: the same logger's other warnings still come through
        modeling_logger.warning("another warning")
        assert collect.messages[-1] == "another warning"
    finally:
        modeling_logger.removeHandler(collect)
