"""Class activation maps: CAM, Grad-CAM, Grad-CAM++, Layer-CAM, HiResCAM, XGrad-CAM, Score-CAM and Eigen-CAM on
one shared base.

All weight the K activation maps A (N x K x h x w) of a convolutional layer and keep the positive part of their
sum, ``ReLU(sum_k w_k * A_k + b)``, upsampled bilinearly to the input. The base (``_layer_maps``) runs the
forward pass with the layer captured, takes the gradient of each image's target logit w.r.t. A only
(``torch.autograd.grad``: the backward stops at the layer and no parameter gets a gradient), and leaves each
method one small weighting function ``(ctx, LayerPass) -> w`` with w of shape N x K or N x K x h x w, or a pair
``(w, b)`` with one offset b per image (Eigen-CAM's projection of centred activations).

The variants are written here rather than called from pytorch-grad-cam: it moves activations to NumPy and back,
runs Score-CAM's masked images one image at a time with a host sync per score and keeps parameter gradients on
the shared model; here every step stays on the model's device, Score-CAM batches (image, channel) rows across
images, and the hooks are this thread's only. The tests check each variant against pytorch-grad-cam.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.explain.base import Context, Param, batches, register
from core.hooks import capture


@dataclass(frozen=True)
class LayerPass:
    """One forward (and backward) pass recorded at the chosen layer."""

    activations: torch.Tensor  # N x K x h x w, detached
    gradients: torch.Tensor | None  # d(target logit)/dA, same shape (None for gradient-free methods)
    targets: torch.Tensor  # N
    logits: torch.Tensor  # N x classes, detached
    inputs: torch.Tensor | None = None  # the images of this pass (N x C x H x W), detached: Score-CAM masks them
    rows: slice | None = None  # which images of the whole call these are (for progress reports)
    total: int = 0  # images in the whole call


Weighting = Callable[[Context, LayerPass], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


def target_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each image's logit of its target class (N values)."""
    return logits.gather(1, targets[:, None])[:, 0]


def combine(activations: torch.Tensor, weights: torch.Tensor, size: tuple[int, int],
            offset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``ReLU(sum_k w_k A_k + offset)`` at layer resolution (N x h x w) and upsampled bilinearly to ``size``."""
    w = weights if weights.ndim == 4 else weights[:, :, None, None]
    total = (w * activations).sum(dim=1)
    coarse = F.relu(total if offset is None else total + offset[:, None, None])
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
        weights = weigh(ctx, LayerPass(acts.detach(), grads, targets, logits.detach(), xb.detach(), rows, len(x)))
        weights, offset = weights if isinstance(weights, tuple) else (weights, None)
        coarse, full = combine(acts.detach(), weights, tuple(x.shape[-2:]), offset)
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


def _hires_cam_weights(_ctx: Context, p: LayerPass) -> torch.Tensor:
    """HiResCAM (Draelos and Carin 2020): every activation weighted by its own gradient, signs kept, so the map is
    the layer's gradient x activation summed over channels. On a layer that feeds global average pooling and a
    linear head the gradient is constant over locations and HiResCAM equals Grad-CAM."""
    return p.gradients


def _xgrad_cam_weights(_ctx: Context, p: LayerPass) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020): the gradient averaged with the channel's own activations as weights,
    ``w_k = sum_ij A_k(ij) g_k(ij) / (sum_ij A_k(ij) + 1e-7)`` (pytorch-grad-cam's constant)."""
    mass = p.activations.sum(dim=(2, 3), keepdim=True)
    return (p.gradients * p.activations / (mass + 1e-7)).sum(dim=(2, 3))


def _eigen_cam_weights(_ctx: Context, p: LayerPass) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-CAM (Muhammad and Yeasin 2020): the activations (centred per channel, as pytorch-grad-cam does)
    projected on their first principal direction v, i.e. ``sum_k v_k A_k - sum_k v_k mean(A_k)``.

    No gradient and no class: the map shows the layer's dominant pattern. An SVD fixes v only up to sign; the
    sign is chosen so that the projection's largest magnitude is positive (pytorch-grad-cam's sign correction,
    Chung and Ying 2025, eq. 13), so the ReLU keeps the salient side."""
    a = p.activations.flatten(2).transpose(1, 2).double()  # N x hw x K
    mean = a.mean(dim=1, keepdim=True)
    centred = a - mean
    # The first right singular vector, from the eigenvectors of the smaller Gram matrix: eigh of a 36 x 36 matrix
    # takes a quarter of the SVD's time, which was most of Eigen-CAM's cost over a bare forward.
    if centred.shape[1] <= centred.shape[2]:
        u = torch.linalg.eigh(centred @ centred.transpose(1, 2)).eigenvectors[:, :, -1]  # N x hw, top eigenvalue
        v = torch.nn.functional.normalize((centred.transpose(1, 2) @ u[:, :, None])[:, :, 0], dim=1)
    else:
        v = torch.linalg.eigh(centred.transpose(1, 2) @ centred).eigenvectors[:, :, -1]  # N x K
    projection = (centred @ v[:, :, None])[:, :, 0]
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    v = torch.where(flip[:, None], -v, v)
    offset = -(mean[:, 0, :] * v).sum(dim=1)
    return v.to(p.activations.dtype), offset.to(p.activations.dtype)


def _score_cam_weights(ctx: Context, p: LayerPass) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020): each channel weighted by the softmax, over channels, of the target logit of
    the image masked by that channel's upsampled activation min-max scaled to [0, 1] (as pytorch-grad-cam:
    ``UpsamplingBilinear2d``, i.e. aligned corners, and 1e-8 in the scaling).

    (image, channel) rows are flattened and evaluated ``batch`` at a time, so small layers of several images
    share a forward pass; the masks are built per batch on the device. With ``max_channels`` below the layer's
    channel count only the channels of largest mean |activation| are scored; the others get weight 0. A channel
    that is zero everywhere adds nothing to the map (its softmax weight only rescales the map), so a cap that
    drops only dead channels leaves the min-max normalised map unchanged."""
    acts, x = p.activations, p.inputs
    n, k = acts.shape[:2]
    keep = min(ctx.params["max_channels"], k)
    if keep < k:
        order = acts.abs().mean(dim=(2, 3)).sort(dim=1, descending=True, stable=True).indices[:, :keep]
    else:
        order = torch.arange(k, device=acts.device).expand(n, k)
    size = tuple(x.shape[-2:])
    scores = torch.empty(n * keep, device=acts.device, dtype=acts.dtype)
    step = ctx.params["batch"]
    done = p.rows.start if p.rows is not None else 0
    with torch.no_grad():
        for chunk in batches(n * keep, step):
            image = torch.arange(chunk.start, chunk.stop, device=acts.device) // keep
            channel = order.reshape(-1)[chunk]
            masks = F.interpolate(acts[image, channel][:, None], size=size, mode="bilinear", align_corners=True)
            low = masks.amin(dim=(2, 3), keepdim=True)
            high = masks.amax(dim=(2, 3), keepdim=True)
            masks = (masks - low) / (high - low + 1e-8)
            scores[chunk] = target_logits(ctx.model(x[image] * masks), p.targets[image])
            ctx.report((done + chunk.stop / keep) / max(p.total, 1))
    weights = torch.zeros(n, k, device=acts.device, dtype=acts.dtype)
    return weights.scatter_(1, order, torch.softmax(scores.view(n, keep), dim=1))


