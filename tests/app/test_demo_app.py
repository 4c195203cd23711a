"""The web app's logic (`scripts/demo_app.py`) without a browser or Gradio: every misuse gives a message (never a
traceback) and the app keeps serving; adaptation, samples, downloads and the Hub push work on a tiny model."""

from __future__ import annotations

import importlib.metadata
import logging
import struct
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metagan_hub import MetaGANPipeline
from tests.testing_utils import pretend_copy_stop, record_adapt_calls, tiny_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import demo_app  # noqa: E402
from demo_app import AppError, BusyError, DemoApp, adaptation_updates  # noqa: E402

SIZE = 16
VARIETY = {"shot_augment": 0.5, "latent_scale": 1.25}  # the tiny model card's variety setting


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo_app_model")
    pipe = tiny_pipeline(0)
    pipe.card_info["variety_setting"] = VARIETY
    pipe.save_pretrained(root / "base")
    return root / "base"


@pytest.fixture
def app(tiny_model, tmp_path) -> DemoApp:
    return DemoApp(str(tiny_model), work_dir=str(tmp_path / "work"))


def write_pngs(folder: Path, n: int, size: tuple[int, int] = (24, 20)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"shot_{i}.png"
        Image.fromarray(rng.integers(0, 256, size=size[::-1], dtype=np.uint8), mode="L").save(path)
        paths.append(str(path))
    return paths


def png_header_only(path: Path, width: int, height: int) -> str:
    """A PNG whose header claims `width` x `height` pixels but holds no pixel data: refusing it must not decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return str(path)


def final(updates) -> dict:
    updates = list(updates)
    assert updates, "no page update"
    return updates[-1]


def test_no_images(app):
    for files in (None, []):
        with pytest.raises(AppError, match="No images"):
            app.load_shots(files)
        assert "No images" in final(adaptation_updates(app, files, 2, "no", 0, False, 4))["error"]


def test_too_many_images(app, tmp_path):
    files = write_pngs(tmp_path / "many", 11)
    update = final(adaptation_updates(app, files, 2, "no", 0, False, 4))
    assert "11 images" in update["error"] and "at most 10" in update["error"]
    assert len(app.load_shots(files[:10])) == 10  # the limit itself is fine


def test_non_image_upload(app, tmp_path):
    files = write_pngs(tmp_path / "mixed", 2)
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image")
    update = final(adaptation_updates(app, files + [str(fake)], 2, "no", 0, False, 4))
    assert "notes.png" in update["error"] and "not an image" in update["error"]
    assert "Traceback" not in update["error"]


@pytest.mark.parametrize("side", [5000, 20000])
def test_huge_image_refused_from_its_header(app, tmp_path, side):
    # 5000 x 5000 passes Pillow's own bomb limit and is refused by the app's limit; 20,000 x 20,000 trips Pillow's
    # DecompressionBombError at open. Neither may reach decoding: the file has no pixel data, so decoding would fail
    # with a different (truncation) message.
    path = png_header_only(tmp_path / f"huge_{side}.png", side, side)
    update = final(adaptation_updates(app, [path], 2, "no", 0, False, 4))
    assert f"huge_{side}.png" in update["error"]
    assert "too large" in update["error"]


def test_unsupported_mode_and_settings_messages(app, tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((8, 8), dtype=np.float32), mode="F").save(path)
    assert "float.tif" in final(adaptation_updates(app, [str(path)], 2, "no", 0, False, 4))["error"]
    files = write_pngs(tmp_path / "ok", 2)
    assert "Steps" in final(adaptation_updates(app, files, 0, "no", 0, False, 4))["error"]
    assert "Steps" in final(adaptation_updates(app, files, 2.5, "no", 0, False, 4))["error"]
    assert "Precision" in final(adaptation_updates(app, files, 2, "fp8", 0, False, 4))["error"]
    assert "Seed" in final(adaptation_updates(app, files, 2, "no", "abc", False, 4))["error"]


def test_adapt_samples_and_download(app, tmp_path):
    files = write_pngs(tmp_path / "shots", 5)
    updates = list(adaptation_updates(app, files, 6, "no", 3, False, 7, poll_seconds=0.01))
    last = updates[-1]
    assert "error" not in last, last
    assert len(last["samples"]) == 7 and all(isinstance(i, Image.Image) for i in last["samples"])
    assert len(last["losses"]) == 6 and last["progress"] == (6, 6)
    result = last["result"]
    assert len(result.shots) == 5 and result.mixed_precision == "no" and result.sample_seed == 3
    # "more samples": another seed gives other images, the same seed the same ones (same object twice: bitwise)
    a, b, c = app.samples(result, 4, 0), app.samples(result, 4, 0), app.samples(result, 4, 1)
    assert [np.asarray(i).tobytes() for i in a] == [np.asarray(i).tobytes() for i in b]
    assert [np.asarray(i).tobytes() for i in a] != [np.asarray(i).tobytes() for i in c]
    with pytest.raises(AppError, match="Number of samples"):
        app.samples(result, 0, 0)
    # the pipeline download is a zip of a loadable safetensors folder
    zip_path = Path(app.export_pipeline(result))
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "unzipped")
    assert {"model_index.json", "README.md", "generator/diffusion_pytorch_model.safetensors"} <= names
    assert {"shots.png", "samples.png"} <= names  # shown in the card
    card = (tmp_path / "unzipped" / "README.md").read_text(encoding="utf-8")
    assert "![shots.png](shots.png)" in card and "![samples.png](samples.png)" in card
    assert Image.open(tmp_path / "unzipped" / "samples.png").size == (8 * 128, 2 * 128)  # 16 enlarged samples
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    loaded = MetaGANPipeline.from_pretrained(tmp_path / "unzipped")
    assert loaded.generator.config.sample_size == SIZE
    with pytest.raises(AppError, match="LoRA"):
        app.export_lora(result)
    with pytest.raises(AppError, match="Nothing adapted"):
        app.export_pipeline(None)


def test_lora_download(app, tmp_path):
    pytest.importorskip("peft")
    result = app.adapt(
        app.load_shots(write_pngs(tmp_path / "shots", 3)), num_steps=2, mixed_precision="no", lora_rank=4
    )
    with zipfile.ZipFile(app.export_lora(result)) as archive:
        names = set(archive.namelist())
    assert "pytorch_lora_weights.safetensors" in names or any(n.endswith(".safetensors") for n in names)
    assert not any(n.startswith("generator/") for n in names)
    assert {"shots.png", "samples.png"} <= names


def test_variety_option_applies_the_cards_setting(app, tmp_path, monkeypatch):
    assert app.variety == VARIETY
    seen = record_adapt_calls(monkeypatch)
    files = write_pngs(tmp_path / "shots", 3)
    update = final(adaptation_updates(app, files, 2, "no", 0, False, 4, variety=True))
    assert "error" not in update and "variety setting" in update["status"]
    result = update["result"]
    assert seen[-1]["shot_augment"] == 0.5 and result.latent_scale == 1.25
    assert "variety_setting" not in result.pipeline.card_info  # a claim about the start, not the adapted model
    # its samples are the adapted pipeline's at the variety latent scale, for the same seed
    shown = app.samples(result, 4, seed=3)
    drawn = result.pipeline(batch_size=4, generator=torch.Generator().manual_seed(3), latent_scale=1.25).images
    assert all(np.array_equal(np.asarray(a), np.asarray(demo_app.enlarge(b))) for a, b in zip(shown, drawn))
    plain = final(adaptation_updates(app, files, 2, "no", 0, False, 4))
    assert seen[-1]["shot_augment"] == 0.0 and plain["result"].latent_scale == 1.0
    assert "variety" not in plain["status"] and "diversity_loss" not in seen[-1]
    # a setting that names a diversity term passes it to adapt(); at latent scale 1 the status still names the setting
    monkeypatch.setattr(app, "variety", {"shot_augment": 0.0, "latent_scale": 1.0, "diversity_loss": "mixdl"})
    mixdl = final(adaptation_updates(app, files, 2, "no", 0, False, 4, variety=True))
    assert "error" not in mixdl and "variety setting" in mixdl["status"]
    assert (seen[-1]["shot_augment"], seen[-1]["diversity_loss"]) == (0.0, "mixdl")
    assert mixdl["result"].pipeline.card_info["adaptation"]["diversity_loss"] == "mixdl"


def test_avoid_copies_option_replaces_near_copies_of_the_shots(app, tmp_path, monkeypatch):
    files = write_pngs(tmp_path / "shots", 3)
    update = final(adaptation_updates(app, files, 2, "no", 0, False, 4, avoid_copies=True))
    assert "error" not in update and "near-copies replaced" in update["status"]
    result = update["result"]
    assert result.avoid_copies and result.latent_scale == 1.0
    # its samples are the adapted pipeline's with the shots' near-copies replaced, for the same seed
    calls = []
    original = type(result.pipeline).__call__

    def spy(pipe, *args, **kwargs):
        calls.append(kwargs)
        return original(pipe, *args, **kwargs)

    monkeypatch.setattr(type(result.pipeline), "__call__", spy)
    shown = app.samples(result, 4, seed=3)
    assert calls[-1]["avoid_copies_of"] is result.shots
    drawn = original(
        result.pipeline, batch_size=4, generator=torch.Generator().manual_seed(3), avoid_copies_of=result.shots
    )
    assert all(np.array_equal(np.asarray(a), np.asarray(demo_app.enlarge(b))) for a, b in zip(shown, drawn.images))
    plain = final(adaptation_updates(app, files, 2, "no", 0, False, 4))
    assert not plain["result"].avoid_copies and "near-copies" not in plain["status"]
    app.samples(plain["result"], 4, seed=3)
    assert calls[-1]["avoid_copies_of"] is None


def test_variety_setting_with_a_copy_margin_replaces_near_copies_at_that_margin(app, tmp_path, monkeypatch):
    monkeypatch.setattr(app, "variety", {"shot_augment": 1.0, "latent_scale": 1.25, "copy_margin": 1.25})
    seen = record_adapt_calls(monkeypatch)
    files = write_pngs(tmp_path / "shots", 3)
    update = final(adaptation_updates(app, files, 2, "no", 0, False, 4, variety=True))
    assert "error" not in update and "variety setting" in update["status"] and "near-copies" in update["status"]
    result = update["result"]
    assert seen[-1]["shot_augment"] == 1.0 and "copy_margin" not in seen[-1]  # a sampling option, not adapt()'s
    assert result.avoid_copies and (result.latent_scale, result.copy_margin) == (1.25, 1.25)
    calls = []
    original = type(result.pipeline).__call__
    monkeypatch.setattr(
        type(result.pipeline), "__call__", lambda pipe, *a, **k: calls.append(k) or original(pipe, *a, **k)
    )
    app.samples(result, 4, seed=3)
    assert calls[-1]["avoid_copies_of"] is result.shots and calls[-1]["copy_margin"] == 1.25
    # the filter needs 2 images: refused before adapting, naming the option that asked for it
    seen.clear()
    one = final(adaptation_updates(app, write_pngs(tmp_path / "one", 1), 2, "no", 0, False, 4, variety=True))
    assert "at least 2 images" in one["error"] and "More variety" in one["error"] and not seen
    # without the variety box the filter stays at the plain default (margin 1) and off unless asked for
    plain = final(adaptation_updates(app, files, 2, "no", 0, False, 4, avoid_copies=True))
    assert plain["result"].copy_margin == 1.0


def test_status_says_where_a_copy_stop_kept_the_model(app, tmp_path, monkeypatch):
    files = write_pngs(tmp_path / "shots", 3)
    plain = final(adaptation_updates(app, files, 2, "no", 0, False, 4, variety=True))
    assert plain["result"].copy_stop_step is None and "stopped" not in plain["status"]
    # an adaptation that copy_stop ended (the step whose generator it kept is in the adapted card)
    pretend_copy_stop(monkeypatch, 75)
    update = final(adaptation_updates(app, files, 2, "no", 0, False, 4, variety=True))
    assert update["result"].copy_stop_step == 75
    assert "stopped as samples began to copy your images, keeping the model after 75 steps" in update["status"]


def test_avoid_copies_needs_two_images(app, tmp_path, monkeypatch):
    seen = record_adapt_calls(monkeypatch)
    files = write_pngs(tmp_path / "shots", 1)
    update = final(adaptation_updates(app, files, 2, "no", 0, False, 4, avoid_copies=True))
    assert "Replacing near-copies needs at least 2 images" in update["error"] and "got 1" in update["error"]
    assert not seen  # refused before any adaptation
    assert "error" not in final(adaptation_updates(app, files, 2, "no", 0, False, 4))


def test_no_variety_option_without_a_setting_in_the_card(tmp_path, monkeypatch):
    tiny_pipeline(0).save_pretrained(tmp_path / "plain")
    app = DemoApp(str(tmp_path / "plain"), work_dir=str(tmp_path / "work"))
    assert app.variety is None
    seen = record_adapt_calls(monkeypatch)
    files = write_pngs(tmp_path / "shots", 3)
    update = final(adaptation_updates(app, files, 2, "no", 0, False, 4, variety=True))
    assert "More variety is not available" in update["error"] and "plain" in update["error"]
    assert not seen  # refused before any adaptation
    assert "error" not in final(adaptation_updates(app, files, 2, "no", 0, False, 4))  # and the app keeps serving
    app.cleanup()


def test_busy_while_adapting_then_serves_again(app, tmp_path):
    shots = app.load_shots(write_pngs(tmp_path / "shots", 2))
    release = threading.Event()
    original = app.pipeline.adapt

    def slow_adapt(*args, **kwargs):  # holds the adaptation slot until the test lets go
        release.wait(30)
        return original(*args, **kwargs)

    app.pipeline.adapt = slow_adapt
    try:
        job = app.start_adaptation(shots, num_steps=2, mixed_precision="no")
        assert app.busy
        # a second Adapt (another tab, or a double click that got through): a visible message, not a second job
        with pytest.raises(BusyError, match="Busy"):
            app.start_adaptation(shots, num_steps=2, mixed_precision="no")
        files = write_pngs(tmp_path / "other", 2)
        assert "Busy" in final(adaptation_updates(app, files, 2, "no", 0, False, 4))["error"]
        release.set()
        job.wait(60)
    finally:
        release.set()
        app.pipeline.adapt = original
    assert not app.busy
    assert "error" not in final(adaptation_updates(app, files, 2, "no", 0, False, 2, poll_seconds=0.01))


def test_failed_adaptation_is_a_message_and_frees_the_slot(app, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.pipeline, "adapt", broken)
    update = final(adaptation_updates(app, write_pngs(tmp_path / "s", 2), 2, "no", 0, False, 2, poll_seconds=0.01))
    assert "RuntimeError" in update["error"] and "boom" in update["error"] and "Traceback" not in update["error"]
    assert not app.busy


def test_progress_is_reported_while_adapting(app, tmp_path):
    seen: list[tuple[int, int]] = []
    original = app.pipeline.adapt

    def paced_adapt(*args, callback=None, **kwargs):  # 10 steps of ~20 ms, so the poller sees them happen
        def slow_callback(step, logs):
            time.sleep(0.02)
            return callback(step, logs)

        return original(*args, callback=slow_callback, **kwargs)

    app.pipeline.adapt = paced_adapt
    try:
        updates = list(
            adaptation_updates(
                app,
                write_pngs(tmp_path / "s", 2),
                10,
                "no",
                0,
                False,
                2,
                poll_seconds=0.02,
                on_progress=lambda d, t: seen.append((d, t)),
            )
        )
    finally:
        app.pipeline.adapt = original
    assert "error" not in updates[-1]
    assert len(seen) >= 3 and all(t == 10 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # monotone
    assert any("step" in u.get("status", "") for u in updates[1:-1])


def test_push_to_hub_never_shows_the_token(app, tmp_path, hub_server, hub_repo_id, caplog):
    token = "hf_secretTOKENvalue123456789"
    result = app.adapt(app.load_shots(write_pngs(tmp_path / "s", 2)), num_steps=2, mixed_precision="no")
    caplog.set_level(logging.DEBUG)
    url = app.push(result, hub_repo_id, token=token)
    assert token not in url and token not in caplog.text  # nothing logs it, down to HTTP debug logs
    uploaded = set(hub_server.uploaded_paths(hub_repo_id))
    assert {"README.md", "samples.png"} <= uploaded and "shots.png" not in uploaded  # the user's images stay private
    assert not list(app.work_dir.glob("push-*"))  # the pushed folder is not kept
    # the fake Hub refuses the next upload: the message names the repo and hides the token
    hub_server.fail_next("preupload", status=403, message=f"bad token {token}")
    with pytest.raises(AppError) as err:
        app.push(result, hub_repo_id, token=token)
    assert hub_repo_id in str(err.value) and token not in str(err.value)
    assert not [r for r in caplog.records if r.name.startswith("metagan_hub") and token in r.getMessage()]
    with pytest.raises(AppError, match="Repo id"):
        app.push(result, "not a repo id", token=token)


def test_example_shots(app):
    try:
        importlib.metadata.distribution("kanjivg")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the kanjivg package (data extra) is not installed")
    shots = app.example_shots("三")
    assert len(shots) == 5 and shots[0].size == (SIZE, SIZE)
    paths = app.save_example_files("三")
    assert len(app.load_shots(paths)) == 5
    with pytest.raises(AppError):
        app.example_shots("not a kanji")


def test_bad_model_path_stops_with_a_reason(tmp_path):
    with pytest.raises(SystemExit, match="could not load"):
        DemoApp(str(tmp_path / "missing"))


def test_loss_plot_draws_both_curves():
    losses = [{"step": i, "d_loss": 1.0 + i, "g_loss": 2.0 - i} for i in range(5)]
    image = np.asarray(demo_app.plot_losses(losses))
    red = ((image[..., 0] > 150) & (image[..., 1] < 80)).sum()
    blue = ((image[..., 2] > 150) & (image[..., 0] < 80)).sum()
    assert red > 20 and blue > 20
    demo_app.plot_losses([])  # no steps yet: an empty frame, no error


def test_torch_worker_runs_in_order_on_one_daemon_thread_and_passes_errors():
    worker = demo_app.TorchWorker(name="test-torch-worker")
    try:
        gate = threading.Event()
        order: list[int] = []
        threads: set[str] = set()

        def job(i: int):
            def run() -> int:
                if i == 0:
                    gate.wait(5)
                order.append(i)
                threads.add(threading.current_thread().name)
                return i * i

            return run

        futures = [worker.submit(job(i)) for i in range(3)]
        gate.set()
        assert [f.result(timeout=5) for f in futures] == [0, 1, 4]
        assert order == [0, 1, 2] and threads == {"test-torch-worker"}
        # a daemon thread: the interpreter does not wait for a running adaptation at exit (Ctrl-C stops the app)
        assert worker._thread.daemon
        with pytest.raises(ZeroDivisionError):
            worker.submit(lambda: 1 / 0).result(timeout=5)
        assert worker.submit(lambda: "still serving").result(timeout=5) == "still serving"

        blocker, started = threading.Event(), threading.Event()

        def long_job() -> bool:
            started.set()
            return blocker.wait(5)

        running = worker.submit(long_job)
        queued = worker.submit(lambda: "never")
        assert started.wait(5)
        worker.shutdown()
        assert queued.cancelled()
        blocker.set()
        assert running.result(timeout=5) is True
        with pytest.raises(RuntimeError, match="shut down"):
            worker.submit(lambda: None)
        worker._thread.join(5)
        assert not worker._thread.is_alive()
    finally:
        worker.shutdown()


@pytest.mark.parametrize("native, expected", [(True, "metagan-kanji-32"), (False, "metagan-kanji-32-small")])
def test_auto_model_follows_native_bf16(monkeypatch, caplog, native, expected):
    monkeypatch.setattr(demo_app, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.INFO, logger="metagan_hub.demo_app"):
        chosen = demo_app.resolve_model("auto")
    assert Path(chosen).name == expected and Path(chosen).is_dir()
    assert f"model 'auto' -> {chosen}" in caplog.text
    # a named model is used as given, whatever the hardware
    assert demo_app.resolve_model("org/some-metagan") == "org/some-metagan"


def test_app_loads_the_auto_model(monkeypatch, tmp_path):
    monkeypatch.setattr(demo_app, "cpu_has_native_bf16", lambda: False)
    app = DemoApp("auto", work_dir=str(tmp_path / "work"))
    try:
        assert Path(app.model_name).name == "metagan-kanji-32-small"
        assert app.pipeline.generator.config.block_out_channels == [64, 32, 16]
    finally:
        app.cleanup()


def test_page_offers_more_variety_only_with_a_setting_in_the_card(app, tmp_path):
    pytest.importorskip("gradio")  # the page itself; the test extra does not install the app's Gradio
    tiny_pipeline(0).save_pretrained(tmp_path / "plain")
    plain = DemoApp(str(tmp_path / "plain"), work_dir=str(tmp_path / "work-plain"))
    try:
        for each, shown in ((app, True), (plain, False)):
            page = demo_app.build_demo(each)
            boxes = [b for b in page.blocks.values() if getattr(b, "elem_id", None) == "variety"]
            assert [b.visible for b in boxes] == [shown]
    finally:
        plain.cleanup()
