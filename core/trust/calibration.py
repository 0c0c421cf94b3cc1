"""Temperature scaling (Guo et al. 2017) and the calibration measures used to judge it.

Temperature scaling divides the logits by one fitted number T: the ranking (hence ROC AUC) is unchanged, only the
confidence moves, so a model that is right 80 % of the time it says "80 %" stays as accurate as before.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax


def scaled_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) for an N x K array of logits."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of softmax(logits / T) on labelled data."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean())

    # log T in [-4, 4]: T from 0.02 to 55, far beyond what a trained network needs; bounded so it always ends
    return float(np.exp(minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded").x))


def expected_calibration_error(labels: np.ndarray, prob_positive: np.ndarray, bins: int = 10) -> float:
    """ECE of P(positive): sum over equal-width bins of |observed positive rate - mean probability| x bin share.

    Binning P(positive) (not the top-class confidence) is what a reliability diagram of a binary screen shows.
    """
    labels = np.asarray(labels, dtype=np.float64)
    prob = np.asarray(prob_positive, dtype=np.float64)
    which = np.minimum((prob * bins).astype(int), bins - 1)  # p = 1.0 belongs to the last bin
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(labels[members].mean() - prob[members].mean())
    return float(total)


def brier_score(labels: np.ndarray, prob_positive: np.ndarray) -> float:
    """Mean squared difference between P(positive) and the 0/1 label."""
    return float(np.mean((np.asarray(prob_positive, dtype=np.float64) - np.asarray(labels, dtype=np.float64)) ** 2))
