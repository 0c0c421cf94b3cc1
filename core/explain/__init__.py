"""Explainers: every method returns the same Explanation; importing this package fills the registry."""

import core.explain.cam  # registers cam, grad_cam, grad_cam_pp, layer_cam, hires_cam, xgrad_cam, score_cam, eigen_cam
import core.explain.gradients  # registers saliency, smoothgrad, integrated_gradients, guided_*
import core.explain.occlusion  # registers occlusion
import core.explain.perturbation  # registers meaningful_perturbation
import core.explain.reference  # registers deeplift, gradient_shap
import core.explain.relevance  # noqa: F401  (registers lrp)
from core.explain import superpixels  # noqa: F401  (registers lime, kernel_shap)
from core.explain.base import METHODS, Explanation, MethodInfo, Param, explain

__all__ = ["METHODS", "Explanation", "MethodInfo", "Param", "explain"]
