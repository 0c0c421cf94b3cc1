"""Explainer interface: one result type, one registry, and hooks that never outlive a call.

Each method is a function ``fn(ctx, x, targets) -> maps`` registered with its parameters; ``explain``
validates parameters, picks targets, times the call and wraps every image's map in an Explanation.
Methods hold no global state, so concurrent requests from a web app cannot mix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from core.zoo import LoadedModel, get_layer

ProgressFn = Callable[[float], None]


@dataclass(frozen=True)
class Param:
    """One tunable parameter of a method, with what an app needs to build a control for it."""

    name: str
    label: str
    kind: Literal["int", "float", "choice", "bool"]
    default: Any
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""

    def validate(self, value: Any) -> Any:
        """Coerce ``value`` to this parameter's type or raise ValueError naming the parameter."""
        try:
            if self.kind == "int":
                value = int(value)
            elif self.kind == "float":
                value = float(value)
            elif self.kind == "bool":
                value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
            else:
                value = str(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.name} must be a {self.kind}, got {value!r}.") from err
        if self.kind == "choice" and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}.")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"{self.name} must be between {self.low} and {self.high}, got {value!r}.")
        return value


@dataclass(frozen=True)
class Context:
    """What a method function receives besides the input: model, layer, seed, batch size, progress, params."""

    model: nn.Module
    device: torch.device
    layer: str
    seed: int
    batch_size: int
    params: dict[str, Any]
    progress: ProgressFn | None = None

    def report(self, fraction: float) -> None:
        """Forward progress in [0, 1]; the callback may raise to cancel the work."""
        if self.progress is not None:
            self.progress(min(max(fraction, 0.0), 1.0))


MapFn = Callable[[Context, torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, list[dict]]"]


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: identity, one-line description, display hints and parameters."""

    name: str
    label: str
    family: str
    description: str
    signed: bool
    stochastic: bool
    uses_layer: bool
    params: tuple[Param, ...]
    fn: MapFn

    def defaults(self) -> dict[str, Any]:
        """Default value of every parameter."""
        return {p.name: p.default for p in self.params}


@dataclass
class Explanation:
    """One image's explanation: raw heatmap at model-input resolution plus everything needed to show it."""

    method: str
    heatmap: np.ndarray
    target: int
    target_name: str
    score: float
    params: dict[str, Any]
    seconds: float
    signed: bool
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def normalised(self) -> np.ndarray:
        """Heatmap in [0, 1]: min-max for unsigned maps; signed maps keep 0 at 0.5 (scaled by max |value|)."""
        h = self.heatmap.astype(np.float32)
        if self.signed:
            peak = float(np.abs(h).max())
            return (0.5 + 0.5 * h / peak) if peak > 0 else np.full_like(h, 0.5)
        lo, hi = float(h.min()), float(h.max())
        return (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)


METHODS: dict[str, MethodInfo] = {}


def register(name: str, label: str, family: str, description: str, *, signed: bool = False,
             stochastic: bool = False, uses_layer: bool = False, params: Sequence[Param] = ()
             ) -> Callable[[MapFn], MapFn]:
    """Decorator adding a map function to the registry under ``name``."""

    def wrap(fn: MapFn) -> MapFn:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = MethodInfo(name, label, family, description, signed, stochastic, uses_layer,
                                   tuple(params), fn)
        return fn

    return wrap


def resolve_params(info: MethodInfo, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults updated with validated overrides; unknown names raise ValueError."""
    known = {p.name: p for p in info.params}
    unknown = set(overrides) - set(known)
    if unknown:
        raise ValueError(f"{info.name} has no parameter(s) {', '.join(sorted(unknown))}; "
                         f"it takes {', '.join(known) or 'none'}.")
    return {name: p.validate(overrides.get(name, p.default)) for name, p in known.items()}


def explain(model: LoadedModel | nn.Module, x: torch.Tensor, method: str, target: int | Sequence[int] | None = None,
            *, layer: str | None = None, seed: int = 0, batch_size: int = 64, progress: ProgressFn | None = None,
            class_names: Sequence[str] | None = None, **params: Any) -> list[Explanation]:
    """Explain a preprocessed batch (N x C x H x W) with a registered method; one Explanation per image.

    ``target`` defaults to each image's predicted class; ``layer`` to the model's CAM layer (or the last
    layer with spatial output).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    info = METHODS[method]
    settings = resolve_params(info, params)
    net, device, names, default_layer = _unpack(model)
    names = tuple(class_names) if class_names is not None else names
    x = x.to(device)
    if x.ndim != 4:
        raise ValueError(f"expected an N x C x H x W batch, got shape {tuple(x.shape)}")
    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1)
    targets = _targets(target, probs)
    ctx = Context(net, device, layer or default_layer or last_spatial_layer(net, x[:1]), seed, batch_size,
                  settings, progress)
    started = time.perf_counter()
    out = info.fn(ctx, x, targets)
    maps, extras = out if isinstance(out, tuple) else (out, [{} for _ in range(len(x))])
    seconds = time.perf_counter() - started
    maps_np = maps.detach().float().cpu().numpy()
    record = {**settings, **({"layer": ctx.layer} if info.uses_layer else {}),
              **({"seed": seed} if info.stochastic else {})}
    return [
        Explanation(method, maps_np[i], int(t), names[t] if t < len(names) else str(t),
                    float(probs[i, t]), dict(record), seconds / len(x), info.signed, extras[i])
        for i, t in enumerate(targets.tolist())
    ]


def _unpack(model: LoadedModel | nn.Module) -> tuple[nn.Module, torch.device, tuple[str, ...], str | None]:
    if isinstance(model, LoadedModel):
        return model.model, model.device, model.spec.class_names, model.spec.cam_layer
    device = next(model.parameters()).device
    return model, device, (), None


def _targets(target: int | Sequence[int] | None, probs: torch.Tensor) -> torch.Tensor:
    n, k = probs.shape
    if target is None:
        return probs.argmax(dim=1)
    t = torch.as_tensor([target] * n if isinstance(target, int) else list(target), device=probs.device)
    if len(t) != n or int(t.min()) < 0 or int(t.max()) >= k:
        raise ValueError(f"target must be a class index in [0, {k - 1}] (one per image), got {target!r}.")
    return t


def last_spatial_layer(model: nn.Module, sample: torch.Tensor) -> str:
    """Name of the last module (in execution order) whose output is a 4-D map with spatial size above 1."""
    seen: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _i, out, n=name: seen.append(n)
                                       if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] > 1
                                       and out.shape[-2] > 1 else None)
               for name, m in model.named_modules() if name and not list(m.children())]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError("The model has no layer with a spatial (4-D) output to explain.")
    return seen[-1]


@dataclass
class LayerCapture:
    """Activations (and their gradients, when requested) recorded at one layer during a forward pass."""

    activations: torch.Tensor | None = None
    gradients: torch.Tensor | None = None


@contextmanager
def capture(model: nn.Module, layer: str, gradients: bool = True) -> Iterator[LayerCapture]:
    """Record a layer's output (and its gradient) for one call; the hook is always removed afterwards."""
    record = LayerCapture()

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        record.activations = output
        if gradients and output.requires_grad:
            output.register_hook(lambda grad: setattr(record, "gradients", grad))

    handle = get_layer(model, layer).register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering range(n)."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
