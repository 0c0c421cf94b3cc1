"""LIME and Kernel SHAP on superpixels: one sampler, two weightings.

Both methods segment the image (scikit-image), switch superpixels on and off, and fit a linear model of the
target-class probability on the on/off pattern. They share everything except how a sampled pattern is weighted:
LIME uses an exponential kernel on the cosine distance to the full image and a weighted ridge; Kernel SHAP draws
coalition sizes from the Shapley kernel and solves the weighted least squares under the efficiency constraint
(values sum to f(image) - f(all hidden)). Perturbed images are built on the model's device in batches by indexing
the on/off pattern with the segment map, so the cost is the model's forwards plus a few per cent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from skimage.segmentation import felzenszwalb, quickshift, slic
from sklearn.linear_model import LinearRegression, Ridge

from core.explain.base import BASELINE_HELP, Context, Param, baseline, batches, register

SEGMENTERS = ("slic", "quickshift", "felzenszwalb")
HIDES = ("mean", "zero", "black", "blur")

# Defaults chosen by measurement (bench/superpixel_defaults.py on the bundled model: Spearman rho of superpixel
# weights against a 4,000-sample map of another seed). With 50 SLIC segments, 500 samples give rho >= 0.98 on
# six X-rays (median 0.99) for both methods, for about 1.7 s of model time at 300 img/s; 250 samples still gave
# rho >= 0.98 on three; 100 segments gave rho >= 0.97 at 500 and 1,000 samples.
SAMPLING_PARAMS = (
    Param("n_samples", "Samples", "int", 500, 50, 10000, 50,
          help="Perturbed images evaluated by the model (cost grows linearly)."),
    Param("segmenter", "Superpixels", "choice", "slic", choices=SEGMENTERS,
          help="scikit-image segmentation that defines the regions switched on and off."),
    Param("n_segments", "Number of superpixels (SLIC)", "int", 50, 4, 400, 1,
          help="Approximate number of SLIC regions; fewer regions give a coarser but steadier map."),
    Param("compactness", "Compactness (SLIC)", "float", 10.0, 0.5, 100.0, 0.5,
          help="Higher values make SLIC regions squarer, lower ones follow edges."),
    Param("kernel_size", "Kernel size (quickshift)", "float", 4.0, 1.0, 20.0, 0.5,
          help="Width of the Gaussian used by quickshift; larger gives fewer regions."),
    Param("max_dist", "Max distance (quickshift)", "float", 200.0, 1.0, 1000.0, 1.0,
          help="Cut-off distance of quickshift's tree; larger gives fewer regions."),
    Param("scale", "Scale (Felzenszwalb)", "float", 100.0, 1.0, 2000.0, 1.0,
          help="Felzenszwalb's scale; larger gives fewer, bigger regions."),
    Param("min_size", "Minimum size (Felzenszwalb)", "int", 50, 1, 2000, 1,
          help="Felzenszwalb merges regions smaller than this many pixels."),
    Param("hide", "Hide value", "choice", "mean", choices=HIDES,
          help="What replaces a hidden superpixel — mean: its own mean intensity (lime's default); "
               + "; ".join(f"{k}: {BASELINE_HELP[k]}" for k in HIDES[1:]) + "."),
    Param("top_k", "Top regions", "int", 5, 1, 50, 1, help="How many most positive / negative regions to list."),
)


@dataclass(frozen=True)
class Fit:
    """A linear surrogate of the target probability over superpixels."""

    weights: np.ndarray
    intercept: float
    r2: float


# ---------------------------------------------------------------- segmentation


def segmentation_image(x: torch.Tensor) -> np.ndarray:
    """Model input (C x H x W, normalised) -> H x W x 3 float image in [0, 1] for scikit-image.

    Each channel is min-max scaled, which undoes any per-channel normalisation; grey inputs are repeated to
    three channels so the colour-space defaults of SLIC and quickshift (CIELAB) mean the same for every model.
    """
    img = x.detach().float()
    lo = img.amin(dim=(1, 2), keepdim=True)
    hi = img.amax(dim=(1, 2), keepdim=True)
    img = ((img - lo) / (hi - lo).clamp_min(1e-12)).cpu().numpy()
    img = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3]
    return np.ascontiguousarray(np.moveaxis(img, 0, -1), dtype=np.float64)


def segment_input(x: torch.Tensor, params: Mapping[str, Any], seed: int) -> np.ndarray:
    """Superpixels of one model input (C x H x W) with a method's segmentation parameters."""
    return segment(segmentation_image(x), params["segmenter"], n_segments=params["n_segments"],
                   compactness=params["compactness"], kernel_size=params["kernel_size"],
                   max_dist=params["max_dist"], scale=params["scale"], min_size=params["min_size"], seed=seed)


