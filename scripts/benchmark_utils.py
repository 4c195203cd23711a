# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Helpers shared by the benchmark scripts (run them from the repository as `python scripts/benchmark_*.py`)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


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


@dataclass
class FreshProcess:
    """What [`run_fresh_process`] measured of one child process."""

    stdout: str
    wall_s: float
    peak_rss_bytes: int

    def last_line(self, prefix: str = "") -> str:
        """The last non-blank line of stdout that starts with `prefix`, without it."""
        for line in reversed(self.stdout.splitlines()):
            if line.strip() and line.startswith(prefix):
                return line[len(prefix) :]
        raise RuntimeError(
            f"the child printed no line starting with {prefix!r}; its output ends:\n{self.stdout[-2000:]}"
        )

    def json(self, prefix: str = "") -> Any:
        """The last line of stdout that starts with `prefix`, read as JSON."""
        return json.loads(self.last_line(prefix))


def run_fresh_process(
    command: Sequence[str], what: str, env: Mapping[str, str] | None = None, timeout: float | None = None
) -> FreshProcess:
    """
    Run `command` (e.g. `[sys.executable, script, ...]`) in a fresh process, so that a measurement includes what a
    user pays in a new process (imports, first calls, the allocator's state). Returns its stdout, the wall time of
    the whole process and its peak RSS as the kernel reports it for that child alone (`os.wait4`). On Linux that peak
    is at least this process's own RSS when it started the child (the high-water mark survives the `exec`), so keep
    the parent small (import torch in the children only) when the children's memory is what is measured. Its stderr
    goes to a temporary file, so a chatty child never blocks on a full pipe; if it fails (or runs past `timeout`
    seconds and is killed), `RuntimeError` names `what`, the exit code and the end of its stderr.

    Example:

    ```py
    >>> import sys
    >>> run_fresh_process([sys.executable, "-c", "print('RESULT 42')"], "a child").json("RESULT ")
    42
    ```
    """
    with tempfile.TemporaryFile(mode="w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        timer = threading.Timer(timeout, proc.kill) if timeout is not None else None
        if timer is not None:
            timer.start()
        try:
            out = proc.stdout.read()
            proc.stdout.close()
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
        finally:
            if timer is not None:
                timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall_s = time.perf_counter() - start
        if proc.returncode != 0:
            err.seek(0)
            late = f" (killed after the {timeout:g} s timeout)" if timer is not None and wall_s >= timeout else ""
            raise RuntimeError(f"{what} failed (exit {proc.returncode}){late}:\n{err.read()[-4000:]}")
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return FreshProcess(stdout=out, wall_s=wall_s, peak_rss_bytes=peak)
