#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""A web app for few-shot adaptation: upload 1-10 images (or pick a built-in held-out kanji), press **Adapt**, look at
samples, download the adapted pipeline or LoRA adapter, or push it to the Hub.

    pip install torch==2.13.0 && pip install -e ".[app]"
    python scripts/demo_app.py                     # then open http://127.0.0.1:7860

Options: `--model` (a meta-checkpoint folder or Hub repo id; default `auto`: the bundled
`checkpoints/metagan-kanji-32` where the CPU computes bf16 natively, its half-width sibling
`checkpoints/metagan-kanji-32-small` elsewhere, about 3x faster to adapt in fp32), `--host` (default 127.0.0.1, or
`$GRADIO_SERVER_NAME`), `--port` (default 7860, or `$GRADIO_SERVER_PORT`).

As a Hugging Face Space (Gradio SDK): copy this file to the Space as `app.py`, the checkpoint folders to
`checkpoints/metagan-kanji-32/` and `checkpoints/metagan-kanji-32-small/` beside it (or set the Space variable
`METAGAN_MODEL` to a Hub repo id), and list
`metagan-hub[app]` (or a wheel built from this repository) in `requirements.txt`. Spaces set `GRADIO_SERVER_NAME`, so
the app listens on all interfaces there; everywhere else it binds 127.0.0.1 only.

The app works offline: Gradio's analytics are switched off before Gradio is imported, the theme uses system fonts
(no font downloads), and nothing is fetched unless `--model` names a Hub repo that is not cached. Hub tokens typed into
the page are passed to the upload call only: never logged, echoed or written anywhere.

The logic lives in [`DemoApp`] (plain Python, unit-tested without a browser); [`build_demo`] only lays out the page.
"""

from __future__ import annotations

import os

# before anything imports gradio or huggingface_hub: no usage analytics, no telemetry
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import queue  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from concurrent.futures import Future  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from diffusers.utils import make_image_grid  # noqa: E402
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError  # noqa: E402

from metagan_hub import MetaGANPipeline  # noqa: E402
from metagan_hub.data.images import pil_to_uint8  # noqa: E402
from metagan_hub.hub.model_card import variety_adapt_options, variety_setting  # noqa: E402
from metagan_hub.training.gan_step import cpu_has_native_bf16  # noqa: E402

logger = logging.getLogger("metagan_hub.demo_app")

HERE = Path(__file__).resolve().parent
# the bundled checkpoint: beside a Space's app.py, or at the repository root above scripts/
FULL_CHECKPOINT_NAME = "metagan-kanji-32"
# the half-width sibling, about 3x cheaper per adaptation step: what "auto" takes on CPUs without native bf16
SMALL_CHECKPOINT_NAME = "metagan-kanji-32-small"
# "auto": the bundled checkpoint that suits this machine (see `resolve_model`)
DEFAULT_MODEL = os.environ.get("METAGAN_MODEL") or "auto"


def bundled_checkpoint(name: str) -> str:
    """The folder of a bundled checkpoint: `checkpoints/<name>` beside this script (a Space) or in the repository."""
    candidates = (HERE / "checkpoints" / name, HERE.parent / "checkpoints" / name)
    return str(next((p for p in candidates if p.is_dir()), candidates[-1]))


def resolve_model(model: str) -> str:
    """`model`, or for `"auto"` the bundled checkpoint to adapt on this machine (the app adapts on the CPU): the
    full-width one where the CPU computes bf16 natively, else the half-width one (fp32 there, about 3x faster per
    step)."""
    if model != "auto":
        return model
    small = not cpu_has_native_bf16()
    chosen = bundled_checkpoint(SMALL_CHECKPOINT_NAME if small else FULL_CHECKPOINT_NAME)
    reason = "no native bf16 on this CPU: the half-width model (fp32)" if small else "native bf16: the full model"
    logger.info("model 'auto' -> %s (%s)", chosen, reason)
    return chosen


MIN_SHOTS, MAX_SHOTS = 1, 10
MAX_STEPS = 2000
MAX_SAMPLES = 64
# rank of the "LoRA adapter only" option: at 200 steps rank 16 is recognised 0.09 less often than full adaptation on
# kanji (30 classes), rank 4 0.11 less often than rank 16 on the first 10 of them (bundled model's experiment log)
APP_LORA_RANK = 16
# uploads larger than this are refused from their header, before any pixel is decoded (decompression bombs)
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_UPLOAD_SIZE = "25mb"
PRECISIONS = ("auto", "no", "bf16", "fp16")
PRECISION_LABELS = {
    "auto": "auto (bf16 only where the hardware computes it natively)",
    "no": "fp32",
    "bf16": "bf16",
    "fp16": "fp16 (GPU only)",
}
EXAMPLE_RENDER_SEED = 12345  # the "hands" of the example shots; meta-training rendered with another seed
FALLBACK_EXAMPLES = ("森",)
BUSY_MESSAGE = (
    "Busy: another adaptation is running (in another tab or for another user). It takes about 10 s; "
    "press Adapt again when it has finished."
)
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class AppError(Exception):
    """A problem with the user's input or request, shown in the page as a message (never as a stack trace)."""


