"""How well an embedding separates the classes, as numbers for comparing models on the same images.

Silhouette score (scikit-learn, with the chosen distance itself) measures cluster separation; k-NN label
accuracy is cross-validated with folds that keep each patient on one side (``StratifiedGroupKFold``), so
near-duplicate images of one patient cannot inflate it. Results are cached on disk like the embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from core.embed.cache import ArrayCache, default_cache, digest
from core.embed.neighbours import precision_at_k
from core.embed.projection import prepare

SILHOUETTE_SAMPLE = 3000  # silhouette is O(N^2); above this many points it is estimated on a seeded sample


@dataclass(frozen=True)
class Separation:
    """Class separation of one embedding: silhouette in [-1, 1], k-NN accuracy (mean, sd) and precision@k."""

    silhouette: float
    knn_accuracy: float
    knn_std: float
    precision_at_k: float
    k: int
    folds: int
    metric: str


def silhouette(vectors: np.ndarray, labels: np.ndarray, metric: str = "cosine", seed: int = 0) -> float:
    """Silhouette score of the labels in embedding space (NaN with fewer than two classes)."""
    labels = np.asarray(labels)
    if not 2 <= len(np.unique(labels)) <= len(labels) - 1:
        return float("nan")
    sample = SILHOUETTE_SAMPLE if len(labels) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(prepare(vectors, "euclidean"), labels, metric=metric, sample_size=sample,
                                  random_state=seed))


def knn_accuracy(vectors: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None, k: int = 5,
                 metric: str = "cosine", folds: int = 5, seed: int = 0) -> tuple[float, float, int]:
    """(mean, sd, folds) of cross-validated k-NN label accuracy; folds never split a group (patient).

    Fewer folds are used when a class has fewer members than ``folds``; NaN when cross-validation is impossible.
    """
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    present = np.bincount(labels)
    present = present[present > 0]
    folds = int(min(folds, present.min() if present.size else 0, len(np.unique(groups))))
    if folds < 2 or len(present) < 2:
        return float("nan"), float("nan"), 0
    x = prepare(vectors, metric)
    neighbours = max(1, min(k, len(labels) // 2))  # the smallest training fold still holds about half the points
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=neighbours), x, labels, groups=groups,
                             cv=splitter)
    return float(scores.mean()), float(scores.std()), folds


def separation(vectors: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None, *, k: int = 5,
               metric: str = "cosine", seed: int = 0, cache: ArrayCache | None = None) -> Separation:
    """Silhouette, k-NN accuracy and precision@k of one embedding, cached by content and settings."""
    labels = np.asarray(labels, dtype=np.int64)
    group_codes = None if groups is None else np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    key = digest("separation-v1", np.asarray(vectors, dtype=np.float32), labels, group_codes, k, metric, seed)

    def compute() -> dict[str, np.ndarray]:
        mean, sd, folds = knn_accuracy(vectors, labels, group_codes, k, metric, seed=seed)
        return {"values": np.asarray([silhouette(vectors, labels, metric, seed), mean, sd,
                                      precision_at_k(vectors, labels, k, metric), folds], dtype=np.float64)}

    values = (cache or default_cache()).fetch("separation", key, compute)[0]["values"]
    return Separation(float(values[0]), float(values[1]), float(values[2]), float(values[3]), k, int(values[4]),
                      metric)
