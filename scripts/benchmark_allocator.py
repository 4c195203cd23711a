#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""CPU sampling with and without the generator's allocator warm-up, each trial in a fresh process.

`MetaGANGenerator`'s CPU inference path calls `metagan_hub.models.layers.warm_up_cpu_allocator()` once per process:
it frees one untouched 30 MiB block, which raises glibc malloc's mmap and trim thresholds, so the feature maps freed
after each chunk are reused instead of being handed back to the system and faulted in again. This benchmark measures
what that buys a user who loads a pipeline and samples: every trial is a new Python process that loads the pipeline,
generates one untimed chunk, then `--num_images` images (`output_type="pt"`, `--chunk_size` images per generator
call) and reports the seconds and the minor page faults (`getrusage`) of that call. "warm-up" is the library as
shipped; "no warm-up" marks the warm-up as done before the first call, which is what sampling did before it existed.
The two alternate, `--trials` each, so slow phases of a shared machine hit both; the table gives the median (min-max)
and the ratio of the medians.

    python scripts/benchmark_allocator.py                      # the variety checkpoint, 1,000 images, 5 trials each
    python scripts/benchmark_allocator.py --quick              # a tiny random generator, for a smoke test

The header names the CPU capability, the C library and the threads: the effect is glibc's, other C libraries keep
their own policy (and where `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` is set, glibc ignores the warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_utils import cpu_name, run_fresh_process  # noqa: E402

DEFAULT_CHECKPOINT = "checkpoints/metagan-kanji-32-variety"
MODES = ("warm-up", "no warm-up")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained_model_name_or_path", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--chunk_size", type=int, default=64)
    parser.add_argument("--trials", type=int, default=5, help="fresh processes per setting, alternating")
    parser.add_argument("--num_threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a tiny random generator, 2 trials of 128 images")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("num_images", "chunk_size", "trials", "num_threads"):
        value = getattr(args, name)
        if value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}.")
    if args.quick:
        args.num_images, args.trials = min(args.num_images, 128), min(args.trials, 2)
    return args


def child(args: argparse.Namespace) -> dict[str, float]:
    """One trial in this (fresh) process: load, one untimed chunk, then the timed call."""
    import resource

    from metagan_hub import MetaGANGenerator, MetaGANPipeline
    from metagan_hub.models import layers

    torch.set_num_threads(args.num_threads)
    if args.child == "no warm-up":
        layers._allocator_warmed_up = True  # as if already done: the first call skips it
    if args.quick:
        generator = MetaGANGenerator(latent_dim=32, sample_size=32, block_out_channels=(64, 32, 16))
        pipe = MetaGANPipeline(generator=generator.eval())
    else:
        pipe = MetaGANPipeline.from_pretrained(args.pretrained_model_name_or_path)
    pipe.set_progress_bar_config(disable=True)
    latent_dim = pipe.generator.config.latent_dim
    latents = torch.randn(args.num_images, latent_dim, generator=torch.Generator().manual_seed(0))
    pipe(batch_size=args.chunk_size, latents=latents[: args.chunk_size], output_type="pt")  # untimed first chunk
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    pipe(batch_size=args.num_images, latents=latents, chunk_size=args.chunk_size, output_type="pt")
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    chunks = -(-args.num_images // args.chunk_size)
    return {"seconds_per_1000": seconds * 1000 / args.num_images, "faults_per_chunk": faults / chunks}


def run_trial(args: argparse.Namespace, mode: str) -> dict[str, float]:
    command = [sys.executable, os.path.abspath(__file__), "--child", mode]
    for name in ("pretrained_model_name_or_path", "num_images", "chunk_size", "num_threads"):
        command += [f"--{name}", str(getattr(args, name))]
    if args.quick:
        command.append("--quick")
    return run_fresh_process(command, f"the {mode!r} trial").json()


def table(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> str:
    libc = " ".join(platform.libc_ver()) or "unknown"
    model = "tiny random generator" if args.quick else args.pretrained_model_name_or_path
    lines = [
        f"### Sampling in fresh processes (CPU capability {torch.backends.cpu.get_cpu_capability()}, oneDNN ISA cap "
        f"{os.environ.get('ONEDNN_MAX_CPU_ISA', 'none')}, {cpu_name()}, "
        f"C library {libc}, {args.num_threads} thread(s); {args.num_images} images in chunks of {args.chunk_size}, "
        f"{args.trials} trials each, alternating; {model})",
        "",
        "| setting | s / 1k images, median (min-max) | minor page faults per chunk, median | time ÷ warm-up's |",
        "|---|---|---|---|",
    ]
    base = statistics.median(r["seconds_per_1000"] for r in results[MODES[0]])
    for mode in MODES:
        seconds = [r["seconds_per_1000"] for r in results[mode]]
        faults = statistics.median(r["faults_per_chunk"] for r in results[mode])
        median = statistics.median(seconds)
        lines.append(
            f"| {mode} | {median:.3f} ({min(seconds):.3f}-{max(seconds):.3f}) | {faults:,.0f} | {median / base:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for trial in range(args.trials):
        for mode in MODES if trial % 2 == 0 else MODES[::-1]:
            results[mode].append(run_trial(args, mode))
    print(table(args, results))
    return results


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.child:
        print(json.dumps(child(parsed)))
    else:
        main(parsed)
