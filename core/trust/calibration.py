"""Temperature scaling (Guo et al. 2017), its binary extension with a bias (Platt scaling), and the calibration
measures used to judge them.

Both divide the logits by a fitted T; Platt scaling also shifts the positive class's logit by a fitted bias b,
which absorbs a change of class balance between training and use (26 % NORMAL in the training films, 40 % among
the new patients). Both are monotone, so the ranking (hence ROC AUC) is unchanged; only the confidence moves.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax, softmax


def scaled_probabilities(logits: np.ndarray, temperature: float, bias: float = 0.0) -> np.ndarray:
    """softmax(logits / T + b on the last class) for an N x K array of logits."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z[:, -1] += bias
    return softmax(z, axis=1)


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


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(T, b) minimising the negative log-likelihood of softmax(logits / T + b on class 1) for two classes."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if logits.shape[1] != 2:
        raise ValueError("Platt scaling is for two classes; use fit_temperature.")

    def nll(params: np.ndarray) -> float:
        z = logits / np.exp(params[0])
        z[:, 1] += params[1]
        return float(-log_softmax(z, axis=1)[np.arange(len(labels)), labels].mean())

    log_t, bias = minimize(nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-12}).x
    return float(np.exp(log_t)), float(bias)
