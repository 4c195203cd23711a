#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Benchmark meta-training: tasks/s with 1 vs N CPU processes, and peak memory vs `inner_steps`.

    python scripts/benchmark_meta_training.py                       # both tables, 32x32 defaults
    python scripts/benchmark_meta_training.py --only throughput --configs 1x1 1x2 2x1 --meta_steps 6
    python scripts/benchmark_meta_training.py --only memory --inner_steps_list 1 5 10 20 40

Throughput: every configuration runs in fresh processes started with `torch.distributed.run` (gloo on CPU via
`ACCELERATE_USE_CPU=true`), meta-trains a Meta-GAN on synthetic tasks with `MetaLearner` for `--meta_steps` timed
meta steps after one warm-up step, with `--meta_batch_size` tasks per meta step over all processes, and reports
tasks/s. `--threads` sets the torch threads of each process (default: cores / processes).

Memory: every `inner_steps` value runs in a fresh process that makes one warm-up meta step with `inner_steps=1`
and then one with the value; the table shows the process's peak RSS (`ru_maxrss`) and its growth over the warm-up
peak. First-order methods keep no graph across inner steps, so the growth should stay flat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_utils import run_fresh_process  # noqa: E402


def _worker_models(args: argparse.Namespace):
    from metagan_hub import MetaGANDiscriminator, MetaGANGenerator

    torch.manual_seed(0)
    channels = tuple(args.block_out_channels)
    g = MetaGANGenerator(latent_dim=args.latent_dim, sample_size=args.resolution, block_out_channels=channels)
    d = MetaGANDiscriminator(sample_size=args.resolution, block_out_channels=tuple(reversed(channels)))
    return g, d


def _tasks(n: int, args: argparse.Namespace, seed: int):
    from metagan_hub.training.tasks import Task

    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        images = torch.rand(args.shots + args.queries, 1, args.resolution, args.resolution, generator=gen) * 2 - 1
        out.append(Task(class_index=i, support=images[: args.shots], query=images[args.shots :]))
    return out


def _config(args: argparse.Namespace, inner_steps: int):
    from metagan_hub.training.meta_learning import MetaLearningConfig

    return MetaLearningConfig(
        algorithm=args.algorithm,
        inner_steps=inner_steps,
        inner_batch_size=args.inner_batch_size,
        mixed_precision=args.mixed_precision,
    )


def worker_throughput(args: argparse.Namespace) -> None:
    from accelerate import Accelerator

    from metagan_hub.training.meta_learning import MetaLearner

    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = Accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    per_process = args.meta_batch_size // world
    g, d = _worker_models(args)
    learner = MetaLearner(g, d, _config(args, args.inner_steps), accelerator=accelerator)
    for step in range(args.meta_steps + 1):
        if step == 1:  # step 0 is the warm-up
            accelerator.wait_for_everyone()
            start, cpu_start = time.perf_counter(), time.process_time()
        tasks = _tasks(args.meta_batch_size, args, seed=step)
        learner.meta_step(tasks[rank * per_process : (rank + 1) * per_process], step=step)
    cpu = torch.tensor([time.process_time() - cpu_start], dtype=torch.float64)
    accelerator.wait_for_everyone()
    elapsed = time.perf_counter() - start
    cpu_total = float(accelerator.reduce(cpu, reduction="sum").item()) if world > 1 else float(cpu.item())
    if accelerator.is_main_process:
        with open(args.result_file, "w") as f:
            tasks_done = args.meta_steps * args.meta_batch_size
            json.dump({"seconds": elapsed, "tasks": tasks_done, "cpu_s_per_task": cpu_total / tasks_done}, f)
    accelerator.end_training()


def worker_memory(args: argparse.Namespace) -> None:
    from metagan_hub.training.meta_learning import MetaLearner

    if args.threads:
        torch.set_num_threads(args.threads)
    g, d = _worker_models(args)
    tasks = _tasks(args.meta_batch_size, args, seed=0)
    MetaLearner(g, d, _config(args, 1)).meta_step(tasks, step=0)
    warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (ru_maxrss is KiB on Linux)
    start = time.perf_counter()
    MetaLearner(g, d, _config(args, args.inner_steps)).meta_step(tasks, step=1)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(args.result_file, "w") as f:
        json.dump({"warm_mib": warm, "peak_mib": peak, "seconds": elapsed}, f)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _common(args: argparse.Namespace) -> list[str]:
    return [
        "--resolution", str(args.resolution), "--latent_dim", str(args.latent_dim),
        "--block_out_channels", *map(str, args.block_out_channels), "--algorithm", args.algorithm,
        "--meta_batch_size", str(args.meta_batch_size), "--shots", str(args.shots), "--queries", str(args.queries),
        "--inner_batch_size", str(args.inner_batch_size), "--mixed_precision", args.mixed_precision,
    ]  # fmt: skip


