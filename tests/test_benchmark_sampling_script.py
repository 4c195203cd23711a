"""`scripts/benchmark_sampling.py`: the `--quick` smoke run (tiny GAN, two digit classes), resuming, what the
discriminator-rejection rows keep, per-contender adapt() options, and the errors for bad input."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.testing_utils import record_adapt_calls

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
spec = importlib.util.spec_from_file_location("benchmark_sampling", REPO / "scripts" / "benchmark_sampling.py")
sampling = importlib.util.module_from_spec(spec)
sys.modules["benchmark_sampling"] = sampling
spec.loader.exec_module(sampling)


def quick(out: Path, *extra: str):
    return sampling.parse_args(["--quick", "--output_dir", str(out), "--cache_dir", str(out.parent / "cache"), *extra])


def test_quick_run_judges_every_setting_per_class_and_resumes(tmp_path):
    out = tmp_path / "sampling"
    argv = ("--latent_scales", "0.5,2", "--keep_fractions", "0.5", "--tone_match")
    rows = sampling.main(quick(out, *argv))
    settings = {sampling.setting_key(r) for r in rows}
    plain = {(1.0, 1.0, False), (0.5, 1.0, False), (2.0, 1.0, False), (1.0, 0.5, False)}
    assert settings == plain | {(1.0, 1.0, True), (0.5, 1.0, True), (2.0, 1.0, True)}  # tone at every latent scale
    assert sorted({r["class_index"] for r in rows}) == [0, 1] and len(rows) == 14
    for c in (0, 1):
        by = {sampling.setting_key(r)[:2]: r for r in rows if r["class_index"] == c and not r["tone_match"]}
        toned = {r["latent_scale"]: r for r in rows if r["class_index"] == c and r["tone_match"]}
        # the same samples through adapt()'s tone curve: other metrics, same adaptation
        assert toned[1.0]["adapt_seconds"] == by[(1.0, 1.0)]["adapt_seconds"]
        assert toned[1.0]["metrics"]["relative_diversity"] != by[(1.0, 1.0)]["metrics"]["relative_diversity"]
        # scaled latents through the same curve: neither the unscaled toned samples nor the scaled plain ones
        diversity = toned[2.0]["metrics"]["relative_diversity"]
        assert diversity not in (
            toned[1.0]["metrics"]["relative_diversity"],
            by[(2.0, 1.0)]["metrics"]["relative_diversity"],
        )
        assert all(r["adapt_options"] == {"mixed_precision": "no"} for r in rows)
        # the kept half are the candidates the discriminator rates highest: their mean logit is at least that of the
        # first N candidates (the benchmark's own sample set), which are a subset of the same size
        assert by[(1.0, 0.5)]["mean_discriminator_logit"] >= by[(1.0, 1.0)]["mean_discriminator_logit"] - 1e-6
        for r in by.values():
            assert 0.0 <= r["metrics"]["recognisability"] <= 1.0 and r["num_samples"] == 24
        # scaling the latents changes the samples
        assert by[(2.0, 1.0)]["metrics"]["relative_diversity"] != by[(1.0, 1.0)]["metrics"]["relative_diversity"]
    table = (out / sampling.SUMMARY_FILE).read_text(encoding="utf-8")
    assert "keep 0.5" in table and "latents x2" in table and "tone matched" in table
    assert "tone matched, latents x2" in table
    lines = (out / sampling.RESULTS_FILE).read_text(encoding="utf-8")
    again = sampling.main(quick(out, *argv))
    assert (out / sampling.RESULTS_FILE).read_text(encoding="utf-8") == lines  # nothing re-run
    assert [json.dumps(r, sort_keys=True) for r in again] == [json.dumps(r, sort_keys=True) for r in rows]


def test_adapt_options_reach_adapt_and_the_records(tmp_path, monkeypatch):
    seen = record_adapt_calls(monkeypatch)
    out = tmp_path / "sampling"
    args = quick(out, "--classes", "0:1", "--latent_scales", "", "--keep_fractions", "")
    tiny = sampling.bf.build_quick_models(out, args.fewshot.seed)["gan"]
    argv = ["--contender", f"augmented={tiny}", "--adapt_options", "augmented:shot_augment=1"]
    rows = sampling.main(quick(out, "--classes", "0:1", "--latent_scales", "", "--keep_fractions", "", *argv))
    assert [kw["shot_augment"] for kw in seen] == [1.0] and seen[0]["tone_match"] is False
    assert [r["adapt_options"]["shot_augment"] for r in rows] == [1.0]
    with pytest.raises(ValueError, match="no GAN contender has that name"):
        quick(out, "--contender", f"augmented={tiny}", "--adapt_options", "other:shot_augment=1")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--quick", "--latent_scales", "-1"], "`--latent_scales` values must be positive and finite, got -1.0"),
        (["--quick", "--latent_scales", "nan"], "`--latent_scales` values must be positive and finite"),
        (["--quick", "--keep_fractions", "1.5"], "`--keep_fractions` values must be in (0, 1], got 1.5"),
        (["--quick", "--keep_fractions", "0"], "`--keep_fractions` values must be in (0, 1], got 0.0"),
        (["--contender", "scratch"], "only Meta-GAN pipeline folders"),
        (["--contender", "ddpm-full"], "only Meta-GAN pipeline folders"),
        ([], "give at least one --contender"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(argv, message, tmp_path):
    with pytest.raises(ValueError) as err:
        sampling.parse_args([*argv, "--output_dir", str(tmp_path / "out")])
    assert message in str(err.value)
