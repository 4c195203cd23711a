#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Compare few-shot adaptation from several starting points on held-out kanji classes, in one run.

Every contender is adapted on the same held-out classes, with the same shots, seeds and step budget; samples are
compared with the class's other (held-out) renders using `metagan_hub.metrics`. `scratch` is a freshly initialised
pipeline with the first checkpoint's configuration.

    python scripts/evaluate_metagan.py --contender reptile=checkpoints/metagan-kanji-32 \\
        --contender pretrain=runs/pretrain --contender scratch --num_classes 10 --shots 5 --num_steps 200

Prints a Markdown table (mean ± std over classes, and each metric's ratio to `scratch` when present) and appends one
JSON line per (contender, class) to --results_file.

With `--yardstick`, the contenders are judged as `train_metagan.py --select_best` judges checkpoints instead: on the
first `--num_classes` *validation* classes of the split (never meta-trained on, never benchmarked), in the features
of an evaluation classifier trained on other images of those classes and `--confuser_classes` training classes
(`metagan_hub.metrics.yardstick`): recognisability, precision, recall, relative diversity, copy rate and the score
(recognisability + recall); one JSON line per contender.

    python scripts/evaluate_metagan.py --yardstick --contender bundled=checkpoints/metagan-kanji-32 \
        --contender pretrain=runs/pretrain --num_classes 8 --num_samples 100
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time

import torch

from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline
from metagan_hub.data import get_dataset
from metagan_hub.hub.safety import replace_nonfinite
from metagan_hub.metrics import compute_metrics, heldout_distance
from metagan_hub.training.adaptation import check_adapt_options
from metagan_hub.training.diversity import DIVERSITY_LOSSES

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adapt_metagan import as_options  # noqa: E402

DATASETS = ["kanjivg", "fonts", "digits"]  # the sources get_dataset() builds from a name alone


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--contender",
        action="append",
        help="NAME=PATH_OR_REPO of a checkpoint, or 'scratch'. Repeat for each contender.",
    )
    parser.add_argument("--dataset", default="kanjivg", choices=DATASETS)
    parser.add_argument("--split_seed", type=int, default=0, help="Seed of the class split used in meta-training.")
    parser.add_argument("--num_val", type=int, default=None)
    parser.add_argument("--num_test", type=int, default=None)
    parser.add_argument("--num_classes", type=int, default=10, help="Held-out (test) classes to evaluate on.")
    parser.add_argument(
        "--first_class",
        type=int,
        default=0,
        help="Index of the first held-out class, e.g. 30 to confirm a 30-class result on 30 further classes; the "
        "adapt() seed of class c stays seed + c.",
    )
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--num_steps", type=int, default=200)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--batch_size", type=int, default=None, help="adapt() batch size (default: adapt()'s).")
    parser.add_argument("--r1_interval", type=int, default=None, help="adapt() lazy-R1 interval (default: adapt()'s).")
    parser.add_argument(
        "--freeze_discriminator_blocks",
        type=int,
        default=None,
        help="adapt() FreezeD: lowest discriminator blocks kept frozen (default: adapt()'s).",
    )
    parser.add_argument(
        "--diversity_loss",
        default=None,
        choices=list(DIVERSITY_LOSSES),
        help="adapt() diversity-preserving term for every contender (default: none).",
    )
    parser.add_argument("--diversity_weight", type=float, default=None, help="adapt() diversity weight.")
    parser.add_argument("--diversity_batch_size", type=int, default=None, help="adapt() diversity batch size.")
    parser.add_argument("--diversity_interval", type=int, default=None, help="adapt() diversity interval.")
    parser.add_argument("--cdc_anchor_interval", type=int, default=None, help="adapt() CDC anchor interval.")
    parser.add_argument("--num_samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results_file", default="evaluation.jsonl")
    parser.add_argument(
        "--yardstick",
        action="store_true",
        help="Judge on validation classes in classifier features (the train_metagan.py --select_best yardstick).",
    )
    parser.add_argument("--confuser_classes", type=int, default=64, help="--yardstick: classifier confuser classes.")
    parser.add_argument(
        "--summarize",
        nargs="+",
        default=None,
        metavar="JSONL",
        help="Only print the summary of records written by earlier runs (contenders from several runs combined).",
    )
    args = parser.parse_args(argv)
    if not args.contender and not args.summarize:
        parser.error("give at least one --contender (or --summarize JSONL ...)")
    for path in args.summarize or []:
        if not os.path.isfile(path):
            parser.error(f"--summarize: {path} is not a file")
    names = []
    for spec in args.contender or []:
        try:
            names.append(contender_name(spec))
        except ValueError as err:
            parser.error(str(err))
    if args.contender and args.contender[0] == "scratch":
        parser.error("--contender scratch needs at least one checkpoint contender (NAME=PATH) listed before it")
    for name in names:
        if names.count(name) > 1:
            parser.error(
                f"--contender names must differ (each names its own rows and records), got {name!r} "
                f"{names.count(name)} times: {args.contender}"
            )
    for name, value in vars(args).items():  # argparse takes "nan" and "inf" as floats
        if isinstance(value, float) and not math.isfinite(value):
            parser.error(f"--{name} must be a finite number, got {value}")
    if args.first_class < 0:
        parser.error(f"--first_class must be >= 0, got {args.first_class}")
    if args.yardstick and args.first_class:
        parser.error("--yardstick judges the first --num_classes validation classes (--first_class: test classes)")
    if args.confuser_classes < 0:
        parser.error(f"--confuser_classes must be >= 0, got {args.confuser_classes}")
    for name in ("split_seed", "seed"):  # numpy seeds and the domains' shot seeds are non-negative
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.shots < 1:
        parser.error(f"--shots must be >= 1, got {args.shots}")
    try:  # adapt()'s own checks, with its defaults for the options not given
        check_adapt_options(num_steps=args.num_steps, learning_rate=args.learning_rate, **adapt_options(args))
    except (ValueError, TypeError) as err:
        parser.error(as_options(err))
    if args.yardstick:
        lowest = {
            "num_classes": (2, "the classifier tells at least 2 classes apart"),
            "num_val": (2, "the judged classes are validation classes: at least 2"),
            "num_test": (0, "a number of classes"),
            "num_samples": (4, "k-NN precision / recall need neighbours"),
        }
    else:
        lowest = {
            "num_classes": (1, "held-out classes to evaluate"),
            "num_val": (0, "a number of classes"),
            "num_test": (1, "the evaluated classes are test classes"),
            "num_samples": (2, "KID needs at least 2 samples"),
        }
    for name, (low, reason) in lowest.items():
        value = getattr(args, name)
        if value is not None and value < low:
            mode = " with --yardstick" if args.yardstick else ""
            parser.error(f"--{name} must be >= {low}{mode} ({reason}), got {value}")
    return args


