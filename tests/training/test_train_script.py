# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Tests of `scripts/train_metagan.py`: end to end under `accelerate launch` (two CPU processes), exact resume,
checkpoint handling, the model card, Hub upload, and clear errors for bad input.

Most tests call `main(parse_args([...]))` in-process with a tiny model on the digits data (16x16, a few meta steps);
the Accelerate state is reset around each of them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import PartialState
from PIL import Image
from safetensors.torch import load_file

from metagan_hub import MetaGANPipeline
from metagan_hub.data import StrokeJitter
from metagan_hub.training.meta_learning import NonFiniteMetaStepError
from tests.testing_utils import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "train_metagan.py"
TINY = [
    "--dataset", "digits", "--resolution", "16", "--latent_dim", "8", "--block_out_channels", "16,8",
    "--num_val_classes", "1", "--num_test_classes", "2", "--meta_batch_size", "2", "--inner_steps", "2",
    "--inner_batch_size", "4", "--num_validation_classes", "0", "--logging_steps", "1",
]  # fmt: skip


train_metagan = load_script("train_metagan", SCRIPT)


pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def run(*extra: str):
    return train_metagan.main(train_metagan.parse_args([*TINY, *extra]))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for sub in ("generator", "discriminator"):
        for key, value in load_file(folder / sub / "diffusion_pytorch_model.safetensors").items():
            out[f"{sub}.{key}"] = value
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------- end to end


def test_accelerate_launch_two_processes_writes_a_loadable_pipeline_matching_one_process(tmp_path):
    out = tmp_path / "two"
    # SGD outer steps: Adam's ~lr * sign(update) first steps would amplify float summation-order noise
    extra = ["--outer_optimizer", "sgd", "--meta_lr", "0.5", "--max_meta_steps", "3", "--checkpointing_steps", "2"]
    validation = ["--num_validation_classes", "1", "--validation_adapt_steps", "2", "--validation_samples", "8"]
    validation += ["--validation_shots", "3", "--hub_token", "hf_secret_value_123"]
    cmd = [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(SCRIPT), *TINY, *extra, *validation, "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # a loadable pipeline that generates
    pipe = MetaGANPipeline.from_pretrained(out)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 1) and np.isfinite(images).all()
    assert pipe.discriminator is not None

    # model card: training configuration, data, validation numbers; no secrets
    training = pipe.card_info["training"]
    assert training["algorithm"] == "reptile" and training["num_processes"] == 2 and training["meta_steps"] == 3
    assert "validation_heldout_distance" in training and np.isfinite(training["validation_heldout_distance"])
    assert "digits" in pipe.card_info["data_notes"]
    card = (out / "README.md").read_text()
    assert "validation_heldout_distance" in card and "hf_secret_value_123" not in card
    assert "hf_secret_value_123" not in (out / "metagan_hub.json").read_text()
    assert Image.open(out / "validation" / "step-000003.png").size[0] > 16
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    state = json.loads((out / "checkpoint-2" / "training_state.json").read_text())
    assert state["step"] == 2 and state["num_processes"] == 2
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (out / "checkpoint-2").iterdir()}

    # --meta_batch_size counts tasks over all processes: one process follows the same trajectory
    one = tmp_path / "one"
    run(*extra, "--output_dir", str(one))
    w1, w2 = weights(one), weights(out)
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-5, atol=1e-6)


def test_push_to_hub_needs_a_model_id():
    with pytest.raises(SystemExit):
        train_metagan.parse_args([*TINY, "--push_to_hub"])


def test_push_to_hub_uploads_pipeline_and_card(tmp_path, hub_server, hub_repo_id):
    run(
        "--max_meta_steps", "2", "--checkpointing_steps", "1", "--output_dir", str(tmp_path),
        "--push_to_hub", "--hub_model_id", hub_repo_id,
    )  # fmt: skip
    files = hub_server.files(hub_repo_id)
    assert {"model_index.json", "README.md", "generator/diffusion_pytorch_model.safetensors"} <= set(files)
    assert "discriminator/diffusion_pytorch_model.safetensors" in files
    assert not any("checkpoint" in path or path.endswith((".pkl", ".pt", ".bin")) for path in files)
    assert (tmp_path / "checkpoint-2").is_dir()  # kept locally


