"""`scripts/evaluate_metagan.py`: contenders adapted on the same held-out classes, and the summary's arithmetic."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from metagan_hub import MetaGANPipeline
from tests.testing_utils import record_adapt_calls, tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("evaluate_metagan", REPO / "scripts" / "evaluate_metagan.py")
evaluate_metagan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluate_metagan)


def record(contender: str, cls: str, distance: float, kid: float, seed: int = 0) -> dict:
    return {
        "contender": contender,
        "class": cls,
        "shots": 5,
        "num_steps": 200,
        "seed": seed,
        "adapt_seconds": 1.0,
        "metrics": {"heldout_distance": distance, "kid": kid},
        "num_fake": 64,
        "num_real": 15,
        "space": "pixels",
    }


def save_tiny_pipeline(path: Path) -> None:
    """A freshly initialised 16x16 pipeline (seed 0) saved to `path`, the contender of the end-to-end tests."""
    tiny_pipeline(0).save_pretrained(path)


def test_summary_reports_paired_differences_and_ratios_to_scratch():
    rows = {
        "a": [record("a", "x", 0.5, 0.2, 0), record("a", "y", 0.7, 0.4, 1)],
        "b": [record("b", "x", 0.4, 0.3, 0), record("b", "y", 0.8, 0.1, 1)],
        "scratch": [record("scratch", "x", 1.0, 1.0, 0), record("scratch", "y", 1.0, 1.0, 1)],
    }
    text = evaluate_metagan.summarize(rows)
    assert "2 held-out classes x 5 shots, 200 steps" in text
    assert "| a | 0.6000 ± 0.1414 | 0.3000 ± 0.1414 | 1.0 |" in text
    # b - a: distance (-0.1, +0.1) -> mean 0, SE 0.1; kid (+0.1, -0.3) -> mean -0.1, SE 0.2
    assert "- b: heldout_distance +0.0000 ± 0.1000 (1/2 lower), kid -0.1000 ± 0.2000 (1/2 lower)" in text
    assert "- a: heldout_distance 0.600, kid 0.300" in text


def test_summarize_files_refuses_a_class_recorded_twice(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(record("a", "x", 0.5, 0.2)) for _ in range(2)) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'a' has class 'x' twice"):
        evaluate_metagan.summarize_files([str(path)])


def test_end_to_end_on_digits(tmp_path, capsys):
    save_tiny_pipeline(tmp_path / "tiny")
    results = tmp_path / "results.jsonl"
    args = evaluate_metagan.parse_args(
        [
            "--contender", f"tiny={tmp_path / 'tiny'}", "--contender", "scratch", "--dataset", "digits",
            "--num_val", "1", "--num_test", "2", "--num_classes", "2", "--num_steps", "2", "--num_samples", "8",
            "--results_file", str(results),
        ]
    )  # fmt: skip
    evaluate_metagan.main(args)
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert [(r["contender"], r["seed"]) for r in lines] == [("tiny", 0), ("scratch", 0), ("tiny", 1), ("scratch", 1)]
    assert all(r["metrics"]["heldout_distance"] > 0 for r in lines)
    assert "| tiny |" in out and "paired difference to tiny" in out and "ratio to scratch" in out
    # the summary of the written file is the one printed
    assert evaluate_metagan.summarize_files([str(results)]) in out


def test_yardstick_mode_judges_validation_classes_as_train_metagan_does(tmp_path, capsys):
    from metagan_hub.data import get_dataset
    from metagan_hub.metrics.yardstick import evaluate_adaptation, validation_domain

    save_tiny_pipeline(tmp_path / "tiny")
    results = tmp_path / "results.jsonl"
    argv = [
        "--yardstick", "--contender", f"tiny={tmp_path / 'tiny'}", "--contender", "scratch", "--dataset", "digits",
        "--num_val", "3", "--num_test", "2", "--num_classes", "2", "--num_steps", "2", "--num_samples", "8",
        "--confuser_classes", "2", "--results_file", str(results),
    ]  # fmt: skip
    evaluate_metagan.main(evaluate_metagan.parse_args(argv))
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert [r["contender"] for r in lines] == ["tiny", "scratch"] and all(r["yardstick"] for r in lines)
    assert "Yardstick: 2 validation classes x 5 shots, 2 adapt() steps" in out and "| tiny | " in out
    # the same numbers as the library call train_metagan.py --select_best makes, on the same split
    pipe = MetaGANPipeline.from_pretrained(tmp_path / "tiny")
    pipe.set_progress_bar_config(disable=True)
    train, val, _ = get_dataset("digits", resolution=16).split_classes(seed=0, num_val=3, num_test=2)
    domain = validation_domain(train, val, num_classes=2, shot_pool=5, num_confusers=2)
    direct = evaluate_adaptation(pipe, domain, shots=5, num_steps=2, num_samples=8, learning_rate=2e-4)
    assert lines[0]["per_class"] == direct["per_class"] and list(direct["per_class"]) == val.class_names[:2]
    with pytest.raises(SystemExit):
        evaluate_metagan.parse_args([*argv, "--first_class", "1"])


def test_no_contender_is_an_error():
    with pytest.raises(SystemExit):
        evaluate_metagan.parse_args([])


def test_first_class_evaluates_further_classes_with_their_own_seeds(tmp_path):
    save_tiny_pipeline(tmp_path / "tiny")
    common = ["--contender", f"tiny={tmp_path / 'tiny'}", "--dataset", "digits", "--num_val", "1", "--num_test", "3",
              "--num_steps", "1", "--num_samples", "4"]  # fmt: skip
    whole, tail = tmp_path / "whole.jsonl", tmp_path / "tail.jsonl"
    evaluate_metagan.main(evaluate_metagan.parse_args([*common, "--num_classes", "3", "--results_file", str(whole)]))
    evaluate_metagan.main(
        evaluate_metagan.parse_args([*common, "--first_class", "1", "--num_classes", "5", "--results_file", str(tail)])
    )
    whole_rows = [json.loads(line) for line in whole.read_text(encoding="utf-8").splitlines()]
    tail_rows = [json.loads(line) for line in tail.read_text(encoding="utf-8").splitlines()]
    assert [r["seed"] for r in tail_rows] == [1, 2]  # clipped to the 3 test classes
    assert [(r["class"], r["metrics"]) for r in tail_rows] == [(r["class"], r["metrics"]) for r in whole_rows[1:]]
    with pytest.raises(ValueError, match="--first_class 3"):
        evaluate_metagan.main(evaluate_metagan.parse_args([*common, "--first_class", "3"]))
    with pytest.raises(SystemExit):
        evaluate_metagan.parse_args([*common, "--first_class", "-1"])


def test_adapt_options_reach_adapt_and_are_recorded(tmp_path, monkeypatch):
    save_tiny_pipeline(tmp_path / "tiny")
    seen = record_adapt_calls(monkeypatch)
    results = tmp_path / "results.jsonl"
    args = evaluate_metagan.parse_args(
        [
            "--contender", f"tiny={tmp_path / 'tiny'}", "--dataset", "digits", "--num_val", "1", "--num_test", "1",
            "--num_classes", "1", "--num_steps", "1", "--num_samples", "4", "--freeze_discriminator_blocks", "1",
            "--r1_interval", "2", "--results_file", str(results),
        ]
    )  # fmt: skip
    evaluate_metagan.main(args)
    assert seen[0]["freeze_discriminator_blocks"] == 1 and seen[0]["r1_interval"] == 2
    assert "batch_size" not in seen[0]  # unset options keep adapt()'s defaults
    (line,) = results.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["adapt_options"] == {"r1_interval": 2, "freeze_discriminator_blocks": 1}


def assert_refused(argv: list[str], capsys, *expected: str) -> None:
    """`parse_args(argv)` exits with argparse's usage error (code 2), its message naming each of `expected`."""
    with pytest.raises(SystemExit) as exit_info:
        evaluate_metagan.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"


