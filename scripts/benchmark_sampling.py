#!/usr/bin/env python
# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Sampling-time fidelity / diversity trade-offs of adapted meta-GANs, judged like `benchmark_fewshot.py`.

Every contender is adapted once per evaluation class with exactly the shots, seeds and `adapt()` budget of
`benchmark_fewshot.py` (its main table's run), then its samples are judged in classifier features in two ways:

- **latent scale** `s` (`--latent_scales`): the benchmark's sample latents times `s` (`s < 1` is the truncation trick,
  `s > 1` spreads the samples);
- **discriminator rejection** with keep fraction `f` (`--keep_fractions`): `N / f` samples are drawn (the first `N`
  are the benchmark's), the adapted discriminator scores them (in groups of its minibatch-std group size, 4 for the
  bundled model) and the `N` it rates most real are kept;
- **tone matching** (`--tone_match`): the benchmark's samples through the output tone curve that `adapt()` fits by
  default (`tone_match`; same fit latents and seed, so the generator is exactly the one that call returns: its GAN
  steps do not change), at latent scale 1 and at every `--latent_scales` value. Every other setting judges the plain
  `tanh` output (`adapt(..., tone_match=False)`);
- **near-copy filter** with margin `m` (`--copy_margins`): the pipeline's `avoid_copies_of=shots, copy_margin=m` on
  the benchmark's samples at every latent scale (tone matched with `--tone_match`); replacement latents come from seed
  `seed + 1`, and each row records how many samples were near-copies, replaced or kept, and the extra draws.

`--adapt_options NAME:key=value,...` sets `adapt()` options per contender, as in `benchmark_fewshot.py` (for example
`variety:shot_augment=1` for a second contender on the same checkpoint); the records name the options used.

`s = 1, f = 1` is the benchmark's own sample set, so every row is paired per class with it and, across contenders,
with the first contender's. Results go to `OUTPUT_DIR/sampling.jsonl` (one line per contender, class and setting;
resumable per contender and class) and a paired table to `OUTPUT_DIR/sampling.md`. A rerun into the same folder
reuses a class's records only with the options they were made with (`OUTPUT_DIR/sampling_config.json`: seed, steps,
samples, settings, each contender's folder and `adapt()` options); it may add classes, domains and contenders, and a
changed option is refused before any work.

    python scripts/benchmark_sampling.py --contender bundled=checkpoints/metagan-kanji-32 \\
        --contender pretrain=runs/baselines/pretrain-kanji-32 --domains kanji --classes 0:30 \\
        --latent_scales 0.5,0.75,1.25,1.5,2 --keep_fractions 0.5,0.25 --num_threads 1 --output_dir runs/sampling

`--pair_with RESULTS` (a `benchmark_fewshot.py` results file, `.jsonl` or `.jsonl.gz`; repeatable) adds a table per
domain of every setting minus one of its contenders at one snapshot, paired by class (`--pair_contender`, default
`ddpm-full`, at `--pair_snapshot`, default `3x time, DDIM 25`): the GAN's sampling settings against the diffusion rival
on the same shots and seeds. Where those results hold the benchmark's `real` rows, a `real images (own)` line gives
the real held-out images' own means over the same classes (their copy rate is the one to read every copy rate
against). `--by_shot_set` adds the same table for each shot set where the rows come from several `--seed`s.
`--records FILE` adds earlier sampling records (for example the committed `model_cards/results/*.jsonl.gz`) to the
tables, and `--summarize_only` only rebuilds the tables, without a contender:

    python scripts/benchmark_sampling.py --summarize_only --records model_cards/results/bench-variety.jsonl.gz \
        --pair_with model_cards/results/bench-rival-fonts.jsonl.gz --output_dir runs/variety-vs-rival

`--rival_ddim_steps 10,25` also times the diffusion rival's DDIM sampling (`--rival`, default the bundled
`checkpoints/ddpm-rival-kanji-32`) in the same process and threads, `--num_samples` images per step count, saves it to
`OUTPUT_DIR/rival_speed.json` and adds a table of every timed setting's seconds per 1,000 images and how many times
faster than the rival that is (median and slowest class); `--summarize_only` rebuilds it from that file.

`--quick` runs a tiny model on two digit classes (the smoke path the tests take).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_fewshot as bf  # noqa: E402

logger = logging.getLogger("benchmark_sampling")

RESULTS_FILE = "sampling.jsonl"
CONFIG_FILE = "sampling_config.json"  # the options every record of an output folder shares (see check_output_dir)
CONTENDER_KEY = "contender "  # + name: a contender's entry in CONFIG_FILE
CLASSIFIERS_KEY = "classifiers"  # CONFIG_FILE's evaluation classifier per domain (checked once the domains load)
SUMMARY_FILE = "sampling.md"
RIVAL_SPEED_FILE = "rival_speed.json"
COPY_FEATURES = ("encoder", "discriminator")
REPORTED = ("recognisability", "precision", "recall", "coverage", "kid", "relative_diversity", "copy_rate")


