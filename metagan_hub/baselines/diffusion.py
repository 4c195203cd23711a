# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""
The diffusion rival: few-shot fine-tuning of a pretrained diffusers DDPM, and DDIM sampling.

A diffusers user with five images of a new class would fine-tune a pretrained `UNet2DModel` on them with the recipe of
diffusers' unconditional training example (AdamW at 1e-4, the noise-prediction MSE), or train a LoRA adapter through
PEFT. DomainStudio (Zhu et al., IJCV 2024) adds a term that keeps the pairwise similarities of the adapted model's
denoised predictions close to those of the frozen source model, which keeps samples apart instead of collapsing onto
the shots. [`adapt_diffusion`] implements the three as [`DIFFUSION_RECIPES`] with wall-clock budgets and snapshots, so
that a benchmark can compare them with the Meta-GAN's `adapt()` at equal adaptation time; [`sample_diffusion`] samples
with DDIM (eta 0).

Only diffusers parts are used (`UNet2DModel`, `DDPMScheduler`, `DDIMScheduler`, `EMAModel`, `DDPMPipeline`) and PEFT
for LoRA. The DomainStudio-style term reuses [`~metagan_hub.training.losses.pairwise_similarity_consistency_loss`], the
same relative-distance term as the GAN's; DomainStudio's high-frequency term is not included.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.training_utils import EMAModel

from ..hub.safety import weights_are_finite
from ..models.layers import check_positive_float, check_positive_int
from ..training.adaptation import NonFiniteLossError
from ..training.losses import pairwise_similarity_consistency_loss

logger = logging.getLogger(__name__)

DIFFUSION_RECIPES = ("full", "lora", "domainstudio")
# Module names (suffixes) that LoRA adapts in a diffusers `UNet2DModel`: the convolutions of the ResNet blocks and of
# the down/up samplers, the time-embedding projections of the ResNet blocks, and the attention projections.
LORA_TARGET_MODULES = ("conv1", "conv2", "conv_shortcut", "conv", "time_emb_proj", "to_q", "to_k", "to_v", "to_out.0")


@dataclass
class DiffusionAdaptationOutput:
    """
    Result of [`adapt_diffusion`].

    Args:
        pipeline (`DDPMPipeline`):
            The adapted pipeline: a new `UNet2DModel` (EMA weights when `use_ema=True`, LoRA merged into the weights)
            and a `DDPMScheduler`. The source pipeline is untouched.
        record (`dict`):
            What was done: `recipe`, `steps`, `seconds` (adaptation wall time, snapshot time excluded), `images_seen`,
            `final_loss`, the options, and `snapshots` (one dict per snapshot taken).
    """

    pipeline: DDPMPipeline
    record: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- input checks


def _resolve_unet_and_scheduler(model: Any, name: str) -> tuple[UNet2DModel, dict[str, Any]]:
    """The UNet and the noise-scheduler config of a pipeline, a pipeline folder / Hub id, or a bare UNet."""
    if isinstance(model, str | os.PathLike):
        model = DDPMPipeline.from_pretrained(model)
    if isinstance(model, UNet2DModel):
        return model, dict(DDPMScheduler().config)
    if isinstance(model, DiffusionPipeline) and isinstance(getattr(model, "unet", None), UNet2DModel):
        scheduler = getattr(model, "scheduler", None)
        config = dict(scheduler.config) if scheduler is not None else dict(DDPMScheduler().config)
        return model.unet, config
    raise TypeError(
        f"`{name}` must be a diffusers pipeline with a `UNet2DModel` `unet` (e.g. `DDPMPipeline`), a folder or Hub id "
        f"of one, or a `UNet2DModel`; got {type(model).__name__}."
    )


