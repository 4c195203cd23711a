# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""The yardstick on a handful of classes: adapt a pipeline as a user would and judge its samples in the evaluation
classifier's features, so that meta-training can select checkpoints by fidelity *and* diversity.

[`evaluate_adaptation`] adapts copies of a [`MetaGANPipeline`] to the first classes of an [`EvaluationDomain`] (the
benchmark's domains, or a [`DatasetSplitDomain`] over a meta-training run's validation classes), samples each adapted
pipeline and computes recognisability, precision, recall, relative diversity and copy rate per class against the
class's real held-out images. Its `score`, mean recognisability plus mean recall, weighs fidelity and diversity
equally; `scripts/train_metagan.py --select_best` keeps the meta-checkpoint with the highest score, or, with a
recognisability floor, the one with the highest recall among those that reach the floor ([`selection_key`]).

Example:

```py
>>> import torch
>>> from metagan_hub import MetaGANPipeline
>>> from metagan_hub.data import get_dataset
>>> from metagan_hub.metrics import ClassifierRecipe
>>> from metagan_hub.metrics.domains import DatasetSplitDomain
>>> from metagan_hub.metrics.yardstick import evaluate_adaptation
>>> from metagan_hub.models import MetaGANDiscriminator, MetaGANGenerator

>>> _, val, _ = get_dataset("digits", resolution=16).split_classes(num_val=2, num_test=2, seed=0)
>>> domain = DatasetSplitDomain(val, shot_pool=5)
>>> domain.classifier_recipe = ClassifierRecipe(num_epochs=1, block_out_channels=(8, 16))  # a quick one
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> pipe = MetaGANPipeline(
...     generator=MetaGANGenerator(latent_dim=8, block_out_channels=(16, 8), sample_size=16),
...     discriminator=MetaGANDiscriminator(block_out_channels=(8, 16), sample_size=16),
... )
>>> pipe.set_progress_bar_config(disable=True)
>>> result = evaluate_adaptation(pipe, domain, shots=5, num_steps=2, num_samples=16)
>>> sorted(result["means"]), 0.0 <= result["score"] <= 2.0
(['copy_rate', 'precision', 'recall', 'recognisability', 'relative_diversity'], True)
```
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from .domains import DatasetSplitDomain, EvaluationDomain, _check_int
from .fewshot import evaluate_class

logger = logging.getLogger(__name__)

YARDSTICK_METRICS = ("recognisability", "precision", "recall", "relative_diversity", "copy_rate")
#: the metrics whose class means add up to the score (each in [0, 1], higher is better)
SCORE_METRICS = ("recognisability", "recall")
#: real held-out images a judged class needs: k-NN precision / recall (k=3) need more than k
MIN_REAL_IMAGES = 4


def selection_key(result: dict[str, Any], min_recognisability: float | None = None) -> tuple[int, float]:
    """
    How a yardstick result ranks for checkpoint selection: of two results, the one with the larger key is better.

    Without a floor the key is the score (mean recognisability + mean recall). With `min_recognisability`, results
    whose mean recognisability reaches the floor rank above all others and among themselves by mean recall (the most
    varied of the faithful ones); results below the floor rank by recognisability (the closest to it). A result with
    a non-finite value ranks last.

    Args:
        result (`dict`): an [`evaluate_adaptation`] result (its `score` and `means`).
        min_recognisability (`float`, *optional*): the floor, in `[0, 1]`.

    Returns:
        `tuple[int, float]`: `(tier, value)`, compared as a tuple.

    Example:

    ```py
    >>> from metagan_hub.metrics.yardstick import selection_key
    >>> faithful = {"score": 1.0, "means": {"recognisability": 0.9, "recall": 0.1}}
    >>> varied = {"score": 1.1, "means": {"recognisability": 0.6, "recall": 0.5}}
    >>> max([faithful, varied], key=selection_key) is varied  # the higher score
    True
    >>> max([faithful, varied], key=lambda r: selection_key(r, min_recognisability=0.8)) is faithful
    True
    ```
    """
    if min_recognisability is not None:
        if isinstance(min_recognisability, bool) or not isinstance(min_recognisability, int | float):
            raise ValueError(f"`min_recognisability` must be a number in [0, 1], got {min_recognisability!r}.")
        if not 0.0 <= min_recognisability <= 1.0:
            raise ValueError(f"`min_recognisability` must be in [0, 1], got {min_recognisability!r}.")
    means = result.get("means", {})
    values = [result.get("score"), means.get("recognisability"), means.get("recall")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in values):
        return (-1, -np.inf)
    score, recognisability, recall = (float(v) for v in values)
    if min_recognisability is None:
        return (0, score)
    if recognisability >= min_recognisability:
        return (1, recall)
    return (0, recognisability)


