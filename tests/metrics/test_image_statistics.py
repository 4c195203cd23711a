# Copyright 2026 The metagan_hub developers. Licensed under the Apache License, Version 2.0.
import logging
import math

import pytest
import torch

from metagan_hub.metrics import IMAGE_STATISTICS, image_statistics, statistic_spread


def strokes(widths, size=32, ink=-1.0, paper=1.0):
    """One vertical stroke per image, of the given widths in pixels, centred."""
    images = torch.full((len(widths), 1, size, size), paper)
    for i, w in enumerate(widths):
        left = size // 2 - w // 2
        images[i, :, size // 5 : size - size // 5, left : left + w] = ink
    return images


def test_structure_scale_follows_stroke_width_for_either_polarity():
    dark_on_light = image_statistics(strokes([1, 2, 4, 6]))["structure_scale"]
    assert torch.all(dark_on_light.diff() > 0)
    # within the end caps' share of the edges of the stroke width
    assert dark_on_light.tolist() == pytest.approx([1, 2, 4, 6], rel=0.3)
    light_on_dark = image_statistics(strokes([1, 2, 4, 6], ink=1.0, paper=-1.0))["structure_scale"]
    torch.testing.assert_close(light_on_dark, dark_on_light)


def test_statistics_of_known_images():
    out = image_statistics(torch.cat([torch.full((1, 1, 8, 8), 0.5), strokes([2], size=8)]))
    assert list(out) == list(IMAGE_STATISTICS)
    assert out["mean"][0] == 0.5 and out["contrast"][0] == 0 and out["edge_density"][0] == 0
    assert out["structure_scale"][0] == 0  # no edges: nothing stands out
    assert out["mean"][1] < 1 and out["edge_density"][1] > 0 and all(v.dtype == torch.float64 for v in out.values())


def test_spread_is_one_for_the_same_images_and_sees_a_dropped_factor():
    real = strokes([1, 2, 3, 4, 5, 6] * 2)
    same = statistic_spread(real, real)
    assert all(v == pytest.approx(1.0) for v in same.values())
    thin = statistic_spread(strokes([1, 2] * 6), real)  # only thin strokes: width varies less
    assert thin["structure_scale"] < 0.5 and thin["mean"] < 0.5
    wild = statistic_spread(strokes([1, 12] * 6), real)  # more than the data
    assert wild["structure_scale"] > 1.5
    # sizes may differ: 16x16 real images against 32x32 samples still give ratios
    assert set(statistic_spread(strokes([1, 3, 5]), strokes([1, 3, 5], size=16))) == set(IMAGE_STATISTICS)


def test_constant_real_statistic_gives_nan_and_a_warning(caplog):
    real = torch.full((4, 1, 8, 8), 0.3)
    with caplog.at_level(logging.WARNING, logger="metagan_hub.metrics.image_statistics"):
        out = statistic_spread(strokes([1, 2], size=8), real)
    assert all(math.isnan(v) for v in out.values())
    assert "constant over the real images" in caplog.text


@pytest.mark.parametrize(
    "fake, real, match",
    [
        (torch.zeros(4, 8, 8), torch.zeros(4, 1, 8, 8), "`fake_images` must be a tensor of shape"),
        (torch.zeros(1, 1, 8, 8), torch.zeros(4, 1, 8, 8), "`fake_images` needs at least 2"),
        (torch.zeros(4, 1, 8, 8), torch.zeros(1, 1, 8, 8), "`real_images` needs at least 2"),
        (torch.zeros(4, 1, 1, 8), torch.zeros(4, 1, 8, 8), "at least 2x2 pixels"),
        (torch.full((4, 1, 8, 8), float("nan")), torch.zeros(4, 1, 8, 8), "`fake_images` must hold finite"),
        (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, 1, 8, 8), "floating-point"),
        ([[0.0]], torch.zeros(4, 1, 8, 8), "got list"),
    ],
)
def test_bad_input_names_the_argument(fake, real, match):
    with pytest.raises(ValueError, match=match):
        statistic_spread(fake, real)
