"""Evaluate a model on a class folder: ``python -m core.evaluate --model NAME --data DIR [--json]``.

Positive class is PNEUMONIA. Reports accuracy, ROC AUC, sensitivity, specificity, precision, F1,
the confusion matrix ([[TN, FP], [FN, TP]]) and n.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_score, roc_auc_score
from tqdm import tqdm

from core.data import CLASS_NAMES, data_dir, index_folder
from core.io import load_image
from core.zoo import load_model, predict, preprocess


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


def evaluate(model_name: str, folder: Path, batch_size: int = 64, progress: bool = True) -> dict:
    """Metrics of a zoo model (or checkpoint path) on a NORMAL/PNEUMONIA folder."""
    loaded = load_model(model_name)
    classes = loaded.spec.class_names
    if tuple(classes) != CLASS_NAMES:
        raise SystemExit(f"{model_name} predicts {classes[:3]}..., not {CLASS_NAMES}; evaluate needs a CXR model.")
    index = index_folder(folder, CLASS_NAMES)
    probs: list[np.ndarray] = []
    for start in tqdm(range(0, len(index), batch_size), desc="Evaluating", disable=not progress, leave=False):
        paths = index.paths[start:start + batch_size]
        x = torch.cat([preprocess(load_image(p), loaded.spec.preprocessing) for p in paths])
        probs.append(predict(loaded, x)[:, 1].cpu().numpy())
    return binary_metrics(index.labels, np.concatenate(probs))


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    default = data_dir()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cxr-resnet18", help="zoo name or path to a .safetensors checkpoint")
    p.add_argument("--data", type=Path, default=default, required=default is None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    metrics = evaluate(args.model, args.data, progress=not args.json)
    if args.json:
        print(json.dumps(metrics))
        return
    print(f"n = {metrics['n']}")
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1"):
        print(f"{key:12s} {metrics[key]:.4f}")
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    print(f"confusion matrix (rows true, cols predicted; NORMAL, PNEUMONIA):\n  [[{tn}, {fp}],\n   [{fn}, {tp}]]")


if __name__ == "__main__":
    main()
