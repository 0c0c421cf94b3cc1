"""Private copies of a shared model, for explainer libraries that change the model they explain.

Zennit (LRP) registers forward and backward hooks on every layer, swaps layer parameters for modified ones during
the backward pass, merges batch norms into convolutions and replaces ResNet blocks' ``forward``; Captum's
DeepLIFT sets hooks and attributes on every non-linearity. Done on the model the apps share between requests,
another thread's forward pass would run through those hooks and modified weights. Written by hand here because
neither library offers a thread-safe mode: each call borrows a private copy of the model instead (deep-copied
once, then kept in a pool per model and kind, one copy per concurrent call). A copy is rebuilt when the model's
parameters, buffers or train/eval modes change (a parameter's version counter moves with every in-place update:
``load_state_dict``, an optimiser step, the sanity check's re-initialisation), and dropped with the model.

Preparing a copy may trace the model with torch.fx (DeepLIFT's rewrite), and tracing patches ``nn.Module.__call__``
process-wide while it runs: another thread's forward pass at that moment fails or is hijacked. So a prepared copy
is kept per architecture (module types, tensor names, shapes, dtypes, devices and modes) and a model of the same
architecture (the same model after an update, the sanity check's randomised copies) gets a deep copy of it with
its own tensors loaded: no second trace. ``warm_up`` prepares a model's copies before a server takes requests.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain

from torch import nn

Prepare = Callable[[nn.Module], nn.Module]
MAX_IDLE = 2  # idle copies kept per model and kind (more concurrent calls make more copies, then drop them)
MAX_ARCHITECTURES = 8  # prepared copies kept per kind and architecture (least recently used dropped first)

_LOCK = threading.Lock()
_POOLS: weakref.WeakKeyDictionary[nn.Module, dict[str, _Pool]] = weakref.WeakKeyDictionary()
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_PREPARED: OrderedDict[tuple, tuple[nn.Module, str]] = OrderedDict()  # (kind, architecture) -> (copy, key prefix)


@dataclass
class _Pool:
    stamp: tuple
    idle: list[nn.Module] = field(default_factory=list)
    template: nn.Module | None = None  # the first prepared copy, never handed out: later copies are its deep copies
    preparing: threading.Lock = field(default_factory=threading.Lock)


def stamp(model: nn.Module) -> tuple:
    """What identifies the model's current state: every parameter's and buffer's storage and version, and every
    module's train/eval mode."""
    tensors = tuple((t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))
                    for t in chain(model.parameters(), model.buffers()))
    return tensors, tuple(m.training for m in model.modules())


def architecture(model: nn.Module) -> tuple:
    """What a prepared copy depends on besides tensor values: every module's name, type and mode, and every
    parameter's and buffer's name, shape, dtype and device."""
    modules = tuple((name, type(m), m.training) for name, m in model.named_modules())
    tensors = tuple((name, tuple(t.shape), t.dtype, t.device) for name, t in model.state_dict(keep_vars=True).items())
    return modules, tensors


def _prefix(prepared: nn.Module, model: nn.Module) -> str | None:
    """The prefix under which ``prepared`` (a wrapper, a traced rewrite) holds exactly ``model``'s tensors, or None
    when its tensors are not those of ``model`` under one prefix (its own copy cannot then take another model's)."""
    ours, theirs = prepared.state_dict(keep_vars=True), model.state_dict(keep_vars=True)
    if not theirs:
        return None
    first = next(iter(theirs))
    candidates = [k[: len(k) - len(first)] for k in ours if k.endswith(first)]
    for prefix in candidates:
        if set(ours) == {prefix + k for k in theirs} and all(
                ours[prefix + k].shape == v.shape for k, v in theirs.items()):
            return prefix
    return None


def _prepared_copy(model: nn.Module, kind: str, prepare: Prepare | None) -> nn.Module:
    """``prepare(detached_copy(model))``, or a deep copy of an earlier prepared copy of a model of the same
    architecture with ``model``'s tensors loaded into it (no new trace)."""
    key = (kind, architecture(model))
    with _LOCK:
        known = _PREPARED.get(key)
        if known is not None:
            _PREPARED.move_to_end(key)
    if known is not None:
        shared, prefix = known
        clone = copy.deepcopy(shared)
        state = {prefix + k: v.detach() for k, v in model.state_dict().items()}
        clone.load_state_dict(state, strict=True)
        return clone
    prepared = detached_copy(model)
    prepared = prepare(prepared) if prepare is not None else prepared
    prefix = _prefix(prepared, model)
    if prefix is not None:
        with _LOCK:
            _PREPARED[key] = (prepared, prefix)  # never handed out or changed: only deep-copied
            while len(_PREPARED) > MAX_ARCHITECTURES:
                _PREPARED.popitem(last=False)
    return prepared


def detached_copy(model: nn.Module, attempts: int = 5) -> nn.Module:
    """A deep copy with no parameter gradients (none held, none computed) and no hooks at all.

    Every hook on a model shared by the app is a transient one of some request (``core.hooks`` captures, guided
    backprop's backward hooks): copied along, it would fire on the copy and call into the original, which breaks
    torch.fx tracing ("module is not installed as a submodule") and leaks another request's state. Another thread
    may add or remove such a hook while the copy is made ("dictionary changed size during iteration"): retried.
    """
    for attempt in range(attempts):
        try:
            clone = copy.deepcopy(model)
            break
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    for module in clone.modules():
        for name in _HOOK_DICTS:
            hooks = getattr(module, name, None)
            if hooks:
                hooks.clear()
        if getattr(module, "_is_full_backward_hook", None) is not None:
            module._is_full_backward_hook = None
    for p in clone.parameters():
        p.grad = None
        p.requires_grad_(False)
    return clone


@contextmanager
def replica(model: nn.Module, kind: str, prepare: Prepare | None = None) -> Iterator[nn.Module]:
    """A private copy of ``model`` for the duration of the block, made by ``prepare(detached_copy(model))``.

    Copies of one ``kind`` are prepared alike and reused across calls. A copy used by a block that raised is
    dropped, not reused: a library may have left it half-modified.
    """
    now = stamp(model)
    with _LOCK:
        pools = _POOLS.setdefault(model, {})
        pool = pools.get(kind)
        if pool is None or pool.stamp != now:
            pool = pools[kind] = _Pool(now)
        clone = pool.idle.pop() if pool.idle else None
    if clone is None:
        # Prepared once per model state: torch.fx tracing patches nn.Module.__call__ process-wide while it runs,
        # so it must not run again and again beside other requests' forward passes (it fails, or hijacks them).
        with pool.preparing:
            if pool.template is None:
                pool.template = _prepared_copy(model, kind, prepare)
            clone = copy.deepcopy(pool.template)
    yield clone  # not in a try: after an exception the copy is simply not returned to the pool
    with _LOCK:
        if _POOLS.get(model, {}).get(kind) is pool and len(pool.idle) < MAX_IDLE:
            pool.idle.append(clone)


def warm_up(model: nn.Module, kinds: Sequence[tuple[str, Prepare | None]]) -> None:
    """Prepare ``model``'s private copies of each (kind, prepare) now, e.g. before a server takes requests: a trace
    then never runs beside another request's forward pass for this model or any of the same architecture."""
    for kind, prepare in kinds:
        with replica(model, kind, prepare):
            pass
