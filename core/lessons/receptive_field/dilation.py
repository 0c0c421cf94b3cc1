"""The 1-D view: how dilation schedules grow a field, and how many paths reach the output from each unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from core.lessons.receptive_field.arithmetic import INPUT_FIELD, LayerSpec, stack_fields


def dilation_stack(schedule: str, depth: int, kernel: int = 3,
                   rate: int = 2) -> list[LayerSpec]:
    """Stride-1 convolutions with dilation 1, a constant ``rate``, or rate**l (Yu & Koltun 2016; WaveNet)."""
    if depth < 1:
        raise ValueError("Depth must be at least 1.")
    dilations = {"none": [1] * depth, "constant": [rate] * depth,
                 "exponential": [rate ** i for i in range(depth)]}[schedule]
    return [LayerSpec("conv", kernel, 1, 0, d) for d in dilations]


@dataclass(frozen=True)
class Contributions:
    """For the last unit of a 1-D stack: how many paths reach it from each unit of every layer."""

    counts: tuple[np.ndarray, ...]  # counts[l][u]: paths from unit u of layer l (layer 0 = input) to the output
    centres: tuple[np.ndarray, ...]  # input coordinate of the centre of each unit's field


def contributions_1d(layers: Sequence[LayerSpec]) -> Contributions:
    """Path counts in a 1-D copy of the stack without padding, measured as autograd through all-ones kernels.

    Padding only shifts fields, so it is dropped here; the input is exactly one receptive field long, so the
    last layer has a single unit. With all-ones kernels the gradient counts paths (float64 is exact here), which
    is the effective receptive field of a uniform linear network: binomial-like, with holes where dilation grids.
    """
    if not layers:
        raise ValueError("The stack is empty.")
    flat = [LayerSpec(la.kind, la.kernel, la.stride, 0, la.dilation) for la in layers]
    n = stack_fields(flat)[-1].size
    x = torch.zeros(1, 1, n, dtype=torch.float64, requires_grad=True)
    acts = [x]
    fields = [INPUT_FIELD]
    for layer in flat:
        ones = torch.ones(1, 1, layer.kernel, dtype=torch.float64)
        acts.append(F.conv1d(acts[-1], ones, stride=layer.stride, dilation=layer.dilation))
        fields.append(fields[-1].after(layer))
    if acts[-1].shape[-1] != 1:  # input length is one field, so exactly one output unit
        raise AssertionError("1-D stack did not reduce to one unit.")
    grads = torch.autograd.grad(acts[-1].sum(), acts)
    counts = (*(g[0, 0].numpy().round().astype(np.int64) for g in grads[:-1]), np.ones(1, dtype=np.int64))
    centres = tuple(np.array([f.centre(u) for u in range(a.shape[-1])]) for f, a in zip(fields, acts, strict=True))
    return Contributions(counts, centres)


DilationSchedule = Literal["none", "constant", "exponential"]
SCHEDULES: tuple[DilationSchedule, ...] = ("none", "constant", "exponential")


def growth_table(depth: int, kernel: int = 3, rate: int = 2) -> dict[str, list[int]]:
    """Receptive-field size after 1..depth layers for each dilation schedule."""
    return {s: [f.size for f in stack_fields(dilation_stack(s, depth, kernel, rate))] for s in SCHEDULES}
