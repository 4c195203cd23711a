# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""One GAN training step (discriminator update, then generator update), shared by adaptation and meta-training."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .losses import WGAN_DRIFT, discriminator_loss, generator_loss

logger = logging.getLogger(__name__)

MIXED_PRECISIONS = ("no", "bf16", "fp16")
# what callers may ask for: a precision, or "auto" (bf16 where the device computes it natively, else fp32)
MIXED_PRECISION_CHOICES = ("auto",) + MIXED_PRECISIONS
# measured: the 200-step adaptation of the bundled checkpoint on a 2-core AVX2 CPU, fp32 vs emulated bf16
EMULATED_BF16_SLOWDOWN = "about 10x slower than fp32 (measured on an AVX2 CPU: 134 s vs 14 s for a 200-step adapt)"
# (requested, resolved, device type) combinations already logged in this process
_LOGGED_PRECISIONS: set[tuple[str, str, str]] = set()


def autocast_context(device: torch.device, mixed_precision: str):
    """An autocast context for `mixed_precision` on `device` (a no-op for `"no"`).

    Precision is applied per call with `torch.autocast` rather than through Accelerate's process-wide
    `AcceleratorState`, which can only be set once per process: one process can then adapt many times with different
    precisions, also inside a script that already created an `Accelerator`.
    """
    if mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_has_native_bf16() -> bool:
    """
    Whether this CPU computes bf16 in hardware, as torch reports it: AVX512-BF16 or AMX-BF16 on x86, the BF16
    extension (NEON or SVE) on ARM; and torch's oneDNN backend, which runs bf16 convolutions and matmuls, is available
    and not capped below its bf16 instructions by the environment variable `ONEDNN_MAX_CPU_ISA` (e.g. `AVX2`, which
    makes an AVX-512 machine behave like an AVX2-only one).
    Without these, bf16 is emulated (converted to and from float32 around every operation), which is slower than
    float32.

    Example:

    ```py
    >>> from metagan_hub.training.gan_step import cpu_has_native_bf16
    >>> isinstance(cpu_has_native_bf16(), bool)
    True
    ```
    """
    if not torch.backends.mkldnn.is_available():
        return False
    if onednn_isa_cap() in _ONEDNN_ISAS_WITHOUT_BF16:  # oneDNN capped below its bf16 instructions: emulated
        return False
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        capabilities = get_capabilities()
        return any(bool(capabilities.get(k, False)) for k in ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16"))
    # older torch: only the x86 checks exist
    checks = (
        getattr(torch.cpu, "_is_avx512_bf16_supported", None),
        getattr(torch.cpu, "_is_amx_tile_supported", None),
    )
    return any(bool(check()) for check in checks if check is not None)


# oneDNN's instruction sets (`ONEDNN_MAX_CPU_ISA` values) that have no bf16 arithmetic: capped at one of these, oneDNN
# emulates bf16 even on a CPU that has it
_ONEDNN_ISAS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


def onednn_isa_cap() -> str | None:
    """
    The instruction-set cap this process set for oneDNN (torch's CPU convolution backend) with the environment
    variable `ONEDNN_MAX_CPU_ISA` (or its older name `DNNL_MAX_CPU_ISA`), upper-cased, or `None` when unset.
    Benchmarks print it beside `torch.backends.cpu.get_cpu_capability()`: with `ONEDNN_MAX_CPU_ISA=AVX2` (and
    `ATEN_CPU_CAPABILITY=avx2` for torch's own kernels) an AVX-512 machine runs the code paths of an AVX2-only one.

    Example:

    ```py
    >>> from metagan_hub.training.gan_step import onednn_isa_cap
    >>> onednn_isa_cap() in (None, "AVX2", "AVX512_CORE", "AVX512_CORE_BF16", "AVX512_CORE_AMX", "ALL")
    True
    ```
    """
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return cap or None


def device_has_native_bf16(device: torch.device | str) -> bool:
    """
    Whether `device` computes bf16 natively: a CUDA GPU whose hardware supports bf16 (Ampere or newer; not emulated),
    or a CPU for which [`cpu_has_native_bf16`] holds. Other devices count as not native.

    Example:

    ```py
    >>> from metagan_hub.training.gan_step import cpu_has_native_bf16, device_has_native_bf16
    >>> device_has_native_bf16("cpu") == cpu_has_native_bf16()
    True
    ```
    """
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch: no `including_emulation`
            return bool(torch.cuda.is_bf16_supported())
    return False


def _device_description(device: torch.device) -> str:
    if device.type == "cpu":
        cap = onednn_isa_cap()
        capped = f", oneDNN capped at {cap}" if cap else ""
        return f"CPU (capability {torch.backends.cpu.get_cpu_capability()}{capped})"
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def resolve_mixed_precision(mixed_precision: str, device: torch.device | str) -> str:
    """
    The precision to train in on `device` for a requested `mixed_precision`.

    `"auto"` gives `"bf16"` where the device computes bf16 natively ([`device_has_native_bf16`]: a CUDA GPU with bf16
    support, a CPU with AVX512-BF16 / AMX / ARM BF16) and `"no"` (float32) elsewhere. An explicit `"bf16"` on a device
    without native bf16 is kept, with a warning: it is emulated there and about 10x slower than float32. The choice
    is logged once per process (`logging.INFO`, the warning at `logging.WARNING`) for each combination of request,
    result and device type. Unknown values, and `"fp16"` on CPU, raise a `ValueError` (see [`check_mixed_precision`]).

    Args:
        mixed_precision (`str`): `"auto"`, `"no"`, `"bf16"` or `"fp16"`.
        device (`torch.device` or `str`): the device the training runs on.

    Returns:
        `str`: `"no"`, `"bf16"` or `"fp16"`.

    Example:

    ```py
    >>> from metagan_hub.training.gan_step import resolve_mixed_precision
    >>> resolve_mixed_precision("no", "cpu")
    'no'
    >>> resolve_mixed_precision("auto", "cpu") in ("no", "bf16")  # "bf16" only on CPUs with native bf16
    True
    ```
    """
    if not isinstance(mixed_precision, str) or mixed_precision not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISION_CHOICES}, got {mixed_precision!r}.")
    device = torch.device(device)
    native = device_has_native_bf16(device) if mixed_precision in ("auto", "bf16") else None
    resolved = mixed_precision
    if mixed_precision == "auto":
        resolved = "bf16" if native else "no"
    check_mixed_precision(resolved, device)
    key = (mixed_precision, resolved, device.type)
    if key not in _LOGGED_PRECISIONS:
        _LOGGED_PRECISIONS.add(key)
        where = _device_description(device)
        if mixed_precision == "auto":
            why = "it computes bf16 natively" if native else "it has no native bf16 (emulated bf16 is slower)"
            logger.info("mixed_precision='auto' -> %r on %s: %s", resolved, where, why)
        elif mixed_precision == "bf16" and not native:
            logger.warning(
                "mixed_precision='bf16' on %s, which has no native bf16: it is emulated there, %s. "
                "Use mixed_precision='auto' (or 'no') for float32 on this device.",
                where,
                EMULATED_BF16_SLOWDOWN,
            )
        else:
            logger.info("mixed_precision=%r on %s", resolved, where)
    return resolved


