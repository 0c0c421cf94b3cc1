"""Similar-image search in embedding space (scikit-learn NearestNeighbors) and precision@k of label agreement."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from core.embed.projection import METRICS


def neighbour_index(vectors: np.ndarray, metric: str = "cosine") -> NearestNeighbors:
    """A fitted exact nearest-neighbour index over the vectors (brute force: exact, and fast at these sizes)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return NearestNeighbors(metric=metric, algorithm="brute").fit(np.asarray(vectors, dtype=np.float32))


def nearest(index: NearestNeighbors, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, positions) of the k nearest indexed vectors to one query vector, nearest first.

    A query that is itself in the index comes back first at distance 0.
    """
    k = min(k, index.n_samples_fit_)
    distances, positions = index.kneighbors(np.asarray(query, dtype=np.float32).reshape(1, -1), n_neighbors=k)
    return np.maximum(distances[0], 0.0), positions[0]  # cosine distance can come out as -1e-7


def label_agreement(vectors: np.ndarray, labels: np.ndarray, k: int = 10, metric: str = "cosine") -> np.ndarray:
    """For every point, the fraction of its k nearest *other* points that share its label."""
    labels = np.asarray(labels)
    k = min(k, len(labels) - 1)
    if k < 1:
        raise ValueError("precision@k needs at least two points.")
    # kneighbors() without a query excludes each point itself (but keeps exact duplicates of it)
    _, positions = neighbour_index(vectors, metric).kneighbors(n_neighbors=k)
    return (labels[positions] == labels[:, None]).mean(axis=1)


def precision_at_k(vectors: np.ndarray, labels: np.ndarray, k: int = 10, metric: str = "cosine") -> float:
    """Mean over the dataset of :func:`label_agreement`: how often a retrieved neighbour has the query's label."""
    return float(label_agreement(vectors, labels, k, metric).mean())
