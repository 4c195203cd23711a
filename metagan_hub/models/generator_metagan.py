# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Meta-GAN generator: a small upsample + conv image generator meant to be meta-learned and adapted."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin  # imported by name: diffusers looks these up on this module
from diffusers.configuration_utils import register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..hub.mixin import MetaGANModelHubMixin
from .layers import (
    ACT_FNS,
    activate,
    apply_tone_curve,
    check_architecture,
    check_parameter_budget,
    compute_dtype,
    make_activation,
    warm_up_cpu_allocator,
)

logger = logging.getLogger(__name__)

NORM_TYPES = ("group", "pixel", "layer", "none")


@dataclass
class MetaGANGeneratorOutput(BaseOutput):
    """
    Output of [`MetaGANGenerator`].

    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, sample_size, sample_size)`):
            Generated images in `[-1, 1]`.
        features (`tuple[torch.Tensor]`, *optional*):
            With `forward(..., return_features=True)`: the output of each upsampling block, from 8×8 to
            `sample_size` (`[batch_size, C_i, H_i, W_i]`), e.g. for the cross-domain consistency terms of
            diversity-preserving adaptation; `None` otherwise.
    """

    sample: torch.Tensor
    features: tuple[torch.Tensor, ...] | None = None


class PixelNorm(nn.Module):
    """Normalizes each pixel's feature vector to unit RMS (ProGAN). Per sample and per position: no batch stats."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


def make_norm(norm_type: str, channels: int, norm_num_groups: int) -> nn.Module:
    if norm_type == "group":
        return nn.GroupNorm(math.gcd(norm_num_groups, channels), channels)
    if norm_type == "layer":
        return nn.GroupNorm(1, channels)  # LayerNorm over (C, H, W) of each sample
    if norm_type == "pixel":
        return PixelNorm()
    if norm_type == "none":
        return nn.Identity()
    raise ValueError(f"`norm_type` must be one of {NORM_TYPES}, got {norm_type!r}.")


# Nearest ×2 upsampling then a 3×3 convolution (padding 1) is one stride-2 transposed convolution with a 4×4 kernel:
# along each axis, output pixel 2i+a only sees low-res pixels i-1..i (a=0) or i..i+1 (a=1), with the 3 taps summed
# into 2. `_FUSE_TAPS` maps the 3 taps of the convolution to the 4 taps of the transposed kernel.
_FUSE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def fused_upsampling_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The 4×4 transposed-convolution kernel `[C_in, C_out, 4, 4]` of [`upsample_conv_fused`] for the 3×3 convolution
    weight `[C_out, C_in, 3, 3]`."""
    taps = torch.tensor(_FUSE_TAPS, dtype=weight.dtype, device=weight.device)  # [4, 3]
    return torch.einsum("kr,oirs,ls->iokl", taps, weight, taps)