def segment(image: np.ndarray, segmenter: str = "slic", *, n_segments: int = 50, compactness: float = 10.0,
            kernel_size: float = 4.0, max_dist: float = 200.0, scale: float = 100.0, min_size: int = 50,
            seed: int = 0) -> np.ndarray:
    """Superpixel labels 0..K-1 (H x W int64) of an H x W x 3 image in [0, 1]; deterministic for a seed."""
    if segmenter == "slic":
        labels = slic(image, n_segments=n_segments, compactness=compactness, start_label=0)
    elif segmenter == "quickshift":
        labels = quickshift(image, kernel_size=kernel_size, max_dist=max_dist, ratio=0.2, rng=seed)
    elif segmenter == "felzenszwalb":
        labels = felzenszwalb(image, scale=scale, sigma=0.8, min_size=min_size)
    else:
        raise ValueError(f"segmenter must be one of {', '.join(SEGMENTERS)}, got {segmenter!r}.")
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)


# ---------------------------------------------------------------- sampling


def sample_coalitions(n: int, k: int, size_logweights: torch.Tensor, generator: torch.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` on/off patterns over ``k`` superpixels and the probability weight of each pattern.

    Row 0 is the full image and row 1 all hidden. The other rows draw a coalition size s in 1..k-1 with
    probability proportional to ``exp(size_logweights[s - 1])`` and then a uniform subset of that size, in
    consecutive complementary pairs (z, 1 - z), which cancels the even part of the sampling noise; their
    weights are 1. When every coalition fits in the budget they are all enumerated instead, each weighted by
    its exact probability, which makes the fit exact. Masks are drawn on the CPU so that a seed gives the same
    masks on every device.
    """
    if k < 2:
        raise ValueError(f"The segmentation found {k} superpixel(s); at least 2 are needed. Ask for more segments "
                         "or choose another segmenter.")
    ends = torch.stack([torch.ones(k), torch.zeros(k)])
    if k <= 20 and 2**k <= n:
        codes = torch.arange(1, 2**k - 1)
        masks = ((codes[:, None] >> torch.arange(k)) & 1).float()
        sizes = masks.sum(1).long()
        log_binom = torch.lgamma(torch.tensor(k + 1.0)) - torch.lgamma(sizes + 1.0) - torch.lgamma(k - sizes + 1.0)
        weights = torch.exp(size_logweights[sizes - 1] - log_binom)
        return torch.cat([ends, masks]), torch.cat([torch.ones(2), weights / weights.mean()])
    half = (n - 1) // 2
    sizes = torch.multinomial(torch.softmax(size_logweights, 0), half, replacement=True, generator=generator) + 1
    ranks = torch.rand(half, k, generator=generator).argsort(1).argsort(1)
    masks = (ranks < sizes[:, None]).float()
    pairs = torch.stack([masks, 1 - masks], dim=1).reshape(-1, k)  # z1, 1 - z1, z2, ...: prefixes stay paired
    return torch.cat([ends, pairs])[:n], torch.ones(n)


def lime_size_logweights(k: int) -> torch.Tensor:
    """Coalition sizes of LIME's sampler: every subset equally likely (each superpixel on with probability 1/2)."""
    s = torch.arange(1, k, dtype=torch.float64)
    return (math.lgamma(k + 1) - torch.lgamma(s + 1) - torch.lgamma(k - s + 1)).float()


def shapley_size_logweights(k: int) -> torch.Tensor:
    """Coalition sizes under the Shapley kernel: total weight of size s is (k - 1) / (s (k - s))."""
    s = torch.arange(1, k, dtype=torch.float64)
    return torch.log((k - 1) / (s * (k - s))).float()


# ---------------------------------------------------------------- perturbation and evaluation


def hidden_image(ctx: Context, x: torch.Tensor, segments: torch.Tensor, hide: str) -> torch.Tensor:
    """What the image (C x H x W) looks like with every superpixel hidden, on x's device."""
    if hide != "mean":
        return baseline(ctx, x[None], hide)[0]
    # each superpixel's own mean colour, as lime's default hide_color=None
    flat = segments.flatten()
    k = int(flat.max()) + 1
    sums = torch.zeros(x.shape[0], k, device=x.device, dtype=x.dtype).index_add_(1, flat, x.flatten(1))
    counts = torch.bincount(flat, minlength=k).to(x.dtype)
    return (sums / counts)[:, segments]


def evaluate_coalitions(ctx: Context, x: torch.Tensor, hidden: torch.Tensor, segments: torch.Tensor,
                        masks: torch.Tensor, target: int, image: int = 0, images: int = 1) -> torch.Tensor:
    """Target-class probability of the image with each mask's superpixels visible (others hidden).

    Perturbations are built on the device a batch at a time: gathering the on/off patterns through the
    segment map (``index_select``, several times faster than advanced indexing) gives pixel masks, and ``lerp``
    blends the hidden and the original image. Progress is reported after every batch as this image's share
    (``image`` of ``images``) of the whole call.
    """
    masks = masks.to(ctx.device, x.dtype)
    flat = segments.flatten()
    out = torch.empty(len(masks), device=ctx.device)
    spans = list(batches(len(masks), ctx.batch_size))
    with torch.inference_mode():
        for i, span in enumerate(spans):
            pixel_masks = masks[span].index_select(1, flat).view(-1, 1, *segments.shape)
            logits = ctx.model(torch.lerp(hidden, x, pixel_masks))
            out[span] = torch.softmax(logits.float(), dim=1)[:, target]
            ctx.report((image + (i + 1) / len(spans)) / images)
    return out


# ---------------------------------------------------------------- the two weightings


def fit_lime(masks: np.ndarray, scores: np.ndarray, sample_weights: np.ndarray, kernel_width: float,
             alpha: float) -> Fit:
    """Weighted ridge (scikit-learn) with lime's kernel sqrt(exp(-d^2 / w^2)), d = cosine distance to all-on."""
    on = masks.sum(1)
    distance = np.where(on > 0, 1 - np.sqrt(on / masks.shape[1]), 1.0)
    weights = np.sqrt(np.exp(-(distance**2) / kernel_width**2)) * sample_weights
    model = Ridge(alpha=alpha).fit(masks, scores, sample_weight=weights)
    return Fit(model.coef_.astype(np.float64), float(model.intercept_),
               float(model.score(masks, scores, sample_weight=weights)))


def fit_kernel_shap(masks: np.ndarray, scores: np.ndarray, sample_weights: np.ndarray) -> Fit:
    """Shapley-kernel weighted least squares with sum(values) = f(full) - f(empty) imposed exactly.

    Rows 0 and 1 are the full and the all-hidden image. The constraint is imposed by eliminating the last
    value (Lundberg & Lee 2017, as in shap's KernelExplainer); the coalitions were drawn from the Shapley
    kernel, so their regression weights are their sampling weights.
    """
    full, empty = float(scores[0]), float(scores[1])
    z, y, w = masks[2:], scores[2:], sample_weights[2:]
    design = z[:, :-1] - z[:, -1:]
    response = y - empty - z[:, -1] * (full - empty)
    head = LinearRegression(fit_intercept=False).fit(design, response, sample_weight=w).coef_
    values = np.append(head, (full - empty) - head.sum()).astype(np.float64)
    fitted = empty + z @ values
    mean = np.average(y, weights=w)
    r2 = 1 - np.average((y - fitted) ** 2, weights=w) / max(np.average((y - mean) ** 2, weights=w), 1e-30)
    return Fit(values, empty, float(r2))


def _explain(ctx: Context, x: torch.Tensor, targets: torch.Tensor, shap: bool
             ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    p = ctx.params
    maps, extras = [], []
    for i, target in enumerate(targets.tolist()):
        labels = segment_input(x[i], p, ctx.seed)
        k = int(labels.max()) + 1
        segments = torch.from_numpy(labels).to(ctx.device)
        generator = torch.Generator().manual_seed(ctx.seed)  # per image: a map never depends on its batch mates
        size_logweights = shapley_size_logweights(k) if shap else lime_size_logweights(k)
        masks, sample_weights = sample_coalitions(p["n_samples"], k, size_logweights, generator)
        hidden = hidden_image(ctx, x[i], segments, p["hide"])
        scores = evaluate_coalitions(ctx, x[i], hidden, segments, masks, target, i, len(targets))
        scores = scores.cpu().double().numpy()
        masks_np, weights_np = masks.double().numpy(), sample_weights.double().numpy()
        fit = (fit_kernel_shap(masks_np, scores, weights_np) if shap
               else fit_lime(masks_np, scores, weights_np, p["kernel_width"], p["ridge_alpha"]))
        maps.append(torch.as_tensor(fit.weights, dtype=torch.float32, device=ctx.device)[segments])
        order = np.argsort(-fit.weights, kind="stable")
        extras.append({
            "segments": labels,
            "weights": fit.weights,
            "top_positive": [int(j) for j in order[: p["top_k"]] if fit.weights[j] > 0],
            "top_negative": [int(j) for j in order[::-1][: p["top_k"]] if fit.weights[j] < 0],
            "intercept": fit.intercept,
            "r2": fit.r2,
            "score_full": float(scores[0]),
            "score_hidden": float(scores[1]),
            "n_segments": k,
            "n_evaluated": len(masks),
        })
    return torch.stack(maps), extras


@register(
    "lime", "LIME", "superpixels",
    "Switches superpixels on and off and fits a weighted linear model of the target-class probability "
    "(softmax); each region's weight is how much showing it raises that probability.",
    signed=True, stochastic=True,
    params=(*SAMPLING_PARAMS,
            Param("kernel_width", "Kernel width", "float", 0.25, 0.05, 5.0, 0.05,
                  help="Width of the exponential kernel on cosine distance; small values favour samples close "
                       "to the full image."),
            Param("ridge_alpha", "Ridge alpha", "float", 1.0, 0.0, 100.0, 0.1,
                  help="L2 penalty of the weighted ridge regression (lime's default is 1).")),
)
def lime(ctx: Context, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """LIME (Ribeiro et al. 2016) on superpixels, batched on the model's device."""
    return _explain(ctx, x, targets, shap=False)


@register(
    "kernel_shap", "Kernel SHAP", "superpixels",
    "Shapley values of superpixels for the target-class probability (softmax), estimated from coalitions "
    "drawn with the Shapley kernel; the region values add up to f(image) - f(all hidden).",
    signed=True, stochastic=True, params=SAMPLING_PARAMS,
)
def kernel_shap(ctx: Context, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Kernel SHAP (Lundberg & Lee 2017) on superpixels, sharing LIME's sampler and evaluation."""
    return _explain(ctx, x, targets, shap=True)
