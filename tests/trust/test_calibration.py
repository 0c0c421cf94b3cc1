"""Temperature scaling, ECE and Brier against hand-computed values and independent implementations."""

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from core.trust.calibration import (
    brier_score,
    expected_calibration_error,
    fit_platt,
    fit_temperature,
    scaled_probabilities,
)


def test_ece_by_hand():
    labels = np.array([0, 0, 1, 1, 1])
    prob = np.array([0.05, 0.15, 0.12, 0.95, 1.0])
    # bin 0 [0, .1): {0.05} rate 0 -> |0 - .05| ; bin 1 [.1, .2): {.15 (0), .12 (1)} -> |.5 - .135| ; bin 9: {.95, 1.0}
    expected = 1 / 5 * 0.05 + 2 / 5 * abs(0.5 - 0.135) + 2 / 5 * abs(1.0 - 0.975)
    assert expected_calibration_error(labels, prob) == pytest.approx(expected)
    assert expected_calibration_error(labels, labels.astype(float)) == 0.0


def test_ece_matches_sklearn_reliability_curve():
    rng = np.random.default_rng(0)
    prob = rng.random(500)
    labels = (rng.random(500) < prob ** 1.5).astype(int)
    rate, mean_prob = calibration_curve(labels, prob, n_bins=10, strategy="uniform")
    counts = np.histogram(prob, bins=np.linspace(0, 1, 11))[0]
    assert expected_calibration_error(labels, prob) == pytest.approx(
        float(np.sum(counts[counts > 0] / 500 * np.abs(rate - mean_prob))))


def test_brier_matches_sklearn():
    rng = np.random.default_rng(1)
    prob, labels = rng.random(50), rng.integers(0, 2, 50)
    assert brier_score(labels, prob) == pytest.approx(brier_score_loss(labels, prob))


def test_temperature_recovers_the_generating_one_and_matches_torch_lbfgs():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (4000, 2))
    true_t = 2.5
    labels = (rng.random(4000) < scaled_probabilities(logits, true_t)[:, 1]).astype(int)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.1)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    z, y = torch.as_tensor(logits), torch.as_tensor(labels)
    opt = torch.optim.LBFGS([log_t], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    assert fitted == pytest.approx(float(log_t.detach().exp()), rel=1e-3)
    # scaling keeps the ranking, so the AUC cannot change
    assert np.array_equal(np.argsort(scaled_probabilities(logits, fitted)[:, 1]),
                          np.argsort(scaled_probabilities(logits, 1.0)[:, 1]))


def test_platt_scaling_matches_sklearn_logistic_regression_on_the_logit_gap():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (3000, 2))
    gap = logits[:, 1] - logits[:, 0]
    labels = (rng.random(3000) < 1 / (1 + np.exp(-(gap / 1.8 - 0.7)))).astype(int)  # T = 1.8, b = -0.7
    temperature, bias = fit_platt(logits, labels)
    reference = LogisticRegression(C=1e9, tol=1e-10, max_iter=1000).fit(gap[:, None], labels)
    assert 1 / temperature == pytest.approx(reference.coef_[0, 0], rel=1e-3)
    assert bias == pytest.approx(reference.intercept_[0], abs=1e-3)
    assert temperature == pytest.approx(1.8, rel=0.15) and bias == pytest.approx(-0.7, abs=0.2)  # sampling noise
    np.testing.assert_allclose(scaled_probabilities(logits, temperature, bias)[:, 1],
                               reference.predict_proba(gap[:, None])[:, 1], atol=1e-4)