def _check_shots(shots: Any, unet: UNet2DModel) -> torch.Tensor:
    if not isinstance(shots, torch.Tensor) or not shots.is_floating_point() or shots.ndim != 4:
        raise ValueError(
            "`shots` must be a float tensor [K, C, H, W] in [-1, 1], got "
            + (f"a {shots.dtype} tensor of shape {tuple(shots.shape)}." if isinstance(shots, torch.Tensor) else "")
            + ("" if isinstance(shots, torch.Tensor) else f"{type(shots).__name__}.")
        )
    if shots.shape[0] < 1:
        raise ValueError("`shots` must hold at least one image, got 0.")
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    channels = (unet.config.in_channels, unet.config.out_channels)
    if shots.shape[1] != channels[0] or channels[0] != channels[1] or tuple(shots.shape[2:]) != size:
        raise ValueError(
            f"the rival `pipeline_or_path` does not match `shots`: its UNet takes {channels[0]} channel(s) at "
            f"{size[0]}x{size[1]} (out_channels {channels[1]}), the shots are {shots.shape[1]} channel(s) at "
            f"{shots.shape[2]}x{shots.shape[3]}. Resize / convert the shots or use a rival trained at their size."
        )
    if not bool(torch.isfinite(shots).all()) or shots.min() < -1.0 - 1e-3 or shots.max() > 1.0 + 1e-3:
        raise ValueError(
            "`shots` must be finite and in [-1, 1], got values in "
            f"[{float(shots.min()):.3f}, {float(shots.max()):.3f}]."
        )
    return shots.detach().float().clamp(-1, 1)


def _check_snapshots(
    snapshot_seconds: Sequence[float] | None,
    snapshot_steps: Sequence[int] | None,
    snapshot_callback: Callable | None,
    num_steps: int | None,
    max_seconds: float | None,
) -> tuple[list[float], list[int]]:
    seconds: list[float] = []
    steps: list[int] = []
    if snapshot_seconds is not None:
        for value in snapshot_seconds:
            check_positive_float("snapshot_seconds", value)
            if max_seconds is not None and value > max_seconds:
                raise ValueError(f"`snapshot_seconds` {value!r} is beyond `max_seconds`={max_seconds!r}.")
        seconds = sorted({float(v) for v in snapshot_seconds})
    if snapshot_steps is not None:
        for value in snapshot_steps:
            check_positive_int("snapshot_steps", value)
            if num_steps is not None and value > num_steps:
                raise ValueError(f"`snapshot_steps` {value!r} is beyond `num_steps`={num_steps!r}.")
        steps = sorted(set(snapshot_steps))
    if (seconds or steps) and (snapshot_callback is None or not callable(snapshot_callback)):
        raise ValueError(
            "`snapshot_seconds` / `snapshot_steps` need a callable `snapshot_callback(info, unet)`, got "
            f"{type(snapshot_callback).__name__}."
        )
    if snapshot_callback is not None and not (seconds or steps):
        raise ValueError("`snapshot_callback` was given without `snapshot_seconds` or `snapshot_steps`.")
    return seconds, steps


# ---------------------------------------------------------------------------------------------------- pieces


