#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""The few-shot benchmark: every recipe a user could pick, on the same classes, shots and seeds, judged in the feature
space of each evaluation domain's classifier.

Contenders (`--contender`, repeat):

- `NAME=PATH`: a Meta-GAN checkpoint folder or Hub repo id (the bundled meta-checkpoint, the pooled-pretrain
  baseline, FOMAML, the FIGR recipe, ...), adapted with `MetaGANPipeline.adapt()`;
- `scratch`: fresh weights with the first checkpoint contender's configuration (seeded), adapted the same way;
- the same checkpoint twice under two names with `--adapt_options NAME:key=value,...` for one of them compares
  adaptation recipes (learning rate, diversity term, ...) on the same shots and seeds;
- `ddpm-full`, `ddpm-lora`, `ddpm-domainstudio`: the diffusion rival (`--rival`, a `DDPMPipeline` folder) fine-tuned
  on the shots with that recipe of `metagan_hub.baselines.diffusion` and sampled with DDIM.

For every contender x evaluation domain x class (`--classes a:b` of the domain's evaluation classes) and K shots
(`--shots`; `--extra_shots` on the first `--extra_classes` classes for the first two checkpoint contenders):

- one GAN adaptation run with snapshots at `--snapshot_steps` (adaptation curves come from the same run), the
  `--num_steps` snapshot being `adapt()`'s default budget (the main table);
- one diffusion fine-tuning run with snapshots at the meta-GAN's measured default `adapt()` time x
  `--rival_time_multiples` (converted once into fine-tuning steps by a calibration that is saved in the output folder
  and reused, so reruns see the same budgets), sampled with `--rival_default_ddim_steps` DDIM steps and, at
  `--rival_sweep_multiples`, with every `--rival_ddim_steps`; `--rival_device cuda` fine-tunes and samples it on a
  GPU with the same step budgets (the calibration must come from the CPU; fp32 without TF32; its seconds stay out
  of the tables and figures, which compare CPU seconds);
- `--num_samples` samples per snapshot -> evaluation-classifier features and logits ->
  `metagan_hub.metrics.evaluate_class` (recognisability, precision / recall, density / coverage, KID, FD, relative
  diversity, copy rate), pixel metrics (`metagan_hub.metrics.compute_metrics`) as a secondary space, adaptation
  seconds and sampling seconds per 1,000 images;
- the real images' own rows (contender `real`): recognisability of the real held-out images (the classifier's
  ceiling) and the other metrics of one half of them against the other half (copy rate of real images included).

Classifier gain (DAGAN protocol) is computed per contender and domain over the classes; paired differences to the
first contender (mean ± standard error over classes, "better in k of n classes") and, with `--noise_floor`, the
same first contender re-run with a rounding-only change (another thread count) to show how much the metrics move
for no reason, beside the gap between the first two contenders.

Writes into `--output_dir`: `results.jsonl` (one record per contender, domain, class, K and snapshot; appended and
flushed per unit of work, so `--resume` loses nothing and skips completed units), `units/*.safetensors` (features
and a few samples per unit, for the classifier gain and the grids), `calibration.json`, `results.md` (tables) and
`figures/*.png`.

Example:

    python scripts/benchmark_fewshot.py --quick --output_dir runs/bench-quick      # a few minutes on 2 cores
    python scripts/benchmark_fewshot.py --contender bundled=checkpoints/metagan-kanji-32 \\
        --contender pretrain=runs/baselines/pretrain-kanji-32 --contender scratch \\
        --contender ddpm-full --domains kanji,digits --classes 0:30 \\
        --output_dir runs/bench-fewshot --resume --noise_floor
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_utils import cpu_name  # noqa: E402

logger = logging.getLogger("benchmark_fewshot")

DIFFUSION_PREFIX = "ddpm-"
REAL = "real"
RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "run_config.json"
CALIBRATION_FILE = "calibration.json"
FORMAT_VERSION = 1
# measurement options that the summary reads; --summarize_only takes them from the output folder's run_config.json
SUMMARY_OPTIONS = (
    "seed",
    "num_steps",
    "snapshot_steps",
    "rival_time_multiples",
    "rival_ddim_steps",
    "rival_default_ddim_steps",
    "rival_sweep_multiples",
)

# metric -> which way is better ("up", "down", or "one": closest to 1)
DIRECTION = {
    "recognisability": "up",
    "precision": "up",
    "recall": "up",
    "density": "up",
    "coverage": "up",
    "kid": "down",
    "fd": "down",
    "relative_diversity": "one",
    "copy_rate": "down",
    "gain": "up",
}
TABLE_METRICS = (
    "recognisability",
    "precision",
    "recall",
    "density",
    "coverage",
    "kid",
    "fd",
    "relative_diversity",
    "copy_rate",
)
PAIRED_METRICS = ("recognisability", "precision", "recall", "coverage", "kid", "relative_diversity", "copy_rate")
FIGURE_METRICS = ("recognisability", "precision", "recall", "coverage", "kid", "relative_diversity", "copy_rate")
KID_SCALE = 1000.0  # KID is printed x 1000

FULL_DEFAULTS: dict[str, Any] = {
    "domains": None,  # all evaluation domains
    "classes": "0:30",
    "shots": 5,
    "extra_shots": "1,10",
    "extra_classes": 10,
    "snapshot_steps": "0,25,50,100,200,400",
    "num_steps": 200,
    "num_samples": 200,
    "rival_time_multiples": "1,3,10",
    "rival_ddim_steps": "10,25,50",
    "rival_default_ddim_steps": 25,
    "rival_sweep_multiples": "3",
    "calibration_steps": 20,
    "speed_images": 1000,
}
QUICK_DEFAULTS: dict[str, Any] = {
    "domains": "digits",
    "classes": "0:3",
    "shots": 5,
    "extra_shots": "1",
    "extra_classes": 1,
    "snapshot_steps": "0,2,4",
    "num_steps": 2,
    "num_samples": 24,
    "rival_time_multiples": "1,3",
    "rival_ddim_steps": "2,4",
    "rival_default_ddim_steps": 2,
    "rival_sweep_multiples": "3",
    "calibration_steps": 2,
    "speed_images": 64,
}
QUICK_RESOLUTION = 16
QUICK_GAN = "tiny"  # the name of --quick's tiny GAN contender
# the bundled rival: pretrained by scripts/train_diffusion_rival.py on the bundled meta-checkpoint's training classes
DEFAULT_RIVAL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints", "ddpm-rival-kanji-32"
)


# ---------------------------------------------------------------------------------------------------------------------
# arguments


def _int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip() != ""]
    except ValueError:
        raise ValueError(f"`{name}` must be comma-separated integers, got {text!r}.") from None
    return values


def _float_list(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip() != ""]
    except ValueError:
        raise ValueError(f"`{name}` must be comma-separated numbers, got {text!r}.") from None
    return values


def parse_class_range(text: str) -> tuple[int, int | None]:
    """`"a:b"` -> (a, b) (b exclusive, may be empty = to the end); `"a"` -> (a, a + 1)."""
    text = str(text).strip()
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            start, stop = int(a or 0), (int(b) if b.strip() else None)
        else:
            start = int(text)
            stop = start + 1
    except ValueError:
        raise ValueError(f"`--classes` must look like 'a:b' (e.g. '0:30'), got {text!r}.") from None
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f"`--classes` must be 'a:b' with 0 <= a < b, got {text!r}.")
    return start, stop


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--contender",
        action="append",
        default=None,
        help="NAME=PATH of a Meta-GAN checkpoint, 'scratch', or a diffusion recipe (ddpm-full, ddpm-lora, "
        "ddpm-domainstudio). Repeat for each contender; the first is the reference of the paired differences.",
    )
    parser.add_argument(
        "--rival",
        default=None,
        help=f"The diffusion rival's DDPMPipeline folder (default {DEFAULT_RIVAL}; with --quick a tiny one).",
    )
    parser.add_argument(
        "--rival_device",
        default="cpu",
        help="Device that fine-tunes and samples the diffusion rival ('cpu', 'cuda', 'cuda:1', ...). Its budgets stay "
        "the calibrated step counts, so its quality is comparable across devices; its seconds on another device than "
        "the CPU are recorded but left out of the tables' seconds columns.",
    )
    parser.add_argument(
        "--adapt_options",
        action="append",
        default=None,
        help="NAME:key=value[,key=value...]: adapt() options of the GAN contender NAME (repeat per contender), e.g. "
        "'bundled-cdc:diversity_loss=cdc,diversity_weight=1.0'; keys: " + ", ".join(ADAPT_OPTION_TYPES) + ".",
    )
    parser.add_argument("--contenders", default=None, help="Only run these contender names (comma-separated).")
    parser.add_argument("--domains", default=None, help="Evaluation domains, comma-separated (default: all).")
    parser.add_argument("--classes", default=None, help="Shard of each domain's evaluation classes, 'a:b'.")
    parser.add_argument("--shots", type=int, default=None, help="K of the main table (default 5).")
    parser.add_argument("--extra_shots", default=None, help="Further K values, e.g. '1,10' ('' for none).")
    parser.add_argument("--extra_classes", type=int, default=None, help="Classes that get the extra K values.")
    parser.add_argument("--snapshot_steps", default=None, help="GAN adaptation snapshots, e.g. '0,25,50,100,200,400'.")
    parser.add_argument("--num_steps", type=int, default=None, help="adapt() budget of the main table (200).")
    parser.add_argument("--learning_rate", type=float, default=None, help="adapt() learning rate (its default).")
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16"], help="adapt() precision.")
    parser.add_argument("--rival_time_multiples", default=None, help="Diffusion budgets x the GAN's adapt() time.")
    parser.add_argument("--rival_ddim_steps", default=None, help="DDIM step counts of the sampling sweep.")
    parser.add_argument("--rival_default_ddim_steps", type=int, default=None, help="DDIM steps at every snapshot.")
    parser.add_argument("--rival_sweep_multiples", default=None, help="Time multiples that get the DDIM sweep.")
    parser.add_argument(
        "--rival_budget",
        default="calibrated",
        choices=["calibrated", "wallclock"],
        help="'calibrated': the time budgets become fine-tuning step counts through the saved calibration (the "
        "same command gives the same numbers); 'wallclock': snapshots at measured adaptation seconds (the rival's "
        "steps then depend on the machine's load).",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        help="Reuse this calibration.json (the GAN's adapt() seconds and the rival's seconds per step) instead of "
        "measuring; the output folder's own calibration is reused automatically.",
    )
    parser.add_argument("--calibration_steps", type=int, default=None, help="Diffusion steps timed per recipe.")
    parser.add_argument("--num_samples", type=int, default=None, help="Samples per snapshot (default 200).")
    parser.add_argument("--metrics", default=None, help="Feature metrics, comma-separated (default: all).")
    parser.add_argument(
        "--kid_subset_size", type=int, default=None, help="KID subset size (default: the smaller set)."
    )
    parser.add_argument("--kid_subsets", type=int, default=100, help="KID subsets.")
    parser.add_argument("--k", type=int, default=3, help="Neighbourhood size of precision / recall.")
    parser.add_argument("--no_pixel_metrics", action="store_true", help="Skip the secondary pixel-space metrics.")
    parser.add_argument("--resolution", type=int, default=None, help="Domain resolution (default: the models').")
    parser.add_argument("--channels", type=int, default=None, help="Domain channels (default: the models').")
    parser.add_argument(
        "--resize",
        action="store_true",
        help="Resize shots and samples between a contender's image size / channels and the domain's (otherwise a "
        "mismatch is an error).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Base seed of shots, adaptation, samples and metrics.")
    parser.add_argument("--num_threads", type=int, default=None, help="torch threads (default: torch's default).")
    parser.add_argument(
        "--noise_floor",
        action="store_true",
        help="Re-run the first contender with a rounding-only change (another thread count) on the same classes.",
    )
    parser.add_argument(
        "--noise_floor_threads",
        type=int,
        default=None,
        help="Thread count of the --noise_floor rerun, other than the main run's (default 1, or 2 where that is 1).",
    )
    parser.add_argument("--speed_images", type=int, default=None, help="Images generated to time a GAN's sampling.")
    parser.add_argument("--grid_samples", type=int, default=8, help="Samples per contender in the sample grids.")
    parser.add_argument("--cache_dir", default=None, help="Cache of data renders and evaluation classifiers.")
    parser.add_argument("--output_dir", default="runs/bench-fewshot")
    parser.add_argument("--resume", action="store_true", help="Continue in an output folder, skipping done units.")
    parser.add_argument(
        "--max_minutes",
        type=float,
        default=None,
        help="Start no new unit of work after this many minutes; the tables cover what is done (continue later with "
        "--resume).",
    )
    parser.add_argument("--summarize_only", action="store_true", help="Only rebuild tables and figures.")
    parser.add_argument("--no_figures", action="store_true", help="Skip the PNG figures.")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Smoke run on tiny models built in the output folder (a tiny GAN, scratch and the three diffusion "
        "recipes on a tiny UNet), digits at 16x16 with a quickly trained classifier: a few minutes on 2 cores.",
    )
    args = parser.parse_args(argv)
    try:
        finalize_args(args)
    except ValueError as err:
        parser.error(str(err))
    return args


