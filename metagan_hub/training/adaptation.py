# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Few-shot adaptation of a (meta-learned) Meta-GAN to a new class from a handful of images.

[`adapt_pipeline`] is the engine behind [`MetaGANPipeline.adapt`]: it copies the generator and discriminator, trains
the copies with the GAN losses of `training/losses.py` and DiffAugment on the few shots, and returns a new pipeline.
The meta-weights are never modified.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..hub.safety import weights_are_finite
from ..models.layers import check_positive_float, check_positive_int
from ..pipelines.copy_filter import (
    COPY_STOP_LATENT_SCALE,
    COPY_STOP_MIN_STEPS,
    COPY_STOP_SAMPLES,
    augmented_shot_distance,
    check_copy_stop_distance,
    encoder_features,
    near_copy_share,
)
from .augment import AUGMENT_POLICIES, DiffAugment, check_shot_augment, random_affine
from .diversity import (
    DiversityRegularizer,
    PatchDiscriminator,
    ShotReconstruction,
    check_diversity_options,
    sample_anchor_latents,
    shot_anchor_latents,
)
from .gan_step import GANStepConfig, MasterWeightsOptimizer, compute_copy_pairs, gan_step, resolve_mixed_precision
from .losses import LOSS_TYPES
from .tone import match_tone, tone_fit_latents

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..pipelines.pipeline_metagan import MetaGANPipeline

logger = logging.getLogger(__name__)

LORA_TARGET_MODULES = r".*(proj|conv1|conv2|conv_out)$"
# learning-rate multiplier of a generator LoRA adapter in adapt(): at the full-adaptation rate (2e-4) a rank-4 adapter
# reached 0.36 recognisability after 200 steps on 5 kanji classes (full adaptation 0.98); at 5x (discriminator kept at
# 2e-4) rank 16 is 0.09 below full adaptation on 30 kanji classes (bundled model's experiment log, "a LoRA adapter")
LORA_LR_MULTIPLIER = 5.0
DEFAULT_MAX_NONFINITE_STEPS = 10
# learning-rate schedules of `adapt()`: diffusers' `get_scheduler` names (all but "piecewise_constant", which needs
# step rules)
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


class NonFiniteLossError(RuntimeError):
    """Raised when too many steps in a row produced a NaN or infinite loss; no weights are returned or saved."""


def _nonnegative_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not value >= 0:
        raise ValueError(f"`{name}` must be a non-negative finite number, got {value!r}.")


def estimate_adapt_step_bytes(pipeline: MetaGANPipeline, batch_size: int, generator_batch_size: int) -> int:
    """
    Rough peak memory in bytes of one `adapt()` step: the weights (with Adam state and gradients) and the activations
    that backward passes keep — the generator's feature maps for `generator_batch_size` latents and the
    discriminator's for real + fake batches of `batch_size`, times 3 for gradients and the R1 double backward.
    """
    g, d = pipeline.generator.config, pipeline.discriminator.config
    g_maps = g.block_out_channels[0] * 16 + sum(
        3 * c * (8 * 2**i) ** 2 for i, c in enumerate(g.block_out_channels)
    )  # per image
    d_maps = sum(3 * c * (d.sample_size // 2**i) ** 2 for i, c in enumerate(d.block_out_channels))
    activations = 4 * 3 * (generator_batch_size * (g_maps + d_maps) + 2 * batch_size * d_maps)
    params = sum(p.numel() for m in (pipeline.generator, pipeline.discriminator) for p in m.parameters())
    return activations + params * 4 * 5  # weights, master copy, gradients, two Adam moments


def check_adapt_memory(pipeline: MetaGANPipeline, batch_size: int, generator_batch_size: int, device) -> None:
    """Refuse, before any work, a `batch_size` whose training step would not fit in `device`'s available memory;
    the message names the argument, the estimate and what is available."""
    from ..models.layers import available_memory_bytes, format_bytes

    available = available_memory_bytes(device)
    needed = estimate_adapt_step_bytes(pipeline, batch_size, generator_batch_size)
    if available is not None and needed > available:
        raise ValueError(
            f"`batch_size`={batch_size} would need about {format_bytes(needed)} per adaptation step (activations of "
            f"{batch_size} real and fake images through the discriminator and {generator_batch_size} through the "
            f"generator, kept for the backward passes), but only {format_bytes(available)} is available on "
            f"{device}. Few-shot adaptation needs small batches: the default is 4."
        )


def check_lr_schedule(lr_scheduler: Any, lr_warmup_steps: Any, num_steps: int) -> None:
    """Raise a `ValueError` naming the argument unless `lr_scheduler` is one of `LR_SCHEDULERS` and
    `lr_warmup_steps` an integer in `[0, num_steps)` (and 0 for `"constant"`, which has no warm-up)."""
    if not isinstance(lr_scheduler, str) or lr_scheduler not in LR_SCHEDULERS:
        raise ValueError(f"`lr_scheduler` must be one of {LR_SCHEDULERS}, got {lr_scheduler!r}.")
    if (
        isinstance(lr_warmup_steps, bool)
        or not isinstance(lr_warmup_steps, int)
        or not 0 <= lr_warmup_steps < num_steps
    ):
        raise ValueError(
            f"`lr_warmup_steps` must be an integer from 0 to num_steps - 1 = {num_steps - 1}, got {lr_warmup_steps!r}."
        )
    if lr_scheduler == "constant" and lr_warmup_steps:
        raise ValueError(
            f"`lr_warmup_steps={lr_warmup_steps}` with lr_scheduler='constant', which has no warm-up; use "
            "lr_scheduler='constant_with_warmup'."
        )


def _check_snapshots(
    snapshot_steps: Sequence[int] | None, snapshot_callback: Callable | None, num_steps: int
) -> frozenset[int]:
    if snapshot_steps is None:
        if snapshot_callback is not None:
            raise ValueError("`snapshot_callback` was given without `snapshot_steps`; pass the steps to snapshot at.")
        return frozenset()
    steps = list(snapshot_steps)
    bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= num_steps]
    if bad:
        raise ValueError(
            f"`snapshot_steps` must hold integers between 0 and num_steps={num_steps}, got {bad[0]!r} in {steps!r}."
        )
    if snapshot_callback is None or not callable(snapshot_callback):
        raise TypeError(
            "`snapshot_steps` needs a callable `snapshot_callback(steps_done, generator)`, got "
            f"{type(snapshot_callback).__name__}."
        )
    return frozenset(steps)


def _generator_snapshot(compute: torch.nn.Module, master: torch.nn.Module, ema: Any) -> torch.nn.Module:
    """An independent eval-mode copy of the generator being adapted (float32 master weights, EMA weights when EMA is
    on, buffers from the compute copy), in the default memory layout."""
    snap = copy.deepcopy(master)
    if compute is not master:
        with torch.no_grad():
            for b_c, b_s in zip(compute.buffers(), snap.buffers()):
                b_s.copy_(b_c)
    if ema is not None:
        ema.copy_to([p for p in snap.parameters() if p.requires_grad])
    snap.eval().requires_grad_(False)
    torch.nn.Module.to(snap, memory_format=torch.contiguous_format)
    return snap


def add_lora(model: torch.nn.Module, rank: int, alpha: float | None = None, adapter_name: str = "default") -> None:
    """Attach a PEFT LoRA adapter of `rank` to every `Linear`/`Conv2d` of a Meta-GAN generator (and nothing else
    trains afterwards)."""
    try:
        from peft import LoraConfig
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "`lora_rank` needs PEFT: install it with `pip install 'metagan-hub[lora]'` (or `pip install peft`)."
        ) from err
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        target_modules=LORA_TARGET_MODULES,
        init_lora_weights=True,
    )
    model.add_adapter(config, adapter_name=adapter_name)


