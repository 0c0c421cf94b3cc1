"""Similar-image search and precision@k, checked by hand and against brute-force numpy."""

from __future__ import annotations

import numpy as np
import pytest

from core import embed as E
from core.embed.cache import ArrayCache


def test_precision_at_k_by_hand():
    # two groups on a line; by hand, with k = 2 nearest other points:
    # 0 -> {1, 2}: a,b vs a = 1/2;  1 -> {0, 2}: 1/2;  2 -> {1, 0}: a,a vs b = 0
    # 10 -> {11, 12}: b,a vs b = 1/2;  11 -> {10, 12}: 1/2;  12 -> {11, 10}: b,b vs a = 0
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    labels = np.array([0, 0, 1, 1, 1, 0])
    agreement = E.label_agreement(x, labels, k=2, metric="euclidean")
    np.testing.assert_allclose(agreement, [0.5, 0.5, 0.0, 0.5, 0.5, 0.0])
    assert E.precision_at_k(x, labels, k=2, metric="euclidean") == pytest.approx(1 / 3)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_label_agreement_matches_brute_force(metric):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6))
    labels = rng.integers(0, 3, 80)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1 - unit @ unit.T if metric == "cosine" else np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :5]
    expected = (labels[nearest] == labels[:, None]).mean(1)
    np.testing.assert_allclose(E.label_agreement(x, labels, k=5, metric=metric), expected)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_a_query_image_returns_itself_first_at_distance_zero(digits_model, digits, tmp_path, metric):
    images = E.subsample(digits, 150, seed=3)
    emb = E.embed(digits_model, images, cache=ArrayCache(tmp_path))
    index = E.neighbour_index(emb.vectors, metric)
    for row in (0, 17, 149):
        distances, positions = E.nearest(index, emb.vectors[row], 5)
        assert positions[0] == row and distances[0] == pytest.approx(0.0, abs=1e-5)
        assert np.all(np.diff(distances) >= -1e-7)
    # an uploaded copy of the same picture, embedded on its own, finds it too
    vector, _ = E.embed_array(digits_model, images.image(17))
    assert E.nearest(index, vector, 1)[1][0] == 17


def test_cosine_ignores_vector_length():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 0.1]])
    distances, positions = E.nearest(E.neighbour_index(x, "cosine"), np.array([10.0, 0.0]), 3)
    assert positions.tolist() == [0, 2, 1] and distances[0] == pytest.approx(0.0, abs=1e-7)


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="metric must be one of"):
        E.neighbour_index(np.zeros((3, 2)), "manhattan")
