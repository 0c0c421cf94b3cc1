"""Explainers: every method returns the same Explanation; importing this package fills the registry."""

from torch import nn

import core.explain.cam  # registers cam, grad_cam, grad_cam_pp, layer_cam, hires_cam, xgrad_cam, score_cam, eigen_cam
import core.explain.gradients  # registers saliency, smoothgrad, integrated_gradients, guided_*
import core.explain.occlusion  # registers occlusion
import core.explain.perturbation  # registers meaningful_perturbation
import core.explain.reference  # registers deeplift, gradient_shap
import core.explain.relevance  # noqa: F401  (registers lrp)
from core.explain import (
    replicas,
    superpixels,  # noqa: F401  (registers lime, kernel_shap)
)
from core.explain.base import METHODS, Explanation, MethodInfo, Param, explain
from core.explain.reference import prepare_deeplift
from core.zoo import LoadedModel

__all__ = ["METHODS", "Explanation", "MethodInfo", "Param", "explain", "warm_up"]


def warm_up(model: LoadedModel | nn.Module) -> None:
    """Prepare the private copies DeepLIFT (a torch.fx rewrite) and LRP (Zennit) work on, before a server takes
    requests: tracing patches ``nn.Module.__call__`` process-wide, so it must not run beside another request's
    forward pass; afterwards models of the same architecture reuse the traced copy (``core.explain.replicas``)."""
    net = model.model if isinstance(model, LoadedModel) else model
    replicas.warm_up(net, [("deeplift", prepare_deeplift), ("zennit", None)])