def contender_name(spec: str) -> str:
    """The name a `--contender` spec is reported under: NAME of NAME=PATH, or 'scratch'."""
    if spec == "scratch":
        return "scratch"
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"--contender must be NAME=PATH or 'scratch', got {spec!r}.")
    return name


def load_contender(spec: str, reference: MetaGANPipeline | None, seed: int) -> tuple[str, MetaGANPipeline]:
    if spec == "scratch":
        if reference is None:
            raise ValueError("'scratch' needs at least one checkpoint contender listed before it.")
        torch.manual_seed(seed)
        pipe = MetaGANPipeline(
            generator=MetaGANGenerator(**reference.generator.config),
            discriminator=MetaGANDiscriminator(**reference.discriminator.config),
        )
        return "scratch", pipe
    if "=" not in spec:
        raise ValueError(f"--contender must be NAME=PATH or 'scratch', got {spec!r}.")
    name, path = spec.split("=", 1)
    return name, MetaGANPipeline.from_pretrained(path)


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    if args.summarize:
        print(summarize_files(args.summarize))
        return
    contenders: list[tuple[str, MetaGANPipeline]] = []
    for spec in args.contender:
        reference = contenders[0][1] if contenders else None
        contenders.append(load_contender(spec, reference, args.seed))
    cfg = contenders[0][1].generator.config
    split_kwargs = {k: v for k, v in (("num_val", args.num_val), ("num_test", args.num_test)) if v is not None}
    # lazy: a split or --first_class that does not fit is refused before anything is rendered
    data = get_dataset(args.dataset, resolution=cfg.sample_size, channels=cfg.out_channels, lazy=True)
    train, val, test = data.split_classes(seed=args.split_seed, **split_kwargs)
    if args.yardstick:
        run_yardstick(args, contenders, train, val)
        return
    if args.first_class >= test.num_classes:
        raise ValueError(f"--first_class {args.first_class}: the test split has only {test.num_classes} classes.")
    last_class = min(args.first_class + args.num_classes, test.num_classes)

    rows: dict[str, list[dict]] = {name: [] for name, _ in contenders}
    with open(args.results_file, "a", encoding="utf-8") as out:
        for c in range(args.first_class, last_class):
            images = test.class_images(c)  # [N, C, H, W]
            if images.shape[0] < args.shots + 2:
                raise ValueError(f"class {test.class_names[c]!r} has {images.shape[0]} images; need shots + 2.")
            shots, held_out = images[: args.shots], images[args.shots :]
            for name, pipe in contenders:
                pipe.set_progress_bar_config(disable=True)
                start = time.perf_counter()
                options = adapt_options(args)
                adapted = pipe.adapt(
                    shots,
                    **options,
                    num_steps=args.num_steps,
                    learning_rate=args.learning_rate,
                    mixed_precision=args.mixed_precision,
                    generator=torch.Generator().manual_seed(args.seed + c),
                )
                seconds = time.perf_counter() - start
                fake = (
                    adapted(
                        batch_size=args.num_samples,
                        generator=torch.Generator().manual_seed(args.seed),
                        output_type="pt",
                    ).images
                    * 2
                    - 1
                )
                result = compute_metrics(fake, held_out)
                # the distance meta-training validation reports (full-resolution pixels), first in the table
                result["metrics"] = {"heldout_distance": heldout_distance(fake, held_out), **result["metrics"]}
                record = {
                    "contender": name,
                    "class": test.class_names[c],
                    "shots": args.shots,
                    "num_steps": args.num_steps,
                    "seed": args.seed + c,
                    "adapt_options": options,
                    "adapt_seconds": round(seconds, 2),
                    **result,
                }
                rows[name].append(record)
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                print(
                    f"[{c + 1}/{last_class}] {name:>10} {test.class_names[c]} "
                    + " ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items()),
                    flush=True,
                )

    print(summarize(rows))


