# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Meta-GAN discriminator: a conv + average-pool critic with optional spectral norm and minibatch-std."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin  # imported by name: diffusers looks these up on this module
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from ..hub.mixin import MetaGANModelHubMixin
from .layers import ACT_FNS, activate, check_architecture, check_parameter_budget, compute_dtype, make_activation

logger = logging.getLogger(__name__)


@dataclass
class MetaGANDiscriminatorOutput(BaseOutput):
    """
    Output of [`MetaGANDiscriminator`].

    Args:
        logits (`torch.Tensor` of shape `(batch_size,)`):
            Unnormalized realness scores (higher means "more real").
        features (`tuple[torch.Tensor]`, *optional*):
            With `forward(..., return_features=True)`: the output of each down block, from the image side to 4×4
            (`[batch_size, C_i, H_i, W_i]`), e.g. for a patch-level head or a feature-space contrastive term;
            `None` otherwise.
    """

    logits: torch.Tensor
    features: tuple[torch.Tensor, ...] | None = None


def _maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


class DownBlock(nn.Module):
    """Two 3×3 convolutions with activations, then 2×2 average pooling (halves the resolution)."""

    def __init__(self, in_channels: int, out_channels: int, act_fn: str, spectral_norm: bool):
        super().__init__()
        self.conv1 = _maybe_spectral_norm(nn.Conv2d(in_channels, in_channels, 3, padding=1), spectral_norm)
        self.conv2 = _maybe_spectral_norm(nn.Conv2d(in_channels, out_channels, 3, padding=1), spectral_norm)
        self.act = make_activation(act_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = activate(self.act, self.conv1(x))  # in place without autograd: fresh tensors
        x = activate(self.act, self.conv2(x))
        return F.avg_pool2d(x, 2)  # [N, C_out, H/2, W/2]


class MinibatchStd(nn.Module):
    """Appends one feature map holding the mean (over features) of the per-feature standard deviation across groups
    of `group_size` samples (ProGAN). Helps the discriminator see mode collapse. Batches that `group_size` does not
    divide use the largest divisor of the batch size that is ≤ `group_size`, so any batch size works.

    With `num_batches > 1` the input is that many equal batches stacked along the first dimension, and groups never
    cross from one to the next: the result equals running each batch on its own."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor, num_batches: int = 1) -> torch.Tensor:
        total, c, h, w = x.shape
        n = total // num_batches
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        m = n // g
        y = x.float().view(num_batches, g, m, c, h, w)  # [B, G, M, C, H, W]
        # (biased variance written out: faster than Tensor.var through R1's double backward, same value)
        std = ((y - y.mean(dim=1, keepdim=True)).square().mean(dim=1) + 1e-8).sqrt()  # [B, M, C, H, W]
        std = std.mean(dim=(2, 3, 4))  # [B, M]
        std = std.view(num_batches, 1, m, 1, 1, 1).expand(num_batches, g, m, 1, h, w)  # [B, G, M, 1, H, W]
        return torch.cat([x, std.reshape(total, 1, h, w).to(x.dtype)], dim=1)


class MetaGANDiscriminator(MetaGANModelHubMixin, ModelMixin, ConfigMixin):
    r"""
    Convolutional discriminator (critic) matching [`MetaGANGenerator`].

    An input convolution maps images to `block_out_channels[0]` features; each down block runs two 3×3 convolutions
    and halves the resolution with average pooling until 4×4; an optional minibatch-standard-deviation feature, a 3×3
    convolution and a linear layer give one logit per image. No normalization layer is used (batch statistics would
    couple samples and tasks; gradient penalties assume per-sample outputs). Spectral normalization can be switched
    on for the hinge and non-saturating losses; leave it off for WGAN-GP.

    Blocks are addressable by index for FreezeD-style adaptation: [`freeze_blocks`] freezes the input convolution
    and the lowest `n` entries of `self.blocks` (closest to the image).

    Args:
        sample_size (`int`, *optional*, defaults to 32):
            Input height and width; one of 16, 32, 64, 128.
        in_channels (`int`, *optional*, defaults to 1):
            1 for grayscale, 3 for RGB.
        block_out_channels (`tuple[int]`, *optional*):
            Output channels of each down block, from `sample_size` down to 4×4 (`log2(sample_size) - 2` entries);
            the input convolution has `block_out_channels[0]` channels. Defaults to the generator's widths in
            reverse, e.g. `(32, 64, 128)` for 32×32.
        act_fn (`str`, *optional*, defaults to `"leaky_relu"`):
            One of `"leaky_relu"` (slope 0.2), `"relu"`, `"silu"`, `"gelu"`.
        spectral_norm (`bool`, *optional*, defaults to `False`):
            Apply spectral normalization to every convolution and linear layer.
        minibatch_std (`bool`, *optional*, defaults to `True`):
            Append a minibatch-standard-deviation feature map before the last convolution.
        minibatch_std_group_size (`int`, *optional*, defaults to 4):
            Group size of the minibatch-standard-deviation feature.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANDiscriminator

    >>> model = MetaGANDiscriminator(sample_size=32, in_channels=1)
    >>> model(torch.rand(4, 1, 32, 32) * 2 - 1).logits.shape
    torch.Size([4])
    ```
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 1,
        block_out_channels: tuple[int, ...] | None = None,
        act_fn: str = "leaky_relu",
        spectral_norm: bool = False,
        minibatch_std: bool = True,
        minibatch_std_group_size: int = 4,
    ):
        super().__init__()
        # 0. check arguments before allocating anything
        if block_out_channels is None:
            block_out_channels = tuple(reversed(check_architecture(sample_size, in_channels, "in_channels", None)))
        block_out_channels = check_architecture(sample_size, in_channels, "in_channels", block_out_channels)
        if act_fn not in ACT_FNS:
            raise ValueError(f"`act_fn` must be one of {ACT_FNS}, got {act_fn!r}.")
        for name, flag in (("spectral_norm", spectral_norm), ("minibatch_std", minibatch_std)):
            if not isinstance(flag, bool):
                raise ValueError(f"`{name}` must be True or False, got {flag!r}.")
        if (
            isinstance(minibatch_std_group_size, bool)
            or not isinstance(minibatch_std_group_size, int)
            or minibatch_std_group_size < 1
        ):
            raise ValueError(f"`minibatch_std_group_size` must be a positive int, got {minibatch_std_group_size!r}.")
        check_parameter_budget(
            "MetaGANDiscriminator",
            self.estimate_num_parameters(in_channels, block_out_channels, minibatch_std),
            f"block_out_channels={list(block_out_channels)}",
        )
        self.register_to_config(block_out_channels=list(block_out_channels))

        # 1. image to features
        self.conv_in = _maybe_spectral_norm(nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1), spectral_norm)
        self.act = make_activation(act_fn)

        # 2. down blocks: sample_size -> 4x4
        out_channels = list(block_out_channels[1:]) + [block_out_channels[-1]]
        self.blocks = nn.ModuleList(
            DownBlock(c_in, c_out, act_fn, spectral_norm) for c_in, c_out in zip(block_out_channels, out_channels)
        )

        # 3. head at 4x4
        c = block_out_channels[-1]
        self.mbstd = MinibatchStd(minibatch_std_group_size) if minibatch_std else None
        self.conv_out = _maybe_spectral_norm(nn.Conv2d(c + int(minibatch_std), c, 3, padding=1), spectral_norm)
        self.fc = _maybe_spectral_norm(nn.Linear(c * 4 * 4, 1), spectral_norm)

    @staticmethod
    def estimate_num_parameters(in_channels: int, block_out_channels: tuple[int, ...], minibatch_std: bool) -> int:
        """The parameter count of a discriminator with this configuration, computed without building it."""
        c = list(block_out_channels)
        total = in_channels * c[0] * 9 + c[0]
        for c_in, c_out in zip(c, c[1:] + [c[-1]]):
            total += c_in * c_in * 9 + c_in + c_in * c_out * 9 + c_out
        return total + (c[-1] + int(minibatch_std)) * c[-1] * 9 + c[-1] + c[-1] * 16 + 1

    @property
    def num_blocks(self) -> int:
        """Number of down blocks (the largest valid value of `freeze_blocks(n)`)."""
        return len(self.blocks)

    def freeze_blocks(self, n: int) -> None:
        """
        Freeze the input convolution and the lowest `n` down blocks (FreezeD, Mo et al. 2020); unfreeze the rest.

        Args:
            n (`int`): how many blocks, counted from the image side, to freeze; `0 <= n <= num_blocks`.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.num_blocks:
            raise ValueError(
                f"`freeze_discriminator_blocks` must be an integer between 0 and {self.num_blocks} "
                f"(the discriminator's number of blocks), got {n!r}."
            )
        self.requires_grad_(True)
        if n > 0:
            self.conv_in.requires_grad_(False)
            for block in self.blocks[:n]:
                block.requires_grad_(False)

    def _check_sample(self, sample: torch.Tensor) -> None:
        expected = (self.config.in_channels, self.config.sample_size, self.config.sample_size)
        if sample.ndim != 4 or tuple(sample.shape[1:]) != expected:
            raise ValueError(
                f"`sample` must have shape (batch_size, {', '.join(map(str, expected))}), got {tuple(sample.shape)}."
            )

    def block_features(self, sample: torch.Tensor, num_blocks: int | None = None) -> tuple[torch.Tensor, ...]:
        r"""
        The outputs of the first `num_blocks` down blocks (default: all), from the image side, without running the
        rest of the network. `forward(..., return_features=True)` returns the same tensors for all blocks.

        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, sample_size, sample_size)`):
                Images in `[-1, 1]`.
            num_blocks (`int`, *optional*):
                How many blocks to run, `1 <= num_blocks <= self.num_blocks`.

        Returns:
            `tuple[torch.Tensor]`: one `[batch_size, C_i, H_i, W_i]` tensor per block run.

        Example:

        ```py
        >>> import torch
        >>> from metagan_hub import MetaGANDiscriminator

        >>> disc = MetaGANDiscriminator(sample_size=32, in_channels=1)
        >>> [tuple(f.shape) for f in disc.block_features(torch.zeros(2, 1, 32, 32), num_blocks=2)]
        [(2, 64, 16, 16), (2, 128, 8, 8)]
        ```
        """
        self._check_sample(sample)
        if num_blocks is None:
            num_blocks = self.num_blocks
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or not 1 <= num_blocks <= self.num_blocks:
            raise ValueError(
                f"`num_blocks` must be an integer between 1 and {self.num_blocks} (the discriminator's number of "
                f"blocks), got {num_blocks!r}."
            )
        return self._run_blocks(sample, num_blocks)

    def input_features(self, sample: torch.Tensor) -> torch.Tensor:
        r"""
        The output of the first convolution and its activation, at full resolution: what the down blocks start from.
        Under 1% of the network's arithmetic for a 32×32 model with one input channel: a cheap first look at an image.

        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, sample_size, sample_size)`):
                Images in `[-1, 1]`.

        Returns:
            `torch.Tensor` of shape `(batch_size, block_out_channels[0], sample_size, sample_size)`.

        Example:

        ```py
        >>> import torch
        >>> from metagan_hub import MetaGANDiscriminator

        >>> disc = MetaGANDiscriminator(sample_size=32, in_channels=1)
        >>> tuple(disc.input_features(torch.zeros(2, 1, 32, 32)).shape)
        (2, 32, 32, 32)
        ```
        """
        self._check_sample(sample)
        return self._input_features(sample)

    def _input_features(self, sample: torch.Tensor) -> torch.Tensor:
        # (cast to the compute dtype, never to a float8 storage dtype of layerwise casting)
        return activate(self.act, self.conv_in(sample.to(compute_dtype(self.conv_in))))  # [N, C0, S, S]

    def _run_blocks(self, sample: torch.Tensor, num_blocks: int) -> tuple[torch.Tensor, ...]:
        x = self._input_features(sample)  # [N, C0, S, S]
        features = []
        for block in self.blocks[:num_blocks]:
            x = block(x)
            features.append(x)
        return tuple(features)

    def forward(
        self, sample: torch.Tensor, return_dict: bool = True, num_batches: int = 1, return_features: bool = False
    ) -> MetaGANDiscriminatorOutput | tuple:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, sample_size, sample_size)`):
                Images in `[-1, 1]`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`MetaGANDiscriminatorOutput`] instead of a plain tuple.
            num_batches (`int`, *optional*, defaults to 1):
                How many equal batches `sample` stacks along its first dimension. Minibatch-std groups stay inside
                each of them, so `D(torch.cat([real, fake]), num_batches=2)` gives the logits of `D(real)` followed
                by those of `D(fake)` in a single, faster call.
            return_features (`bool`, *optional*, defaults to `False`):
                Also return each down block's output (`features`); the logits are the same either way.

        Returns:
            [`MetaGANDiscriminatorOutput`] or `tuple`: logits of shape `(batch_size,)` (and, with
            `return_features`, the block outputs; the tuple is then `(logits, features)`).
        """
        self._check_sample(sample)
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f"`num_batches` must be a positive integer, got {num_batches!r}.")
        if sample.shape[0] % num_batches:
            raise ValueError(
                f"`num_batches`={num_batches} must divide the batch size of `sample` ({sample.shape[0]}): the input "
                "is that many equal batches stacked."
            )
        # 1.-2. features, downsampled to 4x4
        features = self._run_blocks(sample, self.num_blocks)
        x = features[-1]  # [N, C, 4, 4]
        # 3. head
        if self.mbstd is not None:
            x = self.mbstd(x, num_batches)  # [N, C + 1, 4, 4]
        x = activate(self.act, self.conv_out(x))
        logits = self.fc(x.flatten(1)).squeeze(1)  # [N]
        if not return_features:
            features = None
        if not return_dict:
            return (logits,) if features is None else (logits, features)
        return MetaGANDiscriminatorOutput(logits=logits, features=features)