def validation_domain(
    train_classes: Any,
    val_classes: Any,
    *,
    num_classes: int,
    shot_pool: int = 5,
    num_confusers: int = 64,
    split_seed: int = 0,
) -> DatasetSplitDomain:
    """
    The yardstick's domain of a meta-training run: its first `num_classes` validation classes, with a seeded choice
    of `num_confusers` training classes as confusers of the classifier (`scripts/train_metagan.py --yardstick_classes`
    and `scripts/evaluate_metagan.py --yardstick` build the same one). Checked with [`check_yardstick_domain`].

    Args:
        train_classes, val_classes ([`ClassImageDataset`]): the run's class split (`dataset.split_classes(seed)`).
        num_classes (`int`): validation classes to judge on.
        shot_pool (`int`, defaults to 5): images per class the shots come from (at least the shots).
        num_confusers (`int`, defaults to 64): training classes the classifier also learns (0: none).
        split_seed (`int`, defaults to 0): seeds the choice of confusers (the run's class-split seed).
    """
    from ..data.base import ClassSubset

    num_confusers = min(_check_int(num_confusers, "num_confusers", 0), train_classes.num_classes)
    confusers = None
    if num_confusers:
        order = np.random.default_rng([split_seed, 11]).permutation(train_classes.num_classes)
        confusers = ClassSubset(train_classes, sorted(order[:num_confusers].tolist()))
    domain = DatasetSplitDomain(
        val_classes, num_classes=num_classes, shot_pool=shot_pool, name="validation", confusers=confusers
    )
    check_yardstick_domain(domain, domain.num_classes, shot_pool)
    return domain


def check_yardstick_domain(domain: EvaluationDomain, num_classes: int, shots: int) -> None:
    """
    Raise a `ValueError` naming the class unless each of the first `num_classes` classes of `domain` has a shot pool of
    at least `shots` images and at least [`MIN_REAL_IMAGES`] real held-out images, so that [`evaluate_adaptation`]
    fails before it trains a classifier or adapts anything rather than in the middle of an evaluation.
    """
    for c in range(num_classes):
        name, pool, real = domain.classes[c], domain.shot_pool_size(c), domain.real_uint8(c).shape[0]
        if pool < shots:
            raise ValueError(
                f"class {name!r} of the {domain.name!r} domain has a shot pool of {pool} images, fewer than `shots`="
                f"{shots}."
            )
        if real < MIN_REAL_IMAGES:
            raise ValueError(
                f"class {name!r} of the {domain.name!r} domain has {real} real held-out images; k-NN precision / "
                f"recall need at least {MIN_REAL_IMAGES}."
            )


