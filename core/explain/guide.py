"""Guidance a lecturer can use to pick a method: the question each one answers, what it costs in model passes, and
its measured record on the bundled model (``quality.FAITHFULNESS`` and ``quality.SANITY``, from
bench/faithfulness.py).

Every registered method must have a question here (a test holds the registry to it), so a new method cannot reach
the app's picker without one.
"""

from __future__ import annotations

from typing import Any

from core.explain import quality
from core.explain.base import METHODS
from core.explain.occlusion import starts

QUESTIONS: dict[str, str] = {
    "cam": "Which regions of the last feature maps does the classifier's own weighting favour for this class?",
    "grad_cam": "Which regions of a layer raise the class score (each channel weighted by its average gradient)?",
    "grad_cam_pp": "Which regions raise the score when the evidence sits in several separate places?",
    "layer_cam": "Which locations raise the score, at the finer resolution of earlier layers?",
    "hires_cam": "Which locations of the layer raise the class score, and by how much (no gradient averaging)?",
    "xgrad_cam": "Which feature maps of the layer matter for the class (weights chosen to satisfy two axioms)?",
    "score_cam": "What does the model still see when it looks only where one feature map is active?",
    "eigen_cam": "What is the layer's dominant pattern on this image, whatever the class?",
    "saliency": "Which pixels would change the class score most if nudged slightly?",
    "smoothgrad": "As saliency, with the noise of single gradients averaged out over noisy copies?",
    "integrated_gradients": "How much does each pixel add to the score, compared with a baseline image?",
    "guided_backprop": "Which fine edges and textures excite the network (largely independent of the class)?",
    "guided_grad_cam": "Which fine details inside the Grad-CAM region carry the class?",
    "occlusion": "How much does the score drop when each patch of the image is hidden?",
    "meaningful_perturbation": "What is the smallest region whose deletion destroys the class score?",
    "deeplift": "Which pixels make the score differ from the score of a reference image?",
    "gradient_shap": "What does each pixel add to the score, on average over reference images?",
    "lrp": "How is the class score shared out among the pixels, layer by layer?",
    "lime": "Which superpixels, switched on and off, best explain the probability with a linear model?",
    "kernel_shap": "What is each superpixel's fair (Shapley) share of the class probability?",
}


def cost(method: str, params: dict[str, Any], side: int) -> str:
    """The model passes ``method`` makes for one image at these settings on a ``side`` x ``side`` input."""
    p = {**METHODS[method].defaults(), **params}
    if method == "cam":
        return "1 forward"
    if method == "eigen_cam":
        return "1 forward + an SVD"
    if method in ("grad_cam", "grad_cam_pp", "layer_cam", "hires_cam", "xgrad_cam", "saliency", "guided_backprop",
                  "lrp"):
        return "1 forward + 1 backward"
    if method == "guided_grad_cam":
        return "1 forward + 2 backwards"
    if method == "deeplift":
        return "1 forward + 1 backward on image and baseline"
    if method == "score_cam":
        return f"1 forward + up to {p['max_channels']} masked forwards"
    if method in ("smoothgrad", "gradient_shap"):
        return f"{p['n_samples']} forwards + backwards"
    if method == "integrated_gradients":
        return f"{p['steps']} forwards + backwards"
    if method == "occlusion":
        return f"{len(starts(side, p['patch'], p['stride'])) ** 2 + 1} forwards"
    if method == "meaningful_perturbation":
        return f"{p['steps']} forwards + backwards (optimised mask)"
    if method in ("lime", "kernel_shap"):
        return f"{p['n_samples']} forwards + a segmentation"
    return "see the method's settings"


def record(method: str) -> str:
    """The method's measured record on the bundled model in one line, or "" when it was not measured."""
    figures = quality.FAITHFULNESS.get(method)
    if figures is None:
        return ""
    shares = " / ".join(f"{figures[check][0]:.0%}" for check in ("deletion", "insertion", "road"))
    sanity = quality.SANITY.get(method)
    tail = "" if sanity is None else f"; sanity check median |ρ| {sanity:.2f} (0 is best)"
    return f"beats random maps on {shares} of {quality.MEASURED_IMAGES} new-patient films (deletion / insertion / " \
           f"ROAD){tail}"


def table(side: int) -> list[dict[str, str]]:
    """One row per registered method: label, question, cost at default settings, and the measured record."""
    rows = []
    for name, info in METHODS.items():
        figures = quality.FAITHFULNESS.get(name)
        sanity = quality.SANITY.get(name)
        rows.append({
            "method": info.label, "question": QUESTIONS.get(name, info.description.split(". ")[0]),
            "cost": cost(name, {}, side),
            "deletion": "n/a" if figures is None else f"{figures['deletion'][0]:.0%}",
            "insertion": "n/a" if figures is None else f"{figures['insertion'][0]:.0%}",
            "road": "n/a" if figures is None else f"{figures['road'][0]:.0%}",
            "sanity": "n/a" if sanity is None else f"{sanity:.2f}",
        })
    return rows
