"""Silhouette and k-NN accuracy: by-hand values, patient grouping, trained vs untrained on digits."""

from __future__ import annotations

import numpy as np
import pytest

from core import embed as E
from core.embed import metrics
from core.embed.cache import ArrayCache


def silhouette_by_hand(x: np.ndarray, labels: np.ndarray, metric: str) -> float:
    if metric == "cosine":
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = 1 - unit @ unit.T
    else:
        d = np.linalg.norm(x[:, None] - x[None], axis=2)
    scores = []
    for i in range(len(x)):
        same = (labels == labels[i]) & (np.arange(len(x)) != i)
        a = d[i, same].mean()
        b = min(d[i, labels == other].mean() for other in set(labels.tolist()) - {labels[i]})
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_silhouette_matches_the_definition(metric):
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0, 1, (15, 4)) + 3, rng.normal(0, 1, (20, 4)) - 1, rng.normal(0, 1, (10, 4))])
    labels = np.repeat([0, 1, 2], [15, 20, 10])
    assert E.silhouette(x, labels, metric) == pytest.approx(silhouette_by_hand(x, labels, metric), abs=1e-6)
    assert np.isnan(E.silhouette(x, np.zeros(len(x), int), metric))


def test_knn_accuracy_separable_and_random():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (60, 3))
    x[:30, 0] += 5
    x[30:, 1] += 5
    labels = np.repeat([0, 1], 30)
    mean, sd, folds = E.knn_accuracy(x, labels, metric="euclidean")
    assert (mean, sd, folds) == (1.0, 0.0, 5)
    noise, _, _ = E.knn_accuracy(rng.normal(size=(200, 3)), rng.integers(0, 2, 200), metric="euclidean")
    assert 0.3 < noise < 0.7


def test_patient_groups_stop_duplicates_from_leaking_across_folds():
    # 40 "patients", each with 5 near-identical images; labels are random per patient, so nothing is learnable.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 8))
    x = np.repeat(centres, 5, axis=0) + rng.normal(0, 1e-3, (200, 8))
    labels = np.repeat(rng.integers(0, 2, 40), 5)
    groups = np.repeat(np.arange(40), 5)
    leaky, _, _ = E.knn_accuracy(x, labels, None, k=3, metric="euclidean")
    honest, _, _ = E.knn_accuracy(x, labels, groups, k=3, metric="euclidean")
    assert leaky > 0.95  # a duplicate of the test image sits in the training fold
    assert honest < 0.75


def test_knn_accuracy_with_too_few_images_is_nan():
    mean, _, folds = E.knn_accuracy(np.eye(3), np.array([0, 0, 1]))
    assert np.isnan(mean) and folds == 0


def test_separation_is_cached(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    x, labels = rng.normal(size=(40, 5)), np.repeat([0, 1], 20)
    cache = ArrayCache(tmp_path)
    first = E.separation(x, labels, k=5, cache=cache)
    assert first.precision_at_k == pytest.approx(E.precision_at_k(x, labels, 5, "cosine"))
    assert first.silhouette == pytest.approx(E.silhouette(x, labels, "cosine"))
    monkeypatch.setattr(metrics, "knn_accuracy", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    assert E.separation(x, labels, k=5, cache=cache) == first


def test_trained_digits_cnn_separates_classes_better_than_its_untrained_copy(digits_model, digits, tmp_path):
    images = E.subsample(digits, 400, seed=0)
    cache = ArrayCache(tmp_path)
    trained = E.embed(digits_model, images, cache=cache)
    untrained = E.embed(E.untrained_copy("digits-cnn"), images, cache=cache)
    s_t = E.separation(trained.vectors, images.labels, cache=cache)
    s_u = E.separation(untrained.vectors, images.labels, cache=cache)
    assert s_t.silhouette > s_u.silhouette + 0.1
    assert s_t.knn_accuracy > s_u.knn_accuracy
    held_out = np.array([i.startswith("held-out/") for i in images.items])
    assert (trained.predictions[held_out] == images.labels[held_out]).mean() > 0.95
