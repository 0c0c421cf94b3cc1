"""Threshold and prevalence maths against scikit-learn (confusion matrix, recall, precision, F1, areas) and against
precision re-measured on a re-weighted set; the bundled model's stored threshold and validation fold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from core.lessons import thresholds as J


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.35).astype(int)
    p = 1 / (1 + np.exp(-(1.5 * y - 0.8 + rng.normal(0, 1, 300))))
    p[:10] = p[10:20]  # ties, as a real model's rounded outputs have
    return y, p


@pytest.mark.parametrize("threshold", [0.0, 0.12, 0.5, 0.731, 0.95])
def test_operating_point_matches_sklearn(scores, threshold):
    y, p = scores
    pred = (p >= threshold).astype(int)
    op = J.operating_point(y, p, threshold)
    assert [[op.tn, op.fp], [op.fn, op.tp]] == confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert op.sensitivity == pytest.approx(recall_score(y, pred))
    assert op.specificity == pytest.approx(recall_score(y, pred, pos_label=0))
    assert op.precision == pytest.approx(precision_score(y, pred, zero_division=np.nan), nan_ok=True)
    assert op.npv == pytest.approx(precision_score(1 - y, 1 - pred, zero_division=np.nan), nan_ok=True)
    assert op.f1 == pytest.approx(f1_score(y, pred, zero_division=0))
    assert op.accuracy == pytest.approx(accuracy_score(y, pred))
    assert op.fpr == pytest.approx(1 - op.specificity)


def test_nothing_called_positive_leaves_precision_undefined(scores):
    y, p = scores
    op = J.operating_point(y, p, 1.01)
    assert op.tp == op.fp == 0 and np.isnan(op.precision) and op.sensitivity == 0.0 and op.specificity == 1.0


def test_areas_match_integrals_of_the_curves(scores):
    y, p = scores
    c = J.curves(y, p)
    assert c.roc_auc == pytest.approx(np.trapezoid(c.tpr, c.fpr), rel=1e-12)
    # average precision: sum over recall steps of precision (scikit-learn's definition, no interpolation)
    assert c.average_precision == pytest.approx(-np.sum(np.diff(c.recall) * c.precision[:-1]), rel=1e-12)
    assert c.prevalence == pytest.approx(y.mean())
    # a ranked pair count gives the same AUC: P(positive scores above negative) + half the ties
    pos, neg = p[y == 1][:, None], p[y == 0][None, :]
    assert c.roc_auc == pytest.approx(((pos > neg) + 0.5 * (pos == neg)).mean(), rel=1e-12)


def test_operating_points_lie_on_both_curves(scores):
    y, p = scores
    c = J.curves(y, p)
    for i in (1, 40, len(c.roc_thresholds) // 2, len(c.roc_thresholds) - 2):
        op = J.operating_point(y, p, c.roc_thresholds[i])
        assert (op.fpr, op.sensitivity) == pytest.approx((c.fpr[i], c.tpr[i]))
    for i in (0, 25, len(c.pr_thresholds) - 1):
        op = J.operating_point(y, p, c.pr_thresholds[i])
        assert (op.sensitivity, op.precision) == pytest.approx((c.recall[i], c.precision[i]))


@pytest.mark.parametrize("prevalence", [0.01, 0.1, 0.35, 0.8])
def test_predictive_values_equal_precision_on_a_reweighted_set(scores, prevalence):
    """Bayes' rule against measurement: weight the films so positives make up ``prevalence`` of the total, then
    scikit-learn's weighted precision (and precision of the NORMAL calls) must equal the formula."""
    y, p = scores
    pred = (p >= 0.5).astype(int)
    op = J.operating_point(y, p, 0.5)
    weight = np.where(y == 1, prevalence / y.mean(), (1 - prevalence) / (1 - y.mean()))
    ppv, npv = J.predictive_values(op.sensitivity, op.specificity, prevalence)
    assert float(ppv) == pytest.approx(precision_score(y, pred, sample_weight=weight), rel=1e-9)
    assert float(npv) == pytest.approx(precision_score(1 - y, 1 - pred, sample_weight=weight), rel=1e-9)


def test_predictive_values_at_the_sets_own_prevalence_are_its_precision_and_npv(scores):
    y, p = scores
    op = J.operating_point(y, p, 0.4)
    ppv, npv = J.predictive_values(op.sensitivity, op.specificity, np.array([y.mean()]))
    assert ppv[0] == pytest.approx(op.precision) and npv[0] == pytest.approx(op.npv)
    with pytest.raises(ValueError, match="Prevalence"):
        J.predictive_values(0.9, 0.9, 1.5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="both classes"):
        J.curves(np.ones(5, int), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="one length"):
        J.operating_point(np.array([0, 1]), np.array([0.1, 0.2, 0.3]), 0.5)


def test_stored_threshold_is_the_checkpoints(bundled):
    from core.trust import read_checkpoint_trust, trust_for

    stored = J.stored_threshold(bundled.spec)
    assert stored is not None
    assert stored.value == trust_for(bundled.spec).threshold == read_checkpoint_trust(bundled.spec)["threshold"]
    assert "sensitivity" in stored.rule and stored.fitted_on.startswith("external/")
    assert J.selected_on(bundled.spec) == "external"


def test_probabilities_are_calibrated_like_the_evaluator(bundled):
    """The page's P(PNEUMONIA) is core.evaluate's: Platt-scaled softmax with the checkpoint's T and bias."""
    from scipy.special import expit

    from core.trust import trust_for

    trust = trust_for(bundled.spec)
    logits = np.array([[0.3, 1.2], [2.0, -1.0], [0.0, 0.0]])
    expected = expit((logits[:, 1] - logits[:, 0]) / trust.temperature + trust.bias)
    np.testing.assert_allclose(J.positive_probabilities(bundled, logits), expected, rtol=1e-12)


@pytest.mark.data
def test_validation_index_is_the_recorded_fold(bundled, tmp_path):
    from core.data import data_dir

    index = J.validation_index(bundled, data_dir())
    assert tuple(np.bincount(index.labels)) == bundled.spec.training_split.val_per_class
    for n, message in ((3, "too small to hold"), (12, "not the folder")):
        folder = tmp_path / str(n)
        for label in ("NORMAL", "PNEUMONIA"):
            (folder / label).mkdir(parents=True)
            for path in sorted((data_dir() / label).iterdir())[:n]:
                (folder / label / path.name).symlink_to(path)
        with pytest.raises(ValueError, match=message):
            J.validation_index(bundled, folder)