def check_mixed_precision(mixed_precision: str, device: torch.device) -> None:
    """Raise a `ValueError` for unknown precisions and for fp16 on CPU (which Accelerate silently ignores)."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISIONS}, got {mixed_precision!r}.")
    if mixed_precision == "fp16" and device.type == "cpu":
        raise ValueError(
            "`mixed_precision='fp16'` is not supported on CPU (Accelerate silently ignores it there and trains in "
            "fp32). Use mixed_precision='auto' on CPU (bf16 where the CPU computes it natively, else fp32), or move "
            "the pipeline to a GPU."
        )


def _apply(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler, reduce_grads) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    if reduce_grads is not None:
        reduce_grads([p for group in opt.param_groups for p in group["params"]])
    if scaler is not None:
        scaler.step(opt)
    else:
        opt.step()


class MasterWeightsOptimizer:
    """
    Trains a reduced-precision *compute copy* of a model while an optimizer keeps updating the float32 *master*
    weights, so that autocast finds its weights already in bf16 and no longer casts every weight on every call.

    Pass it to [`gan_step`] in place of the optimizer and the compute copy in place of the model. `zero_grad` clears
    the compute copy's gradients; `step` copies them into the master parameters' `.grad` (in float32), steps the
    wrapped optimizer there, and writes the updated master weights back into the compute copy (rounded to its
    dtype). The master model therefore always holds the full-precision result, and parameters without a gradient
    (frozen ones) are never rounded. Not for use with a `GradScaler` or with `reduce_grads`.

    Args:
        pairs (`list[tuple[torch.nn.Parameter, torch.nn.Parameter]]`):
            `(compute parameter, master parameter)` pairs, e.g. from [`compute_copy_pairs`].
        optimizer (`torch.optim.Optimizer`):
            An optimizer over the master parameters.

    Example:

    ```py
    >>> import copy
    >>> import torch
    >>> from metagan_hub.training.gan_step import MasterWeightsOptimizer, compute_copy_pairs

    >>> master = torch.nn.Linear(4, 2)
    >>> compute = copy.deepcopy(master).to(torch.bfloat16)
    >>> opt = MasterWeightsOptimizer(compute_copy_pairs(compute, master), torch.optim.SGD(master.parameters(), lr=0.1))
    >>> compute(torch.ones(1, 4, dtype=torch.bfloat16)).float().sum().backward()
    >>> opt.step()
    >>> torch.equal(compute.weight, master.weight.to(torch.bfloat16))
    True
    ```
    """

    def __init__(self, pairs: list[tuple[torch.nn.Parameter, torch.nn.Parameter]], optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.compute = [c for c, _ in pairs]
        self.master = [m for _, m in pairs]
        for m in self.master:
            m.grad = torch.zeros_like(m)  # reused every step

    def zero_grad(self, set_to_none: bool = True) -> None:
        for c in self.compute:
            if set_to_none:
                c.grad = None
            elif c.grad is not None:
                c.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        if all(c.grad is not None and m.grad is not None for c, m in zip(self.compute, self.master)):
            torch._foreach_copy_([m.grad for m in self.master], [c.grad for c in self.compute])
        else:  # a parameter without a gradient is skipped by the optimizer, as it would be without this wrapper
            for c, m in zip(self.compute, self.master):
                if c.grad is None:
                    m.grad = None
                elif m.grad is None:
                    m.grad = c.grad.to(m.dtype)
                else:
                    m.grad.copy_(c.grad)
        self.optimizer.step()
        torch._foreach_copy_(self.compute, self.master)


def compute_copy_pairs(
    compute: torch.nn.Module, master: torch.nn.Module
) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
    """`(compute, master)` parameter pairs of two copies of one model, for the parameters that require gradients."""
    c_params, m_params = dict(compute.named_parameters()), dict(master.named_parameters())
    if c_params.keys() != m_params.keys():
        raise ValueError("`compute` and `master` must be copies of the same model (their parameter names differ).")
    return [(c_params[name], m) for name, m in m_params.items() if m.requires_grad]


@dataclass
class GANStepConfig:
    """Loss and regularization options of a GAN step.

    `r1_interval > 1` is lazy R1 regularization (Karras et al. 2020, StyleGAN2): the penalty, weighted by
    `r1_gamma * r1_interval`, is computed only on steps whose index is a multiple of `r1_interval`, which saves its
    double backward pass on the other steps while keeping the same average strength.

    `mode_seeking_weight > 0` adds the mode-seeking regularizer of MSGAN
    ([`~metagan_hub.training.losses.mode_seeking_loss`]) with this weight to the generator loss, against mode
    collapse.

    `joint_discriminator_forward` scores real and fake images in one discriminator call on steps without R1 (see
    [`~metagan_hub.training.losses.discriminator_loss`]); it needs a discriminator whose `forward` takes
    `num_batches`, as [`~metagan_hub.MetaGANDiscriminator`] does.

    `generator_regularizer(latents, features) -> (loss, logs)`, when set, is added to the generator loss; the
    generator then runs with `return_features=True` and `features` are its block outputs (e.g.
    [`~metagan_hub.training.diversity.DiversityRegularizer.generator_term`]).
    `discriminator_regularizer(discriminator, real, fake, latents, step) -> (loss, logs)`, when set, is added to the
    discriminator loss (`fake` are the images of `latents`, without gradient to the generator; `step` is the step
    index given to [`gan_step`], e.g. for lazy regularization).
    `generator_image_regularizer(fake) -> (loss, logs)`, when set, is added to the generator loss; `fake` are the
    generated images of the generator update (float32, with gradient to the generator, before augmentation; the
    discriminator's weights are frozen meanwhile), e.g. [`~metagan_hub.pipelines.copy_filter.near_copy_repulsion`].
    `generator_extra_images`, when set, has `latents() -> [M, latent_dim]` and `term(images) -> (loss, logs)`: the
    generator update also draws the images of those latents, in the same forward pass as its own batch (one pass of
    `B + M` latents is cheaper than two), and adds their term to its loss (e.g.
    [`~metagan_hub.training.diversity.ShotReconstruction`]); they are not shown to the discriminator.
    """

    loss: str = "nonsaturating"
    r1_gamma: float = 0.1
    r1_interval: int = 1
    gp_lambda: float = 10.0
    wgan_drift: float = WGAN_DRIFT
    mixed_precision: str = "no"
    augment: torch.nn.Module | None = None
    joint_discriminator_forward: bool = True
    mode_seeking_weight: float = 0.0
    generator_regularizer: Callable[[torch.Tensor, Sequence[torch.Tensor]], tuple[torch.Tensor, dict]] | None = None
    discriminator_regularizer: Callable[..., tuple[torch.Tensor, dict]] | None = None
    generator_image_regularizer: Callable[[torch.Tensor], tuple[torch.Tensor, dict]] | None = None
    generator_extra_images: Any | None = None

    def __post_init__(self) -> None:
        w = self.mode_seeking_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w < float("inf"):
            raise ValueError(f"`mode_seeking_weight` must be a non-negative finite number, got {w!r}.")
        if isinstance(self.r1_interval, bool) or not isinstance(self.r1_interval, int) or self.r1_interval < 1:
            raise ValueError(f"`r1_interval` must be an integer >= 1, got {self.r1_interval!r}.")


def generator_step_loss(
    generator_model: torch.nn.Module,
    d_fn: Callable[[torch.Tensor], torch.Tensor],
    d_params: Iterable[torch.nn.Parameter],
    z_g: torch.Tensor,
    config: GANStepConfig,
    aug_generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The generator update's loss: `G(z_g)` scored by `d_fn` under `config`'s precision, augmentation, loss and
    mode-seeking weight, with the discriminator parameters `d_params` frozen meanwhile so that only the generator gets
    gradients (their `requires_grad` flags are restored afterwards). Returns `(g_loss, logs)`."""
    trainable = [p for p in d_params if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        with autocast_context(z_g.device, config.mixed_precision):
            extra = config.generator_extra_images
            z_all = z_g if extra is None else torch.cat([z_g, extra.latents().to(device=z_g.device, dtype=z_g.dtype)])
            n = z_g.shape[0]
            if config.generator_regularizer is None:
                fake = generator_model(z_all).sample
            else:
                out = generator_model(z_all, return_features=True)
                fake = out.sample
                features = out.features if extra is None else [f[:n] for f in out.features]
            if extra is not None:
                fake, extra_images = fake[:n], fake[n:]
            loss, logs = generator_loss(
                config.loss,
                d_fn,
                fake.float(),
                augment=config.augment,
                generator=aug_generator,
                latents=z_g,
                mode_seeking_weight=config.mode_seeking_weight,
            )
            if config.generator_regularizer is not None:
                reg_loss, reg_logs = config.generator_regularizer(z_g, features)
                loss = loss + reg_loss
                logs.update(reg_logs)
            if config.generator_image_regularizer is not None:
                reg_loss, reg_logs = config.generator_image_regularizer(fake.float())
                loss = loss + reg_loss
                logs.update(reg_logs)
            if extra is not None:
                extra_loss, extra_logs = extra.term(extra_images)
                loss = loss + extra_loss
                logs.update(extra_logs)
            return loss, logs
    finally:
        for p in trainable:
            p.requires_grad_(True)


def gan_step(
    generator_model: torch.nn.Module,
    discriminator_model: torch.nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    real: torch.Tensor,
    z_d: torch.Tensor,
    z_g: torch.Tensor,
    config: GANStepConfig,
    aug_generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
    reduce_grads: Callable[[list[torch.Tensor]], None] | None = None,
    step: int = 0,
) -> tuple[bool, dict[str, float]]:
    """
    Run one discriminator update on `real` vs. `G(z_d)` and one generator update on `G(z_g)`.

    A step whose discriminator or generator loss is NaN/inf applies no update (both optimizers skip) and returns
    `ok=False`, so callers can count non-finite steps and stop after too many in a row.

    Args:
        generator_model / discriminator_model: the Meta-GAN models being trained (`.sample` / `.logits` outputs).
        opt_g / opt_d: their optimizers.
        real (`torch.Tensor` of shape `(B, C, H, W)`): real images in `[-1, 1]`.
        z_d / z_g (`torch.Tensor` of shape `(B, latent_dim)`): latents for the D and G updates.
        config (`GANStepConfig`): loss, penalties, precision and DiffAugment.
        aug_generator (`torch.Generator`, *optional*): randomness of DiffAugment and of the gradient penalty.
        scaler (`torch.amp.GradScaler`, *optional*): loss scaler for fp16.
        reduce_grads (`Callable`, *optional*): called with each optimizer's parameters after `backward` and before
            `step` (e.g. to average gradients across processes for pooled pretraining).
        step (`int`, defaults to 0): index of this step; with `config.r1_interval > 1` the R1 penalty is applied
            (scaled by the interval) only when `step % r1_interval == 0`.

    Returns:
        `(ok, logs)`: whether both updates were applied, and the losses as floats.
    """
    device = real.device
    disc = discriminator_model

    def d_fn(x: torch.Tensor, num_batches: int = 1) -> torch.Tensor:
        if num_batches == 1:
            return disc(x).logits
        return disc(x, num_batches=num_batches).logits

    # 1. discriminator update
    opt_d.zero_grad(set_to_none=True)
    with autocast_context(device, config.mixed_precision):
        with torch.no_grad():
            fake = generator_model(z_d).sample
        d_loss, d_logs = discriminator_loss(
            config.loss,
            d_fn,
            real,
            fake.float(),
            r1_gamma=config.r1_gamma * config.r1_interval if step % config.r1_interval == 0 else 0.0,
            gp_lambda=config.gp_lambda,
            wgan_drift=config.wgan_drift,
            augment=config.augment,
            generator=aug_generator,
            joint_forward=config.joint_discriminator_forward,
        )
        if config.discriminator_regularizer is not None:
            reg_loss, reg_logs = config.discriminator_regularizer(discriminator_model, real, fake.float(), z_d, step)
            d_loss = d_loss + reg_loss
            d_logs.update(reg_logs)
    d_ok = bool(torch.isfinite(d_loss))
    if d_ok:
        _apply(d_loss, opt_d, scaler, reduce_grads)

    # 2. generator update (the discriminator gets no gradient here)
    opt_g.zero_grad(set_to_none=True)
    g_loss, g_logs = generator_step_loss(generator_model, d_fn, disc.parameters(), z_g, config, aug_generator)
    g_ok = bool(torch.isfinite(g_loss))
    if g_ok and d_ok:
        _apply(g_loss, opt_g, scaler, reduce_grads)
    if scaler is not None:
        scaler.update()
    opt_g.zero_grad(set_to_none=True)
    opt_d.zero_grad(set_to_none=True)
    return d_ok and g_ok, {**d_logs, **g_logs}
