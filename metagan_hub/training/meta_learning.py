# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Meta-learning outer loops for GANs: Reptile (as in FIGR), first-order MAML, and the pooled-pretraining baseline.

This module does no file or Hub I/O. A [`MetaLearner`] owns the meta-weights (a generator and a discriminator) and
their outer optimizers; [`MetaLearner.meta_step`] takes the few-shot tasks that this process sampled and performs one
outer update. Inner loops always run locally on a private copy of the weights; only the outer update (Reptile
deltas, FOMAML meta-gradients, or pretraining gradients) is averaged across processes with `accelerator.reduce`,
so meta-weights stay identical on every rank. Wrapping the models in DDP would average inner-loop gradients of
different tasks, which is wrong for meta-learning.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .augment import AUGMENT_POLICIES, DiffAugment, check_shot_augment, random_affine
from .checkpointing import config_differences
from .diversity import DiversityRegularizer, check_diversity_options
from .gan_step import GANStepConfig, autocast_context, check_mixed_precision, gan_step, generator_step_loss
from .losses import LOSS_TYPES, WGAN_DRIFT, coverage_loss, discriminator_loss, generator_loss

if TYPE_CHECKING:
    from accelerate import Accelerator

    from .tasks import Task

logger = logging.getLogger(__name__)

ALGORITHMS = ("reptile", "fomaml", "pretrain")
INNER_OPTIMIZERS = ("sgd", "adam")
OUTER_OPTIMIZERS = ("adam", "sgd")
COVERAGE_SPACES = ("pixels", "features")
# learned inner learning-rate scales stay within [1 / MAX_LR_SCALE, MAX_LR_SCALE]
MAX_LR_SCALE = 16.0


