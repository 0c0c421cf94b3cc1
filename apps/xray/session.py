"""What one visitor is looking at: the image, the model's view of it, its prediction and the maps on the board.

Held in ``gr.State`` (server memory, per browser session, expired by Gradio), so an upload is decoded once
and every later action (another method, another model, a report) reuses it without touching the file again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.explain.base import Explanation
from core.explain.quality import Reference, Trust
from core.io import LoadedImage
from core.trust import Assessment

MAX_PANELS = 4


@dataclass
class Panel:
    """One explanation on the comparison board, with its trust figures once computed."""

    key: str
    title: str
    explanation: Explanation
    quality: Trust | None = None


@dataclass
class Stability:
    """Mean and per-pixel spread of a stochastic method's map over several seeds."""

    method: str
    seeds: tuple[int, ...]
    mean: np.ndarray
    spread: np.ndarray
    summary: dict[str, Any]


@dataclass
class Session:
    """The image under study and everything derived from it for the selected model."""

    image: LoadedImage
    source: str
    model_key: str
    x: torch.Tensor
    probabilities: dict[str, float]  # the model's softmax, as /predict returns it
    assessment: Assessment  # calibrated probability, threshold, conformal set, out-of-distribution gate
    panels: list[Panel] = field(default_factory=list)
    stability: Stability | None = None
    neighbours: list[Any] = field(default_factory=list)
    references: dict[int, Reference] = field(default_factory=dict)  # random-map curves per target
    uploaded: bool = True  # ``source`` is then the visitor's file name, which may name the patient (fail closed)

    @property
    def shareable_source(self) -> str:
        """What a report may say about where the image came from: never an upload's file name."""
        return "an uploaded image (its file name is left out: it may name the patient)" if self.uploaded \
            else self.source

    def add(self, panel: Panel) -> None:
        """Put a panel on the board: replaces one with the same settings, drops the oldest beyond four."""
        self.panels = [p for p in self.panels if p.key != panel.key] + [panel]
        del self.panels[:-MAX_PANELS]
