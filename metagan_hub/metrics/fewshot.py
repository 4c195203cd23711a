# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
"""Few-shot generation metrics in a learned feature space, one function per metric.

Every function takes feature tensors `[N, D]` (any floating dtype, any device) of one class: generated samples
(`fake`), real held-out images of the class (`real`) and, where it matters, the K shots the generator was adapted on
(`shots`). Computation runs in float64. [`evaluate_class`] computes a chosen subset of [`FEWSHOT_METRICS`] for one
class; the per-metric functions are:

- fidelity: [`recognisability`] (share of samples an evaluation classifier assigns to the target class), `precision`
  of [`precision_recall`] and `density` of [`density_coverage`];
- diversity: `recall`, `coverage`, [`relative_diversity`] and [`copy_rate`];
- both: [`kid`] and [`frechet_distance`];
- usefulness: [`classifier_gain`] (the DAGAN protocol over many classes at once).

Example:

```py
>>> import torch
>>> from metagan_hub.metrics import evaluate_class

>>> g = torch.Generator().manual_seed(0)
>>> real, shots = torch.randn(20, 8, generator=g), torch.randn(5, 8, generator=g)
>>> fake = torch.randn(64, 8, generator=g)
>>> result = evaluate_class(fake, real, shots, metrics=("precision", "recall", "kid", "relative_diversity"))
>>> sorted(result)
['kid', 'kid_std', 'precision', 'recall', 'relative_diversity']
```
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

FEWSHOT_METRICS = (
    "recognisability",
    "precision",
    "recall",
    "density",
    "coverage",
    "kid",
    "kid_std",
    "fd",
    "relative_diversity",
    "copy_rate",
)
"""Names that [`evaluate_class`] accepts in `metrics` (`kid_std` comes with `kid`; either name computes both)."""

CLASSIFIER_GAIN_METHODS = ("logistic", "nearest_mean")


# --------------------------------------------------------------------------------------------------------------------
# input checks and helpers


def _features(x: torch.Tensor, name: str, min_samples: int = 1, dim: int | None = None) -> torch.Tensor:
    """Validate a `[N, D]` floating feature tensor and return it detached in float64 (on CPU for MPS)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape [N, D], got {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape [N, D], got {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating tensor, got dtype {x.dtype}.")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"`{name}` has feature dimension {x.shape[1]}, but the other features have {dim}.")
    if x.shape[0] < min_samples:
        raise ValueError(f"`{name}` needs at least {min_samples} samples, got {x.shape[0]}.")
    x = x.detach()
    if x.device.type == "mps":  # no float64 on MPS
        x = x.cpu()
    x = x.to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return x


def _check_k(k: int, name: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {k!r}.")


_EXACT_CDIST_MAX = 50_000_000  # N * M * D up to which distances are computed from exact differences


def _cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances `[N, M]` in float64.

    Up to `N * M * D` = 5e7 from exact differences, so that a pair's distance does not depend on the other rows (two
    copies of a point lie exactly on each other's k-NN ball surfaces). Larger sets use the squared-norm expansion (one
    matrix product, about 10x faster at 1000 x 1000 x 1280) after centring both sets on `a`'s mean, which keeps the
    round-off of near-identical rows at about 1e-8 of the features' spread."""
    if a.shape[0] * b.shape[0] * a.shape[1] <= _EXACT_CDIST_MAX:
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    centre = a.mean(0)
    a, b = a - centre, b - centre
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
    return d2.clamp_min_(0).sqrt_()


def _self_cdist(x: torch.Tensor) -> torch.Tensor:
    """Distances `[N, N]` within one set, with an exactly zero diagonal."""
    dist = _cdist(x, x)
    dist.fill_diagonal_(0)
    return dist


def _knn_radii(x: torch.Tensor, k: int, name: str) -> torch.Tensor:
    """Distance of every row of `x` to its k-th nearest neighbour among the other rows."""
    if x.shape[0] <= k:
        raise ValueError(f"`{name}` needs more than k={k} samples for k-nearest-neighbour radii, got {x.shape[0]}.")
    dist = _self_cdist(x)  # [N, N], the diagonal (self) is 0 and is the 1st smallest
    return dist.kthvalue(k + 1, dim=1).values  # [N]


def _mean_pairwise_distance(x: torch.Tensor) -> float:
    n = x.shape[0]
    return float(_self_cdist(x).sum() / (n * (n - 1)))


# --------------------------------------------------------------------------------------------------------------------
# distribution distances


def kid(
    fake: torch.Tensor,
    real: torch.Tensor,
    subset_size: int | None = None,
    num_subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """
    Kernel Inception Distance (Bińkowski et al. 2018): unbiased squared MMD with the cubic polynomial kernel
    `k(x, y) = (x·y / D + 1)^3`, averaged over random subsets as in StyleGAN2-ADA and clean-fid.

    Each of `num_subsets` rounds draws `subset_size` generated and `subset_size` real features without replacement
    (`torch.Generator` seeded with `seed`, so the result is deterministic) and computes the unbiased estimate; the
    mean and the standard deviation over rounds are returned. When `subset_size` equals the number of real features,
    every round uses all of them and only the generated subset varies.

    Args:
        fake (`torch.Tensor`): generated features `[N, D]`.
        real (`torch.Tensor`): real features `[M, D]`.
        subset_size (`int`, *optional*): features per subset, at least 2; defaults to `min(1000, N, M)`.
        num_subsets (`int`, defaults to 100): number of rounds.
        seed (`int`, defaults to 0): seed of the subset draws.

    Returns:
        `tuple[float, float]`: mean and standard deviation (0 when `num_subsets` is 1) of the estimates. Can be
        slightly negative for matching distributions (the estimator is unbiased).

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics import kid

    >>> g = torch.Generator().manual_seed(0)
    >>> real = torch.randn(100, 16, generator=g)
    >>> mean, std = kid(real + 2.0, real, subset_size=50, num_subsets=10)
    >>> mean > 1.0
    True
    ```
    """
    fake = _features(fake, "fake")
    real = _features(real, "real", dim=fake.shape[1])
    n, m = fake.shape[0], real.shape[0]
    if subset_size is None:
        subset_size = min(1000, n, m)
    if isinstance(subset_size, bool) or not isinstance(subset_size, int):
        raise TypeError(f"`subset_size` must be an int or None, got {subset_size!r}.")
    if subset_size < 2:
        raise ValueError(
            f"`subset_size` must be at least 2 for the unbiased KID estimate, got {subset_size} "
            f"(fake has {n} samples, real has {m})."
        )
    if subset_size > n or subset_size > m:
        raise ValueError(
            f"`subset_size`={subset_size} needs at least that many samples in each set, but fake has {n} and real "
            f"has {m}; pass a smaller `subset_size` or more samples."
        )
    if isinstance(num_subsets, bool) or not isinstance(num_subsets, int) or num_subsets < 1:
        raise ValueError(f"`num_subsets` must be a positive integer, got {num_subsets!r}.")

    d = fake.shape[1]
    s = subset_size
    real = real.to(fake.device)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / d + 1) ** 3

    # with up to ~25 M kernel entries (200 MB), compute every kernel value once and index the subsets
    full = (n * n + m * m + n * m) <= 25_000_000
    if full:
        kxx_all, kyy_all, kxy_all = kernel(fake, fake), kernel(real, real), kernel(fake, real)
    gen = torch.Generator().manual_seed(int(seed))
    values = torch.empty(num_subsets, dtype=torch.float64)
    for i in range(num_subsets):
        ix = torch.randperm(n, generator=gen)[:s].to(fake.device)
        iy = torch.randperm(m, generator=gen)[:s].to(fake.device)
        if full:
            kxx, kyy, kxy = kxx_all[ix][:, ix], kyy_all[iy][:, iy], kxy_all[ix][:, iy]
        else:
            x, y = fake[ix], real[iy]  # [s, D] each
            kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (s * (s - 1))
        values[i] = (within - 2 * kxy.mean()).cpu()
    std = float(values.std(unbiased=False)) if num_subsets > 1 else 0.0
    return float(values.mean()), std


def _frechet_from_moments(
    mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2) (float64, symmetric PSD matrices)."""
    dim = mu1.shape[0]
    eye = torch.eye(dim, dtype=cov1.dtype, device=cov1.device)
    cov1 = 0.5 * (cov1 + cov1.T) + eps * eye
    cov2 = 0.5 * (cov2 + cov2.T) + eps * eye
    # tr sqrt(C1 C2) = sum of the square roots of the eigenvalues of the symmetric PSD matrix sqrt(C1) C2 sqrt(C1);
    # eigen-decompositions of symmetric matrices stay real and stable when the covariances are rank deficient
    w1, v1 = torch.linalg.eigh(cov1)
    sqrt1 = (v1 * w1.clamp_min(0).sqrt()) @ v1.T
    inner = sqrt1 @ cov2 @ sqrt1
    w = torch.linalg.eigvalsh(0.5 * (inner + inner.T))
    tr_covmean = w.clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    value = diff @ diff + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_covmean
    return float(value.clamp_min(0))


def frechet_distance(fake: torch.Tensor, real: torch.Tensor, eps: float = 1e-6) -> float:
    """
    Fréchet distance between Gaussians fitted to generated and real features (the FID formula,
    `|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))`, covariances with the `N - 1` normaliser).

    `eps` is added to the diagonal of both covariances, and the matrix square root is taken through symmetric
    eigen-decompositions (negative round-off eigenvalues clamped to 0), so the result is finite and stable when the
    covariances are rank deficient, as for 20 real images in 128 dimensions. Few samples bias FD upwards: compare only
    values computed with the same sample counts.

    Args:
        fake (`torch.Tensor`): generated features `[N, D]`, N ≥ 2.
        real (`torch.Tensor`): real features `[M, D]`, M ≥ 2.
        eps (`float`, defaults to 1e-6): diagonal offset of the covariances (≥ 0).

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics import frechet_distance

    >>> real = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    >>> round(frechet_distance(real, real), 6)
    0.0
    >>> round(frechet_distance(real + torch.tensor([3.0, 0, 0, 0]), real), 3)
    9.0
    ```
    """
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0 or not math.isfinite(eps):
        raise ValueError(f"`eps` must be a finite number >= 0, got {eps!r}.")
    fake = _features(fake, "fake", min_samples=2)
    real = _features(real, "real", min_samples=2, dim=fake.shape[1]).to(fake.device)
    n, m, dim = fake.shape[0], real.shape[0], fake.shape[1]
    mu1, mu2 = fake.mean(0), real.mean(0)
    x, y = fake - mu1, real - mu2  # [N, D], [M, D] centred
    if n + m < dim:
        # Few samples in many dimensions: both covariances live in the span of the centred samples, an r = N + M
        # dimensional subspace (orthonormal basis Q [D, r]). Outside it both are eps * I and contribute
        # eps + eps - 2 sqrt(eps * eps) = 0, so the distance equals the one computed in r dimensions (exact, faster).
        q, _ = torch.linalg.qr(torch.cat([x, y]).T)  # [D, r]
        x, y = x @ q, y @ q  # [N, r], [M, r]
    cov1 = x.T @ x / (n - 1)
    cov2 = y.T @ y / (m - 1)
    diff = mu1 - mu2
    zero = torch.zeros(cov1.shape[0], dtype=cov1.dtype, device=cov1.device)
    return float(diff @ diff) + _frechet_from_moments(zero, cov1, zero, cov2, eps=eps)


# --------------------------------------------------------------------------------------------------------------------
# manifold metrics


def precision_recall(fake: torch.Tensor, real: torch.Tensor, k: int = 3) -> dict[str, float]:
    """
    Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour manifolds.

    The real manifold is the union of balls around every real feature with radius the distance to its k-th nearest
    real neighbour; the generated manifold likewise. `precision` is the share of generated samples inside the real
    manifold (fidelity), `recall` the share of real images inside the generated manifold (diversity). A point on a
    ball's surface counts as inside.

    Args:
        fake (`torch.Tensor`): generated features `[N, D]`, N > k.
        real (`torch.Tensor`): real features `[M, D]`, M > k.
        k (`int`, defaults to 3): neighbourhood size.

    Returns:
        `dict[str, float]`: `{"precision": ..., "recall": ...}`, both in [0, 1].

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics import precision_recall

    >>> real = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    >>> precision_recall(real, real)
    {'precision': 1.0, 'recall': 1.0}
    ```
    """
    _check_k(k)
    fake = _features(fake, "fake")
    real = _features(real, "real", dim=fake.shape[1]).to(fake.device)
    real_radii = _knn_radii(real, k, "real")  # [M]
    fake_radii = _knn_radii(fake, k, "fake")  # [N]
    dist = _cdist(fake, real)  # [N, M]
    precision = (dist <= real_radii[None, :]).any(dim=1).double().mean()
    recall = (dist <= fake_radii[:, None]).any(dim=0).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def density_coverage(fake: torch.Tensor, real: torch.Tensor, k: int = 5) -> dict[str, float]:
    """
    Density and coverage (Naeem et al. 2020) with k-nearest-neighbour balls around the real features only.

    `density` is the number of (generated sample, real ball containing it) pairs divided by `k` × the number of
    samples: about 1 when samples are distributed like real images, above 1 when they crowd into dense real regions,
    near 0 when they lie off the real manifold. `coverage` is the share of real balls that contain at least one
    generated sample (diversity, robust to outliers among the samples). A point on a ball's surface counts as inside.

    Args:
        fake (`torch.Tensor`): generated features `[N, D]`.
        real (`torch.Tensor`): real features `[M, D]`, M > k.
        k (`int`, defaults to 5): neighbourhood size.

    Returns:
        `dict[str, float]`: `{"density": ..., "coverage": ...}`; coverage in [0, 1], density in [0, M / k].

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics import density_coverage

    >>> real = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    >>> density_coverage(real + 100.0, real)
    {'density': 0.0, 'coverage': 0.0}
    ```
    """
    _check_k(k)
    fake = _features(fake, "fake")
    real = _features(real, "real", dim=fake.shape[1]).to(fake.device)
    real_radii = _knn_radii(real, k, "real")  # [M]
    inside = _cdist(fake, real) <= real_radii[None, :]  # [N, M]
    density = inside.double().sum() / (k * fake.shape[0])
    coverage = inside.any(dim=0).double().mean()
    return {"density": float(density), "coverage": float(coverage)}


# --------------------------------------------------------------------------------------------------------------------
# diversity and memorisation


def relative_diversity(fake: torch.Tensor, real: torch.Tensor) -> float:
    """
    Mean pairwise Euclidean distance between generated samples ÷ the mean pairwise distance between real images.

    1 means the samples are as varied as real images of the class, near 0 means mode collapse, above 1 means more
    spread than the class (often: off-class noise). Pairs of a sample with itself are excluded.

    Args:
        fake (`torch.Tensor`): generated features `[N, D]`, N ≥ 2.
        real (`torch.Tensor`): real features `[M, D]`, M ≥ 2, not all identical.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics import relative_diversity

    >>> real = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    >>> relative_diversity(real, real), relative_diversity(0.5 * real, real)
    (1.0, 0.5)
    ```
    """
    fake = _features(fake, "fake", min_samples=2)
    real = _features(real, "real", min_samples=2, dim=fake.shape[1])
    real_spread = _mean_pairwise_distance(real)
    if real_spread == 0:
        raise ValueError(
            "`real` features are all identical (mean pairwise distance 0); relative diversity is undefined."
        )
    return _mean_pairwise_distance(fake) / real_spread


def copy_threshold(real: torch.Tensor, quantile: float = 0.5) -> float:
    """
    The distance below which a sample counts as a copy in [`copy_rate`]: the `quantile` (default: the median) of the
    nearest-neighbour distances among `real` features `[M, D]`, M ≥ 2 (each real image's distance to the closest
    *other* real image).
    """
    if not isinstance(quantile, (int, float)) or isinstance(quantile, bool) or not 0 <= quantile <= 1:
        raise ValueError(f"`quantile` must be a number in [0, 1], got {quantile!r}.")
    real = _features(real, "real", min_samples=2)
    nn = _knn_radii(real, 1, "real")  # [M]
    threshold = float(torch.quantile(nn, float(quantile)))
    if threshold == 0:
        logger.warning(
            "copy threshold is 0 (the %s quantile of the real nearest-neighbour distances: duplicate real features); "
            "no sample counts as a copy.",
            quantile,
        )
    return threshold


def copy_rate(fake: torch.Tensor, shots: torch.Tensor, real: torch.Tensor, quantile: float = 0.5) -> float:
    """
    Share of samples closer to their nearest shot than two real images of the class usually are to each other.

    "Usually" is made precise by [`copy_threshold`]: the median (`quantile=0.5`) over the real images of each one's
    distance to its nearest other real image. A sample counts as a copy when its distance to the nearest of the K
    `shots` is strictly below that threshold. Exact copies of shots give 1; the rate of real held-out images
    themselves (`fake=real`, a valid call) is the reference a generator should not exceed by much.

    Args:
        fake (`torch.Tensor`): generated features `[N, D]`.
        shots (`torch.Tensor`): features of the K shots the generator was adapted on `[K, D]`.
        real (`torch.Tensor`): features of real held-out images of the class `[M, D]`, M ≥ 2 (not the shots).
        quantile (`float`, defaults to 0.5): quantile of the real nearest-neighbour distances used as threshold.

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics import copy_rate

    >>> g = torch.Generator().manual_seed(0)
    >>> real, shots = torch.randn(20, 8, generator=g), torch.randn(5, 8, generator=g)
    >>> copy_rate(shots.repeat(4, 1), shots, real)
    1.0
    ```
    """
    fake = _features(fake, "fake")
    shots = _features(shots, "shots", dim=fake.shape[1]).to(fake.device)
    real = _features(real, "real", min_samples=2, dim=fake.shape[1])
    threshold = copy_threshold(real, quantile)
    nearest_shot = _cdist(fake, shots).min(dim=1).values  # [N]
    return float((nearest_shot < threshold).double().mean())


# --------------------------------------------------------------------------------------------------------------------
# classifier-based metrics


def recognisability(logits: torch.Tensor, target: int | torch.Tensor) -> float:
    """
    Share of samples whose evaluation-classifier logits `[N, K]` have their maximum at the `target` class (an int, or
    an integer tensor `[N]` with one target per sample). Read it against the same classifier's accuracy on real
    held-out images (the ceiling).

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics import recognisability

    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [1.0, 0.0]])
    >>> recognisability(logits, target=0)
    0.75
    ```
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"`logits` must be a tensor of shape [N, K], got {shape}.")
    n, num_classes = logits.shape
    if n < 1 or num_classes < 1:
        raise ValueError(f"`logits` must have at least one sample and one class, got shape {tuple(logits.shape)}.")
    if isinstance(target, bool):
        raise TypeError(f"`target` must be an int or an integer tensor, got {target!r}.")
    if isinstance(target, int):
        target = torch.full((n,), target, dtype=torch.long)
    elif isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"`target` must be an integer tensor, got dtype {target.dtype}.")
        if target.ndim == 0:
            target = target.reshape(1).expand(n)
        if target.shape != (n,):
            raise ValueError(
                f"`target` must be a scalar or have shape [{n}] (one per sample), got {tuple(target.shape)}."
            )
    else:
        raise TypeError(f"`target` must be an int or an integer tensor, got {type(target).__name__}.")
    target = target.to(device=logits.device, dtype=torch.long)
    bad = (target < 0) | (target >= num_classes)
    if bad.any():
        values = target[bad].unique()[:5].tolist()
        raise ValueError(
            f"`target` must lie in [0, {num_classes}) for logits with {num_classes} classes, got {values}."
        )
    return float((logits.detach().argmax(dim=1) == target).double().mean())


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int) -> torch.Tensor:
    """Multinomial logistic regression (weights [D + 1, C], bias last) by L-BFGS from zeros: deterministic."""
    xb = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)  # [N, D + 1]
    w = torch.zeros(xb.shape[1], num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xb @ w, y) + 0.5 * l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach()