def upsample_conv_fused(x: torch.Tensor, conv: nn.Conv2d, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """`conv(F.interpolate(x, scale_factor=2, mode="nearest"))` for a 3×3, padding-1 `conv`, computed as one
    transposed convolution: 16 instead of 36 multiply-adds per input pixel and output channel pair, and no upsampled
    copy of `x`. Equal up to floating-point rounding. `kernel`: [`fused_upsampling_kernel`] of `conv.weight`, when
    the caller keeps it; built here otherwise."""
    if kernel is None:
        kernel = fused_upsampling_kernel(conv.weight)
    return F.conv_transpose2d(x, kernel, conv.bias, stride=2, padding=1)  # [N, C_out, 2H, 2W]


def conv3x3_to_one_channel(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(x)` for a 3×3, padding-1 `conv` with one output channel, as a 1×1 convolution to the 9 taps' partial
    sums, each then added in place to the part of the output it reaches. oneDNN runs a one-channel 3×3 convolution
    far below its usual rate; this form was 1.4-1.8x faster for that layer on batches of 32-200 32x32 images with
    AVX-512, AVX2 or SSE4.1 kernels (one thread). The input is not padded: a padded copy of the `C_in`-channel map
    cost more than the 1×1 convolution itself (1.5x for the layer, 64 images in channels_last, AVX-512). The taps
    are added in the order of a padded convolution's partial sums, so the result equals that form bit for bit, and
    the plain convolution up to floating-point rounding."""
    height, width = x.shape[-2:]
    taps = conv.weight[0].permute(1, 2, 0).reshape(9, -1, 1, 1)  # [9, C_in, 1, 1], tap k = (k // 3, k % 3)
    partial = F.conv2d(x, taps)  # [N, 9, H, W]: tap k's term of the output pixel it reaches
    out = conv.bias.view(1, 1, 1, 1).expand(x.shape[0], 1, height, width).contiguous()  # [N, 1, H, W]
    for k in range(9):
        dy, dx = k // 3 - 1, k % 3 - 1  # tap k of output pixel (i, j) reads input pixel (i + dy, j + dx)
        rows, cols = slice(max(0, -dy), height - max(0, dy)), slice(max(0, -dx), width - max(0, dx))
        source_rows = slice(rows.start + dy, rows.stop + dy)
        source_cols = slice(cols.start + dx, cols.stop + dx)
        out[:, :, rows, cols] += partial[:, k : k + 1, source_rows, source_cols]
    return out  # [N, 1, H, W]


# With `fused_upsampling=None` ("auto"), CPU inference batches of at least this many images take the fused path: on
# a 2-core CPU the transposed convolution was 1.1-1.4x faster from 64 images on, even at 16 and slower below.
FUSED_UPSAMPLING_MIN_BATCH = 32


def is_cpu_inference(x: torch.Tensor) -> bool:
    """Whether `x` is on the CPU with autograd off: when the generator takes its inference-only fast paths."""
    return x.device.type == "cpu" and not torch.is_grad_enabled()


class UpBlock(nn.Module):
    """Nearest-neighbour ×2 upsampling followed by two 3×3 convolutions, each with normalization and activation.

    `fused_upsampling` (see [`MetaGANGenerator.enable_fused_upsampling`]): `True` runs the upsampling and the first
    convolution as one transposed convolution, unless that convolution carries a LoRA adapter; `None` (auto) does so
    only for CPU inference (autograd off) on batches of at least `FUSED_UPSAMPLING_MIN_BATCH` images.
    """

    def __init__(self, in_channels: int, out_channels: int, norm_type: str, norm_num_groups: int, act_fn: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = make_norm(norm_type, out_channels, norm_num_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = make_norm(norm_type, out_channels, norm_num_groups)
        self.act = make_activation(act_fn)
        self.fused_upsampling: bool | None = None
        # (a copy of conv1's weight when the kernel was built, the fused kernel); see `_fused_kernel`
        self._fused_kernel_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _fused_kernel(self) -> torch.Tensor | None:
        """The fused kernel of `conv1`, kept between calls without autograd: building it for every chunk of 64
        images cost 1.05x in CPU sampling of a 32x32 model. It is reused only while `conv1.weight` equals, value for
        value, the copy taken when it was built (a comparison costs a small fraction of building it, and unlike
        version counters it also sees writes through `.data`, as `EMAModel.copy_to` makes). `None` where autograd or
        compilation is on, so that the kernel is built in the graph."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return None
        weight = self.conv1.weight
        cached = self._fused_kernel_cache
        if cached is not None:
            source, kernel = cached
            if (
                source.shape == weight.shape
                and source.dtype == weight.dtype
                and source.device == weight.device
                and torch.equal(source, weight)
            ):
                return kernel
        kernel = fused_upsampling_kernel(weight)
        self._fused_kernel_cache = (weight.detach().clone(), kernel)
        return kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.fused_upsampling
        if fused is None:
            fused = x.shape[0] >= FUSED_UPSAMPLING_MIN_BATCH and is_cpu_inference(x)
        # (not with diffusers' layerwise casting: its hook casts the stored weight only inside `conv1.forward`)
        if fused and type(self.conv1) is nn.Conv2d and not hasattr(self.conv1, "_diffusers_hook"):
            x = upsample_conv_fused(x, self.conv1, self._fused_kernel())  # [N, C_out, 2H, 2W]
        else:
            x = self.conv1(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # [N, C_out, 2H, 2W]
        x = activate(self.act, self.norm1(x))  # in place without autograd: fresh tensors
        return activate(self.act, self.norm2(self.conv2(x)))


class MetaGANGenerator(MetaGANModelHubMixin, ModelMixin, ConfigMixin, PeftAdapterMixin):
    r"""
    A DCGAN-style generator for few-shot image generation, designed to be meta-learned (Reptile / first-order MAML)
    and then adapted to a new class from a handful of images. LoRA adapters (PEFT) can be added, saved and loaded
    with diffusers' `add_adapter` / `save_lora_adapter` / `load_lora_adapter`.

    A latent vector is projected to a 4×4 feature map, then each block doubles the resolution with nearest-neighbour
    upsampling followed by two 3×3 convolutions, until `sample_size`; a final 3×3 convolution and `tanh` give images
    in `[-1, 1]`. Upsample + `Conv2d` is used instead of `ConvTranspose2d` so that every layer is an `nn.Linear` or
    `nn.Conv2d` that LoRA (PEFT) can target, and to avoid checkerboard artifacts.

    Normalization never uses batch statistics: BatchNorm's running statistics are shared state that meta-learning
    moves between tasks, and its train-mode output for a sample depends on the rest of the batch, which breaks
    batch-size-1 sampling and chunked generation. The default `"group"` (GroupNorm) normalizes each sample on its
    own and keeps learnable per-channel scales and shifts, which are cheap, effective parameters to adapt.

    CPU inference (autograd off, as in the pipeline's `__call__`) runs its feature maps in `channels_last` and, for
    batches of 32 or more, fuses each upsampling with the following convolution ([`enable_fused_upsampling`]) and
    computes a one-channel output convolution as 9 shifted partial sums; the returned images are contiguous and equal
    the plain path's up to floating-point rounding (`enable_fused_upsampling(False)` gives the plain path). Its
    activations then run in place, and its first call in a process raises glibc's malloc thresholds once
    ([`~metagan_hub.models.layers.warm_up_cpu_allocator`]) so that freed feature maps are reused rather than faulted
    in again (sampling in a fresh process 1.19-1.36x faster on a 2-core AVX-512 machine, one or two threads:
    `scripts/benchmark_allocator.py`). Training is unaffected.

    Args:
        latent_dim (`int`, *optional*, defaults to 128):
            Size of the latent vector `z ~ N(0, I)`.
        sample_size (`int`, *optional*, defaults to 32):
            Output height and width; one of 16, 32, 64, 128.
        out_channels (`int`, *optional*, defaults to 1):
            1 for grayscale, 3 for RGB.
        block_out_channels (`tuple[int]`, *optional*):
            Output channels of each upsampling block, from 8×8 to `sample_size`; `log2(sample_size) - 2` entries.
            The 4×4 input map has `block_out_channels[0]` channels. Defaults to halving widths ending at 32
            (at most 256), e.g. `(128, 64, 32)` for 32×32.
        norm_type (`str`, *optional*, defaults to `"group"`):
            One of `"group"`, `"pixel"`, `"layer"`, `"none"`.
        norm_num_groups (`int`, *optional*, defaults to 8):
            Groups for `"group"` normalization (reduced to a divisor of the channel count).
        act_fn (`str`, *optional*, defaults to `"leaky_relu"`):
            One of `"leaky_relu"` (slope 0.2), `"relu"`, `"silu"`, `"gelu"`.
        tone_curve_points (`int`, *optional*, defaults to 0):
            0: the `tanh` output is the image. N >= 2: the model carries a per-channel output tone curve sampled at
            N points (buffer `tone_curve`, saved with the weights) that maps the `tanh` output to the image, e.g. the
            one `adapt(..., tone_match=True)` fits so that the samples' pixel values are distributed like the
            shots' (see [`set_tone_curve`]). A new curve is the identity.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANGenerator

    >>> model = MetaGANGenerator(latent_dim=64, sample_size=32, out_channels=1)
    >>> latents = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    >>> model(latents).sample.shape
    torch.Size([4, 1, 32, 32])
    ```
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 128,
        sample_size: int = 32,
        out_channels: int = 1,
        block_out_channels: tuple[int, ...] | None = None,
        norm_type: str = "group",
        norm_num_groups: int = 8,
        act_fn: str = "leaky_relu",
        tone_curve_points: int = 0,
    ):
        super().__init__()
        # 0. check arguments before allocating anything
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"`latent_dim` must be a positive integer, got {latent_dim!r}.")
        block_out_channels = check_architecture(sample_size, out_channels, "out_channels", block_out_channels)
        if norm_type not in NORM_TYPES:
            raise ValueError(f"`norm_type` must be one of {NORM_TYPES}, got {norm_type!r}.")
        if act_fn not in ACT_FNS:
            raise ValueError(f"`act_fn` must be one of {ACT_FNS}, got {act_fn!r}.")
        if isinstance(norm_num_groups, bool) or not isinstance(norm_num_groups, int) or norm_num_groups < 1:
            raise ValueError(f"`norm_num_groups` must be a positive integer, got {norm_num_groups!r}.")
        if (
            isinstance(tone_curve_points, bool)
            or not isinstance(tone_curve_points, int)
            or tone_curve_points < 0
            or tone_curve_points == 1
        ):
            raise ValueError(
                f"`tone_curve_points` must be 0 (no curve) or an integer >= 2, got {tone_curve_points!r}."
            )
        check_parameter_budget(
            "MetaGANGenerator",
            self.estimate_num_parameters(latent_dim, out_channels, block_out_channels),
            f"latent_dim={latent_dim}, block_out_channels={list(block_out_channels)}",
        )
        self.register_to_config(block_out_channels=list(block_out_channels))

        # 1. latent projection to a 4x4 map
        c0 = block_out_channels[0]
        self.proj = nn.Linear(latent_dim, c0 * 4 * 4)
        self.proj_norm = make_norm(norm_type, c0, norm_num_groups)
        self.act = make_activation(act_fn)

        # 2. upsampling blocks
        in_channels = [c0] + list(block_out_channels[:-1])
        self.blocks = nn.ModuleList(
            UpBlock(c_in, c_out, norm_type, norm_num_groups, act_fn)
            for c_in, c_out in zip(in_channels, block_out_channels)
        )

        # 3. output convolution
        self.conv_out = nn.Conv2d(block_out_channels[-1], out_channels, 3, padding=1)

        # 4. optional output tone curve (identity until set)
        identity = torch.linspace(-1.0, 1.0, tone_curve_points).repeat(out_channels, 1) if tone_curve_points else None
        self.register_buffer("tone_curve", identity)  # None: no curve (and nothing saved)

    def set_tone_curve(self, curve: torch.Tensor | None) -> None:
        r"""
        Set (or with `None` remove) the output tone curve: a monotone map of the `tanh` output, one row of values on
        a uniform grid over `[-1, 1]` per output channel (see [`~metagan_hub.models.layers.apply_tone_curve`]). It
        becomes the buffer `tone_curve`, and `config.tone_curve_points` follows, so `save_pretrained` /
        `from_pretrained` keep it.

        Args:
            curve (`torch.Tensor` of shape `(out_channels, P)` or `None`): finite, non-decreasing along `P`, in
                `[-1, 1]`, P >= 2.

        Example:

        ```py
        >>> import torch
        >>> from metagan_hub import MetaGANGenerator

        >>> model = MetaGANGenerator(latent_dim=16, sample_size=16, block_out_channels=(16, 8))
        >>> model.set_tone_curve(torch.tensor([[-1.0, -1.0, 1.0]]))  # push mid-grey towards black and white
        >>> model.config.tone_curve_points
        3
        ```
        """
        if curve is None:
            self.register_buffer("tone_curve", None)
            self.register_to_config(tone_curve_points=0)
            return
        channels = self.config.out_channels
        if not isinstance(curve, torch.Tensor) or curve.ndim != 2 or curve.shape[0] != channels or curve.shape[1] < 2:
            got = tuple(curve.shape) if isinstance(curve, torch.Tensor) else type(curve).__name__
            raise ValueError(f"`curve` must be a tensor of shape ({channels}, points >= 2), got {got}.")
        curve = curve.detach().float()
        if not torch.isfinite(curve).all() or curve.min() < -1 or curve.max() > 1 or (curve.diff(dim=1) < 0).any():
            raise ValueError("`curve` must be finite, within [-1, 1] and non-decreasing along its points.")
        reference = self.conv_out.weight
        curve = curve.to(device=reference.device, dtype=reference.dtype)
        self.register_buffer("tone_curve", curve.clone())
        self.register_to_config(tone_curve_points=int(curve.shape[1]))

    @staticmethod
    def estimate_num_parameters(latent_dim: int, out_channels: int, block_out_channels: tuple[int, ...]) -> int:
        """The parameter count of a generator with this configuration, computed without building it (the norm
        layers are counted with their largest possible size)."""
        c0 = block_out_channels[0]
        total = latent_dim * c0 * 16 + c0 * 16 + 2 * c0  # proj + proj_norm
        for c_in, c_out in zip([c0] + list(block_out_channels[:-1]), block_out_channels):
            total += c_in * c_out * 9 + c_out + c_out * c_out * 9 + c_out + 4 * c_out
        return total + block_out_channels[-1] * out_channels * 9 + out_channels

    def enable_fused_upsampling(self, enabled: bool | None = True) -> None:
        r"""
        Run each block's nearest ×2 upsampling and first 3×3 convolution as one stride-2 transposed convolution with
        the equivalent 4×4 kernel (built from the same weights, and kept between calls without autograd until they
        change, so training and saving are unaffected).
        It does 16/36 of those convolutions' multiply-adds and never materialises the upsampled feature maps; outputs
        equal the unfused ones up to floating-point rounding. It pays off for large batches (see
        `scripts/benchmark_generation.py`); for the small batches of few-shot training the plain path is faster on
        CPU. Convolutions carrying a LoRA adapter always take the plain path.

        Args:
            enabled (`bool` or `None`, *optional*, defaults to `True`):
                `True` always fuses, `False` never does, `None` (the default of a new model) fuses only for CPU
                inference (autograd off, as in the pipeline's `__call__`) on batches of at least
                `FUSED_UPSAMPLING_MIN_BATCH` (32) images. `False` also keeps a one-channel output convolution in its
                plain form, which CPU inference of such batches otherwise computes as shifted partial sums.

        Example:

        ```py
        >>> import torch
        >>> from metagan_hub import MetaGANGenerator

        >>> model = MetaGANGenerator(latent_dim=16, sample_size=16, block_out_channels=(16, 8)).eval()
        >>> latents = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
        >>> plain = model(latents).sample
        >>> model.enable_fused_upsampling()
        >>> torch.allclose(model(latents).sample, plain, atol=1e-5)
        True
        ```
        """
        if enabled is not None and not isinstance(enabled, bool):
            raise ValueError(f"`enabled` must be True, False or None (auto), got {enabled!r}.")
        for block in self.blocks:
            block.fused_upsampling = enabled

    @property
    def fused_upsampling(self) -> bool | None:
        """The [`enable_fused_upsampling`] setting: `True`, `False` or `None` (auto)."""
        return self.blocks[0].fused_upsampling

    def forward(
        self, latents: torch.Tensor, return_dict: bool = True, return_features: bool = False
    ) -> MetaGANGeneratorOutput | tuple:
        r"""
        Args:
            latents (`torch.Tensor` of shape `(batch_size, latent_dim)`):
                Latent vectors, usually drawn from a standard normal distribution.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`MetaGANGeneratorOutput`] instead of a plain tuple.
            return_features (`bool`, *optional*, defaults to `False`):
                Also return each upsampling block's output (`features`); the images are the same either way.

        Returns:
            [`MetaGANGeneratorOutput`] or `tuple`: images in `[-1, 1]` of shape
            `(batch_size, out_channels, sample_size, sample_size)` (and, with `return_features`, the block outputs;
            the tuple is then `(sample, features)`).
        """
        if latents.ndim != 2 or latents.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"`latents` must have shape (batch_size, {self.config.latent_dim}), got {tuple(latents.shape)}."
            )
        # 1. project
        x = self.proj(latents.to(compute_dtype(self.proj)))  # the compute dtype, not a float8 storage dtype
        x = x.view(latents.shape[0], -1, 4, 4)  # [N, C0, 4, 4]
        x = activate(self.act, self.proj_norm(x))
        cpu_inference = is_cpu_inference(x)
        if cpu_inference:
            warm_up_cpu_allocator()  # once per process: freed feature maps are reused, not faulted in again
            # oneDNN convolutions run ~1.2-1.8x faster in channels_last on CPU; the output is made contiguous again
            x = x.contiguous(memory_format=torch.channels_last)
        # 2. upsample
        features = [] if return_features else None
        for block in self.blocks:
            x = block(x)  # [N, C_i, 2H, 2W]
            if features is not None:
                features.append(x)
        # 3. to image
        conv_out = self.conv_out
        if (
            cpu_inference
            and x.shape[0] >= FUSED_UPSAMPLING_MIN_BATCH
            and self.fused_upsampling is not False
            and type(conv_out) is nn.Conv2d  # (not a LoRA layer, which has no `out_channels`)
            and conv_out.out_channels == 1
            and conv_out.bias is not None
            and not hasattr(conv_out, "_diffusers_hook")
        ):
            sample = torch.tanh(conv3x3_to_one_channel(x, conv_out))  # [N, 1, sample_size, sample_size]
        else:
            sample = torch.tanh(conv_out(x))  # [N, out_channels, sample_size, sample_size]
        if self.tone_curve is not None:
            sample = apply_tone_curve(sample, self.tone_curve)
        if cpu_inference:
            sample = sample.contiguous()
        if features is not None:
            features = tuple(features)
        if not return_dict:
            return (sample,) if features is None else (sample, features)
        return MetaGANGeneratorOutput(sample=sample, features=features)
