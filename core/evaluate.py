"""Evaluate a model on a class folder:
``python -m core.evaluate --model NAME --data DIR [--json] [--threshold T] [--plots DIR] [--held-out]``.

Positive class is PNEUMONIA. Reports accuracy, ROC AUC, sensitivity, specificity, precision, F1, the confusion
matrix ([[TN, FP], [FN, TP]]) and n at the model's stored operating threshold (0.5 for models without one), with
stratified bootstrap 95 % intervals for AUC, sensitivity and specificity, the Brier score and the expected
calibration error of the probability the apps show (calibrated when the model carries trust data).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_score, roc_auc_score
from tqdm import tqdm

from core.data import CLASS_NAMES, ImageFolderIndex, data_dir, held_out_paths, index_folder
from core.io import load_image
from core.trust import logits_and_features, trust_for
from core.trust.calibration import brier_score, expected_calibration_error, scaled_probabilities
from core.zoo import LoadedModel, load_model, preprocess

BOOTSTRAP_RESAMPLES = 2000


def binary_metrics(y_true: np.ndarray, prob_positive: np.ndarray, threshold: float = 0.5) -> dict:
    """Threshold metrics plus ROC AUC for binary labels (1 = positive)."""
    y_true = np.asarray(y_true)
    y_pred = (np.asarray(prob_positive) >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel())
    auc = float(roc_auc_score(y_true, prob_positive)) if len(set(y_true.tolist())) == 2 else float("nan")
    return {
        "accuracy": (tp + tn) / len(y_true),
        "roc_auc": auc,
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "n": len(y_true),
    }


def bootstrap_intervals(y_true: np.ndarray, prob_positive: np.ndarray, threshold: float,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = 0.95
                        ) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of ROC AUC, sensitivity and specificity, resampling within each class.

    Stratified by hand because scipy.stats.bootstrap is not: a plain resample of a small set can lose a class,
    and sensitivity and specificity each depend on one class only.
    """
    y_true = np.asarray(y_true)
    prob = np.asarray(prob_positive, dtype=np.float64)
    pos, neg = np.flatnonzero(y_true == 1), np.flatnonzero(y_true == 0)
    rng = np.random.default_rng(seed)
    stats = np.empty((resamples, 3))
    for b in range(resamples):
        p, n = prob[rng.choice(pos, len(pos))], prob[rng.choice(neg, len(neg))]
        stats[b] = (roc_auc_score(np.r_[np.ones(len(p)), np.zeros(len(n))], np.r_[p, n]),
                    (p >= threshold).mean(), (n < threshold).mean())
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail], axis=0)
    return {k: [float(lo[i]), float(hi[i])] for i, k in enumerate(("roc_auc", "sensitivity", "specificity"))}


def folder_outputs(loaded: LoadedModel, folder: Path | ImageFolderIndex, batch_size: int = 64, desc: str = "Scoring",
                   progress: bool = True) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, tuple[Path, ...]]:
    """(labels, logits, pooled embedding features, paths) of every image in a NORMAL/PNEUMONIA folder (or index)."""
    index = folder if isinstance(folder, ImageFolderIndex) else index_folder(folder, CLASS_NAMES)
    logits, features = [], []
    for start in tqdm(range(0, len(index), batch_size), desc=desc, disable=not progress, leave=False):
        paths = index.paths[start:start + batch_size]
        x = torch.cat([preprocess(load_image(p), loaded.spec.preprocessing) for p in paths])
        out_logits, out_features = logits_and_features(loaded, x)
        logits.append(out_logits)
        features.append(out_features)
    return index.labels, torch.cat(logits), torch.cat(features), index.paths


def held_out_index(loaded: LoadedModel, folder: Path) -> ImageFolderIndex:
    """The images of ``folder`` the model never trained on: its recorded patient-level validation fold."""
    index = index_folder(folder, CLASS_NAMES)
    split = loaded.spec.training_split
    held = held_out_paths(index, split) if split is not None else None
    if held is None:
        raise SystemExit(f"{folder} is not the folder {loaded.spec.name} was trained on (or it records no split).")
    return index.subset([i for i, p in enumerate(index.paths) if p in held])


