#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Pretrain the diffusion rival: a small diffusers `UNet2DModel` (DDPM) on the classes a meta-checkpoint saw.

The rival a diffusers user would pick for few-shot generation is a pretrained DDPM fine-tuned on the shots
(`metagan_hub.baselines.diffusion.adapt_diffusion`). For a fair comparison it is pretrained on exactly the images the
meta-GAN was meta-trained on: `--data_from checkpoints/metagan-kanji-32` reads that checkpoint's training record
(`metagan_hub.json`: dataset, renders per class, render seed, class split seed, resolution, channels) and trains on the
*training* classes of the same `split_classes` split, so no held-out class is ever seen.

The structure follows diffusers' `examples/unconditional_image_generation/train_unconditional.py`: AdamW, the
noise-prediction MSE, gradient clipping at 1.0, optional EMA, Accelerate, `save_state` checkpoints with
`--resume_from_checkpoint latest`, and a final `DDPMPipeline.save_pretrained(output_dir)` with a model card and a
sample grid. Differences: no random horizontal flip (glyphs are not mirror-symmetric), and a CPU-time budget
(`--max_train_minutes`, the process CPU time of the training steps summed over resumed runs) so that the rival's
compute can be set equal to the meta-checkpoint's.

Resuming is bit-identical to an uninterrupted run on the same machine and thread count: the data order and the noise
of step `s` are functions of `(--seed, s)`, and the checkpoint holds the model and EMA weights (safetensors + JSON
config), the optimizer and learning-rate scheduler states and the RNG states (Accelerate's own files) and
`training_state.json` (step counter, budget spent, configuration), written last; a checkpoint is written to
`checkpoint-N.tmp` and renamed when complete. SIGTERM or Ctrl-C stops the run after the current step and saves a
checkpoint first.

Examples:

    # the rival of the bundled meta-checkpoint (its classes and renders), 90 CPU-minutes
    accelerate launch scripts/train_diffusion_rival.py --data_from checkpoints/metagan-kanji-32 \\
        --output_dir runs/ddpm-rival --max_train_minutes 90 --checkpointing_steps 100

    # continue the same run later with a larger budget
    accelerate launch scripts/train_diffusion_rival.py --data_from checkpoints/metagan-kanji-32 \\
        --output_dir runs/ddpm-rival --max_train_minutes 180 --checkpointing_steps 100 --resume_from_checkpoint latest

    # export a pipeline from the latest checkpoint without training further (--max_train_steps <= its step)
    python scripts/train_diffusion_rival.py --data_from checkpoints/metagan-kanji-32 --output_dir runs/ddpm-rival \\
        --resume_from_checkpoint latest --max_train_steps 0

The bundled rival `checkpoints/ddpm-rival-kanji-32` (the default `--rival` of `scripts/benchmark_fewshot.py`) is the
pipeline folder of such a run with `--save_fp16`, without its `checkpoint-*` folders; its card states its budget and
the meta-checkpoint's.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shlex
import signal
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid
from PIL import Image
from tqdm.auto import tqdm

from metagan_hub.hub.safety import check_finite_weights, weights_are_finite
from metagan_hub.training import checkpointing

logger = get_logger(__name__, log_level="INFO")

GRID_NAME = "samples.png"
# Options that may change between a run and its resumption (they do not change the trajectory).
RESUMABLE_OPTIONS = (
    "max_train_steps",
    "max_train_minutes",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "resume_from_checkpoint",
    "output_dir",
    "logging_dir",
    "report_to",
    "logging_steps",
    "torch_threads",
    "num_grid_images",
    "grid_inference_steps",
    "save_fp16",
)
# Sources of training classes (--dataset).
DATASETS = ("kanjivg", "fonts", "digits", "imagefolder")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")  # DDPMScheduler's
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
# Data options copied from a meta-checkpoint's training record by --data_from.
DATA_OPTIONS = (
    "dataset",
    "samples_per_class",
    "max_classes",
    "resolution",
    "channels",
    "split_seed",
    "num_val_classes",
    "num_test_classes",
)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive comma-separated integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data_from",
        type=str,
        default=None,
        help="A Meta-GAN checkpoint folder: train on exactly the training classes and renders of its training "
        "record (metagan_hub.json). Its data options override the data options below.",
    )
    data.add_argument(
        "--dataset",
        type=str,
        default=None,
        choices=DATASETS,
        help="A built-in source of classes (default kanjivg; imagefolder: the folder of --train_data_dir).",
    )
    data.add_argument(
        "--train_data_dir",
        type=str,
        default=None,
        help="An image folder with one subfolder per class (as train_metagan.py's option of the same name).",
    )
    data.add_argument("--samples_per_class", type=int, default=20, help="KanjiVG renders per character.")
    data.add_argument("--max_classes", type=int, default=None)
    data.add_argument("--render_seed", type=int, default=0, help="Seed of the KanjiVG renders.")
    data.add_argument("--split_seed", type=int, default=0)
    data.add_argument("--num_val_classes", type=int, default=None)
    data.add_argument("--num_test_classes", type=int, default=None)
    data.add_argument("--resolution", type=int, default=32)
    data.add_argument("--channels", type=int, default=1)
    data.add_argument("--cache_dir", type=str, default=None)

    model = parser.add_argument_group("model")
    model.add_argument("--block_out_channels", type=_int_list, default=[32, 64, 64])
    model.add_argument("--layers_per_block", type=int, default=1)
    model.add_argument(
        "--attention_levels",
        type=str,
        default="last",
        help="Resolution levels with self-attention blocks: 'last' (the lowest resolution), 'none', or "
        "comma-separated level indices.",
    )
    model.add_argument("--norm_num_groups", type=int, default=8)
    model.add_argument("--ddpm_num_steps", type=int, default=1000)
    model.add_argument("--ddpm_beta_schedule", type=str, default="linear", choices=BETA_SCHEDULES)
    model.add_argument("--prediction_type", type=str, default="epsilon", choices=("epsilon", "sample"))

    train = parser.add_argument_group("training")
    train.add_argument("--train_batch_size", type=int, default=64, help="Images per step and process.")
    train.add_argument("--learning_rate", type=float, default=2e-4)
    train.add_argument("--lr_scheduler", type=str, default="constant_with_warmup", choices=LR_SCHEDULERS)
    train.add_argument("--lr_warmup_steps", type=int, default=100)
    train.add_argument("--adam_beta1", type=float, default=0.95)
    train.add_argument("--adam_beta2", type=float, default=0.999)
    train.add_argument("--adam_weight_decay", type=float, default=1e-6)
    train.add_argument("--adam_epsilon", type=float, default=1e-8)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    train.add_argument("--ema_inv_gamma", type=float, default=1.0)
    train.add_argument("--ema_power", type=float, default=0.75)
    train.add_argument("--ema_max_decay", type=float, default=0.9999)
    train.add_argument("--mixed_precision", type=str, default="no", choices=("no", "bf16", "fp16"))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max_train_steps", type=int, default=None)
    train.add_argument(
        "--max_train_minutes",
        type=float,
        default=None,
        help="CPU-time budget: process CPU minutes spent in training steps, summed over resumed runs.",
    )
    train.add_argument("--torch_threads", type=int, default=None)

    io = parser.add_argument_group("checkpoints and output")
    io.add_argument("--output_dir", type=str, required=True)
    io.add_argument("--logging_dir", type=str, default="logs")
    io.add_argument("--report_to", type=str, default=None)
    io.add_argument("--logging_steps", type=int, default=10)
    io.add_argument("--checkpointing_steps", type=int, default=500, help="0 disables intermediate checkpoints.")
    io.add_argument("--checkpoints_total_limit", type=int, default=None)
    io.add_argument("--resume_from_checkpoint", type=str, default=None, help="'latest' or a checkpoint folder.")
    io.add_argument("--num_grid_images", type=int, default=64, help="Images in the sample grid (0: none).")
    io.add_argument("--grid_inference_steps", type=int, default=25, help="DDIM steps of the sample grid.")
    io.add_argument("--save_fp16", action="store_true", help="Save the final UNet weights in float16.")
    args = parser.parse_args(argv)

    if args.data_from is not None:
        apply_data_from(args)
    elif args.train_data_dir is not None:
        if args.dataset not in (None, "imagefolder"):
            parser.error(
                f"give either --dataset {args.dataset} or --train_data_dir {args.train_data_dir!r} (an image folder), "
                "not both."
            )
        args.dataset = "imagefolder"
    elif args.dataset is None:
        args.dataset = "kanjivg"
    if args.max_train_steps is None and args.max_train_minutes is None:
        parser.error("give --max_train_steps or --max_train_minutes (or both).")
    for name, value in vars(args).items():  # argparse takes "nan" and "inf" as floats
        if isinstance(value, float) and not math.isfinite(value):
            parser.error(f"--{name} must be a finite number, got {value}.")
    for name, low in (
        ("max_train_steps", 0),
        ("checkpointing_steps", 0),
        ("lr_warmup_steps", 0),
        ("logging_steps", 0),
        ("num_grid_images", 0),
        ("render_seed", 0),
        ("split_seed", 0),
        ("train_batch_size", 1),
        ("samples_per_class", 1),
        ("max_classes", 1),
        ("resolution", 2),
        ("channels", 1),
        ("layers_per_block", 1),
        ("norm_num_groups", 1),
        ("ddpm_num_steps", 1),
        ("grid_inference_steps", 1),
        ("checkpoints_total_limit", 1),
        ("torch_threads", 1),
    ):
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"--{name} must be an integer >= {low}, got {value}.")
    for name in ("learning_rate", "max_train_minutes", "adam_epsilon", "ema_inv_gamma"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be positive, got {value}.")
    for name in ("adam_weight_decay", "max_grad_norm", "ema_power"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0 (0: off), got {getattr(args, name)}.")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(args, name) < 1:
            parser.error(f"--{name} must be in [0, 1), got {getattr(args, name)}.")
    if not 0 < args.ema_max_decay <= 1:
        parser.error(f"--ema_max_decay must be in (0, 1], got {args.ema_max_decay}.")
    if any(c < 1 for c in args.block_out_channels):
        parser.error(f"--block_out_channels must be positive integers, got {args.block_out_channels}.")
    bad_groups = [c for c in args.block_out_channels if c % args.norm_num_groups]
    if bad_groups:
        parser.error(
            f"--norm_num_groups {args.norm_num_groups} must divide every --block_out_channels entry, not {bad_groups}."
        )
    if args.dataset == "imagefolder" and args.train_data_dir is None:
        parser.error("--dataset imagefolder needs --train_data_dir.")
    return args


def apply_data_from(args: argparse.Namespace) -> None:
    """Copy the data options of a Meta-GAN checkpoint's training record into `args`."""
    path = os.path.join(args.data_from, "metagan_hub.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--data_from {args.data_from!r}: no metagan_hub.json training record there.")
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    config = record.get("training_config") or {}
    missing = [k for k in DATA_OPTIONS if k not in config]
    if missing:
        raise ValueError(f"--data_from {args.data_from!r}: the training record lacks the data options {missing}.")
    for key in DATA_OPTIONS:
        setattr(args, key, config[key])
    # train_metagan.py renders KanjiVG with its --seed
    args.render_seed = int(config.get("seed", 0))
    if config.get("train_data_dir"):
        # train_metagan.py records an image folder as train_data_dir with no dataset
        args.train_data_dir = config["train_data_dir"]
        args.dataset = args.dataset or "imagefolder"
    if args.dataset not in DATASETS:
        source = f"dataset {args.dataset!r}"
        if config.get("dataset_name"):
            source = f"the Hugging Face dataset {config['dataset_name']!r}"
        raise ValueError(
            f"--data_from {args.data_from!r}: its training data ({source}) is not supported here; "
            f"supported: --dataset {', '.join(DATASETS)} (imagefolder: --train_data_dir)."
        )


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The options that fix the training trajectory (a resumed run must have the same)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in RESUMABLE_OPTIONS}


# ---------------------------------------------------------------------------------------------------- data


def build_train_images(args: argparse.Namespace) -> tuple[torch.Tensor, dict[str, Any]]:
    """All images of the training classes as one uint8 tensor `[N, C, H, W]`, and a description of them."""
    from metagan_hub.data import get_dataset

    common: dict[str, Any] = {"resolution": args.resolution, "channels": args.channels}
    if args.dataset == "kanjivg":
        kwargs: dict[str, Any] = {
            "samples_per_class": args.samples_per_class,
            "max_classes": args.max_classes,
            "seed": args.render_seed,
        }
        if args.cache_dir is not None:
            kwargs["cache_dir"] = args.cache_dir
        dataset = get_dataset("kanjivg", **common, **kwargs)
        description = f"KanjiVG renders ({args.samples_per_class} per character, render seed {args.render_seed})"
    elif args.dataset == "fonts":
        dataset = get_dataset("fonts", **common, max_classes=args.max_classes)
        description = "system-font glyph renders"
    elif args.dataset == "digits":
        dataset = get_dataset("digits", **common)
        description = "scikit-learn digits (8x8, upsampled)"
    else:
        dataset = get_dataset("imagefolder", root=args.train_data_dir, **common)
        description = f"image folder {args.train_data_dir}"
    train, val, test = dataset.split_classes(args.split_seed, args.num_val_classes, args.num_test_classes)
    images = torch.cat([train.class_images_uint8(i) for i in range(train.num_classes)])  # [N, C, H, W] uint8
    info = {
        "data": description,
        "classes (train / val / test)": f"{train.num_classes} / {val.num_classes} / {test.num_classes} "
        f"(split seed {args.split_seed})",
        "training images": int(images.shape[0]),
    }
    return images, info


def batch_indices(step: int, batch_size: int, num_images: int, seed: int) -> torch.Tensor:
    """Image indices of global batch `step`: consecutive slices of per-epoch permutations seeded by `(seed, epoch)`,
    so the data order depends only on the step (bit-identical resume)."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_images)
        perm = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return torch.tensor(out, dtype=torch.long)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of the noise and timesteps of one step on one process."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank + 1)


# ---------------------------------------------------------------------------------------------------- model


def make_unet(args: argparse.Namespace) -> UNet2DModel:
    levels = len(args.block_out_channels)
    if args.attention_levels == "last":
        attention = {levels - 1}
    elif args.attention_levels == "none":
        attention = set()
    else:
        attention = {i - 1 for i in _int_list(",".join(str(int(v) + 1) for v in args.attention_levels.split(",")))}
    down = tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(range(levels)))
    return UNet2DModel(
        sample_size=args.resolution,
        in_channels=args.channels,
        out_channels=args.channels,
        layers_per_block=args.layers_per_block,
        block_out_channels=tuple(args.block_out_channels),
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=args.norm_num_groups,
    )


def sample_grid(unet: UNet2DModel, scheduler: DDPMScheduler, num_images: int, steps: int, seed: int) -> Image.Image:
    """A grid of `num_images` DDIM samples (eta 0, `steps` steps)."""
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        batch_size=num_images,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=steps,
        eta=0.0,
        output_type="pil",
    ).images
    cols = int(math.ceil(math.sqrt(num_images)))
    rows = int(math.ceil(num_images / cols))
    blank = Image.new(images[0].mode, images[0].size)
    return make_image_grid(images + [blank] * (rows * cols - num_images), rows=rows, cols=cols)


# ---------------------------------------------------------------------------------------------------- checkpoints


# ---------------------------------------------------------------------------------------------------- model card


def machine_description(accelerator: Accelerator) -> str:
    if accelerator.device.type == "cuda":
        return f"{torch.cuda.get_device_name(accelerator.device)} (CUDA)"
    return (
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} torch thread(s)"
    )


def meta_checkpoint_budget(path: str | None) -> str | None:
    """One line on the compute of the meta-checkpoint the data came from, read from its training record."""
    if path is None:
        return None
    with open(os.path.join(path, "metagan_hub.json"), encoding="utf-8") as f:
        training = json.load(f).get("training") or {}
    parts = []
    if training.get("started_from"):
        parts.append(f"started from {training['started_from']}")
    steps = training.get("meta_steps")
    wall = training.get("wall_time_s")
    if steps is not None:
        line = f"then {steps} {training.get('algorithm', '')} meta-steps"
        if wall is not None:
            line += f" in {wall / 60:.1f} min wall time"
        if training.get("device"):
            line += f" on {training['device']}"
        parts.append(line)
    return "; ".join(parts) if parts else None


def write_model_card(args: argparse.Namespace, state: dict[str, Any], info: dict[str, Any], n_params: int) -> None:
    budget = [
        ("optimizer steps", f"{state['step']:,}"),
        ("images seen", f"{state['images_seen']:,} (batch {args.train_batch_size})"),
        ("CPU time of the training steps", f"{state['cpu_seconds'] / 60:.1f} min (process CPU time, all threads)"),
        ("wall time of the training steps", f"{state['wall_seconds'] / 60:.1f} min"),
        ("machine", state.get("machine", "")),
        ("runs (resumptions + 1)", str(state.get("runs", 1))),
    ]
    meta_budget = meta_checkpoint_budget(args.data_from)
    lines = [
        "---",
        "library_name: diffusers",
        "license: cc-by-sa-3.0" if args.dataset == "kanjivg" else "license: apache-2.0",
        "pipeline_tag: unconditional-image-generation",
        "tags:",
        "- diffusers",
        "- ddpm",
        "- unconditional-image-generation",
        "- few-shot",
        "- metagan_hub",
        "---",
        "",
        f"# DDPM rival ({args.resolution}x{args.resolution}, {args.channels} channel(s))",
        "",
        f"A small diffusers `UNet2DModel` ({n_params / 1e6:.2f} M parameters) trained as a DDPM "
        f"({args.ddpm_num_steps} steps, {args.ddpm_beta_schedule} betas, {args.prediction_type} prediction) on "
        + (
            f"exactly the training classes and renders of the Meta-GAN checkpoint `{args.data_from}`"
            if args.data_from
            else "the training classes below"
        )
        + ". It is the starting point of the diffusion contenders (full fine-tuning, LoRA, DomainStudio-style) that "
        "metagan_hub's few-shot benchmark runs against the meta-learned GAN.",
        "",
        "```python",
        "import torch",
        "from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline",
        "",
        'pipe = DDPMPipeline.from_pretrained("path/to/this/folder")',
        "ddim = DDIMPipeline(unet=pipe.unet, scheduler=DDIMScheduler.from_config(pipe.scheduler.config))",
        "generator = torch.Generator().manual_seed(0)",
        "images = ddim(batch_size=16, num_inference_steps=25, eta=0.0, generator=generator).images",
        "```",
        "",
        "## Data",
        "",
        "| key | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        "## Training budget",
        "",
        "| key | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in budget],
        "",
    ]
    if meta_budget:
        lines += [f"The Meta-GAN checkpoint it is compared with: {meta_budget}.", ""]
    lines += [
        "## Training options",
        "",
        "```",
        state.get("command", ""),
        "```",
        "",
        "| option | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in run_config(args).items()],
        "",
    ]
    if args.num_grid_images > 0:
        lines += [
            "## Samples",
            "",
            f"![samples]({GRID_NAME}) ({args.num_grid_images} samples, DDIM {args.grid_inference_steps} steps, eta 0, "
            f"seed {args.seed}{', EMA weights' if args.use_ema else ''})",
            "",
        ]
    if args.dataset == "kanjivg":
        from metagan_hub.data import LICENSE_NOTE

        lines += ["## Licence", "", LICENSE_NOTE, ""]
    with open(os.path.join(args.output_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------------------------------------------- main


class StopRequest:
    """Turns SIGTERM / SIGINT into a request to stop after the current step (a checkpoint is then saved)."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass

    def _handle(self, signum, frame) -> None:
        self.requested = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def main(args: argparse.Namespace) -> DDPMPipeline | None:
    """Train and save the pipeline; returns it on the main process (`None` elsewhere)."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    project_config = ProjectConfiguration(
        project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
    )
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision, log_with=args.report_to, project_config=project_config
    )
    set_seed(args.seed)
    config = run_config(args)

    # 1. data and models
    with accelerator.main_process_first():
        images, info = build_train_images(args)
    num_images = images.shape[0]
    unet = make_unet(args)
    n_params = sum(p.numel() for p in unet.parameters())
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=args.ddpm_num_steps,
        beta_schedule=args.ddpm_beta_schedule,
        prediction_type=args.prediction_type,
    )
    ema: EMAModel | None = None
    if args.use_ema:
        ema = EMAModel(
            unet.parameters(),
            decay=args.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=args.ema_inv_gamma,
            power=args.ema_power,
            model_cls=UNet2DModel,
            model_config=unet.config,
        )

    # 2. checkpoint hooks: the UNet and its EMA are saved with save_pretrained (safetensors + JSON config)
    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if ema is not None:
                ema.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                accelerator.unwrap_model(model).save_pretrained(os.path.join(output_dir, "unet"))
        while weights:
            weights.pop()

    def load_model_hook(models, input_dir):
        if ema is not None:
            loaded = EMAModel.from_pretrained(os.path.join(input_dir, "unet_ema"), UNet2DModel)
            ema.load_state_dict(loaded.state_dict())
            del loaded
        while models:
            model = accelerator.unwrap_model(models.pop())
            loaded = UNet2DModel.from_pretrained(input_dir, subfolder="unet")
            model.register_to_config(**loaded.config)
            model.load_state_dict(loaded.state_dict())
            del loaded

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=(args.max_train_steps or 10**9) * accelerator.num_processes,
    )
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)

    # 3. resume
    state: dict[str, Any] = {
        "step": 0,
        "images_seen": 0,
        "cpu_seconds": 0.0,
        "wall_seconds": 0.0,
        "runs": 0,
        "config": config,
    }
    if accelerator.is_main_process:
        checkpointing.clean_incomplete_checkpoints(args.output_dir)  # saves of a killed run
    accelerator.wait_for_everyone()
    path = checkpointing.resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if path is not None:
        saved = checkpointing.read_checkpoint_state(path, config)
        checkpointing.warn_if_foreign_checkpoint(path, args.output_dir)
        accelerator.load_state(path)
        state.update({k: saved[k] for k in ("step", "images_seen", "cpu_seconds", "wall_seconds", "runs")})
        logger.info(f"resumed from {path} at step {state['step']} ({state['cpu_seconds'] / 60:.1f} CPU-minutes)")
    state["runs"] += 1
    state["machine"] = machine_description(accelerator)
    state["command"] = "python " + shlex.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    state["n_params"] = n_params
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        accelerator.init_trackers("train_diffusion_rival", config={k: str(v) for k, v in config.items()})
    logger.info(f"{n_params / 1e6:.2f} M parameters; {num_images} training images; {info}")

    # 4. train
    def budget_left() -> bool:
        if args.max_train_steps is not None and state["step"] >= args.max_train_steps:
            return False
        if args.max_train_minutes is not None and state["cpu_seconds"] >= 60.0 * args.max_train_minutes:
            return False
        return True

    world, rank = accelerator.num_processes, accelerator.process_index
    global_batch = args.train_batch_size * world
    progress = tqdm(
        total=args.max_train_steps, initial=state["step"], disable=not accelerator.is_local_main_process, desc="steps"
    )
    last_saved = state["step"] if path is not None else -1
    stop = StopRequest()
    unet.train()
    while budget_left() and not stop.requested:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        step = state["step"]
        index = batch_indices(step, global_batch, num_images, args.seed)[rank::world]
        clean = images[index].float().div(127.5).sub(1.0).to(accelerator.device)  # [B, C, H, W] in [-1, 1]
        generator = step_generator(args.seed, step, rank)
        noise = torch.randn(clean.shape, generator=generator).to(accelerator.device)
        timesteps = torch.randint(0, args.ddpm_num_steps, (clean.shape[0],), generator=generator)
        timesteps = timesteps.to(accelerator.device)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        with accelerator.accumulate(unet), accelerator.autocast():
            prediction = unet(noisy, timesteps).sample
            target = noise if args.prediction_type == "epsilon" else clean
            loss = F.mse_loss(prediction.float(), target.float())
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        if not weights_are_finite(unet):  # the same on every process: DDP averages the gradients
            latest = checkpointing.list_checkpoints(args.output_dir)
            raise RuntimeError(
                f"step {state['step'] + 1} made the UNet's weights NaN or infinite (loss {loss.item():.4g}); the run "
                f"stopped and saved nothing of it (latest checkpoint: {latest[-1][1] if latest else 'none'}). "
                f"Lower --learning_rate (got {args.learning_rate:g}) or --max_grad_norm, or train with "
                "--mixed_precision no."
            )
        if ema is not None:
            ema.step(unet.parameters())
        state["step"] += 1
        state["images_seen"] += global_batch
        state["cpu_seconds"] += time.process_time() - cpu0
        state["wall_seconds"] += time.perf_counter() - wall0
        progress.update(1)
        logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0]}
        if ema is not None:
            logs["ema_decay"] = ema.cur_decay_value
        progress.set_postfix(**logs, cpu_min=f"{state['cpu_seconds'] / 60:.1f}")
        accelerator.log(logs, step=state["step"])
        if args.logging_steps and state["step"] % args.logging_steps == 0:
            logger.info(
                f"step {state['step']}: loss {logs['loss']:.4f}, {state['cpu_seconds'] / 60:.2f} CPU-min, "
                f"{state['wall_seconds'] / 60:.2f} wall-min"
            )
        if args.checkpointing_steps and state["step"] % args.checkpointing_steps == 0:
            checkpointing.save_checkpoint(
                accelerator, args.output_dir, state, {"unet": unet}, total_limit=args.checkpoints_total_limit
            )
            last_saved = state["step"]
    progress.close()
    stop.restore()
    if last_saved != state["step"]:
        checkpointing.save_checkpoint(
            accelerator, args.output_dir, state, {"unet": unet}, total_limit=args.checkpoints_total_limit
        )
    if stop.requested:
        logger.info(
            f"stopped by signal {stop.requested} at step {state['step']}; the checkpoint was saved, continue with "
            "--resume_from_checkpoint latest."
        )
        accelerator.end_training()
        return None

    # 5. final pipeline (EMA weights), sample grid and model card
    pipeline = None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final_unet = accelerator.unwrap_model(unet)
        if ema is not None:
            final_unet = make_unet(args)
            ema.copy_to(final_unet.parameters())
        final_unet.eval()
        pipeline = DDPMPipeline(unet=final_unet, scheduler=noise_scheduler)
        if args.save_fp16:
            pipeline.unet.to(torch.float16)
            check_finite_weights({"unet": pipeline.unet}, action="save the UNet in float16 (--save_fp16)")
        pipeline.save_pretrained(args.output_dir)
        if args.save_fp16:
            pipeline.unet.to(torch.float32)
        if args.num_grid_images > 0:
            with torch.no_grad():
                grid = sample_grid(
                    final_unet, noise_scheduler, args.num_grid_images, args.grid_inference_steps, args.seed
                )
            grid.save(os.path.join(args.output_dir, GRID_NAME))
        write_model_card(args, state, info, n_params)
        with open(os.path.join(args.output_dir, "training_record.json"), "w", encoding="utf-8") as f:
            json.dump({**state, "data": info}, f, indent=2)
        logger.info(
            f"saved the pipeline to {args.output_dir}: {state['step']} steps, {state['cpu_seconds'] / 60:.1f} "
            f"CPU-minutes, {state['wall_seconds'] / 60:.1f} wall-minutes"
        )
    accelerator.end_training()
    return pipeline


if __name__ == "__main__":
    main(parse_args())
