#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Adapt a Meta-GAN meta-checkpoint to a new class from a few images.

Example:

    accelerate launch scripts/adapt_metagan.py --pretrained_model_name_or_path checkpoints/metagan-kanji-32 \\
        --train_data_dir my_images/ --output_dir runs/adapted --num_steps 200 --mixed_precision auto

Writes the adapted pipeline (or only its LoRA adapter with --lora_rank), a sample grid `samples.png`, the shots
`shots.png` (both shown in the model card), a loss curve `loss_curve.png` and `adaptation.json` into
--output_dir; --push_to_hub uploads them. --output_dir must be new or empty (--overwrite_output_dir writes into a
folder that holds files, replacing those of the same names) and never the checkpoint's own folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers.utils import make_image_grid
from PIL import Image, ImageDraw

from metagan_hub import MetaGANPipeline
from metagan_hub.data.images import load_images
from metagan_hub.hub.model_card import variety_setting
from metagan_hub.hub.safety import is_inside, public_card_info
from metagan_hub.pipelines.copy_filter import check_max_copy_share, check_replacement_spread
from metagan_hub.pipelines.pipeline_metagan import LORA_WEIGHT_NAME
from metagan_hub.training.adaptation import LORA_LR_MULTIPLIER, LR_SCHEDULERS, check_adapt_options
from metagan_hub.training.diversity import DIVERSITY_LOSSES
from metagan_hub.training.gan_step import MIXED_PRECISION_CHOICES
from metagan_hub.training.losses import LOSS_TYPES

logger = get_logger(__name__, log_level="INFO")

# the seeds torch.Generator.manual_seed takes
SEED_RANGE = (-(2**63), 2**64 - 1)


def as_options(err: ValueError) -> str:
    """A library check's message with its `argument` names written as this script's --options."""
    return re.sub(r"`(\w+)(=[^`]*)?`", r"--\1\2", str(err))


