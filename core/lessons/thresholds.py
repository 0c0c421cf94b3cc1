"""Judging a binary classifier: ROC and precision-recall curves, the numbers at one threshold, and how precision
and NPV move with the prevalence of disease at a fixed sensitivity and specificity.

Curves and areas are scikit-learn's; the numbers at a threshold are ``core.evaluate.binary_metrics`` (the suite's
one scorer) plus the negative predictive value. A model's scores on its patient-level validation fold and on
``external/`` (new patients) are computed once with ``core.evaluate.folder_outputs`` and cached on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from core.data import CLASS_NAMES, ImageFolderIndex, held_out_paths, index_folder
from core.embed.cache import ArrayCache, default_cache, digest
from core.evaluate import binary_metrics, folder_outputs
from core.trust import read_checkpoint_trust, trust_for
from core.trust.calibration import scaled_probabilities
from core.zoo import LoadedModel, ModelSpec, read_checkpoint_config

ProgressFn = Callable[[float], None]
SCORE_CHUNK = 64  # films scored between two progress reports


@dataclass(frozen=True)
class Curves:
    """ROC and precision-recall curves of one set (scikit-learn's, every threshold kept)."""

    fpr: np.ndarray
    tpr: np.ndarray
    roc_thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    pr_thresholds: np.ndarray
    roc_auc: float
    average_precision: float
    prevalence: float  # share of positives: the precision of a model that calls everything positive


def curves(labels: np.ndarray, prob_positive: np.ndarray) -> Curves:
    """ROC and PR curves, ROC AUC and average precision; both classes must be present."""
    y, p = _checked(labels, prob_positive)
    fpr, tpr, roc_t = roc_curve(y, p, drop_intermediate=False)
    precision, recall, pr_t = precision_recall_curve(y, p)
    return Curves(fpr, tpr, roc_t, precision, recall, pr_t, float(roc_auc_score(y, p)),
                  float(average_precision_score(y, p)), float(y.mean()))


def _checked(labels: np.ndarray, prob_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(labels), np.asarray(prob_positive, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"Labels {y.shape} and probabilities {p.shape} must be two vectors of one length.")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError("The set needs films of both classes (labels 0 and 1) to draw ROC and PR curves.")
    return y, p


@dataclass(frozen=True)
class OperatingPoint:
    """A classifier's numbers at one threshold on P(positive): called positive when P >= threshold."""

    threshold: float
    tn: int
    fp: int
    fn: int
    tp: int
    sensitivity: float  # recall, true-positive rate
    specificity: float
    precision: float  # positive predictive value
    npv: float  # negative predictive value
    f1: float
    accuracy: float

    @property
    def fpr(self) -> float:
        """False-positive rate, the ROC curve's x."""
        return 1.0 - self.specificity


def operating_point(labels: np.ndarray, prob_positive: np.ndarray, threshold: float) -> OperatingPoint:
    """The confusion matrix and its rates at ``threshold`` (``core.evaluate.binary_metrics``), plus NPV."""
    y, p = _checked(labels, prob_positive)
    m = binary_metrics(y, p, threshold)
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    npv = tn / (tn + fn) if tn + fn else float("nan")
    return OperatingPoint(float(threshold), tn, fp, fn, tp, float(m["sensitivity"]), float(m["specificity"]),
                          float(m["precision"]) if tp + fp else float("nan"), float(npv), float(m["f1"]),
                          float(m["accuracy"]))


def predictive_values(sensitivity: float, specificity: float, prevalence: float | np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(precision, NPV) at a given prevalence of disease, by Bayes' rule, for a test with fixed sensitivity and
    specificity: precision = sens prev / (sens prev + (1 - spec)(1 - prev)), NPV likewise for negatives."""
    prev = np.asarray(prevalence, dtype=np.float64)
    if np.any((prev < 0) | (prev > 1)):
        raise ValueError("Prevalence must be between 0 and 1.")
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = sensitivity * prev / (sensitivity * prev + (1 - specificity) * (1 - prev))
        npv = specificity * (1 - prev) / (specificity * (1 - prev) + (1 - sensitivity) * prev)
    return ppv, npv


# ---------------------------------------------------------------------------------------------- a model's scores


@dataclass(frozen=True)
class StoredThreshold:
    """The operating threshold a checkpoint carries (on calibrated P(PNEUMONIA)), its rule and its data."""

    value: float
    rule: str
    fitted_on: str


def stored_threshold(spec: ModelSpec) -> StoredThreshold | None:
    """The threshold ``core.calibrate`` stored in the checkpoint (what ``core.evaluate`` uses), or None."""
    trust = trust_for(spec)
    if trust is None:
        return None
    return StoredThreshold(trust.threshold, trust.threshold_rule, read_checkpoint_trust(spec).get("fitted_on", "?"))


def selected_on(spec: ModelSpec) -> str | None:
    """The data set whose scores picked the checkpoint's epoch (``core.train --select``), when recorded."""
    path = Path(spec.weights_source)
    return read_checkpoint_config(path).get("selected_on") if path.suffix == ".safetensors" else None


def positive_probabilities(loaded: LoadedModel, logits: np.ndarray) -> np.ndarray:
    """P(PNEUMONIA) as the apps show it: calibrated when the checkpoint carries trust data (as ``core.evaluate``)."""
    trust = trust_for(loaded.spec)
    return (scaled_probabilities(logits, trust.temperature, trust.bias) if trust
            else scaled_probabilities(logits, 1.0))[:, 1]


def validation_index(loaded: LoadedModel, folder: Path) -> ImageFolderIndex:
    """The model's patient-level validation fold of its training folder, recomputed from its recorded split."""
    split = loaded.spec.training_split
    if split is None:
        raise ValueError(f"{loaded.spec.name} records no training split, so its validation fold is unknown.")
    index = index_folder(folder, CLASS_NAMES)
    try:
        held = held_out_paths(index, split)
    except ValueError as err:  # scikit-learn's fold splitter refuses a folder with too few patients per class
        raise ValueError(f"{folder} is too small to hold {loaded.spec.name}'s validation fold ({err}).") from err
    if held is None:
        raise ValueError(f"{folder} is not the folder {loaded.spec.name} was trained on: its validation fold "
                         "cannot be recomputed here.")
    return index.subset([i for i, p in enumerate(index.paths) if p in held])


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def scored(loaded: LoadedModel, index: ImageFolderIndex, progress: ProgressFn | None = None,
           cache: ArrayCache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, P(PNEUMONIA)) of every film of ``index``, cached on disk per weights file and film list."""
    source = Path(loaded.spec.weights_source)
    key = digest("judge-v1", loaded.spec.name, _file_key(source) if source.is_file() else loaded.spec.weights_source,
                 tuple(_file_key(p) for p in index.paths))

    def compute() -> dict[str, np.ndarray]:
        logits = []
        for start in range(0, len(index), SCORE_CHUNK):
            part = index.subset(range(start, min(start + SCORE_CHUNK, len(index))))
            logits.append(folder_outputs(loaded, part, batch_size=SCORE_CHUNK, progress=False)[1].numpy())
            if progress is not None:
                progress(min(start + SCORE_CHUNK, len(index)) / len(index))
        return {"labels": index.labels, "prob": positive_probabilities(loaded, np.concatenate(logits))}

    arrays, _ = (cache or default_cache()).fetch("judge", key, compute)
    return arrays["labels"], arrays["prob"]
