"""`scripts/benchmark_fewshot.py`: the `--quick` smoke run end to end (tiny GAN, scratch and the diffusion rival's
recipes on digits), resuming, the summary arithmetic and the errors for bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("benchmark_fewshot", REPO / "scripts" / "benchmark_fewshot.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["benchmark_fewshot"] = bench  # its dataclasses look their module up there
spec.loader.exec_module(bench)

# a per-contender adapt() option: reaches adapt() (recorded) and is part of the units' resume keys
TINY_OPTIONS = ("--adapt_options", "tiny:r1_interval=2")
TIMING_FIELDS = ("adapt_seconds", "sample_seconds_per_1000", "unit_seconds", "adapt_wall_time_s_reported")


def quick_args(out: Path, *extra: str):
    return bench.parse_args(["--quick", "--output_dir", str(out), "--cache_dir", str(out.parent / "cache"), *extra])


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def without_timings(record: dict) -> dict:
    r = {k: v for k, v in record.items() if k not in TIMING_FIELDS and k != "calibration"}
    r["snapshot"] = {k: v for k, v in r["snapshot"].items() if k != "seconds"}
    return r


def tiny_default_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r["contender"] == "tiny" and r["shots"] == 5 and r["variant"] == "default"]


def test_a_recipe_added_to_a_resumed_run_is_timed_and_the_others_keep_their_budgets(tmp_path):
    out = tmp_path / "bench"
    common = ("--classes", "0:1", "--extra_shots", "", "--no_figures")
    bench.main(quick_args(out, *common, "--contenders", "tiny,ddpm-full"))
    path = out / "calibration.json"
    before = json.loads(path.read_text(encoding="utf-8"))
    # a calibration made before these recipes existed; DomainStudio is loaded (--quick loads every recipe) but not run
    del before["rival_seconds_per_step"]["lora"], before["rival_seconds_per_step"]["domainstudio"]
    path.write_text(json.dumps(before), encoding="utf-8")
    result = bench.main(quick_args(out, *common, "--resume", "--contenders", "ddpm-lora"))
    after = json.loads(path.read_text(encoding="utf-8"))
    assert (
        after["gan"] == before["gan"]
        and after["rival_seconds_per_step"]["full"] == before["rival_seconds_per_step"]["full"]
    )
    assert after["rival_seconds_per_step"]["lora"] > 0 and set(after["recipes_timed_later"]) == {"lora"}
    assert "domainstudio" not in after["rival_seconds_per_step"]  # only the recipes that run are timed
    records = read_records(out / "results.jsonl")
    assert result["ran"] == 1 and {r["contender"] for r in records} >= {"ddpm-full", "ddpm-lora"}


def test_rival_units_are_keyed_by_the_rival_files_not_by_its_path(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    common = ("--classes", "0:1", "--extra_shots", "", "--no_figures", "--contenders", "ddpm-full")
    bench.main(quick_args(out, *common, "--max_minutes", "1e-6"))  # builds the quick models, runs nothing
    rival = out / "quick_models" / "tiny-ddpm"
    # a folder written when the rival was keyed by its absolute path, from another checkout that is gone since
    other = tmp_path / "other-checkout" / "tiny-ddpm"
    shutil.copytree(rival, other)
    with monkeypatch.context() as m:
        m.setattr(bench, "rival_fingerprint", os.path.abspath)
        bench.main(quick_args(out, *common, "--resume", "--rival", str(other)))
    shutil.rmtree(other.parent)
    (legacy,) = {r["unit_key"] for r in read_records(out / "results.jsonl") if r["kind"] == "diffusion"}
    assert (out / "units" / f"{legacy}.safetensors").is_file()

    result = bench.main(quick_args(out, *common, "--resume"))  # re-keyed, nothing runs again
    (key,) = {r["unit_key"] for r in read_records(out / "results.jsonl") if r["kind"] == "diffusion"}
    assert result["ran"] == 0 and key != legacy
    assert (out / "units" / f"{key}.safetensors").is_file() and not (out / "units" / f"{legacy}.safetensors").exists()

    # a copy of the rival elsewhere resumes the same units; other weights are another rival
    moved = tmp_path / "elsewhere" / "rival"
    shutil.copytree(rival, moved)
    assert bench.main(quick_args(out, *common, "--resume", "--rival", str(moved)))["ran"] == 0
    weights = next((moved / "unet").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert bench.rival_fingerprint(moved) != bench.rival_fingerprint(rival)


def test_quick_end_to_end_writes_every_output_and_resumes(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench"
    result = bench.main(quick_args(out, "--classes", "0:2", "--noise_floor", *TINY_OPTIONS))
    text = capsys.readouterr().out
    records = read_records(out / "results.jsonl")
    assert result["ran"] > 0 and result["skipped"] == 0 and result["records"] == len(records)
    assert f"CPU capability {torch.backends.cpu.get_cpu_capability()}" in text and "total wall time" in text

    # every contender x class at K=5; extra K=1 on class 0 for the first two (GAN) contenders only
    by = {}
    for r in records:
        by.setdefault((r["contender"], r["class_index"], r["shots"], r["variant"]), []).append(r)
    contenders = ["tiny", "scratch", "ddpm-full", "ddpm-lora", "ddpm-domainstudio"]
    for c in (0, 1):
        assert (bench.REAL, c, 5, "default") in by
        for name in contenders:
            assert (name, c, 5, "default") in by, name
    assert {key[0] for key in by if key[2] == 1} == {bench.REAL, "tiny", "scratch"}
    assert {key[1] for key in by if key[2] == 1} == {0}
    # GAN curves: the snapshots of one adaptation run, the default budget marked
    tiny = by[("tiny", 0, 5, "default")]
    assert [r["snapshot"]["steps"] for r in tiny] == [0, 2, 4]
    assert len({r["unit_key"] for r in tiny}) == 1
    assert [r["default_budget"] for r in tiny] == [False, True, False]
    assert all(r["adapt_options"]["r1_interval"] == 2 for r in tiny)
    assert "r1_interval" not in by[("scratch", 0, 5, "default")][0]["adapt_options"]
    assert tiny[1]["sample_seconds_per_1000"] > 0
    # the rival: one fine-tuning run, snapshots at 1x and 3x the GAN's adapt() time, the DDIM sweep at 3x
    rival = by[("ddpm-full", 0, 5, "default")]
    assert sorted((r["snapshot"]["multiple"], r["snapshot"]["ddim_steps"]) for r in rival) == [
        (1.0, 2),
        (3.0, 2),
        (3.0, 4),
    ]
    assert all(r["sample_seconds_per_1000"] > 0 for r in rival)
    calibration = json.loads((out / "calibration.json").read_text(encoding="utf-8"))
    assert calibration["gan"]["adapt_seconds"] > 0 and set(calibration["rival_seconds_per_step"]) == {
        "full",
        "lora",
        "domainstudio",
    }
    # noise floor: the first contender re-run with another thread count
    assert ("tiny", 0, 5, "threads=2") in by or ("tiny", 0, 5, "threads=1") in by
    for r in records:
        assert r["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert r["seeds"]["shots"] == 0  # the same shots for every contender (the first K of each class's pool)
        assert set(r["metrics"]) >= {"precision", "recall", "kid", "relative_diversity", "copy_rate"}
        assert "recognisability" in r["metrics"]
        assert r["pixel_metrics"]["kid"] == pytest.approx(r["pixel_metrics"]["kid"])  # present and finite

    md = (out / "results.md").read_text(encoding="utf-8")
    for needle in (
        "### digits, K = 5: 2 classes",
        "| tiny |",
        "| scratch |",
        "| ddpm-full (1x time) |",
        "| ddpm-domainstudio (3x time) |",
        "| real images (ceiling) |",
        "Paired differences to tiny",
        "### Noise floor",
        "| tiny − scratch, all classes (n) | change ÷ that gap |",
        "### digits, K = 1: 1 classes",
        "Adaptation curves (recognisability / recall by adapt() steps",
        "| tiny | 2 | ",
        "DDIM step counts of the diffusion recipes",
        "| ddpm-full | 3x | 2 | 2 | ",
        "| ddpm-full | 3x | 4 | 2 | ",
    ):
        assert needle in md, needle
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    for name in (
        "digits_metrics_vs_steps.png",
        "digits_metrics_vs_adapt_seconds.png",
        "digits_metrics_vs_sampling_cost.png",
        "digits_precision_recall.png",
        "digits_samples_class0.png",
    ):
        assert name in figures, name
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    curve = summary["digits/K=5"]["curves"]["tiny"]
    assert curve["classes"] == [0, 1] and sorted(int(s) for s in curve["steps"]) == [0, 2, 4]
    at_2 = [r["metrics"]["recognisability"] for r in tiny_default_records(records) if r["snapshot"]["steps"] == 2]
    assert len(at_2) == 2 and curve["steps"]["2"]["recognisability"] == pytest.approx(sum(at_2) / 2)
    gain = summary["digits/K=5"]["table"]["tiny"]["gain"]
    assert set(gain) >= {"accuracy_shots", "accuracy_augmented", "gain"} and gain["num_classes"] == 2

    # the same command again (resumed): every unit is skipped, nothing is appended
    before = (out / "results.jsonl").read_text(encoding="utf-8")
    again = bench.main(quick_args(out, "--classes", "0:2", "--noise_floor", "--resume", *TINY_OPTIONS))
    assert again["ran"] == 0 and again["skipped"] == result["ran"]
    assert (out / "results.jsonl").read_text(encoding="utf-8") == before

    # an interrupted run: the last unit's records lost, half a line written; resuming redoes exactly that unit and
    # (same process, same seeds) gets bitwise the same numbers, which resuming promises
    last_key = records[-1]["unit_key"]
    kept = [r for r in records if r["unit_key"] != last_key]
    (out / "results.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in kept) + '{"format": 1, "contend', encoding="utf-8"
    )
    third = bench.main(quick_args(out, "--classes", "0:2", "--noise_floor", "--resume", *TINY_OPTIONS))
    assert third["ran"] == 1
    redone = read_records(out / "results.jsonl")
    assert [without_timings(r) for r in redone] == [without_timings(r) for r in records]

    # tables and figures again from the records alone, with the options the folder was made with
    (out / "results.md").unlink()
    summary_only = bench.main(bench.parse_args(["--summarize_only", "--output_dir", str(out)]))
    assert summary_only["ran"] == 0 and "### digits, K = 5: 2 classes" in (out / "results.md").read_text("utf-8")
    # ... also from committed records without the run's image files: every curve, no sample grid
    records_only = tmp_path / "records-only"
    records_only.mkdir()
    for name in ("results.jsonl", "run_config.json"):
        shutil.copy(out / name, records_only / name)
    bench.main(bench.parse_args(["--summarize_only", "--output_dir", str(records_only)]))
    rebuilt = sorted(p.name for p in (records_only / "figures").glob("*.png"))
    assert rebuilt == [name for name in figures if "_samples_" not in name]

    # records of one folder come from one evaluation classifier: resuming with another one is refused
    config = json.loads((out / "run_config.json").read_text(encoding="utf-8"))
    assert set(config["classifiers"]) == {"digits"} and {r["classifier"] for r in redone} == {
        config["classifiers"]["digits"]
    }
    config["classifiers"]["digits"] = "another-classifier"
    (out / "run_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match="'digits' evaluation classifier differs"):
        bench.main(quick_args(out, "--classes", "0:2", "--noise_floor", "--resume", *TINY_OPTIONS))

    # an output folder that holds a run is not overwritten by accident
    with pytest.raises(ValueError, match="--resume"):
        bench.main(quick_args(out, "--classes", "0:2"))


def test_paired_differences_count_better_classes_in_each_metric_direction():
    def rec(c, recog, kid, rd):
        return {"metrics": {"recognisability": recog, "kid": kid, "relative_diversity": rd}, "class_index": c}

    rows = {
        "a": {0: rec(0, 0.5, 0.2, 0.9), 1: rec(1, 0.7, 0.4, 1.0)},
        "b": {0: rec(0, 0.4, 0.3, 1.05), 1: rec(1, 0.8, 0.1, 0.7)},
    }
    paired = bench.paired_differences(rows, ["a", "b"], [0, 1])
    cells = paired["rows"]["b"]
    # b - a: recognisability (-0.1, +0.1) -> mean 0, SE 0.1, better in 1 of 2
    assert cells["recognisability"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert cells["recognisability"]["se"] == pytest.approx(0.1)
    assert cells["recognisability"]["better"] == 1
    # kid lower is better: (+0.1, -0.3) -> better in 1 of 2, mean -0.1, SE 0.2
    assert cells["kid"]["mean"] == pytest.approx(-0.1) and cells["kid"]["se"] == pytest.approx(0.2)
    assert cells["kid"]["better"] == 1
    # relative diversity: closer to 1 is better (1.05 vs 0.9: better; 0.7 vs 1.0: worse)
    assert cells["relative_diversity"]["better"] == 1
    assert cells["kid"]["text"] == "-100.0 ± 200.0 (1/2)"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--contender", "ddpm-foo"], "unknown contender 'ddpm-foo'; allowed: NAME=PATH"),
        (["--contender", "bundled"], "ddpm-full, ddpm-lora, ddpm-domainstudio"),
        (["--quick", "--metrics", "recognisability,fid"], "unknown metric(s) ['fid']; allowed: recognisability"),
        (["--quick", "--domains", "kanji,omniglot"], "unknown domain(s) ['omniglot']; allowed: kanji"),
        (["--quick", "--kid_subset_size", "100"], "too few samples for the KID subset size"),
        (["--quick", "--num_steps", "3"], "must be one of --snapshot_steps"),
        (["--quick", "--rival_time_multiples", "1,-3"], "--rival_time_multiples"),
        (["--quick", "--classes", "5:2"], "--classes"),
        (["--quick", "--max_minutes", "0"], "--max_minutes"),
        (["--quick", "--rival_device", "gpu0"], "`--rival_device` must be a torch device such as 'cpu' or 'cuda'"),
        (["--quick", "--rival_device", "meta"], "`--rival_device` must be a 'cpu' or 'cuda' device, got 'meta'"),
        (["--quick", "--rival_device", "cuda", "--rival_budget", "wallclock"], "needs `--rival_budget calibrated`"),
        ([], "give at least one --contender"),
        (["--quick", "--adapt_options", "tiny"], "must look like 'NAME:key=value"),
        (["--quick", "--adapt_options", "tiny:lr=1e-3"], "bad option 'lr=1e-3'; give key=value with a key among"),
        (["--quick", "--adapt_options", "tiny:batch_size=four"], "batch_size='four' is not a valid int"),
        (["--quick", "--adapt_options", "tiny:r1_gamma=1,r1_gamma=2"], "'r1_gamma' given twice"),
        (["--quick", "--adapt_options", "tiny:layer_lr_scales=maybe"], "layer_lr_scales='maybe' must be true"),
        (
            ["--contender", "a=some/path", "--contender", "ddpm-full", "--adapt_options", "ddpm-full:batch_size=2"],
            "no GAN contender has that name; GAN contenders: ['a']",
        ),
    ],
)
def test_bad_arguments_are_refused_with_what_is_allowed(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where torch sees no CUDA device")
def test_rival_device_cuda_without_a_gpu_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--quick", "--rival_device", "cuda"])
    assert "asks for CUDA, but torch sees no CUDA device here" in capsys.readouterr().err


def test_a_rival_off_the_cpu_needs_a_cpu_calibration_of_every_recipe_that_runs():
    lora = SimpleNamespace(kind="diffusion", recipe="lora", name="ddpm-lora")
    full = SimpleNamespace(kind="diffusion", recipe="full", name="ddpm-full")
    gan = SimpleNamespace(kind="gan", recipe=None, name="bundled")
    contenders, running = [gan, full, lora], {"bundled", "ddpm-full", "ddpm-lora"}
    with pytest.raises(ValueError, match=r"needs a calibration made on the CPU .* there is none"):
        bench.check_cpu_calibration(None, contenders, running, "cuda")
    cal = {"gan": {"adapt_seconds": 1.0}, "rival_seconds_per_step": {"full": 0.1}}
    with pytest.raises(ValueError, match=r"the calibration has none for lora"):
        bench.check_cpu_calibration(cal, contenders, running, "cuda")
    bench.check_cpu_calibration(cal, contenders, {"bundled", "ddpm-full"}, "cuda")  # LoRA does not run: fine


def test_ddim_sweep_pairs_each_step_count_with_the_default_on_shared_classes():
    def rec(c, ddim, recog, seconds, multiple=3.0, device="cpu"):
        return {
            "domain": "d",
            "shots": 5,
            "variant": "default",
            "kind": "diffusion",
            "contender": "ddpm-full",
            "class_index": c,
            "snapshot": {"multiple": multiple, "ddim_steps": ddim},
            "metrics": {"recognisability": recog, "kid": 0.001, "relative_diversity": 1.0, "copy_rate": 0.0},
            "sample_seconds_per_1000": seconds,
            "environment": {"rival_device": device},
        }

    records = [
        rec(0, 25, 0.5, 300.0),
        rec(1, 25, 0.7, 320.0),
        rec(0, 10, 0.6, 100.0),
        rec(1, 10, 0.6, 140.0),
        rec(2, 10, 0.9, 90.0),  # no DDIM 25 row for class 2: left out
        rec(0, 25, 0.1, 50.0, multiple=1.0),  # one step count only at 1x: no sweep
        rec(1, 50, 0.2, 1.0, device="cuda"),  # class 1 only: the 50-step row is left out of the shared classes
    ]
    lines, sweeps = bench.ddim_sweeps(records, "d", 5, 25)
    assert list(sweeps) == ["ddpm-full (3x time)"]
    sweep = sweeps["ddpm-full (3x time)"]
    assert sweep["classes"] == [1]  # the classes every step count has (50 steps ran on class 1 only)
    records = records[:-1]
    lines, sweeps = bench.ddim_sweeps(records, "d", 5, 25)
    sweep = sweeps["ddpm-full (3x time)"]
    assert sweep["classes"] == [0, 1] and list(sweep["steps"]) == [25, 10]
    assert sweep["steps"][25]["paired"] is None and sweep["steps"][25]["median_seconds_per_1000"] == 310.0
    ten = sweep["steps"][10]
    assert ten["median_seconds_per_1000"] == 120.0
    assert ten["paired"]["recognisability"]["mean"] == pytest.approx(0.0)  # +0.1 and -0.1
    assert ten["paired"]["recognisability"]["better"] == 1
    text = "\n".join(lines)
    assert "paired difference to DDIM 25" in text
    assert "| ddpm-full | 3x | 10 | 2 | 0.600 (+0.000 ± 0.100 (1/2))" in text
    # a GPU run's seconds are not CPU seconds
    gpu = [r | {"environment": {"rival_device": "cuda"}} for r in records]
    assert bench.ddim_sweeps(gpu, "d", 5, 25)[1]["ddpm-full (3x time)"]["steps"][10]["median_seconds_per_1000"] is None
    assert bench.ddim_sweeps(records, "d", 5, 50) == ([], {})  # no row at the default step count


def test_seconds_columns_compare_cpu_runs_only():
    assert bench.on_cpu({"environment": {"cpu_capability": "AVX2"}})
    assert bench.on_cpu({"environment": {"rival_device": "cpu"}})
    assert not bench.on_cpu({"environment": {"rival_device": "cuda"}})
    gpu = {"environment": {"rival_device": "cuda"}, "adapt_seconds": 1.0}
    cpu = {"environment": {"rival_device": "cpu"}, "adapt_seconds": 30.0}
    base = {"domain": "d", "shots": 5, "variant": "default", "kind": "diffusion", "default_ddim": True}
    records = [
        {**base, **r, "contender": "x", "snapshot": {"multiple": 1.0}, "metrics": {"recall": v}}
        for r, v in ((gpu, 0.2), (cpu, 0.4))
    ]
    curves = bench._curves(records, "d", 5, "recall", bench.cpu_adapt_seconds)
    assert curves == {"x": [(30.0, 0.4)]}


def test_images_that_do_not_fit_the_model_need_an_explicit_resize(tmp_path):
    # the quick contenders make 16x16 images; a 32x32 domain needs --resize
    with pytest.raises(ValueError, match=r"makes 1x16x16 images but the domain images are 1x32x32; pass --resize"):
        bench.main(quick_args(tmp_path / "bench", "--resolution", "32"))


def test_fit_images_resizes_and_converts_channels():
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    out = bench.fit_images(images, 4, 1)
    assert out.shape == (2, 1, 4, 4) and out.min() >= -1 and out.max() <= 1
    assert bench.fit_images(torch.zeros(1, 1, 4, 4), 8, 3).shape == (1, 3, 8, 8)


def test_adapt_options_parse_booleans():
    parsed = bench.parse_adapt_options(["a:layer_lr_scales=false", "b:layer_lr_scales=True,learning_rate=1e-3"])
    assert parsed == {"a": {"layer_lr_scales": False}, "b": {"layer_lr_scales": True, "learning_rate": 1e-3}}
    assert bench.parse_adapt_options(["t:tone_match=true"]) == {"t": {"tone_match": True}}
    with pytest.raises(ValueError, match=r"tone_match='maybe' must be true or false"):
        bench.parse_adapt_options(["t:tone_match=maybe"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--resolution", "0"], "`--resolution` must be an integer >= 8 (leave it out for the models' own), got 0."),
        (["--resolution", "-1"], "`--resolution` must be an integer >= 8"),
        (["--resolution", "7"], "got 7."),
        (["--channels", "0"], "`--channels` must be one of (1, 3) (leave it out for the models' own), got 0."),
        (["--channels", "2"], "`--channels` must be one of (1, 3)"),
        (
            ["--noise_floor", "--noise_floor_threads", "0"],
            "`--noise_floor_threads` must be a positive integer, got 0.",
        ),
        (
            ["--noise_floor", "--noise_floor_threads", "-1"],
            "`--noise_floor_threads` must be a positive integer, got -1",
        ),
        (["--noise_floor_threads", "2"], "`--noise_floor_threads` 2 is the thread count of the --noise_floor rerun"),
        (
            ["--noise_floor", "--num_threads", "1", "--noise_floor_threads", "1"],
            "`--noise_floor_threads` 1 is the main run's thread count",
        ),
        (["--calibration", "{tmp}/nope.json"], "`--calibration` '{tmp}/nope.json': no such file."),
        (["--k", "50", "--num_samples", "8"], "`--k` 50 must be smaller than `--num_samples` 8"),
        (
            ["--adapt_options", "b:batch_size=0"],
            "`--adapt_options` for 'b': `batch_size` must be a positive integer, got 0",
        ),
        (["--adapt_options", "tiny:learning_rate=-1"], "`learning_rate` must be a positive finite number, got -1.0"),
        (["--adapt_options", "tiny:augment=flip"], "`augment` contains unknown augmentation 'flip'"),
        (
            ["--adapt_options", "tiny:lr_warmup_steps=4"],
            "`lr_warmup_steps` must be an integer from 0 to num_steps - 1",
        ),
        (
            ["--adapt_options", "tiny:lora_rank=4,tone_match=true"],
            "`tone_match=True` stores a tone curve in the generator's weights",
        ),
        (["--adapt_options", "tiny:copy_stop=1.5"], "`copy_stop` must be None (off) or a share in (0, 1)"),
        (["--learning_rate", "nan"], "`--learning_rate` must be a positive finite number, got nan."),
        (["--learning_rate", "-1"], "`--learning_rate` must be a positive finite number, got -1.0."),
        (["--seed", "-1"], "`--seed` must be a non-negative integer, got -1."),
        (
            ["--contenders", "bogus"],
            "`--contenders` 'bogus': ['bogus'] are not among the contenders ['tiny', 'scratch'",
        ),
    ],
)
def test_bad_values_exit_before_anything_is_written_naming_option_and_value(argv, message, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        quick_args(out, *argv)
    assert exit_.value.code == 2 and message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err
    assert not out.exists()


def test_checks_of_the_loaded_models_and_data_name_the_option():
    pipeline = SimpleNamespace(discriminator=SimpleNamespace(num_blocks=3), copy_encoder=None)
    gan = bench.Contender(name="g", kind="gan", spec="g=x", path="x", pipeline=pipeline)
    bench.check_adapt_options_fit(gan)  # no options: fine
    gan.adapt_options = {"freeze_discriminator_blocks": 4}
    with pytest.raises(
        ValueError, match="for 'g': `freeze_discriminator_blocks` must be an integer between 0 and 3 .* got 4"
    ):
        bench.check_adapt_options_fit(gan)
    gan.adapt_options = {"copy_stop": 0.1}
    with pytest.raises(ValueError, match="for 'g': copy_stop=0.1 judges near-copies .* x has none"):
        bench.check_adapt_options_fit(gan)

    domain = SimpleNamespace(classes=["a", "b"], real=lambda c: torch.zeros(4 if c else 9, 1, 8, 8))
    ctx = bench.DomainContext("d", domain, None, None, [0, 1])
    args = SimpleNamespace(k=3, metric_names=["precision"])
    bench.check_real_counts([ctx], args)  # 9 and 4 real images: more than k = 3
    args.k = 4
    with pytest.raises(ValueError, match="`--k` 4 must be smaller than .* domain 'd' class 'b' has 4"):
        bench.check_real_counts([ctx], args)
    args.metric_names = ["kid"]  # k is only the precision / recall neighbourhood
    bench.check_real_counts([ctx], args)


def test_a_run_whose_contender_fails_to_load_leaves_no_run_behind(tmp_path):
    out = tmp_path / "bench"
    common = ("--classes", "0:1", "--extra_shots", "", "--no_figures", "--max_minutes", "1e-6")
    with pytest.raises((OSError, ValueError)):
        bench.main(quick_args(out, *common, "--contender", f"typo={tmp_path / 'no-such-checkpoint'}"))
    assert not (out / "run_config.json").exists()
    bench.main(quick_args(out, *common))  # the same folder, without --resume: a new run
    assert (out / "run_config.json").is_file()


def test_a_calibration_without_a_diffusion_contender_is_refused(tmp_path):
    out = tmp_path / "bench"
    calibration = tmp_path / "calibration.json"
    calibration.write_text("{}", encoding="utf-8")
    args = quick_args(out, "--classes", "0:1", "--extra_shots", "", "--no_figures", "--contenders", "tiny")
    args.calibration = str(calibration)
    with pytest.raises(ValueError, match="`--calibration` .* none of the contenders that run \\(tiny\\) is one"):
        bench.main(args)
    assert not (out / "run_config.json").exists()