@register("hires_cam", "HiResCAM", "cam",
          "Which locations of the layer raise the class score, and by how much? Every activation times its own "
          "gradient, summed over channels (Draelos and Carin 2020): unlike Grad-CAM it never averages the gradient "
          "over space, so it highlights exactly the locations the score used. " + _HOW,
          uses_layer=True, own_forward=True)
def hires_cam(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict]]:
    """HiResCAM maps (N x H x W)."""
    return _layer_maps(ctx, x, _hires_cam_weights)


@register("xgrad_cam", "XGrad-CAM", "cam",
          "Which feature maps of the layer matter for the class? Like Grad-CAM, but each channel's gradient is "
          "averaged with the channel's own activations as weights (Fu et al. 2020), which makes the map satisfy "
          "the sensitivity and conservation axioms more closely. " + _HOW,
          uses_layer=True, own_forward=True)
def xgrad_cam(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict]]:
    """XGrad-CAM maps (N x H x W)."""
    return _layer_maps(ctx, x, _xgrad_cam_weights)


@register("score_cam", "Score-CAM", "cam",
          "What does the model still see when it looks only where a feature map is active? Each channel's "
          "upsampled activation masks the image; the class scores of the masked images, softmaxed over channels, "
          "weight the channels (Wang et al. 2020). Gradient-free; costs one forward pass per channel. " + _HOW,
          uses_layer=True, own_forward=True,
          params=[
              Param("max_channels", "Channels scored", "int", 256, 1, 4096, 1,
                    help="Score at most this many channels per image, those with the largest mean activation "
                         "(cost grows linearly). Channels that are zero everywhere never change the map."),
              Param("batch", "Masked images per pass", "int", 32, 1, 512, 1,
                    help="Masked images evaluated in one forward pass (memory grows linearly, speed saturates)."),
          ])
def score_cam(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict]]:
    """Score-CAM maps (N x H x W)."""
    return _layer_maps(ctx, x, _score_cam_weights, gradients=False)


@register("eigen_cam", "Eigen-CAM", "cam",
          "What is the layer's dominant pattern on this image? The activations projected on their first principal "
          "component (Muhammad and Yeasin 2020). Class-agnostic: the same map for every target, no gradients. "
          + _HOW,
          uses_layer=True, own_forward=True)
def eigen_cam(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict]]:
    """Eigen-CAM maps (N x H x W)."""
    return _layer_maps(ctx, x, _eigen_cam_weights, gradients=False)