def adapt_options(args: argparse.Namespace) -> dict[str, object]:
    """The `adapt()` options this command line sets (those left out keep `adapt()`'s defaults; the card's variety
    setting is applied in `main`)."""
    options = {
        name: getattr(args, name)
        for name in (
            "num_steps",
            "learning_rate",
            "lr_scheduler",
            "lr_warmup_steps",
            "loss",
            "batch_size",
            "r1_gamma",
            "r1_interval",
            "freeze_discriminator_blocks",
            "diversity_loss",
            "diversity_weight",
            "diversity_batch_size",
            "diversity_interval",
            "cdc_anchor_interval",
            "mode_seeking_weight",
            "copy_repulsion_weight",
            "shot_reconstruction_weight",
            "copy_stop",
            "shot_augment",
        )
        if getattr(args, name) is not None
    }
    augment = None if args.augment.lower() in ("", "none") else tuple(a.strip() for a in args.augment.split(","))
    options.update(
        augment=augment,
        ema_decay=args.ema_decay,
        lora_rank=args.lora_rank,
        layer_lr_scales=not args.no_layer_lr_scales,
        tone_match=False if args.no_tone_match else None,
    )
    return options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Adapt a Meta-GAN to a new class from a few images.")
    parser.add_argument(
        "--pretrained_model_name_or_path",
        type=str,
        required=True,
        help="Folder or Hub repo id of a Meta-GAN (meta-)checkpoint with its discriminator.",
    )
    parser.add_argument("--revision", type=str, default=None, help="Hub revision of the checkpoint.")
    parser.add_argument("--train_data_dir", type=str, default=None, help="A folder with the few images.")
    parser.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help="A Hugging Face datasets name or a local `imagefolder` path holding the few images.",
    )
    parser.add_argument("--dataset_split", type=str, default="train")
    parser.add_argument("--image_column", type=str, default="image")
    parser.add_argument("--max_shots", type=int, default=None, help="Use at most this many images (the first ones).")
    parser.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="Must equal the checkpoint's sample_size when given (a safety check).",
    )
    parser.add_argument("--num_steps", type=int, default=None, help="Default: adapt()'s default (200).")
    parser.add_argument("--learning_rate", type=float, default=None, help="Default: adapt()'s default (2e-4).")
    parser.add_argument("--batch_size", type=int, default=None, help="Default: adapt()'s default.")
    parser.add_argument(
        "--lr_scheduler",
        type=str,
        default=None,
        choices=list(LR_SCHEDULERS),
        help="Learning-rate schedule over the steps (diffusers' get_scheduler; default: adapt()'s, constant).",
    )
    parser.add_argument(
        "--lr_warmup_steps", type=int, default=None, help="Linear warm-up steps of the schedule (default: 0)."
    )
    parser.add_argument(
        "--loss",
        type=str,
        default=None,
        choices=list(LOSS_TYPES),
        help="GAN loss (default: adapt()'s default, nonsaturating).",
    )
    parser.add_argument("--r1_gamma", type=float, default=None, help="R1 weight (default: adapt()'s default, 1.0).")
    parser.add_argument(
        "--r1_interval", type=int, default=None, help="Lazy R1: penalty every N steps (default: adapt()'s default)."
    )
    parser.add_argument(
        "--augment",
        type=str,
        default="translation,cutout,color",
        help="Comma-separated DiffAugment policies, or 'none'.",
    )
    parser.add_argument(
        "--freeze_discriminator_blocks",
        type=int,
        default=None,
        help="FreezeD: lowest discriminator blocks kept frozen, 0 for none (default: adapt()'s default).",
    )
    parser.add_argument("--ema_decay", type=float, default=None)
    parser.add_argument(
        "--diversity_loss",
        type=str,
        default=None,
        choices=list(DIVERSITY_LOSSES),
        help="Diversity-preserving term (adapt()'s diversity_loss): cdc (cross-domain correspondence), dcl (dual "
        "contrastive learning) or mixdl (mixup-based distance learning); default: none.",
    )
    parser.add_argument(
        "--diversity_weight", type=float, default=None, help="Weight of the diversity term (default: the method's)."
    )
    parser.add_argument(
        "--diversity_batch_size",
        type=int,
        default=None,
        help="Latents per generator update while a diversity term is on (>= 3; mixdl: >= 2, plus as many mixes; "
        "default: --batch_size).",
    )
    parser.add_argument(
        "--diversity_interval",
        type=int,
        default=None,
        help="Run the diversity term on every this many generator updates only, weighted by the interval (lazy "
        "regularization: part of the cost; default: every update).",
    )
    parser.add_argument(
        "--mode_seeking_weight",
        type=float,
        default=None,
        help="Weight of the mode-seeking term against collapsed samples (default: adapt()'s default, 0 = off).",
    )
    parser.add_argument(
        "--copy_repulsion_weight",
        type=float,
        default=None,
        help="Weight of the term that pushes samples away from near-copies of the shots (default: 0 = off).",
    )
    parser.add_argument(
        "--shot_reconstruction_weight",
        type=float,
        default=None,
        help="Weight of the term that ties each training image to a latent and has the generator reproduce it "
        "there, so that the images are not averaged into one mode (adapt()'s shot_reconstruction_weight; default: 0 "
        "= off).",
    )
    parser.add_argument(
        "--copy_stop",
        type=float,
        default=None,
        help="Stop adapting when more than this share of monitor samples are near-copies of the shots in the "
        "checkpoint's copy encoder (closer to a shot than small affine distortions of it), returning the generator "
        "of the check before (adapt()'s copy_stop; default: off; 0.3 in the variety checkpoint's setting).",
    )
    parser.add_argument(
        "--shot_augment",
        type=float,
        default=None,
        help="Strength (0-3) of random small affine maps of the shots, learned by the generator (default: 0 = off).",
    )
    parser.add_argument(
        "--no_tone_match",
        action="store_true",
        help="Do not fit the output tone curve that gives the samples the shots' pixel-value distribution (adapt()'s "
        "tone_match, on by default for full adaptation, off with --lora_rank).",
    )
    parser.add_argument(
        "--cdc_anchor_interval",
        type=int,
        default=None,
        help="With --diversity_loss cdc: anchor-region steps every N steps, 0 for none (default: the paper's 4).",
    )
    parser.add_argument(
        "--no_layer_lr_scales",
        action="store_true",
        help="Ignore the per-tensor learning-rate scales a checkpoint meta-trained with --learn_inner_lr carries "
        "(adapt(layer_lr_scales=False)); without this flag they are applied.",
    )
    parser.add_argument(
        "--lora_rank",
        type=int,
        default=None,
        help=f"Train and save only a LoRA adapter of this rank (it trains at {LORA_LR_MULTIPLIER:g}x "
        "--learning_rate). Rank 16 was 0.09 less often recognised than full adaptation on kanji; lower ranks lose "
        "more.",
    )
    parser.add_argument(
        "--mixed_precision",
        type=str,
        default="auto",
        choices=list(MIXED_PRECISION_CHOICES),
        help="auto (default): bf16 where the device computes it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX), "
        "else fp32. bf16 on other CPUs is emulated and about 10x slower. fp16 needs a GPU.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output_dir",
        type=str,
        default="metagan-adapted",
        help="A new or empty folder (not the checkpoint's own, nor one inside or around it).",
    )
    parser.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Write into an --output_dir that already holds files (e.g. an earlier run's), replacing those of the "
        "same names.",
    )
    parser.add_argument("--validation_images", type=int, default=64, help="Images in the sample grid (0: none).")
    parser.add_argument(
        "--latent_scale",
        type=float,
        default=None,
        help="Scale of the sample grid's latents (the pipeline's latent_scale; > 1 spreads the samples, < 1 "
        "truncates; default 1).",
    )
    parser.add_argument(
        "--avoid_copies",
        action="store_true",
        help="Replace the sample grid's near-copies of the training images (the pipeline's avoid_copies_of: judged in "
        "the adapted discriminator's features, see --copy_margin).",
    )
    parser.add_argument(
        "--copy_margin",
        type=float,
        default=None,
        help="With --avoid_copies: the pipeline's copy_margin (default 1; larger replaces more).",
    )
    parser.add_argument(
        "--replacement_spread",
        type=float,
        default=None,
        help="With --avoid_copies: the pipeline's replacement_spread in (0, 1] (default 1: new draws; 0.5: drawn "
        "near the near-copy, more faithful and slower).",
    )
    parser.add_argument(
        "--max_copy_share",
        type=float,
        default=None,
        help="With --avoid_copies: the pipeline's max_copy_share in (0, 1], the largest share of the samples that "
        "counts as near-copies (default 0.2; larger replaces more, at the cost of more draws).",
    )
    parser.add_argument(
        "--variety",
        action="store_true",
        help="Use the variety setting the checkpoint's card recommends (`variety_setting` in its metagan_hub.json: "
        "--shot_augment and --latent_scale, --diversity_loss / --diversity_weight where it names a diversity "
        "term, --copy_stop where it names one, and --avoid_copies --copy_margin where it names a copy_margin; for "
        "more varied samples and fewer near-copies of the shots, somewhat less faithful). An error for a checkpoint "
        "whose card has none.",
    )
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", type=str, default=None)
    parser.add_argument("--hub_token", type=str, default=None)
    args = parser.parse_args(argv)
    for name, value in vars(args).items():  # argparse takes "nan" and "inf" as floats
        if isinstance(value, float) and not math.isfinite(value):
            parser.error(f"--{name} must be a finite number, got {value}")
    if (args.train_data_dir is None) == (args.dataset_name is None):
        parser.error("give exactly one of --train_data_dir or --dataset_name")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. me/metagan-my-glyph)")
    if args.validation_images < 0:
        parser.error(f"--validation_images must be >= 0, got {args.validation_images}")
    if args.latent_scale is not None and args.latent_scale <= 0:
        parser.error(f"--latent_scale must be > 0, got {args.latent_scale}")
    if args.copy_margin is not None and not args.avoid_copies:
        parser.error(f"--copy_margin {args.copy_margin} needs --avoid_copies")
    if args.copy_margin is not None and args.copy_margin <= 0:
        parser.error(f"--copy_margin must be > 0, got {args.copy_margin}")
    for name, check in (("replacement_spread", check_replacement_spread), ("max_copy_share", check_max_copy_share)):
        value = getattr(args, name)
        if value is not None and not args.avoid_copies:
            parser.error(f"--{name} {value} needs --avoid_copies")
        if value is not None:
            try:
                check(value)  # the pipeline's own rule: (0, 1]
            except ValueError as err:
                parser.error(f"--{name}: {err}")
    if args.variety and (args.shot_augment is not None or args.latent_scale is not None):
        parser.error(
            "--variety takes --shot_augment and --latent_scale from the checkpoint's card; give either --variety or "
            f"those options (got --shot_augment {args.shot_augment}, --latent_scale {args.latent_scale})"
        )
    for name in ("max_shots", "resolution"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        parser.error(f"--seed must be from {SEED_RANGE[0]} to {SEED_RANGE[1]} (torch's seeds), got {args.seed}")
    # adapt()'s own checks (its defaults for options not given), before the checkpoint is loaded
    options = adapt_options(args)
    if args.variety and args.diversity_loss is None:  # the card's setting may name the diversity term
        for name in ("diversity_weight", "diversity_batch_size", "diversity_interval", "cdc_anchor_interval"):
            options.pop(name, None)
    try:
        check_adapt_options(**options)
    except (ValueError, TypeError) as err:
        parser.error(as_options(err))
    # the folders: nothing the user has is overwritten
    if args.train_data_dir is not None and not os.path.exists(args.train_data_dir):
        parser.error(f"--train_data_dir {args.train_data_dir} does not exist")
    checkpoint = args.pretrained_model_name_or_path
    if os.path.isdir(checkpoint) and (
        is_inside(args.output_dir, checkpoint) or is_inside(checkpoint, args.output_dir)
    ):
        parser.error(
            f"--output_dir {args.output_dir} overlaps the checkpoint folder this run reads, "
            f"--pretrained_model_name_or_path {checkpoint} (the same folder, or one inside the other), whose files it "
            "could overwrite; give an --output_dir outside it"
        )
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        parser.error(f"--output_dir {args.output_dir} is a file, not a folder")
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite_output_dir:
        held = sorted(os.listdir(args.output_dir))
        parser.error(
            f"--output_dir {args.output_dir} already exists and holds {len(held)} files or folders (e.g. "
            f"{', '.join(held[:3])}), which this run would overwrite where names match (model_index.json, README.md, "
            "adaptation.json, the weights, the grids); give a new --output_dir, or --overwrite_output_dir to write "
            "into it anyway"
        )
    # a LoRA adapter written beside a full pipeline (or the reverse) would leave the folder loading as the other one
    full_there = os.path.isfile(os.path.join(args.output_dir, "model_index.json"))
    lora_there = os.path.isfile(os.path.join(args.output_dir, LORA_WEIGHT_NAME))
    if (args.lora_rank is not None and full_there) or (args.lora_rank is None and lora_there):
        there, now = ("a full pipeline", "a LoRA adapter") if full_there else ("a LoRA adapter", "a full pipeline")
        parser.error(
            f"--output_dir {args.output_dir} holds {there}; this run writes {now}, and the folder would then load as "
            "the wrong one: give a new --output_dir"
        )
    return args


def load_shots(args: argparse.Namespace):
    if args.train_data_dir is not None:
        return args.train_data_dir
    from datasets import load_dataset

    if os.path.isdir(args.dataset_name):
        dataset = load_dataset("imagefolder", data_dir=args.dataset_name, split=args.dataset_split)
    else:
        dataset = load_dataset(args.dataset_name, split=args.dataset_split)
    if args.image_column not in dataset.column_names:
        raise ValueError(
            f"--image_column {args.image_column!r} is not a column of {args.dataset_name!r}; "
            f"columns: {dataset.column_names}."
        )
    if args.max_shots is not None:
        dataset = dataset.select(range(min(args.max_shots, len(dataset))))
    return dataset


def plot_losses(losses: list[dict], path: str, size: tuple[int, int] = (640, 360)) -> None:
    """Draw the per-step discriminator and generator losses as a PNG with Pillow (no plotting dependency)."""
    width, height = size
    pad = 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    series = {key: [row[key] for row in losses if key in row] for key in ("d_loss", "g_loss")}
    values = [v for vs in series.values() for v in vs if math.isfinite(v)]
    if not values:
        image.save(path)
        return
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1.0
    draw.rectangle([pad, pad // 2, width - pad // 2, height - pad], outline="black")
    colors = {"d_loss": (200, 40, 40), "g_loss": (40, 80, 200)}
    n = max(len(losses) - 1, 1)
    for key, vs in series.items():
        points = [
            (pad + (width - 1.5 * pad) * i / n, (height - pad) - (height - 1.5 * pad) * (v - lo) / (hi - lo))
            for i, v in enumerate(vs)
            if math.isfinite(v)
        ]
        if len(points) > 1:
            draw.line(points, fill=colors[key], width=2)
    draw.text((pad, height - pad + 8), f"step 0..{len(losses) - 1}   red: d_loss   blue: g_loss", fill="black")
    draw.text((4, pad // 2), f"{hi:.2f}", fill="black")
    draw.text((4, height - pad - 10), f"{lo:.2f}", fill="black")
    image.save(path)


def save_grid(images: list[Image.Image], path: str) -> None:
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    blank = Image.new(images[0].mode, images[0].size, 0)
    make_image_grid(images + [blank] * (rows * cols - len(images)), rows=rows, cols=cols).save(path)


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    accelerator = Accelerator()
    pipe = MetaGANPipeline.from_pretrained(args.pretrained_model_name_or_path, revision=args.revision)
    pipe.to(accelerator.device)
    if args.resolution is not None and args.resolution != pipe.generator.config.sample_size:
        raise ValueError(
            f"--resolution {args.resolution} does not match the checkpoint's sample_size "
            f"{pipe.generator.config.sample_size}; images are resized to the checkpoint's resolution."
        )
    shot_augment, latent_scale = args.shot_augment, 1.0 if args.latent_scale is None else args.latent_scale
    copy_margin = (args.copy_margin or 1.0) if args.avoid_copies else None
    if args.variety:
        setting = variety_setting(pipe.card_info)
        if setting is None:
            raise ValueError(
                f"--variety: the card of {args.pretrained_model_name_or_path!r} recommends no variety setting (no "
                "`variety_setting` in its metagan_hub.json); give --shot_augment and --latent_scale yourself."
            )
        for key in ("diversity_loss", "copy_stop", "copy_margin"):  # the setting's options that a flag also sets
            given = getattr(args, key)
            if key in setting and given not in (None, setting[key]):
                raise ValueError(
                    f"--variety uses the card's {key}={setting[key]!r}, which conflicts with --{key} {given}; drop "
                    "one of them."
                )
        shot_augment, latent_scale = setting["shot_augment"], setting["latent_scale"]
        if "copy_margin" in setting:  # the setting samples with the near-copy filter at its margin
            copy_margin = setting["copy_margin"]
        if "copy_stop" in setting:  # the setting stops adapting when the generator starts to copy
            args.copy_stop = setting["copy_stop"]
        if "diversity_loss" in setting:
            args.diversity_loss = setting["diversity_loss"]
            if args.diversity_weight is None:
                args.diversity_weight = setting.get("diversity_weight")
        logger.info("--variety: the card's setting, %s", ", ".join(f"{k}={v}" for k, v in setting.items()))
    images = load_shots(args)
    cfg = pipe.generator.config
    if args.train_data_dir is not None and args.max_shots is not None:
        images = load_images(images, sample_size=cfg.sample_size, channels=cfg.out_channels)[: args.max_shots]
    if copy_margin is not None and args.validation_images > 0:  # the grid's near-copy filter, checked before adapting
        shots = load_images(
            images, sample_size=cfg.sample_size, channels=cfg.out_channels, image_column=args.image_column
        )
        try:
            pipe.check_copy_filter_inputs(shots, None)  # the pipeline's own rule (at least 2 images)
        except ValueError as err:
            source = (
                "--variety (the card's copy_margin)" if args.variety and not args.avoid_copies else "--avoid_copies"
            )
            raise ValueError(f"{source} replaces the grid's near-copies of the training images: {err}") from None
    options = adapt_options(args)
    if shot_augment is not None:
        options["shot_augment"] = shot_augment
    adapted = pipe.adapt(
        images,
        **options,
        mixed_precision=args.mixed_precision,
        generator=torch.Generator().manual_seed(args.seed),
        accelerator=accelerator,
        image_column=args.image_column,
    )
    record = adapted.card_info["adaptation"]
    if not accelerator.is_main_process:
        accelerator.end_training()
        return

    os.makedirs(args.output_dir, exist_ok=True)
    card_images = []  # the grids go into the folder first, so that the model card can show them
    if args.validation_images > 0:
        shots = load_images(
            images, sample_size=cfg.sample_size, channels=cfg.out_channels, image_column=args.image_column
        )
        filter_options = {}
        if copy_margin is not None:
            filter_options = {"avoid_copies_of": shots, "copy_margin": copy_margin}
            if args.replacement_spread is not None:
                filter_options["replacement_spread"] = args.replacement_spread
            if args.max_copy_share is not None:
                filter_options["max_copy_share"] = args.max_copy_share
        samples = adapted(
            batch_size=args.validation_images,
            generator=torch.Generator().manual_seed(args.seed),
            latent_scale=latent_scale,
            **filter_options,
        ).images
        save_grid(samples, os.path.join(args.output_dir, "samples.png"))
        shots = ((shots.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        save_grid(
            MetaGANPipeline.numpy_to_pil(shots.astype(np.float32) / 255.0), os.path.join(args.output_dir, "shots.png")
        )
        card_images = ["shots.png", "samples.png"]
    if args.lora_rank is not None:
        adapted.save_lora_weights(args.output_dir, repo_id=args.hub_model_id, card_images=card_images)
    else:
        adapted.save_pretrained(args.output_dir, repo_id=args.hub_model_id, card_images=card_images)
    with open(os.path.join(args.output_dir, "adaptation.json"), "w", encoding="utf-8") as f:
        # as in the card: a local base model's folder is not written (the upload refuses local paths)
        json.dump(public_card_info(record), f, indent=2, default=str)
    plot_losses(record["losses"], os.path.join(args.output_dir, "loss_curve.png"))
    logger.info(
        "adapted %d shots for %d steps in %.1f s; wrote %s",
        record["shots"],
        record["steps_run"],
        record["wall_time_s"],
        args.output_dir,
    )
    if args.push_to_hub:
        url = adapted.push_to_hub(
            args.hub_model_id,
            token=args.hub_token,
            lora_only=args.lora_rank is not None,
            save_directory=args.output_dir,
            card_images=card_images,
        )
        logger.info("pushed to %s", url)
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
