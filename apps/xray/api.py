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

import json
import logging
from typing import Any

import gradio as gr
import numpy as np

from apps.xray import analysis, views
from apps.xray.cancel import Cancelled, progress_callback
from apps.xray.limits import Limits
from apps.xray.models import ZooStatus
from apps.xray.uploads import UploadError, UploadJanitor
from core.explain.base import METHODS
from core.io import ImageError, load_image
from core.zoo import BUNDLED, DISCLAIMER, ModelUnavailable

log = logging.getLogger(__name__)
# Keys of /explain's JSON that are not method parameters.
OPTIONS = {"target": None, "layer": None, "seed": 0, "colormap": None, "opacity": 0.5, "quality": True}


def _check_model(zoo: ZooStatus, model: str) -> str:
    model = (model or BUNDLED).strip()
    if model in zoo.unavailable:
        raise ModelUnavailable(f"{model} is unavailable here: {zoo.unavailable[model]}")
    if model not in zoo.available:
        raise ValueError(f"Unknown model {model!r}; choose one of {', '.join(zoo.available)}.")
    return model


def _parse(params: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(method parameters, options) from the JSON text; ValueError when it is not a JSON object."""
    try:
        data = json.loads(params or "{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"params must be a JSON object, e.g. {{\"n_samples\": 500}} ({err.msg}).") from err
    if not isinstance(data, dict):
        raise ValueError("params must be a JSON object, e.g. {\"n_samples\": 500}.")
    return data, {k: data.pop(k, default) for k, default in OPTIONS.items()}


def register_api(janitor: UploadJanitor, zoo: ZooStatus, limits: Limits) -> None:
    """Add the endpoints to the Blocks being built (call inside its context)."""

    def api_errors(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (ImageError, UploadError, ValueError, ModelUnavailable) as err:
                raise gr.Error(str(err), print_exception=False) from err
            except Cancelled as err:
                raise gr.Error("The request was cancelled.", print_exception=False) from err

        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper

    @api_errors
    def predict(image: str | None, model: str = BUNDLED) -> dict[str, float]:
        """Class probabilities for one image file (PNG, JPEG, TIFF or DICOM). Education and research only."""
        if not image:
            raise ValueError("Send an image file.")
        session = analysis.open_session(load_image(janitor.take(image)), "api", _check_model(zoo, model),
                                       uploaded=True)
        return session.probabilities

    @api_errors
    def assess(image: str | None, model: str = BUNDLED) -> dict[str, Any]:
        """Prediction with trust for one image: label at the operating threshold, calibrated probability,
        90% prediction set and the out-of-distribution gate (``in_distribution``, ``ood_score``; 1.0 = gate)."""
        if not image:
            raise ValueError("Send an image file.")
        session = analysis.open_session(load_image(janitor.take(image)), "api", _check_model(zoo, model),
                                       uploaded=True)
        return {**session.assessment.as_dict(), "disclaimer": DISCLAIMER}

    @api_errors
    def explain(image: str | None, method: str = "grad_cam", params: str = "{}", model: str = BUNDLED,
                progress: gr.Progress = gr.Progress()) -> tuple[np.ndarray, dict[str, Any]]:  # noqa: B008
        """Heatmap overlay and a JSON summary (target, score, seconds, quality) for one image and method.

        ``params`` is a JSON object of the method's parameters, plus optional ``target`` (class name or index),
        ``layer``, ``seed``, ``colormap``, ``opacity`` and ``quality`` (false skips the trust checks).
        """
        if not image:
            raise ValueError("Send an image file.")
        overrides, options = _parse(params)
        session = analysis.open_session(load_image(janitor.take(image)), "api", _check_model(zoo, model),
                                       uploaded=True)
        panel = analysis.run_method(session, method, overrides, options["target"], options["layer"],
                                    int(options["seed"]), progress_callback(progress, method, 0.0, 0.5))
        if options["quality"]:
            panel.quality = analysis.assess(session, panel, progress_callback(progress, "trust checks", 0.5, 0.5))
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