class BusyError(AppError):
    """Another adaptation holds the app's single adaptation slot."""


@dataclass
class AdaptResult:
    """One finished adaptation: the adapted pipeline and what the page shows about it."""

    pipeline: MetaGANPipeline
    shots: list[Image.Image]
    losses: list[dict[str, float]]
    seconds: float
    mixed_precision: str
    lora_rank: int | None
    sample_seed: int = 0
    latent_scale: float = 1.0
    avoid_copies: bool = False
    variety: bool = False
    copy_margin: float = 1.0
    copy_stop_step: int | None = None  # where adaptation stopped because the generator started to copy the shots


class TorchWorker:
    """
    Runs all of the app's torch work (adaptations and sampling) in submission order on one long-lived **daemon**
    thread. One thread: a fresh thread per adaptation beside the OpenMP team that sampling left on another thread
    made adaptations 1.5-1.7x slower. Daemon: Ctrl-C stops the app at once, even during an adaptation (a
    `ThreadPoolExecutor` thread would be joined at exit, so the app would wait for it).

    Example:

    ```py
    >>> worker = TorchWorker()
    >>> worker.submit(lambda: 6 * 7).result()
    42
    >>> worker.shutdown()
    ```
    """

    def __init__(self, name: str = "metagan-torch") -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Queue `fn()`; the returned future gives its result or raises its exception."""
        if self._closed:
            raise RuntimeError("the torch worker was shut down")
        future: Future = Future()
        self._queue.put((future, fn))
        return future

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as err:  # handed to whoever waits on the future
                future.set_exception(err)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """Cancel queued work and let the thread end after the work it is running (it does not block)."""
        self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        self._queue.put(None)


@dataclass
class AdaptJob:
    """An adaptation running on the app's torch worker thread; the page polls it for progress."""

    total_steps: int
    steps_done: int = 0
    losses: list[dict[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    result: AdaptResult | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float | None = None) -> AdaptResult:
        """Block until the adaptation finishes; return its result or raise its error."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"adaptation still running after {timeout} s")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _file_path(item: Any) -> str:
    """The local path of an upload: Gradio passes paths (str) or objects with `.name` / `.path`."""
    if isinstance(item, str | os.PathLike):
        return os.fspath(item)
    for attr in ("path", "name"):
        value = getattr(item, attr, None)
        if isinstance(value, str):
            return value
    raise AppError(f"Could not read an upload of type {type(item).__name__}.")


def _display_name(path: str) -> str:
    # Gradio stores uploads under a random folder with the original file name
    return os.path.basename(path) or "upload"


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """`[N, C, H, W]` in `[-1, 1]` to a list of PIL images."""
    arrays = ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()  # [N, H, W, C] in [0, 1]
    return MetaGANPipeline.numpy_to_pil(arrays)


def enlarge(image: Image.Image, size: int = 128) -> Image.Image:
    """Nearest-neighbour enlargement so that 32x32 samples are visible in the page."""
    factor = max(1, size // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


# while adapting, the page's loss curve is redrawn at most this often (the status line updates every poll)
PLOT_SECONDS = 2.0


# the model card of a download or push shows the shots and this many samples (the page's seed and settings)
CARD_SAMPLES = 16


def plot_losses(losses: Sequence[dict[str, float]], size: tuple[int, int] = (480, 240)) -> Image.Image:
    """The discriminator (red) and generator (blue) loss per step, drawn with Pillow (no plotting library)."""
    width, height = size
    pad = 36
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([pad, 8, width - 8, height - pad], outline=(120, 120, 120))
    series = {key: [row.get(key, math.nan) for row in losses] for key in ("d_loss", "g_loss")}
    values = [v for vs in series.values() for v in vs if math.isfinite(v)]
    if values:
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1.0
        n = max(len(losses) - 1, 1)
        for key, color in (("d_loss", (200, 40, 40)), ("g_loss", (40, 80, 200))):
            points = [
                (pad + (width - 8 - pad) * i / n, (height - pad) - (height - pad - 8) * (v - lo) / (hi - lo))
                for i, v in enumerate(series[key])
                if math.isfinite(v)
            ]
            if len(points) > 1:
                draw.line(points, fill=color, width=2)
        draw.text((2, 8), f"{hi:.2f}", fill="black")
        draw.text((2, height - pad - 10), f"{lo:.2f}", fill="black")
    draw.text((pad, height - pad + 8), f"step 0..{max(len(losses) - 1, 0)}   red: D loss   blue: G loss", fill="black")
    return image


def _zip_folder(folder: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder))
    return zip_path


class DemoApp:
    """
    The app's logic, independent of the page layout: input checks, adaptation with progress, sampling, export and
    upload. One adaptation runs at a time (a lock); a second request while one runs gets [`BusyError`].

    All torch work (adaptation and sampling) runs on one long-lived worker thread: torch's OpenMP thread team belongs
    to the thread that starts it, and a fresh thread per adaptation next to a team left by sampling on another thread
    made 100-step adaptations 1.5-1.7x slower from the second one on (11 s, then 16-19 s on a 2-core CPU), while one
    worker thread kept them at 10-11 s.

    Args:
        model (`str`): a meta-checkpoint folder or Hub repo id (loaded once, never modified).
        work_dir (`str`, *optional*): where exported zips and example images go (a temporary folder by default).
        max_shots (`int`): the most images one adaptation accepts.

    Example:

    ```py
    >>> app = DemoApp("checkpoints/metagan-kanji-32")  # doctest: +SKIP
    >>> shots = app.example_shots("㓁")  # doctest: +SKIP
    >>> result = app.adapt(shots, num_steps=100, mixed_precision="auto", seed=0)  # doctest: +SKIP
    >>> samples = app.samples(result, 16, seed=0)  # doctest: +SKIP
    ```
    """

    def __init__(self, model: str = DEFAULT_MODEL, work_dir: str | None = None, max_shots: int = MAX_SHOTS) -> None:
        model = resolve_model(model)
        self.model_name = model
        try:
            self.pipeline = MetaGANPipeline.from_pretrained(model)
        except Exception as err:  # a bad path or repo id stops the app at start, with a readable reason
            raise SystemExit(f"could not load the meta-checkpoint {model!r}: {err}") from err
        if self.pipeline.discriminator is None:
            raise SystemExit(f"{model!r} has no discriminator, so it cannot be adapted; give a meta-checkpoint.")
        self.pipeline.set_progress_bar_config(disable=True)
        self.config = self.pipeline.generator.config
        self.max_shots = max_shots
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="metagan-app-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._torch_worker = TorchWorker()
        training = (self.pipeline.card_info or {}).get("training") or {}
        self.examples: list[str] = list(training.get("heldout_examples") or FALLBACK_EXAMPLES)
        # the "More variety" option: the setting the checkpoint's card recommends (shots augmented during adaptation,
        # latents spread when sampling), or None where its benchmark found none that helps. The full-width bundled
        # card measured it on 30 kanji / 10 digit / 30 font-glyph classes; the half-width one copies no shots at its
        # defaults and only lost recognisability with it (kanji 0-9, 0.86 -> 0.82), so its card has none.
        self.variety: dict[str, Any] | None = variety_setting(self.pipeline.card_info)
        self.device = self.pipeline.generator.device

    # ------------------------------------------------------------------------------------------------ inputs
    def load_shots(self, files: Sequence[Any] | None) -> list[Image.Image]:
        """
        Check and decode the uploads: 1 to `max_shots` image files, each at most `MAX_IMAGE_PIXELS` pixels (checked
        from the header, before decoding). Returns the images at the model's resolution and channels.

        Raises:
            [`AppError`]: naming the problem (no images, too many, not an image, too large, unsupported mode).
        """
        files = [f for f in (files or []) if f is not None]
        if len(files) < MIN_SHOTS:
            raise AppError(
                "No images: upload 1 to 10 images of your new class (PNG, JPEG, ...), or pick a built-in example."
            )
        if len(files) > self.max_shots:
            raise AppError(
                f"{len(files)} images uploaded; at most {self.max_shots} are used for one adaptation. "
                "Remove some and press Adapt again."
            )
        size, channels = self.config.sample_size, self.config.out_channels
        shots = []
        for item in files:
            path = _file_path(item)
            name = _display_name(path)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(path) as image:  # reads the header only
                        w, h = image.size
                        if w * h > MAX_IMAGE_PIXELS:
                            raise AppError(
                                f"{name} is {w} x {h} pixels, too large (at most {MAX_IMAGE_PIXELS // 10**6} "
                                "megapixels, e.g. 4096 x 4096). Shrink it first; the model works at "
                                f"{size} x {size}."
                            )
                        image.load()
                        image = ImageOps.exif_transpose(image)
                        array = pil_to_uint8(image, size, channels, name=name)  # [C, H, W] uint8
            except AppError:
                raise
            except Image.DecompressionBombError as err:
                raise AppError(f"{name} is too large to decode safely ({err}).") from err
            except (UnidentifiedImageError, OSError, SyntaxError) as err:
                raise AppError(f"{name} is not an image that can be read (PNG, JPEG, WebP, BMP, GIF, TIFF).") from err
            except ValueError as err:
                raise AppError(str(err)) from err
            mode = "L" if channels == 1 else "RGB"
            shots.append(Image.fromarray(array[0] if channels == 1 else array.transpose(1, 2, 0), mode=mode))
        return shots

    def example_shots(self, character: str | None = None, shots: int = 5) -> list[Image.Image]:
        """
        Five renders of a held-out kanji (one the meta-checkpoint never saw), in KanjiVG "hands" that meta-training
        did not use: the same shots as `scripts/demo_adapt.py`.
        """
        character = character or self.examples[0]
        try:
            from metagan_hub.data import get_dataset

            data = get_dataset(
                "kanjivg",
                resolution=self.config.sample_size,
                channels=self.config.out_channels,
                characters=[character],
                samples_per_class=shots,
                seed=EXAMPLE_RENDER_SEED,
            )
        except ImportError as err:
            raise AppError("The built-in examples need the `kanjivg` package: pip install kanjivg") from err
        except ValueError as err:
            raise AppError(f"No built-in example for {character!r}: {err}") from err
        return to_pil(data.class_images(0)[:shots])

    def save_example_files(self, character: str | None = None) -> list[str]:
        """Write the example shots as PNG files (so they appear in the upload box) and return their paths."""
        folder = self.work_dir / f"example-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        paths = []
        for i, image in enumerate(self.example_shots(character)):
            path = folder / f"example_{i}.png"
            image.save(path)
            paths.append(str(path))
        return paths

    @staticmethod
    def check_options(num_steps: Any, mixed_precision: Any, seed: Any) -> tuple[int, str, int]:
        """Validate the page's settings; return them as `(num_steps, mixed_precision, seed)`."""
        try:
            steps = int(num_steps)
        except (TypeError, ValueError) as err:
            raise AppError(f"Steps must be a whole number from 1 to {MAX_STEPS}, got {num_steps!r}.") from err
        if not 1 <= steps <= MAX_STEPS or steps != num_steps:
            raise AppError(f"Steps must be a whole number from 1 to {MAX_STEPS}, got {num_steps!r}.")
        if mixed_precision not in PRECISIONS:
            raise AppError(f"Precision must be one of {', '.join(PRECISIONS)}, got {mixed_precision!r}.")
        try:
            seed = int(seed)
        except (TypeError, ValueError) as err:
            raise AppError(f"Seed must be a whole number, got {seed!r}.") from err
        if not 0 <= seed < 2**63:
            raise AppError(f"Seed must be between 0 and 2**63 - 1, got {seed}.")
        return steps, mixed_precision, seed

    # ------------------------------------------------------------------------------------------------ adaptation
    @property
    def busy(self) -> bool:
        """Whether an adaptation is running."""
        return self._lock.locked()

    def start_adaptation(
        self,
        shots: list[Image.Image],
        num_steps: int = 100,
        mixed_precision: str = "auto",
        seed: int = 0,
        lora_rank: int | None = None,
        variety: bool = False,
        avoid_copies: bool = False,
    ) -> AdaptJob:
        """
        Start adapting the meta-checkpoint to `shots` in a background thread and return the running [`AdaptJob`].
        `variety=True` applies the checkpoint card's variety setting (`self.variety`): its `adapt()` options
        (`shot_augment`, and a diversity term where it names one), and samples drawn at its `latent_scale` (more
        varied samples and fewer near-copies of the shots, somewhat less faithful); a checkpoint whose card has none
        refuses it. `avoid_copies=True` makes every sample batch replace near-copies of the shots (`avoid_copies_of`;
        at least 2 shots, whose distances to each other set what counts as one); a variety setting with a
        `copy_margin` does so too, at that margin.

        Raises:
            [`BusyError`]: when another adaptation is running (one at a time: the CPU is shared).
            [`AppError`]: for invalid settings.
        """
        num_steps, mixed_precision, seed = self.check_options(num_steps, mixed_precision, seed)
        if not shots:
            raise AppError("No images: upload 1 to 10 images of your new class, or pick a built-in example.")
        if variety and self.variety is None:
            raise AppError(
                f"More variety is not available for {os.path.basename(self.model_name.rstrip('/'))!r}: its model card "
                "gives no variety setting (none was found to help it). Adapt without it."
            )
        setting = self.variety if variety else {"shot_augment": 0.0, "latent_scale": 1.0}
        filtered_by_setting = "copy_margin" in setting
        if (avoid_copies or filtered_by_setting) and len(shots) < 2:
            which = "More variety (on this checkpoint it replaces near-copies)" if filtered_by_setting else "it"
            raise AppError(
                "Replacing near-copies needs at least 2 images (how far apart they are sets what counts as a copy); "
                f"got {len(shots)}. Add images or untick {which}."
            )
        if not self._lock.acquire(blocking=False):
            raise BusyError(BUSY_MESSAGE)
        job = AdaptJob(total_steps=num_steps)

        def on_step(step: int, logs: dict[str, float]) -> None:
            job.losses.append({"step": step, "d_loss": float(logs["d_loss"]), "g_loss": float(logs["g_loss"])})
            job.steps_done = step + 1

        def run() -> None:
            try:
                adapted = self.pipeline.adapt(
                    shots,
                    num_steps=num_steps,
                    mixed_precision=mixed_precision,
                    lora_rank=lora_rank,
                    generator=torch.Generator().manual_seed(seed),
                    callback=on_step,
                    **variety_adapt_options(setting),
                )
                adapted.set_progress_bar_config(disable=True)
                record = adapted.card_info.get("adaptation", {})
                job.result = AdaptResult(
                    pipeline=adapted,
                    shots=shots,
                    losses=list(job.losses),
                    seconds=time.perf_counter() - job.started,
                    mixed_precision=str(record.get("mixed_precision", mixed_precision)),
                    lora_rank=lora_rank,
                    sample_seed=seed,
                    latent_scale=setting["latent_scale"],
                    avoid_copies=bool(avoid_copies) or filtered_by_setting,
                    variety=bool(variety),
                    copy_margin=setting.get("copy_margin", 1.0),
                    copy_stop_step=record.get("copy_stop_step"),
                )
            except BaseException as err:  # reported to the page by the poller
                job.error = err
            finally:
                self._lock.release()
                job.done.set()

        self._torch_worker.submit(run)
        return job

    def adapt(self, shots: list[Image.Image], **kwargs: Any) -> AdaptResult:
        """Adapt synchronously (see [`start_adaptation`] for the arguments) and return the result."""
        return self.start_adaptation(shots, **kwargs).wait()

    # ------------------------------------------------------------------------------------------------ outputs
    def samples(self, result: AdaptResult | None, num_samples: int = 16, seed: int = 0) -> list[Image.Image]:
        """`num_samples` samples of the adapted generator for `seed` (near-copies of the shots replaced when the
        adaptation asked for it), enlarged for display."""
        if result is None:
            raise AppError("Nothing adapted yet: upload images (or pick an example) and press Adapt first.")
        try:
            num_samples = int(num_samples)
            seed = int(seed)
        except (TypeError, ValueError) as err:
            raise AppError("Samples and seed must be whole numbers.") from err
        if not 1 <= num_samples <= MAX_SAMPLES:
            raise AppError(f"Number of samples must be from 1 to {MAX_SAMPLES}, got {num_samples}.")
        if not 0 <= seed < 2**63:
            raise AppError(f"Seed must be between 0 and 2**63 - 1, got {seed}.")

        def draw() -> list[Image.Image]:
            generator = torch.Generator().manual_seed(seed)
            return result.pipeline(
                batch_size=num_samples,
                generator=generator,
                latent_scale=result.latent_scale,
                avoid_copies_of=result.shots if result.avoid_copies else None,
                copy_margin=result.copy_margin,
            ).images

        images = self._torch_worker.submit(draw).result()  # on the torch worker thread, after a running adaptation
        return [enlarge(image) for image in images]

    def _write_card_grids(self, result: AdaptResult, folder: Path, with_shots: bool) -> list[str]:
        """Write `CARD_SAMPLES` samples (the page's sample seed and settings) and, `with_shots`, the shots into
        `folder` as `samples.png` and `shots.png`, for the model card to show; returns their file names."""
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        if with_shots:
            shots = [enlarge(shot) for shot in result.shots]
            make_image_grid(shots, rows=1, cols=len(shots)).save(folder / "shots.png")
            names.append("shots.png")
        samples = self.samples(result, CARD_SAMPLES, result.sample_seed)
        make_image_grid(samples, rows=2, cols=CARD_SAMPLES // 2).save(folder / "samples.png")
        return [*names, "samples.png"]

    def export_pipeline(self, result: AdaptResult | None) -> str:
        """Save the adapted pipeline (safetensors, configs, model card with the shots and samples) and return the
        path of a zip of it."""
        if result is None:
            raise AppError("Nothing adapted yet: press Adapt first, then download.")
        folder = Path(tempfile.mkdtemp(prefix="pipeline-", dir=self.work_dir))
        try:
            card_images = self._write_card_grids(result, folder / "metagan-adapted", with_shots=True)
            # a LoRA adapter is saved fused
            result.pipeline.save_pretrained(folder / "metagan-adapted", card_images=card_images)
            return str(_zip_folder(folder / "metagan-adapted", folder / "metagan-adapted.zip"))
        finally:
            shutil.rmtree(folder / "metagan-adapted", ignore_errors=True)

    def export_lora(self, result: AdaptResult | None) -> str:
        """Save only the LoRA adapter (and its card) and return the path of a zip of it."""
        if result is None:
            raise AppError("Nothing adapted yet: press Adapt first, then download.")
        if not result.pipeline.has_lora:
            raise AppError(
                "This adaptation trained the whole generator, not a LoRA adapter: tick LoRA and adapt again."
            )
        folder = Path(tempfile.mkdtemp(prefix="lora-", dir=self.work_dir))
        try:
            card_images = self._write_card_grids(result, folder / "metagan-lora", with_shots=True)
            result.pipeline.save_lora_weights(folder / "metagan-lora", card_images=card_images)
            return str(_zip_folder(folder / "metagan-lora", folder / "metagan-lora.zip"))
        finally:
            shutil.rmtree(folder / "metagan-lora", ignore_errors=True)

    def push(self, result: AdaptResult | None, repo_id: str, token: str | None = None, lora_only: bool = False) -> str:
        """
        Upload the adapted pipeline (or only its LoRA adapter) with a grid of samples for its card, not the shots,
        to `repo_id` on the Hub and return the commit URL.
        `token` goes to the upload call only; it is never logged, returned or stored, and is removed from any error
        message.
        """
        if result is None:
            raise AppError("Nothing adapted yet: press Adapt first, then push.")
        repo_id = (repo_id or "").strip()
        if not REPO_ID_PATTERN.match(repo_id):
            raise AppError(f"Repo id must look like 'your-name/model-name', got {repo_id!r}.")
        token = (token or "").strip() or None
        if lora_only and not result.pipeline.has_lora:
            raise AppError("Push LoRA only needs an adaptation with LoRA ticked.")
        folder = Path(tempfile.mkdtemp(prefix="push-", dir=self.work_dir))
        try:
            card_images = self._write_card_grids(result, folder, with_shots=False)  # the user's images stay private
            return str(
                result.pipeline.push_to_hub(
                    repo_id, token=token, lora_only=lora_only, save_directory=folder, card_images=card_images
                )
            )
        except Exception as err:
            logger.warning("push to %s failed: %s", repo_id, _redact(f"{type(err).__name__}: {err}", token))
            raise AppError(_redact(f"Push to {repo_id} failed: {err}", token)) from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def cleanup(self) -> None:
        """Stop the torch worker thread (a running adaptation finishes) and remove the app's temporary folder (when
        the app made it)."""
        self._torch_worker.shutdown()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def describe_error(err: BaseException) -> str:
    """A one-line message for the page: the reason for an [`AppError`], type and message otherwise (no trace)."""
    if isinstance(err, AppError):
        return str(err)
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"Something went wrong ({type(err).__name__}){': ' + text[:300] if text else ''}. The app keeps running."


def adaptation_updates(
    app: DemoApp,
    files: Sequence[Any] | None,
    num_steps: Any,
    mixed_precision: str,
    seed: Any,
    use_lora: bool,
    num_samples: Any,
    poll_seconds: float = 0.25,
    on_progress: Callable[[int, int], None] | None = None,
    variety: bool = False,
    avoid_copies: bool = False,
) -> Iterator[dict[str, Any]]:
    """
    The Adapt button's work as a stream of page updates (plain dicts, so it is testable without Gradio): status text,
    loss plot, and finally the samples and the result. Every problem ends the stream with an `"error"` entry instead
    of raising.
    """
    try:
        shots = app.load_shots(files)
        job = app.start_adaptation(
            shots,
            num_steps=num_steps,
            mixed_precision=mixed_precision,
            seed=seed,
            lora_rank=APP_LORA_RANK if use_lora else None,
            variety=bool(variety),
            avoid_copies=bool(avoid_copies),
        )
    except Exception as err:
        if not isinstance(err, AppError):
            logger.exception("adaptation could not start")
        yield {"error": describe_error(err)}
        return
    yield {"status": f"Adapting to {len(shots)} image(s): step 0/{job.total_steps}", "shots": shots}
    while not job.done.wait(poll_seconds):
        elapsed = time.perf_counter() - job.started
        if on_progress is not None:
            on_progress(job.steps_done, job.total_steps)
        yield {
            "status": f"Adapting: step {job.steps_done}/{job.total_steps}, {elapsed:.1f} s",
            "losses": list(job.losses),
            "progress": (job.steps_done, job.total_steps),
        }
    if job.error is not None:
        if not isinstance(job.error, AppError | ValueError):
            logger.error("adaptation failed: %s: %s", type(job.error).__name__, job.error)
        yield {"error": describe_error(job.error)}
        return
    result = job.result
    assert result is not None
    try:
        images = app.samples(result, num_samples, result.sample_seed)
    except Exception as err:
        yield {"error": describe_error(err), "result": result}
        return
    precision = {"no": "fp32"}.get(result.mixed_precision, result.mixed_precision)
    yield {
        "status": (
            f"Adapted to {len(result.shots)} image(s) in {result.seconds:.1f} s ({len(result.losses)} steps, "
            f"{precision}{f', LoRA rank {result.lora_rank}' if result.lora_rank else ''}"
            f"{', variety setting' if result.variety else ''}"
            f"{', near-copies replaced' if result.avoid_copies else ''}"
            f"{copy_stop_note(result.copy_stop_step)}). "
            f"Samples for seed {result.sample_seed}."
        ),
        "losses": result.losses,
        "progress": (len(result.losses), len(result.losses)),
        "samples": images,
        "result": result,
    }


def copy_stop_note(copy_stop_step: int | None) -> str:
    """The status's note on a stop of the variety setting's `copy_stop` (empty when adaptation did not stop)."""
    if copy_stop_step is None:
        return ""
    return f"; stopped as samples began to copy your images, keeping the model after {copy_stop_step} steps"


# ---------------------------------------------------------------------------------------------------- page layout
def build_demo(app: DemoApp):
    """Lay out the Gradio page around `app` (imports Gradio lazily, so the logic above works without it)."""
    import gradio as gr

    def warn(message: str) -> None:
        gr.Warning(message)

    def on_example(character: str):
        try:
            return app.save_example_files(character), "Example loaded: press Adapt."
        except Exception as err:
            warn(describe_error(err))
            return gr.update(), describe_error(err)

    def on_adapt(
        files,
        steps,
        precision,
        seed,
        use_lora,
        variety,
        avoid_copies,
        num_samples,
        state,
        progress=gr.Progress(),  # noqa: B008
    ):
        def report(done: int, total: int) -> None:
            progress((done, total), desc="Adapting", unit="steps")

        last_losses: list[dict[str, float]] = []
        last_plot = -math.inf
        for update in adaptation_updates(
            app,
            files,
            steps,
            precision,
            seed,
            use_lora,
            num_samples,
            on_progress=report,
            variety=variety,
            avoid_copies=avoid_copies,
        ):
            if "error" in update:
                warn(update["error"])
                yield (
                    f"⚠ {update['error']}",
                    gr.update(),
                    gr.update(),
                    gr.update(),
                    update.get("result", state),
                    gr.update(),
                )
                return
            plot = gr.update()
            if "losses" in update:
                last_losses = update["losses"]
                # the loss curve is redrawn at most every PLOT_SECONDS while adapting (and at the end): each redraw
                # is a PNG that the browser decodes and paints, CPU the adaptation needs on a small machine
                now = time.perf_counter()
                if "samples" in update or now - last_plot >= PLOT_SECONDS:
                    plot, last_plot = plot_losses(last_losses), now
            yield (
                update["status"],
                plot,
                [enlarge(s) for s in update["shots"]] if "shots" in update else gr.update(),
                update["samples"] if "samples" in update else gr.update(),
                update.get("result", state),
                update["result"].sample_seed if "result" in update else gr.update(),
            )

    def on_more(state, num_samples, sample_seed):
        try:
            seed = int(sample_seed) + 1
            return app.samples(state, num_samples, seed), seed, f"Samples for seed {seed}."
        except Exception as err:
            warn(describe_error(err))
            return gr.update(), gr.update(), f"⚠ {describe_error(err)}"

    def on_resample(state, num_samples, sample_seed):
        try:
            return app.samples(state, num_samples, sample_seed), f"Samples for seed {int(sample_seed)}."
        except Exception as err:
            warn(describe_error(err))
            return gr.update(), f"⚠ {describe_error(err)}"

    def on_download(state, what):
        try:
            path = app.export_lora(state) if what == "lora" else app.export_pipeline(state)
            return path, f"Ready: {os.path.basename(path)}"
        except Exception as err:
            warn(describe_error(err))
            return None, f"⚠ {describe_error(err)}"

    def on_push(state, repo_id, token, lora_only):
        try:
            url = app.push(state, repo_id, token, lora_only)
            return f"Pushed: {url}"
        except Exception as err:
            message = describe_error(err) if isinstance(err, AppError) else "Push failed (see the server log)."
            warn(message)
            return f"⚠ {message}"

    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )  # system fonts only: nothing fetched from font CDNs
    cfg = app.config
    with gr.Blocks(title="Meta-GAN few-shot adaptation", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        demo.theme_for_launch = theme  # picked up by launch_demo
        gr.Markdown(
            "# Meta-GAN: a generator for your images in seconds\n"
            f"Upload 1-10 images of something new (the model works at {cfg.sample_size}x{cfg.sample_size}, "
            f"{'gray' if cfg.out_channels == 1 else 'colour'}) or pick a built-in held-out kanji, then press "
            f"**Adapt**. Meta-checkpoint: `{os.path.basename(app.model_name.rstrip('/'))}`."
        )
        state = gr.State(None, time_to_live=3600)
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(
                    label=f"Your images (1-{app.max_shots})",
                    file_count="multiple",
                    file_types=["image"],
                    elem_id="uploads",
                )
                with gr.Row():
                    example = gr.Dropdown(
                        app.examples, value=app.examples[0], label="Built-in example (held-out kanji)"
                    )
                    example_btn = gr.Button("Use example", elem_id="use-example")
                steps = gr.Slider(1, 500, value=100, step=1, label="Adaptation steps", elem_id="steps")
                precision = gr.Radio(
                    [(PRECISION_LABELS[p], p) for p in PRECISIONS if p != "fp16" or torch.cuda.is_available()],
                    value="auto",
                    label="Precision",
                )
                seed = gr.Number(0, precision=0, label="Seed", minimum=0, elem_id="seed")
                use_lora = gr.Checkbox(
                    False, label=f"LoRA adapter only (rank {APP_LORA_RANK}; ~0.5 MB, a little less faithful)"
                )
                variety = gr.Checkbox(
                    False,
                    label="More variety (fewer near-copies of your images, a little less faithful)",
                    elem_id="variety",
                    visible=app.variety is not None,  # only where the checkpoint's card recommends a setting
                )
                avoid_copies = gr.Checkbox(
                    False,
                    label="Replace near-copies of your images (needs 2 or more images)",
                    elem_id="avoid-copies",
                )
                num_samples = gr.Slider(1, MAX_SAMPLES, value=16, step=1, label="Samples", elem_id="num-samples")
                adapt_btn = gr.Button("Adapt", variant="primary", elem_id="adapt")
            with gr.Column(scale=2):
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                loss_plot = gr.Image(label="Loss curve", interactive=False, height=240, elem_id="loss-plot")
                shots_view = gr.Gallery(label="Shots", columns=10, height=110, format="png", elem_id="shots")
                gallery = gr.Gallery(label="Samples", columns=8, height="auto", format="png", elem_id="samples")
                with gr.Row():
                    sample_seed = gr.Number(0, precision=0, label="Sample seed", minimum=0, elem_id="sample-seed")
                    resample_btn = gr.Button("Show this seed")
                    more_btn = gr.Button("More samples", elem_id="more")
                with gr.Accordion("Download and share", open=False):
                    with gr.Row():
                        dl_pipe = gr.Button("Download adapted pipeline (.zip)", elem_id="download-pipeline")
                        dl_lora = gr.Button("Download LoRA adapter (.zip)", elem_id="download-lora")
                    download = gr.File(label="Download", interactive=False, elem_id="download")
                    repo_id = gr.Textbox(label="Hub repo id", placeholder="your-name/metagan-my-images")
                    token = gr.Textbox(label="Hub token (write access; used for this upload only)", type="password")
                    lora_only = gr.Checkbox(False, label="Push the LoRA adapter only")
                    push_btn = gr.Button("Push to Hub")
                    gr.Markdown("The pushed model card shows 16 samples of this seed; your images are not uploaded.")
                    push_status = gr.Textbox(label="Hub", interactive=False)

        example_btn.click(on_example, [example], [files, status], concurrency_limit=4)
        adapt_btn.click(
            on_adapt,
            [files, steps, precision, seed, use_lora, variety, avoid_copies, num_samples, state],
            [status, loss_plot, shots_view, gallery, state, sample_seed],
            concurrency_limit=2,  # a second tab gets the busy message at once instead of waiting unseen
            concurrency_id="adapt",
            trigger_mode="once",  # a second click while adapting is ignored
            show_progress="full",
            show_progress_on=[gallery],  # the live progress bar (gr.Progress) sits where the samples will appear
        )
        more_btn.click(on_more, [state, num_samples, sample_seed], [gallery, sample_seed, status])
        resample_btn.click(on_resample, [state, num_samples, sample_seed], [gallery, status])
        dl_pipe.click(lambda s: on_download(s, "pipeline"), [state], [download, status])
        dl_lora.click(lambda s: on_download(s, "lora"), [state], [download, status])
        push_btn.click(on_push, [state, repo_id, token, lora_only], [push_status], api_visibility="private")
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo


def launch_demo(demo, host: str, port: int, **kwargs: Any):
    """Launch the page with the app's offline, private defaults."""
    return demo.launch(
        server_name=host,
        server_port=port,
        theme=getattr(demo, "theme_for_launch", None),
        max_file_size=MAX_UPLOAD_SIZE,
        show_error=False,  # exceptions reach the page only as the messages the handlers write
        footer_links=["gradio", "settings"],
        ssr_mode=False,
        mcp_server=False,
        **kwargs,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Meta-checkpoint folder or Hub repo id; auto (default, or $METAGAN_MODEL): the bundled full-width "
        "checkpoint where the CPU computes bf16 natively, its half-width sibling elsewhere (about 3x faster there).",
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = DemoApp(args.model)
    try:
        launch_demo(build_demo(app), args.host, args.port)
    finally:
        app.cleanup()


if __name__ == "__main__":
    main(parse_args())
