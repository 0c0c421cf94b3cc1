"""Pooling forward and backward, and the backward pass of a strided convolution, step by step.

The forward pass and the gradient routing are written as explicit loops over windows because each
window's max, its argmax and every running sum are what the lesson shows; the tests check them against
``max_pool2d`` / ``avg_pool2d`` and autograd. The strided-convolution walkthrough builds the input
gradient the textbook way (dilate the upstream gradient, pad it, correlate with the flipped kernel) using
``scipy.signal.correlate2d``, and checks it by central finite differences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import correlate2d

from core.lessons.conv import fmt, output_size

PoolMode = Literal["max", "avg"]
DEFAULT_GRID = np.array([[2, 4, 8, 3, 6],
                         [9, 3, 4, 2, 5],
                         [5, 4, 6, 3, 1],
                         [2, 3, 1, 3, 4],
                         [2, 7, 4, 5, 7]], dtype=np.float64)
TIES_GRID = np.array([[1, 5, 5, 0],  # every 2x2 stride-2 window has its maximum twice
                      [5, 2, 1, 5],
                      [0, 0, 3, 3],
                      [3, 3, 1, 0]], dtype=np.float64)
TIE_RULE = ("When several entries of a window share the maximum, the whole gradient goes to one of them. "
            "PyTorch's max_pool2d on the CPU keeps the first maximum it meets scanning the window row by row "
            "(top-left first), so that entry gets the gradient and the tied ones get nothing; the test suite "
            "checks this. Mathematically max is not differentiable at a tie: any split that sums to the "
            "upstream value is a valid subgradient, and libraries simply pick one.")


# -------------------------------------------------------------------------------------------------- forward
@dataclass(frozen=True)
class PoolWindow:
    """One pooling window: where it sits in the input, its output value and, for max, where that value came from."""

    out_row: int
    out_col: int
    rows: tuple[int, int]  # [start, stop)
    cols: tuple[int, int]
    value: float
    argmax: tuple[int, int] | None  # input (row, col) that receives the gradient; None for average pooling
    ties: tuple[tuple[int, int], ...]  # every input position equal to the max (length > 1 means a tie)

    def cells(self) -> list[tuple[int, int]]:
        """All input (row, col) positions inside the window, row by row."""
        return [(r, c) for r in range(*self.rows) for c in range(*self.cols)]


@dataclass(frozen=True)
class PoolForward:
    """The pooled output with every window, for showing and for routing gradients back."""

    x: np.ndarray
    output: np.ndarray
    windows: tuple[PoolWindow, ...]
    mode: PoolMode
    kernel: int
    stride: int

    def argmax_counts(self) -> np.ndarray:
        """How many windows picked each input position as their max (overlapping windows can share one)."""
        counts = np.zeros(self.x.shape, dtype=int)
        for win in self.windows:
            if win.argmax is not None:
                counts[win.argmax] += 1
        return counts


def pool_forward(x: np.ndarray, kernel: int, stride: int, mode: PoolMode = "max") -> PoolForward:
    """Max or average pooling without padding; for max, record the first maximum in row-major order."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("Pooling here works on one 2-D grid.")
    if mode not in ("max", "avg"):
        raise ValueError(f"Unknown pooling mode {mode!r}; choose max or avg.")
    h_out, w_out = output_size(x.shape[0], kernel, stride), output_size(x.shape[1], kernel, stride)
    out = np.empty((h_out, w_out))
    windows = []
    for i in range(h_out):
        for j in range(w_out):
            rows, cols = (i * stride, i * stride + kernel), (j * stride, j * stride + kernel)
            patch = x[rows[0]:rows[1], cols[0]:cols[1]]
            if mode == "max":
                value = float(patch.max())
                flat = int(np.argmax(patch))  # first occurrence in row-major order, like PyTorch on the CPU
                argmax = (rows[0] + flat // kernel, cols[0] + flat % kernel)
                ties = tuple((rows[0] + int(r), cols[0] + int(c)) for r, c in np.argwhere(patch == value))
            else:
                value, argmax, ties = float(patch.mean()), None, ()
            out[i, j] = value
            windows.append(PoolWindow(i, j, rows, cols, value, argmax, ties))
    return PoolForward(x, out, tuple(windows), mode, kernel, stride)


# ------------------------------------------------------------------------------------------------- backward
@dataclass(frozen=True)
class RouteStep:
    """One window's share of the backward pass and the input gradient after adding it."""

    window: PoolWindow
    upstream: float
    shares: tuple[tuple[int, int, float], ...]  # (row, col, amount added)
    grad_after: np.ndarray

    def text(self, before: np.ndarray) -> str:
        """E.g. 'window (0, 1): upstream 2 -> dx[1, 0] += 2: 3 + 2 = 5'."""
        parts = [f"dx[{r}, {c}] += {fmt(a)}: {fmt(before[r, c])} + {fmt(a)} = {fmt(before[r, c] + a)}"
                 for r, c, a in self.shares]
        route = "; ".join(parts) if len(parts) <= 2 else f"{len(parts)} cells each += {fmt(self.shares[0][2])}"
        return f"window ({self.window.out_row}, {self.window.out_col}): upstream {fmt(self.upstream)} → {route}"


def pool_backward(forward: PoolForward, upstream: np.ndarray) -> list[RouteStep]:
    """Route each upstream value back: all of it to the argmax (max) or equal shares to every cell (avg).

    Overlapping windows add into the same input cell, so the input gradient is a running sum.
    """
    g = np.asarray(upstream, dtype=np.float64)
    if g.shape != forward.output.shape:
        raise ValueError(f"The upstream gradient must match the pooled output: {forward.output.shape[0]} x "
                         f"{forward.output.shape[1]}, got {g.shape[0]} x {g.shape[1] if g.ndim > 1 else 1}.")
    grad = np.zeros_like(forward.x)
    steps = []
    for win in forward.windows:
        up = float(g[win.out_row, win.out_col])
        if win.argmax is not None:
            shares = ((*win.argmax, up),)
        else:
            shares = tuple((r, c, up / forward.kernel**2) for r, c in win.cells())
        for r, c, amount in shares:
            grad[r, c] += amount
        steps.append(RouteStep(win, up, shares, grad.copy()))
    return steps


def tied_windows(forward: PoolForward) -> list[PoolWindow]:
    """Max-pooling windows whose maximum appears more than once."""
    return [w for w in forward.windows if len(w.ties) > 1]


def torch_reference(x: np.ndarray, kernel: int, stride: int, mode: PoolMode, upstream: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's pooled output and input gradient (autograd of Σ upstream·pool(x)), for the on-screen check."""
    xt = torch.tensor(np.asarray(x, dtype=np.float64))[None, None].requires_grad_()
    pool = F.max_pool2d if mode == "max" else F.avg_pool2d
    out = pool(xt, kernel, stride)
    (out * torch.tensor(np.asarray(upstream, dtype=np.float64))[None, None]).sum().backward()
    return out[0, 0].detach().numpy(), xt.grad[0, 0].numpy()


# ------------------------------------------------------------------------------ strided-convolution backward
@dataclass(frozen=True)
class StridedConvBackward:
    """Forward y = x ⋆ w (stride s, no padding) and, for loss L = Σ g·y, the gradients built step by step."""

    x: np.ndarray
    weight: np.ndarray
    stride: int
    upstream: np.ndarray
    output: np.ndarray
    dilated_upstream: np.ndarray  # s-1 zeros between entries, plus zero rows/cols for input never reached
    padded_upstream: np.ndarray  # dilated upstream with k-1 zeros on every side
    flipped_kernel: np.ndarray  # w rotated by 180 degrees
    grad_input: np.ndarray
    grad_weight: np.ndarray

    @property
    def uncovered(self) -> int:
        """Rows (and columns) at the bottom/right that no window reaches: their gradient is zero."""
        return self.dilated_upstream.shape[0] - ((self.upstream.shape[0] - 1) * self.stride + 1)


def strided_conv_forward(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Cross-correlation with stride: every s-th position of the 'valid' correlation."""
    return correlate2d(np.asarray(x, np.float64), np.asarray(weight, np.float64), mode="valid")[::stride, ::stride]


def dilate(g: np.ndarray, stride: int) -> np.ndarray:
    """Insert stride-1 zeros between neighbouring entries (the strided positions the forward pass skipped)."""
    g = np.asarray(g, dtype=np.float64)
    out = np.zeros(((g.shape[0] - 1) * stride + 1, (g.shape[1] - 1) * stride + 1))
    out[::stride, ::stride] = g
    return out


def strided_conv_backward(x: np.ndarray, weight: np.ndarray, upstream: np.ndarray, stride: int
                          ) -> StridedConvBackward:
    """dL/dx = full correlation of the dilated upstream gradient with the flipped kernel; dL/dw = x ⋆ dilated g."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    g = np.asarray(upstream, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != x.shape[1] or w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError("This walkthrough uses a square input and a square kernel.")
    y = strided_conv_forward(x, w, stride)
    if g.shape != y.shape:
        raise ValueError(f"The upstream gradient must be {y.shape[0]} x {y.shape[1]}, like the output.")
    n, k = x.shape[0], w.shape[0]
    dilated = dilate(g, stride)
    extra = (n - k + 1) - dilated.shape[0]  # windows never reach the last rows/cols when (n - k) % s != 0
    dilated = np.pad(dilated, ((0, extra), (0, extra)))
    padded = np.pad(dilated, k - 1)
    flipped = w[::-1, ::-1]
    grad_input = correlate2d(padded, flipped, mode="valid")
    grad_weight = correlate2d(x, dilated, mode="valid")
    return StridedConvBackward(x, w, stride, g, y, dilated, padded, flipped.copy(), grad_input, grad_weight)


@dataclass(frozen=True)
class FiniteDifferenceCheck:
    """Central-difference gradients of L = Σ g·y and their largest disagreement with the analytic ones."""

    grad_input: np.ndarray
    grad_weight: np.ndarray
    max_error_input: float
    max_error_weight: float


def finite_difference_check(result: StridedConvBackward, eps: float = 1e-3) -> FiniteDifferenceCheck:
    """Nudge each input and weight by ±eps, rerun the forward pass, and compare (L(+) - L(-)) / 2eps."""

    def numeric(param: np.ndarray, loss: Callable[[np.ndarray], float]) -> np.ndarray:
        grad = np.zeros_like(param)
        for idx in np.ndindex(param.shape):
            plus, minus = param.copy(), param.copy()
            plus[idx] += eps
            minus[idx] -= eps
            grad[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        return grad

    g, s = result.upstream, result.stride
    gx = numeric(result.x, lambda x: float(np.sum(g * strided_conv_forward(x, result.weight, s))))
    gw = numeric(result.weight, lambda w: float(np.sum(g * strided_conv_forward(result.x, w, s))))
    return FiniteDifferenceCheck(gx, gw, float(np.abs(gx - result.grad_input).max()),
                                 float(np.abs(gw - result.grad_weight).max()))


def autograd_max_error(result: StridedConvBackward) -> float:
    """Largest gap between the walkthrough's gradients and ``conv2d`` + autograd for the same x, w, g and stride."""
    xt = torch.tensor(result.x)[None, None].requires_grad_()
    wt = torch.tensor(result.weight)[None, None].requires_grad_()
    y = F.conv2d(xt, wt, stride=result.stride)
    (y * torch.tensor(result.upstream)[None, None]).sum().backward()
    return float(max(np.abs(xt.grad[0, 0].numpy() - result.grad_input).max(),
                     np.abs(wt.grad[0, 0].numpy() - result.grad_weight).max()))


def strided_example(n: int = 5, k: int = 3, stride: int = 2, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Seeded small-integer input n x n, kernel k x k and upstream gradient for the walkthrough."""
    rng = np.random.default_rng(seed)
    m = output_size(n, k, stride)
    return (rng.integers(0, 6, size=(n, n)).astype(np.float64), rng.integers(-2, 3, size=(k, k)).astype(np.float64),
            rng.integers(1, 4, size=(m, m)).astype(np.float64))
