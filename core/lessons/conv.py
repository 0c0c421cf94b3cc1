"""Convolution arithmetic for the classroom: output sizes, padding, kernels, one cell by hand, and costs.

Images are filtered with ``torch.nn.functional.pad`` + ``conv2d`` (what a network does). The step-through
arithmetic of one output cell is deliberately written out element by element, because seeing every
``x * w`` product is the lesson; the tests check it against ``conv2d``. Like every deep-learning library,
"convolution" here means cross-correlation: the kernel is not flipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from scipy.special import comb
from skimage.color import rgb2gray
from skimage.transform import resize
from skimage.util import img_as_float

PaddingMode = Literal["valid", "same", "full", "custom"]
PadFill = Literal["zeros", "reflect", "replicate", "circular"]
PADDING_MODES: tuple[PaddingMode, ...] = ("valid", "same", "full", "custom")
PAD_FILLS: tuple[PadFill, ...] = ("zeros", "reflect", "replicate", "circular")
_TORCH_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


# --------------------------------------------------------------------------------------------- output size
def output_size(n: int, k: int, s: int = 1, p: int = 0, d: int = 1, p_hi: int | None = None) -> int:
    """n_out = floor((n + p_lo + p_hi - d(k-1) - 1)/s) + 1, with p_lo = p and p_hi = p unless given."""
    total = n + p + (p if p_hi is None else p_hi)
    span = d * (k - 1) + 1
    if min(n, k, s, d) < 1 or p < 0 or (p_hi is not None and p_hi < 0):
        raise ValueError("Size, kernel, stride and dilation must be at least 1 and padding at least 0.")
    if span > total:
        raise ValueError(f"The dilated kernel spans {span} pixels but the padded input has only {total}: "
                         "no window fits. Reduce kernel size or dilation, or add padding.")
    return (total - span) // s + 1


@dataclass(frozen=True)
class SizeFormula:
    """An output size together with the formula that produced it, with the user's numbers substituted."""

    n_out: int
    text: str
    latex: str


def output_size_formula(n: int, k: int, s: int = 1, p: int = 0, d: int = 1, p_hi: int | None = None) -> SizeFormula:
    """The output size and its derivation, e.g. floor((28 + 2*1 - 1*(3-1) - 1)/2) + 1 = floor(25/2) + 1 = 13."""
    n_out = output_size(n, k, s, p, d, p_hi)
    hi = p if p_hi is None else p_hi
    numerator = n + p + hi - d * (k - 1) - 1
    pad_text, pad_tex = (f"2·{p}", rf"2\cdot {p}") if hi == p else (f"({p} + {hi})", f"({p} + {hi})")
    text = (f"n_out = ⌊({n} + {pad_text} − {d}·({k}−1) − 1) / {s}⌋ + 1 = ⌊{numerator}/{s}⌋ + 1 = {n_out}")
    latex = (rf"n_\text{{out}} = \left\lfloor \frac{{{n} + {pad_tex} - {d}\cdot({k}-1) - 1}}{{{s}}} \right\rfloor + 1"
             rf" = \left\lfloor \frac{{{numerator}}}{{{s}}} \right\rfloor + 1 = {n_out}")
    return SizeFormula(n_out, text, latex)


