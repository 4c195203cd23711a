#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Time per `adapt()` step with each diversity-preserving term on vs. off, in one process, interleaved.

Every round adapts the same checkpoint to the same shots once per configuration (in a rotated order, so that no
configuration always runs first after another), and the per-step time is the training loop's wall time
(`card_info["adaptation"]["wall_time_s"]`) over the steps. Ratios to `off` are taken per round, then the median
over rounds is reported: rounds share the machine's load, so the ratio is steadier than the times.

    python scripts/benchmark_diversity.py --pretrained_model_name_or_path checkpoints/metagan-kanji-32 \\
        --num_steps 100 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from metagan_hub import MetaGANPipeline
from metagan_hub.data import get_dataset

CONFIGS = {
    "off": {},
    "cdc": {"diversity_loss": "cdc"},
    "cdc-a0": {"diversity_loss": "cdc", "cdc_anchor_interval": 0},
    "dcl": {"diversity_loss": "dcl"},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained_model_name_or_path", default="checkpoints/metagan-kanji-32")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--num_steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"Comma-separated, from {list(CONFIGS)}.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",")]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or "off" not in args.configs:
        parser.error(f"--configs must include 'off' and name only {list(CONFIGS)}, got {args.configs}")
    return args


def main(args: argparse.Namespace) -> None:
    pipe = MetaGANPipeline.from_pretrained(args.pretrained_model_name_or_path)
    pipe.set_progress_bar_config(disable=True)
    cfg = pipe.generator.config
    _, _, test = get_dataset("kanjivg", resolution=cfg.sample_size, channels=cfg.out_channels).split_classes(seed=0)
    shots = test.class_images(0)[: args.shots]
    per_step: dict[str, list[float]] = {c: [] for c in args.configs}
    for r in range(args.rounds):
        order = args.configs[r % len(args.configs) :] + args.configs[: r % len(args.configs)]
        for name in order:
            adapted = pipe.adapt(
                shots,
                num_steps=args.num_steps,
                mixed_precision=args.mixed_precision,
                generator=torch.Generator().manual_seed(args.seed + r),
                **CONFIGS[name],
            )
            record = adapted.card_info["adaptation"]
            per_step[name].append(record["wall_time_s"] / record["steps_run"])
        print(f"round {r + 1}: " + ", ".join(f"{c} {1000 * per_step[c][-1]:.1f} ms" for c in args.configs), flush=True)
    print(
        f"\n{args.rounds} rounds x {args.num_steps} steps, {args.shots} shots, {args.mixed_precision}, "
        f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}\n"
    )
    print("| configuration | ms/step (median) | ratio to off (median of per-round ratios) |")
    print("|---|---|---|")
    summary = {}
    for c in args.configs:
        ratios = [t / o for t, o in zip(per_step[c], per_step["off"])]
        summary[c] = {"ms_per_step": 1000 * statistics.median(per_step[c]), "ratio": statistics.median(ratios)}
        print(f"| {c} | {summary[c]['ms_per_step']:.1f} | {summary[c]['ratio']:.2f} |")
    print(json.dumps({"per_step_s": per_step, "summary": summary}))


if __name__ == "__main__":
    main(parse_args())
