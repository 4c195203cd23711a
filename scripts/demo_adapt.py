#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""The main job on the embedded default: adapt the bundled kanji meta-checkpoint to five images of a kanji it never
saw during meta-training, and write a sample grid.

    python scripts/demo_adapt.py --output_dir demo-output

The five shots are KanjiVG renders of a held-out character (drawn with a render seed that meta-training never used);
the grid `grid.png` shows the shots in the top row and generated samples below. `shots.png`, `samples.png`,
`loss_curve.png` and the adapted pipeline (`adapted/`) are written too.

The checkpoint (`--pretrained_model_name_or_path auto`, the default) follows the hardware like `--mixed_precision
auto`: the bundled `checkpoints/metagan-kanji-32` where the CPU computes bf16 natively (AVX512-BF16 / AMX), its
half-width sibling `checkpoints/metagan-kanji-32-small` on other CPUs, where adaptation runs in fp32 and the
full-width model would take about 3x as long. `summary.json` names the one used. `--variety` adapts and samples
with the variety setting the checkpoint's card recommends, e.g. for the most varied samples:

    python scripts/demo_adapt.py --pretrained_model_name_or_path checkpoints/metagan-kanji-32-variety --variety
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time

import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from adapt_metagan import SEED_RANGE, plot_losses  # noqa: E402

from metagan_hub import MetaGANPipeline  # noqa: E402
from metagan_hub.data import get_dataset  # noqa: E402
from metagan_hub.hub.model_card import variety_adapt_options, variety_setting  # noqa: E402
from metagan_hub.hub.safety import is_inside  # noqa: E402
from metagan_hub.training.gan_step import MIXED_PRECISION_CHOICES, onednn_isa_cap  # noqa: E402