@pytest.mark.parametrize(
    "extra, option, value",
    [
        (["--num_samples", "0"], "--num_samples", "0"),
        (["--num_samples", "1"], "--num_samples", "1"),  # KID needs 2
        (["--yardstick", "--num_samples", "3"], "--num_samples", "3"),  # k-NN needs neighbours
        (["--shots", "0"], "--shots", "0"),
        (["--shots", "-1"], "--shots", "-1"),
        (["--num_classes", "0"], "--num_classes", "0"),
        (["--num_classes", "-1"], "--num_classes", "-1"),
        (["--yardstick", "--num_classes", "1"], "--num_classes", "1"),
        (["--num_test", "0"], "--num_test", "0"),
        (["--num_test", "-5"], "--num_test", "-5"),
        (["--num_val", "-1"], "--num_val", "-1"),
        (["--yardstick", "--num_val", "1"], "--num_val", "1"),
        (["--learning_rate", "nan"], "--learning_rate", "nan"),
        (["--learning_rate", "inf"], "--learning_rate", "inf"),
        (["--learning_rate", "-1"], "--learning_rate", "-1"),
        (["--learning_rate", "0"], "--learning_rate", "0"),
        (["--num_steps", "0"], "--num_steps", "0"),
        (["--dataset", "bogus"], "--dataset", "bogus"),
        (["--split_seed", "-1"], "--split_seed", "-1"),
        (["--seed", "-1"], "--seed", "-1"),
        (["--batch_size", "0"], "--batch_size", "0"),
        (["--r1_interval", "0"], "--r1_interval", "0"),
        (["--freeze_discriminator_blocks", "-1"], "--freeze_discriminator_blocks", "-1"),
        (["--diversity_weight", "nan"], "--diversity_weight", "nan"),
        (["--diversity_weight", "2"], "--diversity_weight", "2.0"),  # without --diversity_loss
        (["--diversity_loss", "dcl", "--diversity_batch_size", "0"], "--diversity_batch_size", "0"),
        (["--diversity_loss", "dcl", "--diversity_interval", "0"], "--diversity_interval", "0"),
        (["--diversity_loss", "cdc", "--cdc_anchor_interval", "-1"], "--cdc_anchor_interval", "-1"),
        (["--summarize", "/nonexistent/results.jsonl"], "--summarize", "/nonexistent/results.jsonl"),
        (["--contender", "bogus"], "--contender", "bogus"),
        (["--contender", "=path"], "--contender", "=path"),
    ],
)
def test_bad_values_are_refused_before_any_work_naming_option_and_value(extra, option, value, capsys):
    assert_refused(["--contender", "a=checkpoints/metagan-kanji-32", *extra], capsys, option, value)


