"""Map summaries and the stored small maps, against independent computations (scikit-image, plain sums)."""

from __future__ import annotations

import numpy as np
from skimage.measure import block_reduce

from core.audit.summaries import THORAX_BOX, downsample, summarise


def test_shares_of_a_uniform_map_are_area_fractions():
    s = summarise(np.ones((100, 100)))
    left, right, top, bottom = THORAX_BOX
    assert np.isclose(s.thorax, (right - left) * (bottom - top))
    assert np.isclose(s.outside_thorax, 1 - s.thorax)
    assert np.isclose(s.border, 1 - 0.8 ** 2)  # a 10 % band on each side leaves an 80 % x 80 % centre
    assert np.isclose(s.corner, 4 * 0.2 ** 2)
    union = np.zeros((100, 100), bool)
    union[:10], union[-10:], union[:, :10], union[:, -10:] = True, True, True, True
    for rows in (slice(0, 20), slice(80, 100)):
        for cols in (slice(0, 20), slice(80, 100)):
            union[rows, cols] = True
    assert np.isclose(s.edges, union.mean())


def test_negative_relevance_is_ignored_and_a_corner_spot_is_all_edge():
    h = np.full((50, 50), -3.0)
    h[0:3, 47:50] = 2.0  # top-right corner, inside the border band
    s = summarise(h)
    assert (s.thorax, s.border, s.corner, s.edges) == (0.0, 1.0, 1.0, 1.0)


def test_a_map_with_no_positive_relevance_has_no_shares():
    assert np.isnan(summarise(-np.ones((20, 20))).thorax)


def test_downsample_is_block_averaging():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 64, 64)).astype(np.float32)
    expected = block_reduce(maps, (1, 4, 4), np.mean)
    np.testing.assert_allclose(downsample(maps, 16), expected, rtol=1e-5, atol=1e-6)
