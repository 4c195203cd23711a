# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Near-copy filter: find generated images that sit closer to one of a few reference images (the shots a pipeline
was adapted on) than those images sit to each other, judged in the features of the pipeline's copy encoder (a small
frozen image classifier trained on the start's training classes) when it has one, else in the adapted
discriminator's features."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..models.layers import check_positive_float, check_positive_int

# The feature space: the second-to-last down block's output of the discriminator (128x8x8 for a 32x32 model),
# average-pooled over 2x2 cells and scaled to unit length, so distances compare patterns, not activation strength.
# Of the spaces probed on held-out classes (each block, pooled or not, L2 or cosine, the unadapted discriminator,
# pixels) it told the evaluation classifier's copies from the other samples best on kanji and font glyphs, and within
# 0.02 of the best on digits (ROC AUC; the bundled model's experiment log).
COPY_FILTER_BLOCK = -2
COPY_FILTER_POOL = 2
# At most this many latents per requested image are drawn in all before the filter gives up on replacing copies.
MAX_DRAWS_PER_IMAGE = 4
# In a batch of at least COPY_CAP_MIN_BATCH images, at most this fraction counts as near-copies: the closest ones.
# Where a generator's samples sit within the shots' own spacing (digits), the distance rule alone flagged 27-31% of
# the samples against 1-2% copies by the evaluation classifier; on kanji the cap also drops flags that were not copies
# (held-out classes, the bundled model's experiment log). The pipeline's `max_copy_share` sets it per call; this is
# its default.
COPY_CAP_FRACTION = 0.2
COPY_CAP_MIN_BATCH = 20
# A gate in front of the discriminator pass, which costs about as much arithmetic as generating the image: in a batch
# of at least COPY_CAP_MIN_BATCH images only the COPY_GATE_FRACTION nearest a reference image in the discriminator's
# input features (its first convolution, 4x4-pooled, unit length; under 1% of the pass) go through the pass, and later
# draws only when they are no farther than that batch's cut; the others count as far. Twice the cap, so that the cap's
# closest fifth fits (with a larger `max_copy_share`, twice that share). Replayed on 800 draws per held-out class
# (30 kanji, 10 font-glyph, 10 digit classes), the gated test kept the same copy rates as the ungated one (within
# 0.001 at margins 1 and 1.25) with 0.45-0.50 passes per requested image instead of 1.1-1.2 (the bundled model's
# experiment log).
COPY_GATE_FRACTION = 0.4
COPY_GATE_POOL = 4
# The filter runs the discriminator on at most this many images at a time: on one thread of a 2-core AVX-512 CPU its
# pass took 1.2 ms per 32x32 image in chunks of 32 or 48 against 1.5 ms in chunks of 64 (the block activations of 64
# images outgrow the cache); on two threads the two were the same.
COPY_FILTER_CHUNK = 32


def discriminator_features(
    discriminator: torch.nn.Module, images: torch.Tensor, block: int = COPY_FILTER_BLOCK, chunk_size: int = 64
) -> torch.Tensor:
    """
    The near-copy filter's features of `images` `[N, C, H, W]` in `[-1, 1]`: the output of down block `block` (a
    negative index counts from the last) of `discriminator` (a [`~metagan_hub.MetaGANDiscriminator`]),
    average-pooled over 2x2 cells, flattened and scaled to unit length; float32 `[N, F]`. Only the blocks up to
    `block` run. They come before the minibatch-std layer, so each image's features do not depend on the rest of
    the batch or on `chunk_size`.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANDiscriminator
    >>> from metagan_hub.pipelines.copy_filter import discriminator_features

    >>> disc = MetaGANDiscriminator(sample_size=32, in_channels=1)
    >>> features = discriminator_features(disc, torch.rand(3, 1, 32, 32) * 2 - 1)
    >>> features.shape, features.norm(dim=1).round(decimals=4).tolist()
    (torch.Size([3, 2048]), [1.0, 1.0, 1.0])
    ```
    """
    num_blocks = discriminator.num_blocks
    if isinstance(block, bool) or not isinstance(block, int) or not -num_blocks <= block < num_blocks:
        raise ValueError(
            f"`block` must be an integer between {-num_blocks} and {num_blocks - 1} (a down block of the "
            f"discriminator), got {block!r}."
        )
    last = block % num_blocks  # index of the block whose output is used
    return _pooled_unit_features(
        discriminator,
        images,
        lambda x: discriminator.block_features(x, num_blocks=last + 1)[-1],
        COPY_FILTER_POOL,
        chunk_size,
    )


