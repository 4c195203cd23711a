import logging
import math

import pytest
import torch

from metagan_hub.metrics import (
    FEWSHOT_METRICS,
    classifier_gain,
    copy_rate,
    copy_threshold,
    density_coverage,
    evaluate_class,
    frechet_distance,
    kid,
    precision_recall,
    recognisability,
    relative_diversity,
)
from metagan_hub.metrics.fewshot import _frechet_from_moments


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------------------------
# KID


def test_kid_of_a_set_against_itself_is_zero_and_grows_with_a_shift():
    real = randn(200, 16)
    same_mean, same_std = kid(real, real, subset_size=200, num_subsets=3)
    assert same_std == pytest.approx(0.0, abs=1e-9)  # every round uses both whole sets
    other = randn(200, 16, seed=1)
    other_mean, _ = kid(other, real, subset_size=100, num_subsets=20)
    shifted_mean, shifted_std = kid(other + 1.0, real, subset_size=100, num_subsets=20)
    assert shifted_mean > 1.0
    # the unbiased estimate of a set against itself is slightly negative (-2 (mean k(x, x) - mean k(x, y)) / m)
    assert abs(same_mean) < 0.1 * shifted_mean
    assert abs(other_mean) < 0.05 * shifted_mean
    assert shifted_std > 0


def test_kid_matches_the_unbiased_estimator_written_out_and_is_deterministic():
    fake, real = randn(6, 3, seed=2), randn(5, 3, seed=3) + 0.5
    d = 3

    def k(a, b):
        return (a.double() @ b.double().T / d + 1) ** 3

    m = 5
    expected = []
    gen = torch.Generator().manual_seed(7)
    for _ in range(4):
        x = fake[torch.randperm(6, generator=gen)[:m]]
        y = real[torch.randperm(5, generator=gen)[:m]]
        kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
        xx = sum(kxx[i, j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        yy = sum(kyy[i, j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        expected.append(float(xx + yy - 2 * kxy.mean()))
    mean, std = kid(fake, real, subset_size=m, num_subsets=4, seed=7)
    assert mean == pytest.approx(sum(expected) / 4, rel=1e-9)
    assert std == pytest.approx(float(torch.tensor(expected, dtype=torch.float64).std(unbiased=False)), rel=1e-9)
    # the same call twice is promised to be bit-identical (same seed, same inputs, same object)
    assert kid(fake, real, subset_size=m, num_subsets=4, seed=7) == (mean, std)


def test_kid_default_subset_size_and_errors():
    fake, real = randn(30, 4), randn(12, 4, seed=1)
    mean, _ = kid(fake, real, num_subsets=2)  # default subset size min(1000, 30, 12) = 12
    assert math.isfinite(mean)
    with pytest.raises(ValueError, match=r"`subset_size`=13 .* fake has 30 and real has 12"):
        kid(fake, real, subset_size=13)
    with pytest.raises(ValueError, match="`subset_size` must be at least 2"):
        kid(fake, real, subset_size=1)
    with pytest.raises(ValueError, match="at least 2"):
        kid(fake[:1], real)  # default subset size 1
    with pytest.raises(TypeError, match="subset_size"):
        kid(fake, real, subset_size=2.5)
    with pytest.raises(ValueError, match="num_subsets"):
        kid(fake, real, num_subsets=0)
    with pytest.raises(ValueError, match="feature dimension 5"):
        kid(fake, randn(12, 5))
    with pytest.raises(ValueError, match=r"`fake` must have shape \[N, D\]"):
        kid(torch.zeros(3), real)
    with pytest.raises(TypeError, match="floating"):
        kid(fake, torch.zeros(12, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        kid(fake, torch.full((12, 4), float("nan")))
    with pytest.raises(TypeError, match="torch.Tensor"):
        kid(fake.tolist(), real)


# --------------------------------------------------------------------------------------------------------------------
# FD


def test_fd_closed_form_for_diagonal_gaussians():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, -1.0, 2.0])
    s1, s2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 0.0])  # one covariance is rank deficient
    expected = float(((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())
    got = _frechet_from_moments(mu1.double(), torch.diag(s1).double(), mu2.double(), torch.diag(s2).double(), eps=0)
    assert got == pytest.approx(expected, rel=1e-12)


def test_fd_of_many_samples_approaches_the_closed_form():
    n = 20000
    std1, std2 = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 2.0])
    mu2 = torch.tensor([1.0, 0.0])
    a = randn(n, 2) * std1
    b = randn(n, 2, seed=1) * std2 + mu2
    expected = float((mu2**2).sum() + ((std1 - std2) ** 2).sum())  # 1 + 0.25
    assert frechet_distance(a, b) == pytest.approx(expected, abs=0.05)


def test_fd_self_is_zero_and_shift_is_exact_even_when_rank_deficient():
    real = randn(20, 128)  # 20 samples in 128 dimensions: covariance of rank 19
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    shift = torch.zeros(128)
    shift[:4] = 1.0
    assert frechet_distance(real + shift, real) == pytest.approx(4.0, abs=1e-5)
    other = randn(20, 128, seed=1)
    value = frechet_distance(other, real)
    assert math.isfinite(value) and value > 10
    # agrees with scipy's matrix square root on a well-conditioned case
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a, b = randn(300, 6, seed=2).double(), (randn(300, 6, seed=3) * 1.5 + 0.2).double()
    c1, c2 = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    tr = scipy_linalg.sqrtm(c1 @ c2).real.trace()
    expected = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + c1.trace() + c2.trace() - 2 * tr
    assert frechet_distance(a, b, eps=0) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-2])
