"""Moran's I of filters: against the textbook formula with an explicit adjacency matrix, on known patterns, and on
the bundled model (trained filters smoother than its untrained copy's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import zoo
from core.lessons.smoothness import morans_i


def morans_i_by_definition(kernel: np.ndarray) -> float:
    """I = N / S0 * sum_ij w_ij z_i z_j / sum_i z_i^2 with a 0/1 rook adjacency matrix over one C x h x w filter."""
    c, h, w = kernel.shape
    n = c * h * w
    adjacency = np.zeros((n, n))
    index = np.arange(n).reshape(c, h, w)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        adjacency[index[ch, i, j], index[ch, i + di, j + dj]] = 1
    z = kernel.ravel() - kernel.mean()
    return float(n / adjacency.sum() * (z @ adjacency @ z) / (z @ z))


def test_matches_the_definition_on_random_filters():
    filters = np.random.default_rng(0).normal(size=(6, 3, 5, 4))
    expected = [morans_i_by_definition(k) for k in filters]
    np.testing.assert_allclose(morans_i(filters), expected, rtol=1e-10)


def test_known_patterns():
    yy, xx = np.mgrid[:7, :7]
    blob = np.exp(-((yy - 3) ** 2 + (xx - 3) ** 2) / 8.0)
    checker = ((yy + xx) % 2).astype(float)
    noise = np.random.default_rng(1).normal(size=(400, 1, 7, 7))
    values = morans_i(np.stack([blob, checker, np.ones((7, 7))])[:, None])
    assert values[0] > 0.6 and values[1] < -0.9 and np.isnan(values[2])
    assert abs(float(np.mean(morans_i(noise)))) < 0.03  # independent noise: about 0 (expected -1/(N-1))
    with pytest.raises(ValueError, match="K x C x h x w"):
        morans_i(np.ones((3, 7, 7)))


def test_the_bundled_models_trained_filters_are_smoother_than_its_untrained_copys():
    cpu = torch.device("cpu")
    trained = morans_i(zoo.load_model(zoo.BUNDLED, cpu).model.conv1.weight.detach().numpy())
    untrained = morans_i(zoo.load_untrained(zoo.BUNDLED, device=cpu).model.conv1.weight.detach().numpy())
    assert np.median(trained) > np.median(untrained) + 0.15
    assert abs(float(np.median(untrained))) < 0.1