def adapt_options(args: argparse.Namespace) -> dict:
    """The adapt() options given on the command line (the rest keep adapt()'s defaults)."""
    return {
        k: v
        for k, v in (
            ("batch_size", args.batch_size),
            ("r1_interval", args.r1_interval),
            ("freeze_discriminator_blocks", args.freeze_discriminator_blocks),
            ("diversity_loss", args.diversity_loss),
            ("diversity_weight", args.diversity_weight),
            ("diversity_batch_size", args.diversity_batch_size),
            ("diversity_interval", args.diversity_interval),
            ("cdc_anchor_interval", args.cdc_anchor_interval),
        )
        if v is not None
    }


def run_yardstick(args: argparse.Namespace, contenders: list[tuple[str, MetaGANPipeline]], train, val) -> None:
    """`--yardstick`: every contender judged on the same validation classes, shots and seeds."""
    from metagan_hub.metrics.yardstick import YARDSTICK_METRICS, evaluate_adaptation, validation_domain

    domain = validation_domain(
        train,
        val,
        num_classes=min(args.num_classes, val.num_classes),
        shot_pool=args.shots,
        num_confusers=args.confuser_classes,
        split_seed=args.split_seed,
    )
    lines = [
        f"Yardstick: {domain.num_classes} validation classes x {args.shots} shots, {args.num_steps} adapt() steps, "
        f"{args.num_samples} samples per class, seed {args.seed}; the classifier ({len(domain.classifier_classes)} "
        f"classes) recognises {domain.real_accuracy:.3f} of the real held-out images (the ceiling)",
        "",
        "| contender | score | " + " | ".join(YARDSTICK_METRICS) + " | s |",
        "|---" * (len(YARDSTICK_METRICS) + 3) + "|",
    ]
    options = adapt_options(args)
    with open(args.results_file, "a", encoding="utf-8") as out:
        for name, pipe in contenders:
            pipe.set_progress_bar_config(disable=True)
            result = evaluate_adaptation(
                pipe,
                domain,
                shots=args.shots,
                num_steps=args.num_steps,
                num_samples=args.num_samples,
                seed=args.seed,
                learning_rate=args.learning_rate,
                mixed_precision=args.mixed_precision,
                **options,
            )
            record = {"contender": name, "yardstick": True, "adapt_options": options, **result}
            out.write(json.dumps(replace_nonfinite(record)[0], ensure_ascii=False, allow_nan=False) + "\n")
            means = result["means"]
            lines.append(
                f"| {name} | {result['score']:.3f} | "
                + " | ".join(f"{means[m]:.3f}" for m in YARDSTICK_METRICS)
                + f" | {result['wall_time_s']:.0f} |"
            )
            print(lines[-1], flush=True)
    print("\n".join(lines))


