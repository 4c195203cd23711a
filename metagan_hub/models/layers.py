# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Argument checks and small layers shared by the Meta-GAN generator and discriminator."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

ACT_FNS = ("leaky_relu", "relu", "silu", "gelu")
SAMPLE_SIZES = (16, 32, 64, 128)


def default_block_out_channels(sample_size: int, base_channels: int = 32, max_channels: int = 256) -> tuple[int, ...]:
    """Channel widths used when `block_out_channels` is not given: widest at 4×4, halving per upsampling."""
    num_blocks = int(math.log2(sample_size)) - 2
    return tuple(min(max_channels, base_channels * 2 ** (num_blocks - 1 - i)) for i in range(num_blocks))


def check_architecture(
    sample_size: int, channels: int, channels_name: str, block_out_channels: Sequence[int] | None
) -> tuple[int, ...]:
    """Validate the shared architecture arguments of the generator and discriminator; returns the block widths.

    `block_out_channels=None` resolves to [`default_block_out_channels`] (generator order, 4×4 first).
    """
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size not in SAMPLE_SIZES:
        raise ValueError(f"`sample_size` must be one of {SAMPLE_SIZES} (a power of two), got {sample_size!r}.")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels not in (1, 3):
        raise ValueError(f"`{channels_name}` must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
    num_blocks = int(math.log2(sample_size)) - 2
    if block_out_channels is None:
        return default_block_out_channels(sample_size)
    if isinstance(block_out_channels, str) or not hasattr(block_out_channels, "__iter__"):
        raise ValueError(f"`block_out_channels` must be a sequence of positive integers, got {block_out_channels!r}.")
    block_out_channels = tuple(block_out_channels)
    if len(block_out_channels) != num_blocks:
        raise ValueError(
            f"`block_out_channels` must have log2(sample_size) - 2 = {num_blocks} entries for sample_size="
            f"{sample_size} (one block per doubling from 4x4), got {len(block_out_channels)}: {block_out_channels}."
        )
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in block_out_channels):
        raise ValueError(f"`block_out_channels` must be positive integers, got {block_out_channels}.")
    return block_out_channels


def make_activation(act_fn: str) -> nn.Module:
    if act_fn == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if act_fn == "relu":
        return nn.ReLU()
    if act_fn == "silu":
        return nn.SiLU()
    if act_fn == "gelu":
        return nn.GELU()
    raise ValueError(f"`act_fn` must be one of {ACT_FNS}, got {act_fn!r}.")


