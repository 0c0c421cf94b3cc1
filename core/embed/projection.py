"""2-D maps of embeddings: PCA (scikit-learn), t-SNE (openTSNE) and UMAP (umap-learn), each cached on disk.

Cosine distance is handled by L2-normalising the vectors and using Euclidean distance, which ranks pairs
identically (|a - b|^2 = 2 - 2 cos for unit vectors), so every method, and PCA's pre-reduction, sees one
consistent geometry. t-SNE first reduces to 50 principal components, the standard recipe that speeds up its
neighbour search without changing the picture. openTSNE's FFT-accelerated gradients beat scikit-learn's
Barnes-Hut TSNE on the 5,216 X-ray embeddings in every benchmark run here (18.6 s against 73.7 s on an idle
machine, 1.2-1.8x under load), with the same trustworthiness (0.97).

UMAP's first call in a process compiles numba code for 10-35 s; :func:`warm_up_umap` does that in a
background thread when a page loads, so by the time someone asks for UMAP the compiled code is ready.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from core.embed.cache import ArrayCache, default_cache, digest

METHODS = ("PCA", "t-SNE", "UMAP")
METRICS = ("euclidean", "cosine")
TSNE_PCA_DIMS = 50
TSNE_JOBS = 1  # on this 2-core machine shared with other work, one thread beat two (55 s vs 62 s under load)

# UMAP's notes that do not apply here, filtered once (warnings.catch_warnings() is not thread-safe and pages run
# on several threads): seeded UMAP is single-threaded by design, and its search index is only needed by
# transform(), which is not used.
warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
warnings.filterwarnings("ignore", message=".*knn_search_index.*")


@dataclass(frozen=True)
class ProjectionParams:
    """Parameters of a 2-D projection; each method reads only its own."""

    method: str = "t-SNE"
    metric: str = "euclidean"
    seed: int = 0
    perplexity: float = 30.0
    n_neighbors: int = 15
    min_dist: float = 0.1

    def relevant(self) -> tuple:
        """The parameters that change this method's output (the cache key uses only these)."""
        if self.method == "PCA":
            return (self.method, self.metric)
        if self.method == "t-SNE":
            return (self.method, self.metric, float(self.perplexity))  # PCA initialisation, fixed seed
        return (self.method, self.metric, self.seed, int(self.n_neighbors), float(self.min_dist))


def prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    """float32 copy of the vectors; unit-length rows when the metric is cosine."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    x = np.asarray(vectors, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    return x


def project(vectors: np.ndarray, params: ProjectionParams | None = None, cache: ArrayCache | None = None
            ) -> np.ndarray:
    """N x 2 coordinates of the vectors under ``params`` (cached by the vectors' content and the parameters)."""
    params = params or ProjectionParams()
    if params.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {params.method!r}")
    if len(vectors) < 3:
        raise ValueError(f"A 2-D map needs at least 3 points, got {len(vectors)}.")
    key = digest("projection-v2", np.asarray(vectors, dtype=np.float32), params.relevant())
    arrays, _ = (cache or default_cache()).fetch("projections", key, lambda: {"xy": _compute(vectors, params)})
    return arrays["xy"]


def _compute(vectors: np.ndarray, p: ProjectionParams) -> np.ndarray:
    x = prepare(vectors, p.metric)
    n = len(x)
    if p.method == "PCA":
        return PCA(n_components=2).fit_transform(x).astype(np.float32)
    if p.method == "t-SNE":
        if x.shape[1] > TSNE_PCA_DIMS and n > TSNE_PCA_DIMS:
            x = PCA(n_components=TSNE_PCA_DIMS, random_state=0).fit_transform(x)
        from openTSNE import TSNE

        perplexity = min(float(p.perplexity), (n - 1) / 3)  # each point needs 3 x perplexity neighbours
        embedding = TSNE(n_components=2, perplexity=perplexity, initialization="pca", metric="euclidean",
                         n_jobs=TSNE_JOBS, random_state=0, verbose=False).fit(x)
        return np.asarray(embedding, dtype=np.float32)
    return _umap(x, n_neighbors=min(int(p.n_neighbors), n - 1), min_dist=float(p.min_dist), seed=p.seed)


def _umap(x: np.ndarray, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    """UMAP on exact neighbours from scikit-learn (brute force, BLAS): at these sizes that is faster than
    UMAP's own approximate search, exact, and it skips compiling pynndescent, the slowest part of UMAP's
    first call."""
    import umap

    distances, indices = NearestNeighbors(n_neighbors=n_neighbors, algorithm="brute").fit(x).kneighbors(x)
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, metric="euclidean",
                        random_state=seed, precomputed_knn=(indices, distances))
    return reducer.fit_transform(x).astype(np.float32)


@dataclass
class WarmUp:
    """State of the background UMAP compilation."""

    thread: threading.Thread | None = None
    seconds: float | None = None

    @property
    def done(self) -> bool:
        """True once the compiled code is ready."""
        return self.seconds is not None


_WARM = WarmUp()
_WARM_LOCK = threading.Lock()


def warm_up_umap(wait: bool = False) -> WarmUp:
    """Compile UMAP's numba code once per process in a daemon thread (the same code path as :func:`project`,
    on 200 random points); ``wait`` blocks until it is done."""
    with _WARM_LOCK:
        if _WARM.thread is None:
            def run() -> None:
                started = time.perf_counter()
                x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
                _umap(x, n_neighbors=10, min_dist=0.1, seed=0)
                _WARM.seconds = time.perf_counter() - started

            _WARM.thread = threading.Thread(target=run, name="umap-warm-up", daemon=True)
            _WARM.thread.start()
    if wait:
        _WARM.thread.join()
    return _WARM
