"""`scripts/adapt_metagan.py` end to end, as a user runs it: a saved tiny pipeline plus a folder of 5 PNGs in, a
loadable adapted pipeline (or LoRA adapter), a sample grid, a loss curve and the adaptation record out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metagan_hub import MetaGANPipeline
from tests.testing_utils import load_script, record_adapt_calls, tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "adapt_metagan.py"
SIZE = 16


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A saved tiny pipeline and a folder of 5 PNG shots."""
    root = tmp_path_factory.mktemp("adapt_script")
    tiny_pipeline(0).save_pretrained(root / "base")
    shots = root / "shots"
    shots.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, size=(24, 20), dtype=np.uint8), mode="L").save(shots / f"shot_{i}.png")
    return root / "base", shots


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def test_script_writes_loadable_pipeline_grid_curve_and_record(inputs, tmp_path):
    base, shots = inputs
    run_script(
        "--pretrained_model_name_or_path", str(base),
        "--train_data_dir", str(shots),
        "--num_steps", "3",
        "--output_dir", "out",
        "--validation_images", "4",
        "--resolution", str(SIZE),
        cwd=tmp_path,
    )  # fmt: skip
    out = tmp_path / "out"
    adapted = MetaGANPipeline.from_pretrained(out)
    adapted.set_progress_bar_config(disable=True)
    assert adapted.discriminator is not None
    base_pipe = MetaGANPipeline.from_pretrained(base)
    base_g = base_pipe.generator.state_dict()
    adapted_g = adapted.generator.state_dict()
    assert any(not torch.equal(adapted_g[k], v) for k, v in base_g.items())

    with Image.open(out / "samples.png") as grid:
        assert grid.size == (2 * SIZE, 2 * SIZE)  # 4 images -> a 2x2 grid
    with Image.open(out / "loss_curve.png") as curve:
        assert curve.size[0] > 100 and curve.size[1] > 100

    record = json.loads((out / "adaptation.json").read_text(encoding="utf-8"))
    assert record["shots"] == 5 and record["num_steps"] == 3 and len(record["losses"]) == 3 and record["seed"] == 0
    # a local base model is named by its folder only, as in the card: the folder can be pushed as it is
    assert record["base_model"] is None and record["base_model_local_name"] == base.name
    assert str(base) not in (out / "adaptation.json").read_text(encoding="utf-8")
    # flags not given take adapt()'s defaults
    assert record["r1_gamma"] == 1.0 and record["learning_rate"] == 2e-4 and record["loss"] == "nonsaturating"
    assert record["mode_seeking_weight"] == 0.0 and record["shot_augment"] == 0.0 and record["tone_match"] is True
    assert record["lr_scheduler"] == "constant" and record["lr_warmup_steps"] == 0
    assert adapted.generator.tone_curve is not None  # adapt()'s default for full adaptation
    assert adapted.card_info["adaptation"]["losses"] == record["losses"]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| shots | 5 |" in card
    assert "![shots.png](shots.png)" in card and "![samples.png](samples.png)" in card  # the grids beside it


def test_script_pushes_the_pipeline_with_its_grids_in_the_card(inputs, tmp_path, hub_server, hub_repo_id):
    base, shots = inputs
    run_script(
        "--pretrained_model_name_or_path", str(base),
        "--train_data_dir", str(shots),
        "--num_steps", "2",
        "--output_dir", "pushed",
        "--validation_images", "4",
        "--push_to_hub",
        "--hub_model_id", hub_repo_id,
        cwd=tmp_path,
    )  # fmt: skip
    uploaded = set(hub_server.uploaded_paths(hub_repo_id))
    assert {"README.md", "shots.png", "samples.png", "generator/diffusion_pytorch_model.safetensors"} <= uploaded
    card = (tmp_path / "pushed" / "README.md").read_text(encoding="utf-8")
    assert f'MetaGANPipeline.from_pretrained("{hub_repo_id}")' in card
    assert "![shots.png](shots.png)" in card and "![samples.png](samples.png)" in card


