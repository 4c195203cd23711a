# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Benchmark of the kanjivg data source: cold render speed, warm-cache load time and memory.

```bash
python scripts/benchmark_data.py                      # 6,000 classes x 20 samples at 32x32 (about 1-2 minutes)
python scripts/benchmark_data.py --classes 500        # quick look
```

Targets (issue "Class-structured image data"): >= 1,000 glyphs/s cold on 2 cores, warm load of 6,000 x 20 at 32x32
in < 5 s, <= 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_utils import run_fresh_process  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=6000, help="kanjivg classes to render and load")
    parser.add_argument("--samples_per_class", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=None, help="render processes (default: all CPUs)")
    parser.add_argument("--cache_dir", default=None, help="cache folder (default: a fresh temporary folder)")
    parser.add_argument("--json", default=None, help="also append the results as a JSON line to this file")
    return parser.parse_args(argv)


_WARM = textwrap.dedent(
    """
    import json, os, sys, time
    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    from metagan_hub.data import KanjiVGDataset
    from metagan_hub.training.tasks import TaskSampler
    before = rss_mib()
    t0 = time.perf_counter()
    ds = KanjiVGDataset(resolution={resolution}, samples_per_class={samples}, max_classes={classes},
                        cache_dir={cache_dir!r}).load()
    seconds = time.perf_counter() - t0
    after = rss_mib()
    sampler = TaskSampler(ds, shots=5, queries=5, seed=0)
    sampler.sample_batch(10)
    t0 = time.perf_counter()
    sampler.sample_batch(500)
    tasks_per_s = 500 / (time.perf_counter() - t0)
    print(json.dumps({{"warm_load_s": seconds, "storage_mib": ds.nbytes / 2**20, "rss_increase_mib": after - before,
                      "tasks_per_s": tasks_per_s, "num_images": int(ds.storage.shape[0])}}))
    """
)


def main(args):
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="metagan_bench_") as tmp:
        cache_dir = args.cache_dir or tmp
        from metagan_hub.data import KanjiVGDataset

        # 1. cold: render everything into an empty cache (includes SVG parsing and writing the cache file)
        ds = KanjiVGDataset(
            resolution=args.resolution,
            samples_per_class=args.samples_per_class,
            max_classes=args.classes,
            cache_dir=cache_dir,
            num_workers=args.num_workers,
        )
        if ds.cache_path.exists():
            os.remove(ds.cache_path)
        t0 = time.perf_counter()
        ds.load()
        cold_s = time.perf_counter() - t0
        glyphs = ds.storage.shape[0]
        del ds

        # 2. warm: a fresh process loads the cached array (and samples some tasks)
        code = _WARM.format(
            resolution=args.resolution, samples=args.samples_per_class, classes=args.classes, cache_dir=str(cache_dir)
        )
        warm = run_fresh_process([sys.executable, "-c", code], "the warm-cache load").json()

    res = f"{args.resolution}x{args.resolution}"
    rows = [
        ("CPUs", f"{cpus}", ""),
        ("classes x samples", f"{args.classes} x {args.samples_per_class} at {res}", f"{glyphs} glyphs"),
        ("cold render", f"{glyphs / cold_s:,.0f} glyphs/s", f"{cold_s:.1f} s, target >= 1,000 glyphs/s"),
        ("warm-cache load", f"{warm['warm_load_s']:.2f} s", "target < 5 s"),
        ("image storage (uint8)", f"{warm['storage_mib']:.1f} MiB", "target <= 1024 MiB"),
        ("process memory increase", f"{warm['rss_increase_mib']:.1f} MiB", "RSS after load - before"),
        ("task sampling (K=5, Q=5)", f"{warm['tasks_per_s']:,.0f} tasks/s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<{value_width}}  note")
    print(f"{'-' * width}  {'-' * value_width}  ----")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {note}")
    if args.json:
        record = {"cpus": cpus, "classes": args.classes, "samples_per_class": args.samples_per_class,
                  "resolution": args.resolution, "cold_glyphs_per_s": glyphs / cold_s, **warm}  # fmt: skip
        with open(args.json, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main(parse_args())