def _class_stack(features: Sequence[torch.Tensor], name: str, dim: int | None, allow_empty: bool = False):
    xs, ys = [], []
    for c, f in enumerate(features):
        f = _features(f, f"{name}[{c}]", min_samples=0 if allow_empty else 1, dim=dim)
        dim = f.shape[1]
        xs.append(f)
        ys.append(torch.full((f.shape[0],), c, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys), dim


def classifier_gain(
    shot_features: Sequence[torch.Tensor],
    generated_features: Sequence[torch.Tensor],
    real_features: Sequence[torch.Tensor],
    *,
    method: str = "logistic",
    l2: float = 1e-2,
    max_iter: int = 200,
) -> dict[str, float]:
    """
    Classifier gain (the DAGAN protocol, Antoniou et al. 2017) in a fixed feature space.

    A classifier over the N classes is trained once on the K shots of each class alone and once on the shots plus the
    generated samples of each class; both are scored on real held-out images of those classes. Features are
    standardised with the mean and standard deviation of each classifier's own training set.

    Classifiers (both deterministic, no random initialisation):
    - `"logistic"`: multinomial logistic regression with L2 penalty `l2` on the weights, fitted by L-BFGS from zero
      weights in float64 (at most `max_iter` iterations).
    - `"nearest_mean"`: nearest class mean (Euclidean).

    Args:
        shot_features (`list[torch.Tensor]`): one `[K_c, D]` tensor per class, K_c ≥ 1.
        generated_features (`list[torch.Tensor]`): one `[G_c, D]` tensor per class (G_c may be 0).
        real_features (`list[torch.Tensor]`): one `[R_c, D]` tensor per class of real held-out images, R_c ≥ 1.
        method (`str`, defaults to `"logistic"`): `"logistic"` or `"nearest_mean"`.
        l2 (`float`, defaults to 1e-2): L2 penalty of the logistic regression.
        max_iter (`int`, defaults to 200): L-BFGS iterations of the logistic regression.

    Returns:
        `dict[str, float]`: `accuracy_shots`, `accuracy_augmented` (accuracy on all real held-out features, every
        image weighted equally) and `gain` (their difference).

    Example:

    ```py
    >>> import torch
    >>> from metagan_hub.metrics import classifier_gain

    >>> g = torch.Generator().manual_seed(0)
    >>> centres = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> shots = [c + torch.randn(2, 2, generator=g) for c in centres]
    >>> generated = [c + 0.3 * torch.randn(50, 2, generator=g) for c in centres]
    >>> real = [c + 0.3 * torch.randn(100, 2, generator=g) for c in centres]
    >>> result = classifier_gain(shots, generated, real, method="nearest_mean")
    >>> sorted(result)
    ['accuracy_augmented', 'accuracy_shots', 'gain']
    ```
    """
    if method not in CLASSIFIER_GAIN_METHODS:
        raise ValueError(f"`method` must be one of {CLASSIFIER_GAIN_METHODS}, got {method!r}.")
    if not isinstance(l2, (int, float)) or isinstance(l2, bool) or l2 < 0:
        raise ValueError(f"`l2` must be a number >= 0, got {l2!r}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"`max_iter` must be a positive integer, got {max_iter!r}.")
    for name, value in (
        ("shot_features", shot_features),
        ("generated_features", generated_features),
        ("real_features", real_features),
    ):
        if isinstance(value, torch.Tensor) or not isinstance(value, Sequence):
            raise TypeError(f"`{name}` must be a list with one [n, D] tensor per class, got {type(value).__name__}.")
    num_classes = len(shot_features)
    if num_classes < 2:
        raise ValueError(f"`shot_features` must hold at least 2 classes, got {num_classes}.")
    if len(generated_features) != num_classes or len(real_features) != num_classes:
        raise ValueError(
            f"`shot_features`, `generated_features` and `real_features` must have one entry per class each, got "
            f"{num_classes}, {len(generated_features)} and {len(real_features)}."
        )
    x_shots, y_shots, dim = _class_stack(shot_features, "shot_features", None)
    x_gen, y_gen, _ = _class_stack(generated_features, "generated_features", dim, allow_empty=True)
    x_real, y_real, _ = _class_stack(real_features, "real_features", dim)
    device = x_shots.device
    x_gen, x_real = x_gen.to(device), x_real.to(device)
    y_shots, y_gen, y_real = y_shots.to(device), y_gen.to(device), y_real.to(device)

    def accuracy(x_train: torch.Tensor, y_train: torch.Tensor) -> float:
        mean = x_train.mean(0)
        std = x_train.std(0, unbiased=False).clamp_min(1e-12) if x_train.shape[0] > 1 else torch.ones_like(mean)
        xt, xr = (x_train - mean) / std, (x_real - mean) / std
        if method == "nearest_mean":
            centres = torch.stack([xt[y_train == c].mean(0) for c in range(num_classes)])  # [C, D]
            pred = _cdist(xr, centres).argmin(dim=1)
        else:
            w = _fit_logistic(xt, y_train, num_classes, float(l2), max_iter)
            xr_b = torch.cat([xr, torch.ones(xr.shape[0], 1, dtype=xr.dtype, device=xr.device)], dim=1)
            pred = (xr_b @ w).argmax(dim=1)
        return float((pred == y_real).double().mean())

    acc_shots = accuracy(x_shots, y_shots)
    acc_aug = accuracy(torch.cat([x_shots, x_gen]), torch.cat([y_shots, y_gen]))
    return {"accuracy_shots": acc_shots, "accuracy_augmented": acc_aug, "gain": acc_aug - acc_shots}


# --------------------------------------------------------------------------------------------------------------------
# per-class registry


def evaluate_class(
    fake_features: torch.Tensor,
    real_features: torch.Tensor,
    shot_features: torch.Tensor | None = None,
    *,
    fake_logits: torch.Tensor | None = None,
    target: int | torch.Tensor | None = None,
    metrics: Sequence[str] = FEWSHOT_METRICS,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
    k: int = 3,
    density_k: int = 5,
    copy_quantile: float = 0.5,
) -> dict[str, float]:
    """
    Compute the chosen [`FEWSHOT_METRICS`] for one class.

    `recognisability` is computed only when `fake_logits` and `target` are given (it is skipped otherwise, so the
    default `metrics` work without an evaluation classifier); `copy_rate` needs `shot_features`. Asking for `kid` or
    `kid_std` returns both.

    Args:
        fake_features (`torch.Tensor`): generated features `[N, D]`.
        real_features (`torch.Tensor`): real held-out features of the class `[M, D]` (not the shots).
        shot_features (`torch.Tensor`, *optional*): features of the shots `[K, D]`, for `copy_rate`.
        fake_logits (`torch.Tensor`, *optional*): evaluation-classifier logits of the samples `[N, C]`.
        target (`int` or `torch.Tensor`, *optional*): the class index of this class in the classifier.
        metrics (`Sequence[str]`): names from [`FEWSHOT_METRICS`].
        kid_subset_size (`int`, *optional*): see [`kid`]'s `subset_size`.
        kid_subsets (`int`, defaults to 100): see [`kid`]'s `num_subsets`.
        seed (`int`, defaults to 0): seed of the KID subsets.
        k (`int`, defaults to 3): neighbourhood size of precision / recall.
        density_k (`int`, defaults to 5): neighbourhood size of density / coverage.
        copy_quantile (`float`, defaults to 0.5): see [`copy_rate`]'s `quantile`.

    Returns:
        `dict[str, float]`: one value per computed metric, in the order of [`FEWSHOT_METRICS`].
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    unknown = [m for m in metrics if m not in FEWSHOT_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; allowed: {list(FEWSHOT_METRICS)}.")
    if (fake_logits is None) != (target is None):
        raise ValueError("`fake_logits` and `target` must be given together (recognisability needs both).")
    # validate and convert once; the metric functions see float64 tensors on one device
    fake_features = _features(fake_features, "fake_features")
    real_features = _features(real_features, "real_features", dim=fake_features.shape[1]).to(fake_features.device)
    if shot_features is not None:
        shot_features = _features(shot_features, "shot_features", dim=fake_features.shape[1])
    wanted = set(metrics)
    out: dict[str, float] = {}
    if "recognisability" in wanted and fake_logits is not None:
        if (
            not isinstance(fake_logits, torch.Tensor)
            or fake_logits.ndim != 2
            or len(fake_logits) != len(fake_features)
        ):
            raise ValueError(
                f"`fake_logits` must have shape [{fake_features.shape[0]}, C] (one row per sample), got "
                f"{tuple(fake_logits.shape) if isinstance(fake_logits, torch.Tensor) else type(fake_logits).__name__}."
            )
        out["recognisability"] = recognisability(fake_logits, target)
    if wanted & {"precision", "recall"}:
        pr = precision_recall(fake_features, real_features, k=k)
        out.update({name: pr[name] for name in ("precision", "recall") if name in wanted})
    if wanted & {"density", "coverage"}:
        dc = density_coverage(fake_features, real_features, k=density_k)
        out.update({name: dc[name] for name in ("density", "coverage") if name in wanted})
    if wanted & {"kid", "kid_std"}:
        out["kid"], out["kid_std"] = kid(
            fake_features, real_features, subset_size=kid_subset_size, num_subsets=kid_subsets, seed=seed
        )
    if "fd" in wanted:
        out["fd"] = frechet_distance(fake_features, real_features)
    if "relative_diversity" in wanted:
        out["relative_diversity"] = relative_diversity(fake_features, real_features)
    if "copy_rate" in wanted:
        if shot_features is None:
            raise ValueError("`copy_rate` needs `shot_features`; pass them or leave 'copy_rate' out of `metrics`.")
        out["copy_rate"] = copy_rate(fake_features, shot_features, real_features, quantile=copy_quantile)
    return {name: out[name] for name in FEWSHOT_METRICS if name in out}