@pytest.mark.parametrize("options", [["--algorithm", "fomaml"], ["--algorithm", "pretrain"], ["--preset", "figr"]])
def test_every_algorithm_trains_and_records_its_configuration(tmp_path, options):
    pipe = run(*options, "--max_meta_steps", "2", "--inner_steps", "2", "--output_dir", str(tmp_path))
    training = pipe.card_info["training"]
    assert training["algorithm"] == pipe.card_info["meta_learning_config"]["algorithm"]
    assert training["algorithm"] == ("reptile" if "figr" in options else options[1])
    if "figr" in options:
        assert (training["loss"], training["inner_optimizer"], training["shots"]) == ("wgan-gp", "sgd", 4)
    reloaded = MetaGANPipeline.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(pipe.generator.parameters(), reloaded.generator.parameters()))


def test_init_from_a_saved_pipeline(tmp_path):
    first = run("--max_meta_steps", "1", "--output_dir", str(tmp_path / "first"))
    second = run("--max_meta_steps", "1", "--init_from", str(tmp_path / "first"), "--output_dir", str(tmp_path / "b"))
    assert second.generator.config.block_out_channels == first.generator.config.block_out_channels
    assert any(not torch.equal(a, b) for a, b in zip(first.generator.parameters(), second.generator.parameters()))
    with pytest.raises(ValueError, match="--resolution 32"):
        run("--resolution", "32", "--init_from", str(tmp_path / "first"), "--output_dir", str(tmp_path / "c"))


def test_mode_seeking_weight_reaches_the_learner_and_the_card(tmp_path):
    pipe = run("--algorithm", "fomaml", "--max_meta_steps", "1", "--mode_seeking_weight", "0.2",
               "--output_dir", str(tmp_path))  # fmt: skip
    assert pipe.card_info["training"]["mode_seeking_weight"] == 0.2
    assert pipe.card_info["meta_learning_config"]["mode_seeking_weight"] == 0.2
    with pytest.raises(SystemExit):
        train_metagan.parse_args([*TINY, "--mode_seeking_weight", "-1"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--shot_augment", "-1"], "--shot_augment must be a number between 0 (off) and 3, got -1.0"),
        (["--shot_augment", "4"], "--shot_augment must be a number between 0 (off) and 3, got 4.0"),
        (["--shot_augment", "nan"], "--shot_augment must be a finite number, got nan"),
        (
            ["--algorithm", "pretrain", "--shot_augment", "1"],
            "--shot_augment needs an inner loop: --algorithm reptile or fomaml, got pretrain",
        ),
    ],
)
def test_shot_augment_bad_input(extra, message, capsys):
    with pytest.raises(SystemExit):
        train_metagan.parse_args([*TINY, *extra])
    assert message in capsys.readouterr().err


