"""`scripts/demo_adapt.py` end to end on a tiny checkpoint: the grid and summary it writes, and `--variety`, which
adapts and samples with the setting the checkpoint's card recommends (the near-copy filter included where the setting
names a `copy_margin`) and refuses, before any work, a checkpoint whose card has none."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from metagan_hub import MetaGANPipeline
from tests.testing_utils import (
    load_script,
    one_thread_fresh_accelerate,
    pretend_copy_stop,
    record_adapt_calls,
    tiny_pipeline,
)

try:  # the demo renders its shots from KanjiVG (the data extra)
    importlib.metadata.distribution("kanjivg")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("the kanjivg package (data extra) is not installed", allow_module_level=True)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "demo_adapt.py"
SETTING = {"shot_augment": 1.0, "latent_scale": 1.25, "copy_margin": 1.25}


@pytest.fixture(scope="module")
def script():
    return load_script("demo_adapt", SCRIPT)


@pytest.fixture
def checkpoints(tmp_path) -> dict[str, Path]:
    plain = tiny_pipeline(0)
    plain.save_pretrained(tmp_path / "plain")
    plain.card_info["variety_setting"] = dict(SETTING)
    plain.save_pretrained(tmp_path / "varied")
    return {"plain": tmp_path / "plain", "varied": tmp_path / "varied"}


def run(script, checkpoint: Path, out: Path, *extra: str) -> dict:
    args = script.parse_args(
        ["--pretrained_model_name_or_path", str(checkpoint), "--num_steps", "2", "--num_samples", "4",
         "--mixed_precision", "no", "--output_dir", str(out), *extra]
    )  # fmt: skip
    with one_thread_fresh_accelerate():
        script.main(args)
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_demo_with_and_without_the_variety_setting(script, checkpoints, tmp_path, monkeypatch):
    adapt_calls = record_adapt_calls(monkeypatch)
    sampling_calls: list = []
    sample = MetaGANPipeline.__call__
    monkeypatch.setattr(
        MetaGANPipeline, "__call__", lambda self, *a, **k: sampling_calls.append(k) or sample(self, *a, **k)
    )
    plain = run(script, checkpoints["varied"], tmp_path / "plain-out")
    assert plain["variety_setting"] is None and (tmp_path / "plain-out" / "grid.png").is_file()
    assert plain["copy_features"] is None and plain["sample_seconds"] > 0
    assert "shot_augment" not in adapt_calls[-1] and "avoid_copies_of" not in sampling_calls[-1]

    varied = run(script, checkpoints["varied"], tmp_path / "varied-out", "--variety")
    assert varied["variety_setting"] == SETTING and (tmp_path / "varied-out" / "grid.png").is_file()
    assert adapt_calls[-1]["shot_augment"] == 1.0 and "copy_margin" not in adapt_calls[-1]
    kwargs = sampling_calls[-1]
    assert kwargs["latent_scale"] == 1.25 and kwargs["copy_margin"] == 1.25
    assert kwargs["avoid_copies_of"].shape[0] == 5  # the five shots
    assert varied["copy_features"] == "discriminator"  # the tiny checkpoint has no copy encoder


def test_demo_reports_a_copy_stop(script, tmp_path, monkeypatch, capsys):
    from tests.pipelines.test_copy_encoder import with_encoder

    pipe = with_encoder()
    pipe.card_info["variety_setting"] = {**SETTING, "copy_stop": 0.3}
    pipe.save_pretrained(tmp_path / "stopping")
    adapt_calls = record_adapt_calls(monkeypatch)
    summary = run(script, tmp_path / "stopping", tmp_path / "short", "--variety")
    assert adapt_calls[-1]["copy_stop"] == 0.3 and summary["copy_stop_step"] is None  # 2 steps: no stop possible
    assert "stopped as samples began" not in capsys.readouterr().out
    # an adaptation that copy_stop ended: the summary and the last line say which step's model was kept
    pretend_copy_stop(monkeypatch, 75)
    summary = run(script, tmp_path / "stopping", tmp_path / "stopped", "--variety")
    assert summary["copy_stop_step"] == 75
    assert "stopped as samples began to copy the shots; kept the model after 75 steps" in capsys.readouterr().out


def test_demo_variety_refuses_before_any_work(script, checkpoints, tmp_path, monkeypatch):
    adapt_calls = record_adapt_calls(monkeypatch)
    with pytest.raises(SystemExit, match=r"--variety: the card of .* recommends no variety setting"):
        run(script, checkpoints["plain"], tmp_path / "none", "--variety")
    with pytest.raises(SystemExit, match=r"needs --shots 2 or more.*got --shots 1"):
        run(script, checkpoints["varied"], tmp_path / "one", "--variety", "--shots", "1")
    assert adapt_calls == [] and not (tmp_path / "none").exists() and not (tmp_path / "one").exists()


BAD_DEMO_OPTIONS = [
    (["--num_samples", "0"], "--num_samples must be >= 1, got 0"),
    (["--num_samples", "-1"], "--num_samples must be >= 1, got -1"),
    (["--shots", "0"], "--shots must be >= 1, got 0"),
    (["--num_steps", "0"], "--num_steps must be >= 1, got 0"),
    (["--num_steps", "-1"], "--num_steps must be >= 1, got -1"),
    (["--render_seed", "-1"], "--render_seed must be >= 0, got -1"),
    (["--seed", str(2**64)], f"--seed must be from {-(2**63)} to {2**64 - 1} (torch's seeds), got {2**64}"),
    (["--seed", str(-(2**63) - 1)], f"got {-(2**63) - 1}"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_DEMO_OPTIONS, ids=[" ".join(b) for b, _ in BAD_DEMO_OPTIONS])
def test_demo_refuses_bad_numbers_before_any_work(script, tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--output_dir", str(tmp_path / "out"), *bad])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_demo_accepts_the_edges_and_reruns_into_its_output(script, checkpoints, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "grid.png").write_bytes(b"an earlier run's")  # the demo's output is meant to be rewritten on every run
    args = script.parse_args(
        ["--pretrained_model_name_or_path", str(checkpoints["plain"]), "--output_dir", str(out), "--shots", "1",
         "--num_steps", "1", "--num_samples", "1", "--render_seed", "0", "--seed", "-1"]
    )  # fmt: skip
    assert (args.shots, args.seed, args.pretrained_model_name_or_path) == (1, -1, str(checkpoints["plain"]))


def test_demo_never_writes_into_the_checkpoint_folder(script, checkpoints, tmp_path, capsys):
    checkpoint = checkpoints["plain"]
    before = {p: p.read_bytes() for p in checkpoint.rglob("*") if p.is_file()}
    adapted_named = tmp_path / "runs" / "adapted"  # the demo saves its adapted pipeline to <output_dir>/adapted
    tiny_pipeline(0).save_pretrained(adapted_named)
    cases = [(checkpoint, checkpoint), (checkpoint, checkpoint / "demo-output"), (adapted_named, tmp_path / "runs")]
    for source, output_dir in cases:
        with pytest.raises(SystemExit) as exit_info:
            script.parse_args(["--pretrained_model_name_or_path", str(source), "--output_dir", str(output_dir)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"--output_dir {output_dir} would write into the checkpoint folder {source}" in err
    assert {p: p.read_bytes() for p in checkpoint.rglob("*") if p.is_file()} == before
    # the default checkpoint ("auto") is checked as it resolves on this machine
    bundled = Path(script.resolve_checkpoint("auto"))
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--output_dir", str(bundled / "demo-output")])
    assert exit_info.value.code == 2 and "--pretrained_model_name_or_path auto" in capsys.readouterr().err
    assert not (bundled / "demo-output").exists()
    # a file is no folder to write into
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--output_dir", str(tmp_path / "file")])
    assert exit_info.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err
