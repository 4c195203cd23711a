"""The web app in a real browser: headless Debian Chromium (driven by Selenium through chromedriver) uploads 5 images,
adapts a few steps, and sees the requested number of samples in the gallery; the page renders and works with no
request to any host but the app's. Skips when Gradio, Selenium, Chromium or chromedriver are missing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import benchmark_app  # noqa: E402

_missing = [
    name
    for name, ok in (
        ("gradio (pip install -e '.[app]')", importlib.util.find_spec("gradio") is not None),
        ("selenium (pip install selenium)", importlib.util.find_spec("selenium") is not None),
        (
            f"Chromium at {benchmark_app.CHROMIUM} (apt-get install chromium)",
            os.access(benchmark_app.CHROMIUM, os.X_OK),
        ),
        (
            f"chromedriver at {benchmark_app.CHROMEDRIVER} (apt-get install chromium-driver)",
            os.access(benchmark_app.CHROMEDRIVER, os.X_OK),
        ),
    )
    if not ok
]
pytestmark = [
    pytest.mark.slow,  # starts the app (imports Gradio, torch and diffusers) and a browser: about a minute
    pytest.mark.skipif(bool(_missing), reason=f"browser test needs {', '.join(_missing)}"),
]

NUM_SAMPLES = 12
STEPS = 5


def test_upload_adapt_gallery_in_chromium(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    rng = np.random.default_rng(0)
    files = []
    for i in range(5):  # five different sizes and modes, as a user's files would be
        array = rng.integers(0, 256, size=(40 + 8 * i, 48, 3), dtype=np.uint8)
        path = shots / f"shot_{i}.png"
        Image.fromarray(array, mode="RGB").convert("L" if i % 2 else "RGB").save(path)
        files.append(str(path))
    port = benchmark_app.free_port()
    app = benchmark_app.start_app(None, port, tmp_path / "app.log")  # the bundled checkpoint
    driver = None
    try:
        driver = benchmark_app.make_driver(tmp_path / "profile")
        benchmark_app.open_page(driver, f"http://127.0.0.1:{port}/")
        out = benchmark_app.adapt_in_page(driver, files, STEPS, NUM_SAMPLES, timeout=300)
        assert out["images"] == NUM_SAMPLES
        final_status = out["status"][-1][1]
        assert final_status.startswith("Adapted to 5 image(s)") and f"{STEPS} steps" in final_status
        screenshot = tmp_path / "app.png"
        driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        keep = os.environ.get("METAGAN_TEST_OUTPUT_DIR")  # e.g. CI artifacts
        if keep:
            os.makedirs(keep, exist_ok=True)
            shutil.copy(screenshot, os.path.join(keep, "app_after_adapt.png"))
        print(f"click to gallery: {out['seconds']:.2f} s; screenshot {screenshot}")
        # offline: nothing but the app itself was contacted (no CDN fonts, scripts or analytics)
        assert benchmark_app.external_requests(driver) == []
        # a misuse in the page: Adapt with 11 files gives a visible message and the app keeps serving
        more = files + [str(p) for p in _copies(files, tmp_path / "more", 6)]
        driver.refresh()
        benchmark_app.open_page(driver, f"http://127.0.0.1:{port}/")
        with pytest.raises(RuntimeError, match="11 images"):
            benchmark_app.adapt_in_page(driver, more, STEPS, NUM_SAMPLES, timeout=120)
        assert app.poll() is None
    finally:
        if driver is not None:
            driver.quit()
        benchmark_app.stop_app(app)
    log = (tmp_path / "app.log").read_text(encoding="utf-8")
    assert "Traceback" not in log, log[-3000:]


def _copies(files: list[str], folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    out = []
    for i in range(n):
        target = folder / f"extra_{i}.png"
        shutil.copy(files[i % len(files)], target)
        out.append(target)
    return out
