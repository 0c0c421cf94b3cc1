"""Concurrency groups of the X-ray app: cheap requests and slow ones queue separately, each with its own limit."""

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