def rival_device_type(args: argparse.Namespace) -> str:
    """The kind of device (`"cpu"` or `"cuda"`) the diffusion rival runs on (`--rival_device`, checked by
    `finalize_args`)."""
    return torch.device(args.rival_device).type


def finalize_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill defaults (full or `--quick`) and check every option; raises `ValueError` naming the option."""
    defaults = QUICK_DEFAULTS if args.quick else FULL_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick and args.resolution is None:
        args.resolution = QUICK_RESOLUTION
    if not args.contender and not args.quick and not args.summarize_only:
        raise ValueError("give at least one --contender (NAME=PATH, 'scratch', or a ddpm-* recipe), or --quick.")
    args.snapshot_steps = sorted(set(_int_list(args.snapshot_steps, "--snapshot_steps")))
    if not args.snapshot_steps or args.snapshot_steps[0] < 0:
        raise ValueError(f"`--snapshot_steps` must be non-negative integers, got {args.snapshot_steps}.")
    if args.num_steps not in args.snapshot_steps:
        raise ValueError(
            f"`--num_steps` {args.num_steps} (the main table's budget) must be one of --snapshot_steps "
            f"{args.snapshot_steps}."
        )
    if max(args.snapshot_steps) < 1:
        raise ValueError("`--snapshot_steps` needs at least one positive step count.")
    for name in ("shots", "num_samples", "extra_classes", "rival_default_ddim_steps", "calibration_steps"):
        value = getattr(args, name)
        if value < (0 if name == "extra_classes" else 1):
            raise ValueError(f"`--{name}` must be positive, got {value}.")
    args.extra_shots = [k for k in _int_list(args.extra_shots, "--extra_shots") if k != args.shots]
    if any(k < 1 for k in args.extra_shots):
        raise ValueError(f"`--extra_shots` must be positive integers, got {args.extra_shots}.")
    args.rival_time_multiples = sorted(set(_float_list(args.rival_time_multiples, "--rival_time_multiples")))
    if not args.rival_time_multiples or any(not (m > 0 and math.isfinite(m)) for m in args.rival_time_multiples):
        raise ValueError(f"`--rival_time_multiples` must be positive numbers, got {args.rival_time_multiples}.")
    args.rival_ddim_steps = sorted(set(_int_list(args.rival_ddim_steps, "--rival_ddim_steps")))
    if any(s < 1 for s in args.rival_ddim_steps):
        raise ValueError(f"`--rival_ddim_steps` must be positive integers, got {args.rival_ddim_steps}.")
    args.rival_sweep_multiples = sorted(set(_float_list(args.rival_sweep_multiples, "--rival_sweep_multiples")))
    missing = [m for m in args.rival_sweep_multiples if m not in args.rival_time_multiples]
    if missing:
        raise ValueError(
            f"`--rival_sweep_multiples` {missing} must be among --rival_time_multiples {args.rival_time_multiples}."
        )
    args.class_range = parse_class_range(args.classes)
    parsed = [parse_contender(spec) for spec in args.contender or []]
    args.adapt_option_map = parse_adapt_options(args.adapt_options)
    if not args.quick:  # --quick adds its own contenders later; load_contenders checks the names then
        check_adapt_option_names(args.adapt_option_map, parsed)
    if args.seed < 0:
        raise ValueError(f"`--seed` must be a non-negative integer, got {args.seed}.")
    if args.learning_rate is not None and not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise ValueError(f"`--learning_rate` must be a positive finite number, got {args.learning_rate}.")
    # the values too, as adapt() checks them: a bad one is refused now, not at its contender's first unit
    check_adapt_option_values(args.adapt_option_map, args, max(args.snapshot_steps))
    if args.contenders is not None and not args.summarize_only:
        names = [c.name for c in parsed] if parsed or not args.quick else quick_contender_names()
        keep = [n.strip() for n in args.contenders.split(",") if n.strip()]
        unknown = [n for n in keep if n not in names]
        if unknown or not keep:
            raise ValueError(f"`--contenders` {args.contenders!r}: {unknown} are not among the contenders {names}.")
    from metagan_hub.data.base import SUPPORTED_CHANNELS
    from metagan_hub.metrics.domains import MIN_RESOLUTION

    if args.resolution is not None and args.resolution < MIN_RESOLUTION:
        raise ValueError(
            f"`--resolution` must be an integer >= {MIN_RESOLUTION} (leave it out for the models' own), got "
            f"{args.resolution}."
        )
    if args.channels is not None and args.channels not in SUPPORTED_CHANNELS:
        raise ValueError(
            f"`--channels` must be one of {SUPPORTED_CHANNELS} (leave it out for the models' own), got "
            f"{args.channels}."
        )
    if args.calibration is not None and not os.path.isfile(args.calibration):
        raise ValueError(f"`--calibration` {args.calibration!r}: no such file.")
    if args.domains is not None:
        from metagan_hub.metrics.domains import EVALUATION_DOMAINS

        names = [d.strip() for d in args.domains.split(",") if d.strip()]
        unknown = [d for d in names if d not in EVALUATION_DOMAINS]
        if unknown or not names:
            raise ValueError(f"`--domains`: unknown domain(s) {unknown}; allowed: {', '.join(EVALUATION_DOMAINS)}.")
    from metagan_hub.metrics import FEWSHOT_METRICS

    if args.metrics is None:
        args.metric_names = list(FEWSHOT_METRICS)
    else:
        args.metric_names = [m.strip() for m in args.metrics.split(",") if m.strip()]
        unknown = [m for m in args.metric_names if m not in FEWSHOT_METRICS]
        if unknown or not args.metric_names:
            raise ValueError(f"`--metrics`: unknown metric(s) {unknown}; allowed: {', '.join(FEWSHOT_METRICS)}.")
    if args.kid_subset_size is not None:
        if args.kid_subset_size < 2:
            raise ValueError(f"`--kid_subset_size` must be at least 2, got {args.kid_subset_size}.")
        if args.kid_subset_size > args.num_samples:
            raise ValueError(
                f"too few samples for the KID subset size: `--kid_subset_size` {args.kid_subset_size} > "
                f"`--num_samples` {args.num_samples}; lower the subset size or draw more samples."
            )
    if args.kid_subsets < 1 or args.k < 1 or args.grid_samples < 1 or args.speed_images < 1:
        raise ValueError("`--kid_subsets`, `--k`, `--grid_samples` and `--speed_images` must be positive.")
    if args.k >= args.num_samples and {"precision", "recall"} & set(args.metric_names):
        raise ValueError(
            f"`--k` {args.k} must be smaller than `--num_samples` {args.num_samples}: precision / recall take each "
            "sample's k-th nearest neighbour among the others."
        )
    if args.num_threads is not None and args.num_threads < 1:
        raise ValueError(f"`--num_threads` must be positive, got {args.num_threads}.")
    if args.noise_floor_threads is not None:
        if not args.noise_floor:
            raise ValueError(
                f"`--noise_floor_threads` {args.noise_floor_threads} is the thread count of the --noise_floor rerun: "
                "give --noise_floor too."
            )
        if args.noise_floor_threads < 1:
            raise ValueError(f"`--noise_floor_threads` must be a positive integer, got {args.noise_floor_threads}.")
        threads = args.num_threads or torch.get_num_threads()
        if args.noise_floor_threads == threads:
            raise ValueError(
                f"`--noise_floor_threads` {args.noise_floor_threads} is the main run's thread count: the noise-floor "
                "rerun needs another one (leave it out for 1, or 2 where the main run has 1)."
            )
    try:
        rival_device = torch.device(args.rival_device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"`--rival_device` must be a torch device such as 'cpu' or 'cuda', got {args.rival_device!r}."
        ) from err
    if rival_device.type not in ("cpu", "cuda"):
        raise ValueError(f"`--rival_device` must be a 'cpu' or 'cuda' device, got {args.rival_device!r}.")
    if rival_device.type != "cpu" and args.rival_budget == "wallclock":
        raise ValueError(
            f"`--rival_device` {args.rival_device!r} needs `--rival_budget calibrated`: wall-clock budgets compare "
            "seconds, which only mean the same on the CPU that timed the GAN."
        )
    if rival_device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`--rival_device` {args.rival_device!r} asks for CUDA, but torch sees no CUDA device here.")
    args.rival_device = str(rival_device)  # normalized once: "cpu", "cuda" or "cuda:1"
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ValueError(f"`--max_minutes` must be positive, got {args.max_minutes}.")
    if args.resume and args.summarize_only:
        raise ValueError("`--resume` and `--summarize_only` exclude each other.")
    return args


# ---------------------------------------------------------------------------------------------------------------------
# contenders


@dataclass
class Contender:
    """One recipe in the benchmark: a GAN checkpoint (`kind="gan"`) or a diffusion recipe (`kind="diffusion"`)."""

    name: str
    kind: str  # "gan" | "diffusion"
    spec: str  # what the user typed (recorded and part of the resume key)
    path: str | None = None
    recipe: str | None = None
    pipeline: Any = None
    adapt_options: dict[str, Any] = field(default_factory=dict)
    sample_size: int = 0
    channels: int = 0


def copy_stop_distance(value: str) -> float | str:
    """`--adapt_options` value of `copy_stop_distance`: a number, or a name adapt() measures it by ("augment")."""
    return value if value.isalpha() else float(value)


# adapt() options that `--adapt_options` may set per GAN contender ("none" means None; augment lists use "+";
# booleans are true / false)
ADAPT_OPTION_TYPES: dict[str, Any] = {
    "learning_rate": float,
    "batch_size": int,
    "loss": str,
    "r1_gamma": float,
    "r1_interval": int,
    "augment": list,
    "freeze_discriminator_blocks": int,
    "ema_decay": float,
    "lora_rank": int,
    "diversity_loss": str,
    "diversity_weight": float,
    "diversity_batch_size": int,
    "diversity_interval": int,
    "cdc_anchor_interval": int,
    "layer_lr_scales": bool,
    "mode_seeking_weight": float,
    "copy_repulsion_weight": float,
    "copy_repulsion_margin": float,
    "shot_augment": float,
    "tone_match": bool,
    "lr_scheduler": str,
    "lr_warmup_steps": int,
    "copy_stop": float,
    "copy_stop_interval": int,
    "copy_stop_distance": copy_stop_distance,
    "copy_stop_min_steps": int,
    "shot_reconstruction_weight": float,
}
BOOL_WORDS = {"true": True, "false": False}


def parse_adapt_options(values: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """Parse `--adapt_options NAME:key=value,...` values into `{NAME: {key: value}}`; raises `ValueError` naming the
    bad part and what is allowed (the values themselves are checked by `adapt()`)."""
    allowed = ", ".join(ADAPT_OPTION_TYPES)
    result: dict[str, dict[str, Any]] = {}
    for text in values or []:
        name, sep, body = text.partition(":")
        name = name.strip()
        if not sep or not name or not body.strip():
            raise ValueError(f"`--adapt_options` must look like 'NAME:key=value[,key=value]', got {text!r}.")
        if name in result:
            raise ValueError(f"`--adapt_options` given twice for contender {name!r}; put all its options in one.")
        options: dict[str, Any] = {}
        for item in body.split(","):
            key, sep, value = (part.strip() for part in item.partition("="))
            if key not in ADAPT_OPTION_TYPES or not sep or not value:
                raise ValueError(
                    f"`--adapt_options` for {name!r}: bad option {item.strip()!r}; give key=value with a key among "
                    f"{allowed}."
                )
            if key in options:
                raise ValueError(f"`--adapt_options` for {name!r}: {key!r} given twice.")
            kind = ADAPT_OPTION_TYPES[key]
            if value.lower() == "none":
                options[key] = None
            elif kind is list:
                options[key] = [v.strip() for v in value.split("+") if v.strip()]
            elif kind is bool:
                if value.lower() not in BOOL_WORDS:
                    raise ValueError(f"`--adapt_options` for {name!r}: {key}={value!r} must be true or false.")
                options[key] = BOOL_WORDS[value.lower()]
            else:
                try:
                    options[key] = kind(value)
                except ValueError:
                    raise ValueError(
                        f"`--adapt_options` for {name!r}: {key}={value!r} is not a valid {kind.__name__}."
                    ) from None
        result[name] = options
    return result


def check_adapt_option_names(option_map: dict[str, dict[str, Any]], contenders: Sequence[Contender]) -> None:
    """Every `--adapt_options` name must be a GAN contender's."""
    gan_names = sorted(c.name for c in contenders if c.kind == "gan")
    unknown = sorted(set(option_map) - set(gan_names))
    if unknown:
        raise ValueError(
            f"`--adapt_options` for {unknown}: no GAN contender has that name; GAN contenders: {gan_names}."
        )