def test_fd_few_samples_subspace_path_equals_the_full_eigen_decomposition(eps):
    fake, real = randn(20, 64, seed=4).double(), (randn(25, 64, seed=5) * 1.3 + 0.1).double()  # 45 < 64 dimensions
    full = _frechet_from_moments(fake.mean(0), torch.cov(fake.T), real.mean(0), torch.cov(real.T), eps=eps)
    # the full path takes square roots of round-off eigenvalues in the null space (about 1e-7 each when eps = 0)
    assert frechet_distance(fake, real, eps=eps) == pytest.approx(full, abs=1e-5)


def test_fd_errors():
    with pytest.raises(ValueError, match="`fake` needs at least 2 samples, got 1"):
        frechet_distance(randn(1, 3), randn(5, 3))
    with pytest.raises(ValueError, match="`real` needs at least 2"):
        frechet_distance(randn(5, 3), randn(1, 3))
    with pytest.raises(ValueError, match="eps"):
        frechet_distance(randn(5, 3), randn(5, 3), eps=-1.0)


# --------------------------------------------------------------------------------------------------------------------
# precision / recall, density / coverage


def test_manifold_metrics_of_identical_clouds():
    real = randn(60, 8)
    assert precision_recall(real, real.clone()) == {"precision": 1.0, "recall": 1.0}
    dc = density_coverage(real, real.clone())
    assert dc["coverage"] == 1.0
    assert 0.7 < dc["density"] < 1.5  # about 1 for samples distributed like the real images


def test_manifold_metrics_of_a_far_cloud_are_zero():
    real = randn(60, 8)
    far = randn(60, 8, seed=1) + 100.0
    assert precision_recall(far, real) == {"precision": 0.0, "recall": 0.0}
    assert density_coverage(far, real) == {"density": 0.0, "coverage": 0.0}


def test_half_of_the_samples_inside_gives_one_half():
    cloud = randn(50, 4)
    # half the samples are copies of every real point, half lie far away: precision 1/2, full recall and coverage
    real, fake = cloud, torch.cat([cloud.clone(), cloud + 100.0])
    assert precision_recall(fake, real) == {"precision": 0.5, "recall": 1.0}
    dc = density_coverage(fake, real)
    assert dc["coverage"] == 1.0
    assert dc["density"] == pytest.approx(0.5 * density_coverage(cloud, cloud)["density"])
    # the samples cover one of two real clusters: precision 1, recall and coverage 1/2
    real, fake = torch.cat([cloud, cloud + 100.0]), cloud.clone()
    assert precision_recall(fake, real) == {"precision": 1.0, "recall": 0.5}
    assert density_coverage(fake, real)["coverage"] == 0.5


def test_precision_without_recall_for_a_collapsed_generator():
    real = randn(100, 4)
    collapsed = real[:1].repeat(50, 1) + 1e-4 * randn(50, 4, seed=2)  # all near one real point
    pr = precision_recall(collapsed, real)
    dc = density_coverage(collapsed, real)
    assert pr["precision"] == 1.0
    assert pr["recall"] < 0.1
    assert dc["coverage"] < 0.1


def test_manifold_metric_errors():
    real = randn(3, 4)
    with pytest.raises(ValueError, match=r"`real` needs more than k=3 samples .* got 3"):
        precision_recall(randn(10, 4), real)
    with pytest.raises(ValueError, match=r"`fake` needs more than k=3"):
        precision_recall(randn(2, 4), randn(10, 4))
    with pytest.raises(ValueError, match=r"`real` needs more than k=5"):
        density_coverage(randn(10, 4), randn(5, 4))
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        precision_recall(randn(10, 4), randn(10, 4), k=0)
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        density_coverage(randn(10, 4), randn(10, 4), k=2.0)
    with pytest.raises(ValueError, match="feature dimension"):
        density_coverage(randn(10, 4), randn(10, 3))