def _run(cmd: list[str], env: dict[str, str], result_file: str) -> dict:
    run_fresh_process(cmd, "the benchmark worker", env=env)
    with open(result_file) as f:
        return json.load(f)


def throughput(args: argparse.Namespace) -> list[dict]:
    rows = []
    for spec in args.configs:
        n, threads = (int(v) for v in spec.lower().split("x"))
        if args.meta_batch_size % n:
            raise ValueError(f"--meta_batch_size {args.meta_batch_size} must be divisible by {n} processes.")
        with tempfile.TemporaryDirectory() as tmp:
            result_file = os.path.join(tmp, "result.json")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n)]
            cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__]
            cmd += ["--worker", "throughput", "--result_file", result_file, "--threads", str(threads)]
            cmd += ["--inner_steps", str(args.inner_steps), "--meta_steps", str(args.meta_steps), *_common(args)]
            # CUDA hidden: Accelerate's barrier names each rank's GPU even for gloo on CPU, so rank r would touch
            # GPU r on a GPU machine (and fail where it has fewer GPUs than processes)
            env = {
                **os.environ,
                "ACCELERATE_USE_CPU": "true",
                "OMP_NUM_THREADS": str(threads),
                "CUDA_VISIBLE_DEVICES": "",
            }
            out = _run(cmd, env, result_file)
        rows.append({"processes": n, "threads_each": threads, "tasks_per_s": out["tasks"] / out["seconds"], **out})
    return rows


def memory(args: argparse.Namespace) -> list[dict]:
    rows = []
    for k in args.inner_steps_list:
        with tempfile.TemporaryDirectory() as tmp:
            result_file = os.path.join(tmp, "result.json")
            cmd = [sys.executable, __file__, "--worker", "memory", "--result_file", result_file]
            cmd += ["--inner_steps", str(k), "--threads", str(args.threads or 0), *_common(args)]
            out = _run(cmd, dict(os.environ), result_file)
        rows.append({"inner_steps": k, **out, "growth_mib": out["peak_mib"] - out["warm_mib"]})
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["throughput", "memory"], default=None)
    parser.add_argument(
        "--configs", nargs="+", default=["1x1", "1x2", "2x1"], help="PxT: P processes with T torch threads each"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the memory runs")
    parser.add_argument("--inner_steps_list", type=int, nargs="+", default=[1, 5, 10, 20, 40])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--latent_dim", type=int, default=64)
    parser.add_argument("--block_out_channels", type=int, nargs="+", default=[64, 32, 16])
    parser.add_argument("--algorithm", default="reptile", choices=["reptile", "fomaml", "pretrain"])
    parser.add_argument("--meta_batch_size", type=int, default=4)
    parser.add_argument("--meta_steps", type=int, default=5)
    parser.add_argument("--inner_steps", type=int, default=5)
    parser.add_argument("--inner_batch_size", type=int, default=8)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--worker", choices=["throughput", "memory"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result_file", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    if args.worker == "throughput":
        return worker_throughput(args)
    if args.worker == "memory":
        return worker_memory(args)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# {args.resolution}x{args.resolution}, G/D widths {args.block_out_channels}, latent {args.latent_dim}, "
        f"{args.algorithm}, {args.meta_batch_size} tasks/meta step, inner batch {args.inner_batch_size}, "
        f"{args.mixed_precision} precision; {os.cpu_count()} cores, load average {load:.2f} at start"
    )
    if args.only in (None, "throughput"):
        print(f"\n## throughput ({args.inner_steps} inner steps, {args.meta_steps} timed meta steps)\n")
        print("| processes | threads each | tasks/s | seconds | vs. first row | CPU s / task |")
        print("|---|---|---|---|---|---|")
        rows = throughput(args)
        for row in rows:
            speedup = row["tasks_per_s"] / rows[0]["tasks_per_s"]
            print(
                f"| {row['processes']} | {row['threads_each']} | {row['tasks_per_s']:.2f} | {row['seconds']:.1f} | "
                f"{speedup:.2f}x | {row['cpu_s_per_task']:.3f} |"
            )
    if args.only in (None, "memory"):
        print(f"\n## peak RSS vs inner_steps ({args.algorithm}, one process)\n")
        print("| inner_steps | peak RSS (MiB) | growth over warm-up (MiB) | meta step (s) |")
        print("|---|---|---|---|")
        for row in memory(args):
            print(f"| {row['inner_steps']} | {row['peak_mib']:.0f} | {row['growth_mib']:.1f} | {row['seconds']:.2f} |")


if __name__ == "__main__":
    main(parse_args())