def test_script_with_lora_rank_writes_only_the_adapter(inputs, tmp_path):
    pytest.importorskip("peft")
    base, shots = inputs
    run_script(
        "--pretrained_model_name_or_path", str(base),
        "--train_data_dir", str(shots),
        "--num_steps", "2",
        "--lora_rank", "2",
        "--r1_gamma", "0.25",
        "--learning_rate", "1e-3",
        "--loss", "hinge",
        "--mode_seeking_weight", "0.5",
        "--copy_repulsion_weight", "0.5",
        "--shot_reconstruction_weight", "3",
        "--shot_augment", "0.5",
        "--latent_scale", "1.5",
        "--lr_scheduler", "cosine",
        "--lr_warmup_steps", "1",
        "--output_dir", "lora_out",
        "--validation_images", "1",
        cwd=tmp_path,
    )  # fmt: skip
    out = tmp_path / "lora_out"
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert not (out / "model_index.json").exists() and not (out / "generator").exists()
    assert (out / "samples.png").is_file() and (out / "loss_curve.png").is_file()
    assert "![samples.png](samples.png)" in (out / "README.md").read_text(encoding="utf-8")
    record = json.loads((out / "adaptation.json").read_text(encoding="utf-8"))
    assert record["lora_rank"] == 2 and len(record["losses"]) == 2 and record["r1_gamma"] == 0.25
    assert record["learning_rate"] == 1e-3 and record["loss"] == "hinge" and record["mode_seeking_weight"] == 0.5
    assert record["shot_augment"] == 0.5 and record["copy_repulsion_weight"] == 0.5
    assert record["shot_reconstruction_weight"] == 3.0
    assert all("near_copy_fraction" in row and "shot_reconstruction" in row for row in record["losses"])
    assert record["lr_scheduler"] == "cosine" and record["lr_warmup_steps"] == 1
    assert [row["lr"] for row in record["losses"]] == [0.0, record["lora_learning_rate"]]  # warm-up, then the peak

    pipe = MetaGANPipeline.from_pretrained(base)
    pipe.set_progress_bar_config(disable=True)
    before = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    pipe.load_lora_weights(out)
    assert pipe.has_lora
    after = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert not torch.equal(before, after)


