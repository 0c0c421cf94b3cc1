"""Receptive fields: closed-form arithmetic, every path through real networks, and effective receptive fields.

Theory follows Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill
2019: along one axis a layer with kernel k, stride s, padding p and dilation d (effective kernel
k' = d(k - 1) + 1) maps the field of output unit 0 (its first input pixel ``start``, its ``size`` and the
``jump`` between neighbouring units) to

    size' = size + (k' - 1) * jump,   jump' = jump * s,   start' = start - p * jump.

Networks are read with torch.fx (torchvision's NodePathTracer, so node names are the ones
``create_feature_extractor`` accepts); where paths split and merge (ResNet shortcuts, DenseNet
concatenations) every distinct path's field is kept, with how many paths give it. The effective receptive
field (Luo, Li, Urtasun & Zemel, NeurIPS 2016) is the input gradient of one output unit.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torchvision.models.feature_extraction import NodePathTracer

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


def _row(name: str, op: str, layer: LayerSpec | None, hw: tuple[int, int], paths: dict[Field, int]) -> Row:
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
        rows.append(_row(f"{i}. {layer.kind}", layer.describe(), layer, (h, w), {field: 1}))
    return Analysis(name, _hw(input_size), tuple(rows))


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


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


# ---------------------------------------------------------------- reading a torch graph

_POINTWISE_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish,
                      nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Dropout2d, nn.Identity, nn.GroupNorm, nn.InstanceNorm2d)
_POINTWISE_FUNCTIONS = {F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.dropout, torch.relu, torch.sigmoid,
                        torch.tanh, operator.add, operator.mul, operator.sub, torch.add, torch.mul, torch.cat}
_FLATTENING = {torch.flatten, "flatten", "view", "reshape", "mean", "size"}
_GLOBAL = "global"  # marks a tensor whose units see the whole input (after flatten, linear, global pooling)


def _square(value: int | Sequence[int], what: str, name: str) -> int:
    values = (value, value) if isinstance(value, int) else tuple(value)
    if len(set(values)) != 1:
        raise ValueError(f"{name}: non-square {what} {values} is not supported by this lesson.")
    return int(values[0])


def layer_from_module(module: nn.Module, name: str = "layer") -> LayerSpec | None:
    """The geometry of a Conv2d / MaxPool2d / AvgPool2d module, or None for any other module."""
    if isinstance(module, nn.Conv2d):
        k = _square(module.kernel_size, "kernel", name)
        d = _square(module.dilation, "dilation", name)
        if module.padding == "valid":
            pad = 0
        elif module.padding == "same":
            if d * (k - 1) % 2:
                raise ValueError(f"{name}: 'same' padding with an even kernel pads asymmetrically; not supported.")
            pad = d * (k - 1) // 2
        else:
            pad = _square(module.padding, "padding", name)
        return LayerSpec("conv", k, _square(module.stride, "stride", name), pad, d)
    if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        k = _square(module.kernel_size, "kernel", name)
        stride = _square(module.stride if module.stride else k, "stride", name)
        d = _square(getattr(module, "dilation", 1), "dilation", name)
        kind: LayerKind = "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"
        return LayerSpec(kind, k, stride, _square(module.padding, "padding", name), d, bool(module.ceil_mode))
    return None


def _adaptive_is_identity(out_size: object, hw: tuple[int, int]) -> bool:
    target = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    return all(t is None or t == n for t, n in zip(target, hw, strict=True))


def _trace(model: nn.Module) -> tuple[fx.Graph, dict[fx.Node, str]]:
    """fx graph of ``model`` and each node's dotted name (torchvision's NodePathTracer, e.g. 'layer1.0.add')."""
    tracer = NodePathTracer()
    graph = tracer.trace(model)
    return graph, dict(tracer.node_to_qualname)


def analyse_module(model: nn.Module, input_size: int | tuple[int, int], name: str = "model") -> Analysis:
    """Trace ``model`` with torch.fx and compute the field of every conv, pool and merge node along every path.

    Pointwise nodes (BatchNorm, activations) pass fields through; additions and concatenations merge the path
    sets of their inputs; flatten, linear and global pooling end the spatial part (noted once).
    """
    hw0 = _hw(input_size)
    graph, qualnames = _trace(model)
    state: dict[fx.Node, tuple[tuple[int, int], dict[Field, int]] | str] = {}
    rows: list[Row] = []
    notes: list[str] = []

    def inputs_of(node: fx.Node) -> list[tuple[tuple[int, int], dict[Field, int]] | str]:
        found: list = []
        fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(state[a]) if a in state else None)
        return found

    for node in graph.nodes:
        qualname = qualnames.get(node, node.name)
        if node.op == "placeholder":
            state[node] = (hw0, {INPUT_FIELD: 1})
            continue
        if node.op in ("output", "get_attr"):
            continue
        ins = inputs_of(node)
        if not ins:
            continue
        if any(i == _GLOBAL for i in ins):
            state[node] = _GLOBAL
            continue
        module = model.get_submodule(node.target) if node.op == "call_module" else None
        layer = layer_from_module(module, qualname) if module is not None else None
        if layer is not None:
            (h, w), paths = ins[0]
            out = (output_size(h, layer), output_size(w, layer))
            new = {f.after(layer): n for f, n in paths.items()}
            state[node] = (out, new)
            rows.append(_row(qualname, layer.describe(), layer, out, new))
            continue
        target = node.target
        if module is not None and isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            kind = "identity" if _adaptive_is_identity(module.output_size, ins[0][0]) else "global"
        elif target is F.adaptive_avg_pool2d or target is F.adaptive_max_pool2d:
            kind = "identity" if _adaptive_is_identity(node.args[1], ins[0][0]) else "global"
        elif (module is not None and isinstance(module, nn.Linear | nn.Flatten)) or target in _FLATTENING:
            kind = "global"
        elif (module is not None and isinstance(module, _POINTWISE_MODULES)) or target in _POINTWISE_FUNCTIONS:
            kind = "merge" if len(ins) > 1 else "identity"
        else:
            raise ValueError(f"Node {qualname!r} ({node.op} {target}) has no known receptive-field rule.")
        if kind == "global":
            state[node] = _GLOBAL
            notes.append(f"The spatial part ends at {qualname!r}: from there every unit sees the whole input.")
        elif kind == "identity":
            state[node] = ins[0]
        else:
            sizes = {hw for hw, _ in ins}
            if len(sizes) != 1:
                raise ValueError(f"{qualname!r} merges maps of different sizes {sorted(sizes)}.")
            merged: dict[Field, int] = {}
            for _, paths in ins:
                for f, n in paths.items():
                    merged[f] = merged.get(f, 0) + n
            state[node] = (sizes.pop(), merged)
            op = "concatenate" if target is torch.cat else getattr(target, "__name__", str(target))
            rows.append(_row(qualname, op, None, state[node][0], merged))
    if not rows:
        raise ValueError("The network has no convolution or pooling layers.")
    return Analysis(name, hw0, tuple(rows), tuple(dict.fromkeys(notes[:1])))


def stack_module(layers: Sequence[LayerSpec], in_channels: int = 1, width: int = 8, seed: int = 0) -> nn.Sequential:
    """A randomly initialised torch network with the stack's geometry (conv + ReLU, pools as given)."""
    modules: list[nn.Module] = []
    channels = in_channels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in layers:
            args = {"kernel_size": layer.kernel, "stride": layer.stride, "padding": layer.padding}
            if layer.kind == "conv":
                modules += [nn.Conv2d(channels, width, dilation=layer.dilation, **args), nn.ReLU()]
                channels = width
            elif layer.kind == "maxpool":
                modules.append(nn.MaxPool2d(dilation=layer.dilation, ceil_mode=layer.ceil_mode, **args))
            else:
                modules.append(nn.AvgPool2d(ceil_mode=layer.ceil_mode, **args))
    return nn.Sequential(*modules).eval()


