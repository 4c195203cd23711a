import pytest
import torch

from metagan_hub.metrics import METRICS, compute_metrics, extract_features


def test_kid_is_near_zero_for_same_distribution_and_larger_for_shifted():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 1, 16, 16, generator=g) * 2 - 1
    same = torch.rand(64, 1, 16, 16, generator=g) * 2 - 1
    shifted = (torch.rand(64, 1, 16, 16, generator=g) * 2 - 1) * 0.2 + 0.7
    kid_same = compute_metrics(same, real, metrics=("kid",))["metrics"]["kid"]
    kid_shift = compute_metrics(shifted, real, metrics=("kid",))["metrics"]["kid"]
    assert abs(kid_same) < 0.01
    assert kid_shift > 10 * max(abs(kid_same), 1e-4)


def test_nearest_distances_and_diversity():
    real = torch.rand(8, 1, 16, 16) * 2 - 1
    copies = real.repeat(4, 1, 1, 1)
    result = compute_metrics(copies, real, metrics=("nn_real", "nn_fake", "diversity"))["metrics"]
    assert result["nn_real"] == pytest.approx(0.0, abs=1e-3)
    assert result["nn_fake"] == pytest.approx(0.0, abs=1e-3)
    collapsed = real[:1].repeat(32, 1, 1, 1)
    assert compute_metrics(collapsed, real, metrics=("diversity",))["metrics"]["diversity"] == pytest.approx(
        0, abs=1e-3
    )
    assert result["diversity"] > 1.0


def test_features_and_errors():
    assert extract_features(torch.zeros(2, 3, 32, 32)).shape == (2, 3 * 16 * 16)
    with pytest.raises(ValueError, match="space"):
        extract_features(torch.zeros(2, 1, 16, 16), space="inception")
    with pytest.raises(ValueError, match="unknown metrics"):
        compute_metrics(torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 16), metrics=("fid",))
    with pytest.raises(ValueError, match="at least 2"):
        METRICS["kid"](torch.zeros(1, 4), torch.zeros(3, 4))


def test_heldout_distance_is_symmetric_chamfer_rms():
    from metagan_hub.metrics import heldout_distance

    real = torch.zeros(3, 1, 4, 4)
    assert heldout_distance(real.clone(), real) == 0.0
    assert heldout_distance(torch.full((2, 1, 4, 4), 0.5), real) == pytest.approx(0.5)
    # samples {0, -1} vs real {0, 1}: sample->nearest real (0 + 1) / 2, real->nearest sample (0 + 1) / 2
    real = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    samples = torch.stack([torch.zeros(1, 4, 4), -torch.ones(1, 4, 4)])
    assert heldout_distance(samples, real) == pytest.approx(0.5 * ((0 + 1) / 2 + (0 + 1) / 2))
    with pytest.raises(ValueError, match="same C, H, W"):
        heldout_distance(torch.zeros(2, 1, 4, 4), torch.zeros(2, 3, 4, 4))