def check_adapt_option_values(option_map: dict[str, dict[str, Any]], args: argparse.Namespace, num_steps: int) -> None:
    """Check every contender's `--adapt_options` values (with the benchmark's `--learning_rate`) as `adapt()` with
    `num_steps` steps checks them, so that a bad value is refused before any work instead of at that contender's first
    unit; raises a `ValueError` naming the contender, the option and its value."""
    from metagan_hub.training.adaptation import check_adapt_options

    base = {} if args.learning_rate is None else {"learning_rate": args.learning_rate}
    for name, options in option_map.items():
        try:
            check_adapt_options(**{**base, **options, "num_steps": num_steps})
        except (ValueError, TypeError) as err:
            raise ValueError(f"`--adapt_options` for {name!r}: {err}") from None


def check_adapt_options_fit(contender: Contender) -> None:
    """The `--adapt_options` values that depend on the loaded model: FreezeD's block count and `copy_stop`'s copy
    encoder (checked once the contenders are loaded, before any unit)."""
    from metagan_hub.training.adaptation import check_adapt_options

    options, pipeline = contender.adapt_options, contender.pipeline
    if "freeze_discriminator_blocks" in options:
        try:
            check_adapt_options(
                discriminator_blocks=pipeline.discriminator.num_blocks,
                freeze_discriminator_blocks=options["freeze_discriminator_blocks"],
            )
        except ValueError as err:
            raise ValueError(f"`--adapt_options` for {contender.name!r}: {err}") from None
    if options.get("copy_stop") is not None and pipeline.copy_encoder is None:
        raise ValueError(
            f"`--adapt_options` for {contender.name!r}: copy_stop={options['copy_stop']!r} judges near-copies in the "
            f"pipeline's copy encoder, but {contender.path} has none (scripts/train_copy_encoder.py adds one)."
        )


def allowed_contenders() -> str:
    from metagan_hub.baselines.diffusion import DIFFUSION_RECIPES

    recipes = ", ".join(DIFFUSION_PREFIX + r for r in DIFFUSION_RECIPES)
    return f"NAME=PATH (a Meta-GAN checkpoint folder or Hub repo id), 'scratch', or a diffusion recipe ({recipes})"


def parse_contender(spec: str) -> Contender:
    """Parse one `--contender` value (nothing is loaded yet); raises `ValueError` listing what is allowed."""
    from metagan_hub.baselines.diffusion import DIFFUSION_RECIPES

    spec = spec.strip()
    if spec == "scratch":
        return Contender(name="scratch", kind="gan", spec=spec)
    if spec.startswith(DIFFUSION_PREFIX) and "=" not in spec:
        recipe = spec[len(DIFFUSION_PREFIX) :]
        if recipe not in DIFFUSION_RECIPES:
            raise ValueError(f"unknown contender {spec!r}; allowed: {allowed_contenders()}.")
        return Contender(name=spec, kind="diffusion", spec=spec, recipe=recipe)
    if "=" in spec:
        name, path = spec.split("=", 1)
        name, path = name.strip(), path.strip()
        if not name or not path or name in ("scratch", REAL) or name.startswith(DIFFUSION_PREFIX):
            raise ValueError(
                f"bad contender {spec!r}: NAME must be non-empty, not 'scratch' / 'real' / 'ddpm-*', and PATH given; "
                f"allowed: {allowed_contenders()}."
            )
        return Contender(name=name, kind="gan", spec=spec, path=path)
    raise ValueError(f"unknown contender {spec!r}; allowed: {allowed_contenders()}.")


def load_contenders(specs: Sequence[str], args: argparse.Namespace) -> list[Contender]:
    """Parse and load every contender; checks names, the rival's folder and that image sizes fit."""
    from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline

    contenders = [parse_contender(s) for s in specs]
    names = [c.name for c in contenders]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"contender names must be unique, got {duplicates} more than once.")
    option_map = getattr(args, "adapt_option_map", {})
    check_adapt_option_names(option_map, contenders)
    for c in contenders:
        c.adapt_options = dict(option_map.get(c.name, {}))
    reference, rival = None, None
    for c in contenders:
        if c.kind == "gan" and c.path is not None:
            c.pipeline = MetaGANPipeline.from_pretrained(c.path)
            if c.pipeline.discriminator is None:
                raise ValueError(f"contender {c.name!r}: {c.path} has no discriminator, so it cannot be adapted.")
            reference = reference or c.pipeline
    for c in contenders:
        if c.name == "scratch":
            if reference is None:
                raise ValueError("'scratch' needs a checkpoint contender (NAME=PATH) whose configuration it copies.")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                c.pipeline = MetaGANPipeline(
                    generator=MetaGANGenerator(**reference.generator.config),
                    discriminator=MetaGANDiscriminator(**reference.discriminator.config),
                )
            c.path = f"fresh weights, seed {args.seed}, configuration of the first checkpoint contender"
        if c.kind == "gan":
            check_adapt_options_fit(c)
            c.pipeline.set_progress_bar_config(disable=True)
            cfg = c.pipeline.generator.config
            c.sample_size, c.channels = int(cfg.sample_size), int(cfg.out_channels)
        else:
            c.path = args.rival
            config_path = Path(args.rival) / "unet" / "config.json"
            if not config_path.is_file():
                raise ValueError(
                    f"contender {c.name!r} needs the diffusion rival: `--rival` {args.rival!r} is not a DDPMPipeline "
                    "folder (no unet/config.json)."
                )
            if rival is None:
                from diffusers import DDPMPipeline

                rival = DDPMPipeline.from_pretrained(args.rival)
                rival.set_progress_bar_config(disable=True)
                if rival_device_type(args) == "cuda":
                    # float32 on the GPU as on the CPU: PyTorch lets cuDNN convolutions use TF32 by default
                    torch.backends.cudnn.allow_tf32 = False
                    torch.backends.cuda.matmul.allow_tf32 = False
                rival.to(torch.device(args.rival_device))
            c.pipeline = rival
            unet_cfg = json.loads(config_path.read_text(encoding="utf-8"))
            size = unet_cfg.get("sample_size")
            c.sample_size = int(size[0] if isinstance(size, list | tuple) else size)
            c.channels = int(unet_cfg.get("in_channels", 1))
    return contenders


def check_sizes(contenders: Sequence[Contender], resolution: int, channels: int, resize: bool) -> None:
    """Every contender must make images of the domain's size and channels, unless `--resize` was given."""
    for c in contenders:
        if (c.sample_size, c.channels) != (resolution, channels) and not resize:
            raise ValueError(
                f"contender {c.name!r} makes {c.channels}x{c.sample_size}x{c.sample_size} images but the domain "
                f"images are {channels}x{resolution}x{resolution}; pass --resize to resize shots and samples, or "
                f"--resolution {c.sample_size} --channels {c.channels}."
            )


