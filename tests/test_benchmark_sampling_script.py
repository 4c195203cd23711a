"""`scripts/benchmark_sampling.py`: the `--quick` smoke run (tiny GAN, two digit classes), resuming, what the
discriminator-rejection rows keep, per-contender adapt() options, and the errors for bad input."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

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
    argv = ("--latent_scales", "0.5,2", "--keep_fractions", "0.5", "--tone_match", "--copy_margins", "1")
    rows = sampling.main(quick(out, *argv))
    settings = {sampling.setting_key(r) for r in rows}
    plain = {(s, 1.0, False, 0.0, 1.0, None, 0.2) for s in (1.0, 0.5, 2.0)}
    plain.add((1.0, 0.5, False, 0.0, 1.0, None, 0.2))
    toned_keys = {(s, 1.0, True, 0.0, 1.0, None, 0.2) for s in (1.0, 0.5, 2.0)}  # tone at every latent scale
    # and the near-copy filter on top, in the discriminator's features (the tiny model has no copy encoder), replacing
    # at most the pipeline's default share
    filtered_keys = {(s, 1.0, True, 1.0, 1.0, "discriminator", 0.2) for s in (1.0, 0.5, 2.0)}
    assert settings == plain | toned_keys | filtered_keys
    assert sorted({r["class_index"] for r in rows}) == [0, 1] and len(rows) == 20
    for c in (0, 1):
        by = {sampling.setting_key(r)[:2]: r for r in rows if r["class_index"] == c and not r["tone_match"]}
        toned = {
            r["latent_scale"]: r for r in rows if r["class_index"] == c and r["tone_match"] and not r["copy_margin"]
        }
        filtered = {r["latent_scale"]: r for r in rows if r["class_index"] == c and r["copy_margin"]}
        for scale, r in filtered.items():
            stats = r["copy_filter"]
            assert stats["replaced"] + stats["kept_copies"] == stats["near_copies"] <= 24 and stats["threshold"] > 0
            if stats["replaced"] == 0:  # nothing replaced: the toned samples themselves
                assert r["metrics"] == pytest.approx(toned[scale]["metrics"], rel=1e-5, abs=1e-6)
        assert all(r["copy_filter"] is None for r in rows if not r["copy_margin"])
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
    assert "tone matched, latents x2" in table and "tone matched, latents x2, near-copies replaced (margin 1)" in table
    lines = (out / sampling.RESULTS_FILE).read_text(encoding="utf-8")
    again = sampling.main(quick(out, *argv))
    assert (out / sampling.RESULTS_FILE).read_text(encoding="utf-8") == lines  # nothing re-run
    assert [json.dumps(r, sort_keys=True) for r in again] == [json.dumps(r, sort_keys=True) for r in rows]

    # records are reused only with the options they were made with: other ones are refused before any work, naming
    # what differs, and nothing is run, written or republished
    tiny = sampling.bf.build_quick_models(out, 0)["gan"]
    for extra, message in (
        (("--num_steps", "4"), "num_steps: 2 there, 4 now"),
        (("--latent_scales", "2"), "latent_scales: [0.5, 2.0] there, [2.0] now"),
        (("--seed", "1"), "seed: 0 there, 1 now"),
        (("--copy_margins", "1.5"), "copy_margins: [1.0] there, [1.5] now"),
        (("--max_copy_share", "0.5"), "max_copy_share: None there, 0.5 now"),
        (("--contender", f"tiny={tiny}", "--adapt_options", "tiny:shot_augment=1"), "contender tiny: "),
    ):
        with pytest.raises(ValueError, match="other measurement options") as err:
            sampling.main(quick(out, *argv, *extra))
        assert message in str(err.value) and "a new --output_dir" in str(err.value)
    assert (out / sampling.RESULTS_FILE).read_text(encoding="utf-8") == lines
    assert (out / sampling.SUMMARY_FILE).read_text(encoding="utf-8") == table
    # another class is added beside the reused ones
    more = sampling.main(quick(out, *argv, "--classes", "0:3"))
    assert sorted({r["class_index"] for r in more}) == [0, 1, 2] and len(more) == 30
    assert (out / sampling.RESULTS_FILE).read_text(encoding="utf-8").startswith(lines)
    # records judged by another evaluation classifier are not added to: refused once the domain loads
    saved = json.loads((out / sampling.CONFIG_FILE).read_text(encoding="utf-8"))
    assert set(saved[sampling.CLASSIFIERS_KEY]) == {"digits"}
    saved[sampling.CLASSIFIERS_KEY]["digits"] = "another recipe"
    (out / sampling.CONFIG_FILE).write_text(json.dumps(saved), encoding="utf-8")
    with pytest.raises(ValueError, match="'digits' evaluation classifier differs .* vs another recipe"):
        sampling.main(quick(out, *argv, "--classes", "0:4"))
    assert (out / sampling.RESULTS_FILE).read_text(encoding="utf-8").count("\n") == 30
    # records from before the options were saved cannot be checked: refused
    (out / sampling.CONFIG_FILE).unlink()
    with pytest.raises(ValueError, match="from before their options were saved"):
        sampling.main(quick(out, *argv))


def test_adapt_options_reach_adapt_and_the_records(tmp_path, monkeypatch):
    seen = record_adapt_calls(monkeypatch)
    out = tmp_path / "sampling"
    args = quick(out, "--classes", "0:1", "--latent_scales", "", "--keep_fractions", "")
    tiny = sampling.bf.build_quick_models(out, args.fewshot.seed)["gan"]
    argv = ["--contender", f"augmented={tiny}", "--adapt_options", "augmented:shot_augment=1"]
    rows = sampling.main(
        quick(out, "--classes", "0:1", "--latent_scales", "", "--keep_fractions", "", "--num_steps", "2", *argv)
    )
    assert [kw["shot_augment"] for kw in seen] == [1.0] and seen[0]["tone_match"] is False
    assert [kw["num_steps"] for kw in seen] == [2] and [r["adapt_steps"] for r in rows] == [2]
    assert [r["adapt_options"]["shot_augment"] for r in rows] == [1.0]
    with pytest.raises(ValueError, match="no GAN contender has that name"):
        quick(out, "--contender", f"augmented={tiny}", "--adapt_options", "other:shot_augment=1")


def test_rival_timing_in_the_same_run_gives_every_timed_setting_its_speed_ratio(tmp_path):
    out = tmp_path / "sampling"
    argv = ("--classes", "0:1", "--latent_scales", "", "--keep_fractions", "", "--tone_match", "--copy_margins", "1")
    sampling.main(quick(out, *argv, "--rival_ddim_steps", "2,3"))
    speed = json.loads((out / sampling.RIVAL_SPEED_FILE).read_text(encoding="utf-8"))
    assert list(speed["seconds_per_1000"]) == ["2", "3"] and all(v > 0 for v in speed["seconds_per_1000"].values())
    assert speed["num_images"] == 24 and speed["environment"]["num_threads"] == torch.get_num_threads()
    assert speed["rival"].endswith("tiny-ddpm")
    table = (out / sampling.SUMMARY_FILE).read_text(encoding="utf-8")
    assert "### Sampling cost against the rival's DDIM sampling in the same run" in table
    assert "x faster than DDIM 2, median (slowest)" in table and "x faster than DDIM 3" in table
    assert "| digits | tiny | tone matched, near-copies replaced (margin 1) | 1 | " in table
    # the table comes back from the records and the saved timing alone
    (out / sampling.SUMMARY_FILE).unlink()
    sampling.main(sampling.parse_args(["--summarize_only", "--output_dir", str(out)]))
    assert (out / sampling.SUMMARY_FILE).read_text(encoding="utf-8") == table


def test_speed_summary_ratios_use_the_median_and_the_slowest_class():
    def row(c, seconds, margin=0.0):
        return {
            "contender": "g",
            "domain": "kanji",
            "class_index": c,
            "latent_scale": 1.0,
            "keep_fraction": 1.0,
            "tone_match": True,
            "copy_margin": margin,
            "sample_seconds": seconds,
            "num_samples": 200,
        }

    rows = [row(0, 0.2), row(1, 0.3), row(2, 0.4), row(0, 1.0, 1.0), row(1, 0.8, 1.0), row(1, None)]
    rows[3]["copy_filter"] = {"extra_draws": 20, "discriminator_passes": 90}
    rows[4]["copy_filter"] = {"extra_draws": 40, "discriminator_passes": 110}
    speed = {"seconds_per_1000": {"10": 120.0, "25": 300.0}, "environment": {"cpu_capability": "X", "num_threads": 1}}
    text = sampling.speed_summary(rows, speed)
    # 0.2 / 0.3 / 0.4 s per 200 images -> 1.0 / 1.5 / 2.0 s per 1,000: median 1.5, slowest 2.0
    assert "| kanji | g | tone matched | 3 | 1.50 (2.00) | 80x (60x) | 200x (150x) | - |" in text
    # 4.0 / 5.0 s per 1,000: median 4.5, slowest 5.0; per image 0.10 / 0.20 extra draws, 0.45 / 0.55 passes
    filtered = (
        "| kanji | g | tone matched, near-copies replaced (margin 1) | 2 | 4.50 (5.00) | 27x (24x) | 67x (60x) "
        "| 0.15 / 0.50 |"
    )
    assert filtered in text
    # records from before the gate have no pass count
    del rows[4]["copy_filter"]["discriminator_passes"]
    assert "| 67x (60x) | 0.15 / - |" in sampling.speed_summary(rows, speed)
    assert "CPU capability X, 1 threads; rival: DDIM 10 120.0 s, DDIM 25 300.0 s per 1,000 images" in text


def test_any_adapt_budget_is_accepted_not_only_the_fewshot_snapshots(tmp_path):
    # only the final generator is judged here, so 300 steps (not one of the few-shot benchmark's snapshot steps) is a
    # valid budget
    args = sampling.parse_args(["--contender", f"g={tmp_path}", "--num_steps", "300", "--output_dir", str(tmp_path)])
    assert args.fewshot.num_steps == 300 and args.fewshot.snapshot_steps == [0, 300]
    with pytest.raises(ValueError, match=r"`--num_steps` must be a positive integer .*, got 0"):
        sampling.parse_args(["--contender", f"g={tmp_path}", "--num_steps", "0", "--output_dir", str(tmp_path)])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--quick", "--latent_scales", "-1"], "`--latent_scales` values must be positive and finite, got -1.0"),
        (["--quick", "--latent_scales", "nan"], "`--latent_scales` values must be positive and finite"),
        (["--quick", "--keep_fractions", "1.5"], "`--keep_fractions` values must be in (0, 1], got 1.5"),
        (["--quick", "--keep_fractions", "0"], "`--keep_fractions` values must be in (0, 1], got 0.0"),
        (["--quick", "--copy_margins", "0"], "`--copy_margins` values must be positive and finite, got 0.0"),
        (["--quick", "--copy_margins", "inf"], "`--copy_margins` values must be positive and finite, got inf"),
        (["--quick", "--max_copy_share", "0"], "`max_copy_share` must be a number in (0, 1]"),
        (["--quick", "--max_copy_share", "1.5"], "`max_copy_share` must be a number in (0, 1]"),
        (["--quick", "--rival_ddim_steps", "0"], "`--rival_ddim_steps` values must be positive integers, got '0'"),
        (["--quick", "--rival_ddim_steps", "2.5"], "`--rival_ddim_steps` values must be positive integers, got '2.5'"),
        (["--contender", "scratch"], "only Meta-GAN pipeline folders"),
        (["--contender", "ddpm-full"], "only Meta-GAN pipeline folders"),
        ([], "give at least one --contender"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(argv, message, tmp_path):
    with pytest.raises(ValueError) as err:
        sampling.parse_args([*argv, "--output_dir", str(tmp_path / "out")])
    assert message in str(err.value)


def _sampling_row(contender: str, c: int, scale: float, **metrics: float) -> dict:
    return {
        "contender": contender,
        "domain": "kanji",
        "class_index": c,
        "shots": 5,
        "latent_scale": scale,
        "keep_fraction": 1.0,
        "tone_match": True,
        "metrics": {m: metrics.get(m, 0.5) for m in sampling.REPORTED},
    }


def _rival_row(c: int, label: str, shots: int = 5, variant: str = "default", **metrics: float) -> dict:
    return {
        "contender": "ddpm-full",
        "domain": "kanji",
        "class_index": c,
        "shots": shots,
        "variant": variant,
        "snapshot": {"label": label},
        "metrics": {m: metrics.get(m, 0.5) for m in sampling.REPORTED},
    }


def _write(path: Path, rows: list[dict]) -> Path:
    import gzip

    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_summarize_only_pairs_settings_with_a_fewshot_contender_by_class(tmp_path):
    label = "3x time, DDIM 25"
    records = _write(
        tmp_path / "sampling.jsonl.gz",
        [_sampling_row("variety", c, 1.5, copy_rate=0.03 + 0.01 * c, recognisability=0.9) for c in range(3)]
        + [_sampling_row("variety", 0, 1.5, copy_rate=9.0)],  # a repeat: the first row of a class and setting wins
    )
    rival = _write(
        tmp_path / "results.jsonl",
        [_rival_row(c, label, copy_rate=0.01, recognisability=0.8) for c in range(2)]  # class 2 has no rival row
        + [_rival_row(0, "1x time, DDIM 25", copy_rate=5.0), _rival_row(1, label, shots=10, copy_rate=5.0)]
        + [_rival_row(0, label, variant="noise_floor", copy_rate=5.0)],
    )
    out = tmp_path / "tables"
    args = sampling.parse_args(
        ["--summarize_only", "--records", str(records), "--pair_with", str(rival), "--output_dir", str(out)]
    )
    sampling.main(args)
    table = (out / sampling.SUMMARY_FILE).read_text(encoding="utf-8")
    assert "### kanji: minus ddpm-full (3x time, DDIM 25)" in table
    paired = table.split("minus ddpm-full")[1]
    rival_line = next(line for line in paired.splitlines() if line.startswith("| ddpm-full"))
    assert "| 2 |" in rival_line and "0.010" in rival_line  # the two classes it has, K=5, that label, plain runs
    variety = next(line for line in paired.splitlines() if line.startswith("| variety"))
    cells = [cell.strip() for cell in variety.strip("|").split("|")]
    assert cells[1] == "tone matched, latents x1.5" and cells[2] == "2"
    copy = cells[3 + list(sampling.REPORTED).index("copy_rate")]
    recognised = cells[3 + list(sampling.REPORTED).index("recognisability")]
    # classes 0 and 1: copy rates 0.03 and 0.04 minus 0.01 each -> +0.025 ± 0.005
    assert copy == "0.035 (+0.025 ± 0.005)" and recognised == "0.900 (+0.100 ± 0.000)"
    assert "real images" not in table  # these results hold no `real` rows


def _paired_tables(tmp_path: Path, records: Path, results: Path, *extra: str) -> str:
    """The tables of `--summarize_only` on `records` paired with `results` (plus `extra` arguments)."""
    out = tmp_path / "tables"
    argv = ["--summarize_only", "--records", str(records), "--pair_with", str(results), "--output_dir", str(out)]
    sampling.main(sampling.parse_args([*argv, *extra]))
    return (out / sampling.SUMMARY_FILE).read_text(encoding="utf-8")


def _line_cells(tables: str, prefix: str, after: str = "minus ddpm-full") -> list[str]:
    """The cells of the first line starting `prefix` after the first `after` in `tables`."""
    line = next(line for line in tables.split(after)[1].splitlines() if line.startswith(prefix))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _paired_cells(tmp_path: Path, records: Path, results: Path, prefix: str) -> list[str]:
    """`--summarize_only` on `records` paired with `results`: the cells of the rival table's line starting `prefix`."""
    return _line_cells(_paired_tables(tmp_path, records, results), prefix)


