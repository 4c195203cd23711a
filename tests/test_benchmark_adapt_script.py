"""`scripts/benchmark_adapt.py`: a 2-step smoke run of two configurations in fresh processes prints the table; bad
arguments are refused before any configuration runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.testing_utils import load_script

REPO = Path(__file__).resolve().parents[1]
adapt_script = load_script("benchmark_adapt", REPO / "scripts" / "benchmark_adapt.py")


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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--threads", "-2"], "--threads must be >= 1, got -2"),
        (["--batch_size", "0"], "--batch_size must be >= 1, got 0"),
        (["--batch_size", "-1"], "--batch_size must be >= 1, got -1"),
        (["--device", "bogus"], "--device must be 'cpu', 'cuda' or 'cuda:N', got 'bogus'"),
        (["--device", "cuda:x"], "--device must be 'cpu', 'cuda' or 'cuda:N', got 'cuda:x'"),
        (["--device", "cuda:99"], "--device 'cuda:99' asks for a CUDA device, but torch sees"),
        (["--json", "{tmp}/no-such-dir/x.json"], "--json '{tmp}/no-such-dir/x.json': its folder '{tmp}/no-such-dir'"),
        (["--json", "{tmp}"], "--json '{tmp}' is a folder"),
    ],
)
def test_bad_arguments_exit_before_any_configuration_runs(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        adapt_script.parse_args([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exit_.value.code == 2 and message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where torch sees no CUDA device")
def test_cuda_without_a_gpu_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        adapt_script.parse_args(["--device", "cuda"])
    assert (
        exit_.value.code == 2 and "--device 'cuda' asks for a CUDA device, but torch sees 0" in capsys.readouterr().err
    )