@dataclass
class MetaLearningConfig:
    """
    Options of the meta-learning outer loop.

    Args:
        algorithm (`str`): `"reptile"`, `"fomaml"` or `"pretrain"` (ordinary GAN training on all classes pooled).
        loss (`str`): `"nonsaturating"`, `"hinge"` or `"wgan-gp"`.
        inner_steps (`int`): GAN steps per task in the inner loop (for `"pretrain"`: GAN steps per meta step).
        inner_lr (`float`): inner-loop learning rate.
        inner_optimizer (`str`): `"sgd"` (FIGR) or `"adam"` (fresh per task, betas `(0.0, 0.99)`).
        meta_lr (`float`): learning rate of the outer update (and of pretraining).
        outer_optimizer (`str`): `"adam"` (FIGR; betas `(0.9, 0.999)`, or `(0.0, 0.99)` for pretraining) or `"sgd"`
            (plain Reptile: `meta += meta_lr * (adapted - meta)`, so `meta_lr=1` jumps to the adapted weights).
        inner_batch_size (`int`): real images per inner GAN step, drawn with replacement from the task's support.
        r1_gamma (`float`): R1 weight for the non-saturating and hinge losses.
        gp_lambda (`float`): gradient-penalty weight for WGAN-GP.
        wgan_drift (`float`): WGAN-GP drift term weight on `D(real)^2` (0 in the FIGR preset).
        augment (`tuple[str]`): DiffAugment policies, or `()` for none.
        mixed_precision (`str`): `"no"`, `"bf16"`, or `"fp16"` (GPU only).
        max_nonfinite_steps (`int`): meta steps in a row with non-finite losses before stopping with an error.
        mode_seeking_weight (`float`): weight of the MSGAN mode-seeking regularizer
            ([`~metagan_hub.training.losses.mode_seeking_loss`]) in every generator loss: the inner steps and, for
            `"fomaml"`, the query loss (0: off). Counters the loss of sample diversity that meta-learning on a few
            shots per task tends to cause.
        inner_r1_interval (`int`): lazy R1 in the inner loop: the penalty (weighted by `r1_gamma * interval`) only
            every this many inner steps, as `adapt(r1_interval=...)` does (1: every step).
        inner_freeze_discriminator_blocks (`int`): FreezeD in the inner loop (Reptile only): the task copies of the
            discriminator keep its input convolution and lowest N blocks frozen, as `adapt()` does (0: none).
        diversity_loss (`str`, *optional*): a diversity-preserving term in every inner generator step (Reptile and
            FOMAML; not pretraining), `"cdc"` (consistency term only, no anchor regions), `"dcl"` or `"mixdl"`, as
            `adapt(diversity_loss=...)` does; CDC and DCL take the meta-weights of the current meta step as the frozen
            source.
        diversity_weight (`float`, *optional*): its weight (`None`: the method's default, as in `adapt()`).
        learn_inner_lr (`bool`): meta-learn one inner learning-rate scale per parameter tensor (Meta-SGD style, Li et
            al. 2017, first-order): the inner loop runs every tensor at `inner_lr * scale`, and after it the
            derivative of the query loss with respect to `log(scale)`, which to first order is the dot product of
            the query gradient with the tensor's inner-loop displacement, updates the scales with Adam at
            `inner_lr_meta_lr`. Needs query images (Reptile or FOMAML). The scales are bounded to
            `[1 / MAX_LR_SCALE, MAX_LR_SCALE]` and exported with [`MetaLearner.lr_scales`], so that `adapt()` uses
            them.
        inner_lr_meta_lr (`float`): Adam learning rate of the log-scales (with `learn_inner_lr`).
        shot_augment (`float`): strength of a random affine distortion of every inner-loop batch of support images
            (0: off), as `adapt(shot_augment=...)` applies to the shots, so that meta-training can run the inner loop
            of `adapt()`'s variety setting. Query images stay as they are.
        query_coverage_weight (`float`): weight of a query-set coverage term in the outer update (Reptile and
            FOMAML; 0: off). After a task's inner loop, `query_coverage_samples` samples of the adapted generator
            are drawn and [`~metagan_hub.training.losses.coverage_loss`] pulls, for each of the task's *query*
            images, the nearest one closer; its gradient at the adapted weights (first order), times this weight,
            is added to the generator's outer gradient. The inner loop never sees the query images, so this rewards
            meta-weights whose adapted generators cover other images of the class rather than the shots alone.
            Needs query images. Experimental: with the bundled checkpoint's Reptile recipe, a weight of 1.0 made
            adapted samples less recognisable with lower recall, and 3.0 collapsed the generator (see the bundled
            checkpoint's model card).
        query_coverage_samples (`int`): generated samples per task for the coverage term.
        query_coverage_space (`str`): where the coverage term measures distances: `"pixels"` (mean squared pixel
            difference) or `"features"` (unit-length feature vectors of a frozen network given to [`MetaLearner`] as
            `coverage_features`, e.g. a classifier trained on the meta-training classes only). Experimental: at
            weights 0.1 and 0.3, continued from the bundled checkpoint, it raised recall only where it lowered
            recognisability (see the bundled checkpoint's experiment log).
        proximal_weight (`float`): pull of the meta-weights towards the weights the [`MetaLearner`] started from,
            e.g. an `--init_from` checkpoint (Reptile and FOMAML; 0: off). `proximal_weight * (meta - start)` is added
            to the outer gradient of every generator and discriminator tensor (an L2 penalty on the distance to the
            start, as L2-SP does for fine-tuning), so that with the SGD outer optimizer each step also moves the
            meta-weights `meta_lr * proximal_weight` of the way back to the start. Continued meta-training then
            settles at a bounded distance from the start instead of drifting on, at the price of a smaller effect.
            The start weights are part of [`MetaLearner.state_dict`], so a resumed run keeps its start.
            Experimental: at 0.05, continuing the variety checkpoint on stroke-styled renders, it kept the weights
            nearer the start but not the font-glyph fidelity that such runs lose (see the bundled checkpoint's
            experiment log).

    [`MetaLearningConfig.adapt_inner_loop`] sets the inner loop to the one `adapt()` runs at use time.
    """

    algorithm: str = "reptile"
    loss: str = "nonsaturating"
    inner_steps: int = 10
    inner_lr: float = 1e-3
    inner_optimizer: str = "adam"
    meta_lr: float = 1e-4
    outer_optimizer: str = "adam"
    inner_batch_size: int = 8
    r1_gamma: float = 0.1
    gp_lambda: float = 10.0
    wgan_drift: float = WGAN_DRIFT
    augment: tuple[str, ...] = field(default_factory=lambda: tuple(AUGMENT_POLICIES))
    mixed_precision: str = "no"
    max_nonfinite_steps: int = 10
    mode_seeking_weight: float = 0.0
    inner_r1_interval: int = 1
    inner_freeze_discriminator_blocks: int = 0
    diversity_loss: str | None = None
    diversity_weight: float | None = None
    learn_inner_lr: bool = False
    inner_lr_meta_lr: float = 0.01
    query_coverage_weight: float = 0.0
    query_coverage_samples: int = 32
    query_coverage_space: str = "pixels"
    shot_augment: float = 0.0
    proximal_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"`algorithm` must be one of {ALGORITHMS}, got {self.algorithm!r}.")
        if self.loss not in LOSS_TYPES:
            raise ValueError(f"`loss` must be one of {LOSS_TYPES}, got {self.loss!r}.")
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"`inner_optimizer` must be one of {INNER_OPTIMIZERS}, got {self.inner_optimizer!r}.")
        if self.outer_optimizer not in OUTER_OPTIMIZERS:
            raise ValueError(f"`outer_optimizer` must be one of {OUTER_OPTIMIZERS}, got {self.outer_optimizer!r}.")
        if self.query_coverage_space not in COVERAGE_SPACES:
            raise ValueError(
                f"`query_coverage_space` must be one of {COVERAGE_SPACES}, got {self.query_coverage_space!r}."
            )
        for name in ("inner_steps", "inner_batch_size", "max_nonfinite_steps", "query_coverage_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if not isinstance(self.learn_inner_lr, bool):
            raise ValueError(f"`learn_inner_lr` must be True or False, got {self.learn_inner_lr!r}.")
        for name in ("inner_lr", "meta_lr", "inner_lr_meta_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
                raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")
        for name in ("r1_gamma", "gp_lambda", "mode_seeking_weight", "query_coverage_weight", "proximal_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ValueError(f"`{name}` must be a non-negative finite number, got {value!r}.")
        self.augment = tuple(self.augment or ())
        DiffAugment(self.augment)  # validates the policy names
        self.shot_augment = check_shot_augment(self.shot_augment)
        inner_loop_options = {
            "learn_inner_lr": self.learn_inner_lr,
            "shot_augment": self.shot_augment,
            "query_coverage_weight": self.query_coverage_weight,
            "diversity_loss": self.diversity_loss is not None,
            "proximal_weight": self.proximal_weight,
        }
        for name, used in inner_loop_options.items():
            if used and self.algorithm == "pretrain":
                raise ValueError(f"`{name}` needs an inner loop (algorithm 'reptile' or 'fomaml'), got 'pretrain'.")
        r1i, frz = self.inner_r1_interval, self.inner_freeze_discriminator_blocks
        if isinstance(r1i, bool) or not isinstance(r1i, int) or r1i < 1:
            raise ValueError(f"`inner_r1_interval` must be a positive integer, got {r1i!r}.")
        if isinstance(frz, bool) or not isinstance(frz, int) or frz < 0:
            raise ValueError(f"`inner_freeze_discriminator_blocks` must be a non-negative integer, got {frz!r}.")
        if frz and self.algorithm != "reptile":
            raise ValueError(
                f"`inner_freeze_discriminator_blocks`={frz} needs algorithm='reptile' (FOMAML's query gradient and "
                f"pretraining train the whole discriminator), got algorithm={self.algorithm!r}."
            )
        anchors = 0 if self.diversity_loss == "cdc" else None  # no anchor regions in the short inner loops
        _, weight, _, _ = check_diversity_options(
            self.diversity_loss, self.diversity_weight, None, anchors, self.inner_batch_size
        )
        if self.diversity_weight is not None:
            self.diversity_weight = weight

    @classmethod
    def adapt_inner_loop(cls, **overrides: Any) -> MetaLearningConfig:
        """Reptile whose inner loop is the one `MetaGANPipeline.adapt()` runs at use time, read from its defaults:
        Adam (betas `(0.0, 0.99)`) at adapt()'s learning rate, its batch size, loss, R1 weight and lazy-R1 interval,
        DiffAugment policies, FreezeD blocks and shot augmentation. `overrides` (e.g. `diversity_loss="cdc"`,
        `inner_steps=50`, `shot_augment=1.0` for the variety setting's inner loop) win."""
        import inspect

        from .adaptation import adapt_pipeline

        defaults = {k: p.default for k, p in inspect.signature(adapt_pipeline).parameters.items()}
        values = dict(
            algorithm="reptile",
            loss=defaults["loss"],
            inner_optimizer="adam",
            inner_lr=defaults["learning_rate"],
            inner_batch_size=defaults["batch_size"],
            r1_gamma=defaults["r1_gamma"],
            inner_r1_interval=defaults["r1_interval"],
            augment=tuple(defaults["augment"] or ()),
            inner_freeze_discriminator_blocks=defaults["freeze_discriminator_blocks"],
            shot_augment=defaults["shot_augment"],
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def figr(cls, **overrides: Any) -> MetaLearningConfig:
        """The FIGR recipe (Clouâtre & Demers 2019): Reptile + WGAN-GP, 10 inner SGD steps at 1e-3, outer Adam 1e-4."""
        values = dict(
            algorithm="reptile",
            loss="wgan-gp",
            inner_steps=10,
            inner_lr=1e-3,
            inner_optimizer="sgd",
            meta_lr=1e-4,
            r1_gamma=0.0,
            gp_lambda=10.0,
            wgan_drift=0.0,
            augment=(),
        )
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-serializable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class NonFiniteMetaStepError(RuntimeError):
    """Raised after too many meta steps in a row with NaN/inf losses; the meta-weights were not updated by them."""


def _inner_optimizer(
    config: MetaLearningConfig, model: torch.nn.Module, scales: list[float] | None = None
) -> torch.optim.Optimizer:
    """The fresh inner-loop optimizer of one task over `model`'s trainable tensors; with `scales` (one per tensor of
    `model.parameters()`), one parameter group per tensor at `inner_lr * scale`."""
    groups: Any = [p for p in model.parameters() if p.requires_grad]
    if scales is not None:
        groups = [
            {"params": [p], "lr": config.inner_lr * s} for p, s in zip(model.parameters(), scales) if p.requires_grad
        ]
    if config.inner_optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.inner_lr)
    return torch.optim.Adam(groups, lr=config.inner_lr, betas=(0.0, 0.99))


class MetaLearner:
    r"""
    Meta-trains a Meta-GAN generator and discriminator over few-shot tasks.

    * **Reptile** (Nichol et al. 2018; FIGR for GANs): for each task, copy G and D, run `inner_steps` GAN steps on the
      task's support images, and take the difference between adapted and meta-weights; the outer Adam optimizer
      uses the negated mean difference over tasks (and processes) as the gradient, so the meta-weights move toward
      the adapted weights.
    * **First-order MAML** (Finn et al. 2017): the same inner loop, then the gradients of the discriminator and
      generator losses on the task's *query* images at the adapted weights are used as meta-gradients.
    * **Pretrain** (baseline): ordinary GAN training with Adam on the support images of all sampled tasks pooled
      into one batch; gradients are averaged across processes. No meta-learning.

    Args:
        generator_model ([`MetaGANGenerator`]): the generator's meta-weights (updated in place).
        discriminator_model ([`MetaGANDiscriminator`]): the discriminator's meta-weights (updated in place).
        config ([`MetaLearningConfig`]): the options.
        accelerator (`accelerate.Accelerator`, *optional*): used to average outer updates across processes and for
            the device; without it, the models' device and a single process are assumed.
        seed (`int`, defaults to 0): seeds the per-task random streams.
        coverage_features (`Callable`, *optional*): the feature map of the coverage term when
            `config.query_coverage_space == "features"` (required then, unused otherwise): maps images `(B, C, H,
            W)` in `[-1, 1]` to vectors `(B, F)`, e.g. the `features` method of an
            [`~metagan_hub.metrics.classifiers.EvaluationClassifier`]. A module, or a module's method, has that
            module moved to the device, put in eval mode and frozen; it is never updated.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub import MetaGANDiscriminator, MetaGANGenerator
    >>> from metagan_hub.training.meta_learning import MetaLearner, MetaLearningConfig
    >>> from metagan_hub.training.tasks import Task

    >>> g = MetaGANGenerator(latent_dim=16, sample_size=16, block_out_channels=(32, 16))
    >>> d = MetaGANDiscriminator(sample_size=16, block_out_channels=(16, 32))
    >>> learner = MetaLearner(g, d, MetaLearningConfig(algorithm="reptile", inner_steps=2))
    >>> tasks = [Task(class_index=0, support=torch.rand(4, 1, 16, 16) * 2 - 1, query=torch.rand(2, 1, 16, 16) * 2 - 1)]
    >>> logs = learner.meta_step(tasks, step=0)
    >>> {"d_loss", "g_loss", "nonfinite"} <= set(logs), logs["nonfinite"]
    (True, 0.0)
    ```
    """

    def __init__(
        self,
        generator_model: torch.nn.Module,
        discriminator_model: torch.nn.Module,
        config: MetaLearningConfig,
        accelerator: Accelerator | None = None,
        seed: int = 0,
        coverage_features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.generator = generator_model
        self.discriminator = discriminator_model
        self.config = config
        self.accelerator = accelerator
        self.seed = int(seed)
        self.device = accelerator.device if accelerator is not None else next(generator_model.parameters()).device
        check_mixed_precision(config.mixed_precision, self.device)
        self.coverage_features = None
        if config.query_coverage_weight and config.query_coverage_space == "features":
            if coverage_features is None:
                raise ValueError(
                    "`query_coverage_space='features'` needs the feature map: pass `coverage_features` (e.g. a "
                    "classifier's `features` method, mapping images to feature vectors)."
                )
            owner = coverage_features if isinstance(coverage_features, torch.nn.Module) else None
            owner = owner or getattr(coverage_features, "__self__", None)
            if isinstance(owner, torch.nn.Module):
                owner.to(self.device).eval().requires_grad_(False)
            self.coverage_features = coverage_features
        self.generator.to(self.device).train()
        self.discriminator.to(self.device).train()
        self.g_params = list(self.generator.parameters())
        self.d_params = list(self.discriminator.parameters())
        self.opt_g = self._outer_optimizer(self.g_params)
        self.opt_d = self._outer_optimizer(self.d_params)
        self.augment = DiffAugment(config.augment) if config.augment else None
        self.step_config = GANStepConfig(
            loss=config.loss,
            r1_gamma=config.r1_gamma,
            gp_lambda=config.gp_lambda,
            wgan_drift=config.wgan_drift,
            mixed_precision=config.mixed_precision,
            augment=self.augment,
            mode_seeking_weight=config.mode_seeking_weight,
            r1_interval=config.inner_r1_interval,
        )
        self._regularizer: DiversityRegularizer | None = None
        if config.diversity_loss is not None:
            # the frozen source of every inner loop is the meta-weights, which no inner loop modifies
            _, weight, _, _ = check_diversity_options(
                config.diversity_loss,
                config.diversity_weight,
                None,
                0 if config.diversity_loss == "cdc" else None,
                config.inner_batch_size,
            )
            regularizer = DiversityRegularizer(
                config.diversity_loss,
                None if config.diversity_loss == "mixdl" else self.generator,
                weight,
                discriminator_interval=config.inner_r1_interval,
            )
            self._regularizer = regularizer
            self.step_config.generator_regularizer = regularizer.generator_term
            if config.diversity_loss == "dcl":
                self.step_config.discriminator_regularizer = regularizer.discriminator_term
        self.nonfinite_in_a_row = 0
        # the weights that `proximal_weight` pulls towards: the ones this learner started from
        self._start: list[torch.Tensor] | None = None
        if config.proximal_weight:
            self._start = [p.detach().clone() for p in self.g_params + self.d_params]
        # private "fast" copies that the inner loops train; reloaded from the meta-weights for every task
        self._fast_g = copy.deepcopy(self.generator) if config.algorithm != "pretrain" else None
        self._fast_d = copy.deepcopy(self.discriminator) if config.algorithm != "pretrain" else None
        # Meta-SGD: log inner learning-rate scales, one per parameter tensor (G's first, then D's)
        self.g_names = [n for n, _ in self.generator.named_parameters()]
        self.d_names = [n for n, _ in self.discriminator.named_parameters()]
        self.log_lr_scales: torch.Tensor | None = None
        self.opt_lr: torch.optim.Optimizer | None = None
        if config.learn_inner_lr:
            self.log_lr_scales = torch.zeros(len(self.g_params) + len(self.d_params), requires_grad=True)
            self.opt_lr = torch.optim.Adam([self.log_lr_scales], lr=config.inner_lr_meta_lr)

    def _outer_optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.outer_optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.meta_lr)
        betas = (0.0, 0.99) if cfg.algorithm == "pretrain" else (0.9, 0.999)
        return torch.optim.Adam(params, lr=cfg.meta_lr, betas=betas)

    # ------------------------------------------------------------------ learned inner learning rates
    def lr_scales(self) -> dict[str, dict[str, float]] | None:
        """
        The meta-learned inner learning-rate scales as `{"generator": {name: scale}, "discriminator": {...}}` (one
        per parameter tensor, plain floats), or `None` without `learn_inner_lr`. Saved in a pipeline's card info as
        `adaptation_lr_scales`, they make `adapt()` run each tensor at `learning_rate * scale`.
        """
        if self.log_lr_scales is None:
            return None
        g_scales, d_scales = self._inner_scales()
        return {"generator": dict(zip(self.g_names, g_scales)), "discriminator": dict(zip(self.d_names, d_scales))}

    def set_lr_scales(self, scales: dict[str, dict[str, float]]) -> None:
        """Start the learned scales from `scales` (as [`lr_scales`] returns them, e.g. from a checkpoint that was
        meta-trained with `learn_inner_lr`); tensors it does not name keep scale 1. Raises a `ValueError` for an
        unknown tensor name or a scale that is not a positive finite number."""
        if self.log_lr_scales is None:
            raise ValueError("set_lr_scales() needs a MetaLearner with `learn_inner_lr=True`.")
        from .adaptation import check_lr_scales

        scales = check_lr_scales(scales, {"generator": self.g_names, "discriminator": self.d_names})
        names = [("generator", n) for n in self.g_names] + [("discriminator", n) for n in self.d_names]
        values = [math.log(scales.get(model, {}).get(name, 1.0)) for model, name in names]
        with torch.no_grad():
            self.log_lr_scales.copy_(torch.tensor(values))
        self._clamp_lr_scales()

    def _clamp_lr_scales(self) -> None:
        limit = math.log(MAX_LR_SCALE)
        with torch.no_grad():
            self.log_lr_scales.clamp_(-limit, limit)

    def _inner_scales(self) -> tuple[list[float] | None, list[float] | None]:
        """The current scales of the generator's and the discriminator's tensors, or `(None, None)` when not
        learned."""
        if self.log_lr_scales is None:
            return None, None
        values = self.log_lr_scales.detach().exp().tolist()
        n = len(self.g_names)
        return values[:n], values[n:]

    def _lr_hypergradient(self, g_grads: list[torch.Tensor], d_grads: list[torch.Tensor]) -> torch.Tensor:
        """First-order derivative of the query loss with respect to each log scale: the dot product of the query
        gradient with the tensor's inner-loop displacement (adapted - meta), since that displacement is linear in the
        tensor's learning rate when later steps' dependence on it is ignored."""
        out = []
        with torch.no_grad():
            for grads, meta, fast in (
                (g_grads, self.g_params, self._fast_g.parameters()),
                (d_grads, self.d_params, self._fast_d.parameters()),
            ):
                for g, p, q in zip(grads, meta, fast):
                    out.append((g.float() * (q.float() - p.float())).sum())
        return torch.stack(out).to(self.device)

    @property
    def num_processes(self) -> int:
        """Number of processes that share the outer update."""
        return self.accelerator.num_processes if self.accelerator is not None else 1

    # ------------------------------------------------------------------ randomness
    def task_generator(self, step: int, task_index: int) -> torch.Generator:
        """The CPU generator of one task's inner loop, determined by (seed, step, global task index) only, so that
        the same tasks give the same update however they are split across processes."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 10_007 + task_index)

    # ------------------------------------------------------------------ inner loop
    def _inner_loop(
        self, support: torch.Tensor, gen: torch.Generator, g_model: torch.nn.Module, d_model: torch.nn.Module
    ) -> tuple[bool, dict[str, float]]:
        """`inner_steps` GAN steps of `g_model`/`d_model` on `support`, with fresh inner optimizers; all randomness
        comes from `gen`. Stops at the first non-finite step and returns `ok=False`."""
        cfg = self.config
        if cfg.inner_freeze_discriminator_blocks:
            d_model.freeze_blocks(cfg.inner_freeze_discriminator_blocks)  # FreezeD, as adapt(): the rest trains
        g_scales, d_scales = self._inner_scales()
        opt_g = _inner_optimizer(cfg, g_model, g_scales)
        opt_d = _inner_optimizer(cfg, d_model, d_scales)
        scaler = torch.amp.GradScaler(self.device.type, init_scale=2.0**10) if cfg.mixed_precision == "fp16" else None
        aug_gen = torch.Generator(device=self.device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
        latent_dim = g_model.config.latent_dim
        all_ok, logs = True, {}
        for i in range(cfg.inner_steps):
            idx = torch.randint(0, support.shape[0], (cfg.inner_batch_size,), generator=gen)
            real = support[idx.to(support.device)]  # [B, C, H, W]
            if cfg.shot_augment:
                real = random_affine(real, cfg.shot_augment, gen)  # as adapt(shot_augment=...) distorts the shots
            z_d = torch.randn(cfg.inner_batch_size, latent_dim, generator=gen).to(self.device)
            if self._regularizer is None:
                z_g = torch.randn(cfg.inner_batch_size, latent_dim, generator=gen).to(self.device)
            else:  # the same draw, plus MixDL's mixes
                z_g = self._regularizer.generator_latents(cfg.inner_batch_size, latent_dim, gen).to(self.device)
            ok, logs = gan_step(
                g_model, d_model, opt_g, opt_d, real, z_d, z_g, self.step_config, aug_gen, scaler, step=i
            )
            all_ok = all_ok and ok
            if not ok:
                break
        return all_ok, logs

    def _load_fast(self) -> None:
        self._fast_g.load_state_dict(self.generator.state_dict())
        self._fast_d.load_state_dict(self.discriminator.state_dict())

    def _query_gradients(self, query: torch.Tensor, gen: torch.Generator) -> tuple[bool, list, list]:
        """First-order MAML: gradients of the D and G losses on the query set at the adapted (fast) weights."""
        g_model, d_model = self._fast_g, self._fast_d
        cfg = self.config
        aug_gen = torch.Generator(device=self.device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
        n = query.shape[0]
        z = torch.randn(n, g_model.config.latent_dim, generator=gen).to(self.device)

        def d_fn(x: torch.Tensor) -> torch.Tensor:
            return d_model(x).logits

        g_params = list(g_model.parameters())
        d_params = list(d_model.parameters())
        with autocast_context(self.device, cfg.mixed_precision):
            fake = g_model(z).sample
            d_loss, _ = discriminator_loss(
                cfg.loss,
                d_fn,
                query,
                fake.detach().float(),
                r1_gamma=cfg.r1_gamma,
                gp_lambda=cfg.gp_lambda,
                wgan_drift=cfg.wgan_drift,
                augment=self.augment,
                generator=aug_gen,
            )
        if not torch.isfinite(d_loss):
            return False, [], []
        # (tensors frozen in the inner loop, e.g. FreezeD's, get zero gradients)
        d_train = [p for p in d_params if p.requires_grad]
        d_found = dict(zip(map(id, d_train), torch.autograd.grad(d_loss, d_train, allow_unused=True)))
        d_grads = [d_found.get(id(p)) for p in d_params]
        with autocast_context(self.device, cfg.mixed_precision):
            g_loss, _ = generator_loss(
                cfg.loss,
                d_fn,
                fake.float(),
                augment=self.augment,
                generator=aug_gen,
                latents=z,
                mode_seeking_weight=cfg.mode_seeking_weight if n >= 2 else 0.0,  # a single query image has no pair
            )
        if not torch.isfinite(g_loss):
            return False, [], []
        g_grads = torch.autograd.grad(g_loss, g_params, allow_unused=True)
        zero = torch.zeros_like
        return (
            True,
            [zero(p) if g is None else g for g, p in zip(g_grads, g_params)],
            [zero(p) if g is None else g for g, p in zip(d_grads, d_params)],
        )

    def _coverage_gradients(self, query: torch.Tensor, gen: torch.Generator) -> tuple[bool, list, dict[str, float]]:
        """The query-set coverage term: gradients of [`coverage_loss`] of the task's query images by samples of the
        adapted (fast) generator, with respect to its weights (first order)."""
        g_model = self._fast_g
        z = torch.randn(self.config.query_coverage_samples, g_model.config.latent_dim, generator=gen).to(self.device)
        g_params = list(g_model.parameters())
        with autocast_context(self.device, self.config.mixed_precision):
            fake = g_model(z).sample
        loss, logs = coverage_loss(fake.float(), query, features=self.coverage_features)
        if not torch.isfinite(loss):
            return False, [], {}
        grads = torch.autograd.grad(loss, g_params, allow_unused=True)
        return True, [torch.zeros_like(p) if g is None else g for g, p in zip(grads, g_params)], logs

    # ------------------------------------------------------------------ outer loop
    def _reduce(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Average a list of tensors across processes (one flat all-reduce)."""
        if self.num_processes == 1:
            return tensors
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        flat = self.accelerator.reduce(flat, reduction="mean")
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset : offset + t.numel()].view_as(t).to(t.dtype))
            offset += t.numel()
        return out

    def _agree(self, ok: bool, tensors: list[torch.Tensor]) -> tuple[bool, list[torch.Tensor]]:
        """
        Average `tensors` across processes together with an "all finite" flag, in one all-reduce that every process
        joins whatever its local outcome. Returns `(ok_everywhere, averaged tensors)`; a process with `ok=False`
        contributes zeros, and then every process sees `ok_everywhere=False` and skips the update.
        """
        ok = ok and all(bool(torch.isfinite(t).all()) for t in tensors)
        if not ok:
            tensors = [torch.zeros_like(t) for t in tensors]
        flag = torch.tensor([1.0 if ok else 0.0], device=self.device)
        *tensors, flag = self._reduce([*tensors, flag])
        ok_all = bool(flag.item() == 1.0) and all(bool(torch.isfinite(t).all()) for t in tensors)
        return ok_all, tensors

    def _check_tasks(self, tasks: Sequence[Task]) -> None:
        g_cfg = self.generator.config
        expected = (g_cfg.out_channels, g_cfg.sample_size, g_cfg.sample_size)
        # the query images feed FOMAML's meta-gradient and the learned learning rates' hypergradient
        needs_query = None
        if self.config.algorithm == "fomaml":
            needs_query = "first-order MAML"
        elif self.config.learn_inner_lr:
            needs_query = "`learn_inner_lr`"
        elif self.config.query_coverage_weight:
            needs_query = "`query_coverage_weight`"
        for i, task in enumerate(tasks):
            for name in ("support", "query"):
                x = getattr(task, name, None)
                if x is None or (name == "query" and not needs_query):
                    continue
                if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != expected:
                    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                    raise ValueError(
                        f"task {i}: `{name}` must be a tensor of shape (K, {', '.join(map(str, expected))}) matching "
                        f"the generator (channels, sample_size), got {shape}."
                    )
            if task.support is None or task.support.shape[0] == 0:
                raise ValueError(f"task {i} has no support images.")
            if needs_query and (task.query is None or task.query.shape[0] == 0):
                raise ValueError(f"{needs_query} needs query images: sample tasks with `queries` >= 1.")

    def meta_step(self, tasks: Sequence[Task], step: int, task_offset: int | None = None) -> dict[str, float]:
        """
        One outer update from this process's `tasks` (averaged with the other processes' updates).

        Every process must call this with the same `step` and the same number of tasks. A step in which any process
        saw a non-finite loss (or update) is skipped on every process, so the meta-weights never take NaN/inf values
        and stay identical across processes; after `max_nonfinite_steps` skipped steps in a row,
        [`NonFiniteMetaStepError`] is raised.

        Args:
            tasks (`Sequence[Task]`): the tasks sampled by this process for this meta step.
            step (`int`): the global meta-step index (seeds the inner loops).
            task_offset (`int`, *optional*): global index of `tasks[0]`; defaults to
                `process_index * len(tasks)`.

        Returns:
            `dict[str, float]`: mean losses of the last inner step over this process's tasks, plus `nonfinite`
            (1.0 when the update was skipped).
        """
        if len(tasks) == 0:
            raise ValueError("`tasks` must hold at least one task.")
        self._check_tasks(tasks)
        if task_offset is None:
            rank = self.accelerator.process_index if self.accelerator is not None else 0
            task_offset = rank * len(tasks)
        if self.config.algorithm == "pretrain":
            # applied in place; every GAN step already agreed on finiteness across processes
            ok_all, logs = self._pretrain_update(tasks, step, task_offset)
        else:
            ok, logs, g_upd, d_upd, lr_grad = self._meta_update(tasks, step, task_offset)
            if not ok:
                g_upd = [torch.zeros_like(p) for p in self.g_params]
                d_upd = [torch.zeros_like(p) for p in self.d_params]
                lr_grad = None if self.log_lr_scales is None else torch.zeros_like(self.log_lr_scales)
            extra = [] if lr_grad is None else [lr_grad]
            ok_all, upd = self._agree(ok, g_upd + d_upd + extra)
            if ok_all:
                n_g, n_d = len(self.g_params), len(self.d_params)
                g_upd, d_upd = upd[:n_g], upd[n_g : n_g + n_d]
                if lr_grad is not None:
                    self._update_lr_scales(upd[n_g + n_d])
                if self._start is not None:
                    g_upd, d_upd = self._add_proximal_pull(g_upd, d_upd)
                for params, update, opt in ((self.g_params, g_upd, self.opt_g), (self.d_params, d_upd, self.opt_d)):
                    opt.zero_grad(set_to_none=True)
                    for p, u in zip(params, update):
                        p.grad = u.to(p.dtype)
                    opt.step()
                    opt.zero_grad(set_to_none=True)

        if not ok_all:
            self.nonfinite_in_a_row += 1
            logger.warning(
                "meta step %d: non-finite loss or update, update skipped (%d in a row)", step, self.nonfinite_in_a_row
            )
            if self.nonfinite_in_a_row >= self.config.max_nonfinite_steps:
                raise NonFiniteMetaStepError(
                    f"{self.nonfinite_in_a_row} meta steps in a row had NaN/inf losses (last at step {step}); "
                    "stopping without saving them. Lower the learning rates or check the data."
                )
            return {**logs, "nonfinite": 1.0}
        self.nonfinite_in_a_row = 0
        return {**logs, "nonfinite": 0.0}

    def _add_proximal_pull(
        self, g_upd: list[torch.Tensor], d_upd: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The outer gradients plus `proximal_weight * (meta - start)` for every tensor (the same on every process,
        since the meta-weights and the start are)."""
        weight = self.config.proximal_weight
        pulled = []
        with torch.no_grad():
            for u, p, s in zip(g_upd + d_upd, self.g_params + self.d_params, self._start):
                pulled.append(u + weight * (p - s))  # cast to the parameter's dtype where it becomes its .grad
        n_g = len(self.g_params)
        return pulled[:n_g], pulled[n_g:]

    def _update_lr_scales(self, grad: torch.Tensor) -> None:
        """One Adam step of the log scales from the (process-averaged) hypergradient, then clamp them."""
        self.opt_lr.zero_grad(set_to_none=True)
        self.log_lr_scales.grad = grad.detach().to(self.log_lr_scales.device, self.log_lr_scales.dtype)
        self.opt_lr.step()
        self.opt_lr.zero_grad(set_to_none=True)
        self._clamp_lr_scales()

    def _meta_update(
        self, tasks: Sequence[Task], step: int, task_offset: int
    ) -> tuple[bool, dict[str, float], list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
        """Run every task's inner loop; return the mean Reptile difference (meta - adapted) or the mean FOMAML
        query gradient, as the outer "gradient" of G and of D, and with `learn_inner_lr` the mean hypergradient of
        the log learning-rate scales (else `None`)."""
        g_sum = [torch.zeros_like(p) for p in self.g_params]
        d_sum = [torch.zeros_like(p) for p in self.d_params]
        learn_lr = self.log_lr_scales is not None
        lr_sum = torch.zeros(self.log_lr_scales.shape, device=self.device) if learn_lr else None
        logs_sum: dict[str, float] = {}
        for i, task in enumerate(tasks):
            gen = self.task_generator(step, task_offset + i)
            self._load_fast()
            support = task.support.to(self.device, torch.float32)
            ok, logs = self._inner_loop(support, gen, self._fast_g, self._fast_d)
            if not ok:
                return False, logs, [], [], None
            if self.config.algorithm == "reptile":
                # outer "gradient" = meta - adapted (the outer optimizer then moves meta toward adapted)
                with torch.no_grad():
                    for acc, p, q in zip(g_sum, self.g_params, self._fast_g.parameters()):
                        acc += p - q
                    for acc, p, q in zip(d_sum, self.d_params, self._fast_d.parameters()):
                        acc += p - q
            if self.config.algorithm == "fomaml" or learn_lr:
                ok, g_grads, d_grads = self._query_gradients(task.query.to(self.device, torch.float32), gen)
                if not ok:
                    return False, logs, [], [], None
                if learn_lr:
                    lr_sum += self._lr_hypergradient(g_grads, d_grads)
            if self.config.algorithm == "fomaml":
                for acc, g in zip(g_sum, g_grads):
                    acc += g.detach()
                for acc, g in zip(d_sum, d_grads):
                    acc += g.detach()
            if self.config.query_coverage_weight:
                ok, cov_grads, cov_logs = self._coverage_gradients(task.query.to(self.device, torch.float32), gen)
                if not ok:
                    return False, logs, [], [], None
                weight = self.config.query_coverage_weight
                for acc, g in zip(g_sum, cov_grads):
                    acc.add_(g.detach(), alpha=weight)
                logs = {**logs, **cov_logs}
            for k, v in logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + v
        n = len(tasks)
        return (
            True,
            {k: v / n for k, v in logs_sum.items()},
            [g / n for g in g_sum],
            [d / n for d in d_sum],
            None if lr_sum is None else lr_sum / n,
        )

    def _pretrain_update(self, tasks: Sequence[Task], step: int, task_offset: int) -> tuple[bool, dict[str, float]]:
        """Pooled GAN training: `inner_steps` steps of the outer optimizers on all tasks' support images, gradients
        averaged across processes. The parameters are updated here. Returns `(ok, logs)`; `ok` is the same on every
        process, and the first non-finite step ends this meta step."""
        pooled = torch.cat([t.support for t in tasks]).to(self.device, torch.float32)  # [sum K, C, H, W]
        gen = self.task_generator(step, task_offset)
        cfg = self.config
        aug_gen = torch.Generator(device=self.device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
        latent_dim = self.generator.config.latent_dim
        batch = max(cfg.inner_batch_size, len(tasks))
        logs: dict[str, float] = {}
        for _ in range(cfg.inner_steps):
            idx = torch.randint(0, pooled.shape[0], (batch,), generator=gen)
            real = pooled[idx.to(self.device)]  # [B, C, H, W]
            z_d = torch.randn(batch, latent_dim, generator=gen).to(self.device)
            z_g = torch.randn(batch, latent_dim, generator=gen).to(self.device)
            ok, logs = self._pretrain_gan_step(real, z_d, z_g, aug_gen)
            if not ok:
                return False, logs
        return True, logs

    def _apply_agreed(self, loss: torch.Tensor, ok: bool, params: list[torch.Tensor], opt) -> bool:
        """Backward (when `ok`), average the gradients across processes together with the finiteness flag, and step
        `opt` only if every process had finite losses and gradients. Every process takes part in the all-reduce."""
        opt.zero_grad(set_to_none=True)
        if ok:
            loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        ok_all, grads = self._agree(ok, grads)
        if ok_all:
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
        opt.zero_grad(set_to_none=True)
        return ok_all

    def _pretrain_gan_step(
        self, real: torch.Tensor, z_d: torch.Tensor, z_g: torch.Tensor, aug_gen: torch.Generator
    ) -> tuple[bool, dict[str, float]]:
        """One pooled GAN step (D update, then G update) of the meta-weights with cross-process gradient averaging.
        Unlike `gan_step`, each update's all-reduce is joined by every process even when its own loss is non-finite,
        so one process's NaN cannot deadlock or desynchronize the others."""
        cfg = self.config
        g_model, d_model = self.generator, self.discriminator

        def d_fn(x: torch.Tensor) -> torch.Tensor:
            return d_model(x).logits

        # 1. discriminator update
        with autocast_context(self.device, cfg.mixed_precision):
            with torch.no_grad():
                fake = g_model(z_d).sample
            d_loss, d_logs = discriminator_loss(
                cfg.loss,
                d_fn,
                real,
                fake.float(),
                r1_gamma=cfg.r1_gamma,
                gp_lambda=cfg.gp_lambda,
                wgan_drift=cfg.wgan_drift,
                augment=self.augment,
                generator=aug_gen,
            )
        d_ok = self._apply_agreed(d_loss, bool(torch.isfinite(d_loss)), self.d_params, self.opt_d)

        # 2. generator update (the discriminator gets no gradient here)
        g_loss, g_logs = generator_step_loss(g_model, d_fn, self.d_params, z_g, self.step_config, aug_gen)
        g_ok = self._apply_agreed(g_loss, d_ok and bool(torch.isfinite(g_loss)), self.g_params, self.opt_g)
        return d_ok and g_ok, {**d_logs, **g_logs}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Optimizer states and counters, and with `proximal_weight` the start weights (the model weights themselves
        are saved by their own `save_pretrained`)."""
        state = {
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "seed": self.seed,
            "config": self.config.to_dict(),
        }
        if self.log_lr_scales is not None:
            state["log_lr_scales"] = self.log_lr_scales.detach().clone()
            state["opt_lr"] = self.opt_lr.state_dict()
        if self._start is not None:
            state["start_weights"] = [t.clone() for t in self._start]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what [`state_dict`] returned (the model weights must be loaded separately).

        Raises a `ValueError` naming the differing options if `state` was saved with another configuration (other
        than `max_nonfinite_steps`), since its optimizer states would not continue the same training.
        """
        saved = state.get("config")
        if saved is not None:
            differ = config_differences(
                saved, self.config.to_dict(), MetaLearningConfig().to_dict(), ignore=("max_nonfinite_steps",)
            )
            if differ:
                details = ", ".join(f"{k}: saved {a!r} vs. now {b!r}" for k, (a, b) in differ.items())
                raise ValueError(
                    f"MetaLearner state from another configuration: keys {sorted(differ)} differ ({details})."
                )
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.nonfinite_in_a_row = int(state.get("nonfinite_in_a_row", 0))
        if self.log_lr_scales is not None and "log_lr_scales" in state:
            with torch.no_grad():
                self.log_lr_scales.copy_(state["log_lr_scales"])
            self.opt_lr.load_state_dict(state["opt_lr"])
        if self._start is not None:
            start = state.get("start_weights")
            if start is None or len(start) != len(self._start):
                raise ValueError("MetaLearner state without the start weights that `proximal_weight` pulls towards.")
            with torch.no_grad():
                for s, t in zip(self._start, start):
                    s.copy_(t)
        self.seed = int(state.get("seed", self.seed))
