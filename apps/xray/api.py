"""Named API endpoints ``/predict``, ``/assess`` and ``/explain`` for ``gradio_client``.

They sit on hidden components so the page's own events stay private, share ``analysis`` with the UI, and
turn every user error into ``gr.Error`` with the same human message the page shows.

Example::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860")
    probs = client.predict(handle_file("xray.jpeg"), api_name="/predict")
    verdict = client.predict(handle_file("xray.jpeg"), api_name="/assess")  # threshold, set, OOD gate
    overlay, summary = client.predict(handle_file("xray.jpeg"), "lime", '{"n_samples": 500}', api_name="/explain")
"""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import Any

import gradio as gr
import numpy as np

from apps.xray import analysis, views
from apps.xray.analysis import MAX_AUGMENTATIONS
from apps.xray.cancel import Cancelled, progress_callback, raise_if_cancelled
from apps.xray.limits import Limits
from apps.xray.models import ZooStatus, get_model
from apps.xray.uploads import UploadError, UploadJanitor
from core.explain import render
from core.explain.base import METHODS
from core.io import ImageError, load_image
from core.zoo import BUNDLED, DISCLAIMER, ModelUnavailable

log = logging.getLogger(__name__)
# Keys of /explain's JSON that are not method parameters.
OPTIONS = {"target": None, "layer": None, "seed": 0, "colormap": None, "opacity": 0.5, "quality": True,
           "augment": 1}


def _check_model(zoo: ZooStatus, model: str) -> str:
    model = (model or BUNDLED).strip()
    if model in zoo.unavailable:
        raise ModelUnavailable(f"{model} is unavailable here: {zoo.unavailable[model]}")
    if model not in zoo.available:
        raise ValueError(f"Unknown model {model!r}; choose one of {', '.join(zoo.available)}.")
    return model


MAX_PARAMS_TEXT = 10_000  # characters: a method's parameters fit in a few hundred
_JSON_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,), "choice": (str,)}


def _describe(value: Any) -> str:
    """A short, safe rendering of a rejected value (a huge or nested one is not echoed back whole)."""
    text = repr(value) if isinstance(value, (str, float)) else json.dumps(value)
    return text if len(text) <= 40 else f"a {type(value).__name__} of {len(text)} characters"


def _typed(name: str, value: Any, kinds: tuple[type, ...], what: str) -> Any:
    """``value`` when it is exactly one of ``kinds`` (a bool is not a number here; floats must be finite)."""
    ok = isinstance(value, kinds) and isinstance(value, bool) == (kinds == (bool,))
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"{name} must be {what}, got {_describe(value)}.")
    return value


def _parse(params: str, method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(method parameters, options) from the JSON text, strictly typed before any work: ValueError otherwise."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {_describe(method)}; choose one of {', '.join(METHODS)}.")
    if len(params or "") > MAX_PARAMS_TEXT:
        raise ValueError(f"params is too long ({len(params):,} characters; at most {MAX_PARAMS_TEXT:,}).")
    try:
        data = json.loads(params or "{}")
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError("params must be a JSON object, e.g. {\"n_samples\": 500}.") from err
    if not isinstance(data, dict):
        raise ValueError("params must be a JSON object, e.g. {\"n_samples\": 500}.")
    options = {k: data.pop(k, default) for k, default in OPTIONS.items()}
    known = {p.name: p for p in METHODS[method].params}
    for name, value in data.items():
        if name not in known:
            raise ValueError(f"{method} has no parameter {_describe(name)}; it takes {', '.join(known) or 'none'}.")
        kind = known[name].kind
        _typed(name, value, _JSON_TYPES.get(kind, (str,)), {"int": "an integer", "float": "a number",
                                                          "bool": "true or false"}.get(kind, "a string"))
    if options["target"] is not None:
        _typed("target", options["target"], (str, int), "a class name or index")
    if options["layer"] is not None:
        _typed("layer", options["layer"], (str,), "a layer name")
    if options["colormap"] is not None:
        _typed("colormap", options["colormap"], (str,), "a colour map name")
    seed = _typed("seed", options["seed"], (int,), "a non-negative integer")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be between 0 and 2^32 - 1, got {_describe(seed)}.")
    opacity = _typed("opacity", options["opacity"], (int, float), "a number between 0 and 1")
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be between 0 and 1, got {_describe(opacity)}.")
    _typed("quality", options["quality"], (bool,), "true or false")
    copies = _typed("augment", options["augment"], (int,), f"a whole number of copies, 1 to {MAX_AUGMENTATIONS}")
    if not 1 <= copies <= MAX_AUGMENTATIONS:
        raise ValueError(f"augment takes 1 (off) to {MAX_AUGMENTATIONS} copies, got {_describe(copies)}.")
    cmap = options["colormap"]
    if cmap is not None and cmap not in (*render.UNSIGNED_CMAPS, *render.SIGNED_CMAPS):
        raise ValueError(f"colour map {_describe(cmap)} is not offered; choose one of "
                         f"{', '.join((*render.UNSIGNED_CMAPS, *render.SIGNED_CMAPS))}.")
    return data, options