# --------------------------------------------------------------------------------------------------------------------
# relative diversity and copy rate


def test_large_sets_use_the_matrix_product_distances(monkeypatch):
    from metagan_hub.metrics import fewshot

    a, b = randn(30, 8).double(), randn(20, 8, seed=1).double() + 5.0
    exact = fewshot._cdist(a, b)
    monkeypatch.setattr(fewshot, "_EXACT_CDIST_MAX", 0)
    assert torch.allclose(fewshot._cdist(a, b), exact, rtol=0, atol=1e-10)
    assert torch.equal(fewshot._self_cdist(a).diagonal(), torch.zeros(30, dtype=torch.float64))
    real = randn(60, 8)
    assert precision_recall(real + 0.01, real)["precision"] == 1.0


def test_relative_diversity():
    real = randn(30, 8)
    assert relative_diversity(real, real) == pytest.approx(1.0, rel=1e-12)
    assert relative_diversity(2 * real, real) == pytest.approx(2.0, rel=1e-12)
    collapsed = real[:1].repeat(40, 1) + 1e-6 * randn(40, 8, seed=1)
    assert relative_diversity(collapsed, real) < 1e-3
    with pytest.raises(ValueError, match="all identical"):
        relative_diversity(real, torch.zeros(5, 8))
    with pytest.raises(ValueError, match="`fake` needs at least 2"):
        relative_diversity(real[:1], real)


def test_copy_rate():
    real = randn(20, 8)
    shots = randn(5, 8, seed=1)
    assert copy_rate(shots.repeat(3, 1), shots, real) == 1.0
    assert copy_rate(shots + 1e-3, shots, real) == 1.0
    assert copy_rate(randn(30, 8, seed=2) + 50.0, shots, real) == 0.0
    # real held-out images' own rate is a valid call: fake=real
    own = copy_rate(real, shots, real)
    assert 0.0 <= own <= 1.0


def test_copy_rate_threshold_is_the_median_real_nearest_neighbour_distance(caplog):
    real = torch.tensor([[0.0], [1.0], [3.0], [7.0]])  # nearest-neighbour distances 1, 1, 2, 4 -> median 1.5
    assert copy_threshold(real) == pytest.approx(1.5)
    assert copy_threshold(real, quantile=1.0) == pytest.approx(4.0)
    shots = torch.tensor([[100.0]])
    fake = torch.tensor([[100.0], [101.4], [101.5], [98.0]])  # distances 0, 1.4, 1.5 (not strictly below), 2
    assert copy_rate(fake, shots, real) == 0.5
    assert copy_rate(fake, shots, real, quantile=1.0) == 1.0
    with pytest.raises(ValueError, match="quantile"):
        copy_rate(fake, shots, real, quantile=1.5)
    duplicated = torch.tensor([[0.0], [0.0], [1.0], [1.0], [5.0]])  # nearest-neighbour distances 0, 0, 0, 0, 4
    with caplog.at_level(logging.WARNING, logger="metagan_hub.metrics.fewshot"):
        assert copy_rate(duplicated, duplicated, duplicated) == 0.0
    assert "copy threshold is 0" in caplog.text
    with pytest.raises(ValueError, match="`real` needs at least 2"):
        copy_rate(fake, shots, real[:1])
    with pytest.raises(ValueError, match="`shots` needs at least 1"):
        copy_rate(fake, torch.zeros(0, 1), real)


# --------------------------------------------------------------------------------------------------------------------
# recognisability and classifier gain


