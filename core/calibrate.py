"""Fit a model's trust data on new patients and store it in its checkpoint:
``python -m core.calibrate --model models/NAME.safetensors --train DIR --data DIR [--out PATH]``.

On the labelled new-patient folder (``--data``): Platt scaling (temperature and bias), the operating threshold
(the highest one keeping sensitivity >= ``--sensitivity``), the split-conformal quantile at ``--alpha``, and the
out-of-distribution gate (fitted on the training folder's features, threshold at ``--ood-quantile`` of the new
patients' scores). Numbers measured on the data that fitted them are optimistic, so the printed estimates are
cross-fitted: each fold of the new patients is judged by values fitted on the other folds (``--folds``, by patient).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from core.data import CLASS_NAMES, data_dir, patient_groups
from core.evaluate import folder_outputs
from core.trust import Trust
from core.trust.calibration import (
    brier_score,
    expected_calibration_error,
    fit_platt,
    scaled_probabilities,
)
from core.trust.conformal import conformal_quantile, prediction_sets
from core.trust.ood import OodGate
from core.trust.threshold import screening_threshold
from core.zoo import instantiate, read_checkpoint_config, save_checkpoint, spec_from_checkpoint


def fit_trust(labels: np.ndarray, logits: np.ndarray, features: torch.Tensor, train_features: torch.Tensor,
              train_labels: np.ndarray, sensitivity: float, alpha: float, ood_quantile: float, fitted_on: str
              ) -> Trust:
    """Every trust value fitted on one labelled set (plus the training features for the gate)."""
    temperature, bias = fit_platt(logits, labels)
    probs = scaled_probabilities(logits, temperature, bias)
    rule = (f"highest threshold on calibrated P({CLASS_NAMES[1]}) with sensitivity >= {sensitivity:.2f}, "
            "placed halfway down to the next lower score")
    gate = OodGate.fit(train_features, torch.as_tensor(train_labels), features, ood_quantile)
    return Trust(temperature, bias, screening_threshold(labels, probs[:, 1], sensitivity), rule, alpha,
                 conformal_quantile(probs, labels, alpha), gate, fitted_on)


@dataclass(frozen=True)
class Outputs:
    """What a trust turns a labelled set's forward passes into: calibrated P(positive), sets, gate scores."""

    prob_positive: np.ndarray
    in_set: np.ndarray  # N x K booleans
    ood_scores: np.ndarray
    threshold: float | np.ndarray  # per image when cross-fitted


def apply_trust(trust: Trust, logits: np.ndarray, features: torch.Tensor) -> Outputs:
    """A fitted trust applied to forward-pass outputs."""
    probs = scaled_probabilities(logits, trust.temperature, trust.bias)
    return Outputs(probs[:, 1], prediction_sets(probs, trust.qhat), trust.ood.scores(features), trust.threshold)


def trust_measures(labels: np.ndarray, out: Outputs) -> dict:
    """Calibration (ECE, Brier), threshold metrics, conformal coverage and set size, and the share gated."""
    predicted = out.prob_positive >= out.threshold
    positives, negatives = labels == 1, labels == 0
    return {"ece": expected_calibration_error(labels, out.prob_positive),
            "brier": brier_score(labels, out.prob_positive),
            "sensitivity": float(predicted[positives].mean()), "specificity": float((~predicted[negatives]).mean()),
            "accuracy": float((predicted == positives).mean()),
            "coverage": float(out.in_set[np.arange(len(labels)), labels].mean()),
            "mean_set_size": float(out.in_set.sum(1).mean()), "ood_flagged": float((out.ood_scores > 1).mean()),
            "n": len(labels)}


def cross_fitted(labels: np.ndarray, logits: np.ndarray, features: torch.Tensor, groups: np.ndarray,
                 train_features: torch.Tensor, train_labels: np.ndarray, folds: int, seed: int, **rules: float
                 ) -> dict:
    """Trust measures of out-of-fold outputs: each fold (by patient) judged by values fitted on the others."""
    prob, in_set = np.zeros(len(labels)), np.zeros((len(labels), logits.shape[1]), dtype=bool)
    scores, threshold = np.zeros(len(labels)), np.zeros(len(labels))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, test_idx in splitter.split(logits, labels, groups):
        trust = fit_trust(labels[fit_idx], logits[fit_idx], features[fit_idx], train_features, train_labels,
                          fitted_on="fold", **rules)
        out = apply_trust(trust, logits[test_idx], features[test_idx])
        prob[test_idx], in_set[test_idx], scores[test_idx] = out.prob_positive, out.in_set, out.ood_scores
        threshold[test_idx] = trust.threshold
    return trust_measures(labels, Outputs(prob, in_set, scores, threshold))


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    default = data_dir()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="checkpoint written by core.train (.safetensors)")
    p.add_argument("--train", type=Path, default=default, required=default is None,
                   help="the training folder (fits the out-of-distribution gate's centres and covariance)")
    p.add_argument("--data", type=Path, required=True, help="labelled new patients (NORMAL/ and PNEUMONIA/)")
    p.add_argument("--out", type=Path, help="where to write the checkpoint with trust data (default: --model)")
    p.add_argument("--sensitivity", type=float, default=0.97)
    p.add_argument("--alpha", type=float, default=0.1, help="conformal miscoverage (0.1: 90%% sets)")
    p.add_argument("--ood-quantile", type=float, default=0.95)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    loaded = instantiate(spec_from_checkpoint(args.model), torch.device("cpu"))
    train_labels, _, train_features, _ = folder_outputs(loaded, args.train, desc="Training features")
    labels, logits, features, paths = folder_outputs(loaded, args.data, desc="New patients")
    rules = {"sensitivity": args.sensitivity, "alpha": args.alpha, "ood_quantile": args.ood_quantile}
    fitted_on = f"{args.data.name}/ ({len(labels)} images; {', '.join(CLASS_NAMES)} {np.bincount(labels).tolist()})"
    trust = fit_trust(labels, logits.numpy(), features, train_features, train_labels, fitted_on=fitted_on, **rules)
    estimates = cross_fitted(labels, logits.numpy(), features, patient_groups(paths), train_features, train_labels,
                             args.folds, args.seed, **rules)
    config, tensors = trust.to_metadata()
    config["cross_fitted"] = {"folds": args.folds, "seed": args.seed, **estimates}
    model_config = {**read_checkpoint_config(args.model), "trust": config}
    save_checkpoint(loaded.model, args.out or args.model, model_config, extra=tensors)
    print(json.dumps(config, indent=2))


if __name__ == "__main__":
    main()