def summarize(rows: dict[str, list[dict]]) -> str:
    """Markdown summary of per-class records: mean ± std per contender, paired differences to the first contender
    (same classes, shots and seeds, so the class-to-class spread cancels), and ratios to `scratch` when present."""
    names = list(rows)
    common = set.intersection(*({r["class"] for r in records} for records in rows.values()))
    rows = {name: [r for r in records if r["class"] in common] for name, records in rows.items()}
    first = rows[names[0]]
    metric_names = list(first[0]["metrics"])
    lines = [
        f"{len(first)} held-out classes x {first[0]['shots']} shots, {first[0]['num_steps']} steps, "
        f"{first[0]['num_fake']} samples vs {first[0]['num_real']} held-out renders per class, "
        f"seeds {min(r['seed'] for r in first)}-{max(r['seed'] for r in first)} (one per class), "
        "heldout_distance in full-resolution pixels, other metrics in 16x16 pixel features",
        "",
        "| contender | " + " | ".join(metric_names) + " | adapt s |",
        "|---" * (len(metric_names) + 2) + "|",
    ]
    means = {}
    for name, records in rows.items():
        cells = []
        for m in metric_names:
            values = [r["metrics"][m] for r in records]
            means[(name, m)] = statistics.mean(values)
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{means[(name, m)]:.4f} ± {spread:.4f}")
        seconds = statistics.mean(r["adapt_seconds"] for r in records)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {seconds:.1f} |")
    if len(names) > 1:
        lines += ["", f"paired difference to {names[0]} (mean ± standard error over classes; classes where lower):"]
        by_class = {r["class"]: r for r in first}
        for name in names[1:]:
            cells = []
            for m in ("heldout_distance", "kid"):
                if m not in metric_names:
                    continue
                diffs = [r["metrics"][m] - by_class[r["class"]]["metrics"][m] for r in rows[name]]
                se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
                lower = sum(d < 0 for d in diffs)
                cells.append(f"{m} {statistics.mean(diffs):+.4f} ± {se:.4f} ({lower}/{len(diffs)} lower)")
            lines.append(f"- {name}: " + ", ".join(cells))
    if "scratch" in rows:
        lines += ["", "ratio to scratch (lower is better for heldout_distance / kid / nn_real / nn_fake):"]
        for name in rows:
            ratios = ", ".join(
                f"{m} {means[(name, m)] / means[('scratch', m)]:.3f}"
                for m in metric_names
                if means[("scratch", m)] != 0
            )
            lines.append(f"- {name}: {ratios}")
    return "\n".join(lines)


def summarize_files(paths: list[str]) -> str:
    """Summarize records appended by earlier runs (contenders evaluated in separate runs with the same settings)."""
    rows: dict[str, list[dict]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    records = rows.setdefault(record["contender"], [])
                    if any(r["class"] == record["class"] for r in records):
                        raise ValueError(
                            f"{path}: contender {record['contender']!r} has class {record['class']!r} twice; give "
                            "each evaluated checkpoint its own contender name (or results file)."
                        )
                    records.append(record)
    if not rows:
        raise ValueError(f"no records in {paths}.")
    return summarize(rows)


if __name__ == "__main__":
    main(parse_args())
