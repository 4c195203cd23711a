"""Real HTTP round trips of Meta-GAN pipelines and models through the loopback Hub server (tests/hub_server.py)."""

from __future__ import annotations

import os

import pytest
import torch
from huggingface_hub import hf_hub_download

from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline
from metagan_hub.hub.upload import HubUploadError
from tests.testing_utils import assert_outputs_close, tiny_pipeline


def images(pipe: MetaGANPipeline, seed: int = 0) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=4, generator=torch.Generator().manual_seed(seed), output_type="pt").images


def test_push_then_load_in_fresh_cache_gives_identical_images(hub_server, hub_repo_id, hf_cache, tmp_path):
    pipe = tiny_pipeline()
    (tmp_path / "save" / "checkpoint-10").mkdir(parents=True)
    (tmp_path / "save" / "checkpoint-10" / "optimizer.bin").write_bytes(b"state")
    pipe(batch_size=1).images[0].save(tmp_path / "save" / "samples.png")
    url = pipe.push_to_hub(hub_repo_id, save_directory=tmp_path / "save", card_images=["samples.png"])
    assert hub_repo_id in url and "commit" in url

    uploaded = hub_server.uploaded_paths(hub_repo_id)
    assert "model_index.json" in uploaded
    assert "samples.png" in uploaded  # the card's image travels with it
    card = open(hf_hub_download(hub_repo_id, "README.md"), encoding="utf-8").read()
    assert "![samples.png](samples.png)" in card
    assert "generator/diffusion_pytorch_model.safetensors" in uploaded
    assert "discriminator/diffusion_pytorch_model.safetensors" in uploaded
    assert "README.md" in uploaded
    assert not any("checkpoint-" in p or p.endswith((".bin", ".pt", ".pkl")) for p in uploaded)

    loaded = MetaGANPipeline.from_pretrained(hub_repo_id)
    assert os.path.commonpath([loaded.card_info["name_or_path"]]) == hub_repo_id
    for name in ("generator", "discriminator"):
        ref, got = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert ref.keys() == got.keys()
        assert all(torch.equal(ref[k], got[k]) for k in ref)  # state dicts round-trip exactly
    assert_outputs_close(images(loaded), images(pipe))  # two instances: up to kernel rounding (tests/testing_utils.py)


def test_repush_updates_and_old_revision_stays_loadable(hub_server, hub_repo_id, hf_cache):
    first, second = tiny_pipeline(0), tiny_pipeline(1)
    first.push_to_hub(hub_repo_id)
    old_sha = hub_server.head(hub_repo_id, "main")
    second.push_to_hub(hub_repo_id, commit_message="update")
    assert hub_server.head(hub_repo_id, "main") != old_sha

    latest = MetaGANPipeline.from_pretrained(hub_repo_id)
    assert_outputs_close(images(latest), images(second))
    old = MetaGANPipeline.from_pretrained(hub_repo_id, revision=old_sha)
    assert_outputs_close(images(old), images(first))


def test_offline_reload_from_cache(hub_server, hub_repo_id, hf_cache, hub_offline):
    pipe = tiny_pipeline()
    pipe.push_to_hub(hub_repo_id)
    MetaGANPipeline.from_pretrained(hub_repo_id)  # fills the cache

    hub_server.clear_requests()
    again = MetaGANPipeline.from_pretrained(hub_repo_id, local_files_only=True)
    assert_outputs_close(images(again), images(pipe))
    hub_offline()
    with hub_server.down():
        offline = MetaGANPipeline.from_pretrained(hub_repo_id)
    assert_outputs_close(images(offline), images(pipe))
    assert hub_server.requests == []


def test_failed_upload_raises_clear_error_and_keeps_local_files(hub_server, hub_repo_id, hf_cache, tmp_path):
    pipe = tiny_pipeline()
    pipe.push_to_hub(hub_repo_id)
    before = hub_server.head(hub_repo_id, "main")

    changed = tiny_pipeline(seed=3)  # different bytes, so a commit is really attempted
    save = tmp_path / "kept"
    hub_server.fail_next(endpoint="commit", times=1, status=500, message="disk full")
    with pytest.raises(HubUploadError, match=hub_repo_id):
        changed.push_to_hub(hub_repo_id, save_directory=save)
    assert hub_server.head(hub_repo_id, "main") == before
    assert (save / "model_index.json").is_file()
    assert (save / "generator" / "diffusion_pytorch_model.safetensors").is_file()
    reloaded = MetaGANPipeline.from_pretrained(save)
    assert_outputs_close(images(reloaded), images(changed))


