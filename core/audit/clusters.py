"""Shortcut hunting over a finished audit: SpRAy-style clustering of the explanation maps (Lapuschkin et al.
2019, "Unmasking Clever Hans predictors"), per-cluster statistics and a ranking of edge-heavy maps.

Each map's positive relevance is made into shares summing to 1 (so clusters group *where* the evidence is, not
how strong it is), flattened, and clustered with scikit-learn: spectral clustering on a k-nearest-neighbour graph
(SpRAy's choice) up to ``SPECTRAL_MAX`` images, mini-batch k-means beyond that (the spectral graph's eigenproblem
grows too large for one machine). The number of clusters, unless given, is the one with the best silhouette.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import MiniBatchKMeans, SpectralClustering
from sklearn.metrics import silhouette_score

SPECTRAL_MAX = 3000
MAX_CLUSTERS = 10
SILHOUETTE_SAMPLE = 2000
PROTOTYPES = 4


@dataclass(frozen=True)
class Clustering:
    """Cluster of each map (-1 for rows without a map), the algorithm and the silhouette of the chosen k."""

    labels: np.ndarray
    algorithm: str
    k: int
    silhouette: float


def map_features(maps: np.ndarray) -> np.ndarray:
    """N x P flattened maps -> their positive parts as shares summing to 1 per row (rows without any positive
    relevance stay zero)."""
    positive = np.clip(np.nan_to_num(maps.astype(np.float64)), 0, None)
    totals = positive.sum(axis=1, keepdims=True)
    return np.divide(positive, totals, out=np.zeros_like(positive), where=totals > 0)


def _fit(features: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, str]:
    if len(features) <= SPECTRAL_MAX:
        neighbours = min(10, len(features) - 1)
        model = SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=neighbours, random_state=seed,
                                   assign_labels="cluster_qr")
        with warnings.catch_warnings():  # scikit-learn warns whenever X is square (256 maps of 16 x 16 cells)
            warnings.filterwarnings("ignore", message="The spectral clustering API has changed")
            return model.fit_predict(features), "spectral"
    model = MiniBatchKMeans(k, random_state=seed, n_init=3, batch_size=4096)
    return model.fit_predict(features), "k-means"


def _silhouette(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
    if len(np.unique(labels)) < 2:
        return float("nan")
    size = min(len(features), SILHOUETTE_SAMPLE)
    return float(silhouette_score(features, labels, sample_size=size, random_state=seed))


def cluster_maps(maps: np.ndarray, k: int | None = None, seed: int = 0) -> Clustering:
    """Cluster N flattened maps into ``k`` groups (default: the k in 2..10 with the best silhouette)."""
    features = map_features(maps)
    n = len(features)
    if n < 3:
        return Clustering(np.zeros(n, dtype=np.int64), "none (fewer than 3 maps)", 1, float("nan"))
    if k is not None:
        if not 1 <= k < n:
            raise ValueError(f"clusters must be between 1 and {n - 1} for {n} maps, got {k}.")
        labels, algorithm = _fit(features, k, seed) if k > 1 else (np.zeros(n, dtype=np.int64), "none (k = 1)")
        return Clustering(labels.astype(np.int64), algorithm, k, _silhouette(features, labels, seed))
    best: Clustering | None = None
    for candidate in range(2, min(MAX_CLUSTERS, n - 1) + 1):
        labels, algorithm = _fit(features, candidate, seed)
        score = _silhouette(features, labels, seed)
        if best is None or score > best.silhouette:
            best = Clustering(labels.astype(np.int64), algorithm, candidate, score)
    assert best is not None  # n >= 3 gives at least k = 2
    return best


def cluster_table(rows: pd.DataFrame, maps: np.ndarray, clusters: np.ndarray, side: int,
                  summary_columns: Sequence[str]) -> pd.DataFrame:
    """One row per cluster: size, class mix (``true_<class>``, ``predicted_<class>`` counts), accuracy (where
    labels are known), mean summaries, mean map (shares, side x side, flattened) and the files nearest the
    cluster's mean map (prototypes)."""
    features = map_features(maps)
    true_names = sorted(rows["label"].dropna().unique())
    predicted_names = sorted(rows["prediction"].dropna().unique())
    out = []
    for c in sorted(set(clusters.tolist())):
        member = clusters == c
        part = rows[member]
        labelled = part["label"].notna()
        centre = features[member].mean(axis=0)
        nearest = np.argsort(((features[member] - centre) ** 2).sum(axis=1))[:PROTOTYPES]
        record = {"cluster": int(c), "size": int(member.sum()),
                  **{f"true_{name}": int((part["label"] == name).sum()) for name in true_names},
                  **{f"predicted_{name}": int((part["prediction"] == name).sum()) for name in predicted_names},
                  "accuracy": float((part["label"] == part["prediction"])[labelled].mean()) if labelled.any()
                  else float("nan"),
                  "mean_map": centre.astype(np.float32).reshape(side * side),
                  "prototypes": part["file"].to_numpy()[nearest].tolist()}
        record.update({f"mean_{col}": float(part[col].mean()) for col in summary_columns})
        out.append(record)
    return pd.DataFrame(out)


def edge_ranking(rows: pd.DataFrame, method: str, top: int | None = None) -> pd.DataFrame:
    """Images whose ``method`` evidence sits most at the borders and corners (markers, text), highest first."""
    column = f"{method}_edges"
    keep = ["file", "label", "prediction", "probability", "cluster", column, f"{method}_corner",
            f"{method}_border", f"{method}_outside_thorax"]
    ranked = rows.dropna(subset=[column]).sort_values(column, ascending=False, kind="stable")[keep]
    return ranked if top is None else ranked.head(top)
