# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Command line preview of the data sources.

```bash
python -m metagan_hub.data preview --dataset kanjivg --classes 16 --samples 8 --out grid.png
python -m metagan_hub.data preview --dataset fonts --classes 16 --samples 8 --out fonts.png
python -m metagan_hub.data preview --dataset imagefolder --root my_images/ --out grid.png
python -m metagan_hub.data info --dataset digits
```

`preview` writes a grid image (one row per class, one column per sample) and prints counts; `info` prints counts only.
For the rendered sources (`kanjivg`, `fonts`) only the previewed classes are rendered.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from . import DATASETS, FontGlyphDataset, KanjiVGDataset, find_system_fonts, get_dataset
from .base import ClassImageDataset, default_split_sizes
from .kanjivg import kanjivg_characters


def class_list(names: Iterable[str], limit: int = 64) -> str:
    """Class names for a one-line report: single characters (glyph classes) run together, other names
    comma-separated; cut to `limit` characters with an ellipsis.

    Example:

    ```py
    >>> from metagan_hub.data.__main__ import class_list
    >>> class_list(["三", "上", "下"]), class_list(["cats", "dogs"]), class_list(["a_long_name"] * 9, limit=20)
    ('三上下', 'cats, dogs', 'a_long_name, a_long…')
    ```
    """
    names = list(names)
    text = ("" if all(len(n) == 1 for n in names) else ", ").join(names)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _echo(message: str, error: bool = False) -> None:
    stream = sys.stderr if error else sys.stdout
    stream.write(message + "\n")
    stream.flush()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m metagan_hub.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("preview", "write a grid of samples and print counts"), ("info", "print counts")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--dataset", choices=DATASETS, default="kanjivg")
        p.add_argument("--resolution", type=int, default=32)
        p.add_argument("--channels", type=int, default=1, choices=(1, 3))
        p.add_argument("--seed", type=int, default=0, help="seed of the class choice and of kanjivg rendering")
        p.add_argument("--samples_per_class", type=int, default=20, help="kanjivg: rendered hands per class")
        p.add_argument("--character_set", default="kanji", help="kanjivg: kanji, kana or all")
        p.add_argument("--font_path", action="append", default=None, help="fonts: font file or folder (repeatable)")
        p.add_argument("--include_kanjivg", type=int, default=0, help="fonts: kanjivg hands added per class")
        p.add_argument("--root", default=None, help="imagefolder: folder of class subfolders")
        p.add_argument("--dataset_name", default=None, help="hf: Hub dataset id or local folder")
        p.add_argument("--split", default="train", help="hf: split")
        p.add_argument("--image_column", default="image", help="hf: image column")
        p.add_argument("--label_column", default="label", help="hf: label column")
        p.add_argument("--cache_dir", default=None, help="render cache (default $METAGAN_HUB_CACHE or ~/.cache)")
        if name == "preview":
            p.add_argument("--classes", type=int, default=16, help="rows of the grid")
            p.add_argument("--samples", type=int, default=8, help="columns of the grid")
            p.add_argument("--out", default="grid.png", help="output image file")
            p.add_argument("--scale", type=int, default=None, help="pixel magnification (default: to about 64 px)")
    args = parser.parse_args(argv)
    if args.command == "preview":
        for name in ("classes", "samples"):
            if getattr(args, name) < 1:
                parser.error(f"--{name} must be at least 1")
    return args


def _pick(total: int, count: int, seed: int) -> list[int]:
    """`count` distinct class indices out of `total`, random from `seed`, in increasing order."""
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(total, generator=generator)[: min(count, total)].tolist())


