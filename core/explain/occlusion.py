"""Occlusion sensitivity (Zeiler and Fergus 2014): slide a patch of baseline values over the image and record
how much the target logit drops; each pixel gets the mean drop of the patches that cover it (as Captum).

(image, patch position) pairs are flattened into rows; each batch of rows is built on the model's device with
broadcast comparisons (no per-patch Python work, no host round-trips) and evaluated in one forward pass; the
per-pixel averages come from the grid of patch drops with two small matrix products at the end.
"""

from __future__ import annotations

from typing import Any

import torch

from core.explain.base import BASELINE_HELP, Context, Param, baseline, batches, register
from core.explain.cam import target_logits

OCCLUSION_BASELINES = ("zero", "mean", "blur")


def starts(length: int, patch: int, stride: int) -> list[int]:
    """Patch start offsets along one axis: every ``stride`` pixels, plus one flush with the far edge so every
    pixel is covered."""
    if patch > length:
        raise ValueError(f"patch ({patch} px) is larger than the image ({length} px).")
    out = list(range(0, length - patch + 1, stride))
    return out if out[-1] + patch == length else [*out, length - patch]


def _span_masks(first: torch.Tensor, patch: int, length: int) -> torch.Tensor:
    """B x length booleans: True on [first, first + patch) for each row."""
    grid = torch.arange(length, device=first.device)
    return (grid >= first[:, None]) & (grid < first[:, None] + patch)


@register("occlusion", "Occlusion", "perturbation",
          "Drop of the class score when a square patch is replaced by a baseline, averaged over the patches "
          "covering each pixel (Zeiler and Fergus 2014). Signed: negative where hiding raises the score.",
          signed=True,
          params=[
              Param("patch", "Patch size (px)", "int", 20, 2, 512, 1, help="Side of the occluding square, in "
                    "model-input pixels."),
              Param("stride", "Stride (px)", "int", 10, 1, 512, 1, help="Step between patches; cost grows with "
                    "(size / stride)^2."),
              Param("baseline", "Fill", "choice", "zero", choices=OCCLUSION_BASELINES,
                    help="; ".join(f"{k}: {BASELINE_HELP[k]}" for k in OCCLUSION_BASELINES) + "."),
          ])
def occlusion(ctx: Context, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Occlusion maps (N x H x W) plus, per image, the grid of patch drops."""
    patch, stride = ctx.params["patch"], ctx.params["stride"]
    n, _, h, w = x.shape
    ys = torch.tensor(starts(h, patch, stride), device=x.device)
    xs = torch.tensor(starts(w, patch, stride), device=x.device)
    positions = torch.cartesian_prod(ys, xs)
    per_image = len(positions)
    fill = baseline(ctx, x, ctx.params["baseline"])
    clean = target_logits(ctx.outcome(n)[1].to(x.device), targets)
    drops = torch.empty(n * per_image, device=x.device)
    total = n * per_image
    with torch.no_grad():
        for rows in batches(total, ctx.batch_size):
            idx = torch.arange(rows.start, rows.stop, device=x.device)
            image, pos = idx // per_image, positions[idx % per_image]
            # B x 1 x H x W patch masks as outer products; lerp is exact at weights 0 and 1
            inside = (_span_masks(pos[:, 0], patch, h).to(x.dtype)[:, None, :, None]
                      * _span_masks(pos[:, 1], patch, w).to(x.dtype)[:, None, None, :])
            occluded = torch.lerp(x, fill, inside) if n == 1 else torch.lerp(x[image], fill[image], inside)
            drops[rows] = clean[image] - target_logits(ctx.model(occluded), targets[image]).float()
            ctx.report(rows.stop / total)
    # Each pixel's mean over the patches covering it, without a per-patch H x W accumulation: coverage is a
    # product of row and column intervals, so the sum is cover_y @ drops @ cover_x^T per image.
    cover_y = _span_masks(ys, patch, h).T.float()  # H x ny
    cover_x = _span_masks(xs, patch, w).T.float()  # W x nx
    grids = drops.view(n, len(ys), len(xs))
    heat = cover_y @ grids @ cover_x.T / (cover_y.sum(1)[:, None] * cover_x.sum(1)[None, :])
    return heat, [{"patch_drops": g, "positions": per_image} for g in grids.cpu().numpy()]
