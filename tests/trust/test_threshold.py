"""The screening threshold rule on score sets whose answer is known."""

import numpy as np
import pytest

from core.trust.threshold import screening_threshold


def test_highest_threshold_that_keeps_sensitivity():
    positives = np.linspace(0.30, 0.99, 100)  # 100 positives; a threshold t keeps those >= t
    negatives = np.linspace(0.0, 0.5, 40)
    labels = np.r_[np.ones(100), np.zeros(40)]
    scores = np.r_[positives, negatives]
    t = screening_threshold(labels, scores, min_sensitivity=0.97)
    # drop 3 of 100 (sensitivity 0.97 exactly); halfway between the last kept score and the next lower one (a
    # negative at 0.3205 just under the kept positive at 0.3209), so no score sits on the line
    assert t == pytest.approx((positives[3] + scores[scores < positives[3]].max()) / 2)
    assert (positives >= t).mean() >= 0.97 and not np.isclose(scores, t).any()
    assert (positives >= positives[3] + 1e-9).mean() < 0.97  # any threshold above the kept score loses it
    below = negatives[negatives < 0.30].max()  # keep every positive: halfway down to the highest negative under them
    assert screening_threshold(labels, scores, min_sensitivity=1.0) == pytest.approx((0.30 + below) / 2)


def test_separable_scores_keep_every_negative_out():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert screening_threshold(labels, scores, 0.97) == pytest.approx(0.5)  # halfway between the two classes
    assert screening_threshold(np.array([1, 1]), np.array([0.2, 0.6]), 0.97) == pytest.approx(0.2)  # nothing lower
