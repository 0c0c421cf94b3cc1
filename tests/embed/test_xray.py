"""On real chest X-rays: the trained bundled model's embedding beats its untrained copy's, and search works."""

from __future__ import annotations

import numpy as np
import pytest

from core import embed as E
from core.data import patient_id
from core.embed.cache import ArrayCache

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def xrays() -> E.ImageSet:
    """200 X-rays (stratified, seeded) from the training folder, at most one per patient."""
    images = E.folder_source()
    first = {}
    for i, path in enumerate(images.items):
        first.setdefault(patient_id(path.rsplit("/", 1)[-1]), i)
    one_each = images.subset(sorted(first.values()))
    return E.subsample(one_each, 200, seed=0)


@pytest.fixture(scope="module")
def embedded(xrays, tmp_path_factory):
    cache = ArrayCache(tmp_path_factory.mktemp("xray-cache"))
    trained = E.embed(E.load("cxr-resnet18"), xrays, cache=cache)
    untrained = E.embed(E.untrained_copy("cxr-resnet18"), xrays, cache=cache)
    return trained, untrained, cache


def test_subset_spans_patients_and_classes(xrays):
    assert len(xrays) == 200 and len(set(xrays.groups)) == 200
    assert np.bincount(xrays.labels).min() >= 40


def test_trained_model_separates_pneumonia_better_than_untrained(xrays, embedded):
    trained, untrained, cache = embedded
    assert trained.vectors.shape == (200, 256)  # width-32 ResNet-18: 8 x 32 channels before the classifier
    s_t = E.separation(trained.vectors, xrays.labels, xrays.groups, cache=cache)
    s_u = E.separation(untrained.vectors, xrays.labels, xrays.groups, cache=cache)
    assert s_t.knn_accuracy > s_u.knn_accuracy
    assert s_t.silhouette > s_u.silhouette
    assert s_t.precision_at_k > s_u.precision_at_k
    assert (trained.predictions == xrays.labels).mean() > 0.85  # it is a trained classifier


def test_xray_query_returns_itself_first(xrays, embedded):
    trained = embedded[0]
    index = E.neighbour_index(trained.vectors, "cosine")
    vector, _ = E.embed_array(E.load("cxr-resnet18"), xrays.image(42))
    distances, positions = E.nearest(index, vector, 6)
    assert positions[0] == 42 and distances[0] == pytest.approx(0.0, abs=1e-5)
