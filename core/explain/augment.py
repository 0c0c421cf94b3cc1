"""Test-time augmentation for any registered method: explain slightly shifted, rotated and intensity-jittered
copies of each image for the clean image's target, map every heatmap back onto the original pixel grid and
average them (pytorch-grad-cam's ``aug_smooth`` does this with flips and intensity factors for CAMs only).

Written here rather than taken from ttach (pytorch-grad-cam's helper): ttach offers flips, 90-degree rotations and
crops on CPU tensors; small sub-pixel shifts and rotations need interpolation both ways, and a map pixel whose
pre-image fell outside the augmented frame must not count (it would pull the border towards the padding). Every
augmentation is one affine warp on the model's device (``affine_grid`` / ``grid_sample``); the inverse warp
brings its map back, with the warped all-ones image as each pixel's weight. Augmentation 0 is the image itself,
so every pixel has weight. Draws come from a generator seeded by (seed, augmentation): reproducible, the same for
every image of a batch, and independent of the other images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.explain.base import Explanation, explain
from core.zoo import LoadedModel, Preprocessing


def _draws(seed: int, j: int, shift: float, rotate: float, jitter: float) -> tuple[float, float, float, float, float]:
    """Augmentation ``j``'s shift (dx, dy as fractions of the side), angle (degrees), contrast and brightness."""
    if j == 0:
        return 0.0, 0.0, 0.0, 1.0, 0.0
    state = np.random.SeedSequence([seed, 0x7A6, j]).generate_state(2)
    gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    u = (2 * torch.rand(5, generator=gen, dtype=torch.float64) - 1).tolist()  # five draws in [-1, 1]
    return shift * u[0], shift * u[1], rotate * u[2], 1 + jitter * u[3], jitter * u[4]


def _theta(dx: float, dy: float, degrees: float, h: int, w: int) -> torch.Tensor:
    """The 2 x 3 ``affine_grid`` matrix sampling the input at R(p) - t for output p (pixel-space rotation about the
    centre by ``degrees``, shift by (dx, dy) sides), in normalised coordinates."""
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    rot = torch.tensor([[cos, -sin * h / w], [sin * w / h, cos]], dtype=torch.float64)  # aspect-corrected
    shift = torch.tensor([-2 * dx, -2 * dy], dtype=torch.float64)
    return torch.cat([rot, (rot @ shift)[:, None]], dim=1)


def _inverse(theta: torch.Tensor) -> torch.Tensor:
    """The matrix of the inverse warp."""
    inv = torch.linalg.inv(theta[:, :2])
    return torch.cat([inv, (-inv @ theta[:, 2])[:, None]], dim=1)


def _warp(images: torch.Tensor, theta: torch.Tensor, padding: str) -> torch.Tensor:
    grid = F.affine_grid(theta.to(images)[None].expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def explain_augmented(model: LoadedModel | nn.Module, x: torch.Tensor, method: str,
                      target: int | Sequence[int] | None = None, *, augmentations: int = 8, shift: float = 0.05,
                      rotate: float = 5.0, intensity: float = 0.05, seed: int = 0, prep: Preprocessing | None = None,
                      **kwargs: Any) -> list[Explanation]:
    """``explain`` averaged over ``augmentations`` copies of each image (the first the image itself): shifts up to
    ``shift`` of the side, rotations up to ``rotate`` degrees, contrast and brightness jitter up to ``intensity``
    (of the intensity range; not named ``jitter``, meaningful perturbation's own parameter), all for the clean
    image's target. Other keywords go to ``explain``."""
    if augmentations < 1:
        raise ValueError(f"augmentations must be at least 1, got {augmentations}.")
    if not (0 <= shift <= 0.5 and 0 <= rotate <= 45 and 0 <= intensity <= 0.5):
        raise ValueError("shift must be in [0, 0.5], rotate in [0, 45] degrees and intensity in [0, 0.5].")
    started = time.perf_counter()
    prep = prep or (model.spec.preprocessing if isinstance(model, LoadedModel) else None)
    clean = explain(model, x, method, target, seed=seed, prep=prep, **kwargs)
    if augmentations == 1:
        return clean
    n, c, h, w = x.shape
    mean = torch.tensor(prep.mean if prep else (0.0,) * c, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std if prep else (1.0,) * c, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    thetas, copies = [], []
    for j in range(1, augmentations):
        dx, dy, degrees, contrast, brightness = _draws(seed, j, shift, rotate, intensity)
        theta = _theta(dx, dy, degrees, h, w)
        moved = _warp(x, theta, "reflection")
        # in pixel terms p' = contrast * p + brightness, with p = x * std + mean
        copies.append(contrast * moved + ((contrast - 1) * mean + brightness) / std)
        thetas.append(theta)
    targets = [e.target for e in clean] * (augmentations - 1)
    augmented = explain(model, torch.cat(copies), method, targets, seed=seed, prep=prep, **kwargs)
    total = torch.stack([torch.as_tensor(e.heatmap, dtype=torch.float64) for e in clean])[:, None]
    weight = torch.ones_like(total)
    ones = torch.ones_like(total)
    for j, theta in enumerate(thetas):
        maps = torch.stack([torch.as_tensor(e.heatmap, dtype=torch.float64) for e in augmented[j * n:(j + 1) * n]])
        back = _inverse(theta)
        valid = _warp(ones, back, "zeros")
        total += _warp(maps[:, None], back, "zeros")  # zero padding: already weighted by ``valid`` at the border
        weight += valid
    averaged = (total / weight)[:, 0].numpy().astype(np.float32)
    seconds = (time.perf_counter() - started) / n
    settings = {"augmentations": augmentations, "shift": shift, "rotate": rotate, "intensity": intensity, "seed": seed}
    for i, e in enumerate(clean):  # the method's own parameters stay as they are: a sanity check can rerun them
        e.extras = {**e.extras, "augment": settings, "unaugmented": e.heatmap}
        e.heatmap, e.seconds = averaged[i], seconds
    return clean