def _positive_floats(text: str, name: str, upper: float | None = None) -> list[float]:
    values = bf._float_list(text, name) if text.strip() else []
    for v in values:
        if not (math.isfinite(v) and v > 0 and (upper is None or v <= upper)):
            allowed = f"in (0, {upper:g}]" if upper is not None else "positive and finite"
            raise ValueError(f"`{name}` values must be {allowed}, got {v!r}.")
    return sorted(set(values))


def _positive_ints(text: str, name: str) -> list[int]:
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"`{name}` values must be positive integers, got {part!r}.")
        values.append(int(part))
    return values


def check_rival(path: str, name: str = "--rival") -> None:
    """`path` must be a `DDPMPipeline` folder, or a Hub repo id where nothing local looks meant; raises a
    `ValueError` naming the option."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from metagan_hub.hub.safety import is_local_path

    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "model_index.json")):
            raise ValueError(f"`{name}` {path!r} is not a DDPMPipeline folder (no model_index.json).")
        return
    top = path.replace(os.sep, "/").split("/")[0]
    local = is_local_path(path) or os.path.isdir(top)  # e.g. runs/rivl beside an existing runs/
    try:
        validate_repo_id(path)
    except HFValidationError:
        local = True
    if local:
        raise ValueError(f"`{name}` {path!r}: no such DDPMPipeline folder (and not a Hub repo id 'owner/name').")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contender", action="append", default=None, help="NAME=PATH of a Meta-GAN pipeline folder.")
    parser.add_argument("--domains", default=None, help="Evaluation domains, comma-separated (default: all).")
    parser.add_argument("--classes", default=None, help="Shard of each domain's evaluation classes, 'a:b'.")
    parser.add_argument("--latent_scales", default="0.5,2", help="Latent scales besides 1 ('' for none).")
    parser.add_argument("--keep_fractions", default="0.5", help="Discriminator keep fractions < 1 ('': none).")
    parser.add_argument(
        "--tone_match", action="store_true", help="Also judge the samples with adapt()'s tone_match curve fitted."
    )
    parser.add_argument(
        "--copy_margins",
        default="",
        help="Near-copy filter margins (the pipeline's avoid_copies_of=shots, copy_margin=m), each at every latent "
        "scale, tone matched with --tone_match ('': none).",
    )
    parser.add_argument(
        "--copy_features",
        default="",
        help="Feature spaces of the near-copy filter, comma-separated: 'encoder' (the pipeline's copy encoder) and/or "
        "'discriminator'; each --copy_margins setting runs in each ('': the pipeline's own choice, the encoder "
        "where it has one).",
    )
    parser.add_argument(
        "--replacement_spread",
        type=float,
        default=1.0,
        help="The filter's replacement_spread in (0, 1] for every --copy_margins setting (1: new draws; smaller: "
        "drawn near the near-copy's latent).",
    )
    parser.add_argument(
        "--max_copy_share",
        type=float,
        default=0.2,
        help="The filter's max_copy_share in (0, 1] for every --copy_margins setting: the largest share of a class's "
        "samples that counts as near-copies (default 0.2, the pipeline's).",
    )
    parser.add_argument(
        "--adapt_options",
        action="append",
        default=None,
        help="NAME:key=value[,key=value]: adapt() options of one contender, as in benchmark_fewshot.py.",
    )
    parser.add_argument("--num_samples", type=int, default=None, help="Samples judged per setting (default 200).")
    parser.add_argument("--num_steps", type=int, default=None, help="adapt() steps per class (default 200).")
    parser.add_argument("--seed", type=int, default=0, help="Base seed, as in benchmark_fewshot.py.")
    parser.add_argument("--num_threads", type=int, default=None, help="torch threads (default: torch's default).")
    parser.add_argument("--cache_dir", default=None, help="Cache of data renders and evaluation classifiers.")
    parser.add_argument("--output_dir", default="runs/bench-sampling")
    parser.add_argument("--quick", action="store_true", help="Tiny model, two digit classes: a smoke run.")
    parser.add_argument(
        "--records", action="append", default=None, help="Earlier sampling records (.jsonl[.gz]) for the tables."
    )
    parser.add_argument(
        "--pair_with",
        action="append",
        default=None,
        help="benchmark_fewshot.py results (.jsonl[.gz]) holding the contender to pair every setting with.",
    )
    parser.add_argument("--pair_contender", default="ddpm-full", help="Contender of --pair_with to subtract.")
    parser.add_argument("--pair_snapshot", default="3x time, DDIM 25", help="Its snapshot label, e.g. '200 steps'.")
    parser.add_argument(
        "--by_shot_set",
        action="store_true",
        help="With --pair_with: also a paired table per shot set (--seed) where a domain's rows hold several.",
    )
    parser.add_argument(
        "--rival_ddim_steps",
        default="",
        help="Also time the diffusion rival's DDIM sampling at these step counts in this run (comma-separated; "
        "'': no rival timing), for a sampling-cost table of every setting against it.",
    )
    parser.add_argument(
        "--rival",
        default=None,
        help="The rival's DDPMPipeline folder for --rival_ddim_steps (default: the bundled one).",
    )
    parser.add_argument(
        "--summarize_only", action="store_true", help="Only rebuild the tables from the records; run nothing."
    )
    args = parser.parse_args(argv)
    for name in ("records", "pair_with"):
        for path in getattr(args, name) or []:
            if not os.path.isfile(path):
                raise ValueError(f"`--{name}` {path!r}: no such file.")
    if args.by_shot_set and not args.pair_with:
        raise ValueError("`--by_shot_set` splits the tables against `--pair_with`'s contender: give --pair_with too.")
    if args.pair_with:  # a contender or snapshot that those records lack is refused now, not after the run
        reference_metrics(
            [r for path in args.pair_with for r in read_jsonl(path)], args.pair_contender, args.pair_snapshot
        )
    if args.summarize_only:
        if args.contender or args.quick or args.rival_ddim_steps.strip() or args.rival:
            raise ValueError(
                "`--summarize_only` runs nothing: leave out --contender, --quick, --rival_ddim_steps and --rival."
            )
        return args
    args.latent_scales = [s for s in _positive_floats(args.latent_scales, "--latent_scales") if s != 1.0]
    args.keep_fractions = [f for f in _positive_floats(args.keep_fractions, "--keep_fractions", 1.0) if f != 1.0]
    args.copy_margins = _positive_floats(args.copy_margins, "--copy_margins")
    args.copy_features = [f.strip() for f in args.copy_features.split(",") if f.strip()] or [None]
    for name in args.copy_features:
        if name not in (None, *COPY_FEATURES):
            raise ValueError(
                f"`--copy_features` {args.copy_features!r}: each must be one of {', '.join(COPY_FEATURES)}, got "
                f"{name!r}."
            )
    from metagan_hub.pipelines.copy_filter import check_max_copy_share, check_replacement_spread

    check_replacement_spread(args.replacement_spread)
    check_max_copy_share(args.max_copy_share)
    args.rival_ddim_steps = _positive_ints(args.rival_ddim_steps, "--rival_ddim_steps")
    if args.rival is not None and not args.rival_ddim_steps:
        raise ValueError(
            f"`--rival` {args.rival!r} is the rival that --rival_ddim_steps times: give --rival_ddim_steps too."
        )
    if args.rival_ddim_steps and (args.rival is not None or not args.quick):  # --quick builds a tiny one
        check_rival(args.rival or bf.DEFAULT_RIVAL)
    if args.num_steps is not None and args.num_steps < 1:
        raise ValueError(f"`--num_steps` must be a positive integer (adapt() steps per class), got {args.num_steps}.")
    if args.seed < 0:
        raise ValueError(f"`--seed` must be a non-negative integer, got {args.seed}.")
    if not args.contender and not args.quick:
        raise ValueError("give at least one --contender NAME=PATH (a Meta-GAN pipeline folder), or --quick.")
    for spec in args.contender or []:
        if bf.parse_contender(spec).kind != "gan" or spec.strip() == "scratch":
            raise ValueError(f"`--contender` {spec!r}: only Meta-GAN pipeline folders (NAME=PATH) are allowed here.")
    # the few-shot benchmark's own options, so that shots, seeds, budgets and metrics are exactly its
    fewshot = ["--output_dir", args.output_dir, "--seed", str(args.seed), "--extra_shots", "", "--no_pixel_metrics"]
    for name in ("domains", "classes", "num_samples", "num_steps", "num_threads", "cache_dir"):
        if getattr(args, name) is not None:
            fewshot += [f"--{name}", str(getattr(args, name))]
    if args.num_steps is not None and not args.quick:  # any budget: only the final generator is judged here
        fewshot += ["--snapshot_steps", f"0,{args.num_steps}"]
    if args.quick:
        fewshot += ["--quick", "--classes", args.classes or "0:2"]
    for spec in args.contender or []:
        fewshot += ["--contender", spec]
    for options in args.adapt_options or []:
        fewshot += ["--adapt_options", options]
    args.fewshot = bf.parse_args(fewshot)
    if args.contender:  # with --quick too: options for a name that is not a contender are refused before any work
        bf.check_adapt_option_names(args.fewshot.adapt_option_map, [bf.parse_contender(s) for s in args.contender])
    # adapt() runs --num_steps steps here (not the few-shot benchmark's last snapshot): its values checked for those
    bf.check_adapt_option_values(args.fewshot.adapt_option_map, args.fewshot, args.fewshot.num_steps)
    for name, options in args.fewshot.adapt_option_map.items():
        if "tone_match" in options:
            raise ValueError(
                f"`--adapt_options` for {name!r}: tone_match is this script's --tone_match setting (every setting "
                "judges the plain output, and --tone_match adds the tone matched ones); leave it out."
            )
    return args


Setting = tuple[float, float, bool, float, float, str | None, float]
DEFAULT_MAX_COPY_SHARE = 0.2  # the pipeline's; records from before the option filtered with it


def settings(args: argparse.Namespace) -> list[Setting]:
    """(latent scale, keep fraction, tone match, copy margin, replacement spread, copy features, max copy share)
    settings: the benchmark's sample set first, then one knob at a time; the near-copy filter (copy margin > 0; 0 is
    off) at every latent scale, in each of `--copy_features` (`None`: the pipeline's choice)."""
    scales = [1.0] + args.latent_scales
    off = DEFAULT_MAX_COPY_SHARE  # (no filter: the share is not used)
    knobs = [(s, 1.0, False, 0.0, 1.0, None, off) for s in scales]
    knobs += [(1.0, f, False, 0.0, 1.0, None, off) for f in args.keep_fractions]
    knobs += [(s, 1.0, True, 0.0, 1.0, None, off) for s in scales] if args.tone_match else []
    spread, share = args.replacement_spread, args.max_copy_share
    filtered = [
        (s, 1.0, args.tone_match, m, spread, f, share)
        for f in args.copy_features
        for m in args.copy_margins
        for s in scales
    ]
    return knobs + filtered


def setting_key(row: dict[str, Any]) -> Setting:
    margin = float(row.get("copy_margin", 0.0))
    return (
        row["latent_scale"],
        row["keep_fraction"],
        bool(row.get("tone_match", False)),
        margin,
        float(row.get("replacement_spread", 1.0)),  # records from before the option: new draws
        # records from before the copy encoder filtered in the discriminator's features
        row.get("copy_features", "discriminator") if margin > 0 else None,
        float(row.get("max_copy_share", DEFAULT_MAX_COPY_SHARE)) if margin > 0 else DEFAULT_MAX_COPY_SHARE,
    )


def wanted_key(setting: Setting, pipeline: Any) -> Setting:
    """`setting` with the pipeline's own choice of copy features (`None`) resolved, as its rows record it."""
    if setting[3] > 0 and setting[5] is None:
        return (*setting[:5], pipeline.copy_filter_features, setting[6])
    return setting


def discriminator_scores(discriminator: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Realness logits `[N]` of `images` `[N, C, H, W]` in `[-1, 1]`, scored in consecutive groups of the
    discriminator's minibatch-std group size (the groups it saw in training)."""
    group = discriminator.config.minibatch_std_group_size
    with torch.no_grad():
        chunks = [discriminator(images[i : i + group]).logits.flatten() for i in range(0, images.shape[0], group)]
    return torch.cat(chunks).float()


def run_config(args: argparse.Namespace, specs: list[str]) -> dict[str, Any]:
    """The options that make a class's records what they are (the adaptation, the samples and the settings judged),
    and per contender (`CONTENDER_KEY` + name) its folder and `adapt()` options."""
    fa = args.fewshot
    config = {
        "seed": fa.seed,
        "num_steps": fa.num_steps,
        "num_samples": fa.num_samples,
        "quick": args.quick,
        "latent_scales": args.latent_scales,
        "keep_fractions": args.keep_fractions,
        "tone_match": args.tone_match,
        "copy_margins": args.copy_margins,
        "copy_features": args.copy_features,
        "replacement_spread": args.replacement_spread,
    }
    if args.max_copy_share != DEFAULT_MAX_COPY_SHARE:  # (folders from before the option filtered with the default)
        config["max_copy_share"] = args.max_copy_share
    for spec in specs:
        c = bf.parse_contender(spec)
        config[CONTENDER_KEY + c.name] = {"path": c.path, "adapt_options": fa.adapt_option_map.get(c.name, {})}
    return config


def check_output_dir(args: argparse.Namespace, specs: list[str]) -> dict[str, Any]:
    """Records in `--output_dir` are reused (a class done for a contender is skipped) only where they were made with
    this run's options (`run_config`, saved in `CONFIG_FILE` with the first records): other classes, domains and
    contenders may be added, but a changed option is refused before any work, naming what differs, as is a folder
    whose records predate `CONFIG_FILE`. Returns the configuration to save."""
    out = Path(args.output_dir)
    config = run_config(args, specs)
    path = out / CONFIG_FILE
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        # a contender new to the folder adds records of its own; one it has must be the one its records were made by
        shared = {
            k
            for k in set(saved) | set(config)
            if k != CLASSIFIERS_KEY and (not k.startswith(CONTENDER_KEY) or (k in saved and k in config))
        }
        bf.check_same_options(
            out, {k: v for k, v in saved.items() if k in shared}, {k: v for k, v in config.items() if k in shared}
        )
        return {**saved, **config}
    results = out / RESULTS_FILE
    if results.is_file() and results.stat().st_size > 0:
        raise ValueError(
            f"`--output_dir` {out} holds sampling records from before their options were saved ({CONFIG_FILE}), so "
            "they cannot be reused for this run (they may have been made with other options): use a new "
            "--output_dir (--summarize_only or --records still table them)."
        )
    return config


def check_classifiers(ctxs: Any, config: dict[str, Any], output_dir: str | Path) -> None:
    """A folder's records come from one evaluation classifier per domain: refuse to add records judged by another
    (e.g. after its recipe changed), and note each new domain's in `config` (saved with the next records)."""
    config[CLASSIFIERS_KEY] = bf.same_classifiers(config.get(CLASSIFIERS_KEY, {}), ctxs, output_dir)


def run_class(contender: Any, ctx: Any, c: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Adapt `contender` to class `c` as the few-shot benchmark does, then judge every sampling setting."""
    from metagan_hub import MetaGANPipeline
    from metagan_hub.training.tone import match_tone, tone_fit_latents

    fa = args.fewshot
    k, n = fa.shots, fa.num_samples
    shots = ctx.shots(c, k, bf.shot_seed(fa, c))
    _, real_feats = ctx.embed(ctx.real(c))
    _, shot_feats = ctx.embed(shots)
    torch.manual_seed(bf.adapt_seed(fa, c, k))
    start = time.perf_counter()
    adapt_options = {**bf.gan_adapt_options(contender, fa), "tone_match": False}  # tone settings fit their own curve
    adapted = contender.pipeline.adapt(
        shots,
        num_steps=fa.num_steps,
        generator=torch.Generator().manual_seed(bf.adapt_seed(fa, c, k)),
        **adapt_options,
    )
    adapt_seconds = time.perf_counter() - start
    record = adapted.card_info.get("adaptation", {})  # with `copy_stop`: the step whose generator was returned
    pool = math.ceil(n / min([1.0] + args.keep_fractions))
    latent_dim = adapted.generator.config.latent_dim
    # the first n latents are the benchmark's sample latents (same seed, same draw)
    latents = torch.randn(pool, latent_dim, generator=torch.Generator().manual_seed(bf.sample_seed(fa)))
    pipe = MetaGANPipeline(generator=adapted.generator, discriminator=None)
    pipe.set_progress_bar_config(disable=True)
    pool_images = pipe(batch_size=pool, latents=latents, output_type="pt").images * 2 - 1  # [pool, C, H, W]
    scores = discriminator_scores(adapted.discriminator.eval(), pool_images)
    tone_pipe = None
    if args.tone_match:  # the curve adapt() would fit (same fit latents and seed), once per class
        toned = copy.deepcopy(adapted.generator)
        match_tone(toned, shots, tone_fit_latents(latent_dim, bf.adapt_seed(fa, c, k)))
        tone_pipe = MetaGANPipeline(generator=toned, discriminator=None)
        tone_pipe.set_progress_bar_config(disable=True)
    rows = []
    for scale, keep, tone, margin, spread, features, share in (wanted_key(s, adapted) for s in settings(args)):
        filter_stats, seconds = None, None
        t0 = time.perf_counter()
        if margin > 0:  # the pipeline's near-copy filter; replacements continue the sample seed's stream
            filter_pipe = MetaGANPipeline(
                generator=(tone_pipe if tone else pipe).generator,
                discriminator=adapted.discriminator,
                copy_encoder=adapted.copy_encoder if features == "encoder" else None,
            )
            fake, filter_stats = filter_pipe.replace_near_copies(
                latents[:n] * scale,
                shots,
                margin,
                scale,
                torch.Generator().manual_seed(bf.sample_seed(fa) + 1),
                replacement_spread=spread,
                max_copy_share=share,
            )
            seconds = time.perf_counter() - t0
            kept_scores = discriminator_scores(adapted.discriminator, fake)
        elif tone or scale != 1.0:
            fake = (tone_pipe if tone else pipe)(batch_size=n, latents=latents[:n] * scale, output_type="pt").images
            seconds = time.perf_counter() - t0
            fake = fake * 2 - 1
            kept_scores = discriminator_scores(adapted.discriminator, fake)
        else:
            candidates = math.ceil(n / keep)
            index = scores[:candidates].topk(n).indices.sort().values
            fake, kept_scores = pool_images[index], scores[index]
        metrics, _ = bf.feature_metrics(ctx, c, fake, real_feats, shot_feats, fa)
        rows.append(
            {
                "contender": contender.name,
                "path": contender.path,
                "domain": ctx.name,
                "class_index": c,
                "class": ctx.domain.classes[c],
                "shots": k,
                "latent_scale": scale,
                "keep_fraction": keep,
                "tone_match": tone,
                "copy_margin": margin,
                "copy_filter": filter_stats,
                **(
                    {"replacement_spread": spread, "copy_features": features, "max_copy_share": share}
                    if margin > 0
                    else {}
                ),
                "sample_seconds": None if seconds is None else round(seconds, 4),  # generating this setting's samples
                "num_samples": n,
                "adapt_steps": fa.num_steps,
                **({"copy_stop_step": record.get("copy_stop_step")} if "copy_stop_step" in record else {}),
                "adapt_options": {key: adapt_options[key] for key in sorted(adapt_options) if key != "tone_match"},
                "adapt_seconds": round(adapt_seconds, 3),
                "seeds": {"shots": bf.shot_seed(fa, c), "adapt": bf.adapt_seed(fa, c, k), "samples": fa.seed},
                "mean_discriminator_logit": float(kept_scores.mean()),
                "metrics": metrics,
            }
        )
    return rows


def setting_label(row: dict[str, Any]) -> str:
    label = _knob_label(row)
    if row.get("copy_margin"):
        spread = row.get("replacement_spread", 1.0)
        label += f", near-copies replaced (margin {row['copy_margin']:g}"
        label += f", spread {spread:g}" if spread != 1 else ""
        share = row.get("max_copy_share", DEFAULT_MAX_COPY_SHARE)
        label += f", at most {share:.3g} of them" if share != DEFAULT_MAX_COPY_SHARE else ""
        label += ", copy encoder)" if row.get("copy_features") == "encoder" else ")"
    return label


def _knob_label(row: dict[str, Any]) -> str:
    if row.get("tone_match"):
        return "tone matched" + ("" if row["latent_scale"] == 1.0 else f", latents x{row['latent_scale']:g}")
    if row["keep_fraction"] != 1.0:
        return f"keep {row['keep_fraction']:g}"
    return f"latents x{row['latent_scale']:g}"


def unit(row: dict[str, Any]) -> tuple[int, int]:
    """What a paired comparison pairs on: (shot seed, class index). Runs with other `--seed`s draw other shots of the
    same classes, so their rows are further pairs, not repeats (records without seeds count as seed 0)."""
    return (row.get("seeds", {}).get("shots", 0), row["class_index"])


def paired_cells(by_class: dict[Any, dict], base: dict[Any, dict], classes: list[Any]) -> list[str]:
    """Per reported metric: the class mean over `classes` and, in brackets, the paired difference to `base` (mean ±
    s.e. over the classes)."""
    cells = []
    for m in REPORTED:
        mean = bf._mean([by_class[c][m] for c in classes])
        diffs = [by_class[c][m] - base[c][m] for c in classes]
        cells.append(f"{mean:.3f} ({bf._mean(diffs):+.3f} ± {bf._se(diffs):.3f})")
    return cells


def summary(rows: list[dict[str, Any]]) -> str:
    """Markdown: per domain, each contender and setting's class means and its paired difference (mean ± s.e. over
    classes) to the first contender's benchmark sample set."""
    lines = []
    for domain in dict.fromkeys(r["domain"] for r in rows):
        drows = [r for r in rows if r["domain"] == domain]
        reference = drows[0]["contender"]
        base = {
            unit(r): r["metrics"]
            for r in drows
            if r["contender"] == reference
            and setting_key(r) == (1.0, 1.0, False, 0.0, 1.0, None, DEFAULT_MAX_COPY_SHARE)
        }
        lines += [
            f"### {domain}: minus {reference} (latents x1), mean ± s.e. over classes",
            "",
            "| contender | setting | classes | " + " | ".join(REPORTED) + " |",
            "|---|---|---|" + "---|" * len(REPORTED),
        ]
        groups: dict[tuple[str, str], dict[tuple[int, int], dict]] = {}
        for r in drows:
            groups.setdefault((r["contender"], setting_label(r)), {})[unit(r)] = r["metrics"]
        for (name, label), by_class in groups.items():
            classes = sorted(set(by_class) & set(base))
            if not classes:
                continue
            cells = paired_cells(by_class, base, classes)
            lines.append(f"| {name} | {label} | {len(classes)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a `.jsonl` or gzip-compressed `.jsonl.gz` file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def snapshot_metrics(results: list[dict[str, Any]], contender: str, snapshot: str) -> dict[tuple, dict[str, float]]:
    """`{(domain, (shot seed, class_index), shots): metrics}` of `contender` at the snapshot labelled `snapshot` in
    `benchmark_fewshot.py` records (its plain runs, not the noise-floor re-runs; a class's first row wins); empty when
    there are none."""
    found: dict[tuple, dict[str, float]] = {}
    for r in results:
        if (
            r.get("contender") == contender
            and isinstance(r.get("snapshot"), dict)
            and r["snapshot"].get("label") == snapshot
            and r.get("variant", "default") == "default"
        ):
            found.setdefault((r["domain"], unit(r), r["shots"]), r["metrics"])
    return found


def reference_metrics(results: list[dict[str, Any]], contender: str, snapshot: str) -> dict[tuple, dict[str, float]]:
    """[`snapshot_metrics`] of the contender every setting is paired with; a `ValueError` naming the snapshot labels
    it has when there are none."""
    found = snapshot_metrics(results, contender, snapshot)
    if not found:
        labels = {
            r["snapshot"].get("label", "")
            for r in results
            if r.get("contender") == contender and isinstance(r.get("snapshot"), dict)
        }
        raise ValueError(
            f"`--pair_contender` {contender!r} at `--pair_snapshot` {snapshot!r}: no such rows in --pair_with; its "
            f"snapshot labels there: {sorted(labels) or 'none (no rows of that contender)'}."
        )
    return found


def paired_summary(
    rows: list[dict[str, Any]], reference: dict, name: str, real: dict | None = None, by_shot_set: bool = False
) -> str:
    """Markdown: per domain, each contender and setting's class means and its paired difference (mean ± s.e. over the
    classes both have) to the reference's metrics. `real` (the few-shot benchmark's `real` rows, same keys) adds the
    real held-out images' own means over those classes beside the reference's: their copy rate is what a generator
    that draws new images of the class like the real ones would score. `by_shot_set`: where a domain's rows hold more
    than one shot set (`--seed`), a table per shot set follows the pooled one."""
    lines = []
    for domain in dict.fromkeys(r["domain"] for r in rows):
        drows = [r for r in rows if r["domain"] == domain]
        lines += _paired_table(drows, domain, reference, name, real)
        shot_sets = sorted({unit(r)[0] for r in drows}) if by_shot_set else []
        if len(shot_sets) > 1:
            for shot_set in shot_sets:
                subset = [r for r in drows if unit(r)[0] == shot_set]
                lines += _paired_table(subset, f"{domain}, shot set {shot_set}", reference, name, real)
    return "\n".join(lines)


def _paired_table(drows: list[dict[str, Any]], title: str, reference: dict, name: str, real: dict | None) -> list[str]:
    """[`paired_summary`]'s table of one domain's rows `drows` (all of them, or one shot set's); no lines when none of
    them has a reference row."""
    groups: dict[tuple[str, str], dict[tuple[int, int], dict]] = {}
    ref_keys: dict[tuple[int, int], tuple] = {}  # class unit -> its key in `reference` (and `real`)
    for r in drows:
        key = (r["domain"], unit(r), r["shots"])
        if key in reference:
            groups.setdefault((r["contender"], setting_label(r)), {})[unit(r)] = r["metrics"]
            ref_keys[unit(r)] = key
    if not groups:
        return []
    ref = {c: reference[key] for c, key in ref_keys.items()}
    lines = [
        f"### {title}: minus {name}, mean ± s.e. over the classes both have",
        "",
        "| contender | setting | classes | " + " | ".join(REPORTED) + " |",
        "|---|---|---|" + "---|" * len(REPORTED),
    ]
    ref_cells = [f"{bf._mean([ref[c][m] for c in sorted(ref)]):.3f}" for m in REPORTED]
    lines.append(f"| {name} | | {len(ref)} | " + " | ".join(ref_cells) + " |")
    own = {c: real[key] for c, key in ref_keys.items() if key in (real or {})}
    if own:
        own_cells = [f"{bf._mean([own[c][m] for c in sorted(own)]):.3f}" for m in REPORTED]
        lines.append(f"| real images (own) | | {len(own)} | " + " | ".join(own_cells) + " |")
    for (contender, label), by_class in groups.items():
        cells = paired_cells(by_class, ref, sorted(by_class))
        lines.append(f"| {contender} | {label} | {len(by_class)} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def time_rival(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per 1,000 images of the diffusion rival's DDIM sampling at each `--rival_ddim_steps` count, in this
    process (same threads as the GAN settings), `num_samples` images each after a short warm-up; saved to
    `OUTPUT_DIR/rival_speed.json`."""
    from diffusers import DDPMPipeline

    from metagan_hub.baselines import sample_diffusion

    fa = args.fewshot
    path = args.rival or (bf.build_quick_models(Path(args.output_dir), fa.seed)["rival"] if args.quick else None)
    path = path or bf.DEFAULT_RIVAL
    rival = DDPMPipeline.from_pretrained(path)
    n = fa.num_samples
    sample_diffusion(rival, min(n, 8), num_inference_steps=2, generator=torch.Generator().manual_seed(0))  # warm-up
    timings = {}
    for steps in args.rival_ddim_steps:
        t0 = time.perf_counter()
        sample_diffusion(rival, n, num_inference_steps=steps, generator=torch.Generator().manual_seed(0))
        timings[str(steps)] = round((time.perf_counter() - t0) * 1000 / n, 3)
        logger.info("rival %s, DDIM %d: %.1f s per 1,000 images", path, steps, timings[str(steps)])
    shown = os.path.relpath(path)  # the record names the folder as the command line would, not the machine's path
    speed = {
        "rival": path if shown.startswith("..") else shown,
        "num_images": n,
        "seconds_per_1000": timings,
        "environment": bf.environment(torch.get_num_threads()),
    }
    (Path(args.output_dir) / RIVAL_SPEED_FILE).write_text(json.dumps(speed, indent=2) + "\n", encoding="utf-8")
    return speed


def filter_work(rows: list[dict[str, Any]]) -> str:
    """The near-copy filter's extra draws and discriminator passes per requested image, class means (`-` where the
    rows did not filter; passes `-` in records from before the gate counted them)."""
    stats = [(r["copy_filter"], r["num_samples"]) for r in rows if r.get("copy_filter")]
    if not stats:
        return "-"
    draws = statistics.mean(f["extra_draws"] / n for f, n in stats)
    if any("discriminator_passes" not in f for f, _ in stats):
        return f"{draws:.2f} / -"
    passes = statistics.mean(f["discriminator_passes"] / n for f, n in stats)
    return f"{draws:.2f} / {passes:.2f}"


def speed_summary(rows: list[dict[str, Any]], speed: dict[str, Any]) -> str:
    """Markdown: per domain, each timed setting's seconds per 1,000 images (median and slowest class), how many
    times faster than the rival's DDIM sampling timed in the same run that is, and the near-copy filter's work."""
    rival = speed["seconds_per_1000"]
    env = speed["environment"]
    lines = [
        "### Sampling cost against the rival's DDIM sampling in the same run "
        f"(CPU capability {env['cpu_capability']}, {env['num_threads']} threads; rival: "
        + ", ".join(f"DDIM {k} {v:.1f} s" for k, v in rival.items())
        + " per 1,000 images)",
        "",
        "| domain | contender | setting | classes | s / 1k images, median (slowest) | "
        + " | ".join(f"x faster than DDIM {k}, median (slowest)" for k in rival)
        + " | filter: extra draws / discriminator passes per image |",
        "|---" * (6 + len(rival)) + "|",
    ]
    for domain in dict.fromkeys(r["domain"] for r in rows):
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rows:
            if r["domain"] == domain and r.get("sample_seconds"):
                groups.setdefault((r["contender"], setting_label(r)), []).append(r)
        for (name, label), timed in groups.items():
            seconds = [r["sample_seconds"] * 1000 / r["num_samples"] for r in timed]
            median, slowest = statistics.median(seconds), max(seconds)
            ratios = [f"{v / median:.0f}x ({v / slowest:.0f}x)" for v in rival.values()]
            lines.append(
                f"| {domain} | {name} | {label} | {len(seconds)} | {median:.2f} ({slowest:.2f}) | "
                + " | ".join(ratios)
                + f" | {filter_work(timed)} |"
            )
    lines.append("")
    return "\n".join(lines)


def tables(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The summary tables of `rows`: against the first contender, then against `--pair_with`'s contender, then the
    sampling cost against the rival's when `OUTPUT_DIR/rival_speed.json` holds its timing."""
    text = summary(rows)
    if args.pair_with:
        results = [r for path in args.pair_with for r in read_jsonl(path)]
        reference = reference_metrics(results, args.pair_contender, args.pair_snapshot)
        real = snapshot_metrics(results, "real", "real")  # real images' own rates, where the records hold them
        name = f"{args.pair_contender} ({args.pair_snapshot})"
        text += "\n" + paired_summary(rows, reference, name, real, by_shot_set=args.by_shot_set)
    speed_path = Path(args.output_dir) / RIVAL_SPEED_FILE
    if speed_path.is_file():
        text += "\n" + speed_summary(rows, json.loads(speed_path.read_text(encoding="utf-8")))
    return text


def unique_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` without repeats of a (contender, domain, shot seed and class, setting): the first one stays."""
    seen: set[tuple] = set()
    kept = []
    for r in rows:
        key = (r["contender"], r["domain"], unit(r), setting_key(r))
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept


def with_records(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """`rows` and the `--records` rows, without repeats."""
    for extra in args.records or []:
        rows = rows + read_jsonl(extra)
    return unique_rows(rows)


def write_tables(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Write the tables of `rows` to `OUTPUT_DIR/sampling.md` and print them; returns `rows`."""
    text = tables(rows, args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_FILE).write_text(text, encoding="utf-8")
    print(text)
    return rows


def summarize_only(args: argparse.Namespace) -> list[dict[str, Any]]:
    path = Path(args.output_dir) / RESULTS_FILE
    rows = with_records(read_jsonl(path) if path.is_file() else [], args)
    if not rows:
        raise ValueError(f"`--summarize_only`: no records in {path} and none given with --records.")
    return write_tables(rows, args)


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if args.summarize_only:
        return summarize_only(args)
    fa = args.fewshot
    if fa.num_threads is not None:
        torch.set_num_threads(fa.num_threads)
    env = bf.environment(torch.get_num_threads())
    print(
        f"benchmark_sampling: CPU capability {env['cpu_capability']} ({env['cpu']}), {env['num_threads']} threads, "
        f"torch {env['torch']}, metagan_hub {env['metagan_hub']}",
        flush=True,
    )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = list(args.contender or [])
    if args.quick:
        specs = specs or [f"{bf.QUICK_GAN}={bf.build_quick_models(out, fa.seed)['gan']}"]
    config = check_output_dir(args, specs)
    contenders = bf.load_contenders(specs, fa)
    if "encoder" in args.copy_features and args.copy_margins:
        for contender in contenders:
            if contender.pipeline.copy_encoder is None:
                raise ValueError(
                    f"`--copy_features encoder`: contender {contender.name!r} ({contender.path}) has no copy encoder "
                    "(scripts/train_copy_encoder.py adds one)."
                )
    ctxs = bf.load_domains(fa, contenders)
    check_classifiers(ctxs, config, out)
    path = out / RESULTS_FILE
    rows = read_jsonl(path) if path.is_file() else []
    wanted = {wanted_key(s, c.pipeline) for s in settings(args) for c in contenders}
    done = {(r["domain"], r["class_index"], r["contender"]) for r in rows}
    for ctx in ctxs:
        for c in ctx.class_indices:
            for contender in contenders:
                if (ctx.name, c, contender.name) in done:
                    continue
                new = run_class(contender, ctx, c, args)
                if config is not None:  # the options of the records, saved with the first new ones
                    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
                    config = None
                with path.open("a", encoding="utf-8") as f:  # one class at a time, so an interrupt loses one
                    f.write("".join(json.dumps(r) + "\n" for r in new))
                rows += new
                logger.info(
                    "%s %s/%s: %s",
                    contender.name,
                    ctx.name,
                    ctx.domain.classes[c],
                    ", ".join(f"{setting_label(r)} {r['metrics']['recognisability']:.2f}" for r in new),
                )
    if args.rival_ddim_steps:
        time_rival(args)
    return write_tables(with_records([r for r in rows if setting_key(r) in wanted], args), args)


if __name__ == "__main__":
    try:
        parsed = parse_args()
    except ValueError as err:
        print(f"benchmark_sampling.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    main(parsed)