def test_query_coverage_reaches_the_card_and_resumes_bit_for_bit(tmp_path):
    common = ["--max_meta_steps", "2", "--checkpointing_steps", "1", "--query_coverage_weight", "0.5",
              "--query_coverage_samples", "4"]  # fmt: skip
    full = run(*common, "--output_dir", str(tmp_path / "full"))
    assert full.card_info["training"]["queries"] == 5  # default: as many query images as shots
    assert full.card_info["training"]["query_coverage_weight"] == 0.5
    assert full.card_info["meta_learning_config"]["query_coverage_samples"] == 4
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full" / "checkpoint-1", resumed / "checkpoint-1")
    run(*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest")
    a, b = weights(tmp_path / "full"), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the term changes the trajectory (same tasks: the query images are drawn either way)
    run("--max_meta_steps", "2", "--queries", "5", "--output_dir", str(tmp_path / "plain"))
    plain = weights(tmp_path / "plain")
    assert any(not torch.equal(a[k], plain[k]) for k in a if k.startswith("generator."))


def test_feature_space_coverage_trains_its_classifier_on_training_classes_and_resumes_bit_for_bit(tmp_path):
    common = ["--max_meta_steps", "2", "--checkpointing_steps", "1", "--query_coverage_weight", "0.5",
              "--query_coverage_samples", "4", "--query_coverage_space", "features",
              "--query_coverage_classifier_epochs", "1"]  # fmt: skip
    full = run(*common, "--output_dir", str(tmp_path / "full"))
    assert full.card_info["training"]["query_coverage_space"] == "features"
    assert full.card_info["meta_learning_config"]["query_coverage_space"] == "features"
    folder = tmp_path / "full" / train_metagan.COVERAGE_CLASSIFIER_DIR
    config = json.loads((folder / "config.json").read_text())
    assert len(config["classes"]) == 7 and config["training"]["recipe"]["num_epochs"] == 1  # 10 - 1 val - 2 test
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full" / "checkpoint-1", resumed / "checkpoint-1")
    run(*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest")  # trains the classifier again
    a, b = weights(tmp_path / "full"), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a different space changes the trajectory; a classifier of another recipe in the folder is refused
    run(*common[:-4], "--output_dir", str(tmp_path / "pixels"))
    pixels = weights(tmp_path / "pixels")
    assert any(not torch.equal(a[k], pixels[k]) for k in a if k.startswith("generator."))
    with pytest.raises(ValueError, match="coverage classifier of another run"):
        run(*common[:-1], "2", "--max_meta_steps", "3", "--output_dir", str(tmp_path / "full"))


def test_proximal_weight_reaches_the_card_changes_the_run_and_resumes_bit_for_bit(tmp_path):
    run("--max_meta_steps", "1", "--output_dir", str(tmp_path / "start"))
    common = ["--max_meta_steps", "3", "--checkpointing_steps", "1", "--outer_optimizer", "sgd", "--meta_lr", "0.5",
              "--init_from", str(tmp_path / "start")]  # fmt: skip
    full = run(*common, "--proximal_weight", "0.5", "--output_dir", str(tmp_path / "full"))
    assert full.card_info["training"]["proximal_weight"] == 0.5
    assert full.card_info["meta_learning_config"]["proximal_weight"] == 0.5
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full" / "checkpoint-2", resumed / "checkpoint-2")
    run(*common, "--proximal_weight", "0.5", "--output_dir", str(resumed), "--resume_from_checkpoint", "latest")
    a, b = weights(tmp_path / "full"), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the pull holds the run nearer its start than the same run without it
    plain = run(*common, "--output_dir", str(tmp_path / "plain"))
    assert not plain.card_info["meta_learning_config"].get("proximal_weight")
    start = weights(tmp_path / "start")

    def distance(w: dict[str, torch.Tensor]) -> float:
        return sum((w[k] - start[k]).pow(2).sum().item() for k in start)

    assert 0 < distance(a) < distance(weights(tmp_path / "plain"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--proximal_weight", "-1"], "--proximal_weight must be a non-negative finite number, got -1.0"),
        (["--proximal_weight", "nan"], "--proximal_weight must be a finite number, got nan"),
        (
            ["--algorithm", "pretrain", "--proximal_weight", "1"],
            "--proximal_weight needs an inner loop: --algorithm reptile or fomaml, got pretrain",
        ),
    ],
)
def test_proximal_weight_bad_input(extra, message, capsys):
    with pytest.raises(SystemExit):
        train_metagan.parse_args([*TINY, *extra])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--query_coverage_space", "features"], "needs --query_coverage_weight > 0"),
        (["--query_coverage_weight", "1", "--query_coverage_classifier_epochs", "0"], "must be >= 1, got 0"),
        (["--query_coverage_weight", "1", "--query_coverage_space", "logits"], "invalid choice: 'logits'"),
    ],
)
def test_feature_space_coverage_bad_input(extra, message, capsys):
    with pytest.raises(SystemExit):
        train_metagan.parse_args([*TINY, *extra])
    assert message in capsys.readouterr().err