# ------------------------------------------------------------------------------------------------- padding
@dataclass(frozen=True)
class Padding:
    """Explicit padding on each side of a 2-D input."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def torch_pad(self) -> tuple[int, int, int, int]:
        """The order ``torch.nn.functional.pad`` expects for the last two dims: (left, right, top, bottom)."""
        return (self.left, self.right, self.top, self.bottom)


def _same_total(n: int, k: int, s: int, d: int) -> int:
    """Total padding that makes n_out = ceil(n/s) (the TensorFlow/Keras 'same'; PyTorch's for stride 1)."""
    return max((math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)


def resolve_padding(shape: tuple[int, int], k: int, s: int = 1, d: int = 1, mode: PaddingMode = "valid",
                    custom: int = 0) -> Padding:
    """Per-side padding for a padding mode; 'same' puts the odd pixel at the bottom/right like PyTorch and TF."""
    if mode == "valid":
        return Padding(0, 0, 0, 0)
    if mode == "full":
        full = d * (k - 1)
        return Padding(full, full, full, full)
    if mode == "custom":
        if custom < 0:
            raise ValueError("Padding cannot be negative.")
        return Padding(custom, custom, custom, custom)
    if mode == "same":
        th, tw = _same_total(shape[0], k, s, d), _same_total(shape[1], k, s, d)
        return Padding(th // 2, th - th // 2, tw // 2, tw - tw // 2)
    raise ValueError(f"Unknown padding mode {mode!r}; choose one of {', '.join(PADDING_MODES)}.")


def pad(x: np.ndarray, padding: Padding, fill: PadFill = "zeros") -> np.ndarray:
    """Pad the last two axes of ``x`` with ``torch.nn.functional.pad`` (zeros, reflect, replicate or circular)."""
    if fill not in _TORCH_PAD_MODE:
        raise ValueError(f"Unknown padding fill {fill!r}; choose one of {', '.join(PAD_FILLS)}.")
    h, w = x.shape[-2:]
    biggest_v, biggest_h = max(padding.top, padding.bottom), max(padding.left, padding.right)
    if fill == "reflect" and (biggest_v >= h or biggest_h >= w):
        raise ValueError(f"Reflect padding must be smaller than the input ({h} x {w}); asked for "
                         f"{biggest_v} rows / {biggest_h} columns. Use zeros or replicate, or pad less.")
    if fill == "circular" and (biggest_v > h or biggest_h > w):
        raise ValueError(f"Circular padding cannot exceed the input size ({h} x {w}); asked for "
                         f"{biggest_v} rows / {biggest_h} columns.")
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    batched = t.reshape(-1, 1, h, w) if t.ndim == 2 else t.reshape(1, -1, h, w)
    out = F.pad(batched, padding.torch_pad, mode=_TORCH_PAD_MODE[fill])
    return out.reshape(*x.shape[:-2], *out.shape[-2:]).numpy()


# -------------------------------------------------------------------------------------------- filtering
@dataclass(frozen=True)
class ConvSettings:
    """Everything that decides how a kernel slides over an input."""

    stride: int = 1
    dilation: int = 1
    padding: PaddingMode = "valid"
    custom_padding: int = 0
    fill: PadFill = "zeros"

    def padding_for(self, shape: tuple[int, int], k: int) -> Padding:
        """Resolve this setting's padding for an input of ``shape`` and a k x k kernel."""
        return resolve_padding(shape, k, self.stride, self.dilation, self.padding, self.custom_padding)

    def formulas(self, shape: tuple[int, int], k: int) -> tuple[SizeFormula, SizeFormula]:
        """Output-size derivations for height and width."""
        p = self.padding_for(shape, k)
        return (output_size_formula(shape[0], k, self.stride, p.top, self.dilation, p.bottom),
                output_size_formula(shape[1], k, self.stride, p.left, self.dilation, p.right))


def convolve(x: np.ndarray, weight: np.ndarray, settings: ConvSettings, bias: np.ndarray | float | None = None
             ) -> np.ndarray:
    """Filter with torch: ``x`` is H x W (one kernel k x k) or C x H x W (weights O x C x k x k, output O x H' x W')."""
    weight = np.asarray(weight, dtype=np.float64)
    single = np.ndim(x) == 2
    x3 = np.asarray(x, dtype=np.float64)[None] if single else np.asarray(x, dtype=np.float64)
    w4 = weight[None, None] if weight.ndim == 2 else weight
    if w4.shape[-1] != w4.shape[-2]:
        raise ValueError("Kernels must be square.")
    if w4.shape[1] != x3.shape[0]:
        raise ValueError(f"The kernel has {w4.shape[1]} channels but the input has {x3.shape[0]}.")
    k = w4.shape[-1]
    padding = settings.padding_for(x3.shape[-2:], k)
    for n, lo, hi in ((x3.shape[1], padding.top, padding.bottom), (x3.shape[2], padding.left, padding.right)):
        output_size(n, k, settings.stride, lo, settings.dilation, hi)  # a readable ValueError when no window fits
    padded = torch.as_tensor(pad(x3, padding, settings.fill))[None]
    b = None if bias is None else torch.tensor(np.broadcast_to(np.asarray(bias, np.float64), (w4.shape[0],)))
    with torch.no_grad():
        out = F.conv2d(padded, torch.tensor(w4), b, stride=settings.stride, dilation=settings.dilation)[0]
    return out[0].numpy() if single else out.numpy()


# ------------------------------------------------------------------------------------ one cell by hand
@dataclass(frozen=True)
class Term:
    """One product of the sum: input value at (channel, row, col) of the padded input times a kernel weight."""

    channel: int
    row: int
    col: int
    x: float
    w: float


@dataclass(frozen=True)
class CellArithmetic:
    """How one output value is computed: the window's positions, every product, the bias and the total."""

    out_row: int
    out_col: int
    terms: tuple[Term, ...]
    bias: float
    value: float

    @property
    def window(self) -> list[tuple[int, int]]:
        """Distinct (row, col) positions of the padded input the kernel touches."""
        return sorted({(t.row, t.col) for t in self.terms})

    def channel_sums(self) -> list[float]:
        """The partial sum contributed by each input channel."""
        n = max(t.channel for t in self.terms) + 1
        return [math.fsum(t.x * t.w for t in self.terms if t.channel == c) for c in range(n)]

    def text(self) -> str:
        """The whole sum written out: one line per input channel, then channel sums + bias = value."""
        sums = self.channel_sums()
        bias = f" + bias {fmt(self.bias)}" if self.bias or len(sums) > 1 else ""
        if len(sums) == 1:
            products = " + ".join(f"{fmt(t.x)}·{fmt(t.w)}" for t in self.terms)
            return f"out[{self.out_row}, {self.out_col}] = {products}{bias} = {fmt(self.value)}"
        lines = []
        for c, partial in enumerate(sums):
            products = " + ".join(f"{fmt(t.x)}·{fmt(t.w)}" for t in self.terms if t.channel == c)
            lines.append(f"channel {c}: {products} = {fmt(partial)}")
        lines.append(f"out[{self.out_row}, {self.out_col}] = {' + '.join(fmt(v) for v in sums)}{bias} = "
                     f"{fmt(self.value)}")
        return "\n".join(lines)


def fmt(v: float) -> str:
    """A number as a person writes it: integers without decimals, negatives in brackets, else 4 significant digits."""
    v = float(v)
    s = str(round(v)) if abs(v - round(v)) < 1e-9 else f"{v:.4g}"
    return f"({s})" if v < 0 and s != "0" else s


def cell_arithmetic(padded: np.ndarray, weight: np.ndarray, row: int, col: int, stride: int = 1,
                    dilation: int = 1, bias: float = 0.0) -> CellArithmetic:
    """Compute output (row, col) of a cross-correlation one product at a time (``padded`` is C x H x W)."""
    x = np.asarray(padded, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    x, w = (x[None], w[None]) if x.ndim == 2 else (x, w)
    k = w.shape[-1]
    h_out = (x.shape[1] - dilation * (k - 1) - 1) // stride + 1
    w_out = (x.shape[2] - dilation * (k - 1) - 1) // stride + 1
    if not (0 <= row < h_out and 0 <= col < w_out):
        raise ValueError(f"Output cell ({row}, {col}) is outside the {h_out} x {w_out} output.")
    # Written as explicit loops on purpose: this enumeration is exactly what the lesson displays.
    terms = []
    for c in range(x.shape[0]):
        for i in range(k):
            for j in range(k):
                r, q = row * stride + i * dilation, col * stride + j * dilation
                terms.append(Term(c, r, q, float(x[c, r, q]), float(w[c, i, j])))
    value = math.fsum(t.x * t.w for t in terms) + float(bias)
    return CellArithmetic(row, col, tuple(terms), float(bias), value)


def conv_by_hand(padded: np.ndarray, weights: np.ndarray, biases: np.ndarray | None = None, stride: int = 1,
                 dilation: int = 1) -> np.ndarray:
    """Every output cell via :func:`cell_arithmetic`: ``padded`` C x H x W, ``weights`` O x C x k x k -> O x H' x W'."""
    x = np.asarray(padded, dtype=np.float64)
    x = x[None] if x.ndim == 2 else x
    w = np.asarray(weights, dtype=np.float64)
    w = w[None, None] if w.ndim == 2 else w
    b = np.zeros(w.shape[0]) if biases is None else np.asarray(biases, dtype=np.float64)
    k = w.shape[-1]
    h_out = (x.shape[1] - dilation * (k - 1) - 1) // stride + 1
    w_out = (x.shape[2] - dilation * (k - 1) - 1) // stride + 1
    out = np.empty((w.shape[0], h_out, w_out))
    for o in range(w.shape[0]):
        for r in range(h_out):
            for c in range(w_out):
                out[o, r, c] = cell_arithmetic(x, w[o], r, c, stride, dilation, float(b[o])).value
    return out


# ------------------------------------------------------------------------------------------------ kernels
def _binomial(k: int) -> np.ndarray:
    """Row k-1 of Pascal's triangle: the discrete Gaussian used for blur kernels (3 -> 1 2 1)."""
    return np.array([comb(k - 1, i, exact=True) for i in range(k)], dtype=np.float64)


SIZED_PRESETS = ("identity", "box blur", "Gaussian")
FIXED_PRESETS: dict[str, np.ndarray] = {
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64),
    "Sobel x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64),
    "Sobel y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64),
    "Laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64),
    "emboss": np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64),
}
PRESETS: tuple[str, ...] = SIZED_PRESETS + tuple(FIXED_PRESETS)
PRESET_NOTES = {
    "identity": "A single 1 in the centre copies the input: a sanity check for padding and stride.",
    "box blur": "Every weight is 1/k²: each output is the plain average of its window.",
    "Gaussian": "Binomial weights (1 2 1 for 3x3) approximate a Gaussian: a smoother blur than the box.",
    "sharpen": "The centre minus its four neighbours, added back to the pixel: edges get crisper.",
    "Sobel x": "Right minus left, smoothed vertically: responds to vertical edges (horizontal gradient).",
    "Sobel y": "Bottom minus top, smoothed horizontally: responds to horizontal edges (vertical gradient).",
    "Laplacian": "Sum of neighbours minus four times the centre: zero on flat areas and ramps, strong at edges.",
    "emboss": "An asymmetric gradient: edges look raised, lit from the top-left.",
}


def kernel_preset(name: str, size: int = 3) -> np.ndarray:
    """A named k x k kernel; identity, box blur and Gaussian take any odd size, the rest are 3 x 3."""
    if name in FIXED_PRESETS:
        return FIXED_PRESETS[name].copy()
    if size < 1 or size % 2 == 0:
        raise ValueError("Kernel size must be a positive odd number so the kernel has a centre.")
    if name == "identity":
        kernel = np.zeros((size, size))
        kernel[size // 2, size // 2] = 1.0
        return kernel
    if name == "box blur":
        return np.full((size, size), 1.0 / size**2)
    if name == "Gaussian":
        g = np.outer(_binomial(size), _binomial(size))
        return g / g.sum()
    raise ValueError(f"Unknown kernel preset {name!r}; choose one of {', '.join(PRESETS)}.")


def for_display(out: np.ndarray, how: Literal["clip", "rescale", "abs"] = "rescale") -> np.ndarray:
    """Map a filter response to [0, 1] for showing as an image: clip, rescale min..max, or |x| / max|x|."""
    out = np.asarray(out, dtype=np.float64)
    if how == "clip":
        return np.clip(out, 0.0, 1.0)
    if how == "abs":
        peak = float(np.abs(out).max())
        return np.abs(out) / peak if peak > 0 else np.zeros_like(out)
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


SAMPLES: tuple[str, ...] = ("camera", "coins", "moon", "astronaut", "brick", "text", "chelsea", "page")


def sample_image(name: str) -> np.ndarray:
    """A scikit-image bundled sample (ships with the package, no download) as float in [0, 1]."""
    if name not in SAMPLES:
        raise ValueError(f"Unknown sample {name!r}; choose one of {', '.join(SAMPLES)}.")
    return img_as_float(getattr(skimage.data, name)())


def to_gray(image: np.ndarray, max_side: int) -> np.ndarray:
    """Grayscale float64, downscaled with anti-aliasing so the longer side is at most ``max_side``."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = rgb2gray(img[..., :3])
    scale = max_side / max(img.shape)
    if scale < 1:
        img = resize(img, (max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale))),
                     anti_aliasing=True)
    return img


def small_grid(size: int = 7, seed: int = 0, high: int = 9) -> np.ndarray:
    """A seeded grid of small integers for step-through, so every product is easy to check mentally."""
    return np.random.default_rng(seed).integers(0, high + 1, size=(size, size)).astype(np.float64)


# ------------------------------------------------------------------------------------ multi-channel case
@dataclass(frozen=True)
class MultiChannelExample:
    """The cs231n demo: input C x n x n, weights O x C x k x k, biases O, stride and zero padding."""

    x: np.ndarray
    weights: np.ndarray
    biases: np.ndarray
    stride: int
    padding: int

    @property
    def padded(self) -> np.ndarray:
        """The zero-padded input the filters actually slide over."""
        p = self.padding
        return pad(self.x, Padding(p, p, p, p), "zeros")

    def output(self) -> np.ndarray:
        """All output volumes, computed product by product."""
        return conv_by_hand(self.padded, self.weights, self.biases, self.stride)


def cs231n_example(seed: int = 0) -> MultiChannelExample:
    """5x5x3 input (values 0..2) padded by 1 to 7x7x3, two 3x3x3 filters (-1..1), biases 1 and 0, stride 2.

    The output is 3x3x2, as in the cs231n convolution demo; a seed draws new small integers.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(3, 5, 5)).astype(np.float64)
    weights = rng.integers(-1, 2, size=(2, 3, 3, 3)).astype(np.float64)
    return MultiChannelExample(x, weights, np.array([1.0, 0.0]), stride=2, padding=1)


# -------------------------------------------------------------------------------------------------- costs
@dataclass(frozen=True)
class ConvCost:
    """Learnable parameters and multiply-adds (per image) of a layer or block, with the formulas used."""

    name: str
    params: int
    macs: int
    params_formula: str
    macs_formula: str


def standard_conv_cost(c_in: int, c_out: int, k: int, h_out: int, w_out: int, bias: bool = True) -> ConvCost:
    """A k x k convolution from c_in to c_out channels: k²·c_in·c_out weights, that many MACs per output pixel."""
    weights = k * k * c_in * c_out
    b = c_out if bias else 0
    return ConvCost(f"standard {k}x{k}", weights + b, weights * h_out * w_out,
                    f"{k}·{k}·{c_in}·{c_out}" + (f" + {c_out}" if bias else ""),
                    f"{k}·{k}·{c_in}·{c_out}·{h_out}·{w_out}")


def depthwise_separable_cost(c_in: int, c_out: int, k: int, h_out: int, w_out: int, bias: bool = True) -> ConvCost:
    """MobileNet's block: a k x k depthwise conv (one filter per channel) then a 1 x 1 pointwise conv."""
    dw, pw = k * k * c_in, c_in * c_out
    b = (c_in + c_out) if bias else 0
    return ConvCost(f"depthwise-separable {k}x{k}", dw + pw + b, (dw + pw) * h_out * w_out,
                    f"{k}·{k}·{c_in} + {c_in}·{c_out}" + (f" + {c_in} + {c_out}" if bias else ""),
                    f"({k}·{k}·{c_in} + {c_in}·{c_out})·{h_out}·{w_out}")


def stacked_conv_cost(channels: int, k: int, depth: int, h_out: int, w_out: int, bias: bool = True) -> ConvCost:
    """``depth`` stacked k x k convolutions keeping ``channels`` channels and the spatial size (Inception's idea)."""
    one = standard_conv_cost(channels, channels, k, h_out, w_out, bias)
    rf = depth * (k - 1) + 1
    if depth == 1:
        return ConvCost(f"one {k}x{k} conv (receptive field {rf})", one.params, one.macs, one.params_formula,
                        one.macs_formula)
    return ConvCost(f"{depth} stacked {k}x{k} convs (receptive field {rf})", depth * one.params, depth * one.macs,
                    f"{depth}·({one.params_formula})", f"{depth}·{one.macs_formula}")
