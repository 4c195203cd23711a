#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Train a copy encoder for a Meta-GAN pipeline and save the pipeline with it.

The near-copy filter (`pipe(..., avoid_copies_of=shots)`) judges whether a sample is a near-copy of a shot by
distances in some feature space. Without a copy encoder that space is the adapted discriminator's (block -2), and
its pass costs about as much as generating the image. A copy encoder is a small frozen image classifier
([`~metagan_hub.metrics.classifiers.EvaluationClassifier`], about 0.1 M parameters besides its linear head) trained
here on the start's own meta-training classes; the filter then uses its unit-length penultimate features, at about
a tenth of the discriminator's cost per image, and works on pipelines saved without a discriminator.

Data: the training split of the KanjiVG class split that `scripts/train_metagan.py` meta-trains on (`--split_seed`,
never its validation or test classes, so never a benchmark class), `--num_classes` of them chosen with
`--class_seed`, 20 renders each with render seed 0 (the meta-training renders). Training is deterministic (the same
arguments and thread count give identical weights on the same kind of CPU). The encoder's held-out accuracy is
measured on 2 renders per class with render seed 1 and recorded in its config with the recipe and the data.

    python scripts/train_copy_encoder.py --pipeline checkpoints/metagan-kanji-32-variety \\
        --output_dir runs/metagan-kanji-32-variety-with-encoder

writes the whole pipeline (its generator, discriminator and card information unchanged) with a `copy_encoder/`
folder, saved without the classifier's linear head (`EvaluationClassifier.without_head()`: the filter uses the
features only; the class names and held-out accuracy stay in its config). 2,000 classes and 6 epochs (the
defaults) took about 10 minutes on one thread of a 2-core AVX2 CPU (with two other processes running).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np
import torch