def test_max_train_minutes_stops_early_saves_and_resumes(tmp_path):
    # a budget spent after the first step: the run stops there, checkpoints it and saves the pipeline as usual
    pipe = run("--max_meta_steps", "5", "--checkpointing_steps", "3", "--max_train_minutes", "1e-9",
               "--output_dir", str(tmp_path))  # fmt: skip
    assert pipe.card_info["training"]["meta_steps"] == 1 and pipe.card_info["training"]["steps_this_run"] == 1
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1"]
    assert (tmp_path / "model_index.json").is_file()
    resumed = run("--max_meta_steps", "2", "--output_dir", str(tmp_path), "--resume_from_checkpoint", "latest")
    assert resumed.card_info["training"]["meta_steps"] == 2 and resumed.card_info["training"]["steps_this_run"] == 1


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_train_minutes_must_be_positive(value, capsys):
    with pytest.raises(SystemExit):
        train_metagan.parse_args([*TINY, "--max_train_minutes", value])
    assert "--max_train_minutes must be > 0" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- checkpoints


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path):
    common = ["--max_meta_steps", "4", "--ema_decay", "0.9", "--checkpointing_steps", "1"]
    full = tmp_path / "full"
    run(*common, "--checkpoints_total_limit", "2", "--output_dir", str(full))
    assert sorted(p.name for p in full.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]  # pruned

    resumed = tmp_path / "resumed"
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    (resumed / "checkpoint-4.tmp").mkdir()  # a save killed half-way: never picked as the latest
    (resumed / "checkpoint-4.tmp" / "partial").write_text("x")
    run(*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest")

    assert not (resumed / "checkpoint-4.tmp").exists()
    a, b = weights(full), weights(resumed)  # final pipelines (EMA generator)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = weights(full / "checkpoint-4"), weights(resumed / "checkpoint-4")  # raw meta-weights
    assert all(torch.equal(a[k], b[k]) for k in a)
    ema_a = load_file(full / "checkpoint-4" / "generator_ema" / "diffusion_pytorch_model.safetensors")
    ema_b = load_file(resumed / "checkpoint-4" / "generator_ema" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_resume_latest_without_checkpoints_starts_fresh(tmp_path):
    pipe = run("--max_meta_steps", "1", "--output_dir", str(tmp_path), "--resume_from_checkpoint", "latest")
    assert pipe is not None and (tmp_path / "model_index.json").is_file()


def test_resume_from_a_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        run("--max_meta_steps", "1", "--output_dir", str(tmp_path), "--resume_from_checkpoint", "checkpoint-7")
    (tmp_path / "checkpoint-9").mkdir()
    with pytest.raises(ValueError, match="not a complete training checkpoint"):
        run("--max_meta_steps", "1", "--output_dir", str(tmp_path), "--resume_from_checkpoint", "checkpoint-9")


def test_resume_from_another_configuration_names_the_keys(tmp_path):
    run("--max_meta_steps", "1", "--checkpointing_steps", "1", "--output_dir", str(tmp_path))
    with pytest.raises(ValueError, match=r"another configuration: keys \['inner_steps', 'shots'\] differ"):
        run(
            "--max_meta_steps", "2", "--output_dir", str(tmp_path), "--resume_from_checkpoint", "latest",
            "--inner_steps", "3", "--shots", "4",
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("num_gpus", "refused"), [(0, False), (1, True), (2, False)])
def test_cpu_processes_on_a_gpu_machine_need_hidden_gpus(monkeypatch, num_gpus, refused):
    class State:  # what PartialState reports for 2 gloo CPU processes
        num_processes = 2
        device = torch.device("cpu")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: num_gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: num_gpus)
    if refused:
        with pytest.raises(RuntimeError, match="CUDA_VISIBLE_DEVICES= ACCELERATE_USE_CPU=true"):
            train_metagan.check_cpu_processes_on_gpu_machine(State())
    else:
        train_metagan.check_cpu_processes_on_gpu_machine(State())
    State.num_processes = 1  # one process never reaches a multi-process barrier
    train_metagan.check_cpu_processes_on_gpu_machine(State())


def test_fp16_on_cpu_is_refused_with_a_bf16_hint(tmp_path):
    with pytest.raises(ValueError, match="bf16"):
        run("--mixed_precision", "fp16", "--output_dir", str(tmp_path))


def test_too_few_training_classes_for_the_meta_batch(tmp_path):
    with pytest.raises(ValueError, match=r"--meta_batch_size 6"):
        run(
            "--meta_batch_size",
            "6",
            "--num_val_classes",
            "2",
            "--num_test_classes",
            "3",
            "--output_dir",
            str(tmp_path),
        )


def test_too_few_classes_for_the_split(tmp_path):
    with pytest.raises(ValueError, match="too few for the class split"):
        run("--num_val_classes", "5", "--num_test_classes", "5", "--output_dir", str(tmp_path))


def test_shots_larger_than_a_class(tmp_path):
    data = tmp_path / "data"
    for c, count in (("a", 6), ("b", 6), ("c", 3), ("d", 6), ("e", 6)):
        (data / c).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(data / c / f"{i}.png")
    args = ["--train_data_dir", str(data), "--resolution", "16", "--latent_dim", "8", "--block_out_channels", "16,8"]
    args += ["--num_val_classes", "0", "--num_test_classes", "1", "--split_seed", "3", "--meta_batch_size", "2"]
    args += ["--num_validation_classes", "0", "--shots", "4", "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match=r"class 'c'.* has 3 image\(s\), fewer than shots"):
        train_metagan.main(train_metagan.parse_args(args))


def test_non_finite_losses_stop_the_run_without_saving(tmp_path):
    with pytest.raises(NonFiniteMetaStepError, match="in a row"):
        run(
            "--inner_optimizer", "sgd", "--inner_lr", "1e30", "--max_nonfinite_steps", "2", "--max_meta_steps", "5",
            "--checkpointing_steps", "1", "--output_dir", str(tmp_path),
        )  # fmt: skip
    assert not (tmp_path / "model_index.json").exists()
    # the skipped step left the meta-weights untouched: a checkpoint after it holds finite weights only
    for checkpoint in tmp_path.glob("checkpoint-*"):
        assert all(torch.isfinite(v).all() for v in weights(checkpoint).values())


def test_validation_reports_statistic_spreads(tmp_path):
    from metagan_hub.metrics import IMAGE_STATISTICS

    run(
        "--max_meta_steps", "1", "--num_validation_classes", "2", "--validation_adapt_steps", "1",
        "--validation_samples", "6", "--validation_shots", "3", "--output_dir", str(tmp_path),
    )  # fmt: skip
    result = json.loads((tmp_path / "validation.jsonl").read_text().splitlines()[-1])
    for key in ("statistic_spread", "statistic_spread_unadapted"):
        assert list(result[key]) == list(IMAGE_STATISTICS)
        assert all(np.isfinite(v) and v >= 0 for v in result[key].values()), result[key]
    # not simply a copy of each other: the adapted samples differ from the unadapted ones
    assert result["statistic_spread"] != result["statistic_spread_unadapted"]


def test_validation_needs_held_out_images(tmp_path):
    with pytest.raises(ValueError, match="--validation_shots"):
        run("--num_validation_classes", "1", "--validation_shots", "500", "--output_dir", str(tmp_path))


# ---------------------------------------------------------------------------------------------------- arguments


def test_figr_preset_and_explicit_overrides():
    args = train_metagan.parse_args(["--dataset", "digits", "--preset", "figr"])
    assert (args.algorithm, args.loss, args.inner_steps, args.inner_lr, args.inner_optimizer) == (
        "reptile",
        "wgan-gp",
        10,
        1e-3,
        "sgd",
    )
    assert (args.meta_lr, args.outer_optimizer, args.shots, args.augment, args.wgan_drift) == (
        1e-4,
        "adam",
        4,
        "none",
        0,
    )
    args = train_metagan.parse_args(["--dataset", "digits", "--preset", "figr", "--inner_steps", "3", "--shots", "2"])
    assert (args.inner_steps, args.shots, args.loss) == (3, 2, "wgan-gp")
    default = train_metagan.parse_args(["--dataset", "digits"])
    assert (default.algorithm, default.loss, default.shots, default.queries) == ("reptile", "nonsaturating", 5, 0)
    assert train_metagan.parse_args(["--dataset", "digits", "--algorithm", "fomaml"]).queries == 5


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--dataset", "digits", "--train_data_dir", "x"],
        ["--dataset", "digits", "--algorithm", "fomaml", "--queries", "0"],
        ["--dataset", "digits", "--query_coverage_weight", "1", "--queries", "0"],
        ["--dataset", "digits", "--query_coverage_weight", "-1"],
        ["--dataset", "digits", "--query_coverage_weight", "1", "--algorithm", "pretrain"],
        ["--dataset", "digits", "--query_coverage_samples", "0"],
        ["--dataset", "digits", "--shots", "0"],
        ["--dataset", "digits", "--ema_decay", "1.5"],
        ["--dataset", "mnist"],
    ],
)
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        train_metagan.parse_args(argv)


