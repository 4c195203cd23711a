#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Meta-train a Meta-GAN (Reptile, first-order MAML, or the pooled-pretraining baseline) over image classes.

Examples:

    # one process (CPU or one GPU)
    accelerate launch scripts/train_metagan.py --dataset kanjivg --algorithm reptile --output_dir runs/meta

    # two CPU processes (gloo); each process meta-trains on its own share of the tasks of every meta step
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \\
        --mixed_precision no --dynamo_backend no scripts/train_metagan.py --dataset digits --output_dir runs/digits

    # the FIGR recipe (Reptile + WGAN-GP, 10 inner SGD steps at 1e-3, outer Adam at 1e-4, 4 shots)
    accelerate launch scripts/train_metagan.py --dataset kanjivg --preset figr --output_dir runs/figr

The classes are split into train / validation / test classes (`--split_seed`, `--num_val_classes`,
`--num_test_classes`); meta-training only sees the training classes. `--meta_batch_size` is the number of tasks per
meta step over *all* processes, so the same command follows the same trajectory on 1 or N processes (up to float
summation order). G and D are never wrapped in DDP: inner loops run locally, and only the outer update is averaged.

Validation (`--validation_steps`, and once at the end) adapts the current meta-weights to the first
`--num_validation_classes` *test* classes with `MetaGANPipeline.adapt` (`--validation_shots` images, the rest of the
class held out), writes a sample grid to `<output_dir>/validation/`, and reports `heldout_distance`: a symmetric
nearest-neighbour (Chamfer) distance in pixel space between the generated samples and the class's held-out real
images -- the mean of (for each sample, the RMS pixel distance to its nearest held-out real image) and (for each
held-out real image, the RMS distance to its nearest sample), images in [-1, 1]. Lower is better; the second term
penalizes mode collapse. It is feature-free (no pretrained network exists offline), so compare it only between runs
on the same data, resolution and validation settings. Beside it, `statistic_spread` (and `_unadapted`, the
meta-weights' own samples) gives how much the samples vary per-image pixel statistics such as stroke width relative to
the held-out images (`metagan_hub.metrics.statistic_spread`; 1: as much as the data, below 1: a dropped factor).

The yardstick (`--yardstick_classes N`, at the same times) judges what users get instead: it adapts the current
meta-weights with `adapt()` as users run it (`--yardstick_adapt_steps`, default 200) to the first N *validation*
classes (never meta-trained on, never in the benchmark), samples `--yardstick_samples` images per class and scores
them in the features of an evaluation classifier trained on other images of those classes (per class: a shot pool of
`--validation_shots`, half of the rest as real held-out images, the other half trains the classifier, which also
learns `--yardstick_confuser_classes` training classes; cached): mean
recognisability plus mean recall, i.e. fidelity and diversity (`metagan_hub.metrics.yardstick`). Results go to
`<output_dir>/yardstick.jsonl`; with `--select_best` the pipeline with the highest score so far is kept in
`<output_dir>/best/` (written to `best.tmp` and swapped in once complete, with its `yardstick.json`). With
`--select_min_recognisability F` the selection is "the most varied of the faithful": the highest recall among the
checkpoints whose recognisability reaches F (the highest recognisability while none does).

Checkpoints (`--checkpointing_steps`) are written with `accelerator.save_state` to `checkpoint-N.tmp` and renamed to
`checkpoint-N` only once complete, so a kill during a save never leaves a broken latest checkpoint. The final
pipeline is written to `--output_dir` with `MetaGANPipeline.save_pretrained` (model card included) and uploaded with
`--push_to_hub` (checkpoints are never uploaded).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import shlex
import shutil
import sys
import time
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, broadcast, parse_flag_from_env, set_seed
from diffusers.utils import make_image_grid
from PIL import Image
from tqdm.auto import tqdm

import metagan_hub
from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline
from metagan_hub.hub.safety import check_finite_weights, replace_nonfinite, write_json_strict
from metagan_hub.metrics import IMAGE_STATISTICS, heldout_distance, statistic_spread
from metagan_hub.metrics.classifiers import ClassifierRecipe, EvaluationClassifier, fit_classifier, save_classifier
from metagan_hub.metrics.yardstick import selection_key
from metagan_hub.training import checkpointing
from metagan_hub.training.adaptation import LR_SCALES_KEY
from metagan_hub.training.augment import AUGMENT_POLICIES, check_shot_augment
from metagan_hub.training.diversity import DIVERSITY_LOSSES
from metagan_hub.training.gan_step import MIXED_PRECISION_CHOICES, resolve_mixed_precision
from metagan_hub.training.losses import LOSS_TYPES, WGAN_DRIFT
from metagan_hub.training.meta_learning import (
    ALGORITHMS,
    COVERAGE_SPACES,
    INNER_OPTIMIZERS,
    OUTER_OPTIMIZERS,
    MetaLearner,
    MetaLearningConfig,
)
from metagan_hub.training.tasks import TaskSampler

logger = get_logger(__name__, log_level="INFO")

TASK_SAMPLER_NAME = "task_sampler.json"  # plain JSON: resuming never unpickles anything this script wrote
LEGACY_TASK_SAMPLER_NAME = "task_sampler.pt"  # checkpoints of earlier versions; read with weights_only=True only
COVERAGE_CLASSIFIER_DIR = "coverage_classifier"  # the feature network of --query_coverage_space features
SECRET_ARGS = ("hub_token",)

# Values used when neither the command line nor a preset sets an option.
DEFAULTS: dict[str, Any] = {
    "algorithm": "reptile",
    "loss": "nonsaturating",
    "shots": 5,
    "inner_steps": 10,
    "inner_lr": 1e-3,
    "inner_optimizer": "adam",
    "outer_optimizer": "adam",
    "meta_lr": 1e-4,
    "r1_gamma": 0.1,
    "gp_lambda": 10.0,
    "wgan_drift": WGAN_DRIFT,
    "augment": ",".join(AUGMENT_POLICIES),
    "inner_batch_size": 8,
    "inner_r1_interval": 1,
    "inner_freeze_discriminator_blocks": 0,
}
PRESETS: dict[str, dict[str, Any]] = {
    # FIGR (Clouatre & Demers 2019): Reptile + WGAN-GP, inner 10 SGD steps at 1e-3, outer Adam at 1e-4, 4 shots.
    "figr": {
        **{k: v for k, v in MetaLearningConfig.figr().to_dict().items() if k in DEFAULTS},
        "augment": "none",
        "shots": 4,
    },
    # Reptile whose inner loop is the one adapt() runs at use time (its optimizer, learning rate, batch size, lazy R1,
    # DiffAugment and FreezeD); add --diversity_loss for adapt()'s diversity term, --inner_steps for longer loops.
    "adapt": {
        **{
            k: ",".join(v) if isinstance(v, list) else v
            for k, v in MetaLearningConfig.adapt_inner_loop().to_dict().items()
            if k in DEFAULTS
        },
    },
}


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 128,64,32, got {text!r}") from err
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; options a `--preset` sets default to `None` and are resolved afterwards."""
    parser = argparse.ArgumentParser(description="Meta-train a Meta-GAN over image classes.")
    # data
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        type=str,
        default=None,
        choices=["kanjivg", "fonts", "digits"],
        help="A built-in source of classes: kanjivg and fonts render glyphs, digits is scikit-learn's 8x8 handwritten "
        "digits (a smoke test). Your own classes: --train_data_dir or --dataset_name.",
    )
    data.add_argument("--train_data_dir", type=str, default=None, help="An image folder with one subfolder per class.")
    data.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help="A Hugging Face datasets name or local path, one class per value of --label_column.",
    )
    data.add_argument("--dataset_split", type=str, default="train", help="--dataset_name: the split to read.")
    data.add_argument("--image_column", type=str, default="image", help="--dataset_name: the column of images.")
    data.add_argument("--label_column", type=str, default="label", help="--dataset_name: the column of class labels.")
    data.add_argument("--samples_per_class", type=int, default=20, help="kanjivg: rendered samples per class.")
    data.add_argument("--max_classes", type=int, default=None, help="kanjivg / fonts: use at most this many classes.")
    data.add_argument(
        "--stroke_width_contrast",
        type=float,
        default=0.0,
        help="kanjivg: per-render contrast up to this value between vertical and horizontal stroke parts (Mincho-like "
        "type), in [0, 1); 0 (default): uniform strokes. See metagan_hub.data.StrokeJitter.",
    )
    data.add_argument(
        "--stroke_taper",
        type=float,
        default=0.0,
        help="kanjivg: per-render taper up to this value along strokes (brush-like), in [0, 2); 0: none (default).",
    )
    data.add_argument(
        "--stroke_pixelate",
        type=float,
        default=0.0,
        help="kanjivg: share of renders drawn as coarse bitmap glyphs (10-16 cells per side), in [0, 1]; 0 (default).",
    )
    data.add_argument(
        "--stroke_width",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="kanjivg: range of the per-render stroke width in units of the 109-unit drawing (default 3.5 7.0).",
    )
    data.add_argument("--cache_dir", type=str, default=None, help="Cache folder of rendered / downloaded data.")
    data.add_argument("--resolution", type=int, default=32)
    data.add_argument("--channels", type=int, default=1, choices=[1, 3])
    data.add_argument("--split_seed", type=int, default=0, help="Seed of the train / validation / test class split.")
    data.add_argument("--num_val_classes", type=int, default=None, help="Default: 10%% of the classes.")
    data.add_argument("--num_test_classes", type=int, default=None, help="Default: 20%% of the classes.")
    # model
    model = parser.add_argument_group("model")
    model.add_argument("--latent_dim", type=int, default=128)
    model.add_argument(
        "--block_out_channels",
        type=_int_list,
        default=None,
        help="Generator block widths, e.g. 128,64,32 for 32x32 (the discriminator uses them reversed).",
    )
    model.add_argument(
        "--init_from",
        type=str,
        default=None,
        help="Start from the weights of a saved Meta-GAN pipeline (folder or Hub repo id) instead of a random "
        "initialisation, e.g. meta-train with Reptile from a pretrain-baseline checkpoint. Its resolution and "
        "channels must match --resolution / --channels; --latent_dim and --block_out_channels are then ignored.",
    )
    # algorithm
    algo = parser.add_argument_group("meta-learning")
    algo.add_argument("--preset", type=str, default=None, choices=sorted(PRESETS), help="Explicit options win.")
    algo.add_argument("--algorithm", type=str, default=None, choices=list(ALGORITHMS))
    algo.add_argument("--loss", type=str, default=None, choices=list(LOSS_TYPES))
    algo.add_argument("--shots", type=int, default=None, help="Support images per task (default 5).")
    algo.add_argument(
        "--queries",
        type=int,
        default=None,
        help="Query images per task (default: 0; fomaml or --learn_inner_lr: shots).",
    )
    algo.add_argument("--inner_steps", type=int, default=None)
    algo.add_argument("--inner_lr", type=float, default=None)
    algo.add_argument("--inner_optimizer", type=str, default=None, choices=list(INNER_OPTIMIZERS))
    algo.add_argument("--inner_batch_size", type=int, default=None, help="Default 8 (preset adapt: adapt()'s).")
    algo.add_argument(
        "--inner_r1_interval", type=int, default=None, help="Lazy R1 every N inner steps (default 1; preset adapt: 4)."
    )
    algo.add_argument(
        "--inner_freeze_discriminator_blocks",
        type=int,
        default=None,
        help="FreezeD in Reptile's inner loop: lowest discriminator blocks kept frozen (default 0; preset adapt: 1).",
    )
    algo.add_argument(
        "--diversity_loss",
        type=str,
        default=None,
        choices=list(DIVERSITY_LOSSES),
        help=(
            "adapt()'s diversity term in every inner generator step (CDC and DCL keep the meta-weights as their "
            "frozen source; MixDL has none)."
        ),
    )
    algo.add_argument("--diversity_weight", type=float, default=None, help="Its weight (default: the method's).")
    algo.add_argument(
        "--learn_inner_lr",
        action="store_true",
        help="Meta-learn one inner learning-rate scale per parameter tensor (Meta-SGD style, first-order; needs query "
        "images). The scales are saved in the pipeline's metagan_hub.json and adapt() applies them; use with "
        "--preset adapt so that they match adapt()'s learning rate.",
    )
    algo.add_argument(
        "--inner_lr_meta_lr", type=float, default=0.01, help="Adam learning rate of the log scales (default 0.01)."
    )
    algo.add_argument("--outer_optimizer", type=str, default=None, choices=list(OUTER_OPTIMIZERS))
    algo.add_argument("--meta_lr", type=float, default=None)
    algo.add_argument(
        "--meta_batch_size", type=int, default=4, help="Tasks per meta step over all processes (divisible by them)."
    )
    algo.add_argument("--max_meta_steps", type=int, default=1000)
    algo.add_argument(
        "--max_train_minutes",
        type=float,
        default=None,
        help="Also stop after the meta step that passes this wall time (this run, all ranks stop at the same step); "
        "the pipeline is saved as usual. For runs on a time budget; a resumed run gets the full budget again.",
    )
    algo.add_argument("--r1_gamma", type=float, default=None)
    algo.add_argument("--gp_lambda", type=float, default=None)
    algo.add_argument("--wgan_drift", type=float, default=None)
    algo.add_argument("--augment", type=str, default=None, help="Comma-separated DiffAugment policies, or 'none'.")
    algo.add_argument("--ema_decay", type=float, default=None, help="EMA of the generator's meta-weights.")
    algo.add_argument("--max_nonfinite_steps", type=int, default=10)
    algo.add_argument(
        "--mode_seeking_weight",
        type=float,
        default=0.0,
        help="Weight of the MSGAN mode-seeking regularizer in every generator loss (inner steps and the FOMAML query "
        "loss); 0: off. Counters the sample-diversity loss of meta-learning on a few shots.",
    )
    algo.add_argument(
        "--shot_augment",
        type=float,
        default=0.0,
        help="Random affine distortion of the support images in every inner step, as adapt(shot_augment=...) "
        "distorts the shots (0: off; 1: the variety setting's strength).",
    )
    algo.add_argument(
        "--query_coverage_weight",
        type=float,
        default=0.0,
        help="Weight of the query-set coverage term in the outer update (reptile / fomaml; 0: off): each query image "
        "pulls the nearest sample of the adapted generator closer (IMLE-style), so that adapted generators cover "
        "images of the class the inner loop never saw. Needs query images (default --queries: shots). Measured "
        "with the bundled model's Reptile recipe, 1.0 lost recognisability and recall and 3.0 collapsed the "
        "generator (model card): experimental.",
    )
    algo.add_argument(
        "--proximal_weight",
        type=float,
        default=0.0,
        help="Pull of the meta-weights towards the starting weights (e.g. --init_from's) in every outer update "
        "(reptile / fomaml; 0: off): weight * (meta - start) is added to the outer gradient, an L2-SP-style "
        "penalty, so that continued meta-training settles at a bounded distance from its start. Measured at 0.05 "
        "from the variety checkpoint on stroke-styled renders: nearer the start, no better on font glyphs (model "
        "card): experimental.",
    )
    algo.add_argument(
        "--query_coverage_samples", type=int, default=32, help="Generated samples per task for that term (32)."
    )
    algo.add_argument(
        "--query_coverage_space",
        type=str,
        default="pixels",
        choices=list(COVERAGE_SPACES),
        help="Where that term measures distances: 'pixels' (default) or 'features': unit-length penultimate features "
        "of a small classifier trained first on the meta-training classes only (saved in "
        f"<output_dir>/{COVERAGE_CLASSIFIER_DIR} and reused on resume). Measured at 0.1 and 0.3 from the bundled "
        "model: no recall gain on kanji, recall for recognisability on font glyphs and digits (model card): "
        "experimental.",
    )
    algo.add_argument(
        "--query_coverage_classifier_epochs",
        type=int,
        default=3,
        help="Epochs of that classifier over the meta-training images (3).",
    )
    # run
    run = parser.add_argument_group("run")
    run.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=list(MIXED_PRECISION_CHOICES),
        help="Default: the `accelerate launch` setting. auto: bf16 where the device computes it natively (CUDA with "
        "bf16, CPUs with AVX512-BF16/AMX), else fp32. fp16 needs a GPU.",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--torch_threads",
        type=int,
        default=None,
        help="torch threads per process (default: PyTorch's choice). On a busy or small CPU, 1 per process avoids "
        "oversubscription, which can slow small models down several-fold.",
    )
    run.add_argument("--output_dir", type=str, default="metagan-meta")
    run.add_argument("--logging_dir", type=str, default="logs", help="Under --output_dir.")
    run.add_argument("--report_to", type=str, default=None, choices=["tensorboard"])
    run.add_argument("--logging_steps", type=int, default=10)
    run.add_argument("--checkpointing_steps", type=int, default=500)
    run.add_argument("--checkpoints_total_limit", type=int, default=None)
    run.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help='A checkpoint folder, or "latest" (the newest complete checkpoint in --output_dir; none: start fresh).',
    )
    # validation
    val = parser.add_argument_group("validation")
    val.add_argument("--validation_steps", type=int, default=0, help="Validate every N meta steps (0: only at end).")
    val.add_argument("--num_validation_classes", type=int, default=4, help="Held-out test classes (0: no validation).")
    val.add_argument("--validation_shots", type=int, default=5)
    val.add_argument("--validation_adapt_steps", type=int, default=50)
    val.add_argument("--validation_lr", type=float, default=2e-4)
    val.add_argument("--validation_samples", type=int, default=32, help="Generated images per class for the distance.")
    val.add_argument(
        "--yardstick_classes", type=int, default=0, help="Validation classes the yardstick adapts to (0: off)."
    )
    val.add_argument("--yardstick_adapt_steps", type=int, default=200, help="adapt() steps per yardstick class.")
    val.add_argument("--yardstick_samples", type=int, default=100, help="Samples per yardstick class.")
    val.add_argument(
        "--yardstick_confuser_classes",
        type=int,
        default=64,
        help="Training classes the yardstick's classifier also learns (a seeded choice), so that recognising a "
        "class takes more than telling a handful apart.",
    )
    val.add_argument(
        "--select_best",
        action="store_true",
        help="Keep the pipeline with the best yardstick score in <output_dir>/best (needs --yardstick_classes).",
    )
    val.add_argument(
        "--select_min_recognisability",
        type=float,
        default=None,
        help="With --select_best: keep the highest recall among checkpoints whose yardstick recognisability is at "
        "least this (in [0, 1]) instead of the highest recognisability + recall.",
    )
    # hub
    hub = parser.add_argument_group("hub")
    hub.add_argument("--push_to_hub", action="store_true")
    hub.add_argument("--hub_model_id", type=str, default=None)
    hub.add_argument("--hub_token", type=str, default=None)
    hub.add_argument("--hub_private_repo", action="store_true")

    args = parser.parse_args(argv)
    sources = [name for name in ("dataset", "train_data_dir", "dataset_name") if getattr(args, name) is not None]
    if len(sources) != 1:
        parser.error(f"give exactly one of --dataset, --train_data_dir or --dataset_name (got {sources or 'none'})")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. me/metagan-kanji-32)")
    resolve_preset(args)
    for name, value in vars(args).items():  # argparse takes "nan" and "inf" as floats
        if isinstance(value, float) and not math.isfinite(value):
            parser.error(f"--{name} must be a finite number, got {value}")
    for name in (
        "shots",
        "inner_steps",
        "inner_batch_size",
        "meta_batch_size",
        "max_meta_steps",
        "max_nonfinite_steps",
        "latent_dim",
        "logging_steps",
        "validation_shots",
        "validation_adapt_steps",
        "validation_samples",
        "yardstick_adapt_steps",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.mode_seeking_weight < float("inf"):
        parser.error(f"--mode_seeking_weight must be a non-negative number, got {args.mode_seeking_weight}")
    if not 0 <= args.query_coverage_weight < float("inf"):
        parser.error(f"--query_coverage_weight must be a non-negative number, got {args.query_coverage_weight}")
    if not 0 <= args.proximal_weight < float("inf"):
        parser.error(f"--proximal_weight must be a non-negative finite number, got {args.proximal_weight}")
    try:
        check_shot_augment(args.shot_augment, "--shot_augment")
    except ValueError as err:
        parser.error(str(err).replace("`", ""))
    if args.query_coverage_samples < 1:
        parser.error(f"--query_coverage_samples must be >= 1, got {args.query_coverage_samples}")
    if args.query_coverage_classifier_epochs < 1:
        parser.error(f"--query_coverage_classifier_epochs must be >= 1, got {args.query_coverage_classifier_epochs}")
    if args.query_coverage_space != "pixels" and not args.query_coverage_weight:
        parser.error(
            f"--query_coverage_space {args.query_coverage_space} needs --query_coverage_weight > 0 (the term is off)"
        )
    for name in (
        "queries",
        "checkpointing_steps",
        "validation_steps",
        "num_validation_classes",
        "yardstick_classes",
        "yardstick_confuser_classes",
        "split_seed",  # numpy's seeds are non-negative; torch would read -1 as 2**64 - 1
        "seed",
    ):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.yardstick_classes == 1:
        parser.error("--yardstick_classes must be 0 (off) or >= 2 (its classifier tells classes apart), got 1")
    if args.yardstick_samples < 4:
        parser.error(
            f"--yardstick_samples must be >= 4 (k-NN precision / recall need neighbours), got {args.yardstick_samples}"
        )
    if args.select_best and args.yardstick_classes < 2:
        parser.error("--select_best needs the yardstick: give --yardstick_classes N (N >= 2)")
    if args.select_min_recognisability is not None:
        if not args.select_best:
            parser.error("--select_min_recognisability needs --select_best")
        if not 0.0 <= args.select_min_recognisability <= 1.0:
            parser.error(f"--select_min_recognisability must be in [0, 1], got {args.select_min_recognisability}")
    if args.max_train_minutes is not None and not args.max_train_minutes > 0:
        parser.error(f"--max_train_minutes must be > 0, got {args.max_train_minutes}")
    if args.torch_threads is not None and args.torch_threads < 1:
        parser.error(f"--torch_threads must be >= 1, got {args.torch_threads}")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        parser.error(f"--checkpoints_total_limit must be >= 1, got {args.checkpoints_total_limit}")
    if args.algorithm == "fomaml" and args.queries < 1:
        parser.error("--algorithm fomaml needs --queries >= 1 (the meta-gradient is taken on the query images)")
    for name in ("learn_inner_lr", "shot_augment", "query_coverage_weight", "proximal_weight"):
        if getattr(args, name) and args.algorithm == "pretrain":
            parser.error(f"--{name} needs an inner loop: --algorithm reptile or fomaml, got pretrain")
    if args.learn_inner_lr and args.queries < 1:
        parser.error(f"--learn_inner_lr needs --queries >= 1 (the scales follow the query loss), got {args.queries}")
    if args.query_coverage_weight and args.queries < 1:
        parser.error(f"--query_coverage_weight needs --queries >= 1 (the images to cover), got {args.queries}")
    if args.ema_decay is not None and not 0.0 < args.ema_decay < 1.0:
        parser.error(f"--ema_decay must be in (0, 1), got {args.ema_decay}")
    if stroke_style(args) and args.dataset != "kanjivg":
        parser.error(f"--stroke_* options shape KanjiVG renders: they need --dataset kanjivg, got {args.dataset!r}")
    if args.stroke_width is not None and not 0 < args.stroke_width[0] <= args.stroke_width[1] < math.inf:
        parser.error(f"--stroke_width must be LOW HIGH with 0 < LOW <= HIGH, both finite, got {args.stroke_width}")
    try:
        stroke_jitter(args)
    except ValueError as err:
        parser.error(f"--stroke_* options: {err}")
    return args


def stroke_style(args: argparse.Namespace) -> dict[str, Any]:
    """The render options of KanjiVG meta-training data that differ from the defaults (empty: the default renders)."""
    style = {
        "width_contrast": args.stroke_width_contrast,
        "taper": args.stroke_taper,
        "pixelate": args.stroke_pixelate,
    }
    style = {k: v for k, v in style.items() if v}
    if args.stroke_width is not None:
        style["stroke_width"] = tuple(args.stroke_width)
    return style


def stroke_jitter(args: argparse.Namespace):
    """The `StrokeJitter` of the KanjiVG renders, or None for the default renders."""
    from metagan_hub.data import StrokeJitter

    style = stroke_style(args)
    return StrokeJitter(**style) if style else None


def resolve_preset(args: argparse.Namespace) -> None:
    """Fill options left unset on the command line: from `--preset` if given, else from `DEFAULTS`."""
    preset = PRESETS.get(args.preset, {}) if args.preset else {}
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, preset.get(name, default))
    if args.queries is None:
        needs_query = args.algorithm == "fomaml" or args.learn_inner_lr or args.query_coverage_weight
        args.queries = args.shots if needs_query else 0
    augment = args.augment.strip().lower()
    args.augment = "none" if augment in ("", "none") else ",".join(a.strip() for a in augment.split(","))


# ---------------------------------------------------------------------------------------------------- setup


def learning_config(args: argparse.Namespace, mixed_precision: str) -> MetaLearningConfig:
    augment = () if args.augment == "none" else tuple(args.augment.split(","))
    return MetaLearningConfig(
        algorithm=args.algorithm,
        loss=args.loss,
        inner_steps=args.inner_steps,
        inner_lr=args.inner_lr,
        inner_optimizer=args.inner_optimizer,
        meta_lr=args.meta_lr,
        outer_optimizer=args.outer_optimizer,
        inner_batch_size=args.inner_batch_size,
        r1_gamma=args.r1_gamma,
        gp_lambda=args.gp_lambda,
        wgan_drift=args.wgan_drift,
        augment=augment,
        mixed_precision=mixed_precision,
        max_nonfinite_steps=args.max_nonfinite_steps,
        mode_seeking_weight=args.mode_seeking_weight,
        shot_augment=args.shot_augment,
        inner_r1_interval=args.inner_r1_interval,
        inner_freeze_discriminator_blocks=args.inner_freeze_discriminator_blocks,
        diversity_loss=args.diversity_loss,
        diversity_weight=args.diversity_weight,
        learn_inner_lr=args.learn_inner_lr,
        inner_lr_meta_lr=args.inner_lr_meta_lr,
        query_coverage_weight=args.query_coverage_weight,
        query_coverage_samples=args.query_coverage_samples,
        query_coverage_space=args.query_coverage_space,
        proximal_weight=args.proximal_weight,
    )


def run_config(args: argparse.Namespace, config: MetaLearningConfig) -> dict[str, Any]:
    """Everything that determines the training trajectory; a checkpoint only resumes a run with the same values.
    (Step budget, checkpointing, validation, logging and output options may change between runs; so may the number
    of processes, since `--meta_batch_size` counts tasks over all processes.)"""
    learning = {k: v for k, v in config.to_dict().items() if k != "max_nonfinite_steps"}
    style = {k: list(v) if isinstance(v, tuple) else v for k, v in stroke_style(args).items()}
    if not learning.get("learn_inner_lr"):
        learning.pop("inner_lr_meta_lr", None)  # only used with learned scales
    if not learning.get("mode_seeking_weight"):
        learning.pop("mode_seeking_weight", None)  # off: checkpoints written before the option resume unchanged
    if not learning.get("shot_augment"):
        learning.pop("shot_augment", None)  # off, as before the option
    if not learning.get("proximal_weight"):
        learning.pop("proximal_weight", None)  # off, as before the option
    if not learning.get("query_coverage_weight"):
        learning.pop("query_coverage_weight", None)  # off, as before the option
        learning.pop("query_coverage_samples", None)
    if learning.get("query_coverage_space") == "pixels":
        learning.pop("query_coverage_space", None)  # the default, as before the option
    else:
        learning["query_coverage_classifier_epochs"] = args.query_coverage_classifier_epochs
    for key, off in (
        ("inner_r1_interval", 1),
        ("inner_freeze_discriminator_blocks", 0),
        ("diversity_loss", None),
        ("diversity_weight", None),
        ("learn_inner_lr", False),
    ):
        if learning.get(key) == off:
            learning.pop(key, None)  # at the earlier behaviour: older checkpoints resume unchanged
    return {
        "dataset": args.dataset,
        "train_data_dir": args.train_data_dir,
        "dataset_name": args.dataset_name,
        "dataset_split": args.dataset_split,
        "image_column": args.image_column,
        "label_column": args.label_column,
        "samples_per_class": args.samples_per_class,
        "max_classes": args.max_classes,
        **({"stroke_style": style} if style else {}),  # default renders: earlier checkpoints resume unchanged
        "resolution": args.resolution,
        "channels": args.channels,
        "split_seed": args.split_seed,
        "num_val_classes": args.num_val_classes,
        "num_test_classes": args.num_test_classes,
        "latent_dim": args.latent_dim,
        "block_out_channels": args.block_out_channels,
        "init_from": getattr(args, "init_from", None),
        "shots": args.shots,
        "queries": args.queries,
        "meta_batch_size": args.meta_batch_size,
        "seed": args.seed,
        "ema_decay": args.ema_decay,
        **learning,
    }


def build_dataset(args: argparse.Namespace):
    """The full class-structured dataset named on the command line, and a one-line description of it."""
    from metagan_hub.data import get_dataset

    common = {"resolution": args.resolution, "channels": args.channels}
    if args.dataset == "kanjivg":
        kwargs = {"samples_per_class": args.samples_per_class, "max_classes": args.max_classes, "seed": args.seed}
        jitter = stroke_jitter(args)
        if jitter is not None:
            kwargs["jitter"] = jitter
        if args.cache_dir is not None:
            kwargs["cache_dir"] = args.cache_dir
        dataset = get_dataset("kanjivg", **common, **kwargs)
        styled = f", stroke styles {stroke_style(args)}" if jitter is not None else ""
        return dataset, f"KanjiVG renders ({args.samples_per_class} per character{styled})"
    if args.dataset == "fonts":
        return get_dataset("fonts", **common, max_classes=args.max_classes), "system-font glyph renders"
    if args.dataset == "digits":
        return get_dataset("digits", **common), "scikit-learn digits (8x8, upsampled)"
    if args.train_data_dir is not None:
        return get_dataset("imagefolder", root=args.train_data_dir, **common), f"image folder {args.train_data_dir}"
    kwargs = {"split": args.dataset_split, "image_column": args.image_column, "label_column": args.label_column}
    if args.cache_dir is not None:
        kwargs["cache_dir"] = args.cache_dir
    dataset = get_dataset("hf", dataset_name=args.dataset_name, **common, **kwargs)
    return dataset, f"Hugging Face dataset {args.dataset_name} ({args.dataset_split} split)"


def split_dataset(dataset, args: argparse.Namespace, world_size: int):
    """Split the classes and check that the training classes can feed the meta-batches and validation."""
    n = dataset.num_classes
    try:
        train, val, test = dataset.split_classes(args.split_seed, args.num_val_classes, args.num_test_classes)
    except ValueError as err:
        raise ValueError(
            f"the dataset has {n} classes, too few for the class split (--num_val_classes {args.num_val_classes}, "
            f"--num_test_classes {args.num_test_classes}): {err}"
        ) from err
    if train.num_classes < max(2, args.meta_batch_size):
        raise ValueError(
            f"the dataset has {n} classes, of which {train.num_classes} are for meta-training after holding out "
            f"{val.num_classes} validation and {test.num_classes} test classes; a meta step needs at least "
            f"--meta_batch_size {args.meta_batch_size} (and at least 2) training classes. Use more classes, a "
            "smaller --meta_batch_size, or fewer --num_val_classes / --num_test_classes."
        )
    if args.meta_batch_size % world_size != 0:
        raise ValueError(
            f"--meta_batch_size {args.meta_batch_size} (tasks per meta step over all processes) must be divisible by "
            f"the number of processes, {world_size}."
        )
    if args.num_validation_classes > 0:
        for i in range(min(args.num_validation_classes, test.num_classes)):
            count = test.num_images(i)
            if count <= args.validation_shots:
                raise ValueError(
                    f"validation class {test.class_names[i]!r} has {count} image(s); --validation_shots "
                    f"{args.validation_shots} must leave at least one held-out image. Lower --validation_shots or "
                    "set --num_validation_classes 0."
                )
    if args.yardstick_classes > val.num_classes:
        raise ValueError(
            f"--yardstick_classes {args.yardstick_classes} is more than the {val.num_classes} validation classes; "
            "lower it or raise --num_val_classes."
        )
    return train, val, test


def make_models(
    args: argparse.Namespace,
) -> tuple[MetaGANGenerator, MetaGANDiscriminator, dict[str, dict[str, float]] | None]:
    """The starting generator and discriminator, and the meta-learned inner learning-rate scales that an
    `--init_from` pipeline carries (`None` when it has none or nothing is loaded)."""
    if getattr(args, "init_from", None):
        init = MetaGANPipeline.from_pretrained(args.init_from)
        if init.discriminator is None:
            raise ValueError(f"--init_from {args.init_from!r} has no discriminator; meta-training needs one.")
        cfg = init.generator.config
        if (cfg.sample_size, cfg.out_channels) != (args.resolution, args.channels):
            raise ValueError(
                f"--init_from {args.init_from!r} makes {cfg.out_channels}x{cfg.sample_size}x{cfg.sample_size} images "
                f"but --resolution {args.resolution} / --channels {args.channels} were given."
            )
        return (
            init.generator.float().requires_grad_(True),
            init.discriminator.float().requires_grad_(True),
            init.card_info.get(LR_SCALES_KEY),
        )
    g_channels = tuple(args.block_out_channels) if args.block_out_channels else None
    generator = MetaGANGenerator(
        latent_dim=args.latent_dim,
        sample_size=args.resolution,
        out_channels=args.channels,
        block_out_channels=g_channels,
    )
    d_channels = tuple(reversed(g_channels)) if g_channels else None
    discriminator = MetaGANDiscriminator(
        sample_size=args.resolution, in_channels=args.channels, block_out_channels=d_channels
    )
    return generator, discriminator, None


def coverage_feature_classifier(
    args: argparse.Namespace, train_classes, accelerator: Accelerator
) -> EvaluationClassifier | None:
    """The feature network of `--query_coverage_space features` (else `None`): an `EvaluationClassifier` trained on
    all images of the meta-training classes only (never on validation or test classes), deterministically from
    `--seed`, saved once in `<output_dir>/coverage_classifier` and loaded from there on resume."""
    if not (args.query_coverage_weight and args.query_coverage_space == "features"):
        return None
    folder = os.path.join(args.output_dir, COVERAGE_CLASSIFIER_DIR)
    names = list(train_classes.class_names)
    if accelerator.is_main_process and not os.path.isfile(os.path.join(folder, "config.json")):
        n = train_classes.num_classes
        images = torch.cat([train_classes.class_images_uint8(i) for i in range(n)])
        labels = torch.cat([torch.full((train_classes.num_images(i),), i, dtype=torch.long) for i in range(n)])
        logger.info(f"training the coverage classifier on {images.shape[0]} images of {n} meta-training classes")
        classifier = fit_classifier(
            images,
            labels,
            names,
            domain="meta-training classes",
            recipe=ClassifierRecipe(num_epochs=args.query_coverage_classifier_epochs),
            seed=args.seed,
            description=f"all images of the {n} meta-training classes",
        )
        save_classifier(classifier, folder)
    accelerator.wait_for_everyone()
    classifier = EvaluationClassifier.from_pretrained(folder)
    epochs = classifier.config.training["recipe"]["num_epochs"]
    if list(classifier.classes) != names or epochs != args.query_coverage_classifier_epochs:
        raise ValueError(
            f"{folder} holds a coverage classifier of another run ({len(classifier.classes)} classes, {epochs} "
            f"epochs; this run: {len(names)} classes, --query_coverage_classifier_epochs "
            f"{args.query_coverage_classifier_epochs}): remove it or use another --output_dir."
        )
    return classifier


def check_cpu_processes_on_gpu_machine(state: PartialState) -> None:
    """Several CPU (gloo) processes on a machine with fewer GPUs than processes fail at the first barrier with an
    obscure CUDA error: Accelerate's `wait_for_everyone` passes each rank's index as its device, and PyTorch then
    uses GPU `rank` for a gloo barrier. Say what to do instead."""
    if state.num_processes > 1 and state.device.type == "cpu" and torch.cuda.is_available():
        if torch.cuda.device_count() < state.num_processes:
            raise RuntimeError(
                f"{state.num_processes} CPU processes (ACCELERATE_USE_CPU) on a machine with "
                f"{torch.cuda.device_count()} GPU(s): Accelerate's barriers would use GPU <rank> and fail. Hide the "
                "GPUs from CPU runs with `CUDA_VISIBLE_DEVICES= ACCELERATE_USE_CPU=true accelerate launch ...`."
            )


def effective_mixed_precision(args: argparse.Namespace) -> str:
    return args.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no") or "no"


# ---------------------------------------------------------------------------------------------------- checkpoints


def load_sampler_state(path: str) -> dict[str, Any]:
    """The task sampler's state in checkpoint `path`: `task_sampler.json`, or for checkpoints of earlier versions
    `task_sampler.pt` read with `weights_only=True` (plain containers and numbers only: a crafted pickle that would
    run code is refused, never executed)."""
    json_path = os.path.join(path, TASK_SAMPLER_NAME)
    legacy_path = os.path.join(path, LEGACY_TASK_SAMPLER_NAME)
    if os.path.isfile(json_path):
        try:
            with open(json_path, encoding="utf-8") as f:
                state = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{json_path} is not valid JSON ({err}); the checkpoint is damaged.") from None
    elif os.path.isfile(legacy_path):
        import pickle

        try:
            state = torch.load(legacy_path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as err:
            raise ValueError(
                f"{legacy_path} is not a plain task-sampler state (it holds objects that loading would have to "
                f"execute, or it is damaged): refusing to load it. ({type(err).__name__}: {str(err)[:200]})"
            ) from None
    else:
        raise ValueError(f"checkpoint {path!r} has no {TASK_SAMPLER_NAME}; it was not written by this script.")
    if not isinstance(state, dict) or not all(isinstance(v, int | str | float | None) for v in state.values()):
        raise ValueError(f"the task sampler state in {path!r} must be a flat JSON object, got {type(state).__name__}.")
    return state


def time_budget_spent(accelerator: Accelerator, max_train_minutes: float | None, elapsed_s: float) -> bool:
    """Whether `--max_train_minutes` has run out; rank 0's clock decides so that every rank stops at the same step."""
    if max_train_minutes is None:
        return False
    flag = torch.tensor([float(elapsed_s >= 60.0 * max_train_minutes)], device=accelerator.device)
    if accelerator.num_processes > 1:
        flag = broadcast(flag, from_process=0)
    return bool(flag.item())


def check_ranks_identical(accelerator: Accelerator, *modules: torch.nn.Module) -> None:
    """Raise if the meta-weights differ between processes (they must stay bit-identical). NaN checksums on every
    process count as agreeing: non-finite weights are the finite checks' to refuse, with their own message."""
    if accelerator.num_processes == 1:
        return
    flat = torch.cat([p.detach().reshape(-1).double() for m in modules for p in m.parameters()])
    probe = torch.stack([flat.sum(), (flat * torch.arange(1, flat.numel() + 1, dtype=flat.dtype)).sum()])
    gathered = accelerator.gather(probe.to(accelerator.device)[None]).cpu()  # [world_size, 2]
    same = (gathered == gathered[0]) | (gathered.isnan() & gathered[0].isnan())
    if not bool(same.all()):
        raise RuntimeError(f"meta-weights differ between processes (checksums {gathered.tolist()}).")


def save_checkpoint(
    accelerator: Accelerator,
    args: argparse.Namespace,
    step: int,
    sampler: TaskSampler,
    config: dict[str, Any],
    models: tuple[torch.nn.Module, ...],
) -> str:
    """Write `checkpoint-{step}` with the task sampler's state and prune old checkpoints (see
    [`~metagan_hub.training.checkpointing.save_checkpoint`], which refuses NaN/inf meta-weights); never with ranks
    that differ."""
    check_ranks_identical(accelerator, *models)
    state = {
        "step": step,
        "config": config,
        "num_processes": accelerator.num_processes,
        "metagan_hub_version": metagan_hub.__version__,
    }
    return checkpointing.save_checkpoint(
        accelerator,
        args.output_dir,
        state,
        dict(zip(("generator", "discriminator"), models, strict=True)),
        extra_json={TASK_SAMPLER_NAME: sampler.state_dict()},
        total_limit=args.checkpoints_total_limit,
    )


# ---------------------------------------------------------------------------------------------------- validation


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """`[N, C, H, W]` in `[-1, 1]` to PIL images."""
    array = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if array.shape[-1] == 1:
        return [Image.fromarray(a[..., 0], mode="L") for a in array]
    return [Image.fromarray(a, mode="RGB") for a in array]


def validate(
    accelerator: Accelerator,
    args: argparse.Namespace,
    step: int,
    generator_model: MetaGANGenerator,
    discriminator_model: MetaGANDiscriminator,
    test_classes,
    mixed_precision: str,
) -> dict[str, Any]:
    """Adapt copies of the meta-weights to held-out test classes (main process only); grid PNG, distances and
    statistic spreads."""
    from metagan_hub.training.adaptation import NonFiniteLossError

    pipe = MetaGANPipeline(
        generator=copy.deepcopy(generator_model).eval(), discriminator=copy.deepcopy(discriminator_model).eval()
    )
    pipe.set_progress_bar_config(disable=True)
    k = args.validation_shots
    num_classes = min(args.num_validation_classes, test_classes.num_classes)
    per_class, unadapted, rows = {}, {}, []
    spreads: list[dict[str, float]] = []  # per adapted class
    all_before, all_held_out = [], []
    start = time.perf_counter()
    for c in range(num_classes):
        name = test_classes.class_names[c]
        images = test_classes.class_images(c)  # [N, C, H, W] in [-1, 1]
        shots, held_out = images[:k], images[k:]
        sample_gen = torch.Generator().manual_seed(args.seed + 1000 + c)
        before = pipe(batch_size=args.validation_samples, generator=sample_gen, output_type="pt").images * 2 - 1
        unadapted[name] = heldout_distance(before, held_out)
        all_before.append(before)
        all_held_out.append(held_out)
        try:
            adapted = pipe.adapt(
                shots,
                num_steps=args.validation_adapt_steps,
                learning_rate=args.validation_lr,
                mixed_precision=mixed_precision,
                generator=torch.Generator().manual_seed(args.seed + c),
                accelerator=accelerator,
            )
        except NonFiniteLossError as err:
            logger.warning(f"validation: adapting to class {name!r} failed ({err})")
            per_class[name] = float("nan")
            continue
        sample_gen = torch.Generator().manual_seed(args.seed + 1000 + c)
        samples = adapted(batch_size=args.validation_samples, generator=sample_gen, output_type="pt").images * 2 - 1
        per_class[name] = heldout_distance(samples, held_out)
        class_spread = validation_spread([samples], [held_out])
        if class_spread:
            spreads.append(class_spread)
        rows.append(to_pil(shots) + to_pil(samples[: max(8, k)]))
    result = {
        "step": step,
        "heldout_distance": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "heldout_distance_unadapted": float(np.mean(list(unadapted.values()))) if unadapted else float("nan"),
        # how much the samples vary per-image pixel statistics (stroke width, ink, ...) relative to the held-out
        # renders: adapted, mean over classes; unadapted, all classes' samples against all their held-out images
        "statistic_spread": {s: float(np.mean([d[s] for d in spreads])) for s in IMAGE_STATISTICS} if spreads else {},
        "statistic_spread_unadapted": validation_spread(all_before, all_held_out),
        "per_class": per_class,
        "per_class_unadapted": unadapted,
        "split": "test",
        "shots": k,
        "adapt_steps": args.validation_adapt_steps,
        "adapt_lr": args.validation_lr,
        "samples_per_class": args.validation_samples,
        "metric": "symmetric nearest-neighbour RMS pixel distance, samples vs. held-out real images (lower is better)",
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    if rows:
        cols = max(len(r) for r in rows)
        blank = Image.new(rows[0][0].mode, rows[0][0].size, 0)
        grid = make_image_grid([im for r in rows for im in r + [blank] * (cols - len(r))], rows=len(rows), cols=cols)
        folder = os.path.join(args.output_dir, "validation")
        os.makedirs(folder, exist_ok=True)
        grid.save(os.path.join(folder, f"step-{step:06d}.png"))
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_image("validation/grid", np.asarray(grid.convert("RGB")), step, dataformats="HWC")
    with open(os.path.join(args.output_dir, "validation.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    spread = result["statistic_spread"].get("structure_scale", float("nan"))
    spread_before = result["statistic_spread_unadapted"].get("structure_scale", float("nan"))
    logger.info(
        f"validation at step {step}: heldout_distance {result['heldout_distance']:.4f} "
        f"(unadapted {result['heldout_distance_unadapted']:.4f}), structure-scale spread {spread:.2f} "
        f"(unadapted {spread_before:.2f}) in {result['wall_time_s']} s"
    )
    return result


def validation_spread(samples: list[torch.Tensor], held_out: list[torch.Tensor]) -> dict[str, float]:
    """[`statistic_spread`] of the concatenated `samples` against the concatenated `held_out` images ({} with fewer
    than 2 of either)."""
    if sum(len(x) for x in samples) < 2 or sum(len(x) for x in held_out) < 2:
        return {}
    return statistic_spread(torch.cat(samples), torch.cat(held_out))


# ---------------------------------------------------------------------------------------------------- yardstick
BEST_DIR = "best"


def build_yardstick_domain(args: argparse.Namespace, train_classes, val_classes, accelerator: Accelerator):
    """The first `--yardstick_classes` validation classes as an evaluation domain, with `--yardstick_confuser_classes`
    training classes as the classifier's confusers; the main process trains (or loads from the cache) its evaluation
    classifier."""
    from metagan_hub.metrics.yardstick import validation_domain

    try:  # fail at the start, on every process, rather than on the main process at the first yardstick
        domain = validation_domain(
            train_classes,
            val_classes,
            num_classes=args.yardstick_classes,
            shot_pool=args.validation_shots,
            num_confusers=args.yardstick_confuser_classes,
            split_seed=args.split_seed,
        )
    except ValueError as err:
        raise ValueError(
            f"--yardstick_classes {args.yardstick_classes} with --validation_shots {args.validation_shots}: {err} "
            "Lower --validation_shots or --yardstick_classes, or use classes with more images."
        ) from err
    if accelerator.is_main_process:
        domain.classifier  # noqa: B018  (trained and cached on first use)
        logger.info(
            f"yardstick: {domain.num_classes} validation classes "
            f"({len(domain.classifier_classes) - domain.num_classes} training classes as confusers); the "
            f"evaluation classifier recognises "
            f"{domain.real_accuracy:.3f} of their real held-out images (the ceiling)"
        )
    return domain


def yardstick_settings(args: argparse.Namespace, domain) -> dict[str, Any]:
    """What makes two yardstick scores comparable (the classes and classifier, shots, adaptation, samples, seed), as
    recorded in each yardstick result."""
    from metagan_hub.metrics.classifiers import classifier_cache_key
    from metagan_hub.metrics.yardstick import SCORE_METRICS

    return {
        "classifier": classifier_cache_key(domain),
        "num_classes": args.yardstick_classes,
        "shots": args.validation_shots,
        "adapt_steps": args.yardstick_adapt_steps,
        "samples_per_class": args.yardstick_samples,
        "seed": args.seed,
        "score_metrics": list(SCORE_METRICS),
        "min_recognisability": args.select_min_recognisability,
    }


def run_yardstick(
    accelerator: Accelerator,
    args: argparse.Namespace,
    step: int,
    pipe: MetaGANPipeline,
    domain,
    mixed_precision: str,
) -> dict[str, Any]:
    """Adapt `pipe` to the yardstick's validation classes as users would (main process only) and score it."""
    from metagan_hub.metrics.yardstick import evaluate_adaptation

    pipe.set_progress_bar_config(disable=True)
    result = evaluate_adaptation(
        pipe,
        domain,
        num_classes=args.yardstick_classes,
        shots=args.validation_shots,
        num_steps=args.yardstick_adapt_steps,
        num_samples=args.yardstick_samples,
        seed=args.seed,
        mixed_precision=mixed_precision,
        accelerator=accelerator,
    )
    result = {
        "step": step,
        **result,
        **yardstick_settings(args, domain),
        "classifier_heldout_accuracy": domain.real_accuracy,
    }
    with open(os.path.join(args.output_dir, "yardstick.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(replace_nonfinite(result)[0], allow_nan=False) + "\n")
    means = result["means"]
    logger.info(
        f"yardstick at step {step}: score {result['score']:.4f} (recognisability {means['recognisability']:.3f}, "
        f"recall {means['recall']:.3f}) in {result['wall_time_s']} s"
    )
    return result


def save_best(pipeline: MetaGANPipeline, output_dir: str, result: dict[str, Any]) -> None:
    """Write `pipeline` and its yardstick result to `<output_dir>/best.tmp`, then swap it in as `best`, so that a kill
    at any moment leaves a complete `best` (or the previous one)."""
    final = os.path.join(output_dir, BEST_DIR)
    tmp, old = final + ".tmp", final + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    pipeline.save_pretrained(tmp)
    write_json_strict(result, os.path.join(tmp, "yardstick.json"))
    if os.path.isdir(final):
        shutil.rmtree(old, ignore_errors=True)  # a leftover would make the rename below fail
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    means = result["means"]
    logger.info(
        f"yardstick: new best at step {result['step']} (score {result['score']:.4f}, recognisability "
        f"{means['recognisability']:.3f}, recall {means['recall']:.3f}), saved to {final}"
    )


def recover_best(output_dir: str) -> None:
    """Finish or undo a `save_best` that was killed half-way: `best.old` without `best` becomes `best` again; a
    `best.tmp` is incomplete and removed."""
    final = os.path.join(output_dir, BEST_DIR)
    if os.path.isdir(final + ".old"):
        if os.path.isdir(final):
            shutil.rmtree(final + ".old", ignore_errors=True)
        else:
            os.replace(final + ".old", final)
    shutil.rmtree(final + ".tmp", ignore_errors=True)


NO_BEST = (-2, -math.inf)  # ranks below every selection key


def read_best_key(
    output_dir: str, settings: dict[str, Any] | None = None, min_recognisability: float | None = None
) -> tuple[int, float]:
    """The selection key ([`~metagan_hub.metrics.yardstick.selection_key`] under `min_recognisability`) of
    `<output_dir>/best`'s yardstick result (a resumed run keeps its best), or `NO_BEST` when there is none or, given
    `settings` (see [`yardstick_settings`]), when it was measured with other ones (scores would not be comparable)."""
    path = os.path.join(output_dir, BEST_DIR, "yardstick.json")
    if not os.path.isfile(path):
        return NO_BEST
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    differ = sorted(k for k, v in (settings or {}).items() if record.get(k) != v)
    if differ:
        logger.warning(
            f"{path} was measured with other yardstick settings ({', '.join(differ)}); the next yardstick replaces it"
        )
        return NO_BEST
    return selection_key(record, min_recognisability)


# ---------------------------------------------------------------------------------------------------- main


def public_args(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments without secrets, JSON-safe."""
    return {k: v for k, v in vars(args).items() if k not in SECRET_ARGS}


def public_command(argv: list[str]) -> str:
    """The command line with secret values replaced."""
    out, hide = [], False
    for arg in argv:
        if hide:
            out.append("***")
            hide = False
            continue
        name = arg.split("=", 1)[0].lstrip("-")
        if name in SECRET_ARGS:
            if "=" in arg:
                out.append(arg.split("=", 1)[0] + "=***")
            else:
                out.append(arg)
                hide = True
            continue
        out.append(arg)
    return shlex.join(out)


class _TrainingState:
    """Step counter checkpointed through `accelerator.register_for_checkpointing`."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


def main(args: argparse.Namespace) -> MetaGANPipeline | None:
    """Meta-train and save the pipeline; returns it on the main process (`None` elsewhere)."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)

    # 0. precision and launch checks, before an Accelerator fixes the process-wide state
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # what Accelerator() will also use
    mixed_precision = effective_mixed_precision(args)
    if mixed_precision == "fp16" and state.device.type == "cpu":
        raise ValueError(
            "--mixed_precision fp16 is not supported on CPU: Accelerate silently ignores it there and would train in "
            "fp32. Use --mixed_precision auto on CPU (bf16 where the CPU computes it natively, about 1.7x faster with "
            "AMX; fp32 elsewhere), or run on a GPU."
        )
    mixed_precision = resolve_mixed_precision(mixed_precision, state.device)  # "auto" -> "bf16" or "no"; logged once
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    if world_env > 1 and state.num_processes == 1:
        raise RuntimeError(
            f"launched as {world_env} processes (WORLD_SIZE={world_env}), but Accelerate runs each of them alone, so "
            "they would train separately. On CPU set ACCELERATE_USE_CPU=true, e.g. `ACCELERATE_USE_CPU=true "
            "accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no "
            "--dynamo_backend no scripts/train_metagan.py ...`."
        )
    check_cpu_processes_on_gpu_machine(state)
    project_config = ProjectConfiguration(
        project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
    )
    accelerator = Accelerator(
        mixed_precision=None if args.mixed_precision is None else mixed_precision,  # None: the launcher's setting
        log_with=args.report_to,
        project_config=project_config,
    )
    world_size, rank = accelerator.num_processes, accelerator.process_index
    logger.info(accelerator.state, main_process_only=False)
    if args.meta_batch_size % world_size != 0:
        raise ValueError(
            f"--meta_batch_size {args.meta_batch_size} (tasks per meta step over all processes) must be divisible by "
            f"the number of processes, {world_size}."
        )
    set_seed(args.seed)
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        checkpointing.clean_incomplete_checkpoints(args.output_dir)  # saves of a killed run
        recover_best(args.output_dir)

    # 1. data: split classes, check sizes, one task stream shared by all processes
    with accelerator.main_process_first():
        dataset, data_description = build_dataset(args)
    train_classes, val_classes, test_classes = split_dataset(dataset, args, world_size)
    sampler = TaskSampler(
        train_classes, shots=args.shots, queries=args.queries, seed=args.seed, rank=rank, world_size=world_size
    )
    tasks_per_process = args.meta_batch_size // world_size
    logger.info(
        f"{dataset.num_classes} classes: {train_classes.num_classes} train, {val_classes.num_classes} validation, "
        f"{test_classes.num_classes} test; {args.meta_batch_size} tasks per meta step "
        f"({tasks_per_process} per process)"
    )
    yardstick_domain = None
    if args.yardstick_classes:
        yardstick_domain = build_yardstick_domain(args, train_classes, val_classes, accelerator)
        if args.select_best and not args.validation_steps:
            logger.warning("--select_best without --validation_steps scores only the final meta-weights")

    # 2. models (identical on every process; never wrapped in DDP) and the meta-learner
    config = learning_config(args, mixed_precision)
    generator_model, discriminator_model, init_lr_scales = make_models(args)
    generator_model.to(accelerator.device)
    discriminator_model.to(accelerator.device)
    if world_size > 1:
        for p in [*generator_model.parameters(), *discriminator_model.parameters()]:
            p.data.copy_(broadcast(p.data.clone(), from_process=0))
    coverage_classifier = coverage_feature_classifier(args, train_classes, accelerator)
    learner = MetaLearner(
        generator_model,
        discriminator_model,
        config,
        accelerator=accelerator,
        seed=args.seed,
        coverage_features=None if coverage_classifier is None else coverage_classifier.features,
    )
    if args.learn_inner_lr and init_lr_scales is not None:
        learner.set_lr_scales(init_lr_scales)  # continue the --init_from pipeline's learned scales
    ema = None
    if args.ema_decay is not None:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(
            generator_model.parameters(),
            decay=args.ema_decay,
            use_ema_warmup=False,
            foreach=False,
            model_cls=MetaGANGenerator,
            model_config=generator_model.config,
        )
    training_state = _TrainingState()

    def ema_generator() -> MetaGANGenerator:
        if ema is None:
            return generator_model
        copy_g = copy.deepcopy(generator_model)
        ema.copy_to(copy_g.parameters())
        return copy_g

    # 3. checkpoint hooks: the models as save_pretrained folders inside the checkpoint
    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            generator_model.save_pretrained(os.path.join(output_dir, "generator"))
            discriminator_model.save_pretrained(os.path.join(output_dir, "discriminator"))
            if ema is not None:
                ema_generator().save_pretrained(os.path.join(output_dir, "generator_ema"))

    def load_model_hook(models, input_dir):
        for model, sub in ((generator_model, "generator"), (discriminator_model, "discriminator")):
            loaded = type(model).from_pretrained(os.path.join(input_dir, sub))
            saved, current = (
                {k: v for k, v in dict(c).items() if not k.startswith("_")} for c in (loaded.config, model.config)
            )
            if saved != current:
                raise ValueError(f"{input_dir}/{sub} has another architecture: {saved}, expected {current}.")
            model.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)
    accelerator.register_for_checkpointing(learner)
    accelerator.register_for_checkpointing(training_state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    # 4. resume
    trajectory = run_config(args, config)
    checkpoint = checkpointing.resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if checkpoint is not None:
        checkpointing.read_checkpoint_state(checkpoint, trajectory)
        checkpointing.warn_if_foreign_checkpoint(checkpoint, args.output_dir)
        sampler_state = load_sampler_state(checkpoint)  # before Accelerate unpickles anything
        logger.info(f"resuming from {checkpoint}")
        accelerator.load_state(checkpoint)
        sampler.load_state_dict(sampler_state)
        check_ranks_identical(accelerator, generator_model, discriminator_model)
    first_step = training_state.step
    best_key = NO_BEST  # a fresh run starts its own selection; a resumed one keeps its best (main process)
    if args.select_best and checkpoint is not None and accelerator.is_main_process:
        best_key = read_best_key(
            args.output_dir, yardstick_settings(args, yardstick_domain), args.select_min_recognisability
        )
    if first_step >= args.max_meta_steps:
        logger.warning(f"the checkpoint is at step {first_step} >= --max_meta_steps {args.max_meta_steps}")

    if accelerator.is_main_process:
        tracker_config = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in trajectory.items()}
        accelerator.init_trackers("train_metagan", config=tracker_config)

    # 5. meta-training
    progress = tqdm(
        total=args.max_meta_steps,
        initial=first_step,
        desc="meta steps",
        disable=not accelerator.is_local_main_process,
    )
    validation: dict[str, Any] | None = None
    yardstick: dict[str, Any] | None = None
    skipped = 0
    start = time.perf_counter()

    def current_card_info(run: dict[str, Any]) -> dict[str, Any]:
        """The card record of the current meta-weights, with the latest validation and yardstick results."""
        return card_info(
            args,
            data_description,
            dataset,
            train_classes,
            val_classes,
            test_classes,
            config,
            validation,
            learner.lr_scales(),
            run,
            yardstick,
        )

    def current_pipeline(run: dict[str, Any]) -> MetaGANPipeline:
        """The current meta-weights (EMA generator where used) as a pipeline with its card record."""
        return MetaGANPipeline(
            generator=copy.deepcopy(ema_generator()).eval(),
            discriminator=copy.deepcopy(discriminator_model).eval(),
            card_info=current_card_info(run),
        )

    for step in range(first_step, args.max_meta_steps):
        tasks = sampler.sample_batch(tasks_per_process)
        logs = learner.meta_step(tasks, step=step)  # raises NonFiniteMetaStepError after too many bad steps
        if logs["nonfinite"]:
            skipped += 1
        elif ema is not None:
            ema.step(generator_model.parameters())
        training_state.step = global_step = step + 1
        elapsed = time.perf_counter() - start
        tasks_per_s = (global_step - first_step) * args.meta_batch_size / max(elapsed, 1e-9)
        progress.update(1)
        progress.set_postfix(d_loss=f"{logs.get('d_loss', float('nan')):.3f}", tasks_s=f"{tasks_per_s:.1f}")
        if global_step % args.logging_steps == 0 or global_step == args.max_meta_steps:
            accelerator.log({**logs, "tasks_per_s": tasks_per_s}, step=global_step)
        if args.checkpointing_steps and global_step % args.checkpointing_steps == 0:
            save_checkpoint(
                accelerator, args, global_step, sampler, trajectory, (generator_model, discriminator_model)
            )
        out_of_time = time_budget_spent(accelerator, args.max_train_minutes, elapsed)
        last = global_step == args.max_meta_steps or out_of_time
        periodic = args.validation_steps and global_step % args.validation_steps == 0
        if args.num_validation_classes > 0 and test_classes.num_classes > 0 and (periodic or last):
            if accelerator.is_main_process:
                validation = validate(
                    accelerator,
                    args,
                    global_step,
                    ema_generator(),
                    discriminator_model,
                    test_classes,
                    mixed_precision,
                )
                accelerator.log(
                    {
                        "validation/heldout_distance": validation["heldout_distance"],
                        "validation/heldout_distance_unadapted": validation["heldout_distance_unadapted"],
                    },
                    step=global_step,
                )
            accelerator.wait_for_everyone()
        if yardstick_domain is not None and (periodic or last):
            if accelerator.is_main_process:
                run = {"meta_steps": global_step, "device": accelerator.device.type}
                judged = current_pipeline(run)  # adapt() works on copies: these weights stay as they are
                yardstick = run_yardstick(accelerator, args, global_step, judged, yardstick_domain, mixed_precision)
                accelerator.log(
                    {f"yardstick/{k}": v for k, v in [("score", yardstick["score"]), *yardstick["means"].items()]},
                    step=global_step,
                )
                key = selection_key(yardstick, args.select_min_recognisability)
                if args.select_best and key > best_key:
                    best_key = key
                    judged.card_info = current_card_info(run)  # now with this yardstick result
                    save_best(judged, args.output_dir, yardstick)
            accelerator.wait_for_everyone()
        if out_of_time and global_step < args.max_meta_steps:
            logger.info(f"--max_train_minutes {args.max_train_minutes} reached after meta step {global_step}")
            if args.checkpointing_steps and global_step % args.checkpointing_steps != 0:
                save_checkpoint(
                    accelerator, args, global_step, sampler, trajectory, (generator_model, discriminator_model)
                )
            break
    progress.close()
    wall_time = time.perf_counter() - start
    final_step = training_state.step
    steps_run = final_step - first_step

    # 6. final pipeline (EMA generator where used) with its model card
    check_finite_weights(
        {"generator": generator_model, "discriminator": discriminator_model}, action="save the meta-trained pipeline"
    )
    check_ranks_identical(accelerator, generator_model, discriminator_model)
    accelerator.wait_for_everyone()
    pipeline = None
    if accelerator.is_main_process:
        pipeline = current_pipeline(
            {
                "meta_steps": final_step,
                "steps_this_run": steps_run,
                "skipped_nonfinite_steps": skipped,
                "num_processes": world_size,
                "wall_time_s": round(wall_time, 1),
                "tasks_per_s": round(steps_run * args.meta_batch_size / wall_time, 3) if steps_run else None,
                "mixed_precision": mixed_precision,
                "requested_mixed_precision": effective_mixed_precision(args),
                "device": accelerator.device.type,
            }
        )
        pipeline.save_pretrained(args.output_dir, repo_id=args.hub_model_id)
        logger.info(f"saved the meta-trained pipeline to {args.output_dir}")
        if args.push_to_hub:
            url = pipeline.push_to_hub(args.hub_model_id, token=args.hub_token, private=args.hub_private_repo or None)
            logger.info(f"pushed to {url}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return pipeline


def card_info(
    args: argparse.Namespace,
    data_description: str,
    dataset,
    train_classes,
    val_classes,
    test_classes,
    config: MetaLearningConfig,
    validation: dict[str, Any] | None,
    lr_scales: dict[str, dict[str, float]] | None,
    run: dict[str, Any],
    yardstick: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model card record: training configuration, data (with licence notes), validation and yardstick numbers."""
    algorithm_names = {"reptile": "Reptile", "fomaml": "first-order MAML", "pretrain": "pooled pretraining"}
    res = f"{args.resolution}x{args.resolution}"
    training = {
        "algorithm": args.algorithm,
        "preset": args.preset,
        "loss": args.loss,
        "shots": args.shots,
        "queries": args.queries,
        "inner_steps": args.inner_steps,
        "inner_lr": args.inner_lr,
        "inner_optimizer": args.inner_optimizer,
        "inner_batch_size": args.inner_batch_size,
        "outer_optimizer": args.outer_optimizer,
        "meta_lr": args.meta_lr,
        "meta_batch_size": args.meta_batch_size,
        "r1_gamma": args.r1_gamma,
        "gp_lambda": args.gp_lambda,
        "wgan_drift": args.wgan_drift,
        "augment": args.augment,
        "mode_seeking_weight": args.mode_seeking_weight,
        "shot_augment": args.shot_augment,
        "inner_r1_interval": args.inner_r1_interval,
        "inner_freeze_discriminator_blocks": args.inner_freeze_discriminator_blocks,
        "diversity_loss": args.diversity_loss,
        "diversity_weight": args.diversity_weight,
        "learn_inner_lr": args.learn_inner_lr,
        "query_coverage_weight": args.query_coverage_weight,
        "query_coverage_samples": args.query_coverage_samples if args.query_coverage_weight else None,
        "query_coverage_space": args.query_coverage_space if args.query_coverage_weight else None,
        "proximal_weight": args.proximal_weight or None,
        "ema_decay": args.ema_decay,
        "seed": args.seed,
        **run,
        "data": data_description,
        "classes (train / val / test)": f"{train_classes.num_classes} / {val_classes.num_classes} / "
        f"{test_classes.num_classes} (split seed {args.split_seed})",
        "heldout_examples": list(test_classes.class_names[:8]),
    }
    if validation is not None:
        training["validation_heldout_distance"] = round(validation["heldout_distance"], 5)
        training["validation_heldout_distance_unadapted"] = round(validation["heldout_distance_unadapted"], 5)
        training["validation"] = (
            f"{len(validation['per_class'])} test classes, {validation['shots']} shots, {validation['adapt_steps']} "
            f"adaptation steps at lr {validation['adapt_lr']}, {validation['samples_per_class']} samples per class; "
            f"{validation['metric']}"
        )
    if yardstick is not None:
        means = yardstick["means"]
        training["yardstick_score"] = round(yardstick["score"], 5)
        training["yardstick"] = (
            f"at meta step {yardstick['step']}: {yardstick['num_classes']} validation classes, {yardstick['shots']} "
            f"shots, {yardstick['adapt_steps']} adapt() steps, {yardstick['samples_per_class']} samples per class; "
            f"recognisability {means['recognisability']:.3f}, recall {means['recall']:.3f}, precision "
            f"{means['precision']:.3f}, relative diversity {means['relative_diversity']:.3f}, copy rate "
            f"{means['copy_rate']:.3f} (classifier accuracy on real images "
            f"{yardstick['classifier_heldout_accuracy']:.3f})"
        )
    training["command"] = "accelerate launch scripts/train_metagan.py " + public_command(sys.argv[1:])
    notes = [
        f"Meta-trained on the {train_classes.num_classes} training classes of {data_description} at {res} with "
        f"{args.channels} channel(s); the {val_classes.num_classes} validation and {test_classes.num_classes} test "
        f"classes were held out (never seen in meta-training).",
    ]
    license_note = getattr(dataset, "license_note", None)
    if license_note:
        notes.append(license_note)
    info = {
        "title": args.hub_model_id.split("/")[-1] if args.hub_model_id else f"Meta-GAN meta-checkpoint ({res})",
        "summary": (
            f"A {res} Meta-GAN meta-trained with {algorithm_names[args.algorithm]} ({args.loss} loss) so that it "
            f"adapts to a new class from about {args.shots} images with `pipe.adapt(images)`."
        ),
        "tags": ["meta-learning", args.algorithm],
        "training": training,
        "data_notes": "\n\n".join(notes),
        "validation": validation,
        "training_config": public_args(args),
        "meta_learning_config": config.to_dict(),
    }
    if lr_scales is not None:
        info[LR_SCALES_KEY] = {m: {k: round(v, 6) for k, v in d.items()} for m, d in lr_scales.items()}
    return info


if __name__ == "__main__":
    main(parse_args())
