"""Whether a prediction deserves belief: calibrated probability, operating threshold, conformal set and an
out-of-distribution gate, fitted by ``python -m core.calibrate`` and carried in the checkpoint.

``assess`` is the one place that turns a model's forward pass into what every front end shows (the X-ray app,
``python -m core.predict``, ``core.evaluate``, the report); models without fitted trust data (ImageNet ones) get
plain softmax probabilities, an argmax label and no gate.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from core.embed.features import pooled
from core.hooks import capture
from core.io import LoadedImage
from core.trust.calibration import scaled_probabilities
from core.trust.conformal import prediction_sets
from core.trust.ood import OodGate, colourfulness
from core.zoo import TRUST_PREFIX, LoadedModel, ModelSpec, ModelUnavailable, preprocess, read_checkpoint_config


@dataclass(frozen=True)
class Trust:
    """What ``core.calibrate`` fitted for one model, on which data and by which rules."""

    temperature: float
    bias: float  # added to the positive class's scaled logit (Platt scaling; 0 for temperature scaling alone)
    threshold: float  # on calibrated P(positive class)
    threshold_rule: str
    alpha: float  # conformal miscoverage: sets hold the true class with probability >= 1 - alpha
    qhat: float
    ood: OodGate
    fitted_on: str

    def to_metadata(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON-able config, tensors) to store in a checkpoint."""
        config = {"temperature": self.temperature, "bias": self.bias, "threshold": self.threshold,
                  "threshold_rule": self.threshold_rule,
                  "alpha": self.alpha, "qhat": self.qhat, "fitted_on": self.fitted_on,
                  "ood": {"threshold": self.ood.threshold, "quantile": self.ood.quantile,
                          "colour_limit": self.ood.colour_limit}}
        tensors = {f"{TRUST_PREFIX}ood.mu": self.ood.mu, f"{TRUST_PREFIX}ood.precision": self.ood.precision}
        return config, tensors


def _trust_config(path: Path) -> dict:
    """The trust section of a checkpoint file's metadata, {} when it has none."""
    try:
        return read_checkpoint_config(path).get("trust") or {}
    except ModelUnavailable:  # a safetensors file without a CNN Lens config carries no trust data
        return {}


def read_checkpoint_trust(spec: ModelSpec) -> dict:
    """The trust section of a checkpoint's metadata as stored (rules, fitted values, cross-fitted estimates)."""
    path = Path(spec.weights_source)
    return _trust_config(path) if path.suffix == ".safetensors" and path.is_file() else {}


@functools.lru_cache(maxsize=16)
def _read_trust(path: str, _mtime_ns: int) -> Trust | None:
    config = _trust_config(Path(path))
    if not config:
        return None
    with safe_open(path, framework="pt") as handle:
        mu = handle.get_tensor(f"{TRUST_PREFIX}ood.mu")
        precision = handle.get_tensor(f"{TRUST_PREFIX}ood.precision")
    ood = config["ood"]
    gate = OodGate(mu, precision, float(ood["threshold"]), float(ood["quantile"]), float(ood["colour_limit"]))
    return Trust(float(config["temperature"]), float(config.get("bias", 0.0)), float(config["threshold"]),
                 config["threshold_rule"], float(config["alpha"]), float(config["qhat"]), gate, config["fitted_on"])


def trust_for(spec: ModelSpec) -> Trust | None:
    """The trust data a model's checkpoint carries (cached per file version), or None (ImageNet models, old files)."""
    path = Path(spec.weights_source)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    return _read_trust(str(path), path.stat().st_mtime_ns)


@dataclass(frozen=True)
class Assessment:
    """One image's prediction with everything needed to judge it."""

    probabilities: dict[str, float]  # calibrated when the model has trust data
    label: str  # at the operating threshold (binary models with trust data) or the most probable class
    positive: str | None  # the class the threshold applies to
    probability: float  # of ``positive`` (or of ``label`` without a threshold)
    threshold: float | None
    prediction_set: tuple[str, ...]
    in_distribution: bool | None  # None: the model has no gate
    ood_score: float | None  # 1.0 = the gate's threshold
    ood_reason: str | None
    calibrated: bool
    coverage: float | None = None  # the conformal level of ``prediction_set`` (1 - alpha)

    @property
    def set_reading(self) -> str:
        """What the conformal set says in words (an empty set is possible and means: uncertain)."""
        if self.coverage is None:
            return "no conformal set for this model"
        level = f"{self.coverage:.0%}"
        if not self.prediction_set:
            return f"empty: no class reaches the {level} level; treat the prediction as uncertain"
        if len(self.prediction_set) > 1:
            return f"{', '.join(self.prediction_set)}: the model cannot tell them apart at the {level} level"
        return f"{self.prediction_set[0]} only, at the {level} level"

    def as_dict(self) -> dict:
        """JSON-able fields, as ``core.predict --json`` and the app's /assess endpoint return them."""
        return {"label": self.label, "probability": self.probability, "threshold": self.threshold,
                "probabilities": self.probabilities, "prediction_set": list(self.prediction_set),
                "in_distribution": self.in_distribution, "ood_score": self.ood_score, "ood_reason": self.ood_reason,
                "calibrated": self.calibrated, "set_coverage": self.coverage, "set_reading": self.set_reading}


@torch.no_grad()
def logits_and_features(loaded: LoadedModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits N x K, pooled embedding-layer features N x D) from one forward pass, on the CPU in float32."""
    with capture(loaded.model, loaded.spec.embedding_layer) as record:
        logits = loaded.model(x.to(loaded.device))
    return logits.float().cpu(), pooled(record.activations).float().cpu()


def interpret(loaded: LoadedModel, logits: torch.Tensor, features: torch.Tensor,
              colour: Sequence[float] | None = None) -> list[Assessment]:
    """Assessments from one forward pass's outputs; ``colour`` is each original image's ``colourfulness``."""
    trust = trust_for(loaded.spec)
    names = loaded.spec.class_names
    colour = [0.0] * len(logits) if colour is None else list(colour)
    if trust is None:
        out = []
        for p in torch.softmax(logits, 1).numpy():
            top = int(p.argmax())
            out.append(Assessment(dict(zip(names, map(float, p), strict=True)), names[top], None, float(p[top]),
                                  None, (names[top],), None, None, None, False))
        return out
    probs = scaled_probabilities(logits.numpy(), trust.temperature, trust.bias)
    sets = prediction_sets(probs, trust.qhat)
    scores = trust.ood.scores(features)
    positive = names[-1]
    out = []
    for p, keep, score, c in zip(probs, sets, scores, colour, strict=True):
        reason = trust.ood.reason(float(score), c)
        out.append(Assessment(
            dict(zip(names, map(float, p), strict=True)), positive if p[-1] >= trust.threshold else names[0],
            positive, float(p[-1]), trust.threshold, tuple(n for n, k in zip(names, keep, strict=True) if k),
            reason is None, float(score), reason, True, 1 - trust.alpha))
    return out


def assess_batch(loaded: LoadedModel, x: torch.Tensor, colour: Sequence[float] | None = None) -> list[Assessment]:
    """Assess a preprocessed batch; ``colour`` is each original image's ``colourfulness`` (default: grey)."""
    return interpret(loaded, *logits_and_features(loaded, x), colour)


def assess(loaded: LoadedModel, image: LoadedImage) -> Assessment:
    """Assess one decoded image."""
    x = preprocess(image, loaded.spec.preprocessing)
    return assess_batch(loaded, x, [colourfulness(image.array)])[0]
