# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""
GAN losses shared by meta-training and few-shot adaptation.

Three formulations are available (`LOSS_TYPES`):

- `"nonsaturating"`: the non-saturating logistic loss of Goodfellow et al. (2014), with an optional R1 penalty
  (Mescheder et al. 2018) on real images.
- `"hinge"`: the hinge loss of Lim & Ye (2017) / Miyato et al. (2018), with the same optional R1 penalty.
- `"wgan-gp"`: the Wasserstein loss with gradient penalty (Gulrajani et al. 2017), as used by FIGR, plus a small
  drift term (Karras et al. 2018) that keeps the critic's outputs near zero.

All losses are means over the batch. Discriminator outputs are cast to float32 before the loss, and gradient penalties
take the norm of a float32 gradient, so the losses can be computed inside `torch.autocast` (bf16 or fp16).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

LOSS_TYPES = ("nonsaturating", "hinge", "wgan-gp")

# Weight of the drift term `mean(D(real)^2)` of the WGAN-GP critic loss (ProGAN's epsilon_drift). It keeps critic
# outputs from wandering off (which meta-learning, with its many short inner loops, is prone to, and which costs
# precision in bf16) while barely changing the critic's gradient.
WGAN_DRIFT = 1e-3


def _check_loss_type(loss_type: str) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"`loss_type` must be one of {LOSS_TYPES}, got {loss_type!r}.")