@pytest.mark.parametrize("option", ["--split_seed", "--seed"])
def test_negative_seeds_are_refused_naming_the_option(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_metagan.parse_args(["--dataset", "digits", option, "-1"])
    assert exit_info.value.code == 2 and f"{option} must be >= 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "digits", "--stroke_taper", "0.5"], "--stroke_* options shape KanjiVG renders: they need "
         "--dataset kanjivg, got 'digits'"),
        (["--dataset", "kanjivg", "--stroke_width_contrast", "1.5"], "--stroke_* options: `width_contrast` must be "
         "a number in [0, 1), got 1.5"),
        (["--dataset", "kanjivg", "--stroke_pixelate", "-0.1"], "`pixelate` must be a number in [0, 1], got -0.1"),
        (["--dataset", "kanjivg", "--stroke_width", "5", "3"], "--stroke_width must be LOW HIGH with 0 < LOW <= HIGH"),
        (["--dataset", "kanjivg", "--stroke_width", "3", "inf"], "both finite, got [3.0, inf]"),
    ],
)  # fmt: skip
def test_stroke_style_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit):
        train_metagan.parse_args(argv)
    assert message in capsys.readouterr().err


def test_stroke_styles_reach_the_renders_and_the_run_configuration(tmp_path):
    common = ["--dataset", "kanjivg", "--max_classes", "12", "--samples_per_class", "3", "--resolution", "16",
              "--cache_dir", str(tmp_path)]  # fmt: skip
    plain = train_metagan.parse_args(common)
    styled = train_metagan.parse_args(
        [*common, "--stroke_width_contrast", "0.5", "--stroke_pixelate", "0.25", "--stroke_width", "3", "9"]
    )
    plain_data, plain_text = train_metagan.build_dataset(plain)
    styled_data, styled_text = train_metagan.build_dataset(styled)
    assert plain_data.jitter == StrokeJitter() and "stroke styles" not in plain_text
    assert styled_data.jitter == StrokeJitter(width_contrast=0.5, pixelate=0.25, stroke_width=(3.0, 9.0))
    assert "stroke styles" in styled_text
    assert not torch.equal(plain_data.class_images_uint8(0), styled_data.class_images_uint8(0))
    plain_run = train_metagan.run_config(plain, train_metagan.learning_config(plain, "no"))
    styled_run = train_metagan.run_config(styled, train_metagan.learning_config(styled, "no"))
    assert "stroke_style" not in plain_run  # default renders: checkpoints from before the options resume unchanged
    assert styled_run["stroke_style"] == {"width_contrast": 0.5, "pixelate": 0.25, "stroke_width": [3.0, 9.0]}
    assert {k: v for k, v in styled_run.items() if k != "stroke_style"} == plain_run


