# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""
Diversity-preserving few-shot adaptation: terms that keep what the *starting* generator knew about variation while the
adapted copy learns the shots.

Two methods from the few-shot GAN adaptation literature are available to [`MetaGANPipeline.adapt`]
(`diversity_loss=`):

- `"cdc"` — cross-domain correspondence (Ojha et al., CVPR 2021, "Few-shot Image Generation via Cross-domain
  Correspondence"). For a batch of latents, every sample's softmax over its cosine similarities to the other samples,
  taken at each upsampling block of the generator, must stay what the frozen starting generator gives
  ([`~metagan_hub.training.losses.pairwise_similarity_consistency_loss`]). Plus the paper's *anchor regions*: every
  `cdc_anchor_interval`-th step draws its latents close to a small set of anchor latents (one per shot) and uses the
  usual image-level discriminator; the other steps draw latents anywhere and are judged by a patch-level
  discriminator ([`PatchDiscriminator`]: a small new head scoring each position of an intermediate feature map of the
  discriminator), so that only the anchor regions are pushed towards whole shots and the rest of latent space only
  has to look right patch by patch.
- `"dcl"` — dual contrastive learning (Zhao et al., CVPR 2022, "A Closer Look at Few-shot Image Generation").
  Chosen as the second method because (1) its authors compare it with CDC in CDC's own 10-shot setups and report
  better quality and slower loss of diversity (their analysis: methods reach similar quality once converged, so the
  better ones are those that *slow down diversity degradation* during adaptation — the problem of our Reptile
  checkpoint), e.g. FFHQ → Sunglasses FID 37.66 as listed for DCL on public few-shot-generation leaderboards;
  (2) it needs only the frozen source generator that CDC already keeps and the discriminator's own block outputs,
  whereas RSSA compresses the latent space by GAN inversion of the shots and AdAM probes per-kernel importance in an
  extra training phase, both designed around large StyleGAN generators. (AdAM's authors also report that CDC and DCL
  are no better than plain fine-tuning when source and target domains are far apart: measure on far domains before
  relying on either.) The generator side is an InfoNCE term ([`contrastive_correspondence_loss`]): at each
  upsampling block, the adapted generator's features of latent `i` must be closer (cosine) to the source
  generator's features of the same latent than to the source's features of the other latents of the batch — a
  lower bound on the mutual information between source and adapted samples. The discriminator side is a second
  InfoNCE term on the discriminator's block outputs: an adapted sample `G_t(z_i)` is pulled towards the source sample
  `G_s(z_i)` and pushed away from the real shots, so that the discriminator keeps telling generated images from
  copies of the shots. The paper's loss weights and temperature are not restated here: `adapt()` uses weight 1.0
  for both terms and temperature 0.07 (the usual InfoNCE value) as its defaults.

- `"mixdl"` — mixup-based distance learning (Kong et al., ECCV 2022, "Few-shot Image Generation with Mixup-based
  Distance Learning"). Aimed at the collapse itself rather than at the source: the generator batch is `K` latents
  plus `K` mixes of them, mix `i` with coefficients `alpha_i ~ Dirichlet(1, ..., 1)`, and at each upsampling block
  the mix's softmax over its cosine similarities to the `K` anchor samples must follow `softmax(alpha_i)`
  ([`mixup_distance_loss`]): a sample between two latents must look in between, not snap onto one shot. It needs no
  source generator. Two choices differ from the paper's StyleGAN code, which mixes in the mapped `w` space: our
  latents are Gaussian `z` with no mapping network, so a mix is taken variance-preserving, `alpha_i @ z / ||alpha_i||`
  (for fixed coefficients again a standard normal latent, so the term acts on typical samples, not on the shrunken
  ones a plain convex mix gives); and only its generator side is here (the paper's discriminator side needs an extra
  projection head). The paper's weight 1000 multiplies a KL divergence averaged over `K x K` entries; the row sums
  averaged over `K` mixes here make that `1000 / K`.

A third, simpler lever is not a `diversity_loss` but its own option, `shot_reconstruction_weight`: each shot is tied
to one latent, the one among random draws whose image under the starting generator lies nearest the shot (a cheap
stand-in for the GAN inversion of the shots that RSSA, Xiao et al., CVPR 2022, builds on), and the adapted generator
must also reproduce each shot from its latent ([`shot_anchor_latents`], [`ShotReconstruction`]). Tying the
shots apart in latent space keeps the generator from averaging them into one mode.

CDC and DCL use the frozen starting generator, which [`~metagan_hub.training.adaptation.adapt_pipeline`] keeps once
per `adapt()` call (the pipeline's own generator when it already has the training dtype and device, else one copy).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.discriminator_metagan import MetaGANDiscriminator, MetaGANDiscriminatorOutput
from ..models.layers import check_positive_int, make_activation
from .losses import pairwise_similarity_consistency_loss

logger = logging.getLogger(__name__)

DIVERSITY_LOSSES = ("cdc", "dcl", "mixdl")

# CDC's weight lambda = 1000 multiplies a KL divergence *averaged over the N x (N - 1) similarity entries*;
# `pairwise_similarity_consistency_loss` averages over the N samples only (KL summed over each row), so the same
# strength is 1000 / (N - 1) here (333 for the default batch of 4).
CDC_PAPER_WEIGHT = 1000.0
# CDC draws anchor-region latents (image-level discriminator) every 4th iteration, with noise std 0.05 around them.
CDC_ANCHOR_INTERVAL = 4
CDC_ANCHOR_STD = 0.05
# DCL: one weight for its generator-side and discriminator-side InfoNCE terms, and the usual InfoNCE temperature.
DCL_WEIGHT = 1.0
DCL_TEMPERATURE = 0.07
# MixDL: weight 1000 on a KL divergence averaged over K x K entries (K anchors per mix), i.e. 1000 / K on our rows.
MIXDL_PAPER_WEIGHT = 1000.0


def default_diversity_weight(diversity_loss: str, batch_size: int) -> float:
    """The weight `adapt()` uses for `diversity_loss` when `diversity_weight=None` (see the module docstring)."""
    if diversity_loss == "cdc":
        return CDC_PAPER_WEIGHT / (batch_size - 1)
    if diversity_loss == "dcl":
        return DCL_WEIGHT
    if diversity_loss == "mixdl":
        return MIXDL_PAPER_WEIGHT / batch_size
    raise ValueError(f"`diversity_loss` must be None or one of {DIVERSITY_LOSSES}, got {diversity_loss!r}.")


def check_diversity_options(
    diversity_loss: Any,
    diversity_weight: Any,
    diversity_batch_size: Any,
    cdc_anchor_interval: Any,
    batch_size: int,
    diversity_interval: Any = None,
) -> tuple[str | None, float | None, int, int | None]:
    """Validate the diversity options of `adapt()` and resolve their defaults.

    Returns `(diversity_loss, weight, generator_batch_size, anchor_interval)`: the weight and anchor interval are
    `None` when no diversity term is on, and the generator batch size is `batch_size` then. `diversity_interval` (the
    generator-side term on every k-th generator update; `None` = every update) is only checked: a positive integer,
    given with a `diversity_loss`."""
    if diversity_loss is not None and diversity_loss not in DIVERSITY_LOSSES:
        raise ValueError(f"`diversity_loss` must be None or one of {DIVERSITY_LOSSES}, got {diversity_loss!r}.")
    if diversity_weight is not None and (
        isinstance(diversity_weight, bool)
        or not isinstance(diversity_weight, int | float)
        or not math.isfinite(diversity_weight)
        or diversity_weight < 0
    ):
        raise ValueError(f"`diversity_weight` must be a non-negative finite number or None, got {diversity_weight!r}.")
    if diversity_batch_size is not None and (
        isinstance(diversity_batch_size, bool) or not isinstance(diversity_batch_size, int) or diversity_batch_size < 1
    ):
        raise ValueError(f"`diversity_batch_size` must be a positive integer or None, got {diversity_batch_size!r}.")
    if cdc_anchor_interval is not None and (
        isinstance(cdc_anchor_interval, bool) or not isinstance(cdc_anchor_interval, int) or cdc_anchor_interval < 0
    ):
        raise ValueError(
            f"`cdc_anchor_interval` must be None (the paper's {CDC_ANCHOR_INTERVAL}), 0 (no anchor regions) or a "
            f"positive integer, got {cdc_anchor_interval!r}."
        )
    if diversity_interval is not None:
        check_positive_int("diversity_interval", diversity_interval)
    if diversity_loss is None:
        for name, value in (
            ("diversity_weight", diversity_weight),
            ("diversity_batch_size", diversity_batch_size),
            ("cdc_anchor_interval", cdc_anchor_interval),
            ("diversity_interval", diversity_interval),
        ):
            if value is not None:
                raise ValueError(
                    f"`{name}`={value!r} was given without `diversity_loss`; pick one of {DIVERSITY_LOSSES}."
                )
        return None, None, batch_size, None
    if cdc_anchor_interval is not None and diversity_loss != "cdc":
        raise ValueError(
            f"`cdc_anchor_interval` belongs to diversity_loss='cdc', got it with diversity_loss={diversity_loss!r}."
        )
    g_batch = batch_size if diversity_batch_size is None else diversity_batch_size
    least = 2 if diversity_loss == "mixdl" else 3
    if g_batch < least:
        name = "batch_size" if diversity_batch_size is None else "diversity_batch_size"
        what = (
            "mixes at least 2 latents"
            if diversity_loss == "mixdl"
            else "compares each generated sample with at least 2 others"
        )
        raise ValueError(
            f"diversity_loss={diversity_loss!r} {what}: the generator batch (`{name}`, or `diversity_batch_size` when "
            f"set) must be >= {least}, got {g_batch}."
        )
    weight = default_diversity_weight(diversity_loss, g_batch) if diversity_weight is None else float(diversity_weight)
    anchors = None
    if diversity_loss == "cdc":
        anchors = CDC_ANCHOR_INTERVAL if cdc_anchor_interval is None else cdc_anchor_interval
    return diversity_loss, weight, g_batch, anchors


def _as_list(features: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [features] if isinstance(features, torch.Tensor) else list(features)


def contrastive_correspondence_loss(
    anchor_features: torch.Tensor | Sequence[torch.Tensor],
    positive_features: torch.Tensor | Sequence[torch.Tensor],
    negative_features: torch.Tensor | Sequence[torch.Tensor] | None = None,
    temperature: float = DCL_TEMPERATURE,
) -> torch.Tensor:
    r"""
    InfoNCE term of dual contrastive learning (DCL, Zhao et al., CVPR 2022), averaged over layers.

    Each anchor `a_i` (features of sample `i`, flattened) must be more similar (cosine, over `temperature`) to its
    positive `p_i` than to the negatives: `-log(exp(s(a_i, p_i)) / (exp(s(a_i, p_i)) + sum_j exp(s(a_i, n_j))))`,
    averaged over `i`. Without `negative_features`, the negatives of `a_i` are the *other* positives `p_j`, `j != i`
    (DCL's generator side: adapted features of latent `i` vs. source features of all latents of the batch). With
    them, every anchor is contrasted with all `negative_features` (DCL's discriminator side: negatives are the real
    shots). Minimizing it maximizes a lower bound on the mutual information between anchors and positives; when all
    anchors collapse to one point (mode collapse) and negatives are the other positives, it is at least `log N`.

    Args:
        anchor_features (`torch.Tensor` `[N, ...]` or a list of them, one per layer):
            Features that receive gradients (e.g. the adapted generator's).
        positive_features (`torch.Tensor` `[N, ...]` or a list of them):
            Features of the same samples from the reference (e.g. the frozen source generator), same shapes.
        negative_features (`torch.Tensor` `[M, ...]` or a list of them, *optional*):
            Explicit negatives, shared by all anchors.
        temperature (`float`, defaults to 0.07): positive and finite.

    Returns:
        `torch.Tensor`: the scalar float32 loss.

    Example:

    ```py
    >>> import math
    >>> import torch
    >>> from metagan_hub.training.diversity import contrastive_correspondence_loss

    >>> source = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    >>> collapsed = source[:1].expand(8, 32)
    >>> float(contrastive_correspondence_loss(source, source)) < 0.1 < math.log(8) - 0.5
    True
    >>> float(contrastive_correspondence_loss(collapsed, source)) >= math.log(8) - 1e-4
    True
    ```
    """
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 < temperature < math.inf:
        raise ValueError(f"`temperature` must be a positive finite number, got {temperature!r}.")
    anchors, positives = _as_list(anchor_features), _as_list(positive_features)
    negatives = None if negative_features is None else _as_list(negative_features)
    if not anchors or len(anchors) != len(positives) or (negatives is not None and len(negatives) != len(anchors)):
        raise ValueError(
            f"anchor, positive (and negative) features must hold the same number (>= 1) of layers, got "
            f"{len(anchors)}, {len(positives)}" + ("" if negatives is None else f" and {len(negatives)}") + "."
        )
    total = anchors[0].new_zeros((), dtype=torch.float32)
    for layer, (a, p) in enumerate(zip(anchors, positives)):
        if a.shape != p.shape:
            raise ValueError(
                f"anchor and positive features must have the same shape, got {tuple(a.shape)} and {tuple(p.shape)}."
            )
        n = a.shape[0]
        a = F.normalize(a.float().reshape(n, -1), dim=1)  # [N, D]
        p = F.normalize(p.float().reshape(n, -1), dim=1)  # [N, D]
        if negatives is None:
            if n < 2:
                raise ValueError(f"without explicit negatives a contrastive term needs >= 2 samples, got {n}.")
            logits = a @ p.T / temperature  # [N, N]: the diagonal holds the positives
        else:
            neg = negatives[layer]
            neg = F.normalize(neg.float().reshape(neg.shape[0], -1), dim=1)  # [M, D]
            if neg.shape[1] != a.shape[1]:
                raise ValueError(f"negative features have {neg.shape[1]} values per sample, anchors {a.shape[1]}.")
            pos = (a * p).sum(dim=1, keepdim=True)  # [N, 1]
            logits = torch.cat([pos, a @ neg.T], dim=1) / temperature  # [N, 1 + M]: column 0 holds the positives
        target = (
            torch.arange(n, device=a.device)
            if negatives is None
            else torch.zeros(n, dtype=torch.long, device=a.device)
        )
        total = total + F.cross_entropy(logits, target)
    return total / len(anchors)


def sample_mixup_coefficients(num_mixes: int, num_anchors: int, generator: torch.Generator) -> torch.Tensor:
    """`[num_mixes, num_anchors]` mixing coefficients, each row drawn from the flat Dirichlet distribution
    `Dirichlet(1, ..., 1)` (normalized standard exponentials), on the CPU from `generator`."""
    u = torch.rand(num_mixes, num_anchors, generator=generator, dtype=torch.float64)
    e = -torch.log1p(-u)  # Exp(1); 1 - u lies in (0, 1]
    return (e / e.sum(dim=1, keepdim=True)).float()


def mix_latents(latents: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Variance-preserving mixes `coefficients @ latents / ||coefficients||` (row-wise): for i.i.d. standard normal
    `latents` [K, D] and fixed coefficient rows [M, K], each mix is again a standard normal latent."""
    c = coefficients.to(latents)
    return (c @ latents) / c.norm(dim=1, keepdim=True)


def mixup_distance_loss(
    anchor_features: torch.Tensor | Sequence[torch.Tensor],
    mix_features: torch.Tensor | Sequence[torch.Tensor],
    coefficients: torch.Tensor,
) -> torch.Tensor:
    r"""
    Mixup-based distance term of MixDL (Kong et al., ECCV 2022), averaged over layers.

    Sample `i` of `mix_features` was made from a mix of the `K` latents of `anchor_features` with coefficients
    `coefficients[i]` (a row summing to 1). Its distribution over the anchors, `q_i = softmax_j(cos(m_i, a_j))`, must
    follow `p_i = softmax_j(coefficients[i, j])`: the loss is the mean over mixes of `KL(p_i || q_i)`. It is positive
    when the generator maps every mix onto the same anchor image (mode collapse: all similarities alike, or the wrong
    anchor nearest), and gradients reach both the mixes' and the anchors' features.

    Args:
        anchor_features (`torch.Tensor` `[K, ...]` or a list of them, one per layer): features of the anchor samples.
        mix_features (`torch.Tensor` `[M, ...]` or a list of them): features of the mixed samples, same layers.
        coefficients (`torch.Tensor` `[M, K]`): the mixing coefficients (rows on the probability simplex).

    Returns:
        `torch.Tensor`: the scalar float32 loss.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.training.diversity import mixup_distance_loss

    >>> anchors = torch.eye(4) * 3.0  # four orthogonal samples
    >>> alpha = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    >>> between = alpha @ anchors  # mixes that look in between, in proportion
    >>> collapsed = anchors[:1].expand(2, 4)  # both mixes snap onto the first anchor
    >>> bool(mixup_distance_loss(anchors, between, alpha) < mixup_distance_loss(anchors, collapsed, alpha))
    True
    ```
    """
    anchors, mixes = _as_list(anchor_features), _as_list(mix_features)
    if not anchors or len(anchors) != len(mixes):
        raise ValueError(
            f"anchor and mix features must hold the same number (>= 1) of layers, got {len(anchors)} and {len(mixes)}."
        )
    total = anchors[0].new_zeros((), dtype=torch.float32)
    for a, m in zip(anchors, mixes):
        k, n = a.shape[0], m.shape[0]
        if coefficients.shape != (n, k):
            raise ValueError(
                f"`coefficients` must have shape (mixes, anchors) = {(n, k)}, got {tuple(coefficients.shape)}."
            )
        if k < 2:
            raise ValueError(f"mixup distances need >= 2 anchors, got {k}.")
        a = F.normalize(a.float().reshape(k, -1), dim=1)
        m = F.normalize(m.float().reshape(n, -1), dim=1)
        if a.shape[1] != m.shape[1]:
            raise ValueError(f"mix features have {m.shape[1]} values per sample, anchors {a.shape[1]}.")
        log_q = F.log_softmax(m @ a.T, dim=1)  # [M, K]
        p = F.softmax(coefficients.float().to(a.device), dim=1)
        total = total + F.kl_div(log_q, p, reduction="batchmean")
    return total / len(anchors)


class PatchDiscriminator(nn.Module):
    """
    A [`MetaGANDiscriminator`] with an extra patch-level head, for CDC's anchor regions (Ojha et al., CVPR 2021).

    The head (3×3 convolution, activation, 1×1 convolution to one channel) reads the output of down block
    `feature_block` of the wrapped discriminator — the default, the second-to-last block, sees 8×8 positions with an
    18-pixel receptive field on a 32×32 image — and gives one logit per position, a map `[N, 1, H_b, W_b]`. The
    blocks above `feature_block` and the image-level head are skipped on patch-level calls. With `patch_level =
    False` the wrapper is the plain image-level discriminator. The head is new (randomly initialized) and lives only
    during adaptation; the discriminator a pipeline returns is the wrapped one.

    Args:
        discriminator (`MetaGANDiscriminator`): the discriminator to share the lower blocks with.
        feature_block (`int`, *optional*): index of the down block whose output the head reads; defaults to
            `num_blocks - 2` (at least 0).
        generator (`torch.Generator`, *optional*): randomness of the head's initialization (PyTorch's default
            convolution initialization), so that adaptation stays reproducible from its seed.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANDiscriminator
    >>> from metagan_hub.training.diversity import PatchDiscriminator

    >>> disc = PatchDiscriminator(MetaGANDiscriminator(sample_size=32), generator=torch.Generator().manual_seed(0))
    >>> images = torch.rand(4, 1, 32, 32) * 2 - 1
    >>> disc(images).logits.shape  # image level: the wrapped discriminator
    torch.Size([4])
    >>> disc.patch_level = True
    >>> disc(images).logits.shape  # one logit per position of an 8x8 feature map
    torch.Size([4, 1, 8, 8])
    ```
    """

    def __init__(
        self,
        discriminator: MetaGANDiscriminator,
        feature_block: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        num_blocks = discriminator.num_blocks
        if feature_block is None:
            feature_block = max(num_blocks - 2, 0)
        if (
            isinstance(feature_block, bool)
            or not isinstance(feature_block, int)
            or not 0 <= feature_block < num_blocks
        ):
            raise ValueError(f"`feature_block` must be an integer in [0, {num_blocks}), got {feature_block!r}.")
        self.discriminator = discriminator
        self.feature_block = feature_block
        channels = list(discriminator.config.block_out_channels[1:]) + [discriminator.config.block_out_channels[-1]]
        c = channels[feature_block]
        self.patch_head = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1), make_activation(discriminator.config.act_fn), nn.Conv2d(c, 1, 1)
        )
        self.patch_level = False
        for conv in (self.patch_head[0], self.patch_head[2]):  # nn.Conv2d.reset_parameters, drawn from `generator`
            nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(conv.weight[0].numel())
            nn.init.uniform_(conv.bias, -bound, bound, generator=generator)

    def forward(
        self, sample: torch.Tensor, return_dict: bool = True, num_batches: int = 1, return_features: bool = False
    ) -> MetaGANDiscriminatorOutput | tuple:
        if not self.patch_level:
            return self.discriminator(
                sample, return_dict=return_dict, num_batches=num_batches, return_features=return_features
            )
        d = self.discriminator
        x = d.act(d.conv_in(sample.to(d.conv_in.weight.dtype)))  # [N, C0, S, S]
        for block in d.blocks[: self.feature_block + 1]:
            x = block(x)  # [N, C_b, H_b, W_b]
        logits = self.patch_head(x)  # [N, 1, H_b, W_b]: one logit per position (a PatchGAN map)
        if not return_dict:
            return (logits,)
        return MetaGANDiscriminatorOutput(logits=logits)


class DiversityRegularizer:
    """
    The diversity term of one `adapt()` call: holds the frozen source generator (never copied per step) and adds the
    chosen method's loss to the generator update (and, for DCL, to the discriminator update). Used through
    [`~metagan_hub.training.gan_step.GANStepConfig`] (`generator_regularizer` / `discriminator_regularizer`).

    Args:
        method (`str`): `"cdc"`, `"dcl"` or `"mixdl"`.
        source_generator (`torch.nn.Module` or `None`): the frozen starting generator; only run under
            `torch.no_grad()`. `"mixdl"` does not use it (`None` is fine).
        weight (`float`): weight of the term(s) in the generator (and discriminator) loss.
        temperature (`float`, *optional*): softmax temperature (CDC: 1.0, DCL: 0.07 by default).
        discriminator_interval (`int`, defaults to 1): DCL's discriminator-side term is computed only on steps whose
            index is a multiple of this, weighted by it (lazy regularization, as lazy R1 in StyleGAN2: the same
            average strength for a fraction of the cost); `adapt()` passes its `r1_interval`.
        generator_interval (`int`, defaults to 1): the generator-side term runs only on generator updates whose step
            index is a multiple of this ([`applies_to_generator`]), weighted by it (the same lazy scheme); `adapt()`
            passes its `diversity_interval`. MixDL then also draws its mixes only on those steps.

    Example:

    ```py
    >>> import copy
    >>> import torch
    >>> from metagan_hub import MetaGANGenerator
    >>> from metagan_hub.training.diversity import DiversityRegularizer

    >>> source = MetaGANGenerator(latent_dim=16, sample_size=16, block_out_channels=(16, 8))
    >>> adapted = copy.deepcopy(source)
    >>> cdc = DiversityRegularizer("cdc", source, weight=100.0)
    >>> z = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    >>> loss, logs = cdc.generator_term(z, adapted(z, return_features=True).features)
    >>> float(loss.detach()) < 1e-3, sorted(logs)  # the adapted copy still equals the source (up to rounding)
    (True, ['cdc_g'])
    ```
    """

    def __init__(
        self,
        method: str,
        source_generator: nn.Module | None,
        weight: float,
        temperature: float | None = None,
        discriminator_interval: int = 1,
        generator_interval: int = 1,
    ) -> None:
        if method not in DIVERSITY_LOSSES:
            raise ValueError(f"`method` must be one of {DIVERSITY_LOSSES}, got {method!r}.")
        if source_generator is None and method != "mixdl":
            raise ValueError(f"diversity method {method!r} needs the frozen source generator, got None.")
        self.method = method
        self.source = source_generator
        self._coefficients: torch.Tensor | None = None  # MixDL: the mixing coefficients of the last latents drawn
        self.weight = float(weight)
        self.temperature = (1.0 if method == "cdc" else DCL_TEMPERATURE) if temperature is None else temperature
        self.discriminator_interval = check_positive_int("discriminator_interval", discriminator_interval)
        self.generator_interval = check_positive_int("generator_interval", generator_interval)

    def applies_to_generator(self, step: int) -> bool:
        """Whether the generator-side term runs on the generator update of step `step` (every `generator_interval`-th
        step, from step 0)."""
        return step % self.generator_interval == 0

    @torch.no_grad()
    def source_output(self, latents: torch.Tensor):
        return self.source(latents, return_features=True)

    def generator_latents(self, batch_size: int, latent_dim: int, generator: torch.Generator) -> torch.Tensor:
        """The latents of a generator update (on the CPU, from `generator`): `batch_size` standard normal ones, and
        for `"mixdl"` also `batch_size` variance-preserving mixes of them ([`mix_latents`]), `2 * batch_size` in all;
        the mixing coefficients are kept for the following [`generator_term`]."""
        z = torch.randn(batch_size, latent_dim, generator=generator)
        if self.method != "mixdl":
            return z
        self._coefficients = sample_mixup_coefficients(batch_size, batch_size, generator)
        return torch.cat([z, mix_latents(z, self._coefficients)])

    def generator_term(self, latents: torch.Tensor, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """`weight * generator_interval *` the generator-side loss for the adapted generator's block `features` of
        `latents` (for `"mixdl"`, latents from [`generator_latents`]: anchors, then their mixes). The caller runs it
        only on the steps of [`applies_to_generator`]."""
        if self.method == "mixdl":
            c = self._coefficients
            if c is None or latents.shape[0] != 2 * c.shape[0]:
                raise ValueError(
                    "diversity_loss='mixdl' scores latents drawn by `generator_latents` (anchors, then their mixes); "
                    f"got {latents.shape[0]} latents for {0 if c is None else c.shape[0]} mixes."
                )
            k = c.shape[0]
            loss = mixup_distance_loss([f[:k] for f in features], [f[k:] for f in features], c)
            return self.weight * self.generator_interval * loss, {"mixdl_g": loss.item()}
        source = self.source_output(latents).features
        if self.method == "cdc":
            loss = pairwise_similarity_consistency_loss(source, features, temperature=self.temperature)
        else:
            loss = contrastive_correspondence_loss(features, source, temperature=self.temperature)
        return self.weight * self.generator_interval * loss, {f"{self.method}_g": loss.item()}

    def discriminator_term(
        self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, latents: torch.Tensor, step: int = 0
    ) -> tuple[torch.Tensor, dict]:
        """DCL's discriminator side: `weight *` InfoNCE over the discriminator's block outputs, anchors `D(fake)`,
        positives `D(G_source(latents))` (same latents as `fake`), negatives `D(real)`. Computed (and weighted by
        `discriminator_interval`) only when `step` is a multiple of `discriminator_interval`; zero otherwise."""
        interval = self.discriminator_interval
        if step % interval:
            return fake.new_zeros((), dtype=torch.float32), {}
        source_images = self.source_output(latents).sample.to(fake.dtype)
        n, m = fake.shape[0], real.shape[0]
        x = torch.cat([fake.detach(), source_images, real.to(fake.dtype)])  # [2N + M, C, H, W]
        if real.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        features = discriminator(x, return_features=True).features
        anchors = [f[:n] for f in features]
        positives = [f[n : 2 * n] for f in features]
        negatives = [f[2 * n : 2 * n + m] for f in features]
        loss = contrastive_correspondence_loss(anchors, positives, negatives, temperature=self.temperature)
        return self.weight * interval * loss, {"dcl_d": loss.item()}


def sample_anchor_latents(
    anchors: torch.Tensor, batch_size: int, generator: torch.Generator, std: float = CDC_ANCHOR_STD
) -> torch.Tensor:
    """`batch_size` latents near the anchor latents `[K, latent_dim]` (CDC's anchor regions): distinct anchors while
    `batch_size <= K`, each plus Gaussian noise of standard deviation `std`. Drawn on the CPU from `generator`."""
    k = anchors.shape[0]
    if batch_size <= k:
        idx = torch.randperm(k, generator=generator)[:batch_size]
    else:
        idx = torch.randint(0, k, (batch_size,), generator=generator)
    return anchors[idx] + std * torch.randn(batch_size, anchors.shape[1], generator=generator)


# adapt(..., shot_reconstruction_weight=w): every shot is tied to the latent, among SHOT_ANCHOR_CANDIDATES standard
# normal draws, whose image under the starting generator is nearest it in pixels; each generator update then adds w
# times the mean absolute pixel difference between the generator's image of those latents and their shots, for up to
# SHOT_ANCHOR_BATCH shots (all of the usual 5-8, else a window that moves on by that many shots per update).
SHOT_ANCHOR_CANDIDATES = 512
SHOT_ANCHOR_BATCH = 8


def shot_anchor_latents(
    generator_model: nn.Module,
    shots: torch.Tensor,
    generator: torch.Generator,
    num_candidates: int = SHOT_ANCHOR_CANDIDATES,
    chunk_size: int = 128,
) -> torch.Tensor:
    """
    One latent per shot: of `max(num_candidates, K)` standard normal draws (on the CPU, from `generator`), the one
    whose image under `generator_model` is nearest the shot (Euclidean distance in pixels), each draw tied to at most
    one shot, the closest pairs first. `shots`: `[K, C, H, W]` in `[-1, 1]`, on the model's device. Runs without
    autograd; returns float32 latents `[K, latent_dim]` on the shots' device.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANGenerator
    >>> from metagan_hub.training.diversity import shot_anchor_latents

    >>> model = MetaGANGenerator(latent_dim=16, sample_size=16, block_out_channels=(16, 8))
    >>> shots = torch.rand(3, 1, 16, 16) * 2 - 1
    >>> shot_anchor_latents(model, shots, torch.Generator().manual_seed(0), num_candidates=64).shape
    torch.Size([3, 16])
    ```
    """
    num_shots = shots.shape[0]
    latent_dim = generator_model.config.latent_dim
    candidates = torch.randn(max(num_candidates, num_shots), latent_dim, generator=generator)
    with torch.no_grad():  # (the generator casts latents to its compute dtype itself)
        images = torch.cat([generator_model(z.to(shots.device)).sample.float() for z in candidates.split(chunk_size)])
        distance = torch.cdist(shots.float().flatten(1), images.flatten(1)).cpu()  # [K, n]
    chosen = torch.empty(num_shots, dtype=torch.long)
    for _ in range(num_shots):  # the closest pair left, then neither its shot nor its draw again
        flat = int(distance.argmin())
        shot, draw = divmod(flat, distance.shape[1])
        chosen[shot] = draw
        distance[shot, :] = math.inf
        distance[:, draw] = math.inf
    return candidates[chosen].to(shots.device)  # [K, latent_dim]


class ShotReconstruction:
    """
    The shot reconstruction term of `adapt(..., shot_reconstruction_weight=...)`: `weight` times the mean absolute
    pixel difference between the generator's images of the shot latents `anchors` `[K, latent_dim]` (see
    [`shot_anchor_latents`]) and their `shots` `[K, C, H, W]`. Each generator update draws the images of
    [`latents`] in the same forward pass as its own batch and hands them to [`term`]: all `K` shots when `K <=
    batch_size`, else a window of `batch_size` shots that moves on by that many per update (wrapping around), so that
    successive updates cover every shot. Zero when the generator reproduces the shots.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANGenerator
    >>> from metagan_hub.training.diversity import ShotReconstruction

    >>> model = MetaGANGenerator(latent_dim=16, sample_size=16, block_out_channels=(16, 8))
    >>> anchors = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    >>> with torch.no_grad():
    ...     own_images = model(anchors).sample
    >>> reconstruction = ShotReconstruction(anchors, own_images, weight=30.0)
    >>> loss, logs = reconstruction.term(model(reconstruction.latents()).sample)
    >>> float(loss.detach()) < 1e-4, sorted(logs)  # the generator draws the shots (up to rounding)
    (True, ['shot_reconstruction'])
    ```
    """

    def __init__(
        self, anchors: torch.Tensor, shots: torch.Tensor, weight: float, batch_size: int = SHOT_ANCHOR_BATCH
    ) -> None:
        self.anchors, self.shots, self.weight, self.batch_size = anchors, shots, weight, batch_size
        self.updates = 0  # generator updates so far: where the window of shots stands

    def _window(self) -> torch.Tensor:
        """This update's shot indices: all of them in order, or the moving window."""
        num_shots = self.shots.shape[0]
        offset = self.updates * self.batch_size if num_shots > self.batch_size else 0
        index = (torch.arange(min(num_shots, self.batch_size)) + offset) % num_shots
        return index.to(self.shots.device)

    def latents(self) -> torch.Tensor:
        """The latents `[M, latent_dim]` whose images this update's [`term`] takes."""
        return self.anchors[self._window()]

    def term(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """`(weight * loss, logs)` for the generator's `images` of [`latents`] (with gradient to the generator);
        moves the window on to the next update's shots."""
        loss = (images.float() - self.shots[self._window()].float()).abs().mean()
        self.updates += 1
        return self.weight * loss, {"shot_reconstruction": float(loss.detach())}