def _build(args: argparse.Namespace, preview_classes: int | None):
    """The dataset to show, the class indices to show, lines of counts about the whole source, and its number of
    classes (`None` when unknown without rendering everything)."""
    common = {"resolution": args.resolution, "channels": args.channels}
    lines = []
    if args.dataset == "kanjivg":
        chars = kanjivg_characters(args.character_set)
        lines.append(f"kanjivg characters ({args.character_set}): {len(chars)}, {args.samples_per_class} samples each")
        if preview_classes is None:
            return None, [], lines, len(chars)
        picked = [chars[i] for i in _pick(len(chars), preview_classes, args.seed)]
        dataset = KanjiVGDataset(
            **common, samples_per_class=args.samples_per_class, characters=picked, seed=args.seed,
            cache_dir=args.cache_dir, use_cache=False,
        )  # fmt: skip
        return dataset, list(range(dataset.num_classes)), lines, len(chars)
    if args.dataset == "fonts":
        font_files = find_system_fonts() if args.font_path is None else args.font_path
        chars = kanjivg_characters("kanji")
        lines.append(f"font files: {len(font_files)}; candidate characters: {len(chars)}")
        if preview_classes is None:
            return None, [], lines, None
        picked = [chars[i] for i in _pick(len(chars), preview_classes, args.seed)]
        dataset = FontGlyphDataset(
            **common, characters=picked, font_paths=args.font_path, include_kanjivg=args.include_kanjivg,
            cache_dir=args.cache_dir, use_cache=False,
        )  # fmt: skip
        dataset.load()
        lines.append(f"font faces: {len(dataset.faces)} ({', '.join(str(f) for f in dataset.faces)})")
        lines.append(f"filtered glyphs in the preview: {dataset.filter_counts}")
        return dataset, list(range(dataset.num_classes)), lines, None
    kwargs = dict(common)
    if args.dataset == "imagefolder":
        kwargs["root"] = args.root
    elif args.dataset == "hf":
        kwargs.update(
            dataset_name=args.dataset_name, split=args.split, image_column=args.image_column,
            label_column=args.label_column,
        )  # fmt: skip
    dataset = get_dataset(args.dataset, **kwargs)
    counts = [dataset.num_images(i) for i in range(dataset.num_classes)]
    lines.append(
        f"classes: {dataset.num_classes}; images: {sum(counts)} (per class min {min(counts)}, "
        f"mean {np.mean(counts):.1f}, max {max(counts)})"
    )
    picked = _pick(dataset.num_classes, preview_classes or 0, args.seed) if preview_classes else []
    return dataset, picked, lines, dataset.num_classes


def make_grid(dataset: ClassImageDataset, class_indices: Sequence[int], samples: int, scale: int) -> Image.Image:
    """One row per class, `samples` columns (gray where a class has fewer images), magnified by `scale`."""
    res, channels = dataset.resolution, dataset.channels
    pad = 2
    rows, cols = len(class_indices), samples
    grid = np.full((rows * (res + pad) + pad, cols * (res + pad) + pad, channels), 128, dtype=np.uint8)  # [H, W, C]
    for r, index in enumerate(class_indices):
        images = dataset.class_images_uint8(index)[:samples].permute(0, 2, 3, 1).numpy()  # [n, H, W, C]
        for c, image in enumerate(images):
            y, x = pad + r * (res + pad), pad + c * (res + pad)
            grid[y : y + res, x : x + res] = image
    image = Image.fromarray(grid[..., 0] if channels == 1 else grid)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        dataset, picked, lines, total_classes = _build(args, args.classes if args.command == "preview" else None)
    except (ValueError, ImportError) as err:
        _echo(f"error: {err}", error=True)
        return 2
    _echo(f"dataset: {args.dataset} at {args.resolution}x{args.resolution}, {args.channels} channel(s)")
    for line in lines:
        _echo(line)
    if total_classes is not None:
        train, val, test = default_split_sizes(total_classes)
        if train >= 1:
            _echo(f"default class split: {train} train / {val} val / {test} test")
        else:
            _echo(f"default class split: not possible with {total_classes} class(es)")
    if args.command == "preview":
        if not picked:
            _echo("error: nothing to preview", error=True)
            return 2
        scale = args.scale if args.scale is not None else max(1, 64 // args.resolution)
        grid = make_grid(dataset, picked, args.samples, scale)
        grid.save(args.out)
        counts = [dataset.num_images(i) for i in picked]
        names = class_list(dataset.class_names[i] for i in picked)
        _echo(f"previewed classes: {len(picked)} ({names}); images per previewed class: {counts}")
        _echo(f"wrote {args.out} ({grid.width}x{grid.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
