"""Gradient attributions: saliency, SmoothGrad, Integrated Gradients, Guided Backprop and Guided Grad-CAM.

All take gradients of the target logit w.r.t. the input with ``torch.autograd.grad`` (no parameter gradients).
Sampling methods (SmoothGrad, IG) flatten (image, sample) pairs into rows and evaluate them ``batch_size`` rows
at a time on the model's device, so one image with 32 samples fills one batch. Noise sample j comes from its
own generator seeded by (seed, j), so an image's map depends neither on the batch size nor on the other images.

Guided Backprop without touching the model: a ``TorchFunctionMode`` (thread-local in PyTorch) sees every ReLU
call of this thread's forward pass (``nn.ReLU`` modules, reused or in-place, and ``F.relu``) and hooks the
output tensor so its incoming gradient is clamped at 0; ReLU's own backward then masks by the forward sign,
which together is the guided rule ``grad * (x > 0) * (grad > 0)``. Swapping modules (pytorch-grad-cam), module
backward hooks (Captum) or flipping ``inplace`` flags would change the model shared with other threads, and a
deep copy per call costs a copy of every weight; tensor hooks live and die with this call's graph.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from core.explain.base import BASELINE_HELP, Context, Param, baseline, batches, register
from core.explain.cam import LayerPass, combine, grad_cam_weights, target_logits
from core.hooks import capture


def _rows_gradient(ctx: Context, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d(target logit)/d(input) for a batch of rows (one forward and one backward to the input)."""
    xr = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        score = target_logits(ctx.model(xr), targets).sum()
    return torch.autograd.grad(score, xr)[0]


RowInput = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _sampled_gradients(ctx: Context, x: torch.Tensor, targets: torch.Tensor, n: int, row_input: RowInput,
                       row_weight: torch.Tensor) -> torch.Tensor:
    """sum_j row_weight[j] * grad f(row_input(i, j)) for every image i, over n samples per image, batched.

    ``row_input`` gets the image and sample indices of a batch of rows (CPU tensors, so reading them never waits
    for the device) and returns the inputs (rows x C x H x W on the device).
    """
    total = len(x) * n
    acc = torch.zeros_like(x)
    for rows in batches(total, ctx.batch_size):
        idx = torch.arange(rows.start, rows.stop)
        image, sample = idx // n, idx % n
        on_device = image.to(x.device)
        grads = _rows_gradient(ctx, row_input(image, sample), targets[on_device])
        acc.index_add_(0, on_device, grads * row_weight[sample.to(x.device)].view(-1, 1, 1, 1))
        ctx.report(rows.stop / total)
    return acc


@register("saliency", "Saliency (vanilla gradient)", "gradient",
          "How much a small change of each pixel changes the class score: |d score / d pixel|, maximum over "
          "channels (Simonyan et al. 2014). Sharp but noisy.",
          own_forward=True)
def saliency(ctx: Context, x: torch.Tensor, _targets: None) -> torch.Tensor:
    """max_c |dS/dx_c| per pixel (N x H x W)."""
    return _gradient_maps(ctx, x, guided=False)


def _gradient_maps(ctx: Context, x: torch.Tensor, guided: bool) -> torch.Tensor:
    """max_c |gradient| (plain or guided) of each image's target logit w.r.t. the input, one pass per batch."""
    maps = []
    for rows in batches(len(x), ctx.batch_size):
        xr = x[rows].detach().requires_grad_(True)
        with GuidedReLU() if guided else nullcontext(), torch.enable_grad():
            logits = ctx.model(xr)
        score = target_logits(logits, ctx.resolve(logits, rows)).sum()
        maps.append(torch.autograd.grad(score, xr)[0].abs().amax(dim=1))
        ctx.report(rows.stop / len(x))
    return torch.cat(maps)


@register("smoothgrad", "SmoothGrad", "gradient",
          "Average of the gradient over noisy copies of the image (Smilkov et al. 2017): the gradient of a "
          "smoothed score, much less noisy than plain saliency; shown as |mean gradient|, maximum over channels.",
          stochastic=True,
          params=[
              Param("n_samples", "Noisy samples", "int", 25, 1, 500, 1, help="Noisy copies averaged (cost grows "
                    "linearly)."),
              Param("noise", "Noise level", "float", 0.15, 0.0, 1.0, 0.01,
                    help="Noise standard deviation as a fraction of the image's intensity range (paper: 0.1-0.2)."),
          ])
