# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Helpers shared by the benchmark scripts (run them from the repository as `python scripts/benchmark_*.py`)."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or what `platform` knows elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
