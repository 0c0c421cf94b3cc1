"""The app's work on one image, as plain functions the UI and the API share: predict, explain, assess.

No maths here: everything is a call into ``core`` (zoo, explain, quality); this module decides what to
run, in which order, with which progress bar, and packs the results for display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import core.explain
from apps.xray.models import get_model
from apps.xray.session import Panel, Session, Stability
from core.explain import quality
from core.explain.augment import explain_augmented
from core.explain.base import METHODS, resolve_params
from core.io import LoadedImage
from core.trust import interpret, logits_and_features
from core.trust.ood import colourfulness
from core.zoo import LoadedModel, denormalise, get_layer, preprocess

ProgressFn = Callable[[float], None]
DEFAULT_METHOD = "grad_cam"
CURVE_STEPS = 32  # deletion / insertion steps: enough for a stable AUC, cheap on a CPU
REFERENCE_SEEDS = (0, 1, 2)  # random maps averaged for the reference curves
REFERENCE_GRID = 10  # random maps vary on a 10 x 10 grid: regions about the size of a CAM cell
SANITY_COPIES = quality.SANITY_COPIES  # randomised copies per sanity check: one draw is noise
STABILITY_SEEDS = (0, 1, 2)
MAX_AUGMENTATIONS = 32  # test-time augmentation: copies of the image (itself included) at most


def default_method() -> str:
    """Grad-CAM when registered, else the first registered method."""
    return DEFAULT_METHOD if DEFAULT_METHOD in METHODS else next(iter(METHODS))


def first_method() -> str | None:
    """The map drawn at once on every upload: Grad-CAM (fast), or none when it is not registered."""
    return DEFAULT_METHOD if DEFAULT_METHOD in METHODS else None


# ---------------------------------------------------------------- prediction


def open_session(image: LoadedImage, source: str, model_key: str, *, uploaded: bool) -> Session:
    """Preprocess an image for a model and predict; the start of every analysis. ``uploaded``: ``source`` is
    a visitor's file name (shown back to them, never put in a report)."""
    loaded = get_model(model_key)
    x = preprocess(image, loaded.spec.preprocessing, loaded.device)
    logits, features = logits_and_features(loaded, x)  # one forward for the prediction and the gate
    probs = torch.softmax(logits, 1)[0].tolist()
    (assessment,) = interpret(loaded, logits, features, [colourfulness(image.array)])
    return Session(image, source, model_key, x, dict(zip(loaded.spec.class_names, probs, strict=True)),
                   assessment, uploaded=uploaded)


def model_view(session: Session) -> np.ndarray:
    """The input exactly as the model saw it (resized, channel-converted), in [0, 1] for display."""
    return denormalise(session.x, get_model(session.model_key).spec.preprocessing)


def warm_up(model_key: str) -> None:
    """Prepare the model's private copies for DeepLIFT and LRP now (``core.explain.warm_up``): DeepLIFT's first
    call traces the model, which must not coincide with another request's forward pass."""
    core.explain.warm_up(get_model(model_key))


def predicted_index(session: Session) -> int:
    """The class on the prediction card: at the operating threshold for models that have one, else the most
    probable class. "Predicted class" means this class everywhere (maps, API, report), not the softmax arg-max,
    which differs when the positive probability lies between the threshold and one half."""
    return get_model(session.model_key).spec.class_names.index(session.assessment.label)


def resolve_target(loaded: LoadedModel, target: Any) -> int | None:
    """None (predicted class), a class index or a class name -> class index; ValueError otherwise."""
    if target is None or (isinstance(target, str) and target.strip().lower() in ("", "predicted", "predicted class")):
        return None
    names = loaded.spec.class_names
    if isinstance(target, str) and target in names:
        return names.index(target)
    try:
        index = int(target)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Unknown target class {target!r}; use one of {', '.join(names)} or its index.") from err
    if not 0 <= index < len(names):
        raise ValueError(f"Target index {index} is out of range for {len(names)} classes.")
    return index


# ---------------------------------------------------------------- explanation


def panel_key(model_key: str, method: str, params: dict[str, Any], target: int | None, layer: str | None,
              seed: int, augmentations: int = 1) -> str:
    """Identity of a map on the board: same settings replace each other."""
    return json.dumps([model_key, method, params, target, layer, seed, augmentations], sort_keys=True, default=str)


