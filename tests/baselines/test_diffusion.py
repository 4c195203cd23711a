# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Tests of the diffusion rival: `scripts/train_diffusion_rival.py` (exact resume, the saved pipeline and card) and
`metagan_hub.baselines.diffusion` (each recipe end to end, the source left untouched, the DomainStudio-style term,
snapshots, deterministic DDIM sampling, clear errors). Everything runs on tiny UNets (16x16 or 8x8, one channel)."""

from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import load_file

from metagan_hub.baselines import (
    DIFFUSION_RECIPES,
    DiffusionAdaptationOutput,
    adapt_diffusion,
    predicted_original,
    sample_diffusion,
)
from metagan_hub.hub.safety import weights_are_finite
from metagan_hub.training.adaptation import NonFiniteLossError
from metagan_hub.training.checkpointing import list_checkpoints
from metagan_hub.training.losses import pairwise_similarity_consistency_loss
from tests.testing_utils import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "train_diffusion_rival.py"
TINY = [
    "--dataset", "digits", "--resolution", "16", "--block_out_channels", "8,16", "--norm_num_groups", "4",
    "--train_batch_size", "8", "--num_grid_images", "4", "--grid_inference_steps", "2", "--logging_steps", "1",
    "--lr_warmup_steps", "1",
]  # fmt: skip


train_rival = load_script("train_diffusion_rival", SCRIPT)


pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def tiny_unet(size: int = 8, channels: int = 1, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )


def tiny_rival(size: int = 8, channels: int = 1) -> DDPMPipeline:
    return DDPMPipeline(unet=tiny_unet(size, channels), scheduler=DDPMScheduler())


def shots(k: int = 5, size: int = 8, channels: int = 1) -> torch.Tensor:
    return torch.rand(k, channels, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------------- the script


def test_pretraining_resume_is_bit_identical(tmp_path):
    uninterrupted, resumed = tmp_path / "a", tmp_path / "b"
    pipe = train_rival.main(
        train_rival.parse_args(TINY + ["--output_dir", str(uninterrupted), "--max_train_steps", "4"])
    )
    assert isinstance(pipe, DDPMPipeline)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    common = TINY + ["--output_dir", str(resumed), "--checkpointing_steps", "2"]
    train_rival.main(train_rival.parse_args(common + ["--max_train_steps", "2"]))
    assert (resumed / "checkpoint-2" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    train_rival.main(train_rival.parse_args(common + ["--max_train_steps", "4", "--resume_from_checkpoint", "latest"]))

    # resuming promises bit-identical weights (same process, thread count and machine)
    for sub in ("unet", "unet_ema"):
        a = load_file(uninterrupted / "checkpoint-4" / sub / "diffusion_pytorch_model.safetensors")
        b = load_file(resumed / "checkpoint-4" / sub / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (sub, key)
    a = load_file(uninterrupted / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = json.loads((resumed / "checkpoint-4" / "training_state.json").read_text())
    assert state["step"] == 4 and state["runs"] == 2 and state["images_seen"] == 32

    # a standard pipeline folder with a model card stating the budget, and a sample grid
    loaded = DDPMPipeline.from_pretrained(resumed)
    assert isinstance(loaded.unet, UNet2DModel) and loaded.unet.config.sample_size == 16
    card = (resumed / "README.md").read_text()
    assert "library_name: diffusers" in card and "## Training budget" in card and "| optimizer steps | 4 |" in card
    assert "CPU time" in card and torch.backends.cpu.get_cpu_capability() in card
    assert (resumed / "samples.png").is_file()
    # no pickled objects of ours: models and EMA are safetensors + JSON
    assert not list((resumed / "checkpoint-4").glob("custom_checkpoint*"))


def test_resume_with_another_configuration_raises(tmp_path):
    train_rival.main(
        train_rival.parse_args(
            TINY + ["--output_dir", str(tmp_path), "--max_train_steps", "1", "--num_grid_images", "0"]
        )
    )
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    args = TINY + ["--output_dir", str(tmp_path), "--max_train_steps", "2", "--resume_from_checkpoint", "latest"]
    with pytest.raises(ValueError, match="learning_rate"):
        train_rival.main(train_rival.parse_args(args + ["--learning_rate", "1e-3"]))


def test_data_from_reads_the_meta_checkpoint_record():
    args = train_rival.parse_args(
        [
            "--data_from",
            str(REPO_ROOT / "checkpoints" / "metagan-kanji-32"),
            "--output_dir",
            "x",
            "--max_train_steps",
            "1",
        ]
    )
    record = json.loads((REPO_ROOT / "checkpoints" / "metagan-kanji-32" / "metagan_hub.json").read_text())
    config = record["training_config"]
    assert args.dataset == config["dataset"] == "kanjivg"
    assert (args.samples_per_class, args.resolution, args.channels) == (
        config["samples_per_class"],
        config["resolution"],
        config["channels"],
    )
    assert (args.split_seed, args.render_seed, args.max_classes) == (
        config["split_seed"],
        config["seed"],
        config["max_classes"],
    )


def test_an_image_folder_is_named_as_in_train_metagan():
    base = ["--output_dir", "x", "--max_train_steps", "1"]
    assert train_rival.parse_args(base).dataset == "kanjivg"
    for data in (["--train_data_dir", "imgs"], ["--dataset", "imagefolder", "--train_data_dir", "imgs"]):
        args = train_rival.parse_args(base + data)
        assert (args.dataset, args.train_data_dir) == ("imagefolder", "imgs")
    with pytest.raises(SystemExit):  # the folder would be ignored
        train_rival.parse_args(base + ["--dataset", "digits", "--train_data_dir", "imgs"])
    with pytest.raises(SystemExit):
        train_rival.parse_args(base + ["--dataset", "imagefolder"])


def meta_record(folder: Path, **config) -> Path:
    folder.mkdir()
    options = {"samples_per_class": 20, "max_classes": None, "resolution": 32, "channels": 1, "split_seed": 0}
    options.update(num_val_classes=None, num_test_classes=None, seed=0, **config)
    (folder / "metagan_hub.json").write_text(json.dumps({"training_config": options}))
    return folder


def test_data_from_a_meta_checkpoint_trained_on_an_image_folder(tmp_path):
    # train_metagan.py records --train_data_dir with dataset None
    folder = meta_record(tmp_path / "meta", dataset=None, train_data_dir="my/classes", dataset_name=None)
    args = train_rival.parse_args(["--data_from", str(folder), "--output_dir", "x", "--max_train_steps", "1"])
    assert (args.dataset, args.train_data_dir) == ("imagefolder", "my/classes")
    hub = meta_record(tmp_path / "hub", dataset=None, train_data_dir=None, dataset_name="someone/glyphs")
    with pytest.raises(ValueError, match="--data_from .*Hugging Face dataset 'someone/glyphs'.*not supported"):
        train_rival.parse_args(["--data_from", str(hub), "--output_dir", "x", "--max_train_steps", "1"])


def test_script_needs_a_budget():
    with pytest.raises(SystemExit):
        train_rival.parse_args(["--output_dir", "x"])


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--learning_rate", "-1", "--learning_rate must be positive, got -1.0"),
        ("--learning_rate", "nan", "--learning_rate must be a finite number, got nan"),
        ("--checkpoints_total_limit", "0", "--checkpoints_total_limit must be an integer >= 1, got 0"),
        ("--ema_max_decay", "2", "--ema_max_decay must be in (0, 1], got 2.0"),
        ("--adam_beta2", "1", "--adam_beta2 must be in [0, 1), got 1.0"),
        ("--max_grad_norm", "-0.5", "--max_grad_norm must be >= 0 (0: off), got -0.5"),
        ("--resolution", "0", "--resolution must be an integer >= 2, got 0"),
        ("--torch_threads", "0", "--torch_threads must be an integer >= 1, got 0"),
        ("--norm_num_groups", "3", "--norm_num_groups 3 must divide every --block_out_channels entry, not [8, 16]"),
        ("--lr_scheduler", "piecewise_constant", "argument --lr_scheduler: invalid choice"),
        ("--ddpm_beta_schedule", "quadratic", "argument --ddpm_beta_schedule: invalid choice"),
    ],
)
def test_bad_script_options_are_refused_before_any_work(option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_rival.parse_args(TINY + ["--output_dir", "unused", "--max_train_steps", "1", option, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("recipe", DIFFUSION_RECIPES)
def test_each_recipe_runs_and_leaves_the_source_untouched(recipe):
    rival = tiny_rival()
    before = state_copy(rival.unet)
    out = adapt_diffusion(
        rival,
        shots(),
        recipe=recipe,
        num_steps=3,
        batch_size=4,
        learning_rate=1e-3,
        generator=torch.Generator().manual_seed(0),
    )
    assert isinstance(out, DiffusionAdaptationOutput) and isinstance(out.pipeline, DDPMPipeline)
    assert out.record["recipe"] == recipe and out.record["steps"] == 3 and out.record["images_seen"] == 12
    # the source weights are promised to stay bit-identical
    after = rival.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    adapted = out.pipeline.unet
    assert adapted is not rival.unet and set(adapted.state_dict()) == set(before)  # LoRA merged: plain keys
    assert not all(torch.allclose(adapted.state_dict()[k], before[k]) for k in before)
    assert not any(p.requires_grad for p in adapted.parameters()) and not adapted.training
    if recipe == "lora":
        assert out.record["trainable_parameters"] < sum(p.numel() for p in rival.unet.parameters()) / 2
        # only the adapted layers changed
        unchanged = ("conv_in.weight", "conv_out.weight", "time_embedding.linear_1.weight")
        assert all(torch.equal(adapted.state_dict()[k], before[k]) for k in unchanged)


def test_lora_with_ema_and_path_and_bare_unet(tmp_path):
    rival = tiny_rival()
    rival.save_pretrained(tmp_path / "rival")
    out = adapt_diffusion(tmp_path / "rival", shots(), recipe="lora", num_steps=2, use_ema=True, lora_rank=2)
    assert out.record["lora_rank"] == 2 and out.record["use_ema"]
    out = adapt_diffusion(rival.unet, shots(), num_steps=1, use_ema=True)
    assert out.record["steps"] == 1


def test_domainstudio_term_changes_training():
    generator_seed = 3
    full = adapt_diffusion(
        tiny_rival(), shots(), recipe="full", num_steps=2, batch_size=6, learning_rate=1e-3,
        generator=torch.Generator().manual_seed(generator_seed),
    )  # fmt: skip
    studio = adapt_diffusion(
        tiny_rival(), shots(), recipe="domainstudio", num_steps=2, batch_size=6, learning_rate=1e-3,
        domainstudio_weight=50.0, generator=torch.Generator().manual_seed(generator_seed),
    )  # fmt: skip
    assert studio.record["domainstudio_weight"] == 50.0
    a, b = full.pipeline.unet.state_dict(), studio.pipeline.unet.state_dict()
    assert not all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


def test_predicted_original_inverts_the_forward_process():
    scheduler = DDPMScheduler()
    clean, noise, t = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 300, 900])
    noisy = scheduler.add_noise(clean, noise, t)
    torch.testing.assert_close(predicted_original(noise, noisy, t, scheduler), clean, atol=2e-3, rtol=0)
    v_scheduler = DDPMScheduler(prediction_type="v_prediction")
    velocity = v_scheduler.get_velocity(clean, noise, t)
    torch.testing.assert_close(predicted_original(velocity, noisy, t, v_scheduler), clean, atol=1e-4, rtol=0)


def test_pairwise_term_zero_for_the_source_and_positive_after_a_perturbation():
    scheduler = DDPMScheduler()
    source = tiny_unet().eval()
    adapted = copy.deepcopy(source)
    clean = shots(6)
    g = torch.Generator().manual_seed(0)
    noise, t = torch.randn(clean.shape, generator=g), torch.randint(0, 1000, (6,), generator=g)
    noisy = scheduler.add_noise(clean, noise, t)
    with torch.no_grad():
        x0_source = predicted_original(source(noisy, t).sample, noisy, t, scheduler)
        x0_same = predicted_original(adapted(noisy, t).sample, noisy, t, scheduler)
    assert float(pairwise_similarity_consistency_loss(x0_source, x0_same)) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for p in adapted.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        x0_moved = predicted_original(adapted(noisy, t).sample, noisy, t, scheduler)
    assert float(pairwise_similarity_consistency_loss(x0_source, x0_moved)) > 1e-4


# ---------------------------------------------------------------------------------------------------- snapshots


def test_snapshots_at_steps_fire_with_eval_copies():
    seen = []

    def callback(info, unet):
        assert isinstance(unet, UNet2DModel) and not unet.training
        seen.append((info["step"], info["requested_step"], unet))

    out = adapt_diffusion(tiny_rival(), shots(), num_steps=3, snapshot_steps=[3, 1], snapshot_callback=callback)
    assert [(s, r) for s, r, _ in seen] == [(1, 1), (3, 3)]
    assert seen[0][2] is not seen[1][2] and seen[1][2] is not out.pipeline.unet
    # the step-1 copy is frozen in time: it differs from the step-3 one
    a, b = seen[0][2].state_dict(), seen[1][2].state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert [s["step"] for s in out.record["snapshots"]] == [1, 3]


def test_snapshots_at_seconds_fire_and_their_time_is_not_counted():
    seen = []
    pause = 0.3

    def callback(info, unet):
        seen.append(info)
        time.sleep(pause)

    start = time.perf_counter()
    out = adapt_diffusion(
        tiny_rival(), shots(), recipe="lora", max_seconds=0.2, snapshot_seconds=[0.2, 0.01], snapshot_callback=callback
    )
    wall = time.perf_counter() - start
    assert [s["requested_seconds"] for s in seen] == [0.01, 0.2]
    assert all(s["seconds"] >= s["requested_seconds"] for s in seen)
    assert out.record["seconds"] >= 0.2
    assert wall >= out.record["seconds"] + 2 * pause  # the callbacks' time was excluded from the budget
    assert seen[-1]["step"] == out.record["steps"]


# ---------------------------------------------------------------------------------------------------- sampling


def test_sampling_is_deterministic_for_a_seeded_generator():
    rival = tiny_rival()
    a = sample_diffusion(rival, 5, num_inference_steps=3, batch_size=2, generator=torch.Generator().manual_seed(7))
    b = sample_diffusion(rival, 5, num_inference_steps=3, batch_size=2, generator=torch.Generator().manual_seed(7))
    c = sample_diffusion(rival, 5, num_inference_steps=3, batch_size=2, generator=torch.Generator().manual_seed(8))
    assert a.shape == (5, 1, 8, 8) and a.dtype == torch.float32
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    assert torch.equal(a, b)  # the same object twice with the same seed: promised bit-identical
    assert not torch.allclose(a, c)
    assert rival.unet.training  # its mode is restored


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"recipe": "dreambooth", "num_steps": 1}, "recipe"),
        ({"recipe": "lora", "lora_rank": 0, "num_steps": 1}, "lora_rank"),
        ({"lora_rank": -2, "num_steps": 1}, "lora_rank"),
        ({}, "num_steps"),
        ({"num_steps": 2, "max_seconds": 1.0}, "exactly one"),
        ({"num_steps": 0}, "num_steps"),
        ({"max_seconds": -1.0}, "max_seconds"),
        ({"max_seconds": 1.0, "snapshot_seconds": [0.0], "snapshot_callback": print}, "snapshot_seconds"),
        ({"max_seconds": 1.0, "snapshot_seconds": [-0.5], "snapshot_callback": print}, "snapshot_seconds"),
        ({"max_seconds": 1.0, "snapshot_seconds": [2.0], "snapshot_callback": print}, "snapshot_seconds"),
        ({"num_steps": 2, "snapshot_steps": [0], "snapshot_callback": print}, "snapshot_steps"),
        ({"num_steps": 2, "snapshot_steps": [3], "snapshot_callback": print}, "snapshot_steps"),
        ({"num_steps": 2, "snapshot_steps": [1]}, "snapshot_callback"),
        ({"num_steps": 2, "snapshot_callback": print}, "snapshot_callback"),
        ({"num_steps": 1, "learning_rate": 0}, "learning_rate"),
        ({"num_steps": 1, "batch_size": 0}, "batch_size"),
        ({"num_steps": 1, "recipe": "domainstudio", "batch_size": 2}, "batch_size"),
        ({"num_steps": 1, "domainstudio_weight": -1.0}, "domainstudio_weight"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        adapt_diffusion(tiny_rival(), shots(), **kwargs)


@pytest.mark.parametrize("bad", [shots(size=16), shots(channels=3), shots()[:, :, :, :4]])
def test_a_rival_that_does_not_match_the_shots_raises(bad):
    with pytest.raises(ValueError, match="pipeline_or_path"):
        adapt_diffusion(tiny_rival(), bad, num_steps=1)


def test_bad_shots_and_models_raise():
    with pytest.raises(ValueError, match="shots"):
        adapt_diffusion(tiny_rival(), shots() * 3, num_steps=1)
    with pytest.raises(ValueError, match="shots"):
        adapt_diffusion(tiny_rival(), shots()[0], num_steps=1)
    with pytest.raises(TypeError, match="pipeline_or_path"):
        adapt_diffusion(torch.nn.Linear(2, 2), shots(), num_steps=1)
    with pytest.raises(ValueError, match="num_images"):
        sample_diffusion(tiny_rival(), 0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sample_diffusion(tiny_rival(), 1, num_inference_steps=0)


def test_a_float16_rival_is_trained_in_float32_and_returned_in_float16(caplog):
    rival = tiny_rival()
    rival.unet.to(dtype=torch.float16)  # e.g. a rival saved with --save_fp16
    before = state_copy(rival.unet)
    out = adapt_diffusion(rival, shots(), num_steps=1, learning_rate=1e-3)
    assert next(out.pipeline.unet.parameters()).dtype == torch.float16
    assert all(torch.equal(before[k], v) for k, v in rival.unet.state_dict().items())


def test_a_diverging_adaptation_raises_instead_of_returning_nan_weights():
    rival = tiny_rival()
    before = state_copy(rival.unet)
    seen = []
    with pytest.raises(NonFiniteLossError, match=r"Lower `learning_rate` \(got 100\)"):
        adapt_diffusion(
            rival,
            shots(),
            num_steps=20,
            learning_rate=100.0,
            snapshot_steps=list(range(1, 21)),
            snapshot_callback=lambda info, unet: seen.append(weights_are_finite(unet)),
            generator=torch.Generator().manual_seed(0),
        )
    assert all(seen)  # no snapshot of non-finite weights reached the caller
    assert all(torch.equal(before[k], v) for k, v in rival.unet.state_dict().items())
    # finite in float32 but beyond float16's range once cast back for a float16 rival
    rival.unet.to(dtype=torch.float16)
    with pytest.raises(NonFiniteLossError, match="NaN or infinite after step 1"):
        adapt_diffusion(rival, shots(), num_steps=1, learning_rate=1e6, generator=torch.Generator().manual_seed(0))


def test_no_spurious_dtype_warning(caplog):
    with caplog.at_level("WARNING"):
        adapt_diffusion(tiny_rival(), shots(), recipe="domainstudio", num_steps=1, batch_size=3)
    assert "kept in float32" not in caplog.text


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    original = signal.getsignal(signal.SIGTERM)

    def send_sigterm_once_caught():
        deadline = time.monotonic() + 300
        while signal.getsignal(signal.SIGTERM) is original and time.monotonic() < deadline:
            time.sleep(0.05)
        if signal.getsignal(signal.SIGTERM) is not original:  # only once the script catches it
            os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_sigterm_once_caught, daemon=True)
    common = TINY + ["--output_dir", str(tmp_path), "--num_grid_images", "0"]
    sender.start()
    result = train_rival.main(train_rival.parse_args(common + ["--max_train_steps", "100000"]))
    sender.join()
    assert result is None and signal.getsignal(signal.SIGTERM) is original  # handlers restored
    (step, path), *_ = list_checkpoints(tmp_path)
    assert 1 <= step < 100000 and not (tmp_path / "model_index.json").exists()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    args = common + ["--max_train_steps", str(step + 1), "--resume_from_checkpoint", "latest"]
    assert isinstance(train_rival.main(train_rival.parse_args(args)), DDPMPipeline)
    assert json.loads((tmp_path / "training_record.json").read_text())["step"] == step + 1


def test_a_diverging_run_stops_and_never_saves_nan_weights(tmp_path):
    args = TINY + ["--output_dir", str(tmp_path), "--max_train_steps", "8", "--checkpointing_steps", "1"]
    with pytest.raises(RuntimeError, match=r"NaN or infinite .* Lower --learning_rate \(got 1000\)"):
        train_rival.main(train_rival.parse_args(args + ["--learning_rate", "1e3"]))
    checkpoints = list_checkpoints(tmp_path)
    assert checkpoints and not (tmp_path / "model_index.json").exists()
    for _, path in checkpoints:  # every checkpoint written holds finite weights
        for sub in ("unet", "unet_ema"):
            weights = load_file(os.path.join(path, sub, "diffusion_pytorch_model.safetensors"))
            assert all(bool(torch.isfinite(t).all()) for t in weights.values())


# ------------------------------------------------------------------------------------------------- the bundled rival

BUNDLED_RIVAL = REPO_ROOT / "checkpoints" / "ddpm-rival-kanji-32"


def test_bundled_rival_is_a_small_standard_pipeline_with_both_budgets_in_its_card():
    files = [p for p in BUNDLED_RIVAL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 10 * 2**20
    assert not any(p.name.startswith("checkpoint-") for p in BUNDLED_RIVAL.iterdir())
    weights = load_file(str(BUNDLED_RIVAL / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float16}
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())

    pipe = DDPMPipeline.from_pretrained(BUNDLED_RIVAL)
    assert pipe.unet.config.sample_size == 32 and pipe.unet.config.in_channels == 1
    images = sample_diffusion(pipe, 2, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 32, 32) and bool(torch.isfinite(images).all())

    record = json.loads((BUNDLED_RIVAL / "training_record.json").read_text(encoding="utf-8"))
    card = (BUNDLED_RIVAL / "README.md").read_text(encoding="utf-8")
    assert record["config"]["data_from"].endswith("metagan-kanji-32")
    # its budget (CPU minutes of its own training) and the Meta-GAN's (pretraining + meta-training) side by side
    assert f"{record['cpu_seconds'] / 60:.1f} min" in card
    assert "2400 steps" in card and "283 reptile meta-steps" in card
