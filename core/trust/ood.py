"""Out-of-distribution gate: is this image like the chest films the model was trained on?

Two tests, either of which flags an image:
- **Feature distance**: the Mahalanobis score of the image's pooled embedding-layer features to the closest class
  centre of the training films, with one shared covariance (Lee et al. 2018), via ``pytorch_ood``. The gate is a
  quantile of the scores of new-patient X-rays, so a stated share of real films is flagged by design.
- **Colour**: chest films are grey; a clearly coloured upload (a photo, a stained slide, a retina) is not one,
  whatever features it happens to produce once converted to grey.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_ood.detector import Mahalanobis

# Mean spread between the colour channels above which an image is colour, not a grey film. Grey films saved as
# RGB JPEG measure below 0.005 here (JPEG chroma rounding); scikit-image's colour photographs 0.08-0.35.
COLOUR_LIMIT = 0.03


def colourfulness(array: np.ndarray) -> float:
    """Mean over pixels of (max - min) across colour channels for an image in [0, 1]: 0 for any grey image."""
    if array.ndim == 2 or array.shape[-1] == 1:
        return 0.0
    return float((array[..., :3].max(-1) - array[..., :3].min(-1)).mean())


@dataclass(frozen=True)
class OodGate:
    """Class centres and shared precision of training features, and the score above which an image is flagged."""

    mu: torch.Tensor  # K x D
    precision: torch.Tensor  # D x D
    threshold: float
    quantile: float  # share of new-patient films scoring at or below the threshold when it was set
    colour_limit: float = COLOUR_LIMIT

    @staticmethod
    def fit_detector(features: torch.Tensor, labels: torch.Tensor) -> Mahalanobis:
        """pytorch_ood's Mahalanobis detector fitted on in-distribution features (N x D) and labels."""
        return Mahalanobis(None).fit_features(features.float(), labels.long())

    @classmethod
    def fit(cls, train_features: torch.Tensor, train_labels: torch.Tensor, reference_features: torch.Tensor,
            quantile: float = 0.95) -> OodGate:
        """Fit on training features; set the threshold at ``quantile`` of the reference (new-patient) scores.

        The threshold lies halfway between the k-th and the next reference score, k = ceil(``quantile`` x n), so at
        most 1 - ``quantile`` of the reference is flagged and no reference film sits on the threshold itself (the
        same film decoded by another path, e.g. the app's, differs in the last bits). numpy's default quantile
        interpolates and flagged one film too many (14 of 269 at 0.95)."""
        detector = cls.fit_detector(train_features, train_labels)
        ranked = np.sort(detector.predict_features(reference_features.float()).numpy())
        k = min(len(ranked), math.ceil(quantile * len(ranked) - 1e-9))
        threshold = float(ranked[-1] if k == len(ranked) else (ranked[k - 1] + ranked[k]) / 2)
        return cls(detector.mu, detector.precision, threshold, quantile)

    def raw_scores(self, features: torch.Tensor) -> np.ndarray:
        """Mahalanobis scores (half the squared distance to the closest centre) of N x D features."""
        detector = Mahalanobis(None)
        detector.mu, detector.precision = self.mu, self.precision
        return detector.predict_features(features.detach().cpu().float()).numpy()

    def scores(self, features: torch.Tensor) -> np.ndarray:
        """Scores relative to the gate: 1.0 is the threshold, above it the image is unlike the training films."""
        return self.raw_scores(features) / self.threshold

    def reason(self, score: float, colour: float) -> str | None:
        """Why an image is out of distribution, or None when it passes both tests."""
        if colour > self.colour_limit:
            return "it is a colour image, and chest X-rays are grey"
        if score > 1.0:
            return f"its features are {score:.1f}x as far from the training X-rays as the gate allows"
        return None