def smoothgrad(ctx: Context, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """|mean_j grad f(x + sigma * eps_j)|, max over channels (N x H x W)."""
    n = ctx.params["n_samples"]
    sigma = ctx.params["noise"] * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))

    def noisy(image: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        eps = torch.stack([torch.randn(x.shape[1:], generator=ctx.rng("smoothgrad", j), device=x.device,
                                       dtype=x.dtype) for j in sample.tolist()])
        return x[image] + sigma[image].view(-1, 1, 1, 1) * eps

    mean_grad = _sampled_gradients(ctx, x, targets, n, noisy, torch.full((n,), 1.0 / n, device=x.device))
    return mean_grad.abs().amax(dim=1)


IG_BASELINES = ("black", "zero", "blur", "uniform")


@register("integrated_gradients", "Integrated Gradients", "gradient",
          "Gradients integrated along the straight path from a baseline image to the image, times (image - "
          "baseline) (Sundararajan et al. 2017); signed, summed over channels. The attributions add up to "
          "score(image) - score(baseline) (completeness), which the result reports.",
          signed=True, stochastic=True, own_forward=True,
          params=[
              Param("steps", "Integration steps", "int", 64, 2, 512, 1,
                    help="Gauss-Legendre nodes on the path (cost grows linearly). 64 keep the completeness gap within "
                         "about 2% on the bundled model from a black baseline (0.4-2.1% on six new-patient films); 32 "
                         "can leave up to 11%."),
              Param("baseline", "Baseline", "choice", "black", choices=IG_BASELINES,
                    help="; ".join(f"{k}: {BASELINE_HELP[k]}" for k in IG_BASELINES) + "."),
          ])
def integrated_gradients(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Signed IG maps (N x H x W) and, per image, the completeness check."""
    steps, n = ctx.params["steps"], len(x)
    base = baseline(ctx, x, ctx.params["baseline"])
    with torch.no_grad():  # both ends of the path in one pass: the prediction and the completeness check
        ends = torch.cat([ctx.model(r) for r in torch.cat([x, base]).split(ctx.batch_size)])
    targets = ctx.resolve(ends[:n])
    f_input, f_base = target_logits(ends[:n], targets), target_logits(ends[n:], targets)
    nodes, weights = np.polynomial.legendre.leggauss(steps)  # exact for polynomials of degree 2 * steps - 1
    alphas = torch.tensor((nodes + 1) / 2, device=x.device, dtype=x.dtype)
    path_weights = torch.tensor(weights / 2, device=x.device, dtype=x.dtype)

    def on_path(image: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return torch.lerp(base[image], x[image], alphas[step].view(-1, 1, 1, 1))

    attributions = (x - base) * _sampled_gradients(ctx, x, targets, steps, on_path, path_weights)
    totals = attributions.sum(dim=(1, 2, 3))
    extras = [{"score_input": float(fi), "score_baseline": float(fb), "attribution_sum": float(s),
               "completeness_gap": float(s - (fi - fb))}
              for fi, fb, s in zip(f_input.tolist(), f_base.tolist(), totals.tolist(), strict=True)]
    return attributions.sum(dim=1), extras


_RELUS = {torch.relu, torch.relu_, torch.nn.functional.relu, torch.Tensor.relu, torch.Tensor.relu_}


class GuidedReLU(TorchFunctionMode):
    """While active (``with GuidedReLU():``), outputs of ReLU calls get a gradient hook that drops negative
    gradients whenever ``guided`` is True at backward time (see the module docstring)."""

    def __init__(self, guided: bool = True) -> None:
        super().__init__()
        self.guided = guided

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        """Run ``func``; hook the output of ReLUs that are part of the autograd graph."""
        out = func(*args, **(kwargs or {}))
        if func in _RELUS and isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(self._clamp)
        return out

    def _clamp(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0) if self.guided else grad


@register("guided_backprop", "Guided Backprop", "gradient",
          "Gradient in which every ReLU also blocks negative gradients (Springenberg et al. 2015): crisp edges "
          "of what excites the network, but largely class-insensitive (see the sanity check); |value|, max over "
          "channels.",
          own_forward=True)
def guided_backprop(ctx: Context, x: torch.Tensor, _targets: None) -> torch.Tensor:
    """max_c |guided gradient| per pixel (N x H x W)."""
    return _gradient_maps(ctx, x, guided=True)


@register("guided_grad_cam", "Guided Grad-CAM", "gradient",
          "Guided Backprop multiplied by the upsampled Grad-CAM of the chosen layer (Selvaraju et al. 2017): "
          "fine detail, restricted to the class's regions; |value|, max over channels.",
          uses_layer=True, own_forward=True)
def guided_grad_cam(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict]]:
    """One forward pass; the plain gradient to the layer (Grad-CAM), then the guided gradient to the input."""
    maps, extras = [], []
    for rows in batches(len(x), ctx.batch_size):
        xr = x[rows].detach().requires_grad_(True)
        mode = GuidedReLU(guided=False)  # the hooks read the flag at backward time
        with capture(ctx.model, ctx.layer) as record, mode, torch.enable_grad():
            logits = ctx.model(xr)
        acts = record.require()
        targets = ctx.resolve(logits, rows)
        score = target_logits(logits, targets).sum()
        layer_grads = torch.autograd.grad(score, acts, retain_graph=True)[0]
        mode.guided = True
        guided = torch.autograd.grad(score, xr)[0]
        p = LayerPass(acts.detach(), layer_grads, targets, logits.detach())
        coarse, full = combine(p.activations, grad_cam_weights(ctx, p), tuple(x.shape[-2:]))
        maps.append((guided * full[:, None]).abs().amax(dim=1))
        extras += [{"layer_map": c.cpu().numpy()} for c in coarse]
        ctx.report(rows.stop / len(x))
    return torch.cat(maps), extras
