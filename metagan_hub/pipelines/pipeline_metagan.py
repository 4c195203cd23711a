# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""`MetaGANPipeline`: generate, save, load (folder or Hub repo id), share and adapt a Meta-GAN."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.deprecation_utils import _resolve_dtype
from diffusers.utils.torch_utils import randn_tensor

from .. import __version__
from ..hub.model_card import check_card_images, read_card_info, render_pipeline_card
from ..hub.network import bounded_hub_requests, resolve_timeout
from ..hub.safety import check_finite_weights, public_card_info, strip_local_config_keys, write_json_strict
from ..hub.upload import upload_folder_to_hub
from ..metrics.classifiers import EvaluationClassifier
from ..models.discriminator_metagan import MetaGANDiscriminator
from ..models.generator_metagan import MetaGANGenerator
from ..models.layers import available_memory_bytes, check_positive_float, format_bytes
from .copy_filter import (
    COPY_CAP_FRACTION,
    COPY_STOP_MIN_STEPS,
    MAX_DRAWS_PER_IMAGE,
    NearCopyDistance,
    capped_copy_threshold,
    check_max_copy_share,
    check_replacement_spread,
    gate_fraction_for,
    replacement_round_size,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)


def chunk_bounds(num_images: int, chunk_size: int) -> list[tuple[int, int]]:
    """
    `(start, stop)` of the fewest chunks of at most `chunk_size` images that cover `num_images`, as even as possible
    (sizes differ by at most one). 200 images in chunks of at most 64 are four of 50, not 64, 64, 64 and 8: on CPU a
    chunk of fewer than 32 images takes the generator's unfused path, slower per image. What it gave for the 32x32
    model (one thread, AVX-512, old and new chunks alternating in one process): the generator's passes over 200
    and 87 images 1.03x and 1.13x faster, whole pipeline calls of 65-1,000 images 1.00-1.04x, calls with the
    near-copy filter unchanged within noise (0.99-1.02x).

    Example:

    ```py
    >>> from metagan_hub.pipelines.pipeline_metagan import chunk_bounds

    >>> chunk_bounds(200, 64)
    [(0, 50), (50, 100), (100, 150), (150, 200)]
    >>> chunk_bounds(7, 3)
    [(0, 3), (3, 5), (5, 7)]
    ```
    """
    num_chunks = -(-num_images // chunk_size)  # ceil
    size, larger = divmod(num_images, num_chunks) if num_chunks else (0, 0)
    bounds, start = [], 0
    for i in range(num_chunks):
        stop = start + size + (i < larger)
        bounds.append((start, stop))
        start = stop
    return bounds


class _EmptyKeepInFp32Warning(logging.Filter):
    """Drops diffusers' "modules that should be kept in float32: []" warning, which `ModelMixin.to(dtype=None)` (as
    called by `save_lora_adapter`) logs even when there are no such modules and no dtype change."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


OUTPUT_TYPES = ("pil", "np", "pt")
VARIANTS = ("fp16", "bf16")
CARD_INFO_NAME = "metagan_hub.json"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
# Written beside model_index.json so that plain `DiffusionPipeline.from_pretrained(x, trust_remote_code=True)` works:
# model_index.json names `[REEXPORT_MODULE, "MetaGANPipeline"]`, and this file only re-exports the installed class.
REEXPORT_MODULE = "pipeline_metagan"


def _version_range() -> tuple[str, str]:
    """The metagan-hub versions that can load what this version saves: this one up to the next major release (module
    paths recorded in `model_index.json` never move within a major version)."""
    major = int(__version__.split(".")[0]) if __version__.split(".")[0].isdigit() else 0
    return __version__, f"{major + 1}.0"


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in version.split(".")[:3])


def reexport_source(module: str, names: str) -> str:
    """The source of a re-export file written into saved folders: it imports `names` from the installed `module`
    and, when metagan-hub is missing or too old, raises an `ImportError` that says exactly what to install."""
    low, high = _version_range()
    requirement = f"metagan-hub>={low},<{high}"
    return f'''# Loads {names} from the installed metagan_hub package ({requirement}).
# This lets `diffusers.DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` load this folder; it runs no
# other code. Saved with metagan-hub {__version__}.
_REQUIREMENT = "{requirement}"
try:
    import metagan_hub as _metagan_hub
except ImportError as _err:
    if _err.name is not None and _err.name.split(".")[0] != "metagan_hub":
        raise
    raise ImportError(
        "This checkpoint is a metagan_hub Meta-GAN and needs the metagan-hub package, which is not installed. "
        f"Install it with: pip install \'{{_REQUIREMENT}}\' (it pulls diffusers, torch and huggingface_hub), "
        "then load again, e.g. with metagan_hub.MetaGANPipeline.from_pretrained(...)."
    ) from None
_found = tuple(int(p) if p.isdigit() else 0 for p in _metagan_hub.__version__.split(".")[:3])
if _found < {_numbers(low)!r} or _found[:2] >= {_numbers(high)!r}:
    raise ImportError(
        f"This checkpoint needs {{_REQUIREMENT}}, but metagan-hub {{_metagan_hub.__version__}} is installed: "
        f"pip install \'{{_REQUIREMENT}}\'."
    )
from {module} import {names}  # noqa: E402,F401
'''


REEXPORT_SOURCE = reexport_source("metagan_hub.pipelines.pipeline_metagan", "MetaGANPipeline")

EXAMPLE_DOC_STRING = """
    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline

    >>> pipe = MetaGANPipeline(generator=MetaGANGenerator(sample_size=32), discriminator=MetaGANDiscriminator())
    >>> images = pipe(batch_size=4, generator=torch.Generator().manual_seed(0)).images
    >>> images[0].size
    (32, 32)
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()  # or a folder of your own, e.g. "my-metagan"
    >>> pipe.save_pretrained(folder)  # model_index.json, generator/, discriminator/, README.md
    >>> pipe = MetaGANPipeline.from_pretrained(folder)
    ```
"""


# the pipeline's components and their classes, in model_index.json order; only the generator is required
COMPONENTS: dict[str, type[torch.nn.Module]] = {
    "generator": MetaGANGenerator,
    "discriminator": MetaGANDiscriminator,
    "copy_encoder": EvaluationClassifier,
}


def _check_matches_generator(generator: MetaGANGenerator, name: str, resolution: int, channels: int) -> None:
    """Raise a `ValueError` naming component `name` unless it takes the `generator`'s images (resolution, channels)."""
    g = generator.config
    if (g.sample_size, g.out_channels) != (resolution, channels):
        raise ValueError(
            f"`{name}` must match the generator's resolution and channels: generator makes "
            f"{g.out_channels}x{g.sample_size}x{g.sample_size} images, {name.replace('_', ' ')} expects "
            f"{channels}x{resolution}x{resolution}."
        )


class MetaGANPipeline(DiffusionPipeline):
    r"""
    Pipeline for unconditional image generation with a (meta-learned) GAN, and for adapting it to a new class from a
    handful of images.

    Generation is a single generator forward pass per image, so it is orders of magnitude faster than iterative
    diffusion sampling. The pipeline loads from a folder or a Hub repo id with [`~MetaGANPipeline.from_pretrained`],
    saves safetensors plus a model card with [`~MetaGANPipeline.save_pretrained`], and uploads with
    [`~MetaGANPipeline.push_to_hub`].

    Args:
        generator ([`MetaGANGenerator`]):
            Maps latent vectors to images in `[-1, 1]`.
        discriminator ([`MetaGANDiscriminator`], *optional*):
            Needed only to adapt or keep training; generation-only checkpoints may omit it.
        copy_encoder ([`~metagan_hub.metrics.classifiers.EvaluationClassifier`], *optional*):
            A small frozen image classifier trained on other classes (`scripts/train_copy_encoder.py`, which keeps
            it without its linear head), whose features the near-copy filter (`avoid_copies_of`) judges in instead of
            the discriminator's: about a tenth of the discriminator's cost per image, and it works without a
            discriminator. [`~MetaGANPipeline.adapt`] keeps it unchanged in the pipeline it returns.
        card_info (`dict`, *optional*):
            Metadata written into the model card (`base_model`, adaptation / training records, data notes). It is
            saved as `metagan_hub.json` and read back by `from_pretrained`.
    """

    model_cpu_offload_seq = "generator"
    _optional_components = ["discriminator", "copy_encoder"]

    def __init__(
        self,
        generator: MetaGANGenerator,
        discriminator: MetaGANDiscriminator | None = None,
        card_info: dict[str, Any] | None = None,
        copy_encoder: EvaluationClassifier | None = None,
    ):
        super().__init__()
        if not isinstance(generator, MetaGANGenerator):
            raise TypeError(f"`generator` must be a MetaGANGenerator, got {type(generator).__name__}.")
        if discriminator is not None and not isinstance(discriminator, MetaGANDiscriminator):
            raise TypeError(
                f"`discriminator` must be a MetaGANDiscriminator or None, got {type(discriminator).__name__}."
            )
        if discriminator is not None:
            d = discriminator.config
            _check_matches_generator(generator, "discriminator", d.sample_size, d.in_channels)
        if copy_encoder is not None:
            if not isinstance(copy_encoder, EvaluationClassifier):
                raise TypeError(
                    f"`copy_encoder` must be an EvaluationClassifier or None, got {type(copy_encoder).__name__}."
                )
            _check_matches_generator(
                generator, "copy_encoder", copy_encoder.config.resolution, copy_encoder.config.channels
            )
        self.register_modules(generator=generator, discriminator=discriminator, copy_encoder=copy_encoder)
        self.card_info: dict[str, Any] = dict(card_info or {})

    # ------------------------------------------------------------------ generation
    def check_inputs(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        output_type: str,
        chunk_size: int,
        latent_scale: float = 1.0,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"`generator` is a list of {len(generator)} torch.Generator objects, but `batch_size` is {batch_size}:"
                " pass one generator per image, or a single generator."
            )
        if generator is not None and not isinstance(generator, torch.Generator | list):
            raise TypeError(
                f"`generator` must be a torch.Generator or a list of them, got {type(generator).__name__}."
            )
        if latents is not None:
            expected = (batch_size, self.generator.config.latent_dim)
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected:
                shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise ValueError(
                    f"`latents` must be a tensor of shape {expected} (batch_size, latent_dim), got {shape}."
                )
            if not torch.isfinite(latents).all():
                raise ValueError("`latents` contains NaN or infinite values.")
        check_positive_float("latent_scale", latent_scale)

    def prepare_latents(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        device: torch.device,
    ) -> torch.Tensor:
        """Draw `[batch_size, latent_dim]` standard-normal latents (float32) unless `latents` is given."""
        if latents is not None:
            return latents.to(device=device, dtype=torch.float32)
        shape = (batch_size, self.generator.config.latent_dim)
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        chunk_size: int = 64,
        latent_scale: float = 1.0,
        avoid_copies_of: Any | None = None,
        copy_margin: float = 1.0,
        replacement_spread: float = 1.0,
        max_copy_share: float = COPY_CAP_FRACTION,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate images.

        Args:
            batch_size (`int`, *optional*, defaults to 1):
                The number of images to generate.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                A [`torch.Generator`](https://pytorch.org/docs/stable/generated/torch.Generator.html) (or one per
                image) to make generation deterministic: the same seed gives the same images on the same device.
            latents (`torch.Tensor` of shape `(batch_size, latent_dim)`, *optional*):
                Pre-drawn latent vectors; drawn from `generator` when not given.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"` (list of `PIL.Image.Image`), `"np"` (`np.ndarray` of shape `(batch_size, H, W, C)` in
                `[0, 1]`) or `"pt"` (`torch.Tensor` of shape `(batch_size, C, H, W)` in `[0, 1]`).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return an [`~diffusers.ImagePipelineOutput`] instead of a plain tuple.
            chunk_size (`int`, *optional*, defaults to 64):
                The most images per generator forward pass: a larger batch runs in the fewest chunks of at most
                this many, of even sizes ([`chunk_bounds`]), so memory stays bounded. All latents are drawn up
                front, so the result depends on `chunk_size` only through floating-point rounding. On CPU, chunks
                of 64-128 images ran 1.2-1.4× faster than 256 for the 32×32 model (cache-friendlier activations).
            latent_scale (`float`, *optional*, defaults to 1.0):
                Multiplies the latents (drawn or given) before the generator: above 1 spreads the samples (more
                variety, fewer near-copies of the shots, a little less fidelity), below 1 is the truncation trick.
                `pipe(..., latent_scale=s)` equals `pipe(..., latents=s * latents)` for the same draw.
            avoid_copies_of (*optional*):
                Images (anything [`~MetaGANPipeline.adapt`] accepts, at least 2; typically the shots of the
                adaptation) whose near-copies are replaced. In the features of the pipeline's copy encoder where it
                has one (`copy_encoder`, e.g. `checkpoints/metagan-kanji-32-variety`), else of its discriminator (so
                the pipeline needs one of them; the one [`~MetaGANPipeline.adapt`] returns has its discriminator and
                keeps the start's copy encoder), a sample is a near-copy when it is closer to one of these images
                than `copy_margin` times the median distance between each of them and its nearest other one; in a
                batch of 20 or more, at most the closest `max_copy_share` (a fifth) count (more only when samples tie
                at one distance, e.g. exact copies from a collapsed generator). Each near-copy is replaced by the
                next new draw that is not one (latents drawn from `generator`, times `latent_scale`), with at most
                `4 * batch_size` draws in all; samples that are still near-copies after that are kept and a warning
                says how many. Other samples keep their latents. With the discriminator, in a batch of 20 or more
                only the 40% of candidates nearest one of these images in its input features go through the
                discriminator pass; the others count as far. With `shot_augment=1.25` on kanji and digits: 0.1-0.25
                extra draws and 0.45-0.5 discriminator passes per image, 1.45-1.8x the sampling time (the bundled
                model's experiment log). The copy encoder sees every candidate at about a tenth of the discriminator
                pass's cost.
            copy_margin (`float`, *optional*, defaults to 1.0):
                Positive; scales the near-copy distance of `avoid_copies_of` (larger replaces more). Checked always,
                used only with `avoid_copies_of`.
            replacement_spread (`float`, *optional*, defaults to 1.0):
                In `(0, 1]`: how far from a near-copy its replacement is drawn (with `avoid_copies_of`). At 1 each
                replacement is a new draw; below 1 it is drawn near the near-copy's latent `z`, as
                `sqrt(1 - s**2) * z + s * n` for a new draw `n` (a rejected try becomes the next try's `z`), so it
                stays similar to the sample it replaces. Checked always, used only with `avoid_copies_of`.
            max_copy_share (`float`, *optional*, defaults to 0.2):
                In `(0, 1]`: the largest share of a batch of 20 or more that counts as near-copies of
                `avoid_copies_of` (the closest ones). Larger replaces more of the samples nearest your images, at the
                cost of more draws; with the discriminator's features its gate lets twice this share through (at
                least 40%). With the variety checkpoint's setting, a third instead of a fifth lowered the kanji copy
                rate from 0.008 to 0.005 for 0.014 recognisability in 1.16x the sampling time (90 held-out class-shot
                sets; that checkpoint's card). Checked always, used only with `avoid_copies_of`.

        Returns:
            [`~diffusers.ImagePipelineOutput`] or `tuple`: the generated images (first element of the tuple).
        """
        # 1. check inputs, and that the result fits in memory before anything is allocated
        self.check_inputs(batch_size, generator, latents, output_type, chunk_size, latent_scale)
        check_positive_float("copy_margin", copy_margin)
        check_replacement_spread(replacement_spread)
        check_max_copy_share(max_copy_share)
        references = None
        if avoid_copies_of is not None:
            references = self.check_copy_filter_inputs(avoid_copies_of, generator)
        device = self._execution_device
        self.check_memory(batch_size, chunk_size, output_type, device)

        # 2. latents for the whole batch, so chunking does not change the result
        latents = self.prepare_latents(batch_size, generator, latents, device)  # [N, latent_dim]
        if latent_scale != 1.0:
            latents = latents * latent_scale
        dtype = self.generator.dtype
        filtered = None
        if references is not None:  # images in [-1, 1] with the near-copies replaced
            filtered, _ = self.replace_near_copies(
                latents,
                references,
                copy_margin,
                latent_scale,
                generator,
                chunk_size,
                replacement_spread,
                max_copy_share,
            )  # [N, C, H, W]

        # 3. generate chunk by chunk into one preallocated result: peak memory = result + one chunk
        c, s = self.generator.config.out_channels, self.generator.config.sample_size
        if output_type == "pt":
            images = torch.empty((batch_size, c, s, s), dtype=torch.float32, device=device)  # [N, C, H, W]
        elif output_type == "np":
            images = np.empty((batch_size, s, s, c), dtype=np.float32)  # [N, H, W, C]
        else:
            images = []
        for start, stop in self.progress_bar(chunk_bounds(batch_size, chunk_size)):
            if filtered is None:
                sample = self.generator(latents[start:stop].to(dtype)).sample  # [n, C, H, W]
            else:
                sample = filtered[start:stop]
            sample = (sample.float() / 2 + 0.5).clamp(0, 1)  # [-1, 1] -> [0, 1]
            if output_type == "pt":
                images[start:stop] = sample
            elif output_type == "np":
                images[start:stop] = sample.cpu().permute(0, 2, 3, 1).numpy()  # [n, H, W, C]
            else:
                images.extend(self.numpy_to_pil(sample.cpu().permute(0, 2, 3, 1).numpy()))
            del sample
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def check_copy_filter_inputs(
        self, avoid_copies_of: Any, generator: torch.Generator | list[torch.Generator] | None
    ) -> torch.Tensor:
        """Check the near-copy filter's images and `generator` (`__call__` checks `copy_margin` on every call);
        returns the reference images as `[K, C, H, W]` in `[-1, 1]`."""
        from ..data.images import load_images

        if self.copy_filter_features is None:
            raise ValueError(
                "`avoid_copies_of` judges near-copies with the pipeline's copy encoder or discriminator, but this "
                "pipeline has neither: use the pipeline `adapt()` returned, or load one saved with its discriminator."
            )
        if isinstance(generator, list):
            raise ValueError(
                "`avoid_copies_of` draws replacement latents from one `generator`; got a list of generators (one per "
                "image). Pass a single torch.Generator."
            )
        cfg = self.generator.config
        try:
            references = load_images(avoid_copies_of, sample_size=cfg.sample_size, channels=cfg.out_channels)
        except ValueError as err:
            raise ValueError(f"`avoid_copies_of`: {err}") from err
        if references.shape[0] < 2:
            raise ValueError(
                f"`avoid_copies_of` needs at least 2 images (their distances to each other set the near-copy "
                f"distance), got {references.shape[0]}."
            )
        return references

    @torch.no_grad()
    def replace_near_copies(
        self,
        latents: torch.Tensor,
        references: torch.Tensor,
        copy_margin: float,
        latent_scale: float,
        generator: torch.Generator | None,
        chunk_size: int = 64,
        replacement_spread: float = 1.0,
        max_copy_share: float = COPY_CAP_FRACTION,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """
        Images `[N, C, H, W]` in `[-1, 1]` of `latents` `[N, latent_dim]` (already scaled), with each near-copy of
        `references` `[K, C, H, W]` replaced by a draw that is not one (`__call__`'s `avoid_copies_of`,
        `replacement_spread` and `max_copy_share`). Also
        returns counts: `near_copies` (among the first `N`), `replaced`, `kept_copies`, `extra_draws` and
        `discriminator_passes` (images that went through the gate, [`~pipelines.copy_filter.NearCopyDistance`]), and
        the feature-space `threshold`.
        """
        device, dtype = latents.device, self.generator.dtype
        discriminator, encoder = self.discriminator, self.copy_encoder
        if encoder is not None:  # NearCopyDistance runs a folded inference copy of it (channels_last on CPU)
            discriminator = None
        elif device.type == "cpu":
            # a channels_last copy: its feature pass ran 1.3-1.4x faster on a 2-core AVX-512 CPU (200 images, fp32)
            discriminator = copy.deepcopy(discriminator).to(memory_format=torch.channels_last)

        def generate(z: torch.Tensor) -> torch.Tensor:
            chunks = [self.generator(z[a:b].to(dtype)).sample.float() for a, b in chunk_bounds(len(z), chunk_size)]
            return torch.cat(chunks)  # [n, C, H, W]

        near_copy_distance = NearCopyDistance(
            discriminator,
            references.to(device),
            chunk_size,
            encoder=encoder,
            gate_fraction=gate_fraction_for(max_copy_share),
        )
        images = generate(latents)
        distance = near_copy_distance(images, set_gate=True)  # [N]; inf where the gate let an image pass as far
        threshold = capped_copy_threshold(near_copy_distance.threshold(copy_margin), distance, max_copy_share)
        copies = (distance < threshold).nonzero().flatten().tolist()  # positions still holding a near-copy
        n, draws, budget = latents.shape[0], latents.shape[0], MAX_DRAWS_PER_IMAGE * latents.shape[0]
        num_copies = len(copies)
        passed = n - num_copies  # images judged so far that were not near-copies (sizes the replacement rounds)
        s = replacement_spread
        # near draws: each position's latent so far, unscaled (its near-copy's, then its last rejected try's)
        walk = {i: latents[i] / latent_scale for i in copies} if s < 1 else None
        while copies and draws < budget:
            if walk is None:  # new draws, enough that all the copies left are likely replaced in this round
                m = min(replacement_round_size(len(copies), passed, draws), budget - draws)
            else:  # one try per position still holding a near-copy
                positions = copies[: budget - draws]
                m = len(positions)
            z = randn_tensor((m, latents.shape[1]), generator=generator, device=device, dtype=torch.float32)
            if walk is not None:
                z = torch.stack([walk[i] for i in positions]) * math.sqrt(1 - s * s) + s * z
            candidates = generate(z * latent_scale)
            candidate_distance = near_copy_distance(candidates)
            draws += m
            passed += int((candidate_distance >= threshold).sum())
            if walk is None:  # first come, first placed
                for j in (candidate_distance >= threshold).nonzero().flatten().tolist():
                    if not copies:
                        break
                    images[copies.pop(0)] = candidates[j]
                continue
            for k, i in enumerate(positions):
                if candidate_distance[k] >= threshold:
                    images[i] = candidates[k]
                    copies.remove(i)
                else:
                    walk[i] = z[k]  # still a near-copy: the next try starts here
        logger.info(
            "avoid_copies_of: %d of %d samples were near-copies (distance < %.4g); %d replaced with %d extra draws.",
            num_copies,
            n,
            threshold,
            num_copies - len(copies),
            draws - n,
        )
        if copies:
            logger.warning(
                "avoid_copies_of: %d of %d samples are still near-copies after %d draws in all (at most %d per "
                "image); they are kept. A smaller `copy_margin` replaces fewer.",
                len(copies),
                n,
                draws,
                MAX_DRAWS_PER_IMAGE,
            )
        stats = {
            "near_copies": num_copies,
            "replaced": num_copies - len(copies),
            "kept_copies": len(copies),
            "extra_draws": draws - n,
            "discriminator_passes": near_copy_distance.discriminator_passes,
            "encoder_passes": near_copy_distance.encoder_passes,
            "threshold": threshold,
        }
        return images, stats

    def estimate_memory(self, batch_size: int, chunk_size: int = 64, output_type: str = "pil") -> int:
        """
        Estimated peak memory in bytes of `pipe(batch_size=..., chunk_size=..., output_type=...)`: the latents, the
        result (float32 for `"np"` / `"pt"`, 8-bit images plus per-image overhead for `"pil"`) and the activations of
        one chunk (each block's feature maps, a few live at a time).

        Example:

        ```py
        >>> from metagan_hub import MetaGANGenerator, MetaGANPipeline

        >>> pipe = MetaGANPipeline(generator=MetaGANGenerator(sample_size=32))
        >>> pipe.estimate_memory(1000, output_type="np") > 1000 * 32 * 32 * 4
        True
        ```
        """
        config = self.generator.config
        c, s = config.out_channels, config.sample_size
        per_image = {"np": 4 * c * s * s, "pt": 4 * c * s * s, "pil": c * s * s + 800}[output_type]
        chunk = min(batch_size, chunk_size)
        itemsize = torch.finfo(self.generator.dtype).bits // 8
        widths = list(config.block_out_channels)
        activations = widths[0] * 16  # the 4x4 map
        for i, width in enumerate(widths):
            activations += 3 * width * (8 * 2**i) ** 2  # upsampled input, conv1 and conv2 outputs of block i
        activations = chunk * (activations * max(itemsize, 4) * 2 + 4 * c * s * s * 3)
        return batch_size * (config.latent_dim * 4 + per_image) + activations

    def check_memory(
        self, batch_size: int, chunk_size: int, output_type: str, device: torch.device | str | None = None
    ) -> None:
        """Raise a `ValueError` naming `batch_size` (or `chunk_size`), the estimate and the available memory when a
        call would need more memory than `device` has free (see [`estimate_memory`]); nothing is allocated."""
        device = torch.device(device) if device is not None else self._execution_device
        # the result lives on `device` for "pt", in RAM otherwise (the chunks are small next to it)
        where = device if output_type == "pt" else torch.device("cpu")
        available = available_memory_bytes(where)
        if available is None:
            return
        needed = self.estimate_memory(batch_size, chunk_size, output_type)
        if needed > available:
            raise ValueError(
                f"`batch_size`={batch_size} would need about "
                f"{format_bytes(needed)} for {batch_size:,} {output_type!r} images of "
                f"{self.generator.config.out_channels}x{self.generator.config.sample_size}x"
                f"{self.generator.config.sample_size}, but only {format_bytes(available)} is available on "
                f"{where}. Generate in several calls with a smaller `batch_size` (e.g. with explicit `latents` "
                "slices of one seeded draw) or use output_type='pil' / a smaller `chunk_size`."
            )

    def enable_fast_generation(
        self,
        channels_last: bool = True,
        fused_upsampling: bool | None = True,
        compile: bool = False,
        **compile_kwargs,
    ) -> None:
        """
        Switch on faster generator inference: `channels_last` weights, fused upsampling (each block's nearest
        upsampling and first convolution as one transposed convolution, see
        [`MetaGANGenerator.enable_fused_upsampling`]; `True` fuses at every batch size and on every device, `None`
        only for CPU batches of 32 or more, which is what a new pipeline does) and, optionally, `torch.compile` of
        the generator's forward (the first call then compiles for a while). Images equal the plain path's up to
        floating-point rounding. See the README's generation benchmark for what each option gives on CPU.

        Example:

        ```py
        >>> pipe.enable_fast_generation(channels_last=True, fused_upsampling=True, compile=True)  # doctest: +SKIP
        ```
        """
        if channels_last:
            self.generator.to(memory_format=torch.channels_last)
        self.generator.enable_fused_upsampling(fused_upsampling)
        if compile:
            self.generator.compile(**compile_kwargs)

    # ------------------------------------------------------------------ adaptation
    def adapt(
        self,
        images: Any,
        *,
        num_steps: int = 200,
        learning_rate: float = 2e-4,
        batch_size: int = 4,
        mixed_precision: str = "no",
        loss: str = "nonsaturating",
        r1_gamma: float = 1.0,
        r1_interval: int = 4,
        augment: Sequence[str] | None = ("translation", "cutout", "color"),
        freeze_discriminator_blocks: int = 1,
        ema_decay: float | None = None,
        lora_rank: int | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[int, dict[str, float]], bool | None] | None = None,
        accelerator: Accelerator | None = None,
        image_column: str = "image",
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
        r"""
        Adapt this (meta-learned) GAN to a new class from a few images and return a **new** pipeline. This pipeline's
        weights are never modified: the generator and discriminator are copied and the copies are trained.

        The defaults were tuned on held-out kanji with `scripts/evaluate_metagan.py` (10 test classes, 5 shots, 200
        steps, seed 0, bundled checkpoint): Adam at 2e-4 with betas `(0.0, 0.99)`, DiffAugment on, and `batch_size=4`
        with lazy R1 every 4 steps matched `batch_size=8` with R1 every step within noise (paired over the classes:
        KID -0.03 ± 0.06, nearest-real distance +0.21 ± 0.17, diversity +0.46 ± 0.22) in half the time; R1 every 16
        steps was slightly worse than every 4. Freezing the discriminator's input convolution and lowest block
        (FreezeD, `freeze_discriminator_blocks=1`) matched training all of it on 30 held-out classes (held-out
        distance +0.004 ± 0.005, KID -0.000 ± 0.036) and skips those layers' weight gradients (~8% faster); freezing
        two blocks was clearly worse (+0.039 ± 0.013). Training runs in
        `channels_last` memory format (faster oneDNN/cuDNN convolutions); the returned weights are contiguous.

        Args:
            images:
                The few shots (5–10 is typical): a list of `PIL.Image.Image`, a folder of image files, a `numpy`
                array `[N, H, W, C]` (`uint8` in `[0, 255]` or float in `[0, 1]`), a `torch.Tensor` `[N, C, H, W]`
                with values in `[-1, 1]`, or a `datasets.Dataset` with an `image_column`. Images are resized (shorter
                side) and center-cropped to the generator's `sample_size`, converted to its channel count, and
                transparent pixels are composited on white.
            num_steps (`int`, defaults to 200): GAN steps (one discriminator and one generator update each).
            learning_rate (`float`, defaults to 2e-4): Adam learning rate of both networks (betas `(0.0, 0.99)`).
            batch_size (`int`, defaults to 4): real images per step, drawn with replacement from the shots.
            mixed_precision (`str`, defaults to `"no"`): `"auto"`, `"no"`, `"bf16"` (CPU or GPU) or `"fp16"` (GPU
                only; a `ValueError` on CPU, where Accelerate would silently ignore it). `"auto"` takes `"bf16"` where
                the device computes bf16 natively (a CUDA GPU with bf16 support; a CPU with AVX512-BF16, AMX or ARM
                BF16) and `"no"` elsewhere (see [`~metagan_hub.training.gan_step.resolve_mixed_precision`]); an
                explicit `"bf16"` on a CPU without native bf16 is emulated, about 10x slower than `"no"`, and logs a
                warning. The default `"no"` gives the same arithmetic on every machine. The adaptation record
                (`card_info["adaptation"]`) keeps both `requested_mixed_precision` and the `mixed_precision` the steps
                ran in. Applied with autocast per call, so different calls in one process may use different
                precisions. With `"bf16"` the steps run on bf16 copies of the networks while Adam updates float32
                master weights, which are what is returned.
            loss (`str`, defaults to `"nonsaturating"`): `"nonsaturating"`, `"hinge"` or `"wgan-gp"`.
            r1_gamma (`float`, defaults to 1.0): R1 penalty weight on real images (non-saturating and hinge). 1.0
                (10x the 0.1 of earlier releases) was chosen by the few-shot benchmark: on 30 kanji, 10 digit and 30
                font-glyph classes it keeps recognisability and raises recall (see the bundled checkpoint's
                experiment log).
            r1_interval (`int`, defaults to 4): lazy R1 — compute the penalty (weighted by `r1_gamma * r1_interval`)
                only every `r1_interval` steps, which skips its double backward pass on the other steps.
            augment (`tuple[str]` or `None`): DiffAugment policies applied to real and fake images in both steps,
                from `("translation", "cutout", "color")`; `None` or `()` for none.
            freeze_discriminator_blocks (`int`, defaults to 1): freeze the discriminator's input convolution and
                its lowest N blocks (FreezeD); 0 trains the whole discriminator.
            ema_decay (`float`, *optional*): keep an exponential moving average of the generator weights
                (`diffusers.training_utils.EMAModel`) and return the EMA generator. The decay at update `t` is
                `min(ema_decay, (1 + t) / (10 + t))`, so over 200 steps every value from 0.96 up gives the same
                weights. With the other options at their defaults, 0.99 lowered KID a little and raised recall and
                the copy rate (the bundled model's experiment log, "What the samples fail to vary").
            lora_rank (`int`, *optional*): train only a LoRA adapter of this rank on the generator (needs the
                `lora` extra), at 5x `learning_rate` (`LORA_LR_MULTIPLIER`; the discriminator keeps the rate); save
                it alone with [`save_lora_weights`] or `push_to_hub(..., lora_only=True)`. Smaller to share, but
                less faithful than full adaptation (rank 16, 200 steps: recognised 0.09 less often on 30 kanji
                classes, 0.07 on font glyphs, as often on digits).
            generator (`torch.Generator`, *optional*): source of all randomness; the same images, arguments and
                seed give bit-identical adapted weights on CPU.
            callback (`Callable`, *optional*): `callback(step, logs)` after every step with the step's losses;
                return `True` to stop early.
            accelerator (`accelerate.Accelerator`, *optional*): an existing accelerator (e.g. of a training script)
                whose device is used and whose main process alone shows the progress bar.
            image_column (`str`, defaults to `"image"`): the image column when `images` is a `datasets.Dataset`.
            snapshot_steps (`Sequence[int]`, *optional*): after these numbers of completed steps (0 = the starting
                weights), call `snapshot_callback(steps_done, generator)` with an independent eval-mode copy of the
                generator as `adapt()` would return it at that point: adaptation curves from one run. The time spent
                in snapshots is not counted in the recorded wall time.
            snapshot_callback (`Callable`, *optional*): see `snapshot_steps`.
            diversity_loss (`str`, *optional*, defaults to `None`): a diversity-preserving term that keeps the
                variation of the starting generator while the copy learns the shots (see
                `metagan_hub/training/diversity.py`): `"cdc"` (cross-domain correspondence, Ojha et al. 2021: the
                pairwise similarity structure of a batch at every generator block must stay the starting
                generator's, plus anchor regions with a patch-level discriminator), `"dcl"` (dual contrastive
                learning, Zhao et al. 2022: each adapted sample must stay closest to the starting generator's sample
                of the same latent, in generator and discriminator features) or `"mixdl"` (mixup-based distance
                learning, Kong et al. 2022: a sample made from a mix of latents must resemble each of their samples
                in proportion to its mixing coefficient; it adds that many mixes to each generator update and needs
                no starting generator). `None` (default, today's behaviour) adds nothing. The starting generator is
                kept once per call (no copy when it already is float32 on the training device; with `lora_rank` it
                is the base model without the adapter) and is not modified.
            diversity_weight (`float`, *optional*): weight of the term; `None` = the method's default (`"cdc"`:
                1000 / (N - 1) for a generator batch of N, the paper's 1000 on its per-entry mean; `"dcl"`: 1.0 for
                each of its two terms; `"mixdl"`: 1000 / N).
            diversity_batch_size (`int`, *optional*): latents per generator update while a term is on (the pairwise
                terms need >= 3, `"mixdl"` >= 2 and adds as many mixes); `None` = `batch_size`.
            diversity_interval (`int`, *optional*): run the term on every this many generator updates only, weighted
                by the interval (lazy regularization, as lazy R1: about the same average strength for part of the
                cost; with `"mixdl"` the updates in between have no mixes); `None` = every update.
            cdc_anchor_interval (`int`, *optional*): with `"cdc"`, every this many steps the latents are drawn near
                one anchor latent per shot and judged by the image-level discriminator, the other steps anywhere and
                judged per patch by a new patch-level head; `None` = the paper's 4, `0` = no anchor regions.
            layer_lr_scales (`bool`, defaults to `True`): when this checkpoint carries meta-learned per-tensor
                learning-rate scales (`card_info["adaptation_lr_scales"]`, written by `train_metagan.py
                --learn_inner_lr`), run each tensor at `learning_rate * scale`; `False` uses one learning rate for all.
                Checkpoints without scales (such as the bundled one) are not affected.
            mode_seeking_weight (`float`, defaults to 0.0): weight of the mode-seeking term of MSGAN (Mao et al.
                2019) added to the generator loss: images of two latents must differ in proportion to the latents,
                against samples collapsing onto a few images (see
                [`~metagan_hub.training.losses.mode_seeking_loss`]). Needs a generator batch of at least 2; `0`
                (default) adds nothing.
            copy_repulsion_weight (`float`, defaults to 0.0): weight of a term in the generator loss that pushes
                generated images away from the shots where they are near-copies by the sampling filter's rule
                (`avoid_copies_of`, margin 1), judged in the features of the discriminator being adapted (see
                [`~metagan_hub.pipelines.copy_filter.near_copy_repulsion`]), without the filter's sampling cost.
                Measured at 3 with `shot_augment=1.25` (bundled model's experiment log): on 40 kanji classes the
                copy rate fell from 0.023 to 0.017 for 0.01 recognisability, less than the filter achieves; on
                digits it broke simple classes (digit 1 recognised 0.49 less often), so it stays off. 1.14x the
                adaptation time. Needs at least 2 images; `0` (default) adds nothing.
            copy_repulsion_margin (`float`, defaults to 1.0): the term's `copy_margin`: images closer to a shot than
                this times the shots' median nearest-other distance are pushed.
            shot_augment (`float`, defaults to 0.0): strength (0 to 3) of a random small affine map of the real images
                of each step (at 1: rotation up to 10 degrees, ±10% scale, shear 0.1, shift 5%; see
                [`~metagan_hub.training.augment.random_affine`]). Unlike `augment`, it changes what counts as real, so
                the generator learns varied versions of the shots. At 1, with the default tone curve (30 kanji / 30
                font-glyph / 10 digit classes, bundled model's experiment log): recall +0.06 / +0.10 / +0.08, wider
                spread, fewer copies of the shots (kanji copy rate 0.105 -> 0.043), recognisability -0.05 / -0.06 /
                -0.02. With `latent_scale=1.5` when sampling, it is the card's variety setting. `0` (default) is
                off.
            tone_match (`bool`, *optional*, defaults to `None`): after the GAN steps, fit a monotone output tone
                curve (one per channel, stored in the generator: [`~MetaGANGenerator.set_tone_curve`]) that maps the
                pixel values of the adapted generator's samples onto the distribution of the shots' pixel values
                (histogram matching over 256 samples of fixed latents; the GAN steps are the same as without it).
                `None` (default) turns it on for full adaptation and off with `lora_rank` (an adapter file would not
                carry the curve; `True` with `lora_rank` is an error). Chosen by the few-shot benchmark: the samples
                get the shots' crisp edges instead of grey haze, recall +0.10 on 30 kanji classes (+0.04 font
                glyphs, +0.05 digits) with lower or equal KID at the same recognisability (bundled model's
                experiment log, "Tone matching"). `False` gives the plain `tanh` output.
            lr_scheduler (`str`, defaults to `"constant"`): learning-rate schedule of both networks over the
                `num_steps` steps, by name through `diffusers.optimization.get_scheduler`: `"constant"`,
                `"constant_with_warmup"`, `"linear"`, `"cosine"`, `"cosine_with_restarts"` or `"polynomial"` (the
                decaying ones end near 0 at `num_steps`). Each step's rate is in the `lr` entry of the step's logs
                (`callback`, `card_info["adaptation"]["losses"]`).
            lr_warmup_steps (`int`, defaults to 0): steps of linear warm-up from 0 at the start of the schedule
                (fewer than `num_steps`; not with `"constant"`).
            copy_stop (`float`, *optional*): stop adapting once the generator starts to copy the shots. Every
                `copy_stop_interval` steps it draws 64 monitor images (fixed latents of their own seed, times 1.25);
                when more than this share of them lie closer than `copy_stop_distance` to a shot in the copy
                encoder's features, the GAN steps stop and the generator of the check before is returned (never one
                of fewer than `copy_stop_min_steps` steps; the discriminator as it is at the stop; the tone curve is
                fitted to the returned generator). The GAN steps up to the stop are the same as without it. Needs a
                pipeline with a `copy_encoder`. Some classes' generators collapse onto the shots late in
                adaptation; stopping them removes most of their copies (a font glyph that copied in 76-87% of its
                samples: 1.5-3.5%). Measured in the variety card. `None` (default): off. Each check's share is
                recorded in `card_info["adaptation"]["copy_checks"]`.
            copy_stop_interval (`int`, defaults to 25): steps between two checks of `copy_stop`.
            copy_stop_distance (`float` or `str`, defaults to `"augment"`): the near-copy distance of `copy_stop` in
                the copy encoder's unit-length features. `"augment"` measures it on the shots: the median distance
                between a shot and small random affine versions of it (the distortions of `shot_augment=1`;
                [`~metagan_hub.pipelines.copy_filter.augmented_shot_distance`], recorded as
                `copy_stop_distance_value`), so it follows the scale the encoder gives a domain. A number is used as
                it is: a fixed 0.3 fits kanji in the bundled encoder but stopped every digit class far too early.
            copy_stop_min_steps (`int`, defaults to 50): the fewest steps a stop may return (0: any check's);
                checks that would return fewer only record their share. Where no check can stop (a run shorter
                than two intervals, or than this plus one), a warning says so and the checks are only recorded.
            shot_reconstruction_weight (`float`, defaults to 0.0): weight of a term that ties each shot to a latent
                and has the generator draw the shot there: before the GAN steps, each shot gets the latent, among 512
                draws of a seed of their own, whose image under the starting generator is nearest it in pixels
                ([`~metagan_hub.training.diversity.shot_anchor_latents`]); every generator update then also draws
                those latents' images (up to 8 shots per update, in its own forward pass) and adds this weight times
                their mean absolute pixel difference from the shots
                ([`~metagan_hub.training.diversity.ShotReconstruction`]). Held apart in latent space, the shots are
                not averaged into one mode. On the bundled model (30 kanji / 30 font-glyph / 10 digit classes, 200
                steps, its experiment log), at 10: as recognisable as without (+0.008 / +0.016 / -0.018), recall
                +0.12 / +0.21 / +0.12, KID 0.52x / 0.52x / 0.50x the pretrain baseline's (without: 0.67x / 0.86x /
                0.72x), copy rate +0.06 on kanji and font glyphs; at 30: recall +0.18 / +0.26 / +0.16 for
                recognisability -0.04 / -0.05 / -0.08. 1.24x the time per step in fp32 (1.29x in bf16). With
                `copy_repulsion_weight=3.0` as well (which never sees the shot latents' images), kanji and font
                glyphs copy about as often as without either term, keeping most of the recall and KID gain, but
                digits lose 0.06-0.14 recognisability (1.37x per step). `0` (default) adds nothing.

        Returns:
            [`MetaGANPipeline`]: the adapted pipeline; `adapted.card_info["adaptation"]` records per-step losses,
            wall time, shots, steps, seed and options, and goes into its model card (with `base_model`).

        Example:

        ```py
        >>> import torch
        >>> from metagan_hub import MetaGANPipeline

        >>> pipe = MetaGANPipeline.from_pretrained("checkpoints/metagan-kanji-32")  # doctest: +SKIP
        >>> adapted = pipe.adapt("my_five_glyphs/", num_steps=200, mixed_precision="auto",
        ...                      generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
        >>> images = adapted(batch_size=16, generator=torch.Generator().manual_seed(0)).images  # doctest: +SKIP
        ```
        """
        from ..training.adaptation import adapt_pipeline

        return adapt_pipeline(
            self,
            images,
            num_steps=num_steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            mixed_precision=mixed_precision,
            loss=loss,
            r1_gamma=r1_gamma,
            r1_interval=r1_interval,
            augment=augment,
            freeze_discriminator_blocks=freeze_discriminator_blocks,
            ema_decay=ema_decay,
            lora_rank=lora_rank,
            generator=generator,
            callback=callback,
            accelerator=accelerator,
            image_column=image_column,
            snapshot_steps=snapshot_steps,
            snapshot_callback=snapshot_callback,
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

    @property
    def copy_filter_features(self) -> str | None:
        """
        Where the near-copy filter (`avoid_copies_of`) judges: `"encoder"` (the pipeline's copy encoder) when it has
        one, else `"discriminator"`; `None` when it has neither, and the filter cannot run.

        Example:

        ```py
        >>> from metagan_hub import MetaGANDiscriminator, MetaGANGenerator, MetaGANPipeline

        >>> generator = MetaGANGenerator(sample_size=32)
        >>> MetaGANPipeline(generator=generator).copy_filter_features is None
        True
        >>> MetaGANPipeline(generator=generator, discriminator=MetaGANDiscriminator()).copy_filter_features
        'discriminator'
        ```
        """
        if self.copy_encoder is not None:
            return "encoder"
        return "discriminator" if self.discriminator is not None else None

    # ------------------------------------------------------------------ LoRA
    @property
    def has_lora(self) -> bool:
        """Whether the generator carries a live (unfused) LoRA adapter."""
        return bool(getattr(self.generator, "peft_config", None))

    def _write_card_info(self, save_directory: str | os.PathLike) -> None:
        """Write `card_info` to `metagan_hub.json` as strict JSON, without the runtime-only `name_or_path` and with
        no local path as `base_model` (see [`~metagan_hub.hub.safety.public_card_info`]): a local path would leak
        into shared files and mean nothing elsewhere. Non-finite numbers (e.g. a diverged final loss) become `null`,
        with a warning."""
        path = os.path.join(save_directory, CARD_INFO_NAME)
        nonfinite = write_json_strict(public_card_info(self.card_info), path)
        if nonfinite:
            logger.warning("%s: non-finite values written as null: %s", path, ", ".join(nonfinite[:10]))

    def save_lora_weights(
        self,
        save_directory: str | os.PathLike,
        weight_name: str = LORA_WEIGHT_NAME,
        repo_id: str | None = None,
        card_images: Sequence[str] = (),
    ) -> str:
        """
        Save only the generator's LoRA adapter (safetensors, with its LoRA config in the file's metadata) plus a
        model card pointing at the base model. Returns the path of the weight file. `card_images`: image files
        already in `save_directory` (e.g. a sample grid) that the card shows, as in [`save_pretrained`].

        Example:

        ```py
        >>> adapted = pipe.adapt(images, lora_rank=16)  # doctest: +SKIP
        >>> adapted.save_lora_weights("my-lora")  # doctest: +SKIP
        >>> MetaGANPipeline.from_pretrained(base).load_lora_weights("my-lora")  # doctest: +SKIP
        ```
        """
        if not self.has_lora:
            raise ValueError("This pipeline has no LoRA adapter: adapt it with `lora_rank=` first.")
        from ..hub.model_card import render_lora_card

        check_finite_weights({"generator": self.generator}, action="save")
        card_images = check_card_images(card_images, save_directory)
        os.makedirs(save_directory, exist_ok=True)
        modeling_logger = logging.getLogger("diffusers.models.modeling_utils")
        quiet = _EmptyKeepInFp32Warning()
        modeling_logger.addFilter(quiet)
        try:
            self.generator.save_lora_adapter(save_directory, weight_name=weight_name, safe_serialization=True)
        finally:
            modeling_logger.removeFilter(quiet)
        # the raw base model: the card keeps a Hub id, and names a local folder by its last component only
        card = render_lora_card(
            self.card_info.get("base_model"), weight_name, repo_id, self.card_info.get("adaptation"), card_images
        )
        card.save(os.path.join(save_directory, "README.md"))
        self._write_card_info(save_directory)
        return os.path.join(save_directory, weight_name)

    def load_lora_weights(
        self, pretrained_model_name_or_path: str | os.PathLike, weight_name: str = LORA_WEIGHT_NAME, **hub_kwargs
    ) -> MetaGANPipeline:
        """
        Load a LoRA adapter saved by [`save_lora_weights`] (a folder or a Hub repo id) into the generator, in place.
        Returns `self` so calls can be chained.
        """
        if self.has_lora:
            raise ValueError("The generator already has a LoRA adapter; call `fuse_lora()` or reload the base first.")
        path = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(path):
            if path.count("/") != 1 or path.startswith((".", "/", "~")):
                raise ValueError(f"`pretrained_model_name_or_path` must be a folder or a Hub repo id, got {path!r}.")
            from huggingface_hub import snapshot_download

            with bounded_hub_requests(hub_kwargs.pop("timeout", None)) as seconds:
                path = snapshot_download(
                    path,
                    allow_patterns=[weight_name, CARD_INFO_NAME, "README.md"],
                    etag_timeout=seconds,
                    **hub_kwargs,
                )
        if not os.path.isfile(os.path.join(path, weight_name)):
            raise ValueError(f"{os.fspath(pretrained_model_name_or_path)!r} has no LoRA weight file {weight_name!r}.")
        self.generator.load_lora_adapter(path, prefix=None, weight_name=weight_name, adapter_name="default")
        adapter_info = read_card_info(path)
        if adapter_info is not None and "adaptation" in adapter_info:
            self.card_info["adaptation"] = adapter_info["adaptation"]
        return self

    def fuse_lora(self) -> MetaGANPipeline:
        """Merge the generator's LoRA adapter into its weights and remove the adapter (for full-weight export).
        Returns `self`."""
        if not self.has_lora:
            raise ValueError("This pipeline has no LoRA adapter to fuse.")
        self.generator.fuse_lora()
        self.generator.unload_lora()
        return self

    # ------------------------------------------------------------------ saving
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        card_images: Sequence[str] = (),
        **kwargs,
    ) -> None:
        """
        Save the pipeline: `model_index.json`, `generator/` and `discriminator/` (config + safetensors), a model
        card `README.md`, the card metadata `metagan_hub.json`, and a small re-export file that lets plain diffusers
        load the folder with `trust_remote_code=True`.

        Args:
            save_directory (`str` or `os.PathLike`): the folder to write (created if needed).
            safe_serialization (`bool`, defaults to `True`): must stay `True`; pickles are never written.
            variant (`str`, *optional*): `"fp16"` or `"bf16"`: a file label, as in diffusers — the weights are
                written as they are, to `diffusion_pytorch_model.<variant>.safetensors` (load back with `variant=`).
                Cast first for smaller files: `pipe.to(torch.float16).save_pretrained(folder, variant="fp16")`.
            push_to_hub (`bool`, defaults to `False`): also upload to `repo_id` (see [`push_to_hub`]).
            repo_id (`str`, *optional*): the repo id used in the model card's usage snippet (and for `push_to_hub`).
            card_images (`Sequence[str]`, *optional*): file names of images already in `save_directory` (e.g. the
                shots and a sample grid) that the model card shows under its summary; a missing file, an absolute
                path or a name outside the folder raises a `ValueError` before anything is written.

        Raises:
            [`~metagan_hub.hub.safety.NonFiniteWeightsError`]: a weight holds NaN or infinite values (the message
                names the component and tensor); nothing is written.

        Example:

        ```py
        >>> import os
        >>> from diffusers.utils import make_image_grid

        >>> os.makedirs("my-gan", exist_ok=True)  # doctest: +SKIP
        >>> make_image_grid(adapted(batch_size=16).images, rows=2, cols=8).save("my-gan/samples.png")  # doctest: +SKIP
        >>> adapted.save_pretrained("my-gan", card_images=["samples.png"])  # doctest: +SKIP
        ```

        Configs never record where the pipeline was loaded from (`_name_or_path`), and a `base_model` that is a local
        folder is not written (see [`~metagan_hub.hub.safety.public_card_info`]).
        """
        if not safe_serialization:
            raise ValueError("`safe_serialization=False` is not supported: metagan_hub only writes safetensors.")
        if variant is not None and variant not in VARIANTS:
            raise ValueError(f"`variant` must be None or one of {VARIANTS}, got {variant!r}.")
        if push_to_hub:
            if repo_id is None:
                raise ValueError("`repo_id` is required with `push_to_hub=True`.")
            self.push_to_hub(
                repo_id, variant=variant, save_directory=save_directory, card_images=card_images, **kwargs
            )
            return
        check_finite_weights(self.components, action="save")
        card_images = check_card_images(card_images, save_directory)
        os.makedirs(save_directory, exist_ok=True)
        target = self
        if self.has_lora:
            # a live adapter would be saved as `base_layer` keys that reload as random weights: save a fused copy
            target = type(self)(
                generator=copy.deepcopy(self.generator),
                discriminator=self.discriminator,
                card_info=self.card_info,
                copy_encoder=self.copy_encoder,
            ).fuse_lora()
        DiffusionPipeline.save_pretrained(target, save_directory, safe_serialization=True, variant=variant)
        self._write_extras(save_directory, repo_id, card_images)
        strip_local_config_keys(save_directory)

    def _write_extras(
        self, save_directory: str | os.PathLike, repo_id: str | None, card_images: Sequence[str] = ()
    ) -> None:
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        index["_class_name"] = [REEXPORT_MODULE, type(self).__name__]
        index.pop("card_info", None)
        index.pop("_name_or_path", None)
        with open(index_path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")
        with open(os.path.join(save_directory, f"{REEXPORT_MODULE}.py"), "w", encoding="utf-8") as f:
            f.write(REEXPORT_SOURCE)
        # Per-component re-exports named after the module recorded in model_index.json: diffusers' Hub download
        # refuses third-party components unless `<component>/<module>.py` exists in the repo (and then, with
        # `trust_remote_code=True`, imports the class from that file — which only imports the installed package).
        for name in COMPONENTS:
            entry = index.get(name)
            if isinstance(entry, list) and entry[0]:
                with open(os.path.join(save_directory, name, f"{entry[0]}.py"), "w", encoding="utf-8") as f:
                    f.write(reexport_source(entry[0], entry[1]))
        self._write_card_info(save_directory)
        render_pipeline_card(self, repo_id, card_images).save(os.path.join(save_directory, "README.md"))

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        variant: str | None = None,
        save_directory: str | os.PathLike | None = None,
        lora_only: bool = False,
        timeout: float | None = None,
        card_images: Sequence[str] = (),
        **kwargs,
    ) -> str:
        """
        Save the pipeline (safetensors, configs, model card) and upload it to `repo_id` in one commit.

        `checkpoint-*` folders, optimizer state and pickles are never uploaded. Weights with NaN or infinite values
        are refused before anything is written. What would be uploaded (configs, card, JSON sidecars) is scanned for
        absolute local paths and Hub tokens first ([`~metagan_hub.hub.upload.LocalDataLeakError`], nothing sent). A
        failed upload (HTTP error, refused or dropped connection, no answer within `timeout`) raises
        [`~metagan_hub.hub.upload.HubUploadError`] and leaves local files (and `save_directory`) intact.

        Args:
            repo_id (`str`): `"namespace/name"` on the Hub.
            commit_message (`str`, *optional*): the commit message.
            private (`bool`, *optional*): create the repository as private.
            token (`str`, *optional*): Hub token; defaults to the cached login.
            create_pr (`bool`): open a pull request instead of committing.
            variant (`str`, *optional*): `"fp16"` or `"bf16"` weights.
            save_directory (`str`, *optional*): write the files here first and keep them (a temporary folder is
                used and removed when not given).
            lora_only (`bool`, defaults to `False`): upload only the generator's LoRA adapter (tens of KB) and a
                model card pointing at the base model (see [`save_lora_weights`]).
            timeout (`float`, *optional*): the longest wait in seconds for each Hub request (repo creation, upload,
                commit); defaults to the `METAGAN_HUB_TIMEOUT` environment variable, else 60 s. A Hub that does not
                answer in time raises [`~metagan_hub.hub.upload.HubUploadError`].
            card_images (`Sequence[str]`, *optional*): image files already in `save_directory` (needed then) that
                the model card shows and the upload carries (see [`save_pretrained`]).

        Returns:
            `str`: the URL of the commit (or pull request).

        Example:

        ```py
        >>> url = pipe.push_to_hub("me/metagan-my-glyph")  # doctest: +SKIP
        ```
        """
        if card_images and save_directory is None:
            raise ValueError(
                f"`card_images`={list(card_images)!r} needs `save_directory`: the folder that holds the images and is "
                "uploaded."
            )
        with tempfile.TemporaryDirectory() as tmp:
            folder = os.fspath(save_directory) if save_directory is not None else tmp
            if lora_only:
                self.save_lora_weights(folder, repo_id=repo_id, card_images=card_images)
            else:
                self.save_pretrained(folder, variant=variant, repo_id=repo_id, card_images=card_images)
            return upload_folder_to_hub(
                folder,
                repo_id,
                token=token,
                private=private,
                commit_message=commit_message or "Upload Meta-GAN pipeline with metagan_hub",
                create_pr=create_pr,
                timeout=timeout,
            )

    # ------------------------------------------------------------------ loading
    @classmethod
    def load_config(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Read `model_index.json`, mapping the re-export entry `[file, class]` back to this class's name so that
        loading through this class never executes the folder's `.py` file."""
        out = super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        config = out[0] if isinstance(out, tuple) else out
        class_name = config.get("_class_name")
        if isinstance(class_name, list | tuple) and len(class_name) == 2 and class_name[0] == REEXPORT_MODULE:
            config["_class_name"] = class_name[1]
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> MetaGANPipeline:
        r"""
        Load a Meta-GAN pipeline from a local folder or a Hub repo id.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`):
                A folder written by [`save_pretrained`], or a Hub repo id such as `"org/metagan-kanji-32"`.
            dtype (`torch.dtype` or `dict`, *optional*): load the weights in this dtype, or per component:
                `{"generator": torch.bfloat16, "default": torch.float32}` (components not named get `"default"`,
                else float32), as in diffusers.
            torch_dtype (`torch.dtype` or `dict`, *optional*): deprecated alias of `dtype` (diffusers' deprecation
                warning); passing both raises a `ValueError`.
            variant (`str`, *optional*): `"fp16"` or `"bf16"` weight files (`diffusion_pytorch_model.<variant>
                .safetensors`); a variant the checkpoint lacks raises a `ValueError` naming it.
            low_cpu_mem_usage (`bool`, *optional*): passed to each model's `from_pretrained`.
            timeout (`float`, *optional*): the longest wait in seconds for each Hub request (default: the
                `METAGAN_HUB_TIMEOUT` environment variable, else 60 s); a Hub that does not answer raises `OSError`.
            revision (`str`, *optional*): branch, tag or commit of a Hub repo.
            token (`str`, *optional*): Hub token.
            cache_dir (`str`, *optional*): Hub cache folder.
            local_files_only (`bool`, *optional*): use only the local Hub cache (works offline).
            force_download (`bool`, *optional*): re-download files present in the cache.
            kwargs: passed on to [`~diffusers.DiffusionPipeline.from_pretrained`] (e.g. `discriminator=None` to
                skip loading the discriminator).

        Returns:
            [`MetaGANPipeline`]
        """
        path = os.fspath(pretrained_model_name_or_path)
        hub_keys = ("revision", "token", "cache_dir", "local_files_only", "force_download", "proxies")
        hub_kwargs = {k: kwargs.pop(k) for k in hub_keys if k in kwargs}
        timeout = kwargs.pop("timeout", None)
        # 1. dtype as diffusers takes it: `dtype=` (a torch.dtype, or a per-component dict with an optional
        #    "default"), or the deprecated `torch_dtype=` with diffusers' own deprecation warning
        dtype = _resolve_dtype(kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None))
        cls._check_dtype(dtype)
        variant = kwargs.pop("variant", None)
        if variant is not None and variant not in VARIANTS:
            raise ValueError(f"`variant` must be None or one of {VARIANTS}, got {variant!r}.")
        # 2. find the folder (download a Hub repo id, with bounded waits)
        if not os.path.isdir(path):
            if os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") != 1:
                raise ValueError(
                    f"`pretrained_model_name_or_path` must be a folder containing model_index.json or a Hub repo id "
                    f"'namespace/name', got {path!r} (no such folder)."
                )
            path = cls._snapshot(path, variant=variant, timeout=timeout, **hub_kwargs)
        index = os.path.join(path, "model_index.json")
        if not os.path.isfile(index):
            raise ValueError(
                f"{pretrained_model_name_or_path!r} is not a Meta-GAN pipeline: it has no model_index.json. "
                "Expected a folder written by MetaGANPipeline.save_pretrained "
                "(model_index.json, generator/, discriminator/)."
            )
        cls._check_index(index)
        card_info = read_card_info(path)  # before any weights are read: a malformed sidecar fails fast
        # 3. load the components here (never through the folder's re-export files, which only plain diffusers with
        #    `trust_remote_code=True` uses) and hand them to diffusers
        for name, model_cls in COMPONENTS.items():
            if name in kwargs:
                continue
            folder = os.path.join(path, name)
            if not os.path.isfile(os.path.join(folder, "config.json")):
                if name != "generator":
                    kwargs[name] = None
                continue
            cls._check_weight_file(pretrained_model_name_or_path, folder, name, variant)
            model_kwargs: dict[str, Any] = {"use_safetensors": True}
            sub_dtype = dtype.get(name, dtype.get("default", torch.float32)) if isinstance(dtype, dict) else dtype
            if sub_dtype is not None:
                model_kwargs["dtype"] = sub_dtype
            if variant is not None:
                model_kwargs["variant"] = variant
            if "low_cpu_mem_usage" in kwargs:
                model_kwargs["low_cpu_mem_usage"] = kwargs["low_cpu_mem_usage"]
            kwargs[name] = model_cls.from_pretrained(path, subfolder=name, **model_kwargs)
            logger.info(
                "Loaded %s as %s from `%s` subfolder of %s.",
                name,
                model_cls.__name__,
                name,
                os.fspath(pretrained_model_name_or_path),
            )
        kwargs.pop("low_cpu_mem_usage", None)
        pipe = super().from_pretrained(path, **kwargs)
        pipe.card_info = dict(card_info or {})
        pipe.card_info["name_or_path"] = os.fspath(pretrained_model_name_or_path)
        return pipe

    @staticmethod
    def _check_dtype(dtype: Any) -> None:
        if dtype is None or isinstance(dtype, torch.dtype):
            return
        if isinstance(dtype, dict):
            allowed = [*COMPONENTS, "default"]
            unknown = set(dtype) - set(allowed)
            if unknown:
                raise ValueError(
                    f"`dtype` dict has unknown component(s) {sorted(unknown)}; allowed keys: "
                    + ", ".join(f"'{k}'" for k in allowed)
                    + "."
                )
            bad = {k: v for k, v in dtype.items() if not isinstance(v, torch.dtype)}
            if bad:
                raise TypeError(f"`dtype` dict values must be torch.dtype objects, got {bad!r}.")
            return
        raise TypeError(
            f"`dtype` must be a torch.dtype or a dict of them per component (e.g. {{'generator': torch.bfloat16, "
            f"'default': torch.float32}}), got {dtype!r}."
        )

    @staticmethod
    def _check_weight_file(source: str | os.PathLike, folder: str, name: str, variant: str | None) -> None:
        """Fail like diffusers (a `ValueError` naming the variant) when the weights asked for are not there, instead
        of letting the model loader fall back to a pickle file name."""
        files = sorted(f for f in os.listdir(folder) if f.endswith((".safetensors", ".json")) and f != "config.json")
        stem = "diffusion_pytorch_model"
        wanted = f"{stem}.{variant}.safetensors" if variant else f"{stem}.safetensors"
        sharded = f"{stem}.safetensors.index.{variant}.json" if variant else f"{stem}.safetensors.index.json"
        if wanted in files or sharded in files:
            return
        variants = sorted({f.split(".")[1] for f in files if f.startswith(stem + ".") and f.count(".") == 2})
        if variant is not None:
            raise ValueError(
                f"You are trying to load `variant={variant!r}` from {os.fspath(source)!r}, but component `{name}` has "
                f"no {wanted} (its weight files: {files or 'none'}). Load without `variant`"
                + (f" or with one of {variants}" if variants else "")
                + f", or save that variant with save_pretrained(..., variant={variant!r})."
            )
        raise ValueError(
            f"Component `{name}` of {os.fspath(source)!r} has no {wanted}"
            + (
                f"; it has the variant(s) {variants}: pass `variant=`."
                if variants
                else f" (found: {files or 'none'})."
            )
        )

    def register_to_config(self, **kwargs) -> None:
        """diffusers' `register_to_config`; when plain `DiffusionPipeline.from_pretrained` records where it loaded
        this pipeline from (`_name_or_path`), the folder's `metagan_hub.json` card info is read as well, so that a
        later `save_pretrained` / `push_to_hub` keeps the training record."""
        super().register_to_config(**kwargs)
        source = kwargs.get("_name_or_path")
        if source is None or getattr(self, "card_info", None):
            return
        info = self._find_card_info(os.fspath(source))
        if info is not None:
            self.card_info = {**info, "name_or_path": os.fspath(source)}

    @staticmethod
    def _find_card_info(source: str) -> dict[str, Any] | None:
        if os.path.isdir(source):
            return read_card_info(source)
        if source.count("/") != 1 or source.startswith((".", "/", "~")):
            return None
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
        from huggingface_hub.errors import EntryNotFoundError

        cached = try_to_load_from_cache(source, CARD_INFO_NAME)
        if not isinstance(cached, str):
            if constants.HF_HUB_OFFLINE:
                return None
            try:
                with bounded_hub_requests() as seconds:
                    cached = hf_hub_download(source, CARD_INFO_NAME, etag_timeout=seconds)
            except EntryNotFoundError:
                return None
            except Exception as err:  # the pipeline itself loaded; only its card metadata is missing
                logger.warning(
                    "Could not fetch %s of %s (%s); its model card will lack it.",
                    CARD_INFO_NAME,
                    source,
                    err,
                )
                return None
        return read_card_info(os.path.dirname(cached))

    @staticmethod
    def _check_index(index_path: str) -> None:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        for name, cls_name in ((n, c.__name__) for n, c in COMPONENTS.items()):
            entry = index.get(name)
            if name == "generator" and entry is None:
                raise ValueError(f"{index_path} has no `generator` entry; expected [module, '{cls_name}'].")
            if entry is None or entry == [None, None]:
                continue
            if not (isinstance(entry, list) and len(entry) == 2 and entry[1] == cls_name):
                raise ValueError(
                    f"{index_path}: component `{name}` is {entry!r}, expected a [module, '{cls_name}'] entry from "
                    "metagan_hub. Load other pipelines with diffusers.DiffusionPipeline."
                )

    @staticmethod
    def _snapshot(repo_id: str, variant: str | None = None, timeout: float | None = None, **hub_kwargs) -> str:
        """Download (or find in the cache) the files of a Hub repo that this pipeline needs; returns the folder.
        Every request waits at most `timeout` seconds (see [`~metagan_hub.hub.network.resolve_timeout`])."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        from ..hub.network import NETWORK_ERRORS, describe_network_error

        weights = f"*.{variant}.safetensors" if variant else "*/diffusion_pytorch_model.safetensors"
        allow = ["model_index.json", "*.json", "README.md", weights]
        seconds = resolve_timeout(timeout)
        try:
            with bounded_hub_requests(seconds):
                return snapshot_download(repo_id, allow_patterns=allow, etag_timeout=seconds, **hub_kwargs)
        except NETWORK_ERRORS as err:
            raise OSError(
                f"Could not download {repo_id!r} from the Hub: {describe_network_error(err, seconds)}. Nothing was "
                "loaded; retry, or load from the local cache with `local_files_only=True` if it was downloaded before."
            ) from err
        except LocalEntryNotFoundError as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, NETWORK_ERRORS):
                raise OSError(
                    f"Could not download {repo_id!r} from the Hub and it is not in the local cache: "
                    f"{describe_network_error(cause, seconds)}. Retry once the Hub is reachable."
                ) from err
            raise


MetaGANPipeline.__call__.__doc__ += EXAMPLE_DOC_STRING
