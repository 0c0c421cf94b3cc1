"""Split-conformal prediction sets (LAC score, Sadinle et al. 2019): sets that hold the true class with a chosen
probability on exchangeable data, so an ambiguous film gets both classes instead of a confident guess.

Written here rather than with MAPIE or TorchCP: the model's metadata keeps one number (the score quantile) and a
set is one comparison per class at prediction time, while those libraries want their estimator object at
prediction time. ``tests/trust`` checks the quantile and the sets against MAPIE's.
"""

from __future__ import annotations

import math

import numpy as np


def conformal_quantile(probabilities: np.ndarray, labels: np.ndarray, alpha: float = 0.1) -> float:
    """q-hat: the ceil((n + 1)(1 - alpha))-th smallest score 1 - p(true class) on calibration data."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    n = len(labels)
    rank = math.ceil((n + 1) * (1 - alpha))
    if rank > n:
        raise ValueError(f"{n} calibration images are too few for alpha = {alpha}: "
                         f"need at least {math.ceil(1 / alpha) - 1}.")
    scores = np.sort(1.0 - probabilities[np.arange(n), labels])
    return float(scores[rank - 1])


def prediction_sets(probabilities: np.ndarray, qhat: float) -> np.ndarray:
    """N x K boolean: class k is in image n's set when 1 - p_k <= q-hat."""
    return 1.0 - np.asarray(probabilities, dtype=np.float64) <= qhat + 1e-12