def test_paired_tables_show_the_real_images_own_rates_over_the_paired_classes(tmp_path):
    label = "3x time, DDIM 25"
    records = _write(tmp_path / "sampling.jsonl", [_sampling_row("variety", c, 1.5, copy_rate=0.05) for c in range(3)])
    real_rows = [{**_rival_row(c, "real", copy_rate=0.3 + 0.2 * c), "contender": "real"} for c in (0, 1, 2)]
    rival = _write(
        tmp_path / "results.jsonl",
        [_rival_row(c, label, copy_rate=0.01) for c in range(2)]  # the rival has classes 0 and 1 only
        + real_rows
        + [{**_rival_row(0, "real", shots=10, copy_rate=9.0), "contender": "real"}],  # other K: not paired
    )
    cells = _paired_cells(tmp_path, records, rival, "| real images (own)")
    # over the classes the rival is paired on (0 and 1): copy rates 0.3 and 0.5
    assert cells[2] == "2" and cells[3 + list(sampling.REPORTED).index("copy_rate")] == "0.400"


def test_runs_with_other_shot_seeds_pair_as_further_classes(tmp_path):
    label = "3x time, DDIM 25"
    rows, rival = [], []
    for seed, (ours, theirs) in enumerate([(0.9, 0.8), (0.8, 0.8)]):  # seed 0: +0.1, seed 1: 0
        row = _sampling_row("variety", 0, 1.5, recognisability=ours)
        rows.append({**row, "seeds": {"shots": seed, "adapt": 5000 + seed, "samples": seed}})
        rival.append({**_rival_row(0, label, recognisability=theirs), "seeds": {"shots": seed}})
    records = _write(tmp_path / "sampling.jsonl", rows)
    results = _write(tmp_path / "results.jsonl", rival)
    cells = _paired_cells(tmp_path, records, results, "| variety")
    # both shot sets of class 0 are kept (not dropped as repeats) and each is paired with the rival on its shots
    assert cells[2] == "2"
    assert cells[3 + list(sampling.REPORTED).index("recognisability")] == "0.850 (+0.050 ± 0.050)"


