"""Activation functions with their derivatives written in closed form, saturation, softmax and depth.

The derivatives are coded from their formulas (not autograd) because the formulas are the lesson; the
tests check each against ``torch.autograd``. Special functions come from SciPy (``expit``, ``ndtr``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit, ndtr
from scipy.special import softmax as scipy_softmax

ArrayFn = Callable[[np.ndarray], np.ndarray]
SQRT_2PI = np.sqrt(2.0 * np.pi)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: value and derivative in NumPy, the torch equivalent, and formulas in LaTeX."""

    name: str
    f: ArrayFn
    df: ArrayFn
    torch_fn: Callable[[torch.Tensor], torch.Tensor]
    formula: str
    derivative: str
    note: str


def _elu(alpha: float) -> tuple[ArrayFn, ArrayFn]:
    def f(x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))

    def df(x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0)))

    return f, df


def _softplus(beta: float) -> tuple[ArrayFn, ArrayFn]:
    def f(x: np.ndarray) -> np.ndarray:
        return np.logaddexp(0.0, beta * x) / beta

    def df(x: np.ndarray) -> np.ndarray:
        return expit(beta * x)

    return f, df


def activation(name: str, alpha: float = 0.01, elu_alpha: float = 1.0, beta: float = 1.0) -> Activation:
    """One activation by name; ``alpha`` is leaky ReLU's slope, ``elu_alpha`` ELU's floor, ``beta`` softplus's."""
    if name == "sigmoid":
        return Activation(name, expit, lambda x: expit(x) * (1 - expit(x)), torch.sigmoid,
                          r"\sigma(x) = \frac{1}{1 + e^{-x}}", r"\sigma'(x) = \sigma(x)\,(1 - \sigma(x)) \le 0.25",
                          "Saturates at both ends; its slope is never above 0.25, so gradients shrink at every layer.")
    if name == "tanh":
        return Activation(name, np.tanh, lambda x: 1 - np.tanh(x) ** 2, torch.tanh,
                          r"\tanh(x) = \frac{e^{x} - e^{-x}}{e^{x} + e^{-x}}", r"\tanh'(x) = 1 - \tanh^2(x) \le 1",
                          "Zero-centred sigmoid (tanh(x) = 2σ(2x) − 1); slope 1 at 0 but saturates for |x| ≳ 2.")
    if name == "ReLU":
        # PyTorch defines the derivative at exactly 0 as 0; the tests check this convention.
        return Activation(name, lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(np.float64), F.relu,
                          r"\mathrm{ReLU}(x) = \max(0, x)", r"\mathrm{ReLU}'(x) = \begin{cases}1 & x > 0\\ 0 & x \le 0"
                          r"\end{cases}",
                          "Slope exactly 1 for every positive input: no shrinking on the active path. Units stuck "
                          "below 0 get no gradient at all ('dead ReLUs').")
    if name == "leaky ReLU":
        return Activation(name, lambda x: np.where(x > 0, x, alpha * x), lambda x: np.where(x > 0, 1.0, alpha),
                          lambda t: F.leaky_relu(t, alpha),
                          rf"\mathrm{{LReLU}}(x) = \begin{{cases}}x & x > 0\\ {alpha:g}\,x & x \le 0\end{{cases}}",
                          rf"\mathrm{{LReLU}}'(x) = \begin{{cases}}1 & x > 0\\ {alpha:g} & x \le 0\end{{cases}}",
                          "A small slope for negative inputs keeps some gradient flowing: no dead units.")
    if name == "ELU":
        f, df = _elu(elu_alpha)
        return Activation(name, f, df, lambda t: F.elu(t, elu_alpha),
                          rf"\mathrm{{ELU}}(x) = \begin{{cases}}x & x > 0\\ {elu_alpha:g}\,(e^{{x}} - 1) & x \le 0"
                          r"\end{cases}",
                          rf"\mathrm{{ELU}}'(x) = \begin{{cases}}1 & x > 0\\ {elu_alpha:g}\,e^{{x}} & x \le 0"
                          r"\end{cases}",
                          "Like ReLU for x > 0; smooth negative part saturating at −α pushes mean activations to 0.")
    if name == "softplus":
        f, df = _softplus(beta)
        # PyTorch's default threshold=20 turns softplus into x (slope exactly 1) above βx = 20, a 2e-9 shortcut;
        # 50 keeps torch on the exact formula over any plotted range.
        return Activation(name, f, df, lambda t: F.softplus(t, beta=beta, threshold=50.0),
                          rf"\mathrm{{softplus}}(x) = \tfrac{{1}}{{{beta:g}}}\log(1 + e^{{{beta:g}x}})",
                          rf"\mathrm{{softplus}}'(x) = \sigma({beta:g}x)",
                          "A smooth ReLU: its derivative is the sigmoid, so it saturates only on the left.")
    if name == "SiLU / swish":
        return Activation(name, lambda x: x * expit(x), lambda x: expit(x) * (1 + x * (1 - expit(x))), F.silu,
                          r"\mathrm{SiLU}(x) = x\,\sigma(x)",
                          r"\mathrm{SiLU}'(x) = \sigma(x)\,\bigl(1 + x\,(1 - \sigma(x))\bigr)",
                          "Smooth, non-monotonic (dips to −0.28 near x = −1.28); used in EfficientNet.")
    if name == "GELU":
        return Activation(name, lambda x: x * ndtr(x), lambda x: ndtr(x) + x * np.exp(-0.5 * x**2) / SQRT_2PI,
                          F.gelu, r"\mathrm{GELU}(x) = x\,\Phi(x)",
                          r"\mathrm{GELU}'(x) = \Phi(x) + x\,\varphi(x),\quad \varphi(x) = \tfrac{1}{\sqrt{2\pi}}"
                          r"e^{-x^2/2}",
                          "x times the standard normal CDF Φ (exact form; a tanh approximation is also common).")
    raise ValueError(f"Unknown activation {name!r}; choose one of {', '.join(NAMES)}.")


