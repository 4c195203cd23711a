"""`scripts/benchmark_utils.py`: the fresh-process runner the benchmark scripts share (results, peak memory, clear
failures, a timeout) and the CPU name in their headers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.testing_utils import load_script

benchmark_utils = load_script(
    "benchmark_utils", Path(__file__).resolve().parents[1] / "scripts" / "benchmark_utils.py"
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_fresh_process_returns_its_last_result_line_wall_time_and_peak_memory():
    code = "import json; print('noise'); print('RESULT ' + json.dumps({'x': 1})); print('after'); print()"
    child = benchmark_utils.run_fresh_process(python(code), "the child")
    assert child.json("RESULT ") == {"x": 1}
    assert child.last_line() == "after"  # the last non-blank line
    assert child.wall_s > 0
    code = "b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096]); print(len(b))"  # every page touched
    big = benchmark_utils.run_fresh_process(python(code), "the big child")
    assert big.last_line() == str(400 * 2**20) and big.peak_rss_bytes > 400 * 2**20


def test_a_failing_child_names_itself_its_exit_code_and_its_stderr():
    code = "import sys; sys.stderr.write('x' * 2**20 + 'the real reason'); sys.exit(3)"  # more than a pipe holds
    with pytest.raises(RuntimeError, match=r"(?s)the warm-up trial failed \(exit 3\):.*the real reason"):
        benchmark_utils.run_fresh_process(python(code), "the warm-up trial")


def test_a_child_past_its_timeout_is_killed_and_said_so():
    with pytest.raises(RuntimeError, match=r"killed after the 0.5 s timeout"):
        benchmark_utils.run_fresh_process(python("import time; time.sleep(60)"), "the sleeper", timeout=0.5)


def test_a_missing_result_line_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no line starting with 'RESULT '"):
        benchmark_utils.run_fresh_process(python("print('done')"), "the child").json("RESULT ")


def test_cpu_name_is_not_empty():
    assert benchmark_utils.cpu_name()