def test_by_shot_set_adds_a_paired_table_per_shot_set(tmp_path):
    label = "3x time, DDIM 25"
    rows, rival = [], []
    for seed, ours in enumerate([(0.9, 0.7), (0.6, 0.8)]):  # the rival at 0.5 everywhere: +0.3 and +0.2 in the mean
        for c, value in enumerate(ours):
            row = _sampling_row("variety", c, 1.5, recognisability=value)
            rows.append({**row, "seeds": {"shots": seed, "adapt": 5000 + seed, "samples": seed}})
            rival.append({**_rival_row(c, label, recognisability=0.5), "seeds": {"shots": seed}})
    records = _write(tmp_path / "sampling.jsonl", rows)
    results = _write(tmp_path / "results.jsonl", rival)
    pooled = _paired_tables(tmp_path, records, results)
    assert "shot set" not in pooled  # off by default: the tables stay as they were
    table = _paired_tables(tmp_path, records, results, "--by_shot_set")
    assert table.startswith(pooled)  # the pooled tables first, unchanged
    column = 3 + list(sampling.REPORTED).index("recognisability")
    for seed, expected in [(0, "0.800 (+0.300 ± 0.100)"), (1, "0.700 (+0.200 ± 0.100)")]:
        cells = _line_cells(table, "| variety", after=f"### kanji, shot set {seed}: minus ddpm-full")
        assert cells[2] == "2" and cells[column] == expected


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--summarize_only", "--contender", "a=b"], "`--summarize_only` runs nothing"),
        (["--summarize_only", "--records", "missing.jsonl"], "`--records` 'missing.jsonl': no such file"),
        (["--summarize_only", "--pair_with", "missing.jsonl"], "`--pair_with` 'missing.jsonl': no such file"),
        (["--summarize_only", "--by_shot_set"], "`--by_shot_set` splits the tables against `--pair_with`"),
    ],
)
def test_bad_summary_arguments_are_refused_naming_the_argument(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as err:
        sampling.parse_args([*argv, "--output_dir", str(tmp_path / "out")])
    assert message in str(err.value)


def test_pairing_with_a_missing_contender_or_snapshot_names_what_is_there(tmp_path):
    records = _write(tmp_path / "s.jsonl", [_sampling_row("variety", 0, 1.0)])
    rival = _write(tmp_path / "r.jsonl", [_rival_row(0, "3x time, DDIM 25")])
    for extra, message in (
        (["--pair_snapshot", "10x time, DDIM 25"], "its snapshot labels there: ['3x time, DDIM 25']"),
        (["--pair_contender", "ddpm-lora"], "none (no rows of that contender)"),
    ):
        argv = ["--summarize_only", "--records", str(records), "--pair_with", str(rival), *extra]
        with pytest.raises(ValueError, match="`--pair_contender`") as err:
            sampling.main(sampling.parse_args([*argv, "--output_dir", str(tmp_path / "out")]))
        assert message in str(err.value)
    with pytest.raises(ValueError, match="no records"):
        sampling.main(sampling.parse_args(["--summarize_only", "--output_dir", str(tmp_path / "empty")]))


def test_copy_features_run_the_filter_in_each_feature_space_paired_on_one_adaptation(tmp_path):
    from metagan_hub import MetaGANPipeline
    from metagan_hub.metrics.classifiers import EvaluationClassifier

    out = tmp_path / "sampling"
    argv = ("--classes", "0:1", "--latent_scales", "", "--keep_fractions", "", "--copy_margins", "1")
    tiny = sampling.bf.build_quick_models(out, quick(out).fewshot.seed)["gan"]
    pipe = MetaGANPipeline.from_pretrained(tiny)
    size = pipe.generator.config.sample_size
    torch.manual_seed(0)
    encoder = EvaluationClassifier(classes=["a", "b"], resolution=size, block_out_channels=(8, 16)).eval()
    pipe.register_modules(copy_encoder=encoder)
    pipe.save_pretrained(tmp_path / "with-encoder")
    with_encoder = f"enc={tmp_path / 'with-encoder'}"
    rows = sampling.main(quick(out, *argv, "--contender", with_encoder, "--copy_features", "encoder,discriminator"))
    filtered = {r["copy_features"]: r for r in rows if r["copy_margin"]}
    assert sorted(filtered) == ["discriminator", "encoder"]
    assert filtered["encoder"]["copy_filter"]["encoder_passes"] >= 24
    assert filtered["encoder"]["copy_filter"]["discriminator_passes"] == 0
    assert filtered["discriminator"]["copy_filter"]["encoder_passes"] == 0
    assert filtered["discriminator"]["copy_filter"]["discriminator_passes"] > 0
    assert filtered["encoder"]["adapt_seconds"] == filtered["discriminator"]["adapt_seconds"]  # one adaptation
    table = (out / sampling.SUMMARY_FILE).read_text(encoding="utf-8")
    assert "near-copies replaced (margin 1, copy encoder)" in table and "near-copies replaced (margin 1) |" in table
    # without --copy_features the pipeline's own choice: its encoder
    again = sampling.main(quick(tmp_path / "again", *argv, "--contender", with_encoder))
    assert [r["copy_features"] for r in again if r["copy_margin"]] == ["encoder"]
    with pytest.raises(ValueError, match="contender 'tiny' .* has no copy encoder"):
        sampling.main(quick(tmp_path / "none", *argv, "--contender", f"tiny={tiny}", "--copy_features", "encoder"))
    with pytest.raises(
        ValueError, match="`--copy_features` .* each must be one of encoder, discriminator, got 'pixels'"
    ):
        quick(out, "--copy_features", "pixels")


def test_max_copy_share_reaches_the_filter_the_records_and_the_labels(tmp_path):
    out = tmp_path / "sampling"
    argv = ("--classes", "0:1", "--latent_scales", "", "--keep_fractions", "", "--copy_margins", "1000")
    default = {r["copy_margin"]: r for r in sampling.main(quick(out / "a", *argv))}[1000.0]
    half = {r["copy_margin"]: r for r in sampling.main(quick(out / "b", *argv, "--max_copy_share", "0.5"))}[1000.0]
    assert default["max_copy_share"] == 0.2 and half["max_copy_share"] == 0.5
    # a huge margin flags as many as the share allows: those below its quantile of the 24 samples' distances
    assert default["copy_filter"]["near_copies"] == 5 and half["copy_filter"]["near_copies"] == 12
    assert sampling.setting_key(half)[6] == 0.5 and sampling.setting_key(default)[6] == 0.2
    old = {k: v for k, v in default.items() if k != "max_copy_share"}  # a record from before the option
    assert sampling.setting_key(old) == sampling.setting_key(default)
    table = (out / "b" / sampling.SUMMARY_FILE).read_text(encoding="utf-8")
    assert "near-copies replaced (margin 1000, at most 0.5 of them)" in table
    assert "at most" not in (out / "a" / sampling.SUMMARY_FILE).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--quick", "--seed", "-1"], "`--seed` must be a non-negative integer, got -1"),
        (["--quick", "--rival", "{tmp}/nope", "--rival_ddim_steps", "2"], "`--rival` '{tmp}/nope': no such"),
        (["--quick", "--rival", "{tmp}", "--rival_ddim_steps", "2"], "`--rival` '{tmp}' is not a DDPMPipeline folder"),
        (["--quick", "--rival", "{tmp}"], "`--rival` '{tmp}' is the rival that --rival_ddim_steps times"),
        (["--quick", "--adapt_options", "tiny:tone_match=true"], "`--adapt_options` for 'tiny': tone_match is"),
        (["--summarize_only", "--rival_ddim_steps", "2"], "`--summarize_only` runs nothing"),
    ],
)
def test_bad_rival_seed_and_tone_options_are_refused_before_any_work(argv, message, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(ValueError) as err:
        sampling.parse_args([*argv, "--output_dir", str(tmp_path / "out")])
    assert message.replace("{tmp}", str(tmp_path)) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_pair_contender_missing_from_pair_with_is_refused_before_the_run(tmp_path):
    rival = _write(tmp_path / "r.jsonl", [_rival_row(0, "3x time, DDIM 25")])
    with pytest.raises(ValueError, match="`--pair_contender` 'bogus' at `--pair_snapshot`") as err:
        quick(tmp_path / "out", "--pair_with", str(rival), "--pair_contender", "bogus")
    assert "none (no rows of that contender)" in str(err.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        # the few-shot benchmark's checks of adapt() option values, for --num_steps steps, before any adaptation
        (["--adapt_options", "tiny:learning_rate=-1"], "`--adapt_options` for 'tiny': `learning_rate` must be a"),
        (["--adapt_options", "tiny:batch_size=0"], "`batch_size` must be a positive integer, got 0"),
    ],
)
def test_bad_adapt_option_values_exit_naming_the_option(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        quick(tmp_path / "out", *argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_adapt_option_values_are_checked_for_this_scripts_budget(tmp_path):
    # --quick's few-shot snapshots go to 4 steps, but adapt() runs --num_steps (2) steps here
    with pytest.raises(ValueError, match="`lr_warmup_steps` must be an integer from 0 to num_steps - 1 = 1, got 3"):
        quick(tmp_path / "out", "--adapt_options", "tiny:lr_warmup_steps=3,lr_scheduler=linear", "--num_steps", "2")