def _pool_unit(feature_maps: torch.Tensor, pool: int | None) -> torch.Tensor:
    """Feature maps `[n, C, h, w]` average-pooled over `pool` x `pool` cells (`None`: feature vectors `[n, F]`, not
    pooled), flattened, unit length; float32."""
    features = feature_maps.float()
    if pool is not None:
        features = F.avg_pool2d(features, pool)
    return F.normalize(features.flatten(1), dim=1)


def _pooled_unit_features(
    model: torch.nn.Module,
    images: torch.Tensor,
    features_of: Callable[[torch.Tensor], torch.Tensor],
    pool: int | None,
    chunk_size: int,
) -> torch.Tensor:
    """`features_of` (feature maps `[n, C, h, w]` of `model`, or with `pool=None` feature vectors `[n, F]`) of
    `images`, chunk by chunk without autograd, average-pooled over `pool` x `pool` cells, flattened and scaled to
    unit length; float32 `[N, F]`."""
    chunks = []
    with torch.no_grad():
        for start in range(0, images.shape[0], chunk_size):
            x = images[start : start + chunk_size].to(model.device, model.dtype)
            # fast with channels_last weights (the copy encoder: 1.7x on an AVX2 CPU), neutral without
            x = x.contiguous(memory_format=torch.channels_last)
            chunks.append(_pool_unit(features_of(x), pool))  # [n, F]
    return torch.cat(chunks)


