"""Explainer interface: one result type, one registry, and hooks that never outlive a call.

Each method is a function ``fn(ctx, x, targets) -> maps`` (or ``(maps, extras)``) registered with its parameters;
``explain`` validates parameters, picks targets, times the call and wraps every image's map in an Explanation.

Concurrency: a web app explains several requests at once on one shared model. Methods hold no global state, and
the forward hooks they use (``core.hooks``: ``capture``, ``last_spatial_layer``) are registered for one call,
removed in a ``finally`` and act only on forward passes of the thread that registered them, so another thread's
forward through the same module neither triggers them nor is altered by them.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from core.hooks import last_spatial_layer
from core.zoo import LoadedModel, Preprocessing, default_device, get_layer

# Images per forward pass when the caller does not say. On a CPU small batches are faster: at one torch thread, 64
# images of 192 px through the bundled model took 0.63 s forward in batches of 16 against 0.78 s in one batch of 64
# (1.82 s against 2.06 s with the backward), and a cancellation, checked between batches, is honoured sooner.
# Accelerators keep 64.
BATCH = 64 if default_device().type != "cpu" else 16

ProgressFn = Callable[[float], None]
BLUR_SIGMA = 1 / 20  # Gaussian sigma of "blur" baselines, as a fraction of the image side


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
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                value = int(value)
            elif self.kind == "float":
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError
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
    """What a method function receives besides the input: model, layer, seed, batch size, progress, params.

    ``prep`` is the model's preprocessing when known (None for a bare module, whose input is then taken to be
    the image in [0, 1]); ``requested`` holds the caller's targets (None: each image's predicted class).
    Methods registered with ``own_forward=True`` get ``targets=None`` and call ``resolve`` on the logits of their
    own forward pass on the clean input, which saves ``explain`` a separate prediction pass.
    """

    model: nn.Module
    device: torch.device
    layer: str
    seed: int
    batch_size: int
    params: dict[str, Any]
    progress: ProgressFn | None = None
    prep: Preprocessing | None = None
    requested: torch.Tensor | None = None
    _outcome: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def report(self, fraction: float) -> None:
        """Forward progress in [0, 1]; the callback may raise to cancel the work."""
        if self.progress is not None:
            self.progress(min(max(fraction, 0.0), 1.0))

    def resolve(self, logits: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """Targets for the images ``rows`` of the batch, given their clean logits; records them for ``explain``."""
        rows = rows if rows is not None else slice(0, len(logits))
        logits = logits.detach().float()
        k = logits.shape[1]
        if self.requested is None:
            targets = logits.argmax(dim=1)
        else:
            targets = self.requested[rows].to(logits.device)
            if int(targets.min()) < 0 or int(targets.max()) >= k:
                raise ValueError(f"target must be a class index in [0, {k - 1}], got {targets.tolist()}.")
        self._outcome[rows.start, rows.stop] = (targets, logits)
        return targets

    def outcome(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (N) and clean logits (N x K) of the whole batch, as recorded by ``resolve``."""
        parts = sorted(self._outcome.items())
        if sum(stop - start for (start, stop), _ in parts) != n:
            raise RuntimeError("the method did not resolve the targets of every image")
        return torch.cat([t for _, (t, _) in parts]), torch.cat([lg for _, (_, lg) in parts])

    def rng(self, purpose: str, *key: int) -> torch.Generator:
        """A generator on the model's device seeded by (seed, purpose, key): e.g. key = (sample,) gives every
        sample its own stream, so a map depends neither on the batch size nor on the other images in the batch."""
        state = np.random.SeedSequence([self.seed, zlib.crc32(purpose.encode()), *key]).generate_state(2)
        return torch.Generator(device=self.device).manual_seed(int(state[0]) << 32 | int(state[1]))

    def pixel_value(self, value: float, like: torch.Tensor) -> torch.Tensor:
        """Model-input value of an image intensity (0 = black, 1 = white), shaped 1 x C x 1 x 1 like ``like``."""
        c = like.shape[1]
        if self.prep is None:
            return torch.full((1, c, 1, 1), value, device=like.device, dtype=like.dtype)
        mean = torch.tensor(self.prep.mean, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.prep.std, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
        return ((value - mean) / std).expand(1, c, 1, 1)


MapFn = Callable[[Context, torch.Tensor, "torch.Tensor | None"], "torch.Tensor | tuple[torch.Tensor, list[dict]]"]


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
    own_forward: bool = False

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
             stochastic: bool = False, uses_layer: bool = False, own_forward: bool = False,
             params: Sequence[Param] = ()) -> Callable[[MapFn], MapFn]:
    """Decorator adding a map function to the registry under ``name``.

    ``own_forward``: the function runs the model on the clean input itself and calls ``ctx.resolve`` (it then
    receives ``targets=None``); otherwise ``explain`` runs a prediction pass first and passes the targets.
    """

    def wrap(fn: MapFn) -> MapFn:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = MethodInfo(name, label, family, description, signed, stochastic, uses_layer,
                                   tuple(params), fn, own_forward)
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
            *, layer: str | None = None, seed: int = 0, batch_size: int = BATCH, progress: ProgressFn | None = None,
            class_names: Sequence[str] | None = None, prep: Preprocessing | None = None,
            **params: Any) -> list[Explanation]:
    """Explain a preprocessed batch (N x C x H x W) with a registered method; one Explanation per image.

    ``target`` defaults to each image's predicted class; ``layer`` to the model's CAM layer (or the last
    layer with spatial output); ``prep`` to the LoadedModel's preprocessing. Every method explains the target's
    logit; ``Explanation.score`` is its softmax probability on the clean image. ``seconds`` is the wall time of
    the whole call (prediction included) divided by the number of images.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    info = METHODS[method]
    settings = resolve_params(info, params)
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or len(x) == 0:
        raise ValueError(f"expected an N x C x H x W batch, got {getattr(x, 'shape', type(x).__name__)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}.")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point (preprocessed) batch, got {x.dtype}.")
    net, device, names, default_layer, spec_prep = _unpack(model)
    names = tuple(class_names) if class_names is not None else names
    started = time.perf_counter()
    with torch.inference_mode(False):  # gradient methods must work even when the caller is in inference mode
        x = x.to(device)
        x = x.clone() if x.is_inference() else x
        if info.uses_layer:
            layer = layer or default_layer or last_spatial_layer(net, x[:1])
            get_layer(net, layer)  # a clear error for a misspelt layer before any work
        ctx = Context(net, device, layer or "", seed, batch_size, settings, progress, prep or spec_prep,
                      _requested(target, len(x), device))
        if info.own_forward:
            out = info.fn(ctx, x, None)
        else:
            with torch.no_grad():
                logits = torch.cat([net(x[rows]) for rows in batches(len(x), batch_size)])
            out = info.fn(ctx, x, ctx.resolve(logits))
    maps, extras = out if isinstance(out, tuple) else (out, [{} for _ in range(len(x))])
    targets, logits = ctx.outcome(len(x))
    probs = torch.softmax(logits, dim=1).gather(1, targets[:, None])[:, 0].tolist()
    maps_np = maps.detach().float().cpu().numpy()
    seconds = time.perf_counter() - started
    record = {**settings, **({"layer": ctx.layer} if info.uses_layer else {}),
              **({"seed": seed} if info.stochastic else {})}
    return [
        Explanation(method, maps_np[i], t, names[t] if t < len(names) else str(t), probs[i], dict(record),
                    seconds / len(x), info.signed, extras[i])
        for i, t in enumerate(targets.tolist())
    ]


def _unpack(model: LoadedModel | nn.Module
            ) -> tuple[nn.Module, torch.device, tuple[str, ...], str | None, Preprocessing | None]:
    if isinstance(model, LoadedModel):
        return model.model, model.device, model.spec.class_names, model.spec.cam_layer, model.spec.preprocessing
    first = next(model.parameters(), None)
    return model, first.device if first is not None else torch.device("cpu"), (), None, None


def _requested(target: int | Sequence[int] | None, n: int, device: torch.device) -> torch.Tensor | None:
    if target is None:
        return None
    try:
        t = torch.as_tensor([int(target)] * n if np.ndim(target) == 0 else [int(v) for v in target], device=device)
    except (TypeError, ValueError) as err:
        raise ValueError(f"target must be a class index or one per image, got {target!r}.") from err
    if len(t) != n:
        raise ValueError(f"target has {len(t)} entries for {n} images.")
    return t


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering range(n)."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def blur(x: torch.Tensor, sigma_fraction: float = BLUR_SIGMA) -> torch.Tensor:
    """Gaussian blur (sigma = ``sigma_fraction`` of the image side) of a ... x C x H x W tensor, on its device."""
    sigma = sigma_fraction * max(x.shape[-2:])
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(x.shape[-2:]) // 2) - 1)  # reflect padding needs < side
    return gaussian_blur(x, [size, size], [sigma, sigma])


BASELINE_HELP = {
    "zero": "zero model input: the training-mean intensity",
    "black": "pixel value 0 (black)",
    "mean": "this image's mean intensity, flat",
    "blur": "a Gaussian-blurred copy of the image (sigma = 5% of its side)",
    "uniform": "uniform noise over the intensity range (seeded)",
}


def baseline(ctx: Context, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Reference image(s) like ``x`` (N x C x H x W) for occlusion fills and integration paths; ``uniform``
    noise is drawn from the context's seed (the same noise for every image, as if each were explained alone)."""
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "black":
        return ctx.pixel_value(0.0, x).expand_as(x).clone()
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        return blur(x)
    if kind == "uniform":
        lo, hi = ctx.pixel_value(0.0, x), ctx.pixel_value(1.0, x)
        noise = torch.rand(x.shape[1:], generator=ctx.rng("uniform baseline"), device=x.device, dtype=x.dtype)
        return (lo + (hi - lo) * noise).expand_as(x).clone()
    raise ValueError(f"baseline must be one of {', '.join(BASELINE_HELP)}, got {kind!r}.")