def stack_node_names(model: nn.Sequential) -> list[str]:
    """fx node names of the conv/pool layers of a ``stack_module``, in order (to probe a stack's rows)."""
    return [str(i) for i, m in enumerate(model) if layer_from_module(m) is not None]


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


# ---------------------------------------------------------------- effective receptive field (Luo et al. 2016)


def unit_probe(model: nn.Module, node: str) -> fx.GraphModule:
    """``model`` cut at ``node``: an fx GraphModule returning that node's output (names as in ``analyse_module``).

    torchvision's create_feature_extractor treats its own ops (e.g. Conv2dNormActivation) as leaves, which hides
    the per-layer nodes the table lists, so the cut is made on the same trace ``analyse_module`` reads.
    """
    graph, qualnames = _trace(model)
    targets = [n for n in graph.nodes if qualnames.get(n) == node]
    if not targets:
        raise ValueError(f"The model has no node named {node!r}.")
    graph.erase_node(next(n for n in graph.nodes if n.op == "output"))
    graph.output(targets[0])
    probe = fx.GraphModule(model, graph)
    probe.graph.eliminate_dead_code()
    probe.recompile()
    probe.delete_all_unused_submodules()
    return probe.eval()


def effective_receptive_field(probe: nn.Module, inputs: torch.Tensor, unit: tuple[int, int]) -> np.ndarray:
    """Mean over inputs of |d unit / d input| (summed over channels), each input's map scaled to sum 1.

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
    return (maps[alive] / totals[alive, None, None]).mean(dim=0).numpy()


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


# ---------------------------------------------------------------- 1-D view and dilation


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