# used only if the checkpoint does not record its held-out characters
FALLBACK_CHARACTER = "森"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pretrained_model_name_or_path",
        default="auto",
        help="Meta-checkpoint folder or Hub repo id. auto (default): the bundled checkpoints/metagan-kanji-32 where "
        "the CPU computes bf16 natively, else its half-width sibling checkpoints/metagan-kanji-32-small, which adapts "
        "about 3x faster in fp32.",
    )
    parser.add_argument(
        "--character",
        default=None,
        help="The new kanji; defaults to the first held-out character recorded in the checkpoint.",
    )
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument(
        "--num_steps",
        type=int,
        default=150,
        help="adapt() steps (default 150: with adapt()'s R1 weight 1.0, held-out kanji are recognised as often after "
        "150 steps as after the 200 steps of earlier releases; see the bundled checkpoint's experiment log).",
    )
    parser.add_argument(
        "--mixed_precision",
        default="auto",
        choices=list(MIXED_PRECISION_CHOICES),
        help="auto (default): bf16 where the device computes it natively (CPUs with AVX512-BF16/AMX), else fp32. "
        "bf16 on other CPUs is emulated and about 10x slower.",
    )
    parser.add_argument("--num_samples", type=int, default=40)
    parser.add_argument(
        "--render_seed",
        type=int,
        default=12345,
        help="Seed of the KanjiVG 'hands' used for the shots (meta-training used another one).",
    )
    parser.add_argument(
        "--variety",
        action="store_true",
        help="Adapt and sample with the variety setting the checkpoint's card recommends (`variety_setting` in its "
        "metagan_hub.json; checkpoints/metagan-kanji-32-variety's: shot_augment=1, latent_scale=1.25 and the "
        "near-copy filter at copy_margin=1.25): more varied samples and fewer near-copies of the shots, somewhat less "
        "faithful. An error for a checkpoint whose card has none.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output_dir",
        default="demo-output",
        help="Written on every run (files of the same names are replaced); never inside the checkpoint's folder.",
    )
    args = parser.parse_args(argv)
    for name in ("shots", "num_steps", "num_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.render_seed < 0:
        parser.error(f"--render_seed must be >= 0, got {args.render_seed}")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        parser.error(f"--seed must be from {SEED_RANGE[0]} to {SEED_RANGE[1]} (torch's seeds), got {args.seed}")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        parser.error(f"--output_dir {args.output_dir} is a file, not a folder")
    checkpoint = resolve_checkpoint(args.pretrained_model_name_or_path)
    if os.path.isdir(checkpoint) and (
        is_inside(args.output_dir, checkpoint) or is_inside(checkpoint, os.path.join(args.output_dir, "adapted"))
    ):
        parser.error(
            f"--output_dir {args.output_dir} would write into the checkpoint folder {checkpoint} that the demo reads "
            f"(--pretrained_model_name_or_path {args.pretrained_model_name_or_path}) and overwrite its files; give "
            "another --output_dir"
        )
    return args


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arrays = ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()  # [N, H, W, C] in [0, 1]
    return MetaGANPipeline.numpy_to_pil(arrays)


def grid(rows: list[list[Image.Image]], scale: int = 2, pad: int = 2) -> Image.Image:
    w, h = rows[0][0].size
    cols = max(len(r) for r in rows)
    out = Image.new("L", (cols * (w * scale + pad) + pad, len(rows) * (h * scale + pad) + pad), 128)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            out.paste(
                image.convert("L").resize((w * scale, h * scale), Image.NEAREST),
                (pad + j * (w * scale + pad), pad + i * (h * scale + pad)),
            )
    return out


def resolve_checkpoint(name: str) -> str:
    """`name`, or for `"auto"` the bundled checkpoint to adapt on this machine's CPU: the web app's rule
    (`demo_app.resolve_model`), so the demo and the app always pick the same model."""
    from demo_app import resolve_model  # the app's module imports Gradio only when its page is built

    return resolve_model(name)


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.pretrained_model_name_or_path = resolve_checkpoint(args.pretrained_model_name_or_path)
    if not (os.path.isdir(args.pretrained_model_name_or_path) or args.pretrained_model_name_or_path.count("/") == 1):
        raise SystemExit(f"no checkpoint at {args.pretrained_model_name_or_path!r}")
    pipe = MetaGANPipeline.from_pretrained(args.pretrained_model_name_or_path)
    setting = variety_setting(pipe.card_info) if args.variety else None
    if args.variety and setting is None:
        raise SystemExit(
            f"--variety: the card of {args.pretrained_model_name_or_path!r} recommends no variety setting (no "
            "`variety_setting` in its metagan_hub.json); run without --variety or name a checkpoint whose card has "
            "one, e.g. checkpoints/metagan-kanji-32-variety."
        )
    if setting is not None and "copy_margin" in setting and args.shots < 2:
        raise SystemExit(
            f"--variety: this card's setting replaces near-copies of the shots, which needs --shots 2 or more (their "
            f"distances to each other set what counts as a copy); got --shots {args.shots}."
        )
    cfg = pipe.generator.config
    heldout = pipe.card_info.get("training", {}).get("heldout_examples") or [FALLBACK_CHARACTER]
    character = args.character or heldout[0]

    # 1. five shots of the new kanji, in "hands" the meta-training never rendered
    data = get_dataset(
        "kanjivg",
        resolution=cfg.sample_size,
        channels=cfg.out_channels,
        characters=[character],
        samples_per_class=args.shots,
        seed=args.render_seed,
    )
    shots = data.class_images(0)[: args.shots]  # [K, C, H, W] in [-1, 1]

    # 2. adapt (a new pipeline; the meta-checkpoint is untouched)
    start = time.perf_counter()
    adapted = pipe.adapt(
        shots,
        num_steps=args.num_steps,
        mixed_precision=args.mixed_precision,
        generator=torch.Generator().manual_seed(args.seed),
        **(variety_adapt_options(setting) if setting is not None else {}),
    )
    seconds = time.perf_counter() - start

    # 3. samples and grids
    sampling = {}
    if setting is not None:
        sampling["latent_scale"] = setting["latent_scale"]
        if "copy_margin" in setting:
            sampling.update(avoid_copies_of=shots, copy_margin=setting["copy_margin"])
    sample_start = time.perf_counter()
    samples = adapted(
        batch_size=args.num_samples, generator=torch.Generator().manual_seed(args.seed), **sampling
    ).images
    sample_seconds = time.perf_counter() - sample_start
    copy_features = adapted.copy_filter_features if "avoid_copies_of" in sampling else None
    os.makedirs(args.output_dir, exist_ok=True)
    shot_images = to_pil(shots)
    per_row = max(args.shots, 10)
    rows = [shot_images] + [samples[i : i + per_row] for i in range(0, len(samples), per_row)]
    grid(rows).save(os.path.join(args.output_dir, "grid.png"))
    grid([shot_images]).save(os.path.join(args.output_dir, "shots.png"))
    grid([samples[i : i + per_row] for i in range(0, len(samples), per_row)]).save(
        os.path.join(args.output_dir, "samples.png")
    )
    record = adapted.card_info["adaptation"]
    stop = record.get("copy_stop_step")  # with the setting's copy_stop: the step whose generator was kept
    plot_losses(record["losses"], os.path.join(args.output_dir, "loss_curve.png"))
    adapted.save_pretrained(os.path.join(args.output_dir, "adapted"))
    summary = {
        "character": character,
        "shots": args.shots,
        "num_steps": args.num_steps,
        "seconds": round(seconds, 2),
        "mixed_precision": record["mixed_precision"],  # what the steps ran in
        "requested_mixed_precision": args.mixed_precision,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": onednn_isa_cap(),
        "seed": args.seed,
        "render_seed": args.render_seed,
        "checkpoint": args.pretrained_model_name_or_path,
        "variety_setting": setting,
        **({"copy_stop_step": stop} if record.get("copy_stop") is not None else {}),
        "copy_features": copy_features,
        "sample_seconds": round(sample_seconds, 3),
        "grid": os.path.join(args.output_dir, "grid.png"),
    }
    with open(os.path.join(args.output_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
    print(json.dumps(summary, ensure_ascii=False))
    print(
        f"adapted to {character!r} from {args.shots} images in {seconds:.1f} s"
        f"{f' (stopped as samples began to copy the shots; kept the model after {stop} steps)' if stop else ''}; "
        f"grid with {math.ceil(len(samples) / per_row)} sample rows in {summary['grid']}"
    )


if __name__ == "__main__":
    main(parse_args())
