"""2-D maps: PCA equals the top principal components, t-SNE and UMAP keep neighbourhoods, all are cached."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.manifold import trustworthiness

from core import embed as E
from core.embed import projection
from core.embed.cache import ArrayCache


@pytest.fixture(scope="module")
def digit_vectors(digits_model, digits, tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    images = E.subsample(digits, 300, seed=1)
    emb = E.embed(digits_model, images, cache=ArrayCache(tmp_path_factory.mktemp("emb")))
    return emb.vectors, images.labels


def test_pca_is_the_top_two_principal_components(digit_vectors, tmp_path):
    x = digit_vectors[0].astype(np.float64)
    xy = E.project(x, E.ProjectionParams("PCA", "euclidean"), cache=ArrayCache(tmp_path))
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    for j in range(2):  # each component is defined up to sign
        assert min(np.abs(xy[:, j] - expected[:, j]).max(), np.abs(xy[:, j] + expected[:, j]).max()) < 1e-3


def test_cosine_prepares_unit_vectors():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(projection.prepare(x, "cosine"), [[0.6, 0.8], [0, 0], [1, 0]])
    with pytest.raises(ValueError, match="metric must be one of"):
        projection.prepare(x, "hamming")


@pytest.mark.parametrize("method", ["t-SNE", "UMAP"])
def test_nonlinear_maps_keep_neighbourhoods_and_are_cached(digit_vectors, tmp_path, monkeypatch, method):
    x, labels = digit_vectors
    cache = ArrayCache(tmp_path)
    params = E.ProjectionParams(method, "cosine", seed=0, perplexity=20, n_neighbors=10)
    xy = E.project(x, params, cache=cache)
    assert xy.shape == (300, 2) and np.isfinite(xy).all()
    assert trustworthiness(projection.prepare(x, "cosine"), xy, n_neighbors=10) > 0.9
    assert E.knn_accuracy(xy, labels, metric="euclidean")[0] > 0.9  # the classes stay apart in 2-D
    monkeypatch.setattr(projection, "_compute", lambda *a: pytest.fail("recomputed despite the cache"))
    np.testing.assert_array_equal(E.project(x, params, cache=cache), xy)
    monkeypatch.undo()
    changed = {"t-SNE": {"perplexity": 40}, "UMAP": {"seed": 1}}[method]  # t-SNE starts from PCA: no seed
    moved = E.project(x, E.ProjectionParams(**{**params.__dict__, **changed}), cache=cache)
    assert not np.allclose(moved, xy) and len(list(cache.entries("projections"))) == 2


def test_irrelevant_parameters_share_a_cache_entry(digit_vectors, tmp_path):
    cache = ArrayCache(tmp_path)
    E.project(digit_vectors[0], E.ProjectionParams("PCA", "euclidean", seed=0, perplexity=10), cache=cache)
    E.project(digit_vectors[0], E.ProjectionParams("PCA", "euclidean", seed=5, perplexity=40), cache=cache)
    assert len(list(cache.entries("projections"))) == 1


def test_umap_warm_up_compiles_in_the_background():
    state = E.warm_up_umap()
    assert state.thread.daemon and state.thread.name == "umap-warm-up"
    state = E.warm_up_umap(wait=True)
    assert state.done and state.seconds > 0
    assert E.warm_up_umap() is state  # once per process


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        E.project(np.zeros((5, 2)), E.ProjectionParams("MDS"))
    with pytest.raises(ValueError, match="at least 3 points"):
        E.project(np.zeros((2, 2)), E.ProjectionParams("PCA"))
