"""Effective receptive fields (Luo, Li, Urtasun & Zemel, NeurIPS 2016): the input gradient of one output unit,
and how concentrated it is next to the theoretical field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.lessons.receptive_field.arithmetic import UnitField


def effective_receptive_field(probe: nn.Module, inputs: torch.Tensor, unit: tuple[int, int]) -> np.ndarray:
    """Mean over inputs of |d unit / d input| (summed over channels), each input's map scaled to sum 1; runs on
    the device of ``probe`` and ``inputs``, returns a CPU array.

    The unit is the sum over channels at position ``unit`` of the probed node (Luo et al. put a gradient of 1
    at the centre of the output plane). Inputs for which the unit is dead (zero gradient) are skipped.
    """
    x = inputs.detach().clone().requires_grad_(True)
    out = probe(x)
    i, j = unit
    if not (0 <= i < out.shape[-2] and 0 <= j < out.shape[-1]):
        raise ValueError(f"Unit ({i}, {j}) is outside the {out.shape[-2]}×{out.shape[-1]} output.")
    (grad,) = torch.autograd.grad(out[:, :, i, j].sum(), x)
    maps = grad.detach().abs().sum(dim=1).double()  # N x H x W
    totals = maps.sum(dim=(1, 2))
    alive = totals > 0
    if not bool(alive.any()):
        raise ValueError("The unit is dead for every input (zero gradient); pick another unit or layer.")
    return (maps[alive] / totals[alive, None, None]).mean(dim=0).cpu().numpy()


@dataclass(frozen=True)
class ERFSummary:
    """How concentrated an effective receptive field is, next to its theoretical box."""

    fraction: float  # share of the gradient mass the radius holds
    radius: float  # px around the theoretical centre that hold ``fraction`` of the mass
    inside_box: float  # share of the mass inside the theoretical field (1 up to rounding: gradients cannot leave it)
    size_ratio: float  # the disc's diameter over the theoretical field's side (padding included)


def mass_radius(erf: np.ndarray, centre: tuple[float, float], fraction: float) -> float:
    """Smallest radius around ``centre`` (row, col) whose disc holds ``fraction`` of the map's mass.

    Hand-written: a sort by distance and a cumulative sum; no library offers this radial quantile.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"The mass fraction must be in (0, 1], got {fraction}.")
    rows, cols = np.indices(erf.shape)
    dist = np.hypot(rows - centre[0], cols - centre[1]).ravel()
    order = np.argsort(dist, kind="stable")
    cum = np.cumsum(erf.ravel()[order])
    k = min(int(np.searchsorted(cum, fraction * cum[-1] * (1 - 1e-12))), cum.size - 1)
    return float(dist[order][k])


def summarise_erf(erf: np.ndarray, field: UnitField, fraction: float = 0.9) -> ERFSummary:
    """Radius holding ``fraction`` of the mass, mass inside the theoretical box, and diameter over field size."""
    radius = mass_radius(erf, field.centre, fraction)
    (r0, r1), (c0, c1) = field.clipped_rows, field.clipped_cols
    inside = float(erf[r0:r1 + 1, c0:c1 + 1].sum() / erf.sum())
    return ERFSummary(fraction, radius, inside, 2 * radius / (field.rows[1] - field.rows[0] + 1))