def test_plain_diffusion_pipeline_loads_repo_with_trust_remote_code(hub_server, hub_repo_id, hf_cache):
    from diffusers import DiffusionPipeline

    pipe = tiny_pipeline()
    pipe.push_to_hub(hub_repo_id)
    loaded = DiffusionPipeline.from_pretrained(hub_repo_id, trust_remote_code=True)
    assert type(loaded).__name__ == "MetaGANPipeline"
    assert_outputs_close(images(loaded), images(pipe))


@pytest.mark.parametrize("variant", ["fp16", "bf16"])
def test_variant_push_and_load(hub_server, hub_repo_id, hf_cache, variant):
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[variant]
    pipe = tiny_pipeline()
    pipe.to(dtype)  # a variant is only a file label (as in diffusers): cast first
    pipe.push_to_hub(hub_repo_id, variant=variant)
    assert f"generator/diffusion_pytorch_model.{variant}.safetensors" in hub_server.uploaded_paths(hub_repo_id)
    loaded = MetaGANPipeline.from_pretrained(hub_repo_id, variant=variant, dtype=dtype)
    assert loaded.generator.dtype == dtype
    ref = {k: v.to(dtype) for k, v in pipe.generator.state_dict().items()}
    assert all(torch.equal(ref[k], v) for k, v in loaded.generator.state_dict().items())


@pytest.mark.parametrize("cls", [MetaGANGenerator, MetaGANDiscriminator])
def test_model_push_to_hub_round_trip(hub_server, hub_repo_id, hf_cache, cls):
    pipe = tiny_pipeline()
    model = pipe.generator if cls is MetaGANGenerator else pipe.discriminator
    url = model.push_to_hub(hub_repo_id)
    assert hub_repo_id in url
    uploaded = hub_server.uploaded_paths(hub_repo_id)
    assert {"config.json", "diffusion_pytorch_model.safetensors", "README.md"} <= set(uploaded)
    card = hub_server.files(hub_repo_id, "main")["README.md"].decode()
    assert "metagan_hub" in card and f"{cls.__name__}.from_pretrained" in card
    loaded = cls.from_pretrained(hub_repo_id)
    ref = model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in loaded.state_dict().items())


def test_lora_only_push_and_load_from_repo(hub_server, hub_repo_id, hf_cache, tmp_path):
    base = tiny_pipeline()
    base.save_pretrained(tmp_path / "base")
    base = MetaGANPipeline.from_pretrained(tmp_path / "base")
    shots = torch.rand(5, 1, 16, 16) * 2 - 1
    adapted = base.adapt(shots, num_steps=3, lora_rank=2, generator=torch.Generator().manual_seed(0))
    adapted.push_to_hub(hub_repo_id, lora_only=True)
    uploaded = set(hub_server.uploaded_paths(hub_repo_id))
    assert "pytorch_lora_weights.safetensors" in uploaded
    assert not any(p.endswith("diffusion_pytorch_model.safetensors") for p in uploaded)

    fresh = MetaGANPipeline.from_pretrained(tmp_path / "base").load_lora_weights(hub_repo_id)
    assert_outputs_close(images(fresh), images(adapted))


def test_copy_encoder_travels_through_the_hub(hub_server, hub_repo_id, hf_cache):
    from diffusers import DiffusionPipeline

    from metagan_hub.metrics.classifiers import EvaluationClassifier

    pipe = tiny_pipeline()
    size = pipe.generator.config.sample_size
    torch.manual_seed(0)
    encoder = EvaluationClassifier(classes=["a", "b"], resolution=size, block_out_channels=(8, 16)).eval()
    pipe.register_modules(copy_encoder=encoder)
    pipe.push_to_hub(hub_repo_id)
    uploaded = hub_server.uploaded_paths(hub_repo_id)
    assert "copy_encoder/diffusion_pytorch_model.safetensors" in uploaded
    assert "copy_encoder/metagan_hub.metrics.classifiers.py" in uploaded  # what plain diffusers imports it through
    loaded = MetaGANPipeline.from_pretrained(hub_repo_id)
    ref, got = encoder.state_dict(), loaded.copy_encoder.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    plain = DiffusionPipeline.from_pretrained(hub_repo_id, trust_remote_code=True)
    assert type(plain.copy_encoder).__name__ == "EvaluationClassifier"