def fit_images(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Resize `[N, C, H, W]` images in [-1, 1] to `size` and convert their channels (1 <-> 3)."""
    x = images.float()
    if x.shape[1] != channels:
        if channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
            x = (x * weights).sum(1, keepdim=True)
        else:
            x = x.repeat(1, channels, 1, 1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(-1, 1)


# ---------------------------------------------------------------------------------------------------------------------
# quick mode: tiny models and a quickly trained classifier


def quick_contender_names() -> list[str]:
    """The contenders of `--quick` without a `--contender`: the tiny GAN, scratch and every diffusion recipe."""
    from metagan_hub.baselines.diffusion import DIFFUSION_RECIPES

    return [QUICK_GAN, "scratch"] + [DIFFUSION_PREFIX + r for r in DIFFUSION_RECIPES]


def build_quick_models(output_dir: Path, seed: int) -> dict[str, str]:
    """A tiny 16x16 Meta-GAN and a tiny 16x16 DDPMPipeline saved under `output_dir/quick_models` (once)."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline

    root = output_dir / "quick_models"
    gan_path, rival_path = root / "tiny-gan", root / "tiny-ddpm"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        if not (gan_path / "model_index.json").is_file():
            MetaGANPipeline(
                generator=MetaGANGenerator(latent_dim=16, sample_size=QUICK_RESOLUTION, block_out_channels=(32, 16)),
                discriminator=MetaGANDiscriminator(sample_size=QUICK_RESOLUTION, block_out_channels=(16, 32)),
            ).save_pretrained(gan_path)
        if not (rival_path / "model_index.json").is_file():
            unet = UNet2DModel(
                sample_size=QUICK_RESOLUTION,
                in_channels=1,
                out_channels=1,
                layers_per_block=1,
                block_out_channels=(16, 32),
                down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D"),
                norm_num_groups=8,
            )
            DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(rival_path)
    return {"gan": str(gan_path), "rival": str(rival_path)}


def quick_classifier(domain: Any, output_dir: Path, seed: int) -> Any:
    """A small evaluation classifier of `domain` trained in seconds (two epochs), saved in the output folder."""
    from metagan_hub.metrics.classifiers import (
        ClassifierRecipe,
        load_evaluation_classifier,
        save_classifier,
        train_evaluation_classifier,
    )

    folder = output_dir / "quick_models" / f"classifier-{domain.name}-{domain.resolution}px"
    if (folder / "config.json").is_file():
        return load_evaluation_classifier(domain, path=folder)
    recipe = ClassifierRecipe(num_epochs=2, batch_size=64, block_out_channels=(16, 32))
    clf = train_evaluation_classifier(domain, recipe=recipe, seed=seed)
    save_classifier(clf, folder)
    return clf


# ---------------------------------------------------------------------------------------------------------------------
# results store: JSON lines + unit artifacts, resumable


def rival_fingerprint(folder: str | os.PathLike) -> str:
    """What identifies the diffusion rival in the resume keys: a hash of its UNet's and scheduler's files (names and
    bytes), so that a copy of the folder elsewhere (another checkout, another machine) resumes the same units and a
    retrained rival does not."""
    digest = hashlib.sha256()
    root = Path(folder)
    for sub in ("unet", "scheduler"):
        for path in sorted(p for p in (root / sub).rglob("*") if p.is_file()):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return "sha256:" + digest.hexdigest()[:24]


def unit_key(fields: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


class ResultStore:
    """Appends the records of a unit of work at once (flushed and fsynced); a unit counts as done when all of its
    records are in the file. Half-written units of an interrupted run are dropped when the store is opened."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self.path = output_dir / RESULTS_FILE
        self.units_dir = output_dir / "units"
        self.units_dir.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        records, bad = [], 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
        counts: dict[str, int] = defaultdict(int)
        for r in records:
            counts[r["unit_key"]] += 1
        complete = [r for r in records if counts[r["unit_key"]] == r["unit_records"]]
        if bad or len(complete) != len(records) or (text and not text.endswith("\n")):
            logger.warning(
                "%s: dropping %d unreadable lines and %d records of unfinished units (an interrupted run)",
                self.path,
                bad,
                len(records) - len(complete),
            )
            self._rewrite(complete)
        self.records = complete

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the results file by `records` atomically (temporary file + `os.replace`)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        os.replace(tmp, self.path)

    def done(self, key: str) -> bool:
        return any(r["unit_key"] == key for r in self.records)

    def rekey(self, keys: dict[str, str]) -> None:
        """Give the records and artifacts of the units `keys` maps their new keys (the file is rewritten atomically,
        then the artifacts are renamed)."""
        for r in self.records:
            r["unit_key"] = keys.get(r["unit_key"], r["unit_key"])
        self._rewrite(self.records)
        for old, new in keys.items():
            if self.artifact_path(old).is_file():
                os.replace(self.artifact_path(old), self.artifact_path(new))

    def artifact_path(self, key: str) -> Path:
        return self.units_dir / f"{key}.safetensors"

    def add_unit(self, key: str, records: list[dict[str, Any]], tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        if tensors:
            tmp = self.units_dir / f".{key}.tmp"
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
            os.replace(tmp, self.artifact_path(key))
        lines = []
        for r in records:
            r["unit_key"], r["unit_records"] = key, len(records)
            lines.append(json.dumps(r, ensure_ascii=False) + "\n")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())
        self.records.extend(records)

    def artifact(self, key: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        path = self.artifact_path(key)
        return load_file(str(path)) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------------------------------
# measurement


def environment(num_threads: int) -> dict[str, Any]:
    import diffusers
    import numpy

    import metagan_hub

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": cpu_name(),
        "num_threads": num_threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "numpy": numpy.__version__,
        "metagan_hub": metagan_hub.__version__,
    }


@dataclass
class DomainContext:
    """An evaluation domain with its classifier and the per-class data every contender shares."""

    name: str
    domain: Any
    classifier: Any
    ceiling: float | None
    class_indices: list[int]
    _cache: dict[tuple, Any] = field(default_factory=dict)

    def shots(self, c: int, k: int, seed: int) -> torch.Tensor:
        key = ("shots", c, k, seed)
        if key not in self._cache:
            self._cache[key] = self.domain.shots(c, k, seed).float()
        return self._cache[key]

    def real(self, c: int) -> torch.Tensor:
        key = ("real", c)
        if key not in self._cache:
            self._cache[key] = self.domain.real(c).float()
        return self._cache[key]

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features) of images at the domain's size."""
        return self.classifier.embed(images)


def shot_seed(args: argparse.Namespace, c: int) -> int:
    # EvaluationDomain.shots draws per class (seed 0: the first k images of the class's shot pool)
    return args.seed


def adapt_seed(args: argparse.Namespace, c: int, k: int) -> int:
    return args.seed + 1000 * k + c


def sample_seed(args: argparse.Namespace) -> int:
    return args.seed


def feature_metrics(
    ctx: DomainContext,
    c: int,
    fake: torch.Tensor,
    real_feats: torch.Tensor,
    shot_feats: torch.Tensor,
    args: argparse.Namespace,
) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics of samples `fake` `[N, C, H, W]` (domain size) of class `c`; returns (metrics, fake features)."""
    from metagan_hub.metrics import evaluate_class

    logits, feats = ctx.embed(fake)
    metrics = evaluate_class(
        feats,
        real_feats,
        shot_feats,
        fake_logits=logits,
        target=ctx.domain.classifier_label(c),
        metrics=args.metric_names,
        kid_subset_size=args.kid_subset_size,
        kid_subsets=args.kid_subsets,
        seed=args.seed,
        k=args.k,
    )
    return metrics, feats


def pixel_metrics(fake: torch.Tensor, real: torch.Tensor, args: argparse.Namespace) -> dict[str, float] | None:
    if args.no_pixel_metrics:
        return None
    from metagan_hub.metrics import compute_metrics, heldout_distance

    result = compute_metrics(fake, real)["metrics"]
    return {"heldout_distance": heldout_distance(fake, real), **result}


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def base_record(
    contender: Contender | None, ctx: DomainContext, c: int, k: int, variant: str, run: dict[str, Any]
) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "contender": contender.name if contender else REAL,
        "kind": contender.kind if contender else REAL,
        "spec": contender.spec if contender else REAL,
        "path": contender.path if contender else None,
        "domain": ctx.name,
        "class_index": c,
        "class": ctx.domain.classes[c],
        "shots": k,
        "variant": variant,
        **run,
    }


def check_real_counts(ctxs: Sequence[DomainContext], args: argparse.Namespace) -> None:
    """Every class must have more real held-out images than `--k` (precision / recall take each real image's k-th
    nearest neighbour among the others): checked for all classes before any unit runs."""
    if not {"precision", "recall"} & set(args.metric_names):
        return
    for ctx in ctxs:
        for c in ctx.class_indices:
            num_real = ctx.real(c).shape[0]
            if num_real <= args.k:
                raise ValueError(
                    f"`--k` {args.k} must be smaller than the real held-out images of every class, but domain "
                    f"{ctx.name!r} class {ctx.domain.classes[c]!r} has {num_real}."
                )


def check_class_size(ctx: DomainContext, c: int, args: argparse.Namespace) -> None:
    num_real = ctx.real(c).shape[0]
    needed = max(args.k, 5) + 1
    if num_real < needed:
        raise ValueError(
            f"domain {ctx.name!r} class {ctx.domain.classes[c]!r} has only {num_real} real held-out images; the "
            f"metrics need at least {needed}."
        )
    if args.kid_subset_size is not None and args.kid_subset_size > num_real:
        raise ValueError(
            f"too few samples for the KID subset size: domain {ctx.name!r} class {ctx.domain.classes[c]!r} has "
            f"{num_real} real held-out images but `--kid_subset_size` is {args.kid_subset_size}."
        )


def run_real_unit(ctx: DomainContext, c: int, k: int, args: argparse.Namespace, run: dict) -> tuple[list, dict]:
    """The real images' own rows: recognisability of all real held-out images (the classifier's ceiling on this
    class) and every other metric of one half of them (as if they were samples) against the other half."""
    from metagan_hub.metrics import evaluate_class, recognisability

    real, shots = ctx.real(c), ctx.shots(c, k, shot_seed(args, c))
    real_logits, real_feats = ctx.embed(real)
    _, shot_feats = ctx.embed(shots)
    order = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(args.seed + c))
    half_a, half_b = order[: real.shape[0] // 2], order[real.shape[0] // 2 :]
    kid_size = args.kid_subset_size
    if kid_size is not None and kid_size > min(len(half_a), len(half_b)):
        kid_size = None
    density_k = min(5, len(half_b) - 1)  # small real sets (font faces): fewer neighbours
    metrics = evaluate_class(
        real_feats[half_a],
        real_feats[half_b],
        shot_feats,
        fake_logits=real_logits[half_a],
        target=ctx.domain.classifier_label(c),
        metrics=args.metric_names,
        kid_subset_size=kid_size,
        kid_subsets=args.kid_subsets,
        seed=args.seed,
        k=min(args.k, len(half_a) - 1, len(half_b) - 1),
        density_k=density_k,
    )
    if "recognisability" in metrics:
        metrics["recognisability"] = recognisability(real_logits, ctx.domain.classifier_label(c))
    record = base_record(None, ctx, c, k, "default", run)
    record.update(
        {
            "snapshot": {"label": "real"},
            "default_budget": True,
            "num_samples": int(real.shape[0]),
            "num_real": int(real.shape[0]),
            "real_split": f"metrics other than recognisability: {len(half_a)} vs {len(half_b)} real images"
            + (f", density / coverage with k={density_k}" if density_k != 5 else ""),
            "seeds": {"shots": shot_seed(args, c), "split": args.seed + c, "metrics": args.seed},
            "metrics": metrics,
            "pixel_metrics": pixel_metrics(real[half_a], real[half_b], args),
        }
    )
    tensors = {
        "shot_features": shot_feats,
        "real_features": real_feats,
        "shots": to_uint8(shots),
    }
    return [record], tensors


def gan_adapt_options(contender: Contender, args: argparse.Namespace) -> dict[str, Any]:
    """The `adapt()` options a GAN contender runs with: the benchmark's precision and learning rate, then the
    contender's own `--adapt_options` (which win)."""
    options: dict[str, Any] = {"mixed_precision": args.mixed_precision}
    if args.learning_rate is not None:
        options["learning_rate"] = args.learning_rate
    options.update(contender.adapt_options)
    return options


def run_gan_unit(
    contender: Contender,
    ctx: DomainContext,
    c: int,
    k: int,
    variant: str,
    args: argparse.Namespace,
    run: dict,
) -> tuple[list, dict]:
    """Adapt a GAN contender once to the K shots of class `c`, evaluating the snapshots of that one run."""
    from metagan_hub import MetaGANPipeline

    res, ch = ctx.domain.resolution, ctx.domain.channels
    shots = ctx.shots(c, k, shot_seed(args, c))
    real = ctx.real(c)
    _, real_feats = ctx.embed(real)
    _, shot_feats = ctx.embed(shots)
    model_shots = shots
    if (contender.sample_size, contender.channels) != (res, ch):
        model_shots = fit_images(shots, contender.sample_size, contender.channels)

    snapshots: dict[int, tuple[torch.nn.Module, float]] = {}
    paused = 0.0
    start = time.perf_counter()

    def keep(steps_done: int, gen: torch.nn.Module) -> None:
        nonlocal paused
        t = time.perf_counter()
        snapshots[steps_done] = (gen, t - start - paused)
        paused += time.perf_counter() - t

    options = gan_adapt_options(contender, args)
    torch.manual_seed(adapt_seed(args, c, k))
    adapted = contender.pipeline.adapt(
        model_shots,
        num_steps=max(args.snapshot_steps),
        generator=torch.Generator().manual_seed(adapt_seed(args, c, k)),
        snapshot_steps=args.snapshot_steps,
        snapshot_callback=keep,
        **options,
    )
    adapt_record = adapted.card_info.get("adaptation", {})
    del adapted

    latent_dim = contender.pipeline.generator.config.latent_dim
    latents = torch.randn(args.num_samples, latent_dim, generator=torch.Generator().manual_seed(sample_seed(args)))
    records, tensors = [], {}
    for steps in args.snapshot_steps:
        gen, seconds = snapshots[steps]
        pipe = MetaGANPipeline(generator=gen, discriminator=None)
        pipe.set_progress_bar_config(disable=True)
        fake = pipe(batch_size=args.num_samples, latents=latents, output_type="pt").images * 2 - 1  # [N, C, H, W]
        if (contender.sample_size, contender.channels) != (res, ch):
            fake = fit_images(fake, res, ch)
        metrics, feats = feature_metrics(ctx, c, fake, real_feats, shot_feats, args)
        default = steps == args.num_steps
        record = base_record(contender, ctx, c, k, variant, run)
        record.update(
            {
                "snapshot": {"label": f"{steps} steps", "steps": steps, "seconds": round(seconds, 3)},
                "default_budget": default,
                "num_samples": args.num_samples,
                "num_real": int(real.shape[0]),
                "seeds": {
                    "shots": shot_seed(args, c),
                    "adapt": adapt_seed(args, c, k),
                    "samples": sample_seed(args),
                    "metrics": args.seed,
                },
                "adapt_options": {**options, "num_steps": max(args.snapshot_steps)},
                "adapt_seconds": round(seconds, 3),
                "metrics": metrics,
                "pixel_metrics": pixel_metrics(fake, real, args),
            }
        )
        if default:
            record["adapt_wall_time_s_reported"] = adapt_record.get("wall_time_s")
            # sampling speed: a warm-up call, then `speed_images` images timed
            speed_latents = torch.randn(args.speed_images, latent_dim, generator=torch.Generator().manual_seed(1))
            pipe(batch_size=min(64, args.speed_images), latents=speed_latents[:64], output_type="pt")
            t0 = time.perf_counter()
            pipe(batch_size=args.speed_images, latents=speed_latents, output_type="pt")
            record["sample_seconds_per_1000"] = round((time.perf_counter() - t0) * 1000 / args.speed_images, 4)
            tensors["fake_features"] = feats
        tensors[f"grid_{steps}"] = to_uint8(fake[: args.grid_samples])
        records.append(record)
    return records, tensors


def calibrate(contenders: Sequence[Contender], ctxs: Sequence[DomainContext], args: argparse.Namespace) -> dict:
    """Measure the first GAN contender's default adapt() time and each diffusion recipe's seconds per fine-tuning
    step, back to back on the same shots, and turn the time multiples into fine-tuning steps."""
    gan = next((c for c in contenders if c.kind == "gan"), None)
    ctx = ctxs[0]
    c0 = ctx.class_indices[0]
    shots = ctx.shots(c0, args.shots, shot_seed(args, c0))
    result: dict[str, Any] = {"domain": ctx.name, "class": ctx.domain.classes[c0], "shots": args.shots}
    if gan is None:
        raise ValueError(
            "the diffusion contenders' budgets are multiples of a Meta-GAN's adapt() time: add a checkpoint "
            "contender (NAME=PATH), or pass --calibration with a calibration.json from an earlier run."
        )
    gan_shots = fit_images(shots, gan.sample_size, gan.channels)
    gan.pipeline.adapt(gan_shots, num_steps=2, generator=torch.Generator().manual_seed(0))  # warm-up
    options = {"mixed_precision": args.mixed_precision}
    if args.learning_rate is not None:
        options["learning_rate"] = args.learning_rate
    t0 = time.perf_counter()
    adapted = gan.pipeline.adapt(
        gan_shots, num_steps=args.num_steps, generator=torch.Generator().manual_seed(args.seed), **options
    )
    result["gan"] = {
        "contender": gan.name,
        "num_steps": args.num_steps,
        "adapt_seconds": round(time.perf_counter() - t0, 3),
        "loop_seconds": adapted.card_info.get("adaptation", {}).get("wall_time_s"),
    }
    result["rival_seconds_per_step"] = {}
    time_missing_recipes(result, contenders, ctxs, args, later=False)
    result["environment"] = environment(torch.get_num_threads())
    result["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return result


def time_missing_recipes(
    calibration: dict,
    contenders: Sequence[Contender],
    ctxs: Sequence[DomainContext],
    args: argparse.Namespace,
    later: bool = True,
) -> list[str]:
    """Time each diffusion recipe that `calibration` has no seconds per fine-tuning step for (on the calibration's
    shots) and add it, so that recipes added to a resumed run get budgets while the recipes already run keep theirs
    (`later`: also record when, under `recipes_timed_later`). Returns the recipes timed."""
    from metagan_hub.baselines.diffusion import adapt_diffusion

    per_step = calibration.setdefault("rival_seconds_per_step", {})
    ctx = ctxs[0]
    c0 = ctx.class_indices[0]
    shots = ctx.shots(c0, args.shots, shot_seed(args, c0))
    timed = []
    for c in contenders:
        if c.kind != "diffusion" or c.recipe in per_step:
            continue
        rival_shots = fit_images(shots, c.sample_size, c.channels)
        adapt_diffusion(c.pipeline, rival_shots, recipe=c.recipe, num_steps=2, generator=torch.Generator())  # warm-up
        out = adapt_diffusion(
            c.pipeline,
            rival_shots,
            recipe=c.recipe,
            num_steps=args.calibration_steps,
            generator=torch.Generator().manual_seed(args.seed),
        )
        per_step[c.recipe] = round(out.record["seconds"] / args.calibration_steps, 5)
        if later:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            calibration.setdefault("recipes_timed_later", {})[c.recipe] = stamp
        timed.append(c.recipe)
    return timed


def check_cpu_calibration(
    calibration: dict | None, contenders: Sequence[Contender], run_names: set[str], rival_device: str
) -> None:
    """A rival on another device than the CPU needs a calibration (every recipe that runs timed): its budgets are
    step counts timed on the CPU, which a GPU's seconds per step would turn into different ones."""
    recipes = sorted({c.recipe for c in contenders if c.kind == "diffusion" and c.name in run_names})
    timed = calibration.get("rival_seconds_per_step", {}) if calibration is not None else {}
    missing = [r for r in recipes if r not in timed]
    if missing:
        have = "the calibration has none for " + ", ".join(missing) if calibration is not None else "there is none"
        raise ValueError(
            f"`--rival_device` {rival_device!r} needs a calibration made on the CPU with a timing for every recipe "
            f"that runs; {have}. Run "
            "these recipes once with --rival_device cpu (or pass --calibration with such a calibration.json)."
        )


def rival_steps(calibration: dict, recipe: str, multiples: Sequence[float]) -> dict[float, int]:
    """Fine-tuning steps of `recipe` that take `multiple` x the GAN's default adapt() time (at least 1)."""
    per_step = calibration["rival_seconds_per_step"].get(recipe)
    if per_step is None:
        raise ValueError(f"the calibration has no timing for recipe {recipe!r}; delete calibration.json to remeasure.")
    gan_seconds = calibration["gan"]["adapt_seconds"]
    return {m: max(1, round(m * gan_seconds / per_step)) for m in multiples}


def run_diffusion_unit(
    contender: Contender,
    ctx: DomainContext,
    c: int,
    k: int,
    args: argparse.Namespace,
    run: dict,
    budget_steps: dict[float, int],
) -> tuple[list, dict]:
    """Fine-tune the rival once with a recipe on the K shots of class `c`, evaluating its snapshots at the time
    budgets (DDIM sampling, timed)."""
    from metagan_hub.baselines.diffusion import adapt_diffusion, sample_diffusion

    res, ch = ctx.domain.resolution, ctx.domain.channels
    shots = ctx.shots(c, k, shot_seed(args, c))
    real = ctx.real(c)
    _, real_feats = ctx.embed(real)
    _, shot_feats = ctx.embed(shots)
    model_shots = shots
    if (contender.sample_size, contender.channels) != (res, ch):
        model_shots = fit_images(shots, contender.sample_size, contender.channels)

    snapshots: dict[float, tuple[Any, dict]] = {}  # time multiple -> (eval copy of the UNet, snapshot info)
    gan_seconds = run["calibration"]["gan_adapt_seconds"]
    if args.rival_budget == "wallclock":
        by_seconds = {round(m * gan_seconds, 6): m for m in args.rival_time_multiples}
        budget = {"max_seconds": max(by_seconds), "snapshot_seconds": sorted(by_seconds)}
    else:
        step_list = sorted(set(budget_steps.values()))
        budget = {"num_steps": max(step_list), "snapshot_steps": step_list}

    def keep(info: dict[str, Any], unet: Any) -> None:
        if args.rival_budget == "wallclock":
            snapshots[by_seconds[round(info["requested_seconds"], 6)]] = (unet, info)
        else:
            for m, steps in budget_steps.items():
                if steps == info["requested_step"]:
                    snapshots[m] = (unet, info)

    torch.manual_seed(adapt_seed(args, c, k))
    result = adapt_diffusion(
        contender.pipeline,
        model_shots,
        recipe=contender.recipe,
        generator=torch.Generator().manual_seed(adapt_seed(args, c, k)),
        snapshot_callback=keep,
        **budget,
    )
    del result
    records, tensors = [], {}
    for multiple in sorted(snapshots):
        model, info = snapshots[multiple]
        steps, seconds = int(info["step"]), float(info["seconds"])
        ddim_list = args.rival_ddim_steps if multiple in args.rival_sweep_multiples else []
        for ddim in sorted(set([args.rival_default_ddim_steps, *ddim_list])):
            t0 = time.perf_counter()
            fake = sample_diffusion(
                model,
                args.num_samples,
                num_inference_steps=ddim,
                generator=torch.Generator().manual_seed(sample_seed(args)),
            ).float()
            fake = fake.cpu()  # also waits for an accelerator to finish, so that the seconds are the sampling's
            sample_seconds = time.perf_counter() - t0
            if (contender.sample_size, contender.channels) != (res, ch):
                fake = fit_images(fake, res, ch)
            metrics, feats = feature_metrics(ctx, c, fake, real_feats, shot_feats, args)
            default = multiple == args.rival_time_multiples[0] and ddim == args.rival_default_ddim_steps
            record = base_record(contender, ctx, c, k, "default", run)
            record.update(
                {
                    "snapshot": {
                        "label": f"{multiple:g}x time, DDIM {ddim}",
                        "multiple": multiple,
                        "steps": steps,
                        "seconds": round(seconds, 3),
                        "ddim_steps": ddim,
                    },
                    "default_budget": default,
                    "default_ddim": ddim == args.rival_default_ddim_steps,
                    "num_samples": args.num_samples,
                    "num_real": int(real.shape[0]),
                    "seeds": {
                        "shots": shot_seed(args, c),
                        "adapt": adapt_seed(args, c, k),
                        "samples": sample_seed(args),
                        "metrics": args.seed,
                    },
                    "adapt_options": {"recipe": contender.recipe, "budget": args.rival_budget, **budget},
                    "adapt_seconds": round(seconds, 3),
                    "sample_seconds_per_1000": round(sample_seconds * 1000 / args.num_samples, 4),
                    "metrics": metrics,
                    "pixel_metrics": pixel_metrics(fake, real, args),
                }
            )
            if ddim == args.rival_default_ddim_steps:
                tensors[f"grid_{multiple:g}x"] = to_uint8(fake[: args.grid_samples])
                if default:
                    tensors["fake_features"] = feats
            records.append(record)
    return records, tensors


# ---------------------------------------------------------------------------------------------------------------------
# planning


@dataclass
class Unit:
    kind: str  # "real" | "gan" | "diffusion"
    contender: Contender | None
    ctx: DomainContext
    class_index: int
    shots: int
    variant: str = "default"
    threads: int | None = None
    key: str = ""
    # keys that earlier versions gave this unit (see ResultStore.rekey)
    legacy_keys: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        name = self.contender.name if self.contender else REAL
        extra = "" if self.variant == "default" else f" [{self.variant}]"
        return f"{name}{extra} {self.ctx.name}/{self.ctx.domain.classes[self.class_index]} K={self.shots}"


def measurement_config(args: argparse.Namespace) -> dict[str, Any]:
    """The options every record of an output folder must share (so all of its records are comparable)."""
    return {
        "format": FORMAT_VERSION,
        "seed": args.seed,
        "snapshot_steps": args.snapshot_steps,
        "num_steps": args.num_steps,
        "learning_rate": args.learning_rate,
        "mixed_precision": args.mixed_precision,
        "num_samples": args.num_samples,
        "metrics": args.metric_names,
        "kid_subset_size": args.kid_subset_size,
        "kid_subsets": args.kid_subsets,
        "k": args.k,
        "pixel_metrics": not args.no_pixel_metrics,
        "resize": args.resize,
        "rival_time_multiples": args.rival_time_multiples,
        "rival_ddim_steps": args.rival_ddim_steps,
        "rival_default_ddim_steps": args.rival_default_ddim_steps,
        "rival_sweep_multiples": args.rival_sweep_multiples,
        "rival_budget": args.rival_budget,
        "quick": args.quick,
    }


def plan_units(
    contenders: Sequence[Contender],
    ctxs: Sequence[DomainContext],
    args: argparse.Namespace,
    calibration: dict | None,
    run_names: set[str] | None = None,
    legacy_rivals: Sequence[str] = (),
) -> list[Unit]:
    """Every unit of work in a fixed order; `run_names` keeps only those contenders (the roles - extra K for the
    first two checkpoint contenders, the noise floor for the first - stay those of the full list). `legacy_rivals`:
    rival paths that earlier versions may have keyed finished units with (see [`ResultStore.rekey`])."""
    gans = [c for c in contenders if c.kind == "gan"]
    extra_contenders = {c.name for c in gans[:2]}
    run_names = {c.name for c in contenders} if run_names is None else run_names
    contenders = [c for c in contenders if c.name in run_names]
    noise_threads = None
    if args.noise_floor and gans and gans[0].name in run_names:
        current = torch.get_num_threads()
        noise_threads = args.noise_floor_threads or (1 if current != 1 else 2)
    # order: the main table (K = --shots) class by class, every domain in turn, with the noise-floor rerun of the
    # class, so that a run stopped early has whole classes on every domain; then the extra K values
    units: list[Unit] = []
    num_classes = max(len(ctx.class_indices) for ctx in ctxs)
    for i in range(num_classes):
        for ctx in ctxs:
            if i >= len(ctx.class_indices):
                continue
            c = ctx.class_indices[i]
            units.append(Unit(REAL, None, ctx, c, args.shots))
            units += [Unit(cont.kind, cont, ctx, c, args.shots) for cont in contenders]
            if noise_threads is not None:
                units.append(Unit("gan", gans[0], ctx, c, args.shots, f"threads={noise_threads}", noise_threads))
    for k in args.extra_shots:
        for i in range(num_classes):
            for ctx in ctxs:
                if i >= len(ctx.class_indices) or ctx.class_indices[i] >= args.extra_classes:
                    continue
                c = ctx.class_indices[i]
                if k > ctx.domain.shot_pool_size(c):
                    logger.warning(
                        "skipping K=%d on %s class %r: its shot pool has %d images",
                        k,
                        ctx.name,
                        ctx.domain.classes[c],
                        ctx.domain.shot_pool_size(c),
                    )
                    continue
                extra = [cont for cont in contenders if cont.name in extra_contenders]
                if extra:
                    units.append(Unit(REAL, None, ctx, c, k))
                    units += [Unit(cont.kind, cont, ctx, c, k) for cont in extra]
    fingerprint = rival_fingerprint(args.rival) if any(u.kind == "diffusion" for u in units) else None
    for u in units:
        fields: dict[str, Any] = {
            "kind": u.kind,
            "spec": u.contender.spec if u.contender else REAL,
            "domain": u.ctx.name,
            "resolution": u.ctx.domain.resolution,
            "channels": u.ctx.domain.channels,
            "class_index": u.class_index,
            "class": u.ctx.domain.classes[u.class_index],
            "shots": u.shots,
            "seed": args.seed,
            "variant": u.variant,
            "options": measurement_config(args),
        }
        if u.contender is not None and u.contender.adapt_options:
            fields["adapt_options"] = u.contender.adapt_options
        if u.kind == "diffusion":
            fields["rival"] = fingerprint
            fields["budget_steps"] = rival_steps(calibration, u.contender.recipe, args.rival_time_multiples)
            # earlier versions keyed the rival by its absolute path, so a moved folder ran everything again
            paths = dict.fromkeys([os.path.abspath(args.rival), *legacy_rivals])
            u.legacy_keys = [unit_key({**fields, "rival": path}) for path in paths]
        u.key = unit_key(fields)
    return units


def run_unit(unit: Unit, args: argparse.Namespace, calibration: dict | None) -> tuple[list, dict]:
    run = {"environment": environment(torch.get_num_threads()), "classifier": classifier_id(unit.ctx.classifier)}
    check_class_size(unit.ctx, unit.class_index, args)
    if unit.kind == REAL:
        return run_real_unit(unit.ctx, unit.class_index, unit.shots, args, run)
    if unit.kind == "gan":
        old = torch.get_num_threads()
        if unit.threads is not None:
            torch.set_num_threads(unit.threads)
            run["environment"]["num_threads"] = unit.threads
        try:
            return run_gan_unit(unit.contender, unit.ctx, unit.class_index, unit.shots, unit.variant, args, run)
        finally:
            torch.set_num_threads(old)
    budget = rival_steps(calibration, unit.contender.recipe, args.rival_time_multiples)
    run["environment"]["rival_device"] = rival_device_type(args)
    if run["environment"]["rival_device"] == "cuda":
        run["environment"]["tf32"] = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
    run["calibration"] = {"gan_adapt_seconds": calibration["gan"]["adapt_seconds"], "budget_steps": budget}
    return run_diffusion_unit(unit.contender, unit.ctx, unit.class_index, unit.shots, args, run, budget)


# ---------------------------------------------------------------------------------------------------------------------
# summary: tables


def on_cpu(record: dict) -> bool:
    """Whether the record's contender ran on the CPU (only a diffusion rival can run elsewhere, see --rival_device):
    the tables' seconds columns compare CPU seconds only."""
    return record.get("environment", {}).get("rival_device", "cpu") == "cpu"


def cpu_adapt_seconds(record: dict) -> float | None:
    """The record's adaptation seconds where they were taken on the CPU (see [`on_cpu`]), else `None`."""
    return record.get("adapt_seconds") if on_cpu(record) else None


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _se(values: Sequence[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def _fmt(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if metric == "kid":
        return f"{value * KID_SCALE:.1f}"
    if metric == "fd":
        return f"{value:.3g}"
    if metric.endswith("seconds") or metric.endswith("per_1000"):
        return f"{value:.3g}"
    return f"{value:.3f}"


def _better(metric: str, diff: float, a: float, b: float) -> bool | None:
    direction = DIRECTION.get(metric)
    if direction == "up":
        return diff > 0
    if direction == "down":
        return diff < 0
    if direction == "one":
        return abs(a - 1) < abs(b - 1)
    return None


def row_label(record: dict[str, Any]) -> str:
    if record["kind"] == "diffusion":
        return f"{record['contender']} ({record['snapshot']['multiple']:g}x time)"
    return record["contender"]


def default_rows(records: Sequence[dict], domain: str, k: int, variant: str = "default") -> dict[str, dict]:
    """label -> {class_index: record} at the default budget (diffusion: every time multiple, default DDIM)."""
    rows: dict[str, dict[int, dict]] = {}
    for r in records:
        if r["domain"] != domain or r["shots"] != k or r["variant"] != variant:
            continue
        if r["kind"] == "gan" and not r["default_budget"]:
            continue
        if r["kind"] == "diffusion" and not r.get("default_ddim"):
            continue
        rows.setdefault(row_label(r), {})[r["class_index"]] = r
    return rows


def contender_order(records: Sequence[dict]) -> list[str]:
    order: list[str] = []
    for r in records:
        if r["kind"] != REAL and r["contender"] not in order and r["variant"] == "default":
            order.append(r["contender"])
    return order


def gains(store: ResultStore, records: Sequence[dict], domain: str, k: int) -> dict[str, dict[str, float]]:
    """Classifier gain per row label over the classes that every row and the real rows have."""
    from metagan_hub.metrics import classifier_gain

    rows = default_rows(records, domain, k)
    real = rows.pop(REAL, {})
    out = {}
    for label, by_class in rows.items():
        classes = sorted(set(by_class) & set(real))
        if len(classes) < 2:
            continue
        shot_f, gen_f, real_f = [], [], []
        for c in classes:
            ra, ga = store.artifact(real[c]["unit_key"]), store.artifact(by_class[c]["unit_key"])
            if "fake_features" not in ga or "shot_features" not in ra:
                break
            if by_class[c]["kind"] == "diffusion" and not by_class[c]["default_budget"]:
                break  # the stored features belong to the default budget only
            shot_f.append(ra["shot_features"])
            gen_f.append(ga["fake_features"])
            real_f.append(ra["real_features"])
        else:
            out[label] = {**classifier_gain(shot_f, gen_f, real_f), "num_classes": len(classes)}
    return out


def summary_tables(store: ResultStore, records: Sequence[dict], args: argparse.Namespace) -> tuple[str, dict]:
    """Markdown: per domain and K, the main table, the paired differences and the noise floor; plus a JSON summary."""
    lines: list[str] = []
    summary: dict[str, Any] = {}
    if not records:
        return "(no results yet)\n", summary
    env = records[0]["environment"]
    sampled = next((r for r in records if r["kind"] != REAL), records[0])
    lines += [
        f"CPU capability {env['cpu_capability']} ({env['cpu']}), torch {env['torch']}, diffusers {env['diffusers']}, "
        f"{env['num_threads']} threads; {sampled['num_samples']} samples per snapshot and class, seed {args.seed}; "
        "features and logits of each domain's evaluation classifier.",
        "",
    ]
    order = contender_order(records)
    domains = list(dict.fromkeys(r["domain"] for r in records))
    for domain in domains:
        ks = sorted({r["shots"] for r in records if r["domain"] == domain})
        for k in ks:
            rows = default_rows(records, domain, k)
            if set(rows) <= {REAL}:
                continue
            labels = sorted(
                (lb for lb in rows if lb != REAL),
                key=lambda lb: (order.index(lb.split(" (")[0]) if lb.split(" (")[0] in order else 99, lb),
            )
            # rows must cover the same classes: contenders with fewer classes so far (a run in progress) are left
            # out of this table and named below it
            most = max(len(rows[lb]) for lb in labels)
            core = set.intersection(*(set(rows[lb]) for lb in labels if len(rows[lb]) == most))
            left_out = [lb for lb in labels if not core <= set(rows[lb])]
            labels = [lb for lb in labels if lb not in left_out]
            common = core & set(rows[REAL]) if REAL in rows else core
            common = sorted(common)
            if not common or not labels:
                continue
            metric_names = [m for m in TABLE_METRICS if m in rows[labels[0]][common[0]]["metrics"]]
            gain = gains(store, records, domain, k)
            ex = rows[labels[0]][common[0]]
            budget = f"adapt() {args.num_steps} steps" if ex["kind"] == "gan" else "default budget"
            lines += [
                f"### {domain}, K = {k}: {len(common)} classes ({budget}; diffusion at multiples of the GAN's adapt() "
                f"time, DDIM {args.rival_default_ddim_steps})",
                "",
                "| contender | "
                + " | ".join("KID×1e3" if m == "kid" else m for m in metric_names)
                + " | gain | adapt s | s / 1k img |",
                "|---" * (len(metric_names) + 4) + "|",
            ]
            table: dict[str, Any] = {}
            for label in labels + ([REAL] if REAL in rows else []):
                recs = [rows[label][c] for c in common]
                means = {m: _mean([r["metrics"][m] for r in recs if m in r["metrics"]]) for m in metric_names}
                g = gain.get(label, {}).get("gain") if label != REAL else None
                timed = [r for r in recs if on_cpu(r)]
                adapt_s = _mean([r["adapt_seconds"] for r in timed if "adapt_seconds" in r]) if label != REAL else None
                speeds = [r["sample_seconds_per_1000"] for r in timed if "sample_seconds_per_1000" in r]
                speed = _mean(speeds) if speeds else None
                name = "real images (ceiling)" if label == REAL else label
                lines.append(
                    f"| {name} | "
                    + " | ".join(_fmt(m, means[m]) for m in metric_names)
                    + f" | {_fmt('gain', g)} | {_fmt('seconds', adapt_s)} | {_fmt('seconds', speed)} |"
                )
                table[label] = {"metrics": means, "gain": gain.get(label), "adapt_seconds": adapt_s, "speed": speed}
            ceiling = {r["class_index"]: r for r in rows.get(REAL, {}).values()}
            lines.append("")
            if left_out:
                lines += [
                    "Not in this table (fewer classes so far): "
                    + ", ".join(f"{lb} ({len(rows[lb])} classes)" for lb in left_out)
                    + ".",
                    "",
                ]
            if ceiling:
                acc = _mean([ceiling[c]["metrics"].get("recognisability", float("nan")) for c in common])
                lines.append(
                    f"Real images: recognisability = the classifier's accuracy on the classes' real held-out images "
                    f"({acc:.3f}); their other metrics compare one half of them with the other half."
                )
                lines.append("")
            paired = paired_differences(rows, labels, common)
            if paired:
                lines += [
                    f"Paired differences to {labels[0]} (same classes, shots and seeds; mean ± standard error over "
                    f"{len(common)} classes, better in k of n classes):",
                    "",
                    "| contender − " + labels[0] + " | " + " | ".join(m for m in paired["metrics"]) + " |",
                    "|---" * (len(paired["metrics"]) + 1) + "|",
                ]
                for label, cells in paired["rows"].items():
                    lines.append(f"| {label} | " + " | ".join(cells[m]["text"] for m in paired["metrics"]) + " |")
                lines.append("")
            # contenders run on fewer classes (e.g. adaptation-recipe variants on a shard): paired with the reference
            # on the classes they share with it
            subsets: dict[str, Any] = {}
            for label in left_out:
                shared = sorted(set(rows[label]) & set(rows[labels[0]]))
                if shared:
                    sub = paired_differences(rows, [labels[0], label], shared)
                    subsets[label] = {"classes": shared, "paired": sub}
            if subsets:
                metrics_sub = next(iter(subsets.values()))["paired"]["metrics"]
                lines += [
                    f"Contenders on fewer classes, paired with {labels[0]} on the classes they share (mean ± standard "
                    "error, better in k of n classes):",
                    "",
                    f"| contender − {labels[0]} | classes | " + " | ".join(metrics_sub) + " |",
                    "|---" * (len(metrics_sub) + 2) + "|",
                ]
                for label, sub in subsets.items():
                    cells = sub["paired"]["rows"][label]
                    lines.append(
                        f"| {label} | {len(sub['classes'])} | "
                        + " | ".join(cells[m]["text"] if m in cells else "–" for m in metrics_sub)
                        + " |"
                    )
                lines.append("")
            curve_lines, curves = adaptation_curves(records, domain, k, labels + left_out)
            lines += curve_lines
            sweep_lines, sweeps = ddim_sweeps(records, domain, k, args.rival_default_ddim_steps)
            lines += sweep_lines
            summary[f"{domain}/K={k}"] = {
                "classes": common,
                "table": table,
                "paired": paired,
                "subsets": subsets,
                "curves": curves,
                "ddim_sweeps": sweeps,
            }
    noise = noise_floor(records, args)
    if noise:
        lines += noise["lines"]
        summary["noise_floor"] = {k: v for k, v in noise.items() if k != "lines"}
    return "\n".join(lines) + "\n", summary


SWEEP_METRICS = ("recognisability", "kid", "relative_diversity", "copy_rate")


def ddim_sweeps(records: Sequence[dict], domain: str, k: int, default_ddim: int) -> tuple[list[str], dict[str, Any]]:
    """
    Markdown table per diffusion recipe and swept time multiple: each DDIM step count's class means, its paired
    difference to `default_ddim` steps on the same classes (the snapshot every other table uses) and its median
    seconds per 1,000 images (CPU runs only). The sampling-speed comparison is made at the step count where the
    rival's quality is best; this table is where that count is read off.
    """
    by: dict[tuple[str, float], dict[int, dict[int, dict]]] = {}
    for r in records:
        if r["domain"] != domain or r["shots"] != k or r["variant"] != "default" or r["kind"] != "diffusion":
            continue
        snap = r["snapshot"]
        if "ddim_steps" in snap:
            by.setdefault((r["contender"], snap["multiple"]), {}).setdefault(snap["ddim_steps"], {})[
                r["class_index"]
            ] = r
    lines: list[str] = []
    sweeps: dict[str, Any] = {}
    for (name, multiple), per_steps in by.items():
        if len(per_steps) < 2 or default_ddim not in per_steps:
            continue
        classes = sorted(set.intersection(*(set(v) for v in per_steps.values())))
        if not classes:
            continue
        steps = [default_ddim] + sorted(s for s in per_steps if s != default_ddim)
        rows = {f"DDIM {s}": per_steps[s] for s in steps}
        paired = paired_differences(rows, list(rows), classes)
        if not lines:
            lines += [
                f"DDIM step counts of the diffusion recipes (class means; paired difference to DDIM {default_ddim}, "
                "mean ± standard error, better in k of n classes; median seconds per 1,000 images on the CPU):",
                "",
                "| recipe | time | DDIM steps | classes | "
                + " | ".join("KID×1e3" if m == "kid" else m for m in SWEEP_METRICS)
                + " | s / 1k img |",
                "|---" * (len(SWEEP_METRICS) + 5) + "|",
            ]
        table = {}
        for s, label in zip(steps, rows):
            recs = [rows[label][c] for c in classes]
            cells = []
            for m in SWEEP_METRICS:
                mean = _mean([r["metrics"][m] for r in recs if m in r["metrics"]])
                cell = _fmt(m, mean)
                if s != default_ddim and m in paired["rows"][label]:
                    cell += f" ({paired['rows'][label][m]['text']})"
                cells.append(cell)
            seconds = [r["sample_seconds_per_1000"] for r in recs if on_cpu(r) and "sample_seconds_per_1000" in r]
            median = statistics.median(seconds) if seconds else None
            table[s] = {"paired": paired["rows"].get(label), "median_seconds_per_1000": median}
            lines.append(
                f"| {name} | {multiple:g}x | {s} | {len(classes)} | "
                + " | ".join(cells)
                + f" | {_fmt('seconds', median)} |"
            )
        sweeps[f"{name} ({multiple:g}x time)"] = {"classes": classes, "steps": table}
    if lines:
        lines.append("")
    return lines, sweeps


CURVE_METRICS = ("recognisability", "recall")


def adaptation_curves(
    records: Sequence[dict], domain: str, k: int, labels: Sequence[str]
) -> tuple[list[str], dict[str, Any]]:
    """Markdown table of the GAN contenders' mean recognisability / recall at every snapshot, each over the classes
    that contender has at every snapshot (the class count is in the table), and the same numbers as JSON."""
    by: dict[str, dict[int, dict[int, dict]]] = {}
    for r in records:
        if r["domain"] != domain or r["shots"] != k or r["variant"] != "default" or r["kind"] != "gan":
            continue
        if r["contender"] not in labels:
            continue
        by.setdefault(r["contender"], {}).setdefault(r["snapshot"]["steps"], {})[r["class_index"]] = r
    if not by:
        return [], {}
    steps = sorted({s for snaps in by.values() for s in snaps})
    lines = [
        f"Adaptation curves ({' / '.join(CURVE_METRICS)} by adapt() steps, means over each contender's classes):",
        "",
        "| contender | classes | " + " | ".join(f"{s} steps" for s in steps) + " |",
        "|---" * (len(steps) + 2) + "|",
    ]
    curves: dict[str, Any] = {}
    for label in labels:
        snaps = by.get(label)
        if not snaps:
            continue
        classes = set.intersection(*(set(v) for v in snaps.values()))
        cells, curve = [], {}
        for s in steps:
            if s not in snaps or not classes:
                cells.append("–")
                continue
            means = [_mean([snaps[s][c]["metrics"].get(m, float("nan")) for c in classes]) for m in CURVE_METRICS]
            curve[s] = dict(zip(CURVE_METRICS, means))
            cells.append(" / ".join(f"{v:.2f}" for v in means))
        curves[label] = {"classes": sorted(classes), "steps": curve}
        lines.append(f"| {label} | {len(classes)} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines, curves


def paired_differences(rows: dict[str, dict], labels: Sequence[str], classes: Sequence[int]) -> dict:
    if len(labels) < 2:
        return {}
    ref = rows[labels[0]]
    metric_names = [m for m in PAIRED_METRICS if m in ref[classes[0]]["metrics"]]
    out: dict[str, Any] = {"reference": labels[0], "metrics": metric_names, "rows": {}}
    for label in labels[1:]:
        cells = {}
        for m in metric_names:
            a = [rows[label][c]["metrics"][m] for c in classes]
            b = [ref[c]["metrics"][m] for c in classes]
            diffs = [x - y for x, y in zip(a, b)]
            better = [_better(m, d, x, y) for d, x, y in zip(diffs, a, b)]
            n_better = sum(1 for v in better if v)
            mean, se = _mean(diffs), _se(diffs)
            scale = KID_SCALE if m == "kid" else 1.0
            text = f"{mean * scale:+.3f} ± {se * scale:.3f} ({n_better}/{len(diffs)})"
            if m == "kid":
                text = f"{mean * scale:+.1f} ± {se * scale:.1f} ({n_better}/{len(diffs)})"
            cells[m] = {"mean": mean, "se": se, "better": n_better, "n": len(diffs), "text": text}
        out["rows"][label] = cells
    return out


def noise_floor(records: Sequence[dict], args: argparse.Namespace) -> dict:
    """How much the first contender moves under a rounding-only change, beside the first two contenders' gap."""
    variants = sorted({r["variant"] for r in records if r["variant"] != "default"})
    if not variants:
        return {}
    order = [c for c in contender_order(records) if not c.startswith(DIFFUSION_PREFIX)]
    gap_name = f"{order[0]} − {order[1]}" if len(order) > 1 else "gap"
    lines = [
        "### Noise floor",
        "",
        f"The first contender re-run with only a rounding change (another thread count; K={args.shots}, "
        f"{args.num_steps} steps): how far each metric moved per class, beside the {gap_name} gap on the same "
        "classes and on all the classes both were run on (the gap the main table reads; a class mean over n "
        "classes moves about √n times less than one class).",
        "",
        f"| domain | re-run | classes | metric | mean abs. change | mean change ± SE | {gap_name} | change ÷ gap | "
        f"{gap_name}, all classes (n) | change ÷ that gap |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out: dict[str, Any] = {"variants": {}}
    for variant in variants:
        for domain in dict.fromkeys(r["domain"] for r in records):
            base = default_rows(records, domain, args.shots)
            changed = default_rows(records, domain, args.shots, variant)
            for label, by_class in changed.items():
                classes = sorted(set(by_class) & set(base.get(label, {})))
                if not classes:
                    continue
                threads = base[label][classes[0]]["environment"]["num_threads"]
                row = {}
                for m in ("recognisability", "recall", "precision", "coverage", "kid"):
                    if m not in by_class[classes[0]]["metrics"]:
                        continue
                    moved = [by_class[c]["metrics"][m] - base[label][c]["metrics"][m] for c in classes]
                    gap = all_gap = None
                    num_all = 0
                    if len(order) > 1 and order[1] in base and order[0] in base:
                        a, b = base[order[0]], base[order[1]]
                        common = sorted(set(a) & set(b))
                        both = [c for c in common if c in set(classes)]
                        gap = _mean([a[c]["metrics"][m] - b[c]["metrics"][m] for c in both]) if both else None
                        if common:
                            all_gap = _mean([a[c]["metrics"][m] - b[c]["metrics"][m] for c in common])
                            num_all = len(common)
                    mean_abs = _mean([abs(v) for v in moved])
                    ratio = mean_abs / abs(gap) if gap else None
                    all_ratio = mean_abs / abs(all_gap) if all_gap else None
                    row[m] = {
                        "mean_abs_change": mean_abs,
                        "mean_change": _mean(moved),
                        "se": _se(moved),
                        "gap": gap,
                        "ratio": ratio,
                        "gap_all_classes": all_gap,
                        "num_all_classes": num_all,
                        "ratio_all_classes": all_ratio,
                    }
                    scale = KID_SCALE if m == "kid" else 1.0
                    lines.append(
                        f"| {domain} | {label}, {variant} vs {threads} | {len(classes)} | {m} | "
                        f"{mean_abs * scale:.3f} | {_mean(moved) * scale:+.3f} ± {_se(moved) * scale:.3f} | "
                        f"{'–' if gap is None else f'{gap * scale:+.3f}'} | "
                        f"{'–' if ratio is None else f'{ratio:.2f}'} | "
                        f"{'–' if all_gap is None else f'{all_gap * scale:+.3f} ({num_all})'} | "
                        f"{'–' if all_ratio is None else f'{all_ratio:.2f}'} |"
                    )
                out["variants"][f"{domain}/{variant}"] = {"contender": label, "classes": len(classes), "metrics": row}
    lines.append("")
    out["lines"] = lines
    return out


# ---------------------------------------------------------------------------------------------------------------------
# summary: figures


def _curves(records: Sequence[dict], domain: str, k: int, metric: str, x_of: Callable[[dict], float | None]):
    """label -> sorted [(x, mean metric over the classes every point has)]."""
    points: dict[str, dict[Any, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["domain"] != domain or r["shots"] != k or r["variant"] != "default" or r["kind"] == REAL:
            continue
        if metric not in r["metrics"]:
            continue
        if r["kind"] == "diffusion" and not r.get("default_ddim"):
            continue
        x = x_of(r)
        if x is None:
            continue
        points[r["contender"]][r["snapshot"].get("steps") if r["kind"] == "gan" else r["snapshot"]["multiple"]].append(
            (x, r["metrics"][metric])
        )
    curves = {}
    for label, by_point in points.items():
        curve = []
        for _, values in by_point.items():
            curve.append((_mean([v[0] for v in values]), _mean([v[1] for v in values])))
        curves[label] = sorted(curve)
    return curves


def make_figures(store: ResultStore, records: Sequence[dict], args: argparse.Namespace, out_dir: Path) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'metagan-hub[bench]'): no figures")
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    domains = list(dict.fromkeys(r["domain"] for r in records))
    k = args.shots
    metric_names = [m for m in FIGURE_METRICS if any(m in r["metrics"] for r in records)]
    real_means = {}
    for domain in domains:
        real_recs = [r for r in records if r["domain"] == domain and r["kind"] == REAL and r["shots"] == k]
        real_means[domain] = {
            m: _mean([r["metrics"][m] for r in real_recs if m in r["metrics"]]) for m in metric_names
        }

    def scale(m: str, v: float) -> float:
        return v * KID_SCALE if m == "kid" else v

    def grid_of_axes(n: int):
        cols = min(4, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
        for ax in axes.flat[n:]:
            ax.axis("off")
        return fig, list(axes.flat[:n])

    def finish_axis(ax, m: str, domain: str, xlabel: str, xscale: str = "log", **xscale_kwargs) -> None:
        """Real images' mean as a dashed line, the axis labels and scale."""
        if not math.isnan(real_means[domain].get(m, float("nan"))):
            ax.axhline(scale(m, real_means[domain][m]), color="gray", linestyle="--", label="real images")
        ax.set_xscale(xscale, **xscale_kwargs)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("KID ×1e3" if m == "kid" else m)

    def save_figure(fig, axes, domain: str, title: str, stem: str) -> None:
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{domain}, K={k}: {title}")
        fig.tight_layout()
        paths.append(out_dir / f"{domain}_{stem}.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)

    for domain in domains:
        # 1. metric vs adaptation steps (GAN contenders, snapshots of one run)
        fig, axes = grid_of_axes(len(metric_names))
        for ax, m in zip(axes, metric_names):
            curves = _curves(
                [r for r in records if r["kind"] == "gan"], domain, k, m, lambda r: r["snapshot"].get("steps")
            )
            for label, curve in curves.items():
                ax.plot([p[0] for p in curve], [scale(m, p[1]) for p in curve], marker="o", label=label)
            finish_axis(ax, m, domain, "adaptation steps", "symlog", linthresh=25)
        save_figure(fig, axes, domain, "metrics vs adaptation steps (mean over classes)", "metrics_vs_steps")

        # 2. metric vs adaptation seconds (every contender, the rival included)
        fig, axes = grid_of_axes(len(metric_names))
        for ax, m in zip(axes, metric_names):
            for label, curve in _curves(records, domain, k, m, cpu_adapt_seconds).items():
                ax.plot([max(p[0], 1e-2) for p in curve], [scale(m, p[1]) for p in curve], marker="o", label=label)
            finish_axis(ax, m, domain, "adaptation seconds")
        save_figure(fig, axes, domain, "metrics vs adaptation wall time", "metrics_vs_adapt_seconds")

        # 3. metric vs sampling seconds per 1,000 images (GAN: default budget; rival: the DDIM sweep)
        fig, axes = grid_of_axes(len(metric_names))
        for ax, m in zip(axes, metric_names):
            pts: dict[str, dict[Any, list]] = defaultdict(lambda: defaultdict(list))
            for r in records:
                if r["domain"] != domain or r["shots"] != k or r["variant"] != "default" or m not in r["metrics"]:
                    continue
                if "sample_seconds_per_1000" not in r or not on_cpu(r):
                    continue
                if r["kind"] == "diffusion":
                    if r["snapshot"]["multiple"] not in args.rival_sweep_multiples:
                        continue
                    key = r["snapshot"]["ddim_steps"]
                    label = f"{r['contender']} ({r['snapshot']['multiple']:g}x time)"
                else:
                    key, label = 0, r["contender"]
                pts[label][key].append((r["sample_seconds_per_1000"], r["metrics"][m]))
            for label, by_key in pts.items():
                curve = sorted((_mean([v[0] for v in vs]), _mean([v[1] for v in vs])) for vs in by_key.values())
                ax.plot([p[0] for p in curve], [scale(m, p[1]) for p in curve], marker="o", label=label)
            finish_axis(ax, m, domain, "sampling seconds per 1,000 images")
        save_figure(fig, axes, domain, "metrics vs sampling cost", "metrics_vs_sampling_cost")

        # 4. precision-recall scatter at the default budget (per class faint, mean bold)
        if "precision" in metric_names and "recall" in metric_names:
            fig, ax = plt.subplots(figsize=(5, 4.5))
            rows = default_rows(records, domain, k)
            for i, (label, by_class) in enumerate(rows.items()):
                p = [r["metrics"]["precision"] for r in by_class.values()]
                rc = [r["metrics"]["recall"] for r in by_class.values()]
                color = f"C{i}"
                name = "real images (half vs half)" if label == REAL else label
                ax.scatter(rc, p, s=10, alpha=0.3, color=color)
                ax.scatter([_mean(rc)], [_mean(p)], s=80, color=color, edgecolor="black", label=name)
            ax.set_xlabel("recall (diversity)")
            ax.set_ylabel("precision (fidelity)")
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize=7)
            ax.set_title(f"{domain}, K={k}: precision vs recall")
            fig.tight_layout()
            paths.append(out_dir / f"{domain}_precision_recall.png")
            fig.savefig(paths[-1], dpi=90)
            plt.close(fig)

        # 5. sample grids: shots on top, then every contender at the default budget, for the same class
        classes = sorted({r["class_index"] for r in records if r["domain"] == domain and r["kind"] == REAL})
        for c in classes[:2]:
            real_rec = next(
                (
                    r
                    for r in records
                    if r["domain"] == domain and r["kind"] == REAL and r["class_index"] == c and r["shots"] == k
                ),
                None,
            )
            shots = store.artifact(real_rec["unit_key"]).get("shots") if real_rec is not None else None
            if shots is None:  # e.g. a folder rebuilt from committed records, which keep no images
                logger.info("No sample grid for %s class %d: the run's image files are not in this folder.", domain, c)
                continue
            rows_img: list[tuple[str, torch.Tensor]] = [("shots", shots)]
            seen = set()
            for r in records:
                if r["domain"] != domain or r["class_index"] != c or r["shots"] != k or r["variant"] != "default":
                    continue
                if r["kind"] == REAL or r["unit_key"] in seen:
                    continue
                seen.add(r["unit_key"])
                art = store.artifact(r["unit_key"])
                if r["kind"] == "gan":
                    if f"grid_{args.num_steps}" in art:
                        rows_img.append((f"{r['contender']} ({args.num_steps} steps)", art[f"grid_{args.num_steps}"]))
                else:
                    for m in args.rival_time_multiples:
                        if f"grid_{m:g}x" in art:
                            rows_img.append((f"{r['contender']} ({m:g}x time)", art[f"grid_{m:g}x"]))
            cols = max(x.shape[0] for _, x in rows_img)
            fig, axes = plt.subplots(
                len(rows_img), cols, figsize=(0.9 * cols + 2.2, 0.95 * len(rows_img)), squeeze=False
            )
            for i, (label, imgs) in enumerate(rows_img):
                for j in range(cols):
                    ax = axes[i][j]
                    ax.set_xticks([])
                    ax.set_yticks([])
                    for s in ax.spines.values():
                        s.set_visible(False)
                    if j < imgs.shape[0]:
                        img = imgs[j].permute(1, 2, 0).numpy()
                        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
                axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            name = real_rec["class"] if real_rec["class"].isascii() else f"U+{ord(real_rec['class'][0]):04X}"
            fig.suptitle(f"{domain}: class {c} ({name}), K={k}", fontsize=9)  # CJK names: code point (plot fonts)
            fig.tight_layout()
            paths.append(out_dir / f"{domain}_samples_class{c}.png")
            fig.savefig(paths[-1], dpi=90)
            plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# main


def load_domains(args: argparse.Namespace, contenders: Sequence[Contender]) -> list[DomainContext]:
    from metagan_hub.metrics.domains import EVALUATION_DOMAINS, get_evaluation_domain

    names = [d.strip() for d in (args.domains or ",".join(EVALUATION_DOMAINS)).split(",") if d.strip()]
    unknown = [d for d in names if d not in EVALUATION_DOMAINS]
    if unknown or not names:
        raise ValueError(f"`--domains`: unknown domain(s) {unknown}; allowed: {', '.join(EVALUATION_DOMAINS)}.")
    resolution = args.resolution if args.resolution is not None else (contenders[0].sample_size if contenders else 32)
    channels = args.channels if args.channels is not None else (contenders[0].channels if contenders else 1)
    check_sizes(contenders, resolution, channels, args.resize)
    ctxs = []
    for name in names:
        domain = get_evaluation_domain(name, resolution=resolution, channels=channels, cache_dir=args.cache_dir)
        try:
            num_classes = domain.num_classes
        except ValueError as err:  # e.g. the fonts domain without enough CJK fonts installed
            if args.domains is not None:
                raise
            logger.warning("skipping the %r evaluation domain: %s", name, err)
            continue
        start, stop = args.class_range
        stop = num_classes if stop is None else min(stop, num_classes)
        if start >= stop:
            if len(names) == 1:
                raise ValueError(f"`--classes` {args.classes}: domain {name!r} has only {num_classes} classes.")
            logger.warning("domain %r has only %d classes: none in --classes %s", name, num_classes, args.classes)
            continue
        if args.quick:
            domain.classifier = quick_classifier(domain, Path(args.output_dir), args.seed)
        classifier = domain.classifier.eval()
        ceiling = domain.real_accuracy
        ctxs.append(DomainContext(name, domain, classifier, ceiling, list(range(start, stop))))
        logger.info(
            "domain %s: classes %d-%d of %d, classifier accuracy on real held-out images %.3f (%s)",
            name,
            start,
            stop - 1,
            num_classes,
            ceiling,
            domain.description,
        )
    if not ctxs:
        raise ValueError(f"no evaluation domain has classes in --classes {args.classes}.")
    return ctxs


def open_output(args: argparse.Namespace) -> ResultStore:
    out = Path(args.output_dir)
    config = measurement_config(args)
    config_path = out / CONFIG_FILE
    if config_path.is_file():
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        if not args.resume and not args.summarize_only:
            raise ValueError(
                f"`--output_dir` {out} already holds a benchmark run; pass --resume to continue it (completed units "
                "are skipped) or choose a new --output_dir."
            )
        if args.summarize_only:  # summarize with the options the records were made with
            for name in SUMMARY_OPTIONS:
                if name in saved:
                    setattr(args, name, saved[name])
        else:
            check_same_options(out, {k: v for k, v in saved.items() if k != "classifiers"}, config)
    elif args.summarize_only:
        raise ValueError(f"`--output_dir` {out} holds no benchmark run to summarize.")
    else:  # a new run: its run_config.json is written once contenders and domains have loaded (check_classifiers)
        out.mkdir(parents=True, exist_ok=True)
    return ResultStore(out)


def check_same_options(output_dir: str | os.PathLike, saved: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse to add records to `output_dir` made with other options than the ones its records were made with
    (`saved`, from its run configuration file; `config`: this run's): a `ValueError` naming every option that
    differs, with both values."""
    from metagan_hub.training.checkpointing import config_differences

    diff = config_differences(saved, config)
    if diff:
        changes = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in diff.items())
        raise ValueError(
            f"`--output_dir` {output_dir} was made with other measurement options ({changes}); its records would not "
            "be comparable. Use the same options or a new --output_dir."
        )


def classifier_id(classifier: Any) -> str:
    """What identifies an evaluation classifier: its cache key (data, recipe, seed, code version)."""
    training = dict(classifier.config.get("training") or {})
    return str(training.get("cache_key") or training.get("seed", "unknown"))


def check_classifiers(ctxs: Sequence[DomainContext], output_dir: Path, args: argparse.Namespace) -> None:
    """Records of one output folder must come from the same evaluation classifiers: remember each domain's classifier
    in run_config.json and refuse to resume with another one (e.g. after its recipe changed). A new run writes its
    run_config.json here, after its contenders and domains loaded: a mistyped contender leaves no run behind."""
    path = output_dir / CONFIG_FILE
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else measurement_config(args)
    config["classifiers"] = same_classifiers(config.get("classifiers", {}), ctxs, output_dir)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def same_classifiers(known: dict[str, str], ctxs: Sequence[DomainContext], output_dir: str | Path) -> dict[str, str]:
    """`known` (an output folder's evaluation classifier per domain, as [`classifier_id`]) with the domains of `ctxs`
    it lacks added; a `ValueError` where a domain's classifier is not the one that made the folder's records. Used by
    this script's and `benchmark_sampling.py`'s output folders."""
    known = dict(known)
    for ctx in ctxs:
        ident = classifier_id(ctx.classifier)
        if known.setdefault(ctx.name, ident) != ident:
            raise ValueError(
                f"the {ctx.name!r} evaluation classifier differs from the one that made the records in {output_dir} "
                f"({ident} vs {known[ctx.name]}); its numbers would not be comparable: use a new --output_dir."
            )
    return known


def write_summary(store: ResultStore, args: argparse.Namespace) -> str:
    records = store.records
    text, summary = summary_tables(store, records, args)
    out = Path(args.output_dir)
    figures = [] if args.no_figures else make_figures(store, records, args, out / "figures")
    md = ["# Few-shot benchmark", "", text]
    if figures:
        md += ["Figures:", ""] + [f"- figures/{p.name}" for p in figures] + [""]
    (out / "results.md").write_text("\n".join(md), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return text


def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    start = time.perf_counter()
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    env = environment(torch.get_num_threads())
    print(
        f"benchmark_fewshot: CPU capability {env['cpu_capability']} ({env['cpu']}), {env['num_threads']} threads, "
        f"torch {env['torch']}, diffusers {env['diffusers']}, metagan_hub {env['metagan_hub']}",
        flush=True,
    )
    store = open_output(args)
    if args.summarize_only:
        text = write_summary(store, args)
        print(text)
        return {"records": len(store.records), "ran": 0, "skipped": 0}

    specs = list(args.contender or [])
    if args.quick:
        paths = build_quick_models(Path(args.output_dir), args.seed)
        if not specs:
            specs = [f"{QUICK_GAN}={paths['gan']}"] + quick_contender_names()[1:]
        if args.rival is None:
            args.rival = paths["rival"]
    if args.rival is None:
        args.rival = DEFAULT_RIVAL
    contenders = load_contenders(specs, args)
    if args.contenders:
        # names checked by finalize_args; the first GAN contender stays loaded for scratch / calibration, but only the
        # chosen ones run
        run_names = {n.strip() for n in args.contenders.split(",") if n.strip()}
    else:
        run_names = {c.name for c in contenders}
    if args.calibration is not None and not any(c.kind == "diffusion" and c.name in run_names for c in contenders):
        raise ValueError(
            f"`--calibration` {args.calibration!r} sets the diffusion contenders' fine-tuning budgets, but none of "
            f"the contenders that run ({', '.join(sorted(run_names))}) is one: leave it out, or add a ddpm-* "
            "contender."
        )
    ctxs = load_domains(args, contenders)
    check_real_counts(ctxs, args)
    check_classifiers(ctxs, Path(args.output_dir), args)

    calibration = None
    if any(c.kind == "diffusion" and c.name in run_names for c in contenders):
        cal_path = Path(args.output_dir) / CALIBRATION_FILE
        source = Path(args.calibration) if args.calibration else cal_path
        if source.is_file():
            calibration = json.loads(source.read_text(encoding="utf-8"))
        if rival_device_type(args) != "cpu":
            check_cpu_calibration(calibration, contenders, run_names, args.rival_device)
        if calibration is not None:
            logger.info("using the calibration in %s", source)
            added = time_missing_recipes(calibration, [c for c in contenders if c.name in run_names], ctxs, args)
            if added:
                logger.warning(
                    "the calibration had no timing for %s: timed now and added (the GAN's adapt() time and the other "
                    "recipes' timings are kept, so their budgets do not change)",
                    ", ".join(added),
                )
                cal_path.write_text(json.dumps(calibration, indent=2) + "\n", encoding="utf-8")
        else:
            logger.info("calibrating: the GAN's default adapt() time and the rival's seconds per fine-tuning step")
            calibration = calibrate(contenders, ctxs, args)
        if not cal_path.is_file():
            cal_path.write_text(json.dumps(calibration, indent=2) + "\n", encoding="utf-8")
        for c in contenders:
            if c.kind == "diffusion" and c.name in run_names:
                print(
                    f"{c.name}: budgets {rival_steps(calibration, c.recipe, args.rival_time_multiples)} fine-tuning "
                    f"steps for {args.rival_time_multiples} x the GAN's {calibration['gan']['adapt_seconds']:.2f} s",
                    flush=True,
                )

    # earlier versions keyed the rival's units by its absolute path: the paths its records name are tried (records of
    # one output folder are taken to be of the rival given now)
    legacy_rivals = sorted(
        {os.path.abspath(r["path"]) for r in store.records if r["kind"] == "diffusion" and r["path"]}
    )
    units = plan_units(contenders, ctxs, args, calibration, run_names, legacy_rivals)
    done_keys = {r["unit_key"] for r in store.records}
    rekey = {}
    for u in units:
        old = next((k for k in u.legacy_keys if k in done_keys), None)
        if u.key not in done_keys and old is not None:
            rekey[old] = u.key
    if rekey:
        store.rekey(rekey)
        logger.info("%d finished units had a key of an earlier version (the rival's path): re-keyed", len(rekey))
    todo = [u for u in units if not store.done(u.key)]
    skipped = len(units) - len(todo)
    print(f"{len(units)} units of work, {skipped} already done, {len(todo)} to run", flush=True)
    ran = 0
    for unit in tqdm(todo, desc="benchmark", unit="unit"):
        if args.max_minutes is not None and time.perf_counter() - start > 60 * args.max_minutes:
            logger.warning(
                "--max_minutes %g reached: %d units left for a later --resume", args.max_minutes, len(todo) - ran
            )
            break
        ran += 1
        t0 = time.perf_counter()
        records, tensors = run_unit(unit, args, calibration)
        for r in records:
            r["unit_seconds"] = round(time.perf_counter() - t0, 2)
        store.add_unit(unit.key, records, tensors)
        head = next((r for r in records if r.get("default_budget")), records[-1])
        logger.info(
            "%s: %s",
            unit.label,
            ", ".join(f"{m}={_fmt(m, v)}" for m, v in head["metrics"].items() if m in DIRECTION),
        )
    text = write_summary(store, args)
    print(text)
    wall = time.perf_counter() - start
    print(
        f"total wall time {wall:.1f} s ({ran} units run, {skipped} skipped, {len(todo) - ran} left)",
        flush=True,
    )
    return {"records": len(store.records), "ran": ran, "skipped": skipped, "wall_seconds": wall}


if __name__ == "__main__":
    main(parse_args())