def evaluate(model_name: str, folder: Path, threshold: float | None = None, progress: bool = True,
             plots: Path | None = None, held_out: bool = False) -> dict:
    """Metrics of a zoo model (or checkpoint path) on a NORMAL/PNEUMONIA folder (see the module docstring);
    ``held_out``: only the model's validation fold of its training folder."""
    loaded = load_model(model_name)
    if tuple(loaded.spec.class_names) != CLASS_NAMES:
        raise SystemExit(f"{model_name} predicts {loaded.spec.class_names[:3]}..., not {CLASS_NAMES}; "
                         "evaluate needs a CXR model.")
    images = held_out_index(loaded, folder) if held_out else folder
    labels, logits, _, _ = folder_outputs(loaded, images, desc="Evaluating", progress=progress)
    trust = trust_for(loaded.spec)
    prob = (scaled_probabilities(logits.numpy(), trust.temperature, trust.bias) if trust
            else scaled_probabilities(logits.numpy(), 1.0))[:, 1]
    threshold = threshold if threshold is not None else (trust.threshold if trust else 0.5)
    metrics = binary_metrics(labels, prob, threshold)
    metrics.update(threshold=threshold, calibrated=trust is not None, brier=brier_score(labels, prob),
                   ece=expected_calibration_error(labels, prob), ci95=bootstrap_intervals(labels, prob, threshold))
    if plots is not None:
        write_plots(labels, prob, threshold, plots, f"{model_name} on {folder.name}/")
    return metrics


def write_plots(labels: np.ndarray, prob: np.ndarray, threshold: float, folder: Path, title: str) -> list[Path]:
    """ROC, precision-recall and reliability diagrams as PNG files (scikit-learn's displays)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("roc", RocCurveDisplay.from_predictions), ("precision_recall",
                                                                    PrecisionRecallDisplay.from_predictions),
                       ("reliability", lambda y, p, ax: CalibrationDisplay.from_predictions(y, p, n_bins=10, ax=ax))):
        fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
        draw(labels, prob, ax=ax)
        if name == "roc":
            predicted = prob >= threshold
            ax.plot(1 - (~predicted[labels == 0]).mean(), predicted[labels == 1].mean(), "o", color="crimson",
                    label=f"threshold {threshold:.3f}")
            ax.legend(loc="lower right")
        ax.set_title(f"{title}\nFor education and research only", fontsize=9)
        path = folder / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    default = data_dir()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cxr-resnet18", help="zoo name or path to a .safetensors checkpoint")
    p.add_argument("--data", type=Path, default=default, required=default is None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the model's operating threshold)")
    p.add_argument("--plots", type=Path, help="folder for roc.png, precision_recall.png and reliability.png")
    p.add_argument("--held-out", action="store_true",
                   help="only the model's patient-level validation fold of --data (its training folder)")
    args = p.parse_args(argv)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        p.error("--threshold must be between 0 and 1")
    metrics = evaluate(args.model, args.data, args.threshold, progress=not args.json, plots=args.plots,
                       held_out=args.held_out)
    if args.json:
        print(json.dumps(metrics))
        return
    ci = metrics["ci95"]
    print(f"n = {metrics['n']}, threshold {metrics['threshold']:.4f} "
          f"({'calibrated' if metrics['calibrated'] else 'uncalibrated'} probabilities)")
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1", "brier", "ece"):
        interval = f"  (95% CI {ci[key][0]:.4f}-{ci[key][1]:.4f})" if key in ci else ""
        print(f"{key:12s} {metrics[key]:.4f}{interval}")
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    print(f"confusion matrix (rows true, cols predicted; NORMAL, PNEUMONIA):\n  [[{tn}, {fp}],\n   [{fn}, {tp}]]")


if __name__ == "__main__":
    main()
