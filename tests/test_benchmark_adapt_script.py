"""`scripts/benchmark_adapt.py`: a 2-step smoke run of two configurations in fresh processes prints the table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_two_step_run_prints_table_with_freezed_column_and_targets(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark_adapt.py"), "--steps", "2", "--threads", "1",
         "--configs", "bf16-full,bf16-f0", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    table = [line for line in out.stdout.splitlines() if line.startswith("| bf16")]
    assert [line.split("|")[1].strip() for line in table] == ["bf16-full", "bf16-f0"]
    # batch, R1 interval and FreezeD columns: the default freezes one block, bf16-f0 none
    assert [[c.strip() for c in line.split("|")[2:5]] for line in table] == [["4", "4", "1"], ["4", "4", "0"]]
    assert "this run used 2" in out.stdout and "round 1/1 bf16-f0" in out.stderr
    assert (tmp_path / "r.json").exists()


def test_onednn_isa_cap_is_named_and_auto_takes_fp32(tmp_path):
    # capped below oneDNN's bf16 instructions, any CPU emulates bf16: "auto" must run in fp32 and the header says why
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark_adapt.py"), "--steps", "2", "--threads", "1",
         "--configs", "auto-full"],
        capture_output=True, text=True, check=True, timeout=600, env=env,
    )  # fmt: skip
    assert "(oneDNN capped at AVX2); native bf16 on cpu: no (bf16 is emulated)" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("| auto-full"))
    assert row.rstrip(" |").endswith("auto -> fp32")
