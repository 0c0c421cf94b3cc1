"""Forward hooks in one place: read a layer's output (and its gradient) during a forward pass, and find the layers
whose output is a spatial map.

Every hook here lives for one ``with`` block or one call, is removed in a ``finally`` even when the forward pass
raises, and acts only on forward passes of the thread that registered it: the apps run several requests (and
Streamlit sessions) at once on one shared model, and another thread's forward pass through the same module is
neither recorded nor altered.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from core.zoo import get_layer

ForwardHook = Callable[[nn.Module, tuple, Any], Any]


@contextmanager
def _thread_hooks(pairs: Sequence[tuple[nn.Module, ForwardHook]]) -> Iterator[None]:
    """Forward hooks on modules that fire only for forward passes of the calling thread; always removed."""
    owner = threading.get_ident()

    def only_mine(hook: ForwardHook) -> ForwardHook:
        def wrapped(module: nn.Module, inputs: tuple, output: Any) -> Any:
            return hook(module, inputs, output) if threading.get_ident() == owner else None
        return wrapped

    handles = []
    try:
        for module, hook in pairs:
            handles.append(module.register_forward_hook(only_mine(hook)))
        yield
    finally:
        for handle in handles:
            handle.remove()


# ------------------------------------------------------------------------------------------ reading a layer


class StopForward(Exception):
    """Raised by a ``capture(..., stop=True)`` hook so the forward pass ends once the layer has run."""

    def __init__(self, record: LayerCapture) -> None:
        super().__init__(record.layer)
        self.record = record


@dataclass
class LayerCapture:
    """What one layer output during the forward passes of a ``capture`` block: every call's output, in order.

    ``activations`` (the last call's output) is the tensor in the autograd graph: take gradients with
    ``torch.autograd.grad(score, capture.activations)``, which traverses only the graph between the score and the
    layer and gives no parameter a gradient.
    """

    layer: str
    outputs: list[torch.Tensor] = field(default_factory=list)
    gradients: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)  # call index -> its gradient

    @property
    def activations(self) -> torch.Tensor | None:
        """The output of the layer's last call (a module may run more than once per pass); None if it never ran."""
        return self.outputs[-1] if self.outputs else None

    @property
    def gradient(self) -> torch.Tensor | None:
        """With ``gradient=True``: the gradient a backward pass run inside the block sent to ``activations``."""
        return self.gradients.get(len(self.outputs) - 1)

    def require(self) -> torch.Tensor:
        """The activations, checked to be an N x C x h x w map (the only kind a layer map can be made of)."""
        a = self.activations
        if a is None:
            raise ValueError(f"Layer {self.layer!r} did not run in the forward pass.")
        if a.ndim != 4:
            raise ValueError(f"Layer {self.layer!r} outputs shape {tuple(a.shape)}, not a spatial map; "
                             "choose a convolutional layer.")
        return a


@contextmanager
def capture(model: nn.Module, layer: str, *, gradient: bool = False, stop: bool = False) -> Iterator[LayerCapture]:
    """Record ``layer``'s output in this thread's forward passes inside the block; the hooks are always removed.

    The model continues with a copy of the output, so in-place operations after the layer (``ReLU(inplace=True)``
    after ``bn1``, ``out += identity``) alter neither the recorded output nor gradients taken with respect to it.
    ``gradient``: also record the gradient that a backward pass run inside the block sends to each output.
    ``stop``: end the forward pass as soon as the layer has run (the rest of the network is not needed); the
    block ends there too, without an error, and the caller reads the record after it.
    """
    record = LayerCapture(layer)
    tensor_hooks: list[torch.utils.hooks.RemovableHandle] = []

    def hook(_module: nn.Module, _inputs: tuple, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"Layer {layer!r} outputs a {type(output).__name__}, not a tensor.")
        if gradient and output.requires_grad:
            tensor_hooks.append(output.register_hook(partial(record.gradients.__setitem__, len(record.outputs))))
        record.outputs.append(output)
        if stop:
            raise StopForward(record)
        return output.clone()

    try:
        with _thread_hooks([(get_layer(model, layer), hook)]):
            yield record
    except StopForward as stopped:
        if stopped.record is not record:  # another capture's stop: not ours to swallow
            raise
    finally:
        for handle in tensor_hooks:
            handle.remove()


# ------------------------------------------------------------------------------------------ finding layers


@dataclass(frozen=True)
class _Call:
    """One call of a module in a traced forward pass."""

    order: int  # when the call ended, counted over every call recorded in the pass
    shape: tuple[int, ...] | None  # of its output, when that is a tensor
    output: object = None  # the output itself, when kept (to tell a child that hands its output to its parent)


def _trace(model: nn.Module, sample: torch.Tensor, names: Sequence[str], keep: bool = False
           ) -> dict[str, list[_Call]]:
    """Every call of the named modules in one forward pass without gradients, by module in the order each first
    finished; ``keep``: with the outputs themselves, not only their shapes."""
    calls: dict[str, list[_Call]] = {}
    counter = itertools.count()

    def record(name: str) -> ForwardHook:
        def hook(_m: nn.Module, _i: tuple, out: Any) -> None:  # None: the output is not replaced
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            calls.setdefault(name, []).append(_Call(next(counter), shape, out if keep else None))
        return hook

    with _thread_hooks([(model.get_submodule(name), record(name)) for name in names]), torch.no_grad():
        model(sample)
    return calls


def _is_map(call: _Call, min_side: int = 1) -> bool:
    """Whether a call returned an N x C x H x W tensor with H and W at least ``min_side``."""
    return call.shape is not None and len(call.shape) == 4 and min(call.shape[-2:]) >= min_side


def spatial_layers(model: nn.Module, sample: torch.Tensor, max_depth: int = 2) -> list[str]:
    """Modules (at most ``max_depth`` levels deep) whose output is an N x C x H x W map, in execution order: the
    layers whose feature maps can be shown.

    Left out: modules called more than once per pass (e.g. a shared ReLU; they have no single output) and
    children that merely hand their output to a container (``layer1.1`` is listed as ``layer1``).
    """
    names = [name for name, _ in model.named_modules() if name and name.count(".") < max_depth]
    calls = _trace(model, sample, names, keep=True)

    def passes_up(name: str, call: _Call) -> bool:
        parent = name.rpartition(".")[0]
        return bool(parent) and parent in calls and calls[parent][0].output is call.output

    return [name for name, (first, *more) in calls.items()  # dicts keep the order in which each first finished
            if not more and _is_map(first) and not passes_up(name, first)]


_LAST_SPATIAL: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = weakref.WeakKeyDictionary()


def last_spatial_layer(model: nn.Module, sample: torch.Tensor) -> str:
    """Name of the leaf module whose call last returned a map with spatial size above 1 (in execution order): the
    default layer of the CAM methods. A module called more than once counts by its latest such call.

    Cached per model and input shape (it costs a forward pass).
    """
    shape = tuple(sample.shape[1:])
    cached = _LAST_SPATIAL.get(model, {}).get(shape)
    if cached is not None:
        return cached
    leaves = [name for name, m in model.named_modules() if name and not list(m.children())]
    calls = _trace(model, sample[:1], leaves)
    found = [(call.order, name) for name, made in calls.items() for call in made if _is_map(call, min_side=2)]
    if not found:
        raise ValueError("The model has no layer with a spatial (4-D) output to explain.")
    name = max(found)[1]
    _LAST_SPATIAL.setdefault(model, {})[shape] = name
    return name
