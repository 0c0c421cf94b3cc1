"""Models the explorer can embed with, as named in its pickers: core.zoo's registry (the digits CNN included) and
untrained copies, written ``name + UNTRAINED_SUFFIX``.

An untrained copy (``core.zoo.untrained_copy``) has the same architecture and preprocessing but seeded fresh
weights, so the comparison "what did training add?" is the same network (and the same cache key) on every run.
Loading and caching are core.zoo's; this module only maps the explorer's names onto it.
"""

from __future__ import annotations

import torch
from torch import nn

from core import zoo

UNTRAINED_SUFFIX = " (untrained)"


def model_names() -> list[str]:
    """Zoo models (bundled first), then the digits CNN."""
    return zoo.model_names(demos=True)


def spec_for(name: str) -> zoo.ModelSpec:
    """The spec of a zoo model or of the digits CNN (raises core.zoo.ModelUnavailable with a reason)."""
    return zoo.get_spec(name)


def load(name: str, device: torch.device | None = None) -> zoo.LoadedModel:
    """A trained model by name, loaded once per process; ``name + UNTRAINED_SUFFIX`` gives the untrained copy."""
    if name.endswith(UNTRAINED_SUFFIX):
        return untrained_copy(name.removesuffix(UNTRAINED_SUFFIX), device=device)
    return zoo.load_model(name, device)


def untrained_copy(name: str, seed: int = 0, device: torch.device | None = None) -> zoo.LoadedModel:
    """The named model's untrained copy, seeded (same weights, and the same object, for the same seed)."""
    return zoo.load_untrained(name, seed, device)


def layer_names(model: nn.Module, depth: int = 2) -> list[str]:
    """Submodules up to ``depth`` levels deep, in definition order: the layers an embedding can be taken from."""
    return [name for name, _ in model.named_modules() if name and name.count(".") < depth]
