"""Reading real networks: torch.fx traces give every conv, pool and merge node's field along every path.

Networks are read with torchvision's NodePathTracer, so node names are the ones ``create_feature_extractor``
accepts; where paths split and merge (ResNet shortcuts, DenseNet concatenations) every distinct path's field is
kept, with how many paths give it. ``unit_probe`` cuts a network at one of those nodes, for the effective
receptive field.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn
from torchvision.models.feature_extraction import NodePathTracer

from core.lessons.receptive_field.arithmetic import (
    INPUT_FIELD,
    Analysis,
    Field,
    LayerKind,
    LayerSpec,
    Row,
    as_hw,
    output_size,
    row_of,
)

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
    hw0 = as_hw(input_size)
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
            rows.append(row_of(qualname, layer.describe(), layer, out, new))
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
            rows.append(row_of(qualname, op, None, state[node][0], merged))
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