def gate_features(discriminator: torch.nn.Module, images: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
    """
    The near-copy gate's features of `images` `[N, C, H, W]` in `[-1, 1]`: the input features of `discriminator` (a
    [`~metagan_hub.MetaGANDiscriminator`]; first convolution and activation), average-pooled over 4x4 cells,
    flattened and scaled to unit length; float32 `[N, F]`.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANDiscriminator
    >>> from metagan_hub.pipelines.copy_filter import gate_features

    >>> disc = MetaGANDiscriminator(sample_size=32, in_channels=1)
    >>> gate_features(disc, torch.rand(3, 1, 32, 32) * 2 - 1).shape  # 32 channels x 8 x 8 cells
    torch.Size([3, 2048])
    ```
    """
    return _pooled_unit_features(discriminator, images, discriminator.input_features, COPY_GATE_POOL, chunk_size)


def encoder_features(
    encoder: torch.nn.Module,
    images: torch.Tensor,
    chunk_size: int = 64,
    body: torch.nn.Module | None = None,
) -> torch.Tensor:
    """
    The near-copy filter's features of `images` `[N, C, H, W]` in `[-1, 1]` when the pipeline has a copy encoder (an
    [`~metagan_hub.metrics.classifiers.EvaluationClassifier`] trained on other classes): its penultimate features,
    scaled to unit length; float32 `[N, F]`, computed `chunk_size` images at a time without autograd. Call on an
    encoder in `eval()` mode (its BatchNorm layers then use their running statistics, so each image's features do
    not depend on the rest of the batch). `body`: the encoder's [`inference_encoder_body`], when the caller keeps
    one, runs instead of `encoder.body` (the same features up to rounding, in any mode).

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics.classifiers import EvaluationClassifier
    >>> from metagan_hub.pipelines.copy_filter import encoder_features

    >>> encoder = EvaluationClassifier(classes=["a", "b"], resolution=32).eval()
    >>> features = encoder_features(encoder, torch.rand(3, 1, 32, 32) * 2 - 1)
    >>> features.shape, features.norm(dim=1).round(decimals=4).tolist()
    (torch.Size([3, 128]), [1.0, 1.0, 1.0])
    ```
    """
    if body is None:
        return _pooled_unit_features(encoder, images, encoder.features, None, chunk_size)
    encoder.check_images(images)
    return _pooled_unit_features(encoder, images, lambda x: body(x).mean(dim=(2, 3)), None, chunk_size)


def inference_encoder_body(encoder: torch.nn.Module) -> torch.nn.Sequential:
    """
    A copy of `encoder.body` (an [`~metagan_hub.metrics.classifiers.EvaluationClassifier`]'s 3×3 convolution,
    BatchNorm and ReLU layers with max pooling between blocks) for inference without autograd: each convolution with
    the BatchNorm after it folded in (`torch.nn.utils.fusion.fuse_conv_bn_eval`, the running statistics, as in
    `eval()` mode), each max pooling moved in front of the ReLU before it (the same values: the maximum of rectified
    values is the rectified maximum, on a quarter of the elements), ReLUs in place, and `channels_last` on the CPU.
    `body(x).mean(dim=(2, 3))` equals `encoder.eval().features(x)` up to floating-point rounding; on one thread of
    a 2-core AVX-512 CPU it ran 1.7x faster than the `eval()`-mode body in `channels_last` (64 32x32 images, the
    bundled copy encoder). The encoder itself is not changed. Not for training or saving: it has no BatchNorm
    layers left to train and its layers no longer match the encoder's config.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics.classifiers import EvaluationClassifier
    >>> from metagan_hub.pipelines.copy_filter import inference_encoder_body

    >>> encoder = EvaluationClassifier(classes=["a", "b"], resolution=16, block_out_channels=(8, 16)).eval()
    >>> body = inference_encoder_body(encoder)
    >>> [type(layer).__name__ for layer in body]
    ['Conv2d', 'MaxPool2d', 'ReLU', 'Conv2d', 'ReLU']
    >>> images = torch.rand(3, 1, 16, 16) * 2 - 1
    >>> with torch.no_grad():
    ...     torch.allclose(body(images).mean(dim=(2, 3)), encoder.features(images), atol=1e-5)
    True
    ```
    """
    layers = list(copy.deepcopy(encoder.body).eval())
    fused: list[torch.nn.Module] = []
    for layer in layers:
        if isinstance(layer, torch.nn.BatchNorm2d) and fused and isinstance(fused[-1], torch.nn.Conv2d):
            fused[-1] = fuse_conv_bn_eval(fused[-1], layer)
        elif isinstance(layer, torch.nn.MaxPool2d) and fused and isinstance(fused[-1], torch.nn.ReLU):
            fused.insert(len(fused) - 1, layer)  # pool, then rectify
        else:
            fused.append(layer)
    for layer in fused:
        if isinstance(layer, torch.nn.ReLU):
            layer.inplace = True  # this copy only runs without autograd, on fresh tensors
    body = torch.nn.Sequential(*fused)
    if next(encoder.parameters()).device.type == "cpu":
        body = body.to(memory_format=torch.channels_last)
    return body


class NearCopyDistance:
    """
    Each image's distance to the nearest of a few reference images in the near-copy filter's features.

    With an `encoder` (the pipeline's copy encoder) the features are [`encoder_features`] (its running BatchNorm
    statistics, as in `eval()` mode), computed by a folded copy ([`inference_encoder_body`]; equal up to rounding),
    and every image goes through it (`encoder_passes` counts them; the discriminator is not used and may be `None`).
    Without one they are the discriminator's ([`discriminator_features`]), behind the gate ([`gate_features`],
    `gate_fraction`, by default `COPY_GATE_FRACTION`): images the gate lets through get their distance, the others
    `inf`. The first call with `set_gate=True` on a batch of at least `COPY_CAP_MIN_BATCH` images sets the gate's cut
    from that batch; until then every image goes through. `discriminator_passes` counts the images that went through
    the discriminator's blocks. The discriminator runs on at most `min(chunk_size, COPY_FILTER_CHUNK)` images at a
    time.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANDiscriminator
    >>> from metagan_hub.pipelines.copy_filter import NearCopyDistance

    >>> disc = MetaGANDiscriminator(sample_size=32, in_channels=1)
    >>> references = torch.rand(4, 1, 32, 32) * 2 - 1
    >>> near = NearCopyDistance(disc, references)
    >>> distance = near(torch.cat([references, torch.rand(36, 1, 32, 32) * 2 - 1]), set_gate=True)
    >>> (distance[:4] < 1e-3).tolist()  # the references themselves: through the gate, at distance 0
    [True, True, True, True]
    >>> near.discriminator_passes, int(distance.isinf().sum())  # 40% of the 40 images went through
    (16, 24)
    ```
    """

    def __init__(
        self,
        discriminator: torch.nn.Module | None,
        references: torch.Tensor,
        chunk_size: int = 64,
        encoder: torch.nn.Module | None = None,
        gate_fraction: float = COPY_GATE_FRACTION,
    ):
        if discriminator is None and encoder is None:
            raise ValueError("NearCopyDistance needs a `discriminator` or an `encoder` for its features.")
        self.discriminator, self.encoder = discriminator, encoder
        self.encoder_body = inference_encoder_body(encoder) if encoder is not None else None
        self.chunk_size, self.encoder_chunk_size = min(chunk_size, COPY_FILTER_CHUNK), chunk_size
        self.gate = float("inf")  # never set with an encoder
        self.gate_fraction = gate_fraction
        self.discriminator_passes = self.encoder_passes = 0
        self.reference_features = self._features(references)
        if encoder is None:
            self.reference_gate_features = gate_features(discriminator, references, chunk_size=self.chunk_size)

    def threshold(self, copy_margin: float = 1.0) -> float:
        """The distance rule's threshold: [`copy_threshold_of_references`] of the reference images' features."""
        return copy_threshold_of_references(self.reference_features, copy_margin)

    def __call__(self, images: torch.Tensor, set_gate: bool = False) -> torch.Tensor:
        """Distances `[N]` of `images` `[N, C, H, W]` in `[-1, 1]`; `set_gate`: set the gate's cut from them."""
        if self.encoder is not None:  # a tenth of the discriminator's pass: no gate
            return self._distance(images)
        set_gate = set_gate and images.shape[0] >= COPY_CAP_MIN_BATCH
        if not set_gate and self.gate == float("inf"):  # no cut (yet): every image goes through
            return self._distance(images)
        gate_distance = nearest_reference_distance(
            gate_features(self.discriminator, images, chunk_size=self.chunk_size), self.reference_gate_features
        )  # [N]
        if set_gate:
            self.gate = float(gate_distance.quantile(self.gate_fraction))
        distance = torch.full_like(gate_distance, float("inf"))
        near = (gate_distance <= self.gate).nonzero().flatten()
        if near.numel():
            distance[near] = self._distance(images[near])
        return distance

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """The filter's features of `images`: the encoder's where there is one, else the discriminator's."""
        if self.encoder is not None:  # the encoder's features, from its folded copy
            return encoder_features(self.encoder, images, self.encoder_chunk_size, body=self.encoder_body)
        return discriminator_features(self.discriminator, images, chunk_size=self.chunk_size)

    def _distance(self, images: torch.Tensor) -> torch.Tensor:
        """The feature pass: distances `[n]` of `images` to the nearest reference, counted in its passes."""
        if self.encoder is not None:
            self.encoder_passes += images.shape[0]
        else:
            self.discriminator_passes += images.shape[0]
        return nearest_reference_distance(self._features(images), self.reference_features)


def _check_share(name: str, value: float, meaning: str) -> float:
    """Return `value` if it is a number in `(0, 1]`, else raise a `ValueError` naming `name` and what it means."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"`{name}` must be a number in (0, 1] ({meaning}), got {value!r}.")
    return value


def check_replacement_spread(replacement_spread: float) -> float:
    """Return `replacement_spread` if it is a number in `(0, 1]`, else raise a `ValueError` naming it."""
    meaning = "1: each replacement is a new draw; smaller: drawn nearer the near-copy it replaces"
    return _check_share("replacement_spread", replacement_spread, meaning)


def check_max_copy_share(max_copy_share: float) -> float:
    """Return `max_copy_share` if it is a number in `(0, 1]`, else raise a `ValueError` naming it."""
    meaning = (
        f"the largest share of a batch of {COPY_CAP_MIN_BATCH} or more that counts as near-copies; default "
        f"{COPY_CAP_FRACTION}"
    )
    return _check_share("max_copy_share", max_copy_share, meaning)


def gate_fraction_for(max_copy_share: float) -> float:
    """The discriminator gate's share for a filter that replaces at most `max_copy_share` of a batch: twice that share
    (so the cap's closest samples fit behind the gate), at least `COPY_GATE_FRACTION`, at most 1."""
    return min(1.0, max(COPY_GATE_FRACTION, 2 * max_copy_share))


def copy_threshold_of_references(reference_features: torch.Tensor, copy_margin: float = 1.0) -> float:
    """
    `copy_margin` times the median, over the reference images `[K, F]` (K >= 2), of each one's distance to its nearest
    other reference image: samples closer than this to a reference count as its near-copies.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.pipelines.copy_filter import copy_threshold_of_references

    >>> copy_threshold_of_references(torch.tensor([[0.0], [1.0], [3.0]]), copy_margin=0.5)
    0.5
    ```
    """
    check_positive_float("copy_margin", copy_margin)
    k = reference_features.shape[0]
    if k < 2:
        raise ValueError(f"A copy threshold needs at least 2 reference images, got {k}.")
    distances = torch.cdist(reference_features, reference_features)  # [K, K]
    distances.fill_diagonal_(float("inf"))
    return float(copy_margin * distances.amin(dim=1).median())


def nearest_reference_distance(features: torch.Tensor, reference_features: torch.Tensor) -> torch.Tensor:
    """Distance `[N]` from each sample's features `[N, F]` to the nearest reference `[K, F]`."""
    return torch.cdist(features, reference_features).amin(dim=1)


def capped_copy_threshold(threshold: float, distances: torch.Tensor, max_share: float = COPY_CAP_FRACTION) -> float:
    """
    `threshold` lowered, for a batch of at least `COPY_CAP_MIN_BATCH` samples, to the `max_share` quantile (default
    `COPY_CAP_FRACTION`, a fifth) of their nearest-reference `distances` `[N]`, so that at most that fraction of the
    batch counts as near-copies (samples closer than the returned value). Except for ties at the cut: when samples at
    one distance below `threshold` fill the cut, so that fewer than that fraction would count, all of them count (a
    generator that collapsed onto a reference image draws many exact copies, at distance 0).

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.pipelines.copy_filter import capped_copy_threshold

    >>> capped_copy_threshold(5.0, torch.arange(100.0))  # the distance rule is the lower one here
    5.0
    >>> round(capped_copy_threshold(50.0, torch.arange(100.0)), 4)
    19.8
    >>> capped_copy_threshold(50.0, torch.arange(10.0))  # too few samples for a cap
    50.0
    >>> copies = torch.cat([torch.zeros(30), torch.arange(1.0, 71.0)])  # 30 exact copies
    >>> int((copies < capped_copy_threshold(50.0, copies)).sum())  # all of them count
    30
    ```
    """
    if distances.numel() < COPY_CAP_MIN_BATCH:
        return threshold
    distances = distances.float().flatten()
    cap = float(distances.quantile(max_share))
    if cap >= threshold:
        return threshold
    below = int((distances < cap).sum())
    if below < int(max_share * (distances.numel() - 1)):  # a tie fills the cut
        tied = distances.sort().values[below]
        farther = distances[distances > tied]  # the cut moves to the next distance up: every tied sample counts
        cap = min(threshold, float(farther.min())) if farther.numel() else threshold
    return cap


# A replacement round draws enough candidates that all the near-copies left are replaced with probability about 0.9,
# at the pass rate seen so far: drawing as many as were left, at least 16, took a second round of 16 unfused images
# for most classes (40 near-copies in 200 samples: 56 draws where 50 pass on average). Replacements are placed in the
# order drawn, and torch's CPU normal draws of a latent size that is a multiple of 16 (every bundled model's 128) are
# the same however the stream is split into rounds: there the size of a round changes how many draws are spent, not
# which ones are placed (up to float rounding: rounds of 32 or more take the fused upsampling path).
REPLACEMENT_ROUND_Z = 1.3


def replacement_round_size(needed: int, passed: int, drawn: int) -> int:
    """
    How many candidates a replacement round of the near-copy filter draws when `needed` near-copies are left and
    `passed` of the `drawn` images judged so far were not near-copies: with `q` that pass rate (smoothed, `(passed +
    1) / (drawn + 2)`), `ceil((needed + z * sqrt(needed * (1 - q))) / q)` for `z = REPLACEMENT_ROUND_Z`, so that in
    most rounds enough pass and no further round is needed.

    Example:

    ```py
    >>> from metagan_hub.pipelines.copy_filter import replacement_round_size

    >>> replacement_round_size(40, 160, 200)  # a fifth of 200 samples were near-copies
    55
    >>> replacement_round_size(1, 199, 200)
    2
    ```
    """
    if needed <= 0:
        return 0
    q = (passed + 1) / (drawn + 2)
    return math.ceil((needed + REPLACEMENT_ROUND_Z * math.sqrt(needed * (1 - q))) / q)


# adapt(..., copy_stop=share): every `copy_stop_interval` steps the generator draws COPY_STOP_SAMPLES monitor images
# (fixed latents times COPY_STOP_LATENT_SCALE, the scale the variety setting samples at), and adaptation stops when
# more than `share` of them lie closer to a shot than `copy_stop_distance` in the copy encoder's unit-length features;
# the generator of the check before is returned, never one of fewer than `copy_stop_min_steps` steps.
# The default distance, "augment", is measured on the shots: the median distance between a shot and
# COPY_STOP_AUGMENT_DRAWS random small affine versions of it (`random_affine` at COPY_STOP_AUGMENT_STRENGTH, the
# variety setting's `shot_augment`): a sample closer to a shot than a slanted, shifted or rescaled copy of it counts.
# A fixed distance does not follow the domain: in the bundled encoder (trained on kanji renders, whose nearest other
# render of the same class is 0.26-0.28 away) every digit lies within 0.3 of every other, and a fixed 0.3 stopped
# every digit class early; the augmented-shot distance is 0.10-0.13 for digits against 0.14-0.35 (median 0.28-0.29)
# for held-out kanji and font glyphs. COPY_STOP_MIN_STEPS: stops that returned a 25-step generator cost the most
# recognisability and removed few copies (collapse onto the shots comes later).
COPY_STOP_SAMPLES = 64
COPY_STOP_LATENT_SCALE = 1.25
COPY_STOP_MIN_STEPS = 50
COPY_STOP_AUGMENT_STRENGTH = 1.0
COPY_STOP_AUGMENT_DRAWS = 8
COPY_STOP_DISTANCES = ("augment",)


def check_copy_stop_distance(distance: float | str) -> float | str:
    """`copy_stop_distance` as given if it is a positive finite number or `"augment"`, else a `ValueError`."""
    if isinstance(distance, str):
        if distance not in COPY_STOP_DISTANCES:
            raise ValueError(
                f"`copy_stop_distance` must be a positive number or one of {', '.join(map(repr, COPY_STOP_DISTANCES))}"
                f" (measured on the shots), got {distance!r}."
            )
        return distance
    return check_positive_float("copy_stop_distance", distance)


def augmented_shot_distance(
    encoder: torch.nn.Module,
    shots: torch.Tensor,
    generator: torch.Generator | None = None,
    strength: float = COPY_STOP_AUGMENT_STRENGTH,
    draws: int = COPY_STOP_AUGMENT_DRAWS,
) -> float:
    """
    How far small variations of the shots lie from the shots in `encoder`'s unit-length features
    ([`encoder_features`]): the median, over `draws` random small affine versions of each of the `shots`
    `[K, C, H, W]` (in `[-1, 1]`; [`~metagan_hub.training.augment.random_affine`] at `strength`, drawn from
    `generator`), of the distance between a version and its shot. `adapt(..., copy_stop_distance="augment")` uses
    it as its near-copy distance: a sample closer to a shot than a slanted, shifted or rescaled copy of that shot
    usually is counts as a near-copy, on whatever scale the encoder gives the shots' domain.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics.classifiers import EvaluationClassifier
    >>> from metagan_hub.pipelines.copy_filter import augmented_shot_distance

    >>> encoder = EvaluationClassifier(classes=["a", "b"], resolution=16, block_out_channels=(8, 16)).eval()
    >>> shots = torch.rand(4, 1, 16, 16) * 2 - 1
    >>> distance = augmented_shot_distance(encoder, shots, torch.Generator().manual_seed(0))
    >>> 0 < distance < 2
    True
    ```
    """
    from ..training.augment import random_affine

    check_positive_int("draws", draws)
    shots = shots.float()
    versions = torch.cat([random_affine(shots, strength, generator) for _ in range(draws)])  # [draws * K, C, H, W]
    reference = encoder_features(encoder, shots).repeat(draws, 1)  # [draws * K, F], the shot of each version
    return float((encoder_features(encoder, versions) - reference).norm(dim=1).median())


def near_copy_share(
    encoder: torch.nn.Module, images: torch.Tensor, reference_features: torch.Tensor, distance: float
) -> float:
    """
    Share of `images` `[N, C, H, W]` (in `[-1, 1]`) whose unit-length features in `encoder` ([`encoder_features`])
    lie closer than `distance` to the nearest of `reference_features` `[K, F]`: the monitor of `adapt(...,
    copy_stop=...)`.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics.classifiers import EvaluationClassifier
    >>> from metagan_hub.pipelines.copy_filter import encoder_features, near_copy_share

    >>> encoder = EvaluationClassifier(classes=["a", "b"], resolution=16, block_out_channels=(8, 16)).eval()
    >>> shots = torch.rand(4, 1, 16, 16) * 2 - 1
    >>> others = torch.rand(4, 1, 16, 16) * 2 - 1
    >>> near_copy_share(encoder, torch.cat([shots, others]), encoder_features(encoder, shots), 1e-4)  # the shots
    0.5
    ```
    """
    features = encoder_features(encoder, images)
    return float((nearest_reference_distance(features, reference_features) < distance).float().mean())


def near_copy_repulsion(
    discriminator: torch.nn.Module, images: torch.Tensor, references: torch.Tensor, copy_margin: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    A training term that pushes generated `images` `[N, C, H, W]` (in `[-1, 1]`, with gradient) away from the
    reference images `references` `[K, C, H, W]` (K >= 2, the shots) where they are near-copies by the filter's
    distance rule, in the filter's features of `discriminator` ([`discriminator_features`]: block -2, 2x2-pooled, unit
    length; here with gradient to the images). With `tau` the rule's threshold ([`copy_threshold_of_references`] of
    the references' features, computed without gradient) and `d_i` each image's distance to its nearest reference,
    the term is the mean over the images of `relu(tau - d_i) / tau`: 0 for images at least `tau` away, up to 1 for an
    exact copy. Zero (and no gradient) when no image is nearer than `tau`, or when `tau` is 0 (references that repeat
    one image). One pass without gradient over the references and the images finds the near-copies; only those run
    through the discriminator again with gradient, so steps without a near-copy cost no backward pass. The caller
    freezes the discriminator's weights if only the generator is to learn from it.

    Returns:
        `(term, near_fraction)`: the scalar term, and the fraction of `images` closer than `tau` (without gradient).

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANDiscriminator
    >>> from metagan_hub.pipelines.copy_filter import near_copy_repulsion

    >>> disc = MetaGANDiscriminator(sample_size=32, in_channels=1)
    >>> shots = torch.rand(5, 1, 32, 32) * 2 - 1
    >>> term, near = near_copy_repulsion(disc, shots[:2], shots)  # exact copies of two shots
    >>> round(float(term.detach()), 4), float(near)
    (1.0, 1.0)
    ```
    """
    last = COPY_FILTER_BLOCK % discriminator.num_blocks

    def features(x: torch.Tensor) -> torch.Tensor:
        return _pool_unit(discriminator.block_features(x, num_blocks=last + 1)[-1], COPY_FILTER_POOL)

    k = references.shape[0]
    with torch.no_grad():  # one pass finds the near-copies; only they run again, with gradient
        both = features(torch.cat([references.to(images.dtype), images.detach()]))
        reference_features = both[:k]
        tau = copy_threshold_of_references(reference_features, copy_margin)
        near = nearest_reference_distance(both[k:], reference_features) < tau  # [N]
        near_fraction = near.float().mean()
    if tau <= 0 or not bool(near.any()):
        return torch.zeros((), device=images.device), near_fraction
    distance = nearest_reference_distance(features(images[near]), reference_features)
    return torch.relu(tau - distance).sum() / (tau * images.shape[0]), near_fraction
