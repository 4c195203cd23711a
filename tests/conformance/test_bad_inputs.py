# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""The bad-input catalogue: every public entry point (constructors, forward passes, `__call__`, `adapt()`,
`from_pretrained`, `save_pretrained`, `push_to_hub`, LoRA save/load, data sources, the timeout setting and the
scripts' arguments) refuses bad input with the expected exception type and a message that names the argument or the
file. Nothing here touches the network: pushes fail before their first request."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline
from metagan_hub.hub.safety import NonFiniteWeightsError
from metagan_hub.hub.upload import LocalDataLeakError
from tests.conformance.common import SIZE, images, latents, tiny_discriminator, tiny_generator, tiny_pipeline

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny pipeline, its saved folder, an empty folder and a scratch folder."""
    root = tmp_path_factory.mktemp("bad-inputs")
    pipe = tiny_pipeline()
    pipe.save_pretrained(root / "saved")
    (root / "empty").mkdir()
    return {"pipe": pipe, "saved": root / "saved", "empty": root / "empty", "root": root}


def _copy_saved(env, name: str) -> Path:
    target = env["root"] / name
    if not target.exists():
        shutil.copytree(env["saved"], target)
    return target


def _wrong_sidecar(env) -> Path:
    folder = _copy_saved(env, "wrong-sidecar")
    (folder / "metagan_hub.json").write_text('["base_model", "org/x"]')
    return folder


def _foreign_component(env) -> Path:
    folder = _copy_saved(env, "foreign")
    index = json.loads((folder / "model_index.json").read_text())
    index["generator"] = ["diffusers", "UNet2DModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def _nan_pipeline() -> MetaGANPipeline:
    pipe = tiny_pipeline()
    with torch.no_grad():
        pipe.generator.proj.bias[0] = float("nan")
    return pipe


def _leaky_pipeline() -> MetaGANPipeline:
    pipe = tiny_pipeline()
    pipe.card_info = {"data_notes": "shots from /home/alice/secret/shots"}
    return pipe


def _nested_only_folder(env) -> Path:
    folder = env["root"] / "nested-only"
    (folder / "class_a").mkdir(parents=True, exist_ok=True)
    import PIL.Image

    PIL.Image.new("L", (16, 16)).save(folder / "class_a" / "a.png")
    return folder


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bad_inputs", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data():
    import metagan_hub.data

    return metagan_hub.data


def _adapt(env, **kwargs):
    base = {"num_steps": 1, "batch_size": 2, "generator": torch.Generator().manual_seed(0)}
    return env["pipe"].adapt(kwargs.pop("images", images(3)), **{**base, **kwargs})


def _call(env, **kwargs):
    return env["pipe"](**{"output_type": "pt", **kwargs})


# (id, action(env), exception type, regex the message must match: the argument or file it names)
CASES: list[tuple[str, Callable[[dict], Any], type[BaseException], str]] = [
    # --- MetaGANGenerator / MetaGANDiscriminator constructors and forward passes
    ("gen-sample_size", lambda e: MetaGANGenerator(sample_size=24), ValueError, "`sample_size`"),
    ("gen-out_channels", lambda e: MetaGANGenerator(out_channels=2), ValueError, "`out_channels`"),
    ("gen-latent_dim", lambda e: MetaGANGenerator(latent_dim=0), ValueError, "`latent_dim`"),
    ("gen-blocks-count", lambda e: MetaGANGenerator(sample_size=16, block_out_channels=(8,)), ValueError,
     "`block_out_channels`"),
    ("gen-blocks-negative", lambda e: MetaGANGenerator(sample_size=16, block_out_channels=(8, -1)), ValueError,
     "`block_out_channels`"),
    ("gen-blocks-huge", lambda e: MetaGANGenerator(sample_size=16, block_out_channels=(10**6, 8)), ValueError,
     "block_out_channels=.*more than this machine"),
    ("gen-norm_type", lambda e: MetaGANGenerator(norm_type="batch"), ValueError, "`norm_type`"),
    ("gen-act_fn", lambda e: MetaGANGenerator(act_fn="tanh"), ValueError, "`act_fn`"),
    ("gen-norm_num_groups", lambda e: MetaGANGenerator(norm_num_groups=0), ValueError, "`norm_num_groups`"),
    ("gen-forward-latents", lambda e: tiny_generator()(torch.randn(2, 5)), ValueError, "`latents`"),
    ("gen-fused_upsampling", lambda e: tiny_generator().enable_fused_upsampling("yes"), ValueError, "`enabled`"),
    ("disc-in_channels", lambda e: MetaGANDiscriminator(in_channels=4), ValueError, "`in_channels`"),
    ("disc-spectral_norm", lambda e: MetaGANDiscriminator(spectral_norm="yes"), ValueError, "`spectral_norm`"),
    ("disc-group_size", lambda e: MetaGANDiscriminator(minibatch_std_group_size=0), ValueError,
     "`minibatch_std_group_size`"),
    ("disc-blocks-huge", lambda e: MetaGANDiscriminator(sample_size=16, block_out_channels=(8, 10**6)), ValueError,
     "block_out_channels=.*more than this machine"),
    ("disc-forward-sample", lambda e: tiny_discriminator()(torch.randn(2, 1, 8, 8)), ValueError, "`sample`"),
    ("disc-forward-num_batches", lambda e: tiny_discriminator()(images(4), num_batches=3), ValueError,
     "`num_batches`"),
    ("disc-freeze_blocks", lambda e: tiny_discriminator().freeze_blocks(9), ValueError,
     "`freeze_discriminator_blocks`"),
    # --- MetaGANPipeline constructor and __call__
    ("pipe-generator-type", lambda e: MetaGANPipeline(generator="gen"), TypeError, "`generator`"),
    ("pipe-discriminator-type", lambda e: MetaGANPipeline(generator=tiny_generator(), discriminator=3), TypeError,
     "`discriminator`"),
    ("pipe-discriminator-mismatch", lambda e: MetaGANPipeline(
        generator=tiny_generator(), discriminator=MetaGANDiscriminator(sample_size=32)), ValueError,
     "`discriminator` must match"),
    ("call-batch_size-zero", lambda e: _call(e, batch_size=0), ValueError, "`batch_size`"),
    ("call-batch_size-float", lambda e: _call(e, batch_size=2.5), ValueError, "`batch_size`"),
    ("call-batch_size-huge", lambda e: _call(e, batch_size=10**9), ValueError, "`batch_size`=1000000000 would need"),
    ("call-chunk_size", lambda e: _call(e, chunk_size=0), ValueError, "`chunk_size`"),
    ("call-output_type", lambda e: _call(e, output_type="jpg"), ValueError, "`output_type`"),
    ("call-generator-list", lambda e: _call(e, batch_size=2, generator=[torch.Generator()]), ValueError,
     "`generator`"),
    ("call-generator-type", lambda e: _call(e, generator="seed"), TypeError, "`generator`"),
    ("call-latents-shape", lambda e: _call(e, batch_size=2, latents=latents(3)), ValueError, "`latents`"),
    ("call-latents-nan", lambda e: _call(e, batch_size=1, latents=latents(1) * float("nan")), ValueError,
     "`latents`"),
    ("call-latent_scale-zero", lambda e: _call(e, latent_scale=0.0), ValueError, "`latent_scale`"),
    ("call-latent_scale-nan", lambda e: _call(e, latent_scale=float("nan")), ValueError, "`latent_scale`"),
    ("call-latent_scale-bool", lambda e: _call(e, latent_scale=True), ValueError, "`latent_scale`"),
    # --- adapt()
    ("adapt-num_steps", lambda e: _adapt(e, num_steps=0), ValueError, "`num_steps`"),
    ("adapt-batch_size", lambda e: _adapt(e, batch_size=-1), ValueError, "`batch_size`"),
    ("adapt-batch_size-huge", lambda e: _adapt(e, batch_size=10**7), ValueError,
     r"`batch_size`=10000000 would need about .* available"),
    ("adapt-learning_rate-nan", lambda e: _adapt(e, learning_rate=float("nan")), ValueError, "`learning_rate`"),
    ("adapt-learning_rate-negative", lambda e: _adapt(e, learning_rate=-1e-3), ValueError, "`learning_rate`"),
    ("adapt-r1_gamma-inf", lambda e: _adapt(e, r1_gamma=float("inf")), ValueError, "`r1_gamma`"),
    ("adapt-r1_gamma-nan", lambda e: _adapt(e, r1_gamma=float("nan")), ValueError, "`r1_gamma`"),
    ("adapt-r1_interval", lambda e: _adapt(e, r1_interval=0), ValueError, "`r1_interval`"),
    ("adapt-ema_decay", lambda e: _adapt(e, ema_decay=1.5), ValueError, "`ema_decay`"),
    ("adapt-ema_decay-str", lambda e: _adapt(e, ema_decay="0.9"), ValueError, "`ema_decay`"),
    ("adapt-loss", lambda e: _adapt(e, loss="wgan"), ValueError, "`loss`"),
    ("adapt-augment", lambda e: _adapt(e, augment=("flip",)), ValueError, "`augment`"),
    ("adapt-freeze", lambda e: _adapt(e, freeze_discriminator_blocks=9), ValueError,
     "`freeze_discriminator_blocks`"),
    ("adapt-mixed_precision", lambda e: _adapt(e, mixed_precision="fp8"), ValueError, "mixed_precision"),
    ("adapt-lora_rank", lambda e: _adapt(e, lora_rank=0), ValueError, "`lora_rank`"),
    ("adapt-generator", lambda e: _adapt(e, generator=123), TypeError, "`generator`"),
    ("adapt-callback", lambda e: _adapt(e, callback=5), TypeError, "`callback`"),
    ("adapt-snapshot", lambda e: _adapt(e, snapshot_callback=lambda s, g: None), ValueError, "`snapshot_steps`"),
    ("adapt-no-discriminator", lambda e: tiny_pipeline(discriminator=False).adapt(images(3)), ValueError,
     "discriminator"),
    ("adapt-images-missing-path", lambda e: _adapt(e, images=str(e["root"] / "nope")), ValueError,
     "`images` path .*nope"),
    ("adapt-images-empty-folder", lambda e: _adapt(e, images=str(e["empty"])), ValueError,
     "`images` folder .*empty"),
    ("adapt-images-only-subfolders", lambda e: _adapt(e, images=str(_nested_only_folder(e))), ValueError,
     "1 image.*in subfolders, which are not read"),
    ("adapt-images-nan", lambda e: _adapt(e, images=images(3) * float("nan")), ValueError, "`images`"),
    ("adapt-images-range", lambda e: _adapt(e, images=images(3) * 5), ValueError, r"\[-1, 1\]"),
    ("adapt-images-empty-list", lambda e: _adapt(e, images=[]), ValueError, "`images` is empty"),
    ("adapt-images-shape", lambda e: _adapt(e, images=torch.zeros(2, 2, SIZE, SIZE)), ValueError, "`images`"),
    # --- from_pretrained
    ("load-missing-folder", lambda e: MetaGANPipeline.from_pretrained(str(e["root"] / "nope")), ValueError,
     "`pretrained_model_name_or_path`"),
    ("load-no-model_index", lambda e: MetaGANPipeline.from_pretrained(e["empty"]), ValueError, "model_index.json"),
    ("load-variant-unknown", lambda e: MetaGANPipeline.from_pretrained(e["saved"], variant="fp8"), ValueError,
     "`variant`"),
    ("load-variant-missing", lambda e: MetaGANPipeline.from_pretrained(e["saved"], variant="bf16"), ValueError,
     "variant='bf16'"),
    ("load-dtype-string", lambda e: MetaGANPipeline.from_pretrained(e["saved"], dtype="float16"), TypeError,
     "`dtype`"),
    ("load-dtype-dict-key", lambda e: MetaGANPipeline.from_pretrained(e["saved"], dtype={"unet": torch.float16}),
     ValueError, "`dtype` dict"),
    ("load-dtype-and-torch_dtype", lambda e: MetaGANPipeline.from_pretrained(
        e["saved"], dtype=torch.float16, torch_dtype=torch.float16), ValueError, "torch_dtype"),
    ("load-sidecar-shape", lambda e: MetaGANPipeline.from_pretrained(_wrong_sidecar(e)), ValueError,
     r"metagan_hub\.json holds a JSON list, expected a JSON object"),
    ("load-foreign-component", lambda e: MetaGANPipeline.from_pretrained(_foreign_component(e)), ValueError,
     "component `generator`"),
    ("load-timeout", lambda e: MetaGANPipeline.from_pretrained("user/not-there", timeout=-1), ValueError,
     "`timeout`"),
    # --- save_pretrained / push_to_hub
    ("save-variant", lambda e: e["pipe"].save_pretrained(e["root"] / "v", variant="fp8"), ValueError, "`variant`"),
    ("save-pickle", lambda e: e["pipe"].save_pretrained(e["root"] / "p", safe_serialization=False), ValueError,
     "`safe_serialization"),
    ("save-non-finite", lambda e: _nan_pipeline().save_pretrained(e["root"] / "n"), NonFiniteWeightsError,
     r"`proj\.bias` of component `generator`"),
    ("save-push-without-repo", lambda e: e["pipe"].save_pretrained(e["root"] / "r", push_to_hub=True), ValueError,
     "`repo_id`"),
    ("push-repo_id", lambda e: e["pipe"].push_to_hub("a/b/c"), ValueError, "`repo_id`"),
    ("push-timeout", lambda e: e["pipe"].push_to_hub("user/x", timeout=0), ValueError, "`timeout`"),
    ("push-non-finite", lambda e: _nan_pipeline().push_to_hub("user/x"), NonFiniteWeightsError, "`proj.bias`"),
    ("push-local-path", lambda e: _leaky_pipeline().push_to_hub("user/x"), LocalDataLeakError,
     r"metagan_hub\.json: local path '/home/alice"),
    ("model-push-non-finite", lambda e: _nan_pipeline().generator.push_to_hub("user/x"), NonFiniteWeightsError,
     "`proj.bias`"),
    ("save-card-image-missing", lambda e: e["pipe"].save_pretrained(e["root"] / "c", card_images=["samples.png"]),
     ValueError, "`card_images` entry 'samples.png' is not a file"),
    ("save-card-image-outside", lambda e: e["pipe"].save_pretrained(e["root"] / "c", card_images=["../x.png"]),
     ValueError, "`card_images` entries must be relative"),
    ("push-card-images-without-folder", lambda e: e["pipe"].push_to_hub("user/x", card_images=["samples.png"]),
     ValueError, "needs `save_directory`"),
    # --- LoRA
    ("lora-save-without-adapter", lambda e: e["pipe"].save_lora_weights(e["root"] / "l"), ValueError,
     "no LoRA adapter"),
    ("lora-fuse-without-adapter", lambda e: tiny_pipeline().fuse_lora(), ValueError, "no LoRA adapter"),
    ("lora-load-missing-file", lambda e: tiny_pipeline().load_lora_weights(e["empty"]), ValueError,
     "pytorch_lora_weights.safetensors"),
    ("lora-load-bad-id", lambda e: tiny_pipeline().load_lora_weights("a/b/c"), ValueError,
     "`pretrained_model_name_or_path`"),
]  # fmt: skip


@pytest.mark.parametrize(("action", "exc", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_message_naming_it(env, action, exc, pattern):
    with pytest.raises(exc) as err:
        action(env)
    assert re.search(pattern, str(err.value)), f"{type(err.value).__name__}: {err.value}"


# --- data sources: a few generic constructors with their own argument names
DATA_CASES = [
    ("get_dataset-name", lambda: _data().get_dataset("mnist"), ValueError, "mnist"),
    ("digits-resolution", lambda: _data().DigitsDataset(resolution=1), ValueError, "`resolution`"),
    ("digits-channels", lambda: _data().DigitsDataset(channels=2), ValueError, "`channels`"),
    ("digits-split", lambda: _data().DigitsDataset().split_classes(seed=0, num_val=100), ValueError, "num_val"),
    ("imagefolder-missing", lambda: _data().ImageFolderDataset("/nonexistent/folder", resolution=16),
     (ValueError, FileNotFoundError), "/nonexistent/folder"),
    ("load_images-channels", lambda: _data().load_images(images(2), sample_size=16, channels=2), ValueError,
     "`channels`"),
]  # fmt: skip


@pytest.mark.parametrize(("action", "exc", "pattern"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_data_source_arguments(action, exc, pattern):
    with pytest.raises(exc) as err:
        action()
    assert re.search(pattern, str(err.value)), f"{type(err.value).__name__}: {err.value}"


# --- script arguments: argparse errors name the option
ADAPT = ["--pretrained_model_name_or_path", "org/base"]
SCRIPT_CASES = [
    ("train_metagan", ["--dataset", "digits", "--r1_gamma", "inf"], "--r1_gamma must be a finite number"),
    ("train_metagan", ["--dataset", "digits", "--inner_lr", "nan"], "--inner_lr must be a finite number"),
    ("train_metagan", ["--dataset", "digits", "--shots", "0"], "--shots must be >= 1"),
    ("train_metagan", ["--dataset", "digits", "--ema_decay", "1.5"], "--ema_decay must be in"),
    ("train_metagan", ["--dataset", "digits", "--push_to_hub"], "--push_to_hub needs --hub_model_id"),
    ("adapt_metagan", [*ADAPT, "--train_data_dir", "x", "--learning_rate", "inf"], "--learning_rate must be a finite"),
    ("adapt_metagan", [*ADAPT, "--train_data_dir", "x", "--r1_gamma", "nan"], "--r1_gamma must be a finite number"),
    ("adapt_metagan", ADAPT, "give exactly one of --train_data_dir or --dataset_name"),
    ("adapt_metagan", [*ADAPT, "--train_data_dir", "x", "--push_to_hub"], "--push_to_hub needs --hub_model_id"),
]


@pytest.fixture(scope="module")
def scripts():
    return {name: _script(name) for name in ("train_metagan", "adapt_metagan")}


@pytest.mark.parametrize(
    ("script", "argv", "message"), SCRIPT_CASES, ids=[f"{c[0]}-{c[2][:30]}" for c in SCRIPT_CASES]
)
def test_bad_script_arguments(scripts, capsys, script, argv, message):
    with pytest.raises(SystemExit):
        scripts[script].parse_args(argv)
    assert message in capsys.readouterr().err


def test_catalogue_size():
    # tests/conformance/README.md lists these groups; keep at least 50 cases over the public entry points
    assert len(CASES) + len(DATA_CASES) + len(SCRIPT_CASES) >= 50
