#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Benchmark of the web app (`scripts/demo_app.py`): time from pressing Adapt to the first gallery, how often the page
gets progress updates, and the app's memory (RSS) over many adaptations in a row.

    python scripts/benchmark_app.py                       # in-process: the app's logic, 5 shots x 100 steps, 20 runs
    python scripts/benchmark_app.py --browser --runs 3    # end to end: the real page in headless Chromium

In-process mode times `demo_app.adaptation_updates` (what the Adapt button runs: checks, adaptation, 16 samples) and
reads the process's RSS after each run. Browser mode starts the app in a subprocess on 127.0.0.1, uploads the shots in
headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium), clicks Adapt, and times the click to
the moment the gallery shows all samples; it records every change of the status line (the progress updates) and the
app process's RSS after each run. The shots are renders of the checkpoint's first held-out kanji (as in
`scripts/demo_adapt.py`). The header names the CPU capability (`torch.backends.cpu.get_cpu_capability()`).

The browser helpers here (`start_app`, `make_driver`, `adapt_in_page`, `external_requests`) are also used by
`tests/app/test_browser.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1800",
)


def rss_mib(pid: int | None = None) -> float:
    """Resident set size of a process (this one by default) in MiB, from /proc (Linux)."""
    with open(f"/proc/{pid or 'self'}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(model: str | None, port: int, log_path: str | os.PathLike, timeout: float = 600) -> subprocess.Popen:
    """Start `scripts/demo_app.py` on 127.0.0.1:`port` and wait until it serves its page."""
    cmd = [sys.executable, str(HERE / "demo_app.py"), "--host", "127.0.0.1", "--port", str(port)]
    if model:
        cmd += ["--model", model]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed with the process by the caller's cleanup
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                if response.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(1)
    proc.kill()
    raise TimeoutError(f"the app did not serve its page within {timeout} s; see {log_path}")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def make_driver(user_data_dir: str | os.PathLike):
    """Headless Debian Chromium via chromedriver, a fresh profile, network logging (for `external_requests`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def external_requests(driver, allowed_host: str = "127.0.0.1") -> list[str]:
    """The http(s)/ws(s) requests the page made to any host but `allowed_host` (offline means: none)."""
    from urllib.parse import urlparse

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            url = message["params"].get("request", {}).get("url") or message["params"].get("url", "")
            parsed = urlparse(url)
            if parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname != allowed_host:
                urls.append(url)
    return urls


def _set_number(driver, elem_id: str, value: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def open_page(driver, url: str, timeout: float = 120) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    deadline = time.monotonic() + timeout
    while not driver.find_elements(By.ID, "adapt"):
        if time.monotonic() > deadline:
            raise TimeoutError("the page did not render its Adapt button")
        time.sleep(0.2)


def adapt_in_page(
    driver,
    files: list[str],
    steps: int,
    num_samples: int,
    timeout: float = 600,
    upload: bool = True,
    seed: int | None = None,
) -> dict:
    """
    Upload `files`, set steps and samples, click Adapt, and wait for the gallery to show `num_samples` images.

    Returns `{"seconds": click-to-gallery, "status": [(seconds after click, status text), ...], "images": n}`.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    if upload:
        box = driver.find_element(By.CSS_SELECTOR, "#uploads input[type=file]")
        box.send_keys("\n".join(os.path.abspath(f) for f in files))
        deadline = time.monotonic() + 60
        while len(driver.find_elements(By.CSS_SELECTOR, "#uploads tr.file, #uploads tbody tr")) < len(files):
            if time.monotonic() > deadline:
                raise TimeoutError("the uploads did not appear in the file list")
            time.sleep(0.2)
    _set_number(driver, "steps", steps)
    _set_number(driver, "num-samples", num_samples)
    if seed is not None:
        box = driver.find_element(By.CSS_SELECTOR, "#seed input")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(str(seed), Keys.TAB)
    status_box = driver.find_element(By.CSS_SELECTOR, "#status textarea")
    driver.find_element(By.ID, "adapt").click()
    start = time.monotonic()
    changes: list[tuple[float, str]] = []
    last = None
    adapting_seen = False  # an earlier run's "Adapted ..." status and gallery must not count
    while time.monotonic() - start < timeout:
        text = status_box.get_attribute("value")
        if text != last:
            changes.append((round(time.monotonic() - start, 2), text))
            last = text
        adapting_seen = adapting_seen or text.startswith("Adapting")
        loaded = driver.execute_script(
            "return [...document.querySelectorAll('#samples img')].filter(i => i.complete && i.naturalWidth > 0)"
            ".length"
        )
        if adapting_seen and text.startswith("Adapted") and loaded >= num_samples:
            images = driver.find_elements(By.CSS_SELECTOR, "#samples img")
            return {"seconds": time.monotonic() - start, "status": changes, "images": len(images)}
        if text.startswith("⚠"):
            raise RuntimeError(f"the page reported: {text}")
        time.sleep(0.05)
    raise TimeoutError(f"no gallery within {timeout} s; last status {last!r}")


def example_files(model: str, folder: Path) -> list[str]:
    sys.path.insert(0, str(HERE))
    import demo_app

    app = demo_app.DemoApp(model, work_dir=str(folder))
    return app.save_example_files()


def update_gaps(times: list[float]) -> tuple[float, float]:
    """Median and largest gap between consecutive progress updates."""
    gaps = [b - a for a, b in zip(times, times[1:])] or [0.0]
    return statistics.median(gaps), max(gaps)


def run_in_process(args: argparse.Namespace) -> list[dict]:
    sys.path.insert(0, str(HERE))
    import demo_app

    app = demo_app.DemoApp(args.model)
    files = app.save_example_files()
    rows = []
    for i in range(args.runs):
        start = time.perf_counter()
        stamps = []
        last = None
        for update in demo_app.adaptation_updates(
            app, files, args.steps, args.mixed_precision, i, False, args.num_samples
        ):
            stamps.append(time.perf_counter() - start)
            last = update
        if "error" in last:
            raise SystemExit(last["error"])
        median_gap, max_gap = update_gaps(stamps[:-1])
        rows.append(
            {
                "run": i,
                "seconds": time.perf_counter() - start,
                "adapt_s": last["result"].seconds,
                "precision": last["result"].mixed_precision,
                "updates": len(stamps),
                "median_gap": median_gap,
                "max_gap": max_gap,
                "rss_mib": rss_mib(),
            }
        )
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    app.cleanup()
    return rows


def run_browser(args: argparse.Namespace) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="metagan-app-bench-"))
    files = example_files(args.model, work / "shots")
    proc = start_app(args.model, free_port() if args.port == 0 else args.port, work / "app.log")
    port = int(proc.args[proc.args.index("--port") + 1])
    driver = make_driver(work / "profile")
    rows = []
    try:
        open_page(driver, f"http://127.0.0.1:{port}/")
        for i in range(args.runs):
            out = adapt_in_page(driver, files, args.steps, args.num_samples, upload=i == 0, seed=i)
            stamps = [t for t, text in out["status"] if text.startswith("Adapting")]
            median_gap, max_gap = update_gaps(stamps)
            rows.append(
                {
                    "run": i,
                    "seconds": out["seconds"],
                    "updates": len(out["status"]),
                    "median_gap": median_gap,
                    "max_gap": max_gap,
                    "rss_mib": rss_mib(proc.pid),
                    "status": out["status"][-1][1],
                }
            )
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
        if args.screenshot:
            driver.save_screenshot(args.screenshot)
        outside = external_requests(driver)
        print(f"requests to other hosts: {len(outside)} {outside[:5]}")
    finally:
        driver.quit()
        stop_app(proc)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="meta-checkpoint (default: the app's default, auto)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--num_samples", type=int, default=16)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--mixed_precision", default="auto", help="in-process mode only (the page uses its default)")
    parser.add_argument("--browser", action="store_true", help="drive the real page in headless Chromium")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--screenshot", default=None, help="browser mode: save a screenshot here at the end")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import demo_app

    # "auto" (the app's default) resolved here, so that the header names the checkpoint both modes run
    args.model = demo_app.resolve_model(args.model or demo_app.DEFAULT_MODEL)

    import torch

    from metagan_hub.training.gan_step import onednn_isa_cap

    mode = "browser (headless Chromium, app in a subprocess)" if args.browser else "in-process (app logic)"
    isa_cap = onednn_isa_cap()
    header = (
        f"# app benchmark, {mode}: 5 shots, {args.steps} steps, {args.num_samples} samples, {args.runs} runs\n"
        f"# CPU capability {torch.backends.cpu.get_cpu_capability()}"
        + (f" (oneDNN capped at {isa_cap})" if isa_cap else "")
        + f", {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"load average at start {os.getloadavg()[0]:.2f}\n# model {args.model}"
    )
    print(header, flush=True)
    rows = run_browser(args) if args.browser else run_in_process(args)
    print(header)
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    print("| run | click to gallery (s) | progress updates | median gap (s) | largest gap (s) | RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['run']} | {row['seconds']:.2f} | {row['updates']} | {row['median_gap']:.2f} | "
            f"{row['max_gap']:.2f} | {row['rss_mib']:.0f} |"
        )
    seconds = [r["seconds"] for r in rows]
    rss = [r["rss_mib"] for r in rows]
    print(
        f"\nmedian {statistics.median(seconds):.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f}); "
        f"RSS first {rss[0]:.0f} MiB, last {rss[-1]:.0f} MiB, max {max(rss):.0f} MiB"
    )


if __name__ == "__main__":
    main()