LR_SCALES_KEY = "adaptation_lr_scales"


def check_lr_scales(scales: Any, names: dict[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """
    Check meta-learned per-tensor learning-rate scales (`{"generator": {name: scale}, "discriminator": {...}}`, as
    `train_metagan.py --learn_inner_lr` saves them in a pipeline's `metagan_hub.json` under `adaptation_lr_scales`)
    against the models' parameter `names`; returns them as plain floats. Raises a `ValueError` naming the entry for
    an unknown model or tensor name or a scale that is not a positive finite number.

    Example:

    ```py
    >>> from metagan_hub.training.adaptation import check_lr_scales

    >>> check_lr_scales({"generator": {"proj.weight": 2}}, {"generator": ["proj.weight"], "discriminator": []})
    {'generator': {'proj.weight': 2.0}}
    ```
    """
    if not isinstance(scales, dict):
        raise ValueError(f"`{LR_SCALES_KEY}` must be a dict of models to {{tensor name: scale}}, got {scales!r}.")
    out: dict[str, dict[str, float]] = {}
    for model, values in scales.items():
        if model not in names:
            raise ValueError(f"`{LR_SCALES_KEY}` names an unknown model {model!r}; allowed are {sorted(names)}.")
        if not isinstance(values, dict):
            raise ValueError(f"`{LR_SCALES_KEY}[{model!r}]` must be a dict of tensor name to scale, got {values!r}.")
        known = set(names[model])
        out[model] = {}
        for name, value in values.items():
            if name not in known:
                raise ValueError(
                    f"`{LR_SCALES_KEY}[{model!r}]` names {name!r}, which is not a parameter of the {model} (it has "
                    f"{len(known)} parameter tensors, e.g. {sorted(known)[:3]}); the scales belong to another "
                    "architecture."
                )
            out[model][name] = check_positive_float(f"{LR_SCALES_KEY}[{model!r}][{name!r}]", value)
    return out


def _tensor_names(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """`model.named_parameters()` under the names of the model without adapters: a PEFT LoRA layer keeps the
    original weight as `<layer>.base_layer.weight`, which is `<layer>.weight` here."""
    return [(n.replace(".base_layer.", "."), p) for n, p in model.named_parameters()]


def _scaled_groups(
    model: torch.nn.Module, params: list[torch.Tensor], scales: dict[str, float], learning_rate: float
) -> list[dict[str, Any]]:
    """Adam parameter groups: one per tensor of `model` that has a scale, one for all other trainable tensors."""
    by_id = {id(p): scales[n] for n, p in _tensor_names(model) if n in scales}
    groups = [{"params": [p], "lr": learning_rate * by_id[id(p)]} for p in params if id(p) in by_id]
    rest = [p for p in params if id(p) not in by_id]
    if rest:
        groups.append({"params": rest, "lr": learning_rate})
    return groups


def _check_copy_stop_values(copy_stop: Any, interval: Any, distance: Any, min_steps: Any) -> None:
    """The ranges of `adapt()`'s copy stop options (what does not depend on the pipeline)."""
    if copy_stop is None:
        return
    if isinstance(copy_stop, bool) or not isinstance(copy_stop, int | float) or not 0 < copy_stop < 1:
        raise ValueError(
            f"`copy_stop` must be None (off) or a share in (0, 1) of monitor samples that may be near-copies of the "
            f"shots before adaptation stops, got {copy_stop!r}."
        )
    check_positive_int("copy_stop_interval", interval)
    check_copy_stop_distance(distance)
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 0:
        raise ValueError(
            f"`copy_stop_min_steps` must be a non-negative integer (the fewest steps a stop may return; 0: any "
            f"check's), got {min_steps!r}."
        )


def _check_copy_stop_fits(
    pipeline: MetaGANPipeline, copy_stop: Any, interval: int, min_steps: int, num_steps: int
) -> None:
    """For copy stop options whose values [`check_adapt_options`] accepted: raise a `ValueError` unless `pipeline` has
    the copy encoder the stop judges in; warn where no check can stop a run of `num_steps` (a stop returns the
    generator of the check before, of at least `min_steps` steps), so that a recommended setting with `copy_stop`
    still works for short runs."""
    if copy_stop is None:
        return
    if pipeline.copy_encoder is None:
        raise ValueError(
            f"copy_stop={copy_stop!r} judges near-copies in the pipeline's copy encoder, but this pipeline has none "
            "(scripts/train_copy_encoder.py adds one; the bundled metagan-kanji-32-variety carries one)."
        )
    # the first check at which a stop is possible: one after the first check that has at least min_steps steps
    first_stop = max(2 * interval, interval * math.ceil(min_steps / interval) + interval)
    if first_stop > num_steps:
        logger.warning(
            "adapt(): copy_stop=%g cannot stop in num_steps=%d: a stop comes at a check (every copy_stop_interval=%d "
            "steps) and returns the generator of the check before, of at least copy_stop_min_steps=%d steps; the "
            "first check that could stop is at step %d. The checks are only recorded.",
            copy_stop,
            num_steps,
            interval,
            min_steps,
            first_stop,
        )


def check_adapt_options(discriminator_blocks: int | None = None, **options: Any) -> dict[str, Any]:
    """
    Check `adapt()`'s options the way [`MetaGANPipeline.adapt`] does before any work, without a pipeline: scripts call
    it on their command-line options before loading anything. Options not given take `adapt()`'s defaults. What needs
    the pipeline is checked by `adapt()` itself (the copy encoder that `copy_stop` needs, the memory, LoRA's `peft`);
    `freeze_discriminator_blocks` is checked against `discriminator_blocks` when given, else only for being a
    non-negative integer.

    Returns the normalized values `adapt()` trains with: `num_steps`, `batch_size`, `learning_rate`,
    `max_nonfinite_steps`, `r1_interval`, `diversity_loss`, `diversity_weight`, `generator_batch_size`,
    `cdc_anchor_interval`, `diversity_interval`, `tone_match` (resolved) and `augment` (a list).

    Raises:
        `ValueError` (`TypeError` for `layer_lr_scales`): names the argument, the value and what is allowed.

    Example:

    ```py
    >>> from metagan_hub.training.adaptation import check_adapt_options

    >>> check_adapt_options(num_steps=50)["tone_match"]  # adapt()'s default for full adaptation
    True
    >>> check_adapt_options(lr_warmup_steps=300, lr_scheduler="cosine")  # 300 of adapt()'s 200 steps
    Traceback (most recent call last):
    ...
    ValueError: `lr_warmup_steps` must be an integer from 0 to num_steps - 1 = 199, got 300.
    ```
    """
    signature = inspect.signature(adapt_pipeline).parameters
    defaults = {n: p.default for n, p in signature.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"check_adapt_options() got unknown adapt() options {unknown}.")
    o = {**defaults, **options}
    num_steps = check_positive_int("num_steps", o["num_steps"])
    batch_size = check_positive_int("batch_size", o["batch_size"])
    learning_rate = check_positive_float("learning_rate", o["learning_rate"])
    max_nonfinite_steps = check_positive_int("max_nonfinite_steps", o["max_nonfinite_steps"])
    if o["loss"] not in LOSS_TYPES:
        raise ValueError(f"`loss` must be one of {LOSS_TYPES}, got {o['loss']!r}.")
    _nonnegative_float("r1_gamma", o["r1_gamma"])
    r1_interval = check_positive_int("r1_interval", o["r1_interval"])
    ema_decay = o["ema_decay"]
    if ema_decay is not None and (
        isinstance(ema_decay, bool) or not isinstance(ema_decay, int | float) or not 0.0 < ema_decay < 1.0
    ):
        raise ValueError(f"`ema_decay` must be None or a number in (0, 1), got {ema_decay!r}.")
    lora_rank = o["lora_rank"]
    if lora_rank is not None:
        check_positive_int("lora_rank", lora_rank)
    if not isinstance(o["layer_lr_scales"], bool):
        raise TypeError(f"`layer_lr_scales` must be True or False, got {o['layer_lr_scales']!r}.")
    diversity_loss, diversity_weight, generator_batch_size, cdc_anchor_interval = check_diversity_options(
        o["diversity_loss"],
        o["diversity_weight"],
        o["diversity_batch_size"],
        o["cdc_anchor_interval"],
        batch_size,
        o["diversity_interval"],
    )
    mode_seeking_weight = o["mode_seeking_weight"]
    _nonnegative_float("mode_seeking_weight", mode_seeking_weight)
    if mode_seeking_weight > 0 and generator_batch_size < 2:
        raise ValueError(
            f"mode_seeking_weight={mode_seeking_weight!r} compares pairs of generated samples: the generator batch "
            f"(`batch_size`, or `diversity_batch_size` when set) must be >= 2, got {generator_batch_size}."
        )
    _nonnegative_float("copy_repulsion_weight", o["copy_repulsion_weight"])
    _nonnegative_float("shot_reconstruction_weight", o["shot_reconstruction_weight"])
    check_positive_float("copy_repulsion_margin", o["copy_repulsion_margin"])
    check_shot_augment(o["shot_augment"])
    check_lr_schedule(o["lr_scheduler"], o["lr_warmup_steps"], num_steps)
    _check_copy_stop_values(o["copy_stop"], o["copy_stop_interval"], o["copy_stop_distance"], o["copy_stop_min_steps"])
    tone_match = o["tone_match"]
    if tone_match is not None and not isinstance(tone_match, bool):
        raise ValueError(
            f"`tone_match` must be True, False or None (on for full adaptation, off with `lora_rank`), got "
            f"{tone_match!r}."
        )
    if tone_match and lora_rank is not None:
        raise ValueError(
            f"`tone_match=True` stores a tone curve in the generator's weights, which a LoRA adapter file does not "
            f"carry (got lora_rank={lora_rank!r}); use tone_match with full adaptation (lora_rank=None) or leave it "
            "off."
        )
    if tone_match is None:
        tone_match = lora_rank is None  # the default: on for full adaptation (an adapter file cannot carry it)
    frozen, top = o["freeze_discriminator_blocks"], discriminator_blocks
    if isinstance(frozen, bool) or not isinstance(frozen, int) or frozen < 0 or (top is not None and frozen > top):
        if top is None:
            allowed = "an integer between 0 and the discriminator's number of blocks"
        else:
            allowed = f"an integer between 0 and {top} (the discriminator's number of blocks)"
        raise ValueError(f"`freeze_discriminator_blocks` must be {allowed}, got {frozen!r}.")
    augment = o["augment"]
    if isinstance(augment, str):
        augment = [a.strip() for a in augment.split(",") if a.strip()]
    augment = list(augment) if augment else []
    unknown = [a for a in augment if a not in AUGMENT_POLICIES]
    if unknown:
        raise ValueError(
            f"`augment` contains unknown augmentation {unknown[0]!r} (got {augment!r}); allowed names are "
            f"{AUGMENT_POLICIES}, or None for no augmentation."
        )
    return {
        "num_steps": num_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_nonfinite_steps": max_nonfinite_steps,
        "r1_interval": r1_interval,
        "diversity_loss": diversity_loss,
        "diversity_weight": diversity_weight,
        "generator_batch_size": generator_batch_size,
        "cdc_anchor_interval": cdc_anchor_interval,
        "diversity_interval": 1 if o["diversity_interval"] is None else o["diversity_interval"],
        "tone_match": tone_match,
        "augment": augment,
    }


def _adapted_summary(num_shots: int, steps_run: int, start_card_info: dict[str, Any]) -> str:
    """The model card summary of an adapted pipeline; the start's own summary follows unless the start was itself
    adapted (its summary then describes an earlier adaptation; the card's base model link leads to it)."""
    images = f"{num_shots} image{'s' if num_shots != 1 else ''}"
    summary = f"Adapted with `MetaGANPipeline.adapt()` to {images} in {steps_run} step{'s' if steps_run != 1 else ''}."
    start_summary = start_card_info.get("summary")
    if start_summary and "adaptation" not in start_card_info:
        summary += f" The checkpoint it started from: {start_summary}"
    return summary


def adapt_pipeline(
    pipeline: MetaGANPipeline,
    images: Any,
    *,
    num_steps: int = 200,
    learning_rate: float = 2e-4,
    batch_size: int = 4,
    mixed_precision: str = "no",
    loss: str = "nonsaturating",
    r1_gamma: float = 1.0,
    r1_interval: int = 4,
    augment: Sequence[str] | None = AUGMENT_POLICIES,
    freeze_discriminator_blocks: int = 1,
    ema_decay: float | None = None,
    lora_rank: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
    accelerator: Accelerator | None = None,
    image_column: str = "image",
    betas: tuple[float, float] = (0.0, 0.99),
    max_nonfinite_steps: int = DEFAULT_MAX_NONFINITE_STEPS,
    snapshot_steps: Sequence[int] | None = None,
    snapshot_callback: Callable[[int, torch.nn.Module], None] | None = None,
    diversity_loss: str | None = None,
    diversity_weight: float | None = None,
    diversity_batch_size: int | None = None,
    diversity_interval: int | None = None,
    cdc_anchor_interval: int | None = None,
    layer_lr_scales: bool = True,
    mode_seeking_weight: float = 0.0,
    copy_repulsion_weight: float = 0.0,
    copy_repulsion_margin: float = 1.0,
    shot_augment: float = 0.0,
    tone_match: bool | None = None,
    lr_scheduler: str = "constant",
    lr_warmup_steps: int = 0,
    copy_stop: float | None = None,
    copy_stop_interval: int = 25,
    copy_stop_distance: float | str = "augment",
    copy_stop_min_steps: int = COPY_STOP_MIN_STEPS,
    shot_reconstruction_weight: float = 0.0,
) -> MetaGANPipeline:
    """Adapt `pipeline` to `images`; see [`MetaGANPipeline.adapt`] for the arguments. Returns a new pipeline."""
    from ..data.images import load_images
    from ..pipelines.pipeline_metagan import MetaGANPipeline

    # 0. check arguments before doing any work
    if pipeline.discriminator is None:
        raise ValueError(
            "adapt() needs a discriminator, but this pipeline was loaded without one (a generation-only checkpoint). "
            "Load a checkpoint saved with its discriminator."
        )
    checked = check_adapt_options(
        discriminator_blocks=pipeline.discriminator.num_blocks,
        num_steps=num_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        loss=loss,
        r1_gamma=r1_gamma,
        r1_interval=r1_interval,
        augment=augment,
        freeze_discriminator_blocks=freeze_discriminator_blocks,
        ema_decay=ema_decay,
        lora_rank=lora_rank,
        max_nonfinite_steps=max_nonfinite_steps,
        diversity_loss=diversity_loss,
        diversity_weight=diversity_weight,
        diversity_batch_size=diversity_batch_size,
        diversity_interval=diversity_interval,
        cdc_anchor_interval=cdc_anchor_interval,
        layer_lr_scales=layer_lr_scales,
        mode_seeking_weight=mode_seeking_weight,
        copy_repulsion_weight=copy_repulsion_weight,
        copy_repulsion_margin=copy_repulsion_margin,
        shot_augment=shot_augment,
        tone_match=tone_match,
        lr_scheduler=lr_scheduler,
        lr_warmup_steps=lr_warmup_steps,
        copy_stop=copy_stop,
        copy_stop_interval=copy_stop_interval,
        copy_stop_distance=copy_stop_distance,
        copy_stop_min_steps=copy_stop_min_steps,
        shot_reconstruction_weight=shot_reconstruction_weight,
    )
    num_steps, batch_size, learning_rate = checked["num_steps"], checked["batch_size"], checked["learning_rate"]
    max_nonfinite_steps, r1_interval = checked["max_nonfinite_steps"], checked["r1_interval"]
    diversity_loss, diversity_weight = checked["diversity_loss"], checked["diversity_weight"]
    g_batch_size, cdc_anchor_interval = checked["generator_batch_size"], checked["cdc_anchor_interval"]
    diversity_interval, tone_match, augment = checked["diversity_interval"], checked["tone_match"], checked["augment"]
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
    lr_scales = None
    if layer_lr_scales and pipeline.card_info.get(LR_SCALES_KEY) is not None:
        lr_scales = check_lr_scales(
            pipeline.card_info[LR_SCALES_KEY],
            {
                "generator": [n for n, _ in _tensor_names(pipeline.generator)],
                "discriminator": [n for n, _ in _tensor_names(pipeline.discriminator)],
            },
        )
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be callable as callback(step, logs), got {type(callback).__name__}.")
    snapshot_at = _check_snapshots(snapshot_steps, snapshot_callback, num_steps)
    _check_copy_stop_fits(pipeline, copy_stop, copy_stop_interval, copy_stop_min_steps, num_steps)
    augmenter = DiffAugment(augment) if augment else None
    device = pipeline.generator.device
    if accelerator is not None:
        device = accelerator.device
    check_adapt_memory(pipeline, batch_size, g_batch_size, device)
    requested_mixed_precision = mixed_precision
    mixed_precision = resolve_mixed_precision(mixed_precision, device)  # "auto" -> "bf16" or "no" for this device
    if lora_rank is not None:
        try:
            import peft  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "`lora_rank` needs PEFT: install it with `pip install 'metagan-hub[lora]'` (or `pip install peft`)."
            ) from err

    g_cfg = pipeline.generator.config
    shots = load_images(images, sample_size=g_cfg.sample_size, channels=g_cfg.out_channels, image_column=image_column)
    # channels_last: oneDNN / cuDNN convolutions at these small sizes train ~15% faster in it (see benchmark_adapt.py)
    shots = shots.to(device=device, dtype=torch.float32).contiguous(memory_format=torch.channels_last)  # [-1, 1]
    num_shots = shots.shape[0]
    if copy_repulsion_weight > 0 and num_shots < 2:
        raise ValueError(
            f"copy_repulsion_weight={copy_repulsion_weight!r} pushes samples away from the shots by the near-copy "
            f"rule, whose threshold is the shots' spacing: it needs at least 2 images, got {num_shots}."
        )

    # 1. randomness: everything is drawn from one CPU generator (reproducible on every device)
    if generator is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        generator = torch.Generator().manual_seed(seed)
    else:
        seed = generator.initial_seed()
    aug_generator = torch.Generator(device=device).manual_seed(
        int(torch.randint(0, 2**62, (1,), generator=generator).item())
    )

    # 2. clone the models: the meta-weights are never touched
    # (plain nn.Module.to: the diffusers override only adds a keep-in-fp32 warning that does not apply here)
    gen = copy.deepcopy(pipeline.generator)
    disc = copy.deepcopy(pipeline.discriminator)
    for model in (gen, disc):
        torch.nn.Module.to(model, device=device, dtype=torch.float32)
        torch.nn.Module.to(model, memory_format=torch.channels_last).train()
    gen.requires_grad_(True)
    if tone_match:
        # train on the plain tanh output (a curve fitted to an earlier class is dropped); the new curve is fitted at
        # the end on samples of fixed latents drawn from their own seed, so the GAN steps are the same as without
        gen.set_tone_curve(None)
        tone_latents = tone_fit_latents(g_cfg.latent_dim, seed)
    disc.freeze_blocks(freeze_discriminator_blocks)
    # CDC anchor regions: a patch-level head on the discriminator, trained with it (disc_t: the model D steps train)
    disc_t = PatchDiscriminator(disc, generator=generator).to(device=device) if cdc_anchor_interval else disc
    if disc_t is not disc:
        torch.nn.Module.to(disc_t.patch_head, memory_format=torch.channels_last)
    if lora_rank is not None:
        gen.requires_grad_(False)
        add_lora(gen, lora_rank)  # only the adapter's lora_A / lora_B train
    g_params = [p for p in gen.parameters() if p.requires_grad]
    d_params = [p for p in disc_t.parameters() if p.requires_grad]
    # the fused (single-kernel) Adam is ~5-10% faster per adaptation step on CPU than the default foreach one
    fused = device.type in ("cpu", "cuda")
    # a LoRA adapter starts at zero and has few weights: it trains at LORA_LR_MULTIPLIER x the rate (the
    # discriminator, adapted in full, keeps `learning_rate`)
    g_lr = learning_rate * LORA_LR_MULTIPLIER if lora_rank is not None else learning_rate
    g_groups: Any = g_params
    d_groups: Any = d_params
    if lr_scales is not None:
        # meta-learned per-tensor learning rates; tensors the checkpoint has no scale for (a LoRA adapter, the CDC
        # patch head) run at the unscaled rate
        g_groups = _scaled_groups(gen, g_params, lr_scales.get("generator", {}), g_lr)
        d_groups = _scaled_groups(disc, d_params, lr_scales.get("discriminator", {}), learning_rate)
    opt_g = torch.optim.Adam(g_groups, lr=g_lr, betas=betas, fused=fused)
    opt_d = torch.optim.Adam(d_groups, lr=learning_rate, betas=betas, fused=fused)
    from diffusers.optimization import get_scheduler

    # one schedule for both networks, stepped once per GAN step (also a skipped one), so step i runs at the same
    # fraction of each group's rate in G and D
    schedulers = [
        get_scheduler(lr_scheduler, opt, num_warmup_steps=lr_warmup_steps, num_training_steps=num_steps)
        for opt in (opt_g, opt_d)
    ]
    gen_c, disc_c = gen, disc_t  # the copies the GAN steps run
    if mixed_precision == "bf16":
        # bf16 compute copies run the steps; gen / disc keep the float32 master weights (see MasterWeightsOptimizer).
        # Autocast then finds every weight already in bf16 instead of casting it on every call (~4% faster on CPU).
        gen_c, disc_c = copy.deepcopy(gen), copy.deepcopy(disc_t)
        for model in (gen_c, disc_c):
            torch.nn.Module.to(model, dtype=torch.bfloat16)
        opt_g = MasterWeightsOptimizer(compute_copy_pairs(gen_c, gen), opt_g)
        opt_d = MasterWeightsOptimizer(compute_copy_pairs(disc_c, disc_t), opt_d)
    scaler = torch.amp.GradScaler(device.type) if mixed_precision == "fp16" else None
    ema = None
    if ema_decay is not None:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(g_params, decay=ema_decay, use_ema_warmup=False, foreach=False)

    latent_dim = g_cfg.latent_dim
    regularizer = None
    anchors = None
    if diversity_loss is not None:
        # the frozen starting generator, kept once for the whole call: the pipeline's own generator (never modified;
        # with LoRA it has no adapter: the adapter goes onto the copy), or one float32 copy on the training device
        source = pipeline.generator if diversity_loss != "mixdl" else None  # MixDL needs no source
        if source is not None and (source.dtype != torch.float32 or source.device != device):
            source = copy.deepcopy(source)
            torch.nn.Module.to(source, device=device, dtype=torch.float32)
        # DCL's discriminator-side term runs lazily, on the lazy-R1 steps (weighted by the interval)
        regularizer = DiversityRegularizer(
            diversity_loss,
            source,
            diversity_weight,
            discriminator_interval=r1_interval,
            generator_interval=diversity_interval,
        )
        if cdc_anchor_interval:
            anchors = torch.randn(num_shots, latent_dim, generator=generator)  # one anchor latent per shot
    image_regularizer = None
    if copy_repulsion_weight > 0:
        from ..pipelines.copy_filter import near_copy_repulsion

        # the discriminator the steps train (its compute copy in bf16), without a CDC patch head
        repel_disc = disc_c.discriminator if isinstance(disc_c, PatchDiscriminator) else disc_c

        def image_regularizer(fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            term, near = near_copy_repulsion(repel_disc, fake, shots, copy_repulsion_margin)
            logs = {"copy_repulsion": float(term.detach()), "near_copy_fraction": float(near)}
            return copy_repulsion_weight * term, logs

    reconstruction = None
    if shot_reconstruction_weight > 0:
        # each shot's latent, chosen with the starting weights from a seed of its own (the GAN steps draw the same
        # random numbers as without the term); its images are drawn in the generator update's own forward pass
        shot_latents = shot_anchor_latents(gen, shots, torch.Generator().manual_seed((seed + 4) % 2**64))
        reconstruction = ShotReconstruction(shot_latents, shots, float(shot_reconstruction_weight))

    step_config = GANStepConfig(
        loss=loss,
        r1_gamma=float(r1_gamma),
        r1_interval=r1_interval,
        mixed_precision=mixed_precision,
        augment=augmenter,
        mode_seeking_weight=float(mode_seeking_weight),
        generator_regularizer=None if regularizer is None else regularizer.generator_term,
        discriminator_regularizer=regularizer.discriminator_term if diversity_loss == "dcl" else None,
        generator_image_regularizer=image_regularizer,
        generator_extra_images=reconstruction,
    )
    # the generator updates between those of a lazy diversity term (`diversity_interval` > 1) run without it
    plain_step_config = dataclasses.replace(step_config, generator_regularizer=None)
    losses: list[dict[str, float]] = []
    nonfinite_in_a_row = 0
    skipped = 0
    stopped_early = False
    start = time.perf_counter()
    main_process = accelerator is None or accelerator.is_local_main_process
    progress = pipeline.progress_bar(total=num_steps) if main_process else contextlib.nullcontext()
    snapshot_seconds = 0.0

    def take_snapshot(steps_done: int) -> None:
        # an eval-mode copy of the generator as adapt() would return it after `steps_done` steps (EMA applied)
        nonlocal snapshot_seconds
        t0 = time.perf_counter()
        snap = _generator_snapshot(gen_c, gen, ema)
        if tone_match:
            match_tone(snap, shots, tone_latents)
        snapshot_seconds += time.perf_counter() - t0
        snapshot_callback(steps_done, snap)

    if 0 in snapshot_at:
        take_snapshot(0)

    # the copy stop's monitor: fixed latents from their own seed (the adaptation's random stream is not touched), the
    # shots' features in a float32 copy of the copy encoder
    copy_checks: list[dict[str, float]] = []
    kept: tuple[int, torch.nn.Module] | None = None  # the generator at the last check that passed
    copy_stop_step = None
    if copy_stop is not None:
        monitor = copy.deepcopy(pipeline.copy_encoder).eval()
        torch.nn.Module.to(monitor, device=device, dtype=torch.float32)
        monitor_refs = encoder_features(monitor, shots)
        stop_distance = copy_stop_distance
        if copy_stop_distance == "augment":  # measured on the shots, from a seed of its own
            stop_distance = augmented_shot_distance(monitor, shots, torch.Generator().manual_seed((seed + 3) % 2**64))
        monitor_latents = COPY_STOP_LATENT_SCALE * torch.randn(
            COPY_STOP_SAMPLES, latent_dim, generator=torch.Generator().manual_seed((seed + 2) % 2**64)
        ).to(device)

    # 3. GAN steps on the shots
    with progress as bar:
        for step in range(num_steps):
            # no diversity term on this generator update: none at all, or off between the steps of a lazy one
            term_off = regularizer is None or not regularizer.applies_to_generator(step)
            idx = torch.randint(0, num_shots, (batch_size,), generator=generator)
            real = shots[idx.to(device)]  # [B, C, H, W]
            if shot_augment > 0:
                real = random_affine(real, float(shot_augment), generator)  # varied shots: part of what G learns
            if anchors is not None and step % cdc_anchor_interval == 0:
                # CDC anchor region: latents near the anchors, image-level discriminator
                disc_c.patch_level = False
                z_d = sample_anchor_latents(anchors, batch_size, generator).to(device)
                z_g = sample_anchor_latents(anchors, g_batch_size, generator).to(device)
            else:
                if anchors is not None:
                    disc_c.patch_level = True  # anywhere else: patch-level discriminator
                z_d = torch.randn(batch_size, latent_dim, generator=generator).to(device)
                if term_off:
                    z_g = torch.randn(g_batch_size, latent_dim, generator=generator).to(device)
                else:  # the same draw as above, plus MixDL's mixes
                    z_g = regularizer.generator_latents(g_batch_size, latent_dim, generator).to(device)

            lr_now = schedulers[0].get_last_lr()[0]  # the generator's (first group's) rate of this step
            config = plain_step_config if term_off else step_config
            ok, logs = gan_step(gen_c, disc_c, opt_g, opt_d, real, z_d, z_g, config, aug_generator, scaler, step=step)
            with warnings.catch_warnings():
                # the schedule follows the step index, also over a skipped (non-finite) step, where torch would warn
                # that the optimizer did not step first
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                for scheduler in schedulers:
                    scheduler.step()
            if ok and ema is not None:
                ema.step(g_params)

            # 3c. bookkeeping: skip non-finite steps, stop after too many in a row
            if ok:
                nonfinite_in_a_row = 0
            else:
                nonfinite_in_a_row += 1
                skipped += 1
                logger.warning("adapt(): non-finite loss at step %d (%s); step skipped", step, logs)
                if nonfinite_in_a_row >= max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"adapt() stopped: {nonfinite_in_a_row} steps in a row had NaN/inf losses (last at step "
                        f"{step}). Lower `learning_rate`, use mixed_precision='no', or check the images."
                    )
            logs = {"step": step, **logs, "lr": lr_now}
            losses.append(logs)
            if main_process:
                # refresh=False: the bar redraws at its own rate (in update), not on every step
                bar.set_postfix(d_loss=f"{logs['d_loss']:.3f}", g_loss=f"{logs['g_loss']:.3f}", refresh=False)
                bar.update(1)
            if step + 1 in snapshot_at:
                take_snapshot(step + 1)
            if copy_stop is not None and (step + 1) % copy_stop_interval == 0:
                snap = _generator_snapshot(gen_c, gen, ema)
                with torch.no_grad():
                    share = near_copy_share(monitor, snap(monitor_latents).sample, monitor_refs, stop_distance)
                copy_checks.append({"step": step + 1, "share": round(share, 4)})
                if kept is not None and kept[0] >= copy_stop_min_steps and share > copy_stop:
                    copy_stop_step = kept[0]
                    logger.info(
                        "adapt(): %.2f of the monitor samples are near-copies of the shots after %d steps (copy_stop="
                        "%g): stopped, returning the generator after %d steps.",
                        share,
                        step + 1,
                        copy_stop,
                        copy_stop_step,
                    )
                    break
                kept = (step + 1, snap)
            if callback is not None and callback(step, logs) is True:
                stopped_early = True
                break

    # 4. finish: EMA weights into the generator, never NaN weights out
    for compute, master in ((gen_c, gen), (disc_c, disc_t)):
        if compute is not master:  # e.g. spectral-norm power-iteration vectors, updated by the compute copy
            with torch.no_grad():
                for b_c, b_m in zip(compute.buffers(), master.buffers()):
                    b_m.copy_(b_c)
    if ema is not None:
        ema.copy_to(g_params)
    if copy_stop_step is not None:  # the generator of the check before the stop (EMA applied)
        gen = kept[1]
    if not weights_are_finite(gen, disc):
        raise NonFiniteLossError("adapt() produced non-finite weights; nothing was returned. Lower `learning_rate`.")
    gen.eval().requires_grad_(False)
    disc.eval().requires_grad_(False)
    if tone_match:
        match_tone(gen, shots, tone_latents)
    wall_time = time.perf_counter() - start - snapshot_seconds  # snapshots are the caller's work, not adaptation
    dtype = pipeline.generator.dtype
    for model in (gen, disc):  # back to the default layout (safetensors saves contiguous tensors only)
        torch.nn.Module.to(model, dtype=dtype, memory_format=torch.contiguous_format)

    final = {k: losses[-1].get(k) for k in ("d_loss", "g_loss")} if losses else {}
    diverged = [k for k, v in final.items() if isinstance(v, float) and not math.isfinite(v)]
    if diverged:
        logger.warning(
            "adapt(): the final %s %s not finite (%s); the returned weights are finite but the run diverged. Lower "
            "`learning_rate` (got %g) or `r1_gamma`, or stop earlier with `callback`.",
            " and ".join(diverged),
            "is" if len(diverged) == 1 else "are",
            ", ".join(f"{k}={final[k]}" for k in diverged),
            learning_rate,
        )
    record = {
        "base_model": pipeline.card_info.get("name_or_path") or pipeline.card_info.get("base_model"),
        "shots": num_shots,
        "num_steps": num_steps,
        "steps_run": len(losses),
        "stopped_early": stopped_early,
        "skipped_nonfinite_steps": skipped,
        "learning_rate": learning_rate,
        "lr_scheduler": lr_scheduler,
        "lr_warmup_steps": lr_warmup_steps,
        "batch_size": batch_size,
        "mixed_precision": mixed_precision,  # the precision the steps ran in
        "requested_mixed_precision": requested_mixed_precision,  # what the caller asked for, e.g. "auto"
        "loss": loss,
        "r1_gamma": r1_gamma,
        "r1_interval": r1_interval,
        "augment": augment,
        "freeze_discriminator_blocks": freeze_discriminator_blocks,
        "ema_decay": ema_decay,
        "lora_rank": lora_rank,
        "lora_learning_rate": g_lr if lora_rank is not None else None,
        "diversity_loss": diversity_loss,
        "diversity_weight": diversity_weight,
        "diversity_batch_size": g_batch_size if diversity_loss is not None else None,
        "diversity_interval": diversity_interval if diversity_loss is not None else None,
        "cdc_anchor_interval": cdc_anchor_interval,
        "mode_seeking_weight": mode_seeking_weight,
        "copy_repulsion_weight": copy_repulsion_weight,
        "copy_repulsion_margin": copy_repulsion_margin,
        "shot_reconstruction_weight": shot_reconstruction_weight,
        "shot_augment": shot_augment,
        "tone_match": tone_match,
        "copy_stop": copy_stop,
        **(
            {
                "copy_stop_interval": copy_stop_interval,
                "copy_stop_distance": copy_stop_distance,
                "copy_stop_min_steps": copy_stop_min_steps,
                # the distance the checks used, where it was measured on the shots
                **({"copy_stop_distance_value": round(stop_distance, 6)} if copy_stop_distance == "augment" else {}),
                "copy_checks": copy_checks,
                "copy_stop_step": copy_stop_step,
            }
            if copy_stop is not None
            else {}
        ),
        "layer_lr_scales": lr_scales is not None,  # the checkpoint's meta-learned per-tensor learning rates applied
        "seed": seed,
        "device": str(device),
        "wall_time_s": round(wall_time, 3),
        **({"snapshot_steps": sorted(snapshot_at)} if snapshot_at else {}),
        "final_d_loss": losses[-1].get("d_loss") if losses else None,
        "final_g_loss": losses[-1].get("g_loss") if losses else None,
        "losses": losses,
    }
    # the start's title, summary, training, evaluation and variety setting describe the start (a meta-checkpoint and
    # its benchmark), not the adapted model; its data notes (and their licence) still apply
    card_info = {
        k: v
        for k, v in pipeline.card_info.items()
        if k not in ("name_or_path", "title", "summary", "adaptation", "training", "evaluation", "variety_setting")
    }
    card_info["summary"] = _adapted_summary(num_shots, copy_stop_step or len(losses), pipeline.card_info)
    card_info["base_model"] = record["base_model"]
    card_info["adaptation"] = record
    adapted = MetaGANPipeline(
        generator=gen, discriminator=disc, card_info=card_info, copy_encoder=pipeline.copy_encoder
    )
    adapted.set_progress_bar_config(**getattr(pipeline, "_progress_bar_config", {}))
    logger.info("adapt(): %d shots, %d steps in %.2f s (%s)", num_shots, len(losses), wall_time, mixed_precision)
    return adapted