def _logits(discriminator: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Run the discriminator and return float32 logits of shape `[N]`, or `[N, h * w]` for a patch-level (PatchGAN)
    discriminator that returns a map of logits `[N, 1, h, w]` (the losses then average over images and patches)."""
    out = discriminator(x)
    n = x.shape[0]
    if out.ndim == 4 and out.shape[0] == n and out.shape[1] == 1:
        return out.flatten(1).float()  # [N, h * w]
    if out.numel() != n or out.shape[0] != n:
        raise ValueError(
            f"`discriminator` must return one logit per image (shape [{n}]) or a patch map (shape [{n}, 1, h, w]) "
            f"for a batch of shape {tuple(x.shape)}, got shape {tuple(out.shape)}."
        )
    return out.reshape(n).float()  # [N]


def _input_grad(outputs: torch.Tensor, inputs: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Per-sample gradient `d sum(outputs) / d inputs_i` as float32, flattened to `[N, C*H*W]`."""
    (grad,) = torch.autograd.grad(outputs.float().sum(), inputs, create_graph=create_graph, allow_unused=True)
    if grad is None:  # the discriminator ignores its input
        grad = torch.zeros_like(inputs)
    return grad.float().flatten(1)  # [N, C*H*W]


def _augment(augment: Callable | None, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return x if augment is None else augment(x, generator=generator)


def discriminator_loss(
    loss_type: str,
    discriminator: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    r1_gamma: float = 0.0,
    gp_lambda: float = 10.0,
    augment: Callable | None = None,
    generator: torch.Generator | None = None,
    wgan_drift: float = WGAN_DRIFT,
    joint_forward: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""
    Discriminator (critic) loss for one batch of real and generated images.

    Random numbers are drawn from `generator` in a fixed order (augmentation of `real`, augmentation of `fake`, then
    the WGAN-GP interpolation weights), so the loss is deterministic given the generator's state.

    - `"nonsaturating"`: `mean(softplus(-D(real))) + mean(softplus(D(fake)))` + R1.
    - `"hinge"`: `mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))` + R1.
    - `"wgan-gp"`: `mean(D(fake)) - mean(D(real)) + gp_lambda * mean((||∇D(x̂)|| - 1)^2) + wgan_drift *
      mean(D(real)^2)`, where `x̂ = real + u (fake - real)` with one `u ~ U(0, 1)` per image; `real` and `fake` must
      then have the same batch size. `r1_gamma` is ignored (the gradient penalty plays its role).

    R1 is `r1_gamma / 2 * mean(||∇_x D(x)||^2)` on the (augmented) real images, i.e. on exactly what the discriminator
    saw; it is built with `create_graph=True` so it trains the discriminator. With augmentation, the WGAN-GP
    interpolation is between the augmented real and the augmented fake images. Gradient norms are computed in
    float32, so this works inside `torch.autocast`.

    Args:
        loss_type (`str`):
            One of `LOSS_TYPES`: `"nonsaturating"`, `"hinge"`, `"wgan-gp"`.
        discriminator (`Callable[[torch.Tensor], torch.Tensor]`):
            Maps images `[N, C, H, W]` to logits `[N]` (higher means "more real").
        real (`torch.Tensor` of shape `(N, C, H, W)`):
            Real images in `[-1, 1]`.
        fake (`torch.Tensor` of shape `(M, C, H, W)`):
            Generated images; detached here, so the generator gets no gradient from this loss.
        r1_gamma (`float`, *optional*, defaults to 0.0):
            R1 weight for `"nonsaturating"` and `"hinge"`; 0 disables it.
        gp_lambda (`float`, *optional*, defaults to 10.0):
            Gradient-penalty weight for `"wgan-gp"`.
        augment (`Callable`, *optional*):
            Called as `augment(x, generator=generator)` on real and on fake images before the discriminator, e.g. a
            [`~metagan_hub.training.augment.DiffAugment`].
        generator (`torch.Generator`, *optional*):
            Randomness of the augmentation and of the WGAN-GP interpolation weights; must live on `real.device`.
        wgan_drift (`float`, *optional*, defaults to `WGAN_DRIFT` = 1e-3):
            Weight of the drift term of `"wgan-gp"`; 0 gives the plain WGAN-GP critic loss.
        joint_forward (`bool`, *optional*, defaults to `False`):
            Score real and fake images in one call, `discriminator(torch.cat([real, fake]), num_batches=2)`, instead
            of two (fewer, larger kernels: faster for the small batches of few-shot training). Used only when `real`
            and `fake` have the same batch size and no R1 penalty is computed in this call (R1 needs its own graph
            through the real images). The discriminator must score the two halves independently, as
            [`~metagan_hub.MetaGANDiscriminator`] does with `num_batches=2`; the loss is then the same as with two
            calls, up to floating-point rounding.

    Returns:
        `(loss, logs)`: the scalar float32 loss, and the python floats `d_loss`, `d_real` and `d_fake` (mean logits on
        real and fake), and `r1` (the weighted R1 term; 0 when disabled) or `gp` (the weighted gradient penalty).

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.training.augment import DiffAugment
    >>> from metagan_hub.training.losses import discriminator_loss

    >>> disc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1 * 8 * 8, 1), torch.nn.Flatten(0))
    >>> real, fake = torch.rand(4, 1, 8, 8) * 2 - 1, torch.rand(4, 1, 8, 8) * 2 - 1
    >>> loss, logs = discriminator_loss(
    ...     "wgan-gp", disc, real, fake, augment=DiffAugment(), generator=torch.Generator().manual_seed(0)
    ... )
    >>> loss.backward()
    >>> sorted(logs)
    ['d_fake', 'd_loss', 'd_real', 'gp']
    ```
    """
    _check_loss_type(loss_type)
    if r1_gamma < 0:
        raise ValueError(f"`r1_gamma` must be >= 0, got {r1_gamma!r}.")
    if gp_lambda < 0:
        raise ValueError(f"`gp_lambda` must be >= 0, got {gp_lambda!r}.")
    if wgan_drift < 0:
        raise ValueError(f"`wgan_drift` must be >= 0, got {wgan_drift!r}.")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"`real` and `fake` must have the same image shape, got {tuple(real.shape)} and {tuple(fake.shape)}."
        )
    if loss_type == "wgan-gp" and real.shape[0] != fake.shape[0]:
        raise ValueError(
            f"`wgan-gp` interpolates real and fake pairwise: `real` and `fake` need the same batch size, got "
            f"{real.shape[0]} and {fake.shape[0]}."
        )

    # Penalties need input gradients even when the caller disabled autograd (e.g. for evaluation); they then only
    # report their value.
    track = torch.is_grad_enabled()
    use_r1 = loss_type != "wgan-gp" and r1_gamma > 0

    # 1. augment (real first, then fake: the order fixes the random stream)
    x_real = _augment(augment, real.detach(), generator)  # [N, C, H, W]
    x_fake = _augment(augment, fake.detach(), generator)  # [M, C, H, W]

    # 2. discriminator on real (with input gradients for R1) and fake
    if use_r1:
        with torch.enable_grad():
            x_real = x_real.detach().requires_grad_(True)
            d_real = _logits(discriminator, x_real)  # [N]
            r1_sq = _input_grad(d_real, x_real, create_graph=track).square().sum(dim=1)  # [N]
        d_fake = _logits(discriminator, x_fake)  # [M]
    elif joint_forward and x_real.shape[0] == x_fake.shape[0]:
        x_both = torch.cat([x_real, x_fake.to(x_real.dtype)])  # [2N, C, H, W]
        if x_real.ndim == 4 and x_real.is_contiguous(memory_format=torch.channels_last):
            # keep the training loop's channels_last layout (a cat of mixed layouts would fall back to NCHW, which
            # made the joint call slower than two separate ones)
            x_both = x_both.contiguous(memory_format=torch.channels_last)
        d_real, d_fake = _logits(lambda x: discriminator(x, num_batches=2), x_both).chunk(2)  # [N], [N]
    else:
        d_real = _logits(discriminator, x_real)  # [N]
        d_fake = _logits(discriminator, x_fake)  # [M]

    # 3. adversarial loss and regularizer
    if loss_type == "nonsaturating":
        adv = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    elif loss_type == "hinge":
        adv = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    else:
        adv = d_fake.mean() - d_real.mean()

    if loss_type == "wgan-gp":
        n = x_real.shape[0]
        u = torch.rand(n, generator=generator, device=x_real.device, dtype=torch.float32)  # [N]
        u = u.view(n, *([1] * (x_real.ndim - 1)))  # [N, 1, 1, 1]
        with torch.enable_grad():
            dtype = torch.promote_types(x_real.dtype, x_fake.dtype)
            x_hat = torch.lerp(x_real.detach().to(dtype), x_fake.detach().to(dtype), u.to(dtype))  # [N, C, H, W]
            x_hat.requires_grad_(True)
            grad = _input_grad(_logits(discriminator, x_hat), x_hat, create_graph=track)  # [N, C*H*W]
            grad_norm = torch.linalg.vector_norm(grad, dim=1)  # [N]
            reg = gp_lambda * (grad_norm - 1.0).square().mean()
        if wgan_drift > 0:
            adv = adv + wgan_drift * d_real.square().mean()
        reg_name = "gp"
    else:
        reg = r1_gamma / 2 * r1_sq.mean() if use_r1 else adv.new_zeros(())
        reg_name = "r1"
    loss = adv + reg
    if not track:
        loss = loss.detach()
    values = torch.stack([loss.detach(), d_real.detach().mean(), d_fake.detach().mean(), reg.detach()]).tolist()
    logs = dict(zip(("d_loss", "d_real", "d_fake", reg_name), values))
    return loss, logs


def generator_loss(
    loss_type: str,
    discriminator: Callable[[torch.Tensor], torch.Tensor],
    fake: torch.Tensor,
    *,
    augment: Callable | None = None,
    generator: torch.Generator | None = None,
    latents: torch.Tensor | None = None,
    mode_seeking_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""
    Generator loss for one batch of generated images (gradients flow into `fake`).

    - `"nonsaturating"`: `mean(softplus(-D(fake)))`.
    - `"hinge"` and `"wgan-gp"`: `-mean(D(fake))`.

    With `mode_seeking_weight > 0`, `mode_seeking_weight * mode_seeking_loss(fake, latents)` is added (see
    [`mode_seeking_loss`]).

    Args:
        loss_type (`str`):
            One of `LOSS_TYPES`.
        discriminator (`Callable[[torch.Tensor], torch.Tensor]`):
            Maps images `[N, C, H, W]` to logits `[N]`. Freeze its parameters (or zero their gradients) before
            stepping if only the generator should be updated.
        fake (`torch.Tensor` of shape `(N, C, H, W)`):
            Generated images, attached to the generator's graph.
        augment (`Callable`, *optional*):
            Called as `augment(fake, generator=generator)` before the discriminator (the same DiffAugment as in the
            discriminator step).
        generator (`torch.Generator`, *optional*):
            Randomness of the augmentation; must live on `fake.device`.
        latents (`torch.Tensor` of shape `(N, latent_dim)`, *optional*):
            The latents `fake` was generated from; needed when `mode_seeking_weight > 0`.
        mode_seeking_weight (`float`, *optional*, defaults to 0):
            Weight of the mode-seeking regularizer (0: off).

    Returns:
        `(loss, logs)`: the scalar float32 loss and `{"g_loss": float}` (the adversarial part), plus `"ms_loss"`
        (the unweighted regularizer) when it is on.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.training.losses import generator_loss

    >>> disc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1 * 8 * 8, 1), torch.nn.Flatten(0))
    >>> fake = (torch.rand(4, 1, 8, 8) * 2 - 1).requires_grad_(True)
    >>> loss, logs = generator_loss("nonsaturating", disc, fake)
    >>> loss.backward()
    >>> fake.grad.shape
    torch.Size([4, 1, 8, 8])
    ```
    """
    _check_loss_type(loss_type)
    d_fake = _logits(discriminator, _augment(augment, fake, generator))  # [N]
    if loss_type == "nonsaturating":
        loss = F.softplus(-d_fake).mean()
    else:
        loss = -d_fake.mean()
    logs = {"g_loss": loss.item()}
    if mode_seeking_weight > 0:
        if latents is None:
            raise ValueError("generator_loss: `mode_seeking_weight` > 0 needs the `latents` of `fake`.")
        ms_loss, ms_logs = mode_seeking_loss(fake, latents)
        loss = loss + mode_seeking_weight * ms_loss
        logs.update(ms_logs)
    return loss, logs


def mode_seeking_loss(
    fake: torch.Tensor, latents: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""
    Mode-seeking regularizer of MSGAN (Mao et al., CVPR 2019), added to a generator loss against mode collapse.

    The batch is split into pairs (sample `i` with sample `i + N // 2`; an odd last sample is left out) and the
    loss is `1 / (mean |G(z1) - G(z2)| / mean |z1 - z2| + eps)`: it falls as images from different latents move apart
    relative to the latents, so a generator that maps every latent to the same few images pays for it. Weighted
    by `mode_seeking_weight` in [`~metagan_hub.training.gan_step.GANStepConfig`] and
    [`~metagan_hub.training.meta_learning.MetaLearningConfig`].

    Args:
        fake (`torch.Tensor` of shape `(N, C, H, W)`):
            Generated images, attached to the generator's graph; `N >= 2`.
        latents (`torch.Tensor` of shape `(N, latent_dim)`):
            The latents they were generated from.
        eps (`float`, defaults to 1e-5):
            Keeps the loss finite when a pair's images are identical.

    Returns:
        `(loss, logs)`: the scalar float32 loss and `{"ms_loss": float}`.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.training.losses import mode_seeking_loss

    >>> z = torch.randn(4, 8)
    >>> same = torch.zeros(4, 1, 8, 8)
    >>> apart = torch.stack([torch.full((1, 8, 8), float(v)) for v in (-1, -0.5, 0.5, 1)])
    >>> mode_seeking_loss(same, z)[0] > mode_seeking_loss(apart, z)[0]
    tensor(True)
    ```
    """
    n = fake.shape[0]
    if n < 2 or latents.shape[0] != n:
        raise ValueError(
            f"mode_seeking_loss needs at least 2 images and one latent per image, got {n} images and "
            f"{latents.shape[0]} latents."
        )
    half = n // 2
    fake = fake.float()
    latents = latents.float()
    image_distance = (fake[:half] - fake[half : 2 * half]).abs().mean()
    latent_distance = (latents[:half] - latents[half : 2 * half]).abs().mean()
    loss = 1.0 / (image_distance / latent_distance + eps)
    return loss, {"ms_loss": loss.item()}


def coverage_loss(
    fake: torch.Tensor,
    targets: torch.Tensor,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""
    Coverage of target images by generated ones, as in implicit maximum likelihood estimation (IMLE, Li & Malik,
    2018): every target picks its nearest generated image (mean squared pixel difference) and the loss is the mean of
    those distances. It falls only when *each* target has a sample close by, so a generator that puts all its samples
    near a few of the targets pays for the others; gradients reach only the chosen samples. Used with held-out
    (query) images of a task as [`~metagan_hub.training.meta_learning.MetaLearningConfig`]'s
    `query_coverage_weight`, it rewards meta-weights whose adapted generators cover images of the class that the
    inner loop never saw (what the benchmark's recall measures).

    With `features`, distances are measured in a feature space instead of pixels: both batches are mapped by
    `features` (a frozen network, e.g. the penultimate layer of a classifier), each vector is scaled to unit length,
    and the distance is the squared difference of the unit vectors (`2 - 2 cos`), so that "near" means "looks like
    the same kind of image" rather than "has the same pixels". The targets' features carry no gradient; the samples'
    gradient flows through `features` to the generator.

    Args:
        fake (`torch.Tensor` of shape `(N, C, H, W)`):
            Generated images, attached to the generator's graph; `N >= 1`.
        targets (`torch.Tensor` of shape `(M, C, H, W)`):
            The images to cover (no gradient flows to them); `M >= 1`.
        features (`Callable`, *optional*):
            Maps an image batch `(B, C, H, W)` to feature vectors `(B, F)`; `None` (default) compares pixels.

    Returns:
        `(loss, logs)`: the scalar float32 loss and `{"coverage_loss": float}`.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.training.losses import coverage_loss

    >>> targets = torch.stack([torch.full((1, 4, 4), v) for v in (-1.0, 1.0)])
    >>> one_mode = torch.full((3, 1, 4, 4), -1.0)  # every sample on the first target
    >>> both = torch.stack([torch.full((1, 4, 4), v) for v in (-1.0, 1.0, 0.0)])
    >>> coverage_loss(one_mode, targets)[0].item(), coverage_loss(both, targets)[0].item()
    (2.0, 0.0)
    ```
    """
    if fake.ndim != 4 or targets.ndim != 4 or fake.shape[1:] != targets.shape[1:]:
        raise ValueError(
            f"coverage_loss needs two image batches of the same (C, H, W), got {tuple(fake.shape)} and "
            f"{tuple(targets.shape)}."
        )
    if fake.shape[0] < 1 or targets.shape[0] < 1:
        raise ValueError(
            f"coverage_loss needs at least one generated and one target image, got {fake.shape[0]} and "
            f"{targets.shape[0]}."
        )
    if features is None:
        fake = fake.float().flatten(1)  # [N, D]
        targets = targets.detach().float().flatten(1)  # [M, D]
        distances = torch.cdist(targets, fake).pow(2) / fake.shape[1]  # [M, N] mean squared difference
    else:
        fake = F.normalize(features(fake.float()).float().flatten(1), dim=1)  # [N, F] unit vectors
        with torch.no_grad():
            targets = F.normalize(features(targets.detach().float()).float().flatten(1), dim=1)  # [M, F]
        distances = (2.0 - 2.0 * targets @ fake.T).clamp_min(0.0)  # [M, N] squared distance of unit vectors
    loss = distances.min(dim=1).values.mean()
    return loss, {"coverage_loss": loss.item()}


def _offdiagonal_cosine(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine similarity of each sample of `x` `[N, ...]` to every other one, over `temperature`: `[N, N - 1]`."""
    n = x.shape[0]
    x = F.normalize(x.float().reshape(n, -1), dim=1)  # [N, D]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return (x @ x.T)[off_diagonal].reshape(n, n - 1) / temperature


def pairwise_similarity_consistency_loss(
    source_features: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...],
    adapted_features: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...],
    temperature: float = 1.0,
) -> torch.Tensor:
    r"""
    Relative-distance consistency between a frozen source model and the model being adapted, the term of
    cross-domain correspondence (CDC, Ojha et al., CVPR 2021) and of DomainStudio (Zhu et al., 2024).

    For a batch of `N` samples made from the *same* inputs by both models, each sample `i` gets a distribution over
    the other samples, `softmax_j≠i(cos(f_i, f_j) / temperature)`, in the source model's features (`p_i`) and in the
    adapted model's (`q_i`). The loss is the mean over samples (and over layers, when lists are given) of
    `KL(p_i || q_i)`: zero when the adapted model keeps the source's similarity structure, positive when samples that
    were different in the source collapse together. Gradients reach only `adapted_features`; the source side is
    detached.

    Args:
        source_features (`torch.Tensor` `[N, ...]` or a list of them):
            Features of the frozen source model (images, intermediate activations or denoised predictions), one
            tensor per layer.
        adapted_features (`torch.Tensor` `[N, ...]` or a list of them):
            The adapted model's features for the same inputs, with the same shapes as `source_features`.
        temperature (`float`, defaults to 1.0):
            Softmax temperature of the similarity distributions; positive and finite.

    Returns:
        `torch.Tensor`: the scalar float32 loss.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.training.losses import pairwise_similarity_consistency_loss

    >>> source = torch.randn(8, 16)
    >>> float(pairwise_similarity_consistency_loss(source, source.clone()))
    0.0
    >>> bool(pairwise_similarity_consistency_loss(source, source[:1].expand(8, 16) + 0.1 * source) > 0)
    True
    ```
    """
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 < temperature < float("inf"):
        raise ValueError(f"`temperature` must be a positive finite number, got {temperature!r}.")
    if isinstance(source_features, torch.Tensor):
        source_features = [source_features]
    if isinstance(adapted_features, torch.Tensor):
        adapted_features = [adapted_features]
    source_features, adapted_features = list(source_features), list(adapted_features)
    if len(source_features) != len(adapted_features) or not source_features:
        raise ValueError(
            f"`source_features` and `adapted_features` must hold the same number (>= 1) of feature tensors, got "
            f"{len(source_features)} and {len(adapted_features)}."
        )
    total = None
    for src, ada in zip(source_features, adapted_features):
        if src.shape != ada.shape:
            raise ValueError(
                f"source and adapted features must have the same shape, got {tuple(src.shape)} and {tuple(ada.shape)}."
            )
        n = src.shape[0]
        if n < 3:
            raise ValueError(
                f"a pairwise similarity term needs a batch of at least 3 samples (each sample is compared with at "
                f"least 2 others), got {n}."
            )
        log_p = F.log_softmax(_offdiagonal_cosine(src.detach(), temperature), dim=1)  # [N, N - 1]
        log_q = F.log_softmax(_offdiagonal_cosine(ada, temperature), dim=1)
        layer_loss = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)  # KL(p || q)
        total = layer_loss if total is None else total + layer_loss
    return total / len(source_features)
