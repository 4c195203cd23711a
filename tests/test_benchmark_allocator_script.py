"""`scripts/benchmark_allocator.py`: a quick run in fresh processes prints both settings; bad counts are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "benchmark_allocator.py"


def test_quick_run_times_both_settings_in_fresh_processes():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--trials", "1", "--num_images", "64", "--chunk_size", "32"],
        capture_output=True, text=True, check=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert "CPU capability" in out.stdout and "C library" in out.stdout
    lines = out.stdout.splitlines()
    rows = [line.split("|") for line in lines if line.startswith(("| warm-up", "| no warm-up"))]
    assert [r[1].strip() for r in rows] == ["warm-up", "no warm-up"]
    assert rows[0][4].strip() == "1.00x"  # the ratio column is relative to the warm-up's median
    for row in rows:
        assert float(row[2].split()[0]) > 0


@pytest.mark.parametrize("argument", ["--trials", "--num_images", "--chunk_size"])
def test_non_positive_counts_are_refused_naming_the_argument(argument):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", argument, "0"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and f"{argument} must be a positive integer, got 0" in out.stderr
