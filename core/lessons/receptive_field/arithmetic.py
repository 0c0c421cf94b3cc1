"""Receptive-field arithmetic: one layer along one axis, single-path stacks in closed form, per-layer tables.

Theory follows Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill
2019: along one axis a layer with kernel k, stride s, padding p and dilation d (effective kernel
k' = d(k - 1) + 1) maps the field of output unit 0 (its first input pixel ``start``, its ``size`` and the
``jump`` between neighbouring units) to

    size' = size + (k' - 1) * jump,   jump' = jump * s,   start' = start - p * jump.

Tables (``Analysis``) hold every distinct path's field per node, so the graph reader in ``graph`` fills the same
type; ``unit_field`` maps one unit of a table back onto the image. No torch here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

LayerKind = Literal["conv", "maxpool", "avgpool"]
LAYER_KINDS: tuple[LayerKind, ...] = ("conv", "maxpool", "avgpool")

# ---------------------------------------------------------------- one layer, one axis


@dataclass(frozen=True)
class LayerSpec:
    """Geometry of one square convolution or pooling layer (PyTorch semantics, symmetric padding)."""

    kind: LayerKind
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    ceil_mode: bool = False

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"Layer type must be one of {', '.join(LAYER_KINDS)}, not {self.kind!r}.")
        for name in ("kernel", "stride", "dilation"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name.capitalize()} must be at least 1 (got {getattr(self, name)}).")
        if self.padding < 0:
            raise ValueError(f"Padding must be 0 or more (got {self.padding}).")
        if self.kind == "conv" and self.ceil_mode:
            raise ValueError("ceil_mode applies to pooling layers only.")
        if self.kind == "avgpool" and self.dilation != 1:
            raise ValueError("Average pooling has no dilation in PyTorch; set dilation to 1.")
        if self.kind != "conv" and 2 * self.padding > self.kernel:
            raise ValueError(f"Pooling padding must be at most half the kernel ({self.kernel}), got {self.padding}.")

    @property
    def effective_kernel(self) -> int:
        """Span of the dilated kernel, d(k - 1) + 1."""
        return self.dilation * (self.kernel - 1) + 1

    def describe(self) -> str:
        """Short label, e.g. 'conv 3×3 /2 p1 d2'."""
        text = f"{self.kind} {self.kernel}×{self.kernel}"
        text += f" /{self.stride}" if self.stride != 1 else ""
        text += f" p{self.padding}" if self.padding else ""
        text += f" d{self.dilation}" if self.dilation != 1 else ""
        return text + (" ceil" if self.ceil_mode else "")


def output_size(n: int, layer: LayerSpec) -> int:
    """Units along one axis after ``layer``: floor((n + 2p - d(k-1) - 1)/s) + 1, PyTorch's ceil_mode rule included."""
    span = n + 2 * layer.padding - layer.effective_kernel
    if span < 0:
        raise ValueError(f"{layer.describe()}: the input ({n} px + padding) is smaller than the kernel span "
                         f"{layer.effective_kernel}; use a larger input or fewer layers.")
    if not layer.ceil_mode:
        return span // layer.stride + 1
    out = -(-span // layer.stride) + 1
    if (out - 1) * layer.stride >= n + layer.padding:  # the last window must start inside the input or left padding
        out -= 1
    return out


@dataclass(frozen=True, order=True)
class Field:
    """Receptive field of unit 0 along one axis: ``size`` px from input coordinate ``start``; units are ``jump`` apart.

    ``start`` is negative when the field reaches into the padding; -start is Araujo et al.'s effective padding.
    """

    size: int
    jump: int
    start: int

    def after(self, layer: LayerSpec) -> Field:
        """The field one layer deeper (the recurrence above)."""
        return Field(size=self.size + (layer.effective_kernel - 1) * self.jump, jump=self.jump * layer.stride,
                     start=self.start - layer.padding * self.jump)

    def span(self, index: int) -> tuple[int, int]:
        """First and last input coordinate (inclusive) seen by unit ``index``."""
        first = self.start + index * self.jump
        return first, first + self.size - 1

    def centre(self, index: int) -> float:
        """Input coordinate of the centre of unit ``index``'s field."""
        return self.start + index * self.jump + (self.size - 1) / 2


INPUT_FIELD = Field(size=1, jump=1, start=0)


def union(fields: Iterable[Field]) -> Field:
    """The smallest field covering all ``fields`` (which must share a jump): what a merged unit sees."""
    fields = list(fields)
    jumps = {f.jump for f in fields}
    if len(jumps) != 1:
        raise ValueError(f"Paths merge with different jumps {sorted(jumps)}; their units are not on one grid.")
    start = min(f.start for f in fields)
    end = max(f.start + f.size - 1 for f in fields)
    return Field(size=end - start + 1, jump=jumps.pop(), start=start)


def stack_fields(layers: Sequence[LayerSpec]) -> list[Field]:
    """Field after each layer of a single-path stack, from Araujo et al.'s closed forms (eqs. 2 and 9).

    r_L = 1 + sum_l (k'_l - 1) prod_{i<l} s_i, start_L = -sum_l p_l prod_{i<l} s_i, jump_L = prod_l s_l.
    """
    if not layers:
        return []
    k = np.array([layer.effective_kernel for layer in layers], dtype=np.int64)
    s = np.array([layer.stride for layer in layers], dtype=np.int64)
    p = np.array([layer.padding for layer in layers], dtype=np.int64)
    jump_before = np.cumprod(np.concatenate([[1], s[:-1]]))
    sizes = 1 + np.cumsum((k - 1) * jump_before)
    starts = -np.cumsum(p * jump_before)
    jumps = jump_before * s
    return [Field(int(a), int(b), int(c)) for a, b, c in zip(sizes, jumps, starts, strict=True)]


# ---------------------------------------------------------------- tables of rows


@dataclass(frozen=True)
class Row:
    """One convolution, pooling or merge node: its output grid and the field of unit (0, 0) along every path."""

    name: str
    op: str
    layer: LayerSpec | None  # None for merges (add, concatenation)
    height: int
    width: int
    paths: tuple[tuple[Field, int], ...]  # distinct fields (largest first) with the number of paths giving each

    @property
    def field(self) -> Field:
        """What a unit of this node sees: the union over all paths."""
        return union(f for f, _ in self.paths)

    @property
    def n_paths(self) -> int:
        """Number of distinct input-to-node paths through the graph."""
        return sum(n for _, n in self.paths)

    @property
    def aligned(self) -> bool:
        """True when every path's field is centred on the same input coordinate (Araujo et al.'s alignment)."""
        return len({f.centre(0) for f, _ in self.paths}) == 1

    def note(self) -> str:
        """A sentence on how the paths disagree, or '' for a single field."""
        if len(self.paths) == 1:
            return ""
        sizes: dict[int, int] = {}
        for f, n in self.paths:
            sizes[f.size] = sizes.get(f.size, 0) + n
        if len(sizes) <= 4:
            parts = ", ".join(f"{s} px ×{n}" for s, n in sizes.items())
        else:
            parts = f"{len(sizes)} different sizes from {min(sizes)} to {max(sizes)} px"
        text = f"{self.n_paths:,} paths disagree ({parts}); the unit sees their union, {self.field.size} px"
        centres = sorted({f.centre(0) for f, _ in self.paths})
        if len(centres) > 1:
            return text + f"; centres differ by up to {centres[-1] - centres[0]:g} px (misaligned paths)"
        return text + "; all centred on the same pixel"


def row_of(name: str, op: str, layer: LayerSpec | None, hw: tuple[int, int], paths: dict[Field, int]) -> Row:
    """A table row with its distinct fields ordered largest first."""
    ordered = tuple(sorted(paths.items(), key=lambda item: (-item[0].size, item[0].start)))
    return Row(name, op, layer, hw[0], hw[1], ordered)


@dataclass(frozen=True)
class Analysis:
    """Per-layer receptive-field table of a network at one input size, plus notes on its graph."""

    name: str
    input_size: tuple[int, int]
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()

    def row(self, name: str) -> Row:
        """The row of node ``name``."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"No convolution, pooling or merge node named {name!r}.")

    @property
    def merges(self) -> tuple[Row, ...]:
        """Merge nodes (residual additions, concatenations) where paths with different fields meet."""
        return tuple(r for r in self.rows if r.layer is None and len(r.paths) > 1)

    def table(self) -> list[dict[str, object]]:
        """Rows as records for a data frame, with the field of the top-left unit."""
        records = []
        for i, r in enumerate(self.rows, start=1):
            f = r.field
            records.append({
                "#": i, "node": r.name, "operation": r.op, "output": f"{r.height}×{r.width}",
                "out size": r.height, "jump": f.jump, "RF size": f.size,
                "shortest path RF": min(p.size for p, _ in r.paths), "effective padding": -f.start,
                "centre of unit 0": f.centre(0), "paths": r.n_paths, "note": r.note() if r.layer is None else "",
            })
        return records


def analyse_stack(layers: Sequence[LayerSpec], input_size: int | tuple[int, int], name: str = "stack") -> Analysis:
    """Per-layer table of a single-path stack, using the closed forms (no torch)."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    if not layers:
        raise ValueError("The stack is empty: add at least one layer.")
    rows = []
    for i, (layer, field) in enumerate(zip(layers, stack_fields(layers), strict=True), start=1):
        h, w = output_size(h, layer), output_size(w, layer)
        rows.append(row_of(f"{i}. {layer.kind}", layer.describe(), layer, (h, w), {field: 1}))
    return Analysis(name, as_hw(input_size), tuple(rows))


def _conv(k: int, s: int = 1, p: int = 0, d: int = 1) -> LayerSpec:
    return LayerSpec("conv", k, s, p, d)


STACK_PRESETS: dict[str, tuple[LayerSpec, ...]] = {
    "small CNN: (conv 3×3 ×2, max-pool 2×2) ×2": (_conv(3, 1, 1), _conv(3, 1, 1), LayerSpec("maxpool", 2, 2),
                                                _conv(3, 1, 1), _conv(3, 1, 1), LayerSpec("maxpool", 2, 2)),
    "strided: four conv 3×3 /2": tuple(_conv(3, 2, 1) for _ in range(4)),
    "dilated context module: d = 1, 2, 4, 8": tuple(_conv(3, 1, d, d) for d in (1, 2, 4, 8)),
    "AlexNet front end": (_conv(11, 4, 2), LayerSpec("maxpool", 3, 2), _conv(5, 1, 2), LayerSpec("maxpool", 3, 2)),
    "one 7×7 (vs three 3×3)": (_conv(7, 1, 3),),
    "three 3×3 (vs one 7×7)": (_conv(3, 1, 1), _conv(3, 1, 1), _conv(3, 1, 1)),
}


def as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """An input size as (height, width)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


# ---------------------------------------------------------------- one unit mapped to the image


@dataclass(frozen=True)
class UnitField:
    """Where one output unit looks: its field in input pixels, and the part inside the image."""

    node: str
    unit: tuple[int, int]
    rows: tuple[int, int]  # inclusive span, may reach into the padding (negative or >= height)
    cols: tuple[int, int]
    clipped_rows: tuple[int, int]
    clipped_cols: tuple[int, int]
    centre: tuple[float, float]

    @property
    def area(self) -> int:
        """Pixels in the full field (padding included)."""
        return (self.rows[1] - self.rows[0] + 1) * (self.cols[1] - self.cols[0] + 1)

    @property
    def inside_area(self) -> int:
        """Pixels of the field that lie inside the image."""
        return (self.clipped_rows[1] - self.clipped_rows[0] + 1) * (self.clipped_cols[1] - self.clipped_cols[0] + 1)

    @property
    def padding_fraction(self) -> float:
        """Share of the field that lies in the padding outside the image."""
        return 1.0 - self.inside_area / self.area


def unit_field(analysis: Analysis, node: str, unit: tuple[int, int]) -> UnitField:
    """The receptive field of unit (row, col) of ``node``, in input coordinates, clipped to the image."""
    row = analysis.row(node)
    i, j = unit
    if not (0 <= i < row.height and 0 <= j < row.width):
        raise ValueError(f"Unit ({i}, {j}) is outside {node}'s {row.height}×{row.width} output.")
    f = row.field
    rows, cols = f.span(i), f.span(j)
    h, w = analysis.input_size
    clip_r = (max(rows[0], 0), min(rows[1], h - 1))
    clip_c = (max(cols[0], 0), min(cols[1], w - 1))
    return UnitField(node, (i, j), rows, cols, clip_r, clip_c, (f.centre(i), f.centre(j)))