def predicted_original(
    model_output: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor, scheduler: DDPMScheduler
) -> torch.Tensor:
    r"""
    The denoised prediction `x0` of a DDPM from its output at noisy inputs `x_t`:
    `x0 = (x_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t)` for `epsilon` prediction, the output itself for
    `sample` prediction, and `sqrt(alpha_bar_t) * x_t - sqrt(1 - alpha_bar_t) * v` for `v_prediction`.

    Args:
        model_output (`torch.Tensor` `[N, C, H, W]`): the UNet's output.
        noisy (`torch.Tensor` `[N, C, H, W]`): the noisy inputs `x_t`.
        timesteps (`torch.Tensor` `[N]`): their integer timesteps.
        scheduler (`DDPMScheduler`): the noise scheduler that made `noisy` (its `alphas_cumprod` and
            `prediction_type`).

    Returns:
        `torch.Tensor` `[N, C, H, W]`: the predicted clean images (not clamped).

    Example:

    ```py
    >>> import torch
    >>> from diffusers import DDPMScheduler
    >>> from metagan_hub.baselines import predicted_original

    >>> scheduler = DDPMScheduler()
    >>> clean, noise, t = torch.rand(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.tensor([10, 500])
    >>> noisy = scheduler.add_noise(clean, noise, t)
    >>> torch.allclose(predicted_original(noise, noisy, t, scheduler), clean, atol=1e-4)
    True
    ```
    """
    alpha_bar = scheduler.alphas_cumprod.to(device=noisy.device, dtype=torch.float32)[timesteps]
    alpha_bar = alpha_bar.view(-1, *([1] * (noisy.ndim - 1)))  # [N, 1, 1, 1]
    output, noisy = model_output.float(), noisy.float()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (noisy - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt()
    if kind == "sample":
        return output
    if kind == "v_prediction":
        return alpha_bar.sqrt() * noisy - (1 - alpha_bar).sqrt() * output
    raise ValueError(f"unsupported scheduler prediction_type {kind!r}; expected epsilon, sample or v_prediction.")


def _training_target(clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, scheduler: DDPMScheduler):
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return clean
    if kind == "v_prediction":
        return scheduler.get_velocity(clean, noise, t)
    raise ValueError(f"unsupported scheduler prediction_type {kind!r}; expected epsilon, sample or v_prediction.")


def _shot_order(num_shots: int, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
    """`batch_size` shot indices: consecutive draws from shuffled passes over the shots (each shot equally often)."""
    passes = -(-batch_size // num_shots)
    order = torch.cat([torch.randperm(num_shots, generator=generator) for _ in range(passes)])
    return order[:batch_size]


def _float32_copy(unet: UNet2DModel) -> UNet2DModel:
    """A deep copy in float32 (cast only when needed: diffusers logs a warning on every `ModelMixin.to(dtype)`)."""
    unet = copy.deepcopy(unet)
    if any(p.dtype != torch.float32 for p in unet.parameters()):
        unet.to(dtype=torch.float32)
    return unet


def _plain_unet(unet: torch.nn.Module, ema: EMAModel | None, lora: Any) -> UNet2DModel:
    """A detached eval-mode copy of the model being adapted: EMA weights if any, LoRA merged into the weights."""
    if lora is not None:
        plain = copy.deepcopy(lora).merge_and_unload()
    else:
        plain = copy.deepcopy(unet)
    if ema is not None:
        ema.copy_to(p for p in plain.parameters())
    plain.requires_grad_(False)
    return plain.eval()


# ---------------------------------------------------------------------------------------------------- adaptation


def adapt_diffusion(
    pipeline_or_path: DiffusionPipeline | UNet2DModel | str | os.PathLike,
    shots: torch.Tensor,
    *,
    recipe: str = "full",
    num_steps: int | None = None,
    max_seconds: float | None = None,
    learning_rate: float = 1e-4,
    batch_size: int = 8,
    lora_rank: int = 4,
    domainstudio_weight: float = 1.0,
    domainstudio_temperature: float = 1.0,
    use_ema: bool = False,
    generator: torch.Generator | None = None,
    snapshot_seconds: Sequence[float] | None = None,
    snapshot_steps: Sequence[int] | None = None,
    snapshot_callback: Callable[[dict[str, Any], UNet2DModel], None] | None = None,
) -> DiffusionAdaptationOutput:
    r"""
    Fine-tune a copy of a pretrained DDPM on a few images (the source weights stay untouched).

    Every recipe follows diffusers' unconditional training example: random shots (no horizontal flip), random
    timesteps and Gaussian noise, the MSE between the UNet's output and the scheduler's target (the noise for
    `epsilon` prediction), AdamW (betas 0.95 / 0.999, weight decay 1e-6, eps 1e-8) at a constant learning rate,
    gradient norm clipped at 1.0, optionally an EMA of the weights (the example's warm-up schedule).

    - `"full"`: all UNet weights are trained.
    - `"lora"`: the UNet is frozen and a PEFT LoRA adapter of rank `lora_rank` (alpha = rank) on
      [`LORA_TARGET_MODULES`] is trained; it is merged into the weights of the returned UNet.
    - `"domainstudio"`: `"full"` plus `domainstudio_weight` times the pairwise-similarity consistency term
      ([`~metagan_hub.training.losses.pairwise_similarity_consistency_loss`]) between the denoised predictions `x0`
      ([`predicted_original`]) of the frozen source UNet and of the adapted UNet for the same noisy batch.

    Args:
        pipeline_or_path (`DDPMPipeline`, `UNet2DModel`, `str` or `os.PathLike`):
            The pretrained rival: a pipeline with a `UNet2DModel` `unet` and a DDPM-style `scheduler` (its config
            gives the noise schedule and prediction type), its folder or Hub id, or a bare UNet (then the default
            `DDPMScheduler`: 1000 linear steps, epsilon prediction).
        shots (`torch.Tensor` `[K, C, H, W]`):
            The few images in [-1, 1], at the UNet's resolution and channel count.
        recipe (`str`, defaults to `"full"`): one of [`DIFFUSION_RECIPES`].
        num_steps (`int`, *optional*): optimizer steps. Give exactly one of `num_steps` and `max_seconds`.
        max_seconds (`float`, *optional*): wall-clock budget of the adaptation in seconds (snapshot time excluded);
            training stops after the first step that reaches it.
        learning_rate (`float`, defaults to 1e-4): AdamW learning rate (the diffusers example's default).
        batch_size (`int`, defaults to 8): images per step, drawn from shuffled passes over the shots (each with its
            own noise and timestep). `"domainstudio"` needs at least 3.
        lora_rank (`int`, defaults to 4): LoRA rank for `recipe="lora"`.
        domainstudio_weight (`float`, defaults to 1.0): weight of the pairwise term for `recipe="domainstudio"`.
        domainstudio_temperature (`float`, defaults to 1.0): softmax temperature of the pairwise term.
        use_ema (`bool`, defaults to `False`): keep an EMA of the trained weights and return (and snapshot) it.
        generator (`torch.Generator`, *optional*): source of all randomness (shot order, noise, timesteps); with a
            seeded generator and `num_steps` the result is reproducible on the same machine and thread count.
        snapshot_seconds (`Sequence[float]`, *optional*): adaptation times (seconds, positive, at most
            `max_seconds`) at which to call `snapshot_callback`; each fires after the first step that reaches it.
        snapshot_steps (`Sequence[int]`, *optional*): step counts (positive, at most `num_steps`) at which to call
            `snapshot_callback`.
        snapshot_callback (`Callable[[dict, UNet2DModel], None]`, *optional*):
            Called as `snapshot_callback(info, unet)` with `info = {"step", "seconds", "requested_seconds",
            "requested_step"}` and an eval-mode copy of the current UNet (EMA weights if `use_ema`, LoRA merged). The
            time spent in the callback (e.g. sampling) and in making the copy is not counted toward the budget.

    Returns:
        [`DiffusionAdaptationOutput`]: the adapted `DDPMPipeline` and a record.

    Raises:
        [`~metagan_hub.training.adaptation.NonFiniteLossError`]: the training diverged (a NaN or infinite loss, or
            weights that are no longer finite, e.g. with too high a `learning_rate`); nothing is returned and no
            snapshot of non-finite weights is passed to `snapshot_callback`.

    Example:

    ```py
    >>> import torch
    >>> from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    >>> from metagan_hub.baselines import adapt_diffusion, sample_diffusion

    >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
    ...                    layers_per_block=1, norm_num_groups=4,
    ...                    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    >>> rival = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    >>> shots = torch.rand(5, 1, 8, 8) * 2 - 1
    >>> out = adapt_diffusion(rival, shots, recipe="lora", num_steps=2, generator=torch.Generator().manual_seed(0))
    >>> out.record["steps"]
    2
    >>> sample_diffusion(out.pipeline, 3, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 8, 8])
    ```
    """
    # 1. check inputs
    if recipe not in DIFFUSION_RECIPES:
        raise ValueError(f"`recipe` must be one of {DIFFUSION_RECIPES}, got {recipe!r}.")
    if (num_steps is None) == (max_seconds is None):
        raise ValueError(
            f"give exactly one of `num_steps` and `max_seconds`, got num_steps={num_steps!r}, "
            f"max_seconds={max_seconds!r}."
        )
    if num_steps is not None:
        check_positive_int("num_steps", num_steps)
    if max_seconds is not None:
        max_seconds = check_positive_float("max_seconds", max_seconds)
    learning_rate = check_positive_float("learning_rate", learning_rate)
    check_positive_int("batch_size", batch_size)
    check_positive_int("lora_rank", lora_rank)
    if isinstance(domainstudio_weight, bool) or not isinstance(domainstudio_weight, int | float):
        raise ValueError(f"`domainstudio_weight` must be a non-negative number, got {domainstudio_weight!r}.")
    if not 0 <= domainstudio_weight < math.inf:
        raise ValueError(f"`domainstudio_weight` must be a non-negative finite number, got {domainstudio_weight!r}.")
    check_positive_float("domainstudio_temperature", domainstudio_temperature)
    if recipe == "domainstudio" and batch_size < 3:
        raise ValueError(
            f"`batch_size` must be at least 3 for recipe='domainstudio' (pairwise term), got {batch_size}."
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
    snap_seconds, snap_steps = _check_snapshots(
        snapshot_seconds, snapshot_steps, snapshot_callback, num_steps, max_seconds
    )
    source, scheduler_config = _resolve_unet_and_scheduler(pipeline_or_path, "pipeline_or_path")
    shots = _check_shots(shots, source)
    device = next(source.parameters()).device
    shots = shots.to(device)
    noise_scheduler = DDPMScheduler.from_config(scheduler_config)
    num_train_timesteps = noise_scheduler.config.num_train_timesteps
    rand_device = generator.device if generator is not None else torch.device("cpu")

    # 2. the trainable copy (the source is never modified)
    unet = _float32_copy(source)
    unet.train()
    lora = None
    if recipe == "lora":
        from peft import LoraConfig
        from peft.tuners.lora import LoraModel

        config = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_rank,
            init_lora_weights="gaussian",
            target_modules=list(LORA_TARGET_MODULES),
        )
        unet.requires_grad_(False)
        lora = LoraModel(unet, config, "default")  # injects the adapter into `unet` in place
    frozen = None
    if recipe == "domainstudio":
        frozen = _float32_copy(source).eval().requires_grad_(False)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    ema = None
    if use_ema:
        ema = EMAModel(params, decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)

    snapshots: list[dict[str, Any]] = []
    excluded = 0.0
    start = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - start - excluded

    def check_finite(adapted: UNet2DModel, step: int) -> None:
        if not weights_are_finite(adapted):
            raise NonFiniteLossError(
                f"adapt_diffusion(): the weights are NaN or infinite after step {step}; nothing was returned. Lower "
                f"`learning_rate` (got {learning_rate:g})."
            )

    def take_snapshot(step: int, requested_seconds: float | None, requested_step: int | None) -> None:
        nonlocal excluded
        t0 = time.perf_counter()
        seconds = t0 - start - excluded
        plain = _plain_unet(unet, ema, lora) if ema is None or lora is None else _plain_ema_lora(unet, ema, lora)
        check_finite(plain, step)
        info = {
            "step": step,
            "seconds": seconds,
            "requested_seconds": requested_seconds,
            "requested_step": requested_step,
        }
        snapshots.append(dict(info))
        snapshot_callback(info, plain)
        excluded += time.perf_counter() - t0

    # 3. train
    step, loss_value = 0, float("nan")
    while True:
        index = _shot_order(shots.shape[0], batch_size, generator).to(device)
        clean = shots[index]  # [B, C, H, W]
        noise = torch.randn(clean.shape, generator=generator, device=rand_device).to(device)
        t = torch.randint(0, num_train_timesteps, (batch_size,), generator=generator, device=rand_device).to(device)
        noisy = noise_scheduler.add_noise(clean, noise, t)
        output = unet(noisy, t).sample
        loss = F.mse_loss(output.float(), _training_target(clean, noise, t, noise_scheduler).float())
        if frozen is not None and domainstudio_weight > 0:
            with torch.no_grad():
                source_x0 = predicted_original(frozen(noisy, t).sample, noisy, t, noise_scheduler)
            adapted_x0 = predicted_original(output, noisy, t, noise_scheduler)
            loss = loss + domainstudio_weight * pairwise_similarity_consistency_loss(
                source_x0, adapted_x0, temperature=domainstudio_temperature
            )
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):  # diverged: the update would make every weight NaN
            raise NonFiniteLossError(
                f"adapt_diffusion(): the loss is {loss_value} at step {step + 1}; nothing was returned. Lower "
                f"`learning_rate` (got {learning_rate:g})."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if ema is not None:
            ema.step(params)
        step += 1
        now = elapsed()
        while snap_seconds and now >= snap_seconds[0]:
            take_snapshot(step, snap_seconds.pop(0), None)
        if snap_steps and step == snap_steps[0]:
            take_snapshot(step, None, snap_steps.pop(0))
        if (num_steps is not None and step >= num_steps) or (max_seconds is not None and now >= max_seconds):
            break
    seconds = elapsed()
    if snap_seconds or snap_steps:  # only possible when the other budget ended the run first
        logger.warning(
            f"snapshots not reached before the end of adaptation: seconds {snap_seconds}, steps {snap_steps}"
        )

    # 4. the adapted pipeline
    adapted = _plain_unet(unet, ema, lora) if ema is None or lora is None else _plain_ema_lora(unet, ema, lora)
    source_dtype = next(source.parameters()).dtype
    if source_dtype != torch.float32:
        adapted.to(dtype=source_dtype)
    check_finite(adapted, step)  # also after a cast back to float16, which overflows beyond 65504
    pipeline = DDPMPipeline(unet=adapted, scheduler=DDPMScheduler.from_config(scheduler_config))
    record = {
        "recipe": recipe,
        "steps": step,
        "seconds": seconds,
        "images_seen": step * batch_size,
        "seconds_per_step": seconds / step,
        "final_loss": loss_value,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "num_shots": int(shots.shape[0]),
        "use_ema": use_ema,
        "trainable_parameters": sum(p.numel() for p in params),
        "snapshots": snapshots,
        "snapshots_missed": {"seconds": snap_seconds, "steps": snap_steps},
    }
    if recipe == "lora":
        record["lora_rank"] = lora_rank
    if recipe == "domainstudio":
        record["domainstudio_weight"] = float(domainstudio_weight)
        record["domainstudio_temperature"] = float(domainstudio_temperature)
    return DiffusionAdaptationOutput(pipeline=pipeline, record=record)


def _plain_ema_lora(unet: torch.nn.Module, ema: EMAModel, lora: Any) -> UNet2DModel:
    """LoRA with EMA: the EMA tracks the adapter weights, so swap it into a copy before merging."""
    live = copy.deepcopy(lora)
    trainable = [p for p in live.model.parameters() if p.requires_grad]
    ema.copy_to(trainable)
    plain = live.merge_and_unload()
    plain.requires_grad_(False)
    return plain.eval()


# ---------------------------------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_diffusion(
    unet_or_pipeline: DiffusionPipeline | UNet2DModel,
    num_images: int,
    *,
    num_inference_steps: int = 25,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    r"""
    Sample a DDPM with DDIM (eta 0).

    The DDIM schedule is built from the pipeline's scheduler config (the default `DDPMScheduler` config for a bare
    UNet). Batches are drawn one after the other from `generator`, so a seeded generator gives the same images on the
    same machine and thread count.

    Args:
        unet_or_pipeline (`DiffusionPipeline` or `UNet2DModel`): a pipeline with a `UNet2DModel` `unet`, or the UNet.
        num_images (`int`): number of images.
        num_inference_steps (`int`, defaults to 25): DDIM steps.
        generator (`torch.Generator`, *optional*): source of the initial noise.
        batch_size (`int`, defaults to 64): images per UNet call.

    Returns:
        `torch.Tensor` `[num_images, C, H, W]` in [-1, 1] (float32, on the UNet's device).

    Example:

    ```py
    >>> import torch
    >>> from diffusers import UNet2DModel
    >>> from metagan_hub.baselines import sample_diffusion

    >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
    ...                    layers_per_block=1, norm_num_groups=4,
    ...                    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    >>> images = sample_diffusion(unet, 4, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    >>> images.shape, bool(images.abs().max() <= 1)
    (torch.Size([4, 1, 8, 8]), True)
    ```
    """
    unet, scheduler_config = _resolve_unet_and_scheduler(unet_or_pipeline, "unet_or_pipeline")
    check_positive_int("num_images", num_images)
    check_positive_int("num_inference_steps", num_inference_steps)
    check_positive_int("batch_size", batch_size)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
    scheduler = DDIMScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(num_inference_steps)
    param = next(unet.parameters())
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    rand_device = generator.device if generator is not None else torch.device("cpu")
    was_training = unet.training
    unet.eval()
    out = []
    try:
        for first in range(0, num_images, batch_size):
            n = min(batch_size, num_images - first)
            x = torch.randn((n, unet.config.in_channels, *size), generator=generator, device=rand_device)
            x = x.to(device=param.device, dtype=param.dtype)  # [n, C, H, W]
            for t in scheduler.timesteps:
                eps = unet(x, t).sample
                x = scheduler.step(eps, t, x, eta=0.0).prev_sample
            out.append(x.float().clamp(-1, 1))
    finally:
        unet.train(was_training)
    return torch.cat(out)
