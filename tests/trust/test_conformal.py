"""Split-conformal quantile and sets: by hand, against MAPIE, and by coverage on exchangeable data."""

import numpy as np
import pytest
from mapie.classification import SplitConformalClassifier
from sklearn.base import BaseEstimator, ClassifierMixin

from core.trust.conformal import conformal_quantile, prediction_sets


def test_quantile_by_hand():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 0])  # scores 1 - p(true): 0.1, 0.2, 0.6, 0.7
    # n = 4, alpha = 0.4: rank ceil(5 * 0.6) = 3 -> third smallest score
    assert conformal_quantile(probs, labels, alpha=0.4) == pytest.approx(0.6)
    sets = prediction_sets(np.array([[0.5, 0.5], [0.95, 0.05], [0.35, 0.65]]), 0.6)
    assert sets.tolist() == [[True, True], [True, False], [False, True]]
    with pytest.raises(ValueError, match="too few"):
        conformal_quantile(probs, labels, alpha=0.1)  # rank 5 > 4


class _Fixed(ClassifierMixin, BaseEstimator):
    """A prefitted 'classifier' whose inputs are already its probabilities, so MAPIE sees our model's output."""

    classes_ = np.array([0, 1])

    def fit(self, x, y):
        return self

    def predict_proba(self, x):
        return np.asarray(x)

    def predict(self, x):
        return np.asarray(x).argmax(1)


def test_sets_match_mapie_lac():
    rng = np.random.default_rng(0)
    p1 = rng.random(400)
    probs = np.c_[1 - p1, p1]
    labels = (rng.random(400) < p1 ** 0.7).astype(int)
    cal, test = slice(0, 200), slice(200, 400)
    mapie = SplitConformalClassifier(_Fixed(), confidence_level=0.9, conformity_score="lac", prefit=True)
    mapie.conformalize(probs[cal], labels[cal])
    _, theirs = mapie.predict_set(probs[test])
    ours = prediction_sets(probs[test], conformal_quantile(probs[cal], labels[cal], alpha=0.1))
    assert (theirs[:, :, 0] == ours).mean() >= 0.99  # equal up to ties at the quantile


def test_coverage_on_exchangeable_data():
    rng = np.random.default_rng(3)
    covered = []
    for _ in range(40):
        p1 = rng.random(300)
        labels = (rng.random(300) < p1).astype(int)
        probs = np.c_[1 - p1, p1]
        qhat = conformal_quantile(probs[:150], labels[:150], alpha=0.2)
        sets = prediction_sets(probs[150:], qhat)
        covered.append(sets[np.arange(150), labels[150:]].mean())
    assert 0.78 <= np.mean(covered) <= 0.86  # guaranteed >= 0.8 on average, and not trivially all-classes
