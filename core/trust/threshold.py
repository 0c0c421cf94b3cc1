"""The operating threshold of a screening model, chosen by a stated rule."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def screening_threshold(labels: np.ndarray, prob_positive: np.ndarray, min_sensitivity: float = 0.97) -> float:
    """The highest threshold on P(positive) whose sensitivity (recall of label 1) is at least ``min_sensitivity``,
    placed halfway down to the next lower score.

    A screen must miss few positives; among thresholds that keep recall, the highest calls the fewest healthy
    images positive. The rule's own threshold is the score of the last positive it keeps; a film sitting exactly on
    it flips with the last bit of another decoder or CPU, so the threshold moves halfway to the next lower score of
    any image: every fitted image gets the same call, and none sits on the line.
    """
    _, tpr, thresholds = roc_curve(np.asarray(labels), np.asarray(prob_positive, dtype=np.float64),
                                   drop_intermediate=False)
    ok = np.flatnonzero(tpr >= min_sensitivity)[0]  # roc_curve's thresholds fall as tpr rises; [0] can be inf
    kept = min(thresholds[ok], 1.0)
    return float(kept if ok + 1 == len(thresholds) else (kept + thresholds[ok + 1]) / 2)