def test_recognisability_on_a_toy_classifier():
    classifier = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))  # class = direction
    samples = torch.tensor([[2.0, 0.1], [1.0, 0.5], [0.0, 3.0], [-1.0, -2.0], [3.0, -1.0]])
    logits = classifier(samples)
    assert recognisability(logits, target=0) == pytest.approx(3 / 5)
    assert recognisability(logits, target=torch.tensor(1)) == pytest.approx(1 / 5)
    assert recognisability(logits, target=torch.tensor([0, 0, 1, 2, 0])) == 1.0
    with pytest.raises(ValueError, match=r"`target` must lie in \[0, 3\)"):
        recognisability(logits, target=3)
    with pytest.raises(ValueError, match=r"shape \[5\]"):
        recognisability(logits, target=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer tensor"):
        recognisability(logits, target=torch.tensor(0.0))
    with pytest.raises(TypeError, match="`target`"):
        recognisability(logits, target=0.0)
    with pytest.raises(ValueError, match=r"`logits` must be a tensor of shape \[N, K\]"):
        recognisability(logits[0], target=0)


def _gain_task(wrong_class: bool, seed: int = 0):
    """3 classes in 10-D, one noisy shot each; generated samples from the true (or the next) class distribution."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.2 * torch.eye(3, 10)
    shots = [c + torch.randn(1, 10, generator=g) for c in centres]
    generated = [centres[(i + 1) % 3 if wrong_class else i] + torch.randn(60, 10, generator=g) for i in range(3)]
    real = [c + torch.randn(100, 10, generator=g) for c in centres]
    return shots, generated, real


@pytest.mark.parametrize("method", ["logistic", "nearest_mean"])
def test_classifier_gain_is_positive_for_good_samples_and_negative_for_wrong_ones(method):
    good = classifier_gain(*_gain_task(wrong_class=False), method=method)
    assert set(good) == {"accuracy_shots", "accuracy_augmented", "gain"}
    assert good["gain"] == pytest.approx(good["accuracy_augmented"] - good["accuracy_shots"])
    assert good["gain"] > 0.1
    wrong = classifier_gain(*_gain_task(wrong_class=True), method=method)
    assert wrong["gain"] < -0.2
    assert wrong["accuracy_augmented"] < 1 / 3


def test_classifier_gain_errors():
    shots, generated, real = _gain_task(False)
    with pytest.raises(ValueError, match="method"):
        classifier_gain(shots, generated, real, method="svm")
    with pytest.raises(ValueError, match="one entry per class each, got 3, 2 and 3"):
        classifier_gain(shots, generated[:2], real)
    with pytest.raises(ValueError, match="at least 2 classes"):
        classifier_gain(shots[:1], generated[:1], real[:1])
    with pytest.raises(TypeError, match="list with one"):
        classifier_gain(torch.stack([s[0] for s in shots]), generated, real)
    with pytest.raises(ValueError, match=r"`real_features\[1\]` has feature dimension 4"):
        classifier_gain(shots, generated, [real[0], real[1][:, :4], real[2]])
    with pytest.raises(ValueError, match=r"`shot_features\[0\]` needs at least 1"):
        classifier_gain([torch.zeros(0, 10)] + shots[1:], generated, real)
    # no generated samples for a class is allowed (that class is then trained on its shots alone)
    result = classifier_gain(shots, [torch.zeros(0, 10)] + generated[1:], real, method="nearest_mean")
    assert 0 <= result["accuracy_augmented"] <= 1


# --------------------------------------------------------------------------------------------------------------------
# evaluate_class


def test_evaluate_class_computes_the_chosen_metrics():
    real, shots, fake = randn(20, 8), randn(5, 8, seed=1), randn(40, 8, seed=2)
    logits = randn(40, 4, seed=3)
    result = evaluate_class(fake, real, shots, fake_logits=logits, target=2, kid_subsets=5)
    assert list(result) == list(FEWSHOT_METRICS)
    assert result["recognisability"] == recognisability(logits, 2)
    assert result["precision"] == precision_recall(fake, real, k=3)["precision"]
    assert result["coverage"] == density_coverage(fake, real, k=5)["coverage"]
    assert (result["kid"], result["kid_std"]) == kid(fake, real, num_subsets=5)
    assert result["copy_rate"] == copy_rate(fake, shots, real)
    without_logits = evaluate_class(fake, real, shots, kid_subsets=5)
    assert "recognisability" not in without_logits and len(without_logits) == len(FEWSHOT_METRICS) - 1
    assert list(evaluate_class(fake, real, metrics=("kid_std", "recall"), kid_subsets=2)) == [
        "recall",
        "kid",
        "kid_std",
    ]


def test_evaluate_class_errors():
    real, shots, fake = randn(20, 8), randn(5, 8, seed=1), randn(40, 8, seed=2)
    with pytest.raises(ValueError, match=r"unknown metrics \['fid'\]; allowed: \['recognisability'"):
        evaluate_class(fake, real, shots, metrics=("fid",))
    with pytest.raises(ValueError, match="given together"):
        evaluate_class(fake, real, shots, fake_logits=randn(40, 3))
    with pytest.raises(ValueError, match=r"`fake_logits` must have shape \[40, C\]"):
        evaluate_class(fake, real, shots, fake_logits=randn(39, 3), target=0)
    with pytest.raises(ValueError, match=r"`real_features` has feature dimension 7"):
        evaluate_class(fake, randn(20, 7), shots)
    with pytest.raises(TypeError, match="`fake_features` must be a torch.Tensor"):
        evaluate_class(fake.numpy(), real, shots)
    with pytest.raises(ValueError, match="needs `shot_features`"):
        evaluate_class(fake, real, metrics=("copy_rate",))
    with pytest.raises(ValueError, match=r"`subset_size`=30 .* real has 20"):
        evaluate_class(fake, real, shots, metrics=("kid",), kid_subset_size=30)
