#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Build the evaluation classifiers of the few-shot benchmark's domains and print their held-out accuracy.

Each classifier ([`metagan_hub.metrics.EvaluationClassifier`]) is trained deterministically on its domain's
classifier-training images (never the shots, never the real held-out images) with the domain's recipe and seed, and
saved as safetensors with its accuracy on the real held-out images of the evaluation classes (the ceiling
recognisability is read against). By default they go to the cache where `domain.classifier` and
`scripts/benchmark_fewshot.py` find them; with `--output_dir` they are written to `<output_dir>/<domain>` instead.

Example:

    python scripts/train_eval_classifiers.py                      # kanji, fonts and digits, into the cache
    python scripts/train_eval_classifiers.py --domain digits      # one domain
    python scripts/train_eval_classifiers.py --domain kanji --output_dir runs/classifiers --num_threads 1
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time

import torch

from metagan_hub.metrics.classifiers import (
    classifier_cache_path,
    load_evaluation_classifier,
    save_classifier,
    train_evaluation_classifier,
)
from metagan_hub.metrics.domains import EVALUATION_DOMAINS, MIN_RESOLUTION, get_evaluation_domain

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_utils import cpu_name  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--domain", action="append", choices=EVALUATION_DOMAINS, help="Domain to build (repeatable; default: all)."
    )
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3])
    parser.add_argument("--cache_dir", default=None, help="Render and classifier cache (default: $METAGAN_HUB_CACHE).")
    parser.add_argument("--output_dir", default=None, help="Write classifiers to <output_dir>/<domain> instead.")
    parser.add_argument("--num_classes", type=int, default=None, help="kanji / fonts: first N held-out classes.")
    parser.add_argument("--num_epochs", type=int, default=None, help="Override the domain's recipe (quick runs).")
    parser.add_argument(
        "--num_threads", type=int, default=1, help="torch threads while training (1: bitwise reproducible builds)."
    )
    parser.add_argument("--force", action="store_true", help="Retrain even if the cache holds the classifier.")
    args = parser.parse_args(argv)
    if args.resolution < MIN_RESOLUTION:
        parser.error(f"--resolution must be >= {MIN_RESOLUTION} for an evaluation domain, got {args.resolution}")
    for name in ("num_epochs", "num_threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.num_classes is not None:
        domains = set(args.domain or EVALUATION_DOMAINS)
        if domains == {"digits"}:
            parser.error(f"--num_classes applies to the kanji and fonts domains, got {args.num_classes} with digits")
        low = 2 if "fonts" in domains else 1  # a fonts classifier needs 2 classes; kanji's has confuser classes too
        if args.num_classes < low:
            domain = "fonts" if "fonts" in domains else "kanji"
            parser.error(f"--num_classes must be >= {low} for the {domain} domain, got {args.num_classes}")
    return args


def build(name: str, args: argparse.Namespace) -> dict:
    kwargs = {"num_classes": args.num_classes} if args.num_classes is not None and name != "digits" else {}
    domain = get_evaluation_domain(
        name, resolution=args.resolution, channels=args.channels, cache_dir=args.cache_dir, **kwargs
    )
    if args.num_epochs is not None:
        recipe = domain.classifier_recipe
        domain.classifier_recipe = type(recipe)(**{**recipe.to_dict(), "num_epochs": args.num_epochs})
    start = time.perf_counter()
    cached = classifier_cache_path(domain, args.cache_dir)
    if args.output_dir is None and not args.force:
        clf = load_evaluation_classifier(domain, cache_dir=args.cache_dir, num_threads=args.num_threads)
        where = cached
    else:
        clf = train_evaluation_classifier(domain, num_threads=args.num_threads)
        where = save_classifier(clf, os.path.join(args.output_dir, name) if args.output_dir else cached)
    training = clf.config.training
    return {
        "domain": name,
        "classes": f"{domain.num_classes} eval / {clf.num_classes} total",
        "train images": training["num_train_images"],
        "real held-out": training["num_heldout_images"],
        "held-out accuracy": clf.config.heldout_accuracy,
        "train s": training["seconds"],
        "s (this run)": round(time.perf_counter() - start, 1),
        "path": str(where),
    }


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = [build(name, args) for name in args.domain or EVALUATION_DOMAINS]
    print(
        f"\nEvaluation classifiers, {args.resolution}x{args.resolution}x{args.channels}; {cpu_name()} "
        f"({platform.machine()}, torch {torch.__version__}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, {args.num_threads or torch.get_num_threads()} training "
        "thread(s), "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})\n"
    )
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) and k == "held-out accuracy" else str(v) for k, v in row.items()]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(parse_args())