logger = logging.getLogger("train_copy_encoder")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="A Meta-GAN pipeline folder (or Hub repo id).")
    parser.add_argument("--output_dir", required=True, help="New folder for the pipeline with its copy encoder.")
    parser.add_argument("--num_classes", type=int, default=2000, help="KanjiVG training classes to train on.")
    parser.add_argument("--num_epochs", type=int, default=6)
    parser.add_argument("--block_out_channels", default="16,32,64,128", help="Encoder widths, comma-separated.")
    parser.add_argument("--split_seed", type=int, default=0, help="Class split seed of meta-training.")
    parser.add_argument("--class_seed", type=int, default=11, help="Seed of the choice of training classes.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the encoder's weights, order and jitter.")
    parser.add_argument("--num_threads", type=int, default=1, help="torch threads (1: reproducible anywhere).")
    parser.add_argument("--cache_dir", default=None, help="Cache of the renders (default: $METAGAN_HUB_CACHE).")
    parser.add_argument("--max_classes", type=int, default=None, help="Render only the first N characters (tests).")
    args = parser.parse_args(argv)
    for name in ("num_classes", "num_epochs", "num_threads", "max_classes"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"`--{name}` must be a positive integer, got {getattr(args, name)!r}.")
    for name in ("split_seed", "class_seed"):  # as numpy and the library's domains take them
        if getattr(args, name) < 0:
            raise ValueError(f"`--{name}` must be a non-negative integer, got {getattr(args, name)!r}.")
    try:
        widths = tuple(int(c) for c in args.block_out_channels.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise ValueError(
            f"`--block_out_channels` must be positive integers, comma-separated, got {args.block_out_channels!r}."
        )
    args.block_out_channels = widths
    if os.path.exists(args.output_dir) and os.listdir(args.output_dir):
        raise ValueError(f"`--output_dir` {args.output_dir!r} exists and is not empty: give a new folder.")
    if os.path.abspath(args.output_dir) == os.path.abspath(args.pipeline):
        raise ValueError("`--output_dir` must differ from `--pipeline`: the pipeline is written to a new folder.")
    check_num_classes(args)
    return args


def check_num_classes(args: argparse.Namespace) -> None:
    """Refuse a `--num_classes` above the training classes of the split before anything is loaded or rendered (the
    KanjiVG class list, and so the split, is known without rendering)."""
    from metagan_hub.data.kanjivg import KanjiVGDataset

    # the resolution (the pipeline's, read later) changes the renders, not the classes
    full = KanjiVGDataset(resolution=32, cache_dir=args.cache_dir, max_classes=args.max_classes)
    try:
        train, _, _ = full.split_classes(seed=args.split_seed)
    except ValueError as err:
        if args.max_classes is None:
            raise
        raise ValueError(f"`--max_classes` {args.max_classes} leaves too few classes to split: {err}") from None
    if args.num_classes > train.num_classes:
        raise ValueError(
            f"`--num_classes` {args.num_classes} is more than the {train.num_classes} training classes of split seed "
            f"{args.split_seed}."
        )


def training_classes(args: argparse.Namespace):
    """`(images uint8 [N, 1, R, R], labels [N], names)` of the chosen meta-training classes, and the render kwargs."""
    from metagan_hub.data.kanjivg import KanjiVGDataset

    full = KanjiVGDataset(
        resolution=args.resolution,
        samples_per_class=20,
        seed=0,
        cache_dir=args.cache_dir,
        max_classes=args.max_classes,
    ).load()
    train, _, _ = full.split_classes(seed=args.split_seed)
    if args.num_classes > train.num_classes:
        raise ValueError(
            f"`--num_classes` {args.num_classes} is more than the {train.num_classes} training classes of split seed "
            f"{args.split_seed}."
        )
    chosen = sorted(np.random.default_rng(args.class_seed).permutation(train.num_classes)[: args.num_classes].tolist())
    images, labels, names = [], [], []
    for label, i in enumerate(chosen):
        x = train.class_images_uint8(i)  # [20, 1, R, R]
        images.append(x)
        labels += [label] * x.shape[0]
        names.append(train.class_names[i])
    return torch.cat(images), torch.tensor(labels), names


def heldout_renders(names: list[str], args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """2 renders per class with render seed 1 (never trained on), for the encoder's held-out accuracy."""
    from metagan_hub.data.kanjivg import KanjiVGDataset

    data = KanjiVGDataset(
        resolution=args.resolution, samples_per_class=2, characters=names, seed=1, cache_dir=args.cache_dir
    ).load()
    index = {name: i for i, name in enumerate(names)}
    images, labels = [], []
    for j, name in enumerate(data.class_names):
        x = data.class_images_uint8(j)
        images.append(x)
        labels += [index[name]] * x.shape[0]
    return torch.cat(images), torch.tensor(labels)


def main(args: argparse.Namespace) -> str:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    from metagan_hub import MetaGANPipeline
    from metagan_hub.metrics.classifiers import ClassifierRecipe, fit_classifier

    pipe = MetaGANPipeline.from_pretrained(args.pipeline)
    cfg = pipe.generator.config
    if cfg.out_channels != 1:
        raise ValueError(
            f"`--pipeline` {args.pipeline!r} makes {cfg.out_channels}-channel images; the copy encoder is trained on "
            "gray KanjiVG renders (1 channel)."
        )
    args.resolution = int(cfg.sample_size)
    images, labels, names = training_classes(args)
    heldout = heldout_renders(names, args)
    logger.info(
        "copy encoder: %d classes x 20 renders (%d images, %dx%d), %d epochs, CPU capability %s, %d thread(s)",
        len(names),
        images.shape[0],
        args.resolution,
        args.resolution,
        args.num_epochs,
        torch.backends.cpu.get_cpu_capability(),
        args.num_threads,
    )
    start = time.perf_counter()
    encoder = fit_classifier(
        images,
        labels,
        names,
        domain="kanji-train",
        recipe=ClassifierRecipe(num_epochs=args.num_epochs, block_out_channels=args.block_out_channels),
        seed=args.seed,
        heldout=heldout,
        num_threads=args.num_threads,
        description=(
            f"KanjiVG training classes of class split seed {args.split_seed}: {len(names)} chosen with seed "
            f"{args.class_seed}, 20 renders each with render seed 0; held-out accuracy on 2 renders per class with "
            "render seed 1"
        ),
    )
    logger.info(
        "trained in %.1f s; held-out accuracy %.3f over %d classes",
        time.perf_counter() - start,
        encoder.config.heldout_accuracy,
        len(names),
    )
    pipe.register_modules(copy_encoder=encoder.without_head())  # the filter uses its features only
    pipe.save_pretrained(args.output_dir)
    logger.info("saved the pipeline with its copy encoder to %s", args.output_dir)
    return args.output_dir


if __name__ == "__main__":
    try:
        parsed = parse_args()
    except ValueError as err:
        print(f"train_copy_encoder.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    main(parsed)