def register_api(janitor: UploadJanitor, zoo: ZooStatus, limits: Limits) -> None:
    """Add the endpoints to the Blocks being built (call inside its context)."""

    def api_errors(fn: Any) -> Any:
        @functools.wraps(fn)  # Gradio reads the signature to pass gr.Progress in
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (ImageError, UploadError, ValueError, ModelUnavailable) as err:
                raise gr.Error(str(err), print_exception=False) from err
            except Cancelled as err:
                raise gr.Error("The request was cancelled.", print_exception=False) from err

        return wrapper

    @api_errors
    def predict(image: str | None, model: str = BUNDLED) -> dict[str, float]:
        """Class probabilities for one image file (PNG, JPEG, TIFF or DICOM). Education and research only."""
        if not image:
            raise ValueError("Send an image file.")
        janitor.release(image)  # deleted after its grace period even when the request is refused or cancelled
        key = _check_model(zoo, model)
        raise_if_cancelled()
        session = analysis.open_session(load_image(janitor.take(image)), "api", key, uploaded=True)
        return session.probabilities

    @api_errors
    def assess(image: str | None, model: str = BUNDLED) -> dict[str, Any]:
        """Prediction with trust for one image: label at the operating threshold, calibrated probability,
        90% prediction set and the out-of-distribution gate (``in_distribution``, ``ood_score``; 1.0 = gate)."""
        if not image:
            raise ValueError("Send an image file.")
        janitor.release(image)  # deleted after its grace period even when the request is refused or cancelled
        key = _check_model(zoo, model)
        raise_if_cancelled()
        session = analysis.open_session(load_image(janitor.take(image)), "api", key, uploaded=True)
        return {**session.assessment.as_dict(), "disclaimer": DISCLAIMER}

    @api_errors
    def explain(image: str | None, method: str = "grad_cam", params: str = "{}", model: str = BUNDLED,
                progress: gr.Progress = gr.Progress()) -> tuple[np.ndarray, dict[str, Any]]:  # noqa: B008
        """Heatmap overlay and a JSON summary (target, score, seconds, quality) for one image and method.

        ``params`` is a JSON object of the method's parameters, plus optional ``target`` (class name or index),
        ``layer``, ``seed``, ``colormap``, ``opacity``, ``quality`` (false skips the trust checks) and ``augment``
        (test-time augmentation: the map averaged over that many augmented copies, 1 = off).
        """
        if not image:
            raise ValueError("Send an image file.")
        janitor.release(image)  # deleted after its grace period even when the request is refused or cancelled
        overrides, options = _parse(params, method)
        key = _check_model(zoo, model)
        side = get_model(key).spec.preprocessing.size
        limits.check_work(method, overrides, (side, side), options["quality"], options["augment"])  # what fits
        raise_if_cancelled()
        session = analysis.open_session(load_image(janitor.take(image)), "api", key, uploaded=True)
        raise_if_cancelled()
        panel = analysis.run_method(session, method, overrides, options["target"], options["layer"],
                                    int(options["seed"]), progress_callback(progress, method, 0.0, 0.5),
                                    options["augment"])
        if options["quality"]:
            panel.quality = analysis.assess(session, panel, progress_callback(progress, "trust checks", 0.5, 0.5))
        raise_if_cancelled()
        cmap = options["colormap"] or views.Style().cmap(panel.explanation.signed)
        style = views.Style(cmap, cmap, float(options["opacity"]))  # render.colourise rejects a wrong-family map
        overlay = views.overlay(session, panel.explanation, style)
        return overlay, {**analysis.summary(session, panel), "disclaimer": DISCLAIMER}

    with gr.Group(visible=False):
        image = gr.File(type="filepath", label="image")
        model = gr.Textbox(BUNDLED, label="model")
        method = gr.Dropdown(list(METHODS), value="grad_cam" if "grad_cam" in METHODS else next(iter(METHODS)),
                             label="method")
        params = gr.Textbox("{}", label="params")
        probabilities = gr.Label(label="probabilities")
        overlay = gr.Image(label="overlay", format="png")
        summary = gr.JSON(label="summary")
        assessment = gr.JSON(label="assessment")
        predict_button = gr.Button()
        assess_button = gr.Button()
        explain_button = gr.Button()
    predict_button.click(predict, [image, model], probabilities, api_name="predict", **limits.fast())
    assess_button.click(assess, [image, model], assessment, api_name="assess", **limits.fast())
    explain_button.click(explain, [image, method, params, model], [overlay, summary], api_name="explain",
                         **limits.heavy())
