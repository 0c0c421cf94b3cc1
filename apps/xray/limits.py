"""How much the X-ray app does at once: concurrency groups (cheap requests and slow ones queue separately, each
with its own limit) and the memory allocator's per-thread pools."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    """How many requests of each kind run at once: ``fast`` (predict, Grad-CAM on upload, redraws) and ``heavy``
    (explanations, trust checks, stability, reports). Every event of a kind shares one Gradio concurrency group."""

    fast_limit: int
    heavy_limit: int

    def fast(self) -> dict[str, Any]:
        """Event keyword arguments for the fast group."""
        return {"concurrency_id": "fast", "concurrency_limit": self.fast_limit}

    def heavy(self) -> dict[str, Any]:
        """Event keyword arguments for the heavy group."""
        return {"concurrency_id": "heavy", "concurrency_limit": self.heavy_limit}


def cap_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (``mallopt(M_ARENA_MAX)``, as the ``MALLOC_ARENA_MAX`` variable does); True if
    applied. glibc gives each thread that contends for the heap an arena of its own and rarely hands their free
    memory back, so with Gradio's worker threads the resident size creeps up for hundreds of requests. Measured
    by ``bench/load.py`` (16 clients x 90 requests, first vs last 100): RSS growth 20 % uncapped, 7.7 % with 2
    arenas and level from the 300th request on, at the same latency. Call before the server starts its threads;
    a no-op off glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-8, arenas))  # -8 is M_ARENA_MAX in glibc's <malloc.h>
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        return False