@pytest.mark.parametrize(
    "contenders, duplicate",
    [
        (["a=checkpoints/metagan-kanji-32-small", "a=checkpoints/metagan-kanji-32"], "'a'"),
        (["a=checkpoints/metagan-kanji-32", "scratch", "scratch"], "'scratch'"),
        (["a=checkpoints/metagan-kanji-32", "scratch=runs/x", "scratch"], "'scratch'"),
    ],
)
def test_contender_names_must_differ(contenders, duplicate, capsys):
    argv = [arg for spec in contenders for arg in ("--contender", spec)]
    assert_refused(argv, capsys, "--contender", duplicate)


def test_scratch_needs_a_checkpoint_listed_before_it(capsys):
    assert_refused(["--contender", "scratch", "--contender", "a=checkpoints/metagan-kanji-32"], capsys, "scratch")


def test_the_lowest_allowed_values_are_accepted():
    common = ["--contender", "a=checkpoints/metagan-kanji-32", "--contender", "scratch", "--shots", "1"]
    args = evaluate_metagan.parse_args(
        [*common, "--num_samples", "2", "--num_classes", "1", "--num_val", "0", "--num_test", "1", "--num_steps", "1"]
    )
    assert (args.num_samples, args.num_classes, args.num_val, args.num_test) == (2, 1, 0, 1)
    args = evaluate_metagan.parse_args(
        [*common, "--yardstick", "--num_samples", "4", "--num_classes", "2", "--num_val", "2", "--num_test", "0"]
    )
    assert (args.num_samples, args.num_classes, args.num_val, args.num_test) == (4, 2, 2, 0)
    evaluate_metagan.parse_args([*common, "--diversity_loss", "cdc", "--cdc_anchor_interval", "0"])


def test_a_split_that_does_not_fit_is_refused_before_anything_is_rendered(tmp_path, monkeypatch):
    save_tiny_pipeline(tmp_path / "tiny")
    cache = tmp_path / "cache"
    monkeypatch.setenv("METAGAN_HUB_CACHE", str(cache))
    common = ["--contender", f"tiny={tmp_path / 'tiny'}", "--dataset", "kanjivg", "--num_steps", "1"]
    with pytest.raises(ValueError, match="num_val \\+ num_test must be at most"):
        evaluate_metagan.main(evaluate_metagan.parse_args([*common, "--num_val", "3", "--num_test", "999999"]))
    with pytest.raises(ValueError, match="--first_class 99999: the test split has only"):
        evaluate_metagan.main(evaluate_metagan.parse_args([*common, "--first_class", "99999"]))
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))  # no KanjiVG render was made
