"""Private copies of a shared model, for explainer libraries that change the model they explain.

Zennit (LRP) registers forward and backward hooks on every layer, swaps layer parameters for modified ones during
the backward pass, merges batch norms into convolutions and replaces ResNet blocks' ``forward``; Captum's
DeepLIFT sets hooks and attributes on every non-linearity. Done on the model the apps share between requests,
another thread's forward pass would run through those hooks and modified weights. Written by hand here because
neither library offers a thread-safe mode: each call borrows a private copy of the model instead (deep-copied
once, then kept in a pool per model and kind, one copy per concurrent call). A copy is rebuilt when the model's
parameters, buffers or train/eval modes change (a parameter's version counter moves with every in-place update:
``load_state_dict``, an optimiser step, the sanity check's re-initialisation), and dropped with the model.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain

from torch import nn

Prepare = Callable[[nn.Module], nn.Module]
MAX_IDLE = 2  # idle copies kept per model and kind (more concurrent calls make more copies, then drop them)

_LOCK = threading.Lock()
_POOLS: weakref.WeakKeyDictionary[nn.Module, dict[str, _Pool]] = weakref.WeakKeyDictionary()
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


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
                template = detached_copy(model)
                pool.template = prepare(template) if prepare is not None else template
            clone = copy.deepcopy(pool.template)
    yield clone  # not in a try: after an exception the copy is simply not returned to the pool
    with _LOCK:
        if _POOLS.get(model, {}).get(kind) is pool and len(pool.idle) < MAX_IDLE:
            pool.idle.append(clone)
