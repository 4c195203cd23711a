#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Time per `adapt()` step with each diversity-preserving term on vs. off, in one process, interleaved.

Every round adapts the same checkpoint to the same shots once per configuration (in a rotated order, so that no
configuration always runs first after another). Two per-step times are reported: the training loop's wall time
(`card_info["adaptation"]["wall_time_s"]`) over the steps, and the process CPU time of the whole `adapt()` call over
the steps. With `--threads 1` (the default) the CPU time estimates the time on an idle core even when other
processes compete for the CPUs, which makes wall times noisy. Ratios to `off` are taken per round, then the median
over rounds is reported.

    python scripts/benchmark_diversity.py --pretrained_model_name_or_path checkpoints/metagan-kanji-32 \\
        --num_steps 100 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

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
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time ~ idle-core time).")
    parser.add_argument(
        "--sample_shots",
        action="store_true",
        help="Use the checkpoint's own samples as shots instead of rendering a held-out kanji class (faster start; "
        "the time per step does not depend on what the shots show).",
    )
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",")]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or "off" not in args.configs:
        parser.error(f"--configs must include 'off' and name only {list(CONFIGS)}, got {args.configs}")
    return args


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    pipe = MetaGANPipeline.from_pretrained(args.pretrained_model_name_or_path)
    pipe.set_progress_bar_config(disable=True)
    cfg = pipe.generator.config
    if args.sample_shots:
        shots = pipe(batch_size=args.shots, generator=torch.Generator().manual_seed(args.seed), output_type="pt")
        shots = shots.images * 2 - 1  # [N, C, H, W] in [-1, 1]
    else:
        data = get_dataset("kanjivg", resolution=cfg.sample_size, channels=cfg.out_channels)
        shots = data.split_classes(seed=0)[2].class_images(0)[: args.shots]
    per_step: dict[str, list[float]] = {c: [] for c in args.configs}  # wall s / step
    cpu_step: dict[str, list[float]] = {c: [] for c in args.configs}  # process CPU s / step
    for r in range(args.rounds):
        order = args.configs[r % len(args.configs) :] + args.configs[: r % len(args.configs)]
        for name in order:
            cpu0 = time.process_time()
            adapted = pipe.adapt(
                shots,
                num_steps=args.num_steps,
                mixed_precision=args.mixed_precision,
                generator=torch.Generator().manual_seed(args.seed + r),
                **CONFIGS[name],
            )
            record = adapted.card_info["adaptation"]
            cpu_step[name].append((time.process_time() - cpu0) / record["steps_run"])
            per_step[name].append(record["wall_time_s"] / record["steps_run"])
        print(
            f"round {r + 1}: "
            + ", ".join(
                f"{c} {1000 * per_step[c][-1]:.1f} ms ({1000 * cpu_step[c][-1]:.1f} CPU)" for c in args.configs
            ),
            flush=True,
        )
    print(
        f"\n{args.rounds} rounds x {args.num_steps} steps, {args.shots} shots, {args.mixed_precision}, "
        f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}\n"
    )
    print("| configuration | wall ms/step | wall ratio to off | CPU ms/step | CPU ratio to off |")
    print("|---|---|---|---|---|")
    summary = {}
    for c in args.configs:
        wall = statistics.median(t / o for t, o in zip(per_step[c], per_step["off"]))
        cpu = statistics.median(t / o for t, o in zip(cpu_step[c], cpu_step["off"]))
        summary[c] = {
            "wall_ms_per_step": 1000 * statistics.median(per_step[c]),
            "wall_ratio": wall,
            "cpu_ms_per_step": 1000 * statistics.median(cpu_step[c]),
            "cpu_ratio": cpu,
        }
        print(
            f"| {c} | {summary[c]['wall_ms_per_step']:.1f} | {wall:.2f} | {summary[c]['cpu_ms_per_step']:.1f} | "
            f"{cpu:.2f} |"
        )
    print(json.dumps({"wall_s_per_step": per_step, "cpu_s_per_step": cpu_step, "summary": summary}))


if __name__ == "__main__":
    main(parse_args())