def evaluate_adaptation(
    pipeline: Any,
    domain: EvaluationDomain,
    *,
    num_classes: int | None = None,
    shots: int = 5,
    num_steps: int = 200,
    num_samples: int = 100,
    seed: int = 0,
    **adapt_kwargs: Any,
) -> dict[str, Any]:
    """
    Adapt `pipeline` to each of the first `num_classes` classes of `domain` and judge the samples.

    For class `c`: `domain.shots(c, k=shots, seed=seed)` are the shots, `pipeline.adapt(shots, num_steps=num_steps,
    generator=torch.Generator().manual_seed(seed + c), **adapt_kwargs)` adapts a copy (the pipeline itself is never
    modified), and `num_samples` samples (generator seed `seed + 1000 + c`) are compared with the class's real
    held-out images in the domain classifier's features. A class whose adaptation stops on non-finite losses counts
    as 0 for every metric of the score (the means of the other metrics leave it out) and is listed under `"failed"`.
    Each class needs a shot pool of at least `shots` and at least [`MIN_REAL_IMAGES`] real held-out images (checked
    before anything is trained).

    Args:
        pipeline ([`MetaGANPipeline`]): the (meta-)checkpoint to judge.
        domain ([`EvaluationDomain`]): where the classes, shots, real images and classifier come from.
        num_classes (`int`, *optional*): the first `num_classes` classes (default: all of the domain's).
        shots (`int`, defaults to 5): images per adaptation.
        num_steps (`int`, defaults to 200): `adapt()` steps (its default, what users run).
        num_samples (`int`, defaults to 100): samples per class.
        seed (`int`, defaults to 0): seed of shots, adaptation and sampling.
        **adapt_kwargs: further [`MetaGANPipeline.adapt`] options (learning rate, precision, ...).

    Returns:
        `dict` with `score` (mean recognisability + mean recall; NaN if either is), `means` (class means of
        [`YARDSTICK_METRICS`]), `per_class`, `failed`, the settings and `wall_time_s`.
    """
    from ..models.layers import check_positive_int
    from ..training.adaptation import NonFiniteLossError

    n = domain.num_classes if num_classes is None else check_positive_int("num_classes", num_classes)
    if n > domain.num_classes:
        raise ValueError(f"`num_classes` must be at most the domain's {domain.num_classes} classes, got {n}.")
    shots = check_positive_int("shots", shots)
    num_steps = check_positive_int("num_steps", num_steps)
    num_samples = check_positive_int("num_samples", num_samples)
    if num_samples < 4:
        raise ValueError(
            f"`num_samples` must be at least 4 (k-NN precision / recall need neighbours), got {num_samples}."
        )
    check_yardstick_domain(domain, n, shots)
    classifier = domain.classifier
    start = time.perf_counter()
    per_class: dict[str, dict[str, float]] = {}
    failed: list[str] = []
    for c in range(n):
        name = domain.classes[c]
        shot_images = domain.shots(c, k=shots, seed=seed)
        try:
            adapted = pipeline.adapt(
                shot_images, num_steps=num_steps, generator=torch.Generator().manual_seed(seed + c), **adapt_kwargs
            )
        except NonFiniteLossError as err:
            logger.warning("yardstick: adapting to class %r failed (%s)", name, err)
            failed.append(name)
            per_class[name] = {m: 0.0 for m in SCORE_METRICS}
            continue
        sample_gen = torch.Generator().manual_seed(seed + 1000 + c)
        samples = adapted(batch_size=num_samples, generator=sample_gen, output_type="pt").images * 2 - 1
        fake_logits, fake_features = classifier.embed(samples.float().cpu())
        _, real_features = classifier.embed(domain.real(c))
        _, shot_features = classifier.embed(shot_images)
        per_class[name] = evaluate_class(
            fake_features,
            real_features,
            shot_features,
            fake_logits=fake_logits,
            target=domain.classifier_label(c),
            metrics=YARDSTICK_METRICS,
        )
    means = {}
    for m in YARDSTICK_METRICS:
        values = [v[m] for v in per_class.values() if m in v]
        means[m] = sum(values) / len(values) if values else float("nan")
    score = sum(means[m] for m in SCORE_METRICS)
    result = {
        "score": score,
        "means": means,
        "per_class": per_class,
        "failed": failed,
        "domain": domain.name,
        "num_classes": n,
        "shots": shots,
        "adapt_steps": num_steps,
        "samples_per_class": num_samples,
        "seed": seed,
        "score_metrics": list(SCORE_METRICS),
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    logger.info(
        "yardstick on %d %s classes: score %.3f (recognisability %.3f, recall %.3f) in %.1f s",
        n,
        domain.name,
        result["score"],
        means["recognisability"],
        means["recall"],
        result["wall_time_s"],
    )
    return result