def run_main(script, args) -> None:
    """`script.main(args)` in this process, with Accelerate's process-wide state fresh before and cleared after."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        script.main(args)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_script_rejects_resolution_mismatch_before_training(inputs, tmp_path, monkeypatch):
    script = load_script("adapt_metagan_script", SCRIPT)
    base, shots = inputs
    args = script.parse_args(
        [
            "--pretrained_model_name_or_path", str(base),
            "--train_data_dir", str(shots),
            "--resolution", "32",
            "--output_dir", str(tmp_path / "bad"),
        ]
    )  # fmt: skip
    monkeypatch.setattr(MetaGANPipeline, "adapt", lambda *a, **k: pytest.fail("adapted despite a bad --resolution"))
    with pytest.raises(ValueError, match=r"--resolution 32.*sample_size 16"):
        run_main(script, args)
    assert not (tmp_path / "bad").exists()


def test_script_argument_errors():
    script = load_script("adapt_metagan_script", SCRIPT)
    with pytest.raises(SystemExit):
        script.parse_args(["--pretrained_model_name_or_path", "x"])  # neither --train_data_dir nor --dataset_name
    with pytest.raises(SystemExit):
        script.parse_args(["--pretrained_model_name_or_path", "x", "--train_data_dir", "d", "--push_to_hub"])
    with pytest.raises(SystemExit):
        script.parse_args(
            ["--pretrained_model_name_or_path", "x", "--train_data_dir", "d", "--mixed_precision", "fp8"]
        )
    with pytest.raises(SystemExit):
        script.parse_args(["--pretrained_model_name_or_path", "x", "--train_data_dir", "d", "--latent_scale", "0"])
    with pytest.raises(SystemExit):
        script.parse_args(["--pretrained_model_name_or_path", "x", "--train_data_dir", "d", "--lr_scheduler", "cos"])
    bad_filter_options = (
        ["--copy_margin", "2"],  # only with the filter
        ["--avoid_copies", "--copy_margin", "0"],  # > 0
        ["--replacement_spread", "0.5"],  # only with the filter
        ["--avoid_copies", "--replacement_spread", "0"],  # in (0, 1]
        ["--avoid_copies", "--replacement_spread", "1.5"],
        ["--max_copy_share", "0.3"],  # only with the filter
        ["--avoid_copies", "--max_copy_share", "0"],  # in (0, 1]
        ["--avoid_copies", "--max_copy_share", "1.5"],
    )
    for bad in bad_filter_options:
        with pytest.raises(SystemExit):
            script.parse_args(["--pretrained_model_name_or_path", "x", "--train_data_dir", "d", *bad])
    for clash in (["--shot_augment", "1"], ["--latent_scale", "1.5"]):  # --variety takes both from the card
        with pytest.raises(SystemExit):
            script.parse_args(["--pretrained_model_name_or_path", "x", "--train_data_dir", "d", "--variety", *clash])


def test_script_copy_stop_needs_a_copy_encoder(inputs, tmp_path):
    script = load_script("adapt_metagan_script", SCRIPT)
    base, shots = inputs
    # the test checkpoint has no copy encoder: adapt()'s error, naming the option, and nothing written
    args = script.parse_args(
        ["--pretrained_model_name_or_path", str(base), "--train_data_dir", str(shots), "--copy_stop", "0.2",
         "--output_dir", str(tmp_path / "no-encoder")]
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"copy_stop=0.2 judges near-copies in the pipeline's copy encoder"):
        run_main(script, args)
    assert not (tmp_path / "no-encoder").exists()


def short_variety_args(base, shots, output_dir) -> list[str]:
    """Arguments of a 2-step `--variety` run of `base` on `shots` that writes a 2-image grid to `output_dir`."""
    return [
        "--pretrained_model_name_or_path", str(base), "--train_data_dir", str(shots), "--variety", "--num_steps", "2",
        "--validation_images", "2", "--mixed_precision", "no", "--output_dir", str(output_dir),
    ]  # fmt: skip


def assert_variety_conflict(script, base, shots, output_dir, extra: list[str], match: str) -> None:
    """`--variety` with `extra` options that contradict the card's setting of `base`: refused naming both, nothing
    written to `output_dir`."""
    args = script.parse_args(
        ["--pretrained_model_name_or_path", str(base), "--train_data_dir", str(shots), "--variety", *extra,
         "--output_dir", str(output_dir)]
    )  # fmt: skip
    with pytest.raises(ValueError, match=match):
        run_main(script, args)
    assert not output_dir.exists()


def test_script_variety_takes_the_cards_copy_stop(inputs, tmp_path, monkeypatch):
    from tests.pipelines.test_copy_encoder import with_encoder

    script = load_script("adapt_metagan_script", SCRIPT)
    _, shots = inputs
    pipe = with_encoder()
    pipe.card_info["variety_setting"] = {"shot_augment": 1.0, "latent_scale": 1.25, "copy_stop": 0.4}
    pipe.save_pretrained(tmp_path / "stop-base")
    adapt_calls = record_adapt_calls(monkeypatch)
    args = script.parse_args(short_variety_args(tmp_path / "stop-base", shots, tmp_path / "out-stop"))
    run_main(script, args)
    (kwargs,) = adapt_calls
    assert kwargs["copy_stop"] == 0.4 and kwargs["shot_augment"] == 1.0
    saved = json.loads((tmp_path / "out-stop" / "metagan_hub.json").read_text(encoding="utf-8"))
    assert saved["adaptation"]["copy_stop"] == 0.4  # too few steps to stop: its checks are only recorded
    # another --copy_stop conflicts with the card's, before anything is adapted or written
    adapt_calls.clear()
    assert_variety_conflict(
        script, tmp_path / "stop-base", shots, tmp_path / "conflict-stop", ["--copy_stop", "0.2"],
        r"--variety uses the card's copy_stop=0.4.*--copy_stop 0.2",
    )  # fmt: skip
    assert adapt_calls == []


def test_script_variety_takes_the_cards_setting(inputs, tmp_path, monkeypatch):
    script = load_script("adapt_metagan_script", SCRIPT)
    base, shots = inputs
    # a checkpoint whose card has no variety setting: a clear error before any adaptation, nothing written
    args = script.parse_args(
        ["--pretrained_model_name_or_path", str(base), "--train_data_dir", str(shots), "--variety",
         "--output_dir", str(tmp_path / "none")]
    )  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(MetaGANPipeline, "adapt", lambda *a, **k: pytest.fail("adapted without a variety setting"))
        with pytest.raises(ValueError, match=r"--variety: the card of .* recommends no variety setting"):
            run_main(script, args)
    assert not (tmp_path / "none").exists()

    # with one: adapt() gets its shot_augment and the grid is drawn at its latent_scale
    pipe = MetaGANPipeline.from_pretrained(base)
    pipe.card_info["variety_setting"] = {"shot_augment": 0.5, "latent_scale": 1.25}
    pipe.save_pretrained(tmp_path / "varied-base")
    adapt_calls = record_adapt_calls(monkeypatch)
    scales: list = []
    call = MetaGANPipeline.__call__

    def recording_call(self, *a, **kwargs):
        scales.append(kwargs.get("latent_scale"))
        return call(self, *a, **kwargs)

    monkeypatch.setattr(MetaGANPipeline, "__call__", recording_call)
    args = script.parse_args(short_variety_args(tmp_path / "varied-base", shots, tmp_path / "out"))
    run_main(script, args)
    assert [c["shot_augment"] for c in adapt_calls] == [0.5] and scales == [1.25]
    assert (tmp_path / "out" / "samples.png").is_file()
    assert json.loads((tmp_path / "out" / "adaptation.json").read_text(encoding="utf-8"))["shot_augment"] == 0.5

    # a setting that names a diversity term: adapt() gets it (and its weight unless --diversity_weight is given);
    # another --diversity_loss conflicts with it
    pipe.card_info["variety_setting"] = {
        "shot_augment": 0.0, "latent_scale": 1.0, "diversity_loss": "mixdl", "diversity_weight": 50.0
    }  # fmt: skip
    pipe.save_pretrained(tmp_path / "mixdl-base")
    for extra, weight in (([], 50.0), (["--diversity_weight", "20"], 20.0)):
        adapt_calls.clear()
        args = script.parse_args(
            ["--pretrained_model_name_or_path", str(tmp_path / "mixdl-base"), "--train_data_dir", str(shots),
             "--variety", "--num_steps", "2", "--validation_images", "0", "--mixed_precision", "no",
             "--output_dir", str(tmp_path / f"out-mixdl-{weight}"), *extra]
        )  # fmt: skip
        run_main(script, args)
        (kwargs,) = adapt_calls
        assert (kwargs["shot_augment"], kwargs["diversity_loss"], kwargs["diversity_weight"]) == (0.0, "mixdl", weight)
    assert_variety_conflict(
        script, tmp_path / "mixdl-base", shots, tmp_path / "conflict", ["--diversity_loss", "cdc"],
        r"--variety uses the card's diversity_loss='mixdl'.*--diversity_loss cdc",
    )  # fmt: skip

    # a setting that names a copy_margin: the grid is drawn with the near-copy filter at that margin; another
    # --copy_margin conflicts with it, and a single training image is refused before adapting
    pipe.card_info["variety_setting"] = {"shot_augment": 1.0, "latent_scale": 1.25, "copy_margin": 1.25}
    pipe.save_pretrained(tmp_path / "filter-base")
    calls: list = []
    sampling = MetaGANPipeline.__call__
    monkeypatch.setattr(
        MetaGANPipeline, "__call__", lambda self, *a, **kwargs: calls.append(kwargs) or sampling(self, *a, **kwargs)
    )
    adapt_calls.clear()
    args = script.parse_args(short_variety_args(tmp_path / "filter-base", shots, tmp_path / "out-filter"))
    run_main(script, args)
    assert [c["shot_augment"] for c in adapt_calls] == [1.0]
    (grid_call,) = calls
    assert grid_call["latent_scale"] == 1.25 and grid_call["copy_margin"] == 1.25
    assert grid_call["avoid_copies_of"] is not None and len(grid_call["avoid_copies_of"]) >= 2
    assert_variety_conflict(
        script, tmp_path / "filter-base", shots, tmp_path / "conflict-margin",
        ["--avoid_copies", "--copy_margin", "2"], r"--variety uses the card's copy_margin=1.25.*--copy_margin 2",
    )  # fmt: skip
    one_shot = tmp_path / "one-shot"
    one_shot.mkdir()
    first = sorted(p for p in shots.iterdir() if p.is_file())[0]
    (one_shot / first.name).write_bytes(first.read_bytes())
    adapt_calls.clear()
    args = script.parse_args(
        ["--pretrained_model_name_or_path", str(tmp_path / "filter-base"), "--train_data_dir", str(one_shot),
         "--variety", "--output_dir", str(tmp_path / "one")]
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"--variety \(the card's copy_margin\) .* at least 2 .*got 1"):
        run_main(script, args)
    assert adapt_calls == [] and not (tmp_path / "one").exists()


def test_script_applies_meta_learned_lr_scales_unless_told_not_to(inputs, tmp_path):
    base, shots = inputs
    pipe = MetaGANPipeline.from_pretrained(base)
    names = [n for n, _ in pipe.generator.named_parameters()]
    pipe.card_info["adaptation_lr_scales"] = {"generator": dict.fromkeys(names, 2.0)}
    pipe.save_pretrained(tmp_path / "scaled")
    common = ["--pretrained_model_name_or_path", str(tmp_path / "scaled"), "--train_data_dir", str(shots),
              "--num_steps", "2", "--validation_images", "0"]  # fmt: skip
    run_script(*common, "--output_dir", "with", cwd=tmp_path)
    run_script(*common, "--output_dir", "without", "--no_layer_lr_scales", "--no_tone_match", cwd=tmp_path)
    with_scales = json.loads((tmp_path / "with" / "adaptation.json").read_text(encoding="utf-8"))
    without = json.loads((tmp_path / "without" / "adaptation.json").read_text(encoding="utf-8"))
    assert with_scales["layer_lr_scales"] is True and without["layer_lr_scales"] is False
    assert with_scales["tone_match"] is True and without["tone_match"] is False  # --no_tone_match reaches adapt()
    a = MetaGANPipeline.from_pretrained(tmp_path / "with").generator.state_dict()
    b = MetaGANPipeline.from_pretrained(tmp_path / "without").generator.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in b)
    assert "tone_curve" in a and "tone_curve" not in b


def test_script_avoid_copies_filters_the_grid_against_the_training_images(inputs, tmp_path, monkeypatch):
    script = load_script("adapt_metagan_script", SCRIPT)
    base, shots = inputs
    calls: list = []
    call = MetaGANPipeline.__call__

    def recording_call(self, *a, **kwargs):
        calls.append(kwargs)
        return call(self, *a, **kwargs)

    monkeypatch.setattr(MetaGANPipeline, "__call__", recording_call)
    common = ["--pretrained_model_name_or_path", str(base), "--train_data_dir", str(shots), "--num_steps", "2",
              "--validation_images", "3", "--mixed_precision", "no"]  # fmt: skip
    run_main(script, script.parse_args([*common, "--output_dir", str(tmp_path / "plain")]))
    run_main(script, script.parse_args([*common, "--output_dir", str(tmp_path / "a"), "--avoid_copies"]))
    argv = [*common, "--output_dir", str(tmp_path / "b"), "--avoid_copies", "--copy_margin", "2"]
    run_main(script, script.parse_args(argv + ["--replacement_spread", "0.5", "--max_copy_share", "0.3"]))
    assert "avoid_copies_of" not in calls[0]
    for kwargs, margin in zip(calls[1:], (1.0, 2.0)):
        references = kwargs["avoid_copies_of"]  # the 5 training images, as the pipeline sees them
        assert references.shape == (5, 1, SIZE, SIZE) and kwargs["copy_margin"] == margin
    assert "replacement_spread" not in calls[1] and calls[2]["replacement_spread"] == 0.5
    assert "max_copy_share" not in calls[1] and calls[2]["max_copy_share"] == 0.3
    assert all((tmp_path / name / "samples.png").is_file() for name in ("plain", "a", "b"))


# bad option values: refused by parse_args (exit code 2) before the checkpoint is loaded, naming the option and value
BAD_ADAPT_OPTIONS = [
    (["--max_shots", "-1"], "--max_shots must be >= 1, got -1"),
    (["--max_shots", "0"], "--max_shots must be >= 1, got 0"),
    (["--resolution", "-1"], "--resolution must be >= 1, got -1"),
    (["--num_steps", "0"], ("--num_steps must", "got 0")),
    (["--num_steps", "-5"], ("--num_steps must", "got -5")),
    (["--learning_rate", "0"], ("--learning_rate must", "got 0.0")),
    (["--learning_rate", "-1"], ("--learning_rate must", "got -1.0")),
    (["--batch_size", "0"], ("--batch_size must", "got 0")),
    (["--lr_warmup_steps", "-1"], ("--lr_warmup_steps must", "got -1")),
    (["--lr_scheduler", "cosine", "--num_steps", "3", "--lr_warmup_steps", "3"],
     "--lr_warmup_steps must be an integer from 0 to num_steps - 1 = 2, got 3"),
    (["--lr_warmup_steps", "2"], "--lr_warmup_steps=2 with lr_scheduler='constant', which has no warm-up"),
    (["--r1_gamma", "-1"], ("--r1_gamma must", "got -1.0")),
    (["--r1_interval", "0"], ("--r1_interval must", "got 0")),
    (["--freeze_discriminator_blocks", "-1"], ("--freeze_discriminator_blocks must", "got -1")),
    (["--ema_decay", "1.5"], ("--ema_decay must", "got 1.5")),
    (["--ema_decay", "0"], ("--ema_decay must", "got 0.0")),
    (["--diversity_loss", "dcl", "--diversity_weight", "-1"], ("--diversity_weight must", "got -1.0")),
    (["--diversity_weight", "2"], "--diversity_weight=2.0 was given without --diversity_loss"),
    (["--diversity_loss", "dcl", "--diversity_batch_size", "0"], ("--diversity_batch_size must", "got 0")),
    (["--diversity_loss", "cdc", "--batch_size", "2"],
     "(--batch_size, or --diversity_batch_size when set) must be >= 3, got 2"),
    (["--diversity_loss", "dcl", "--diversity_interval", "0"], ("--diversity_interval must", "got 0")),
    (["--diversity_loss", "cdc", "--cdc_anchor_interval", "-1"], ("--cdc_anchor_interval must", "got -1")),
    (["--mode_seeking_weight", "-1"], ("--mode_seeking_weight must", "got -1.0")),
    (["--copy_repulsion_weight", "-1"], ("--copy_repulsion_weight must", "got -1.0")),
    (["--shot_reconstruction_weight", "-1"], ("--shot_reconstruction_weight must", "got -1.0")),
    (["--copy_stop", "1.5"], ("--copy_stop must", "got 1.5")),
    (["--copy_stop", "-0.1"], ("--copy_stop must", "got -0.1")),
    (["--shot_augment", "-1"], "--shot_augment must be a number between 0 (off) and 3, got -1.0"),
    (["--shot_augment", "3.5"], "--shot_augment must be a number between 0 (off) and 3, got 3.5"),
    (["--lora_rank", "0"], ("--lora_rank must", "got 0")),
    (["--lora_rank", "-1"], ("--lora_rank must", "got -1")),
    (["--seed", str(2**64)], f"--seed must be from {-(2**63)} to {2**64 - 1} (torch's seeds), got {2**64}"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "message"), BAD_ADAPT_OPTIONS, ids=[" ".join(b) for b, _ in BAD_ADAPT_OPTIONS])
def test_script_refuses_bad_option_values_before_loading(tmp_path, capsys, bad, message):
    script = load_script("adapt_metagan_script", SCRIPT)
    argv = ["--pretrained_model_name_or_path", "org/base", "--train_data_dir", str(tmp_path),
            "--output_dir", str(tmp_path / "out"), *bad]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert all(part in err for part in ((message,) if isinstance(message, str) else message)), err


@pytest.mark.parametrize(
    "good",
    [
        ["--lr_warmup_steps", "0", "--freeze_discriminator_blocks", "0", "--r1_gamma", "0", "--shot_augment", "3"],
        ["--lr_scheduler", "cosine", "--num_steps", "3", "--lr_warmup_steps", "2", "--ema_decay", "0.99"],
        ["--diversity_loss", "cdc", "--cdc_anchor_interval", "0", "--diversity_weight", "0", "--batch_size", "3"],
        [
            "--diversity_loss",
            "mixdl",
            "--diversity_batch_size",
            "2",
            "--diversity_interval",
            "1",
            "--copy_stop",
            "0.5",
        ],
        ["--variety", "--diversity_weight", "20"],  # the card's setting may name the diversity term
        ["--max_shots", "1", "--resolution", "1", "--lora_rank", "1", "--seed", "-1"],
    ],
)
def test_script_accepts_the_edges_of_adapts_ranges(tmp_path, good):
    script = load_script("adapt_metagan_script", SCRIPT)
    script.parse_args(
        ["--pretrained_model_name_or_path", "org/base", "--train_data_dir", str(tmp_path),
         "--output_dir", str(tmp_path / "out"), *good]
    )  # fmt: skip


def test_script_refuses_a_missing_train_data_dir(tmp_path, capsys):
    script = load_script("adapt_metagan_script", SCRIPT)
    missing = tmp_path / "no-such-folder"
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(
            ["--pretrained_model_name_or_path", "org/base", "--train_data_dir", str(missing),
             "--output_dir", str(tmp_path / "out")]
        )  # fmt: skip
    assert exit_info.value.code == 2
    assert f"--train_data_dir {missing} does not exist" in capsys.readouterr().err


def folder_contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_script_never_writes_into_the_checkpoint_folder(inputs, tmp_path, capsys):
    script = load_script("adapt_metagan_script", SCRIPT)
    _, shots = inputs
    checkpoint = tmp_path / "ckpt"
    tiny_pipeline(0).save_pretrained(checkpoint)
    before = folder_contents(checkpoint)
    (tmp_path / "link").symlink_to(checkpoint, target_is_directory=True)
    # the folder itself, one inside it, the same folder through a link, one around it
    for output_dir in (checkpoint, checkpoint / "generator", checkpoint / "new", tmp_path / "link", tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            script.parse_args(
                ["--pretrained_model_name_or_path", str(checkpoint), "--train_data_dir", str(shots),
                 "--output_dir", str(output_dir), "--overwrite_output_dir"]
            )  # fmt: skip
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"--output_dir {output_dir} overlaps the checkpoint folder" in err and str(checkpoint) in err
    assert folder_contents(checkpoint) == before


def test_script_refuses_a_used_output_dir_unless_told_to_overwrite(inputs, tmp_path, capsys):
    script = load_script("adapt_metagan_script", SCRIPT)
    base, shots = inputs
    common = ["--pretrained_model_name_or_path", str(base), "--train_data_dir", str(shots), "--num_steps", "1",
              "--validation_images", "0", "--mixed_precision", "no"]  # fmt: skip
    used = tmp_path / "used"
    tiny_pipeline(1).save_pretrained(used)  # e.g. an earlier run's pipeline
    before = folder_contents(used)
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([*common, "--output_dir", str(used)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"--output_dir {used} already exists" in err and "model_index.json" in err and "--overwrite_output_dir" in err
    )
    assert folder_contents(used) == before
    # a file is no folder to write into; an empty folder is as good as a new one
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([*common, "--output_dir", str(tmp_path / "file")])
    assert exit_info.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert not script.parse_args([*common, "--output_dir", str(tmp_path / "empty")]).overwrite_output_dir
    # with the flag the run writes into it
    run_main(script, script.parse_args([*common, "--output_dir", str(used), "--overwrite_output_dir"]))
    record = json.loads((used / "adaptation.json").read_text(encoding="utf-8"))
    assert record["num_steps"] == 1 and record["shots"] == 5
    assert MetaGANPipeline.from_pretrained(used).card_info["adaptation"]["num_steps"] == 1
    # a LoRA adapter is never written beside that full pipeline (the folder would still load as the old pipeline)
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([*common, "--output_dir", str(used), "--overwrite_output_dir", "--lora_rank", "2"])
    assert exit_info.value.code == 2
    assert "holds a full pipeline; this run writes a LoRA adapter" in capsys.readouterr().err
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "pytorch_lora_weights.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([*common, "--output_dir", str(tmp_path / "lora"), "--overwrite_output_dir"])
    assert "holds a LoRA adapter; this run writes a full pipeline" in capsys.readouterr().err