def activate(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """
    `act(x)` for an activation made by [`make_activation`], computed in place in `x` when autograd is off (GELU,
    which has no in-place form, excepted). Only for an `x` that nothing else reads afterwards, e.g. a convolution's or
    normalization's fresh output. The values are the same as `act(x)`'s, without a new batch-sized tensor per layer
    (32x32 generation in 64-image chunks: 1.01-1.03x faster on a 2-core AVX-512 machine, alternating in one process,
    with [`warm_up_cpu_allocator`] done).

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.models.layers import activate, make_activation

    >>> x = torch.tensor([-1.0, 2.0])
    >>> with torch.no_grad():
    ...     y = activate(make_activation("leaky_relu"), x)
    >>> y.tolist(), y is x
    ([-0.20000000298023224, 2.0], True)
    ```
    """
    if torch.is_grad_enabled():
        return act(x)
    if isinstance(act, nn.LeakyReLU):
        return torch.nn.functional.leaky_relu_(x, act.negative_slope)
    if isinstance(act, nn.ReLU):
        return torch.relu_(x)
    if isinstance(act, nn.SiLU):
        return torch.nn.functional.silu(x, inplace=True)
    return act(x)


# glibc's malloc serves a block above its mmap threshold (128 KiB at start) with a fresh mapping, and returns freed
# memory at the top of its heap to the system once more than its trim threshold is free there. Freeing a mapped block
# of up to 32 MiB raises both thresholds (the trim threshold to twice the block), once and for the whole process. The
# generator's CPU inference frees and reallocates several MB per layer (8 MiB per 32x32 feature map of 64 images at 32
# channels): without a raised threshold the memory went back to the system after every chunk and was faulted in again
# (about 5,000-11,500 minor page faults, 20-45 MiB, per 64-image chunk of the 32x32 model; 0-155 after one 30 MiB
# block was freed; 2-core AVX-512 machine, `scripts/benchmark_allocator.py`).
ALLOCATOR_WARM_UP_BYTES = 30 * 2**20
_allocator_warmed_up = False


def warm_up_cpu_allocator() -> None:
    """
    Allocate and free one untouched `ALLOCATOR_WARM_UP_BYTES` block, once per process, so that glibc's malloc keeps
    the feature maps of CPU inference for reuse instead of mapping and faulting them in again for every chunk (see
    the comment above `ALLOCATOR_WARM_UP_BYTES`). It changes no value; glibc does the same by itself after any free of
    a block of that size, and ignores it where `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` are set. Other C
    libraries keep their own policy. [`MetaGANGenerator`] calls it on its CPU inference path.

    Example:

    ```py
    >>> from metagan_hub.models.layers import warm_up_cpu_allocator

    >>> warm_up_cpu_allocator()  # later calls return at once
    ```
    """
    global _allocator_warmed_up
    if not _allocator_warmed_up:
        _allocator_warmed_up = True
        try:
            block = torch.empty(ALLOCATOR_WARM_UP_BYTES, dtype=torch.uint8)  # never written: no page is touched
        except RuntimeError:  # no 30 MiB of address space to spare (strict overcommit): sample without it
            return
        del block


def physical_memory_bytes() -> int | None:
    """Total physical memory of this machine in bytes, or `None` where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory_bytes(device: torch.device | str | None = None) -> int | None:
    """Memory that a new allocation can use on `device`: free GPU memory for CUDA devices, else the machine's
    available RAM (`MemAvailable`, falling back to total physical memory); `None` where unknown."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return physical_memory_bytes()


def format_bytes(num: float) -> str:
    """`1536` -> `'1.5 KiB'`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(num) < 1024 or unit == "PiB":
            return f"{num:.1f} {unit}" if unit != "B" else f"{int(num)} B"
        num /= 1024
    return f"{num:.1f} PiB"  # pragma: no cover


def check_positive_int(name: str, value: Any) -> int:
    """`value` if it is an integer >= 1 (not a bool); otherwise a `ValueError` naming the argument `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


def check_positive_float(name: str, value: Any) -> float:
    """`value` as a float if it is a positive finite number (not a bool); otherwise a `ValueError` naming the argument
    `name`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")
    return float(value)


def check_parameter_budget(model_name: str, num_params: int, arguments: str) -> None:
    """Refuse, before anything is allocated, a configuration whose float32 weights would not fit in this machine's
    physical memory. `arguments` names the config values that set the size (shown in the message)."""
    total = physical_memory_bytes()
    needed = num_params * 4
    if total is not None and needed > total:
        raise ValueError(
            f"This {model_name} configuration ({arguments}) has about {num_params:,} parameters, "
            f"{format_bytes(needed)} in float32, more than this machine's {format_bytes(total)} of memory. Nothing "
            "was allocated; choose smaller values."
        )


def compute_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype `layer` computes in: the compute dtype of diffusers' layerwise casting when it is enabled (the
    stored weights may then be float8), else the dtype of its weight."""
    for module in layer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            hook = registry.get_hook("layerwise_casting")
            if hook is not None:
                return hook.compute_dtype
    return layer.weight.dtype


def apply_tone_curve(images: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    r"""
    Map pixel values in `[-1, 1]` through one monotone piecewise-linear curve per channel.

    The curve is sampled on a uniform grid: `curve[c, j]` is the output for input `-1 + 2 j / (P - 1)` in channel
    `c`. Values between grid points are interpolated linearly; the map is differentiable in `images` and `curve`.

    Args:
        images (`torch.Tensor` of shape `(N, C, H, W)`): values in `[-1, 1]` (clamped to it).
        curve (`torch.Tensor` of shape `(C, P)`, P >= 2): output values at the grid points.

    Returns:
        `torch.Tensor`: the mapped images, same shape and dtype as `images`.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.models.layers import apply_tone_curve

    >>> identity = torch.linspace(-1, 1, 5)[None]  # one channel, 5 grid points
    >>> x = torch.tensor([[[[-1.0, -0.3, 0.6, 1.0]]]])
    >>> torch.allclose(apply_tone_curve(x, identity), x)
    True
    ```
    """
    if curve.ndim != 2 or curve.shape[0] != images.shape[1] or curve.shape[1] < 2:
        raise ValueError(
            f"`curve` must have shape (channels={images.shape[1]}, points >= 2), got {tuple(curve.shape)}."
        )
    points = curve.shape[1]
    curve = curve.to(images.dtype)
    t = (images.clamp(-1, 1) + 1) * (0.5 * (points - 1))  # position on the grid, in [0, P - 1]
    low = t.detach().floor().clamp(max=points - 2)
    weight = t - low
    offset = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1) * points
    index = low.long() + offset  # [N, C, H, W] into the flattened curve
    flat = curve.reshape(-1)
    return flat[index] * (1 - weight) + flat[index + 1] * weight
