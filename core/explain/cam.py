"""Class activation maps: CAM, Grad-CAM, Grad-CAM++ and Layer-CAM on one shared base.

All four weight the K activation maps A (N x K x h x w) of a convolutional layer and keep the positive part of
their sum, ``ReLU(sum_k w_k * A_k)``, upsampled bilinearly to the input. The base (``_layer_maps``) runs the
forward pass with the layer captured, takes the gradient of each image's target logit w.r.t. A only
(``torch.autograd.grad``: the backward stops at the layer and no parameter gets a gradient), and leaves each
method one small weighting function ``(ctx, LayerPass) -> w`` with w of shape N x K or N x K x h x w.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.explain.base import Context, batches, register
from core.hooks import capture


@dataclass(frozen=True)
class LayerPass:
    """One forward (and backward) pass recorded at the chosen layer."""

    activations: torch.Tensor  # N x K x h x w, detached
    gradients: torch.Tensor | None  # d(target logit)/dA, same shape (None for gradient-free methods)
    targets: torch.Tensor  # N
    logits: torch.Tensor  # N x classes, detached


Weighting = Callable[[Context, LayerPass], torch.Tensor]


def target_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each image's logit of its target class (N values)."""
    return logits.gather(1, targets[:, None])[:, 0]


def combine(activations: torch.Tensor, weights: torch.Tensor, size: tuple[int, int]
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``ReLU(sum_k w_k A_k)`` at layer resolution (N x h x w) and upsampled bilinearly to ``size``."""
    w = weights if weights.ndim == 4 else weights[:, :, None, None]
    coarse = F.relu((w * activations).sum(dim=1))
    return coarse, F.interpolate(coarse[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _layer_maps(ctx: Context, x: torch.Tensor, weigh: Weighting, gradients: bool = True
                ) -> tuple[torch.Tensor, list[dict]]:
    """The shared CAM pipeline: batched forward with the layer captured, gradient to the layer, weighting, ReLU,
    upsampling. Returns N x H x W maps and, per image, the layer-resolution map."""
    maps, extras = [], []
    for rows in batches(len(x), ctx.batch_size):
        # A leaf input keeps the layer in the autograd graph even for a model whose parameters are frozen.
        xb = x[rows].detach().requires_grad_(gradients)
        with capture(ctx.model, ctx.layer) as record, torch.set_grad_enabled(gradients):
            logits = ctx.model(xb)
        acts = record.require()
        targets = ctx.resolve(logits, rows)
        grads = torch.autograd.grad(target_logits(logits, targets).sum(), acts)[0] if gradients else None
        weights = weigh(ctx, LayerPass(acts.detach(), grads, targets, logits.detach()))
        coarse, full = combine(acts.detach(), weights, tuple(x.shape[-2:]))
        maps.append(full)
        extras += [{"layer_map": c.cpu().numpy()} for c in coarse]
        ctx.report(rows.stop / len(x))
    return torch.cat(maps), extras


def grad_cam_weights(_ctx: Context, p: LayerPass) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): each channel weighted by its spatially averaged gradient."""
    return p.gradients.mean(dim=(2, 3))


def _grad_cam_pp_weights(_ctx: Context, p: LayerPass) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19, with the exponential-score closed form used by
    pytorch-grad-cam): positive gradients weighted per location by alpha = g^2 / (2 g^2 + sum(A) g^3)."""
    g = p.gradients
    g2 = g * g
    sum_a = p.activations.sum(dim=(2, 3), keepdim=True)
    alpha = torch.where(g != 0, g2 / (2 * g2 + sum_a * g2 * g + 1e-6), torch.zeros_like(g))
    return (F.relu(g) * alpha).sum(dim=(2, 3))


def _layer_cam_weights(_ctx: Context, p: LayerPass) -> torch.Tensor:
    """Layer-CAM (Jiang et al. 2021): every location weighted by its own positive gradient."""
    return F.relu(p.gradients)


def linear_head(model: nn.Module) -> nn.Linear:
    """The model's last registered nn.Linear (the classifier of a GAP + linear network)."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise ValueError("CAM needs a linear classifier after global average pooling; this model has no "
                         "nn.Linear. Use Grad-CAM.")
    return heads[-1]


def _cam_weights(ctx: Context, p: LayerPass) -> torch.Tensor:
    """CAM (Zhou et al. 2016): the classifier's weights of the target class.

    Valid only when logit = w . GAP(A) + b; that identity is checked on this very input so CAM never silently
    explains a layer that does not feed the head directly.
    """
    head = linear_head(ctx.model)
    if head.in_features != p.activations.shape[1]:
        raise ValueError(f"CAM needs the layer that feeds global average pooling + the linear head; "
                         f"{ctx.layer!r} has {p.activations.shape[1]} channels but the head takes "
                         f"{head.in_features}. Use Grad-CAM for other layers.")
    w = head.weight[p.targets].to(p.activations.dtype)
    implied = (p.activations.mean(dim=(2, 3)) * w).sum(dim=1)
    if head.bias is not None:
        implied = implied + head.bias[p.targets]
    actual = target_logits(p.logits, p.targets)
    if not torch.allclose(implied, actual, rtol=1e-3, atol=1e-3):
        raise ValueError(f"CAM needs a network that ends in global average pooling + one linear layer right after "
                         f"{ctx.layer!r}; this one does not (its logits differ from the CAM identity). "
                         "Use Grad-CAM.")
    return w.detach()


_HOW = "Upsampled bilinearly from the layer's resolution; only positive evidence is kept (ReLU)."


@register("cam", "CAM", "cam",
          "Class activation map: the layer's feature maps weighted by the classifier's weights for the class "
          "(GAP + linear networks only; no gradients). " + _HOW,
          uses_layer=True, own_forward=True)
def cam(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict]]:
    """CAM maps (N x H x W)."""
    return _layer_maps(ctx, x, _cam_weights, gradients=False)


@register("grad_cam", "Grad-CAM", "cam",
          "Feature maps of a layer weighted by the average gradient of the class score per channel. " + _HOW,
          uses_layer=True, own_forward=True)
def grad_cam(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict]]:
    """Grad-CAM maps (N x H x W)."""
    return _layer_maps(ctx, x, grad_cam_weights)


@register("grad_cam_pp", "Grad-CAM++", "cam",
          "Grad-CAM with per-location weights of the positive gradients, which spreads the map over several "
          "instances of the evidence. " + _HOW,
          uses_layer=True, own_forward=True)
def grad_cam_pp(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict]]:
    """Grad-CAM++ maps (N x H x W)."""
    return _layer_maps(ctx, x, _grad_cam_pp_weights)


@register("layer_cam", "Layer-CAM", "cam",
          "Every activation weighted by its own positive gradient: finer maps, useful on earlier layers. " + _HOW,
          uses_layer=True, own_forward=True)
def layer_cam(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict]]:
    """Layer-CAM maps (N x H x W)."""
    return _layer_maps(ctx, x, _layer_cam_weights)