NAMES: tuple[str, ...] = ("sigmoid", "tanh", "ReLU", "leaky ReLU", "ELU", "softplus", "SiLU / swish", "GELU")


def saturation_intervals(act: Activation, lo: float = -6.0, hi: float = 6.0, threshold: float = 0.05,
                         points: int = 2401) -> list[tuple[float, float]]:
    """Stretches of [lo, hi] where |f'(x)| < threshold: inputs there pass almost no gradient back."""
    x = np.linspace(lo, hi, points)
    flat = np.abs(act.df(x)) < threshold
    edges = np.flatnonzero(np.diff(flat.astype(int)))
    starts = [0, *(edges + 1)]
    stops = [*(edges + 1), len(x)]
    return [(float(x[a]), float(x[b - 1])) for a, b in zip(starts, stops, strict=True) if flat[a]]


# ------------------------------------------------------------------------------------------------- softmax
def parse_numbers(text: str, max_count: int = 20) -> np.ndarray:
    """Numbers separated by commas or spaces, e.g. '2, 1, 0.1'; a ValueError names anything that is not one."""
    pieces = [p for p in text.replace(",", " ").split() if p]
    if not 2 <= len(pieces) <= max_count:
        raise ValueError(f"Enter between 2 and {max_count} numbers separated by commas (got {len(pieces)}).")
    values = []
    for piece in pieces:
        try:
            values.append(float(piece))
        except ValueError:
            raise ValueError(f"{piece!r} is not a number.") from None
    arr = np.array(values)
    if not np.all(np.isfinite(arr)):
        raise ValueError("Logits must be finite numbers.")
    return arr


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(z / T): T < 1 sharpens towards the arg max, T > 1 flattens towards uniform."""
    if temperature <= 0:
        raise ValueError("Temperature must be positive.")
    return scipy_softmax(np.asarray(z, dtype=np.float64) / temperature)


def softmax_jacobian(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """∂p_i/∂z_j = p_i (δ_ij − p_j) / T, written out from the quotient rule."""
    p = softmax(z, temperature)
    return (np.diag(p) - np.outer(p, p)) / temperature


def entropy_bits(p: np.ndarray) -> float:
    """Shannon entropy in bits: 0 for a one-hot distribution, log2(n) for uniform."""
    p = np.asarray(p, dtype=np.float64)
    nz = p[p > 0]
    return float(-(nz * np.log2(nz)).sum())


# ------------------------------------------------------------------------------------- vanishing gradients
@dataclass(frozen=True)
class ChainResult:
    """A scalar chain a_l = f(w_l a_{l-1} + b_l): pre-activations, local factors w_l f'(z_l), and their product."""

    z: np.ndarray
    local: np.ndarray
    product: np.ndarray  # product[l] = ∂a_{l+1}/∂a_0 = Π_{i≤l} w_i f'(z_i)


def scalar_chain(act: Activation, weights: np.ndarray, biases: np.ndarray, x0: float) -> ChainResult:
    """Forward through the chain and multiply the local derivatives (the chain rule, one factor per layer)."""
    weights = np.asarray(weights, dtype=np.float64)
    biases = np.asarray(biases, dtype=np.float64)
    z = np.empty_like(weights)
    a = float(x0)
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        z[layer] = w * a + b
        a = float(act.f(np.array(z[layer])))
    local = weights * act.df(z)
    return ChainResult(z, local, np.cumprod(local))


def chain_parameters(depth: int, weight: float = 1.0, bias_std: float = 1.0, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Equal weights and seeded N(0, bias_std²) biases for a scalar chain of ``depth`` layers."""
    rng = np.random.default_rng(seed)
    return np.full(depth, float(weight)), rng.normal(0.0, bias_std, size=depth)


def init_gain(name: str, alpha: float = 0.01) -> float:
    """The weight-scale gain an activation is usually paired with (``torch.nn.init.calculate_gain``).

    Sigmoid 1 and tanh 5/3 (Glorot-style), ReLU √2 (He); the smooth ReLU-likes borrow ReLU's gain.
    """
    if name in ("sigmoid", "tanh"):
        return torch.nn.init.calculate_gain(name)
    if name == "leaky ReLU":
        return torch.nn.init.calculate_gain("leaky_relu", alpha)
    return torch.nn.init.calculate_gain("relu")


def layer_gradient_norms(act: Activation, depth: int = 20, width: int = 64, batch: int = 128, seed: int = 0,
                         gain: float | None = None) -> np.ndarray:
    """‖∂L/∂W_l‖ for each layer of a freshly initialised MLP, first layer first, measured with autograd.

    Weights are N(0, gain²/width) with zero biases (He/Glorot-style when ``gain`` matches the activation);
    ``gain=None`` keeps PyTorch's default ``nn.Linear`` initialisation. L is the mean squared output.
    """
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's random stream
        torch.manual_seed(seed)
        layers = [torch.nn.Linear(width, width) for _ in range(depth)]
        if gain is not None:
            for layer in layers:
                torch.nn.init.normal_(layer.weight, 0.0, gain / np.sqrt(width))
                torch.nn.init.zeros_(layer.bias)
        h = torch.randn(batch, width)
    for layer in layers:
        h = act.torch_fn(layer(h))
    h.pow(2).mean().backward()
    return np.array([float(layer.weight.grad.norm()) for layer in layers])