def run_method(session: Session, method: str, overrides: dict[str, Any], target: Any = None, layer: str | None = None,
               seed: int = 0, progress: ProgressFn | None = None, augmentations: int = 1) -> Panel:
    """Explain the session's image with one method and settings; ValueError for bad settings. ``target`` None
    explains the class on the prediction card (``predicted_index``); ``augmentations`` > 1 averages the maps of
    that many augmented copies (``core.explain.augment``, its default shifts, rotations and jitter)."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    info = METHODS[method]
    params = resolve_params(info, overrides)
    loaded = get_model(session.model_key)
    index = resolve_target(loaded, target)
    index = predicted_index(session) if index is None else index
    layer = ((layer or "").strip() or None) if info.uses_layer else None
    if layer is not None:
        get_layer(loaded.model, layer)  # ValueError naming the layer when it does not exist
    if not 1 <= int(augmentations) <= MAX_AUGMENTATIONS:
        raise ValueError(f"Test-time augmentation takes 1 to {MAX_AUGMENTATIONS} copies, got {augmentations}.")
    augmentations = int(augmentations)
    result = explain_augmented(loaded, session.x, method, index, augmentations=augmentations, layer=layer,
                               seed=int(seed), progress=_segmented(progress, 1 + (augmentations > 1)), **params)[0]
    title = info.label + (f" · seed {int(seed)}" if info.stochastic else "")
    title += f" · TTA ×{augmentations}" if augmentations > 1 else ""
    if params != info.defaults():
        changed = {k: v for k, v in params.items() if info.defaults().get(k) != v}
        title += " · " + ", ".join(f"{k}={v}" for k, v in changed.items())
    return Panel(panel_key(session.model_key, method, params, index, layer, int(seed), augmentations), title, result)


# ---------------------------------------------------------------- trust


def reference_curves(session: Session, target: int) -> quality.Reference:
    """Deletion and insertion curves of smooth random maps (``quality.reference_curves``): what a map must beat
    to mean anything. They depend only on the image, model and target, so they are computed once per session and
    target."""
    if target not in session.references:
        session.references[target] = quality.reference_curves(
            get_model(session.model_key), session.x, target, seeds=REFERENCE_SEEDS, grid=REFERENCE_GRID,
            steps=CURVE_STEPS)
    return session.references[target]


def assess(session: Session, panel: Panel, progress: ProgressFn | None = None) -> quality.Trust:
    """Deletion / insertion against random smooth maps and the randomisation sanity check over SANITY_COPIES
    copies, for the map already on the board (``quality.trust``; it is not recomputed). The fills are the ones
    bench/faithfulness.py chose by measurement (``quality.DELETION_BASELINE``, ``quality.INSERTION_BASELINE``), so
    the readings can quote each method's record there."""
    e = panel.explanation
    return quality.trust(get_model(session.model_key), session.x, e, steps=CURVE_STEPS,
                         reference=reference_curves(session, e.target), copies=SANITY_COPIES, progress=progress)


def agreement(session: Session) -> quality.Agreement | None:
    """Pairwise agreement of the maps on the board (None with fewer than two)."""
    if len(session.panels) < 2:
        return None
    return quality.agreement({p.title: p.explanation.heatmap for p in session.panels})


def stability(session: Session, panel: Panel, progress: ProgressFn | None = None) -> Stability:
    """Re-run a stochastic panel's method over a few seeds; mean map, per-pixel spread and a reading."""
    e = panel.explanation
    if not METHODS[e.method].stochastic:
        raise ValueError(f"{METHODS[e.method].label} is deterministic: every seed gives the same map.")
    if "augment" in e.extras:
        raise ValueError("The stability check reruns the method without test-time augmentation; explain without "
                         "it to compare seeds.")
    params = {k: v for k, v in e.params.items() if k not in ("layer", "seed")}
    result = quality.stability(get_model(session.model_key), session.x, e.method, e.target, seeds=STABILITY_SEEDS,
                               layer=e.params.get("layer"), progress=_segmented(progress, len(STABILITY_SEEDS)),
                               **params)
    summary = {"spearman": result.spearman, "reading": quality.read_stability(result),
               "mean_spread": float(result.std.mean())}
    return Stability(e.method, result.seeds, result.mean, result.std, summary)


def _segmented(progress: ProgressFn | None, parts: int) -> ProgressFn | None:
    """One monotone bar over ``parts`` runs whose own progress restarts at 0 (each run reports 0..1)."""
    if progress is None:
        return None
    state = {"part": 0, "last": 0.0}

    def report(fraction: float) -> None:
        if fraction < state["last"]:
            state["part"] = min(state["part"] + 1, parts - 1)
        state["last"] = fraction
        progress((state["part"] + fraction) / parts)

    return report


# ---------------------------------------------------------------- API summary


def summary(session: Session, panel: Panel) -> dict[str, Any]:
    """JSON-ready description of one explanation (what /explain returns next to the overlay): the explained class
    as index and name, ``score`` its softmax probability, ``probabilities`` every class's softmax, and
    ``prediction`` the prediction card (class at the operating threshold, calibrated probability)."""
    e = panel.explanation
    return {
        "model": session.model_key, "method": e.method, "target": e.target, "target_name": e.target_name,
        "score": e.score, "score_is": "softmax probability of the target class (not calibrated)",
        "seconds": e.seconds, "params": e.params, "signed": e.signed,
        "probabilities": session.probabilities, "prediction": _finite(session.assessment.as_dict()),
        "quality": _finite(trust_summary(panel.quality)),
        "extras": _finite({k: v for k, v in e.extras.items() if _jsonable(v)}),
    }


def trust_summary(trust: quality.Trust | None) -> dict[str, Any] | None:
    """The trust figures as plain values (None before they are computed). ``sanity_spearman`` is the median |rho|
    over the randomised copies; ``sanity_correlations`` the signed rho of each."""
    if trust is None:
        return None
    sanity = trust.sanity
    return {
        "deletion_auc": trust.deletion.auc, "deletion_auc_random": trust.reference.deletion.auc,
        "insertion_auc": trust.insertion.auc, "insertion_auc_random": trust.reference.insertion.auc,
        "sanity_spearman": sanity.median, "sanity_quartiles": list(sanity.quartiles),
        "sanity_correlations": list(sanity.correlations), "sanity_verdict": sanity.verdict,
        "randomised_layers": list(sanity.layers), "readings": list(trust.readings),
    }


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _finite(value: Any) -> Any:
    """NaN and infinities become None so the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value