# ---------------------------------------------------------------------------------------------------- yardstick

YARDSTICK = ["--num_val_classes", "3", "--yardstick_classes", "2", "--yardstick_adapt_steps", "2",
             "--yardstick_samples", "8", "--validation_steps", "1"]  # fmt: skip


def test_select_best_keeps_the_pipeline_with_the_best_yardstick_score(tmp_path):
    pipe = run(*YARDSTICK, "--select_best", "--max_meta_steps", "4", "--meta_lr", "0.5", "--outer_optimizer", "sgd",
               "--checkpointing_steps", "1", "--output_dir", str(tmp_path))  # fmt: skip
    lines = [json.loads(line) for line in (tmp_path / "yardstick.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert all(r["num_classes"] == 2 and r["adapt_steps"] == 2 and r["samples_per_class"] == 8 for r in lines)
    best = json.loads((tmp_path / "best" / "yardstick.json").read_text())
    scores = [r["score"] for r in lines]
    assert best["score"] == max(scores) and best["step"] == lines[scores.index(max(scores))]["step"]
    # best/ holds the meta-weights of that step (no EMA: the checkpoint's raw weights) as a loadable pipeline
    a, b = weights(tmp_path / "best"), weights(tmp_path / f"checkpoint-{best['step']}")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loaded = MetaGANPipeline.from_pretrained(tmp_path / "best")
    assert loaded.card_info["training"]["yardstick_score"] == pytest.approx(best["score"], abs=1e-5)
    assert f"at meta step {best['step']}: 2 validation classes" in loaded.card_info["training"]["yardstick"]
    # the final pipeline records the last yardstick
    assert pipe.card_info["training"]["yardstick_score"] == pytest.approx(lines[-1]["score"], abs=1e-5)
    assert not (tmp_path / "best.tmp").exists() and not (tmp_path / "best.old").exists()


def test_a_resumed_run_keeps_its_best_and_a_fresh_run_replaces_it(tmp_path):
    common = [*YARDSTICK, "--select_best", "--max_meta_steps", "2", "--checkpointing_steps", "1"]
    run(*common, "--output_dir", str(tmp_path))
    record = tmp_path / "best" / "yardstick.json"
    unbeatable = {**json.loads(record.read_text()), "score": 99.0, "step": 0}
    record.write_text(json.dumps(unbeatable))
    run(*common, "--output_dir", str(tmp_path), "--resume_from_checkpoint", "checkpoint-1")
    assert json.loads(record.read_text())["score"] == 99.0  # resumed: the best so far is kept
    run(*common, "--output_dir", str(tmp_path))
    assert json.loads(record.read_text())["score"] < 99.0  # a fresh run starts its own selection


def test_a_best_swap_killed_half_way_is_recovered(tmp_path):
    (tmp_path / "best.old").mkdir()
    (tmp_path / "best.old" / "model_index.json").write_text("{}")
    (tmp_path / "best.tmp").mkdir()
    train_metagan.recover_best(str(tmp_path))  # killed between the two renames: the previous best comes back
    assert (tmp_path / "best" / "model_index.json").is_file()
    assert not (tmp_path / "best.old").exists() and not (tmp_path / "best.tmp").exists()
    (tmp_path / "best.old").mkdir()
    train_metagan.recover_best(str(tmp_path))  # killed after the swap: the old one is dropped
    assert (tmp_path / "best").is_dir() and not (tmp_path / "best.old").exists()
    assert train_metagan.read_best_key(str(tmp_path)) == train_metagan.NO_BEST  # no yardstick.json: nothing to beat


def test_a_best_measured_with_other_yardstick_settings_is_not_kept(tmp_path):
    PartialState(cpu=True)  # the script logs through Accelerate, as in main()
    (tmp_path / "best").mkdir()
    settings = {"classifier": "abc", "num_classes": 2, "adapt_steps": 200, "min_recognisability": None}
    means = {"recognisability": 0.9, "recall": 0.6}
    (tmp_path / "best" / "yardstick.json").write_text(json.dumps({"score": 1.5, "means": means, **settings}))
    assert train_metagan.read_best_key(str(tmp_path), settings) == (0, 1.5)
    assert train_metagan.read_best_key(str(tmp_path), settings, min_recognisability=0.8) == (1, 0.6)
    for other in ({"adapt_steps": 50}, {"classifier": "def"}, {"min_recognisability": 0.8}):
        assert train_metagan.read_best_key(str(tmp_path), {**settings, **other}) == train_metagan.NO_BEST


def test_select_min_recognisability_keeps_the_most_varied_of_the_faithful(tmp_path):
    # floor 0: every checkpoint reaches it, so the first one with the highest recall is kept
    run(*YARDSTICK, "--select_best", "--select_min_recognisability", "0", "--max_meta_steps", "3", "--meta_lr", "0.5",
        "--outer_optimizer", "sgd", "--output_dir", str(tmp_path))  # fmt: skip
    lines = [json.loads(line) for line in (tmp_path / "yardstick.jsonl").read_text().splitlines()]
    assert [r["min_recognisability"] for r in lines] == [0.0] * 3
    recalls = [r["means"]["recall"] for r in lines]
    best = json.loads((tmp_path / "best" / "yardstick.json").read_text())
    assert best["step"] == lines[recalls.index(max(recalls))]["step"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--select_best"], "--select_best needs the yardstick"),
        (["--yardstick_classes", "1"], "--yardstick_classes must be 0 (off) or >= 2"),
        (["--yardstick_classes", "-2"], "--yardstick_classes must be >= 0"),
        (["--yardstick_classes", "2", "--yardstick_samples", "3"], "--yardstick_samples must be >= 4"),
        (["--yardstick_adapt_steps", "0"], "--yardstick_adapt_steps must be >= 1"),
        (["--select_min_recognisability", "0.5"], "--select_min_recognisability needs --select_best"),
        (
            ["--yardstick_classes", "2", "--select_best", "--select_min_recognisability", "1.5"],
            "--select_min_recognisability must be in [0, 1], got 1.5",
        ),
    ],
)
def test_bad_yardstick_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        train_metagan.parse_args([*TINY, *argv])
    assert message in capsys.readouterr().err


def test_more_yardstick_classes_than_validation_classes(tmp_path):
    with pytest.raises(ValueError, match="--yardstick_classes 4 is more than the 3 validation classes"):
        run(*YARDSTICK, "--yardstick_classes", "4", "--max_meta_steps", "1", "--output_dir", str(tmp_path))


def test_yardstick_classes_too_small_for_the_split_fail_at_the_start_naming_the_arguments(tmp_path):
    with pytest.raises(
        ValueError, match=r"--yardstick_classes 2 with --validation_shots 200: class .* a shot pool of 200"
    ):
        run(*YARDSTICK, "--validation_shots", "200", "--max_meta_steps", "1", "--output_dir", str(tmp_path))
    assert not (tmp_path / "yardstick.jsonl").exists()


def test_hub_token_never_reaches_the_recorded_command():
    command = train_metagan.public_command(["--hub_token", "abc", "--hub_token=def", "--seed", "1"])
    assert "abc" not in command and "def" not in command and "--seed 1" in command


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_ranks_check_tells_differing_weights_from_nan_weights():
    class TwoProcesses:  # gathers this process's checksums and those of a second process, `other`
        num_processes, device = 2, torch.device("cpu")

        def __init__(self, other):
            self.other = other

        def gather(self, probe):
            return torch.cat([probe, self.other(probe)])

    layer = torch.nn.Linear(2, 2)
    train_metagan.check_ranks_identical(TwoProcesses(lambda p: p.clone()), layer)  # identical: fine
    with pytest.raises(RuntimeError, match="meta-weights differ between processes"):
        train_metagan.check_ranks_identical(TwoProcesses(lambda p: p + 1), layer)
    with pytest.raises(RuntimeError, match="meta-weights differ between processes"):  # NaN on one process only
        train_metagan.check_ranks_identical(TwoProcesses(lambda p: torch.full_like(p, float("nan"))), layer)
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    # NaN on every process: not a disagreement (the checkpoint's finite check refuses those weights, naming them)
    train_metagan.check_ranks_identical(TwoProcesses(lambda p: p.clone()), layer)
