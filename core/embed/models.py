"""Models the explorer can embed with: the zoo, the built-in digits CNN, and untrained (seeded) copies.

An untrained copy has the same architecture and preprocessing but freshly initialised weights; seeding the
initialisation makes it the same network (and the same cache key) on every run, so the comparison
"what did training add?" is reproducible.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from core.embed.digits import DIGITS_MODEL, digits_spec
from core.zoo import LoadedModel, ModelSpec, get_spec, instantiate, load_model
from core.zoo import model_names as zoo_model_names
from core.zoo import untrained_copy as zoo_untrained_copy

UNTRAINED_SUFFIX = " (untrained)"
_LOADED: dict[tuple[str, int, str], LoadedModel] = {}
_LOCK = threading.Lock()


def model_names() -> list[str]:
    """Zoo models (bundled first), then the digits CNN."""
    return [*zoo_model_names(), DIGITS_MODEL]


def spec_for(name: str) -> ModelSpec:
    """The spec of a zoo model or of the digits CNN (raises core.zoo.ModelUnavailable with a reason)."""
    return digits_spec() if name == DIGITS_MODEL else get_spec(name)


def load(name: str, device: torch.device | None = None) -> LoadedModel:
    """A trained model by name, loaded once per process; ``name + UNTRAINED_SUFFIX`` gives the untrained copy."""
    if name.endswith(UNTRAINED_SUFFIX):
        return untrained_copy(name.removesuffix(UNTRAINED_SUFFIX), device=device)
    if name == DIGITS_MODEL:
        with _LOCK:
            key = (name, -1, str(device))
            if key not in _LOADED:
                _LOADED[key] = instantiate(digits_spec(), device)
            return _LOADED[key]
    return load_model(name, device)


def untrained_copy(name: str, seed: int = 0, device: torch.device | None = None) -> LoadedModel:
    """The named model's architecture with seeded random initial weights (same weights for the same seed)."""
    with _LOCK:
        key = (name, seed, str(device))
        if key not in _LOADED:
            _LOADED[key] = zoo_untrained_copy(spec_for(name), device, seed)
        return _LOADED[key]


def layer_names(model: nn.Module, depth: int = 2) -> list[str]:
    """Submodules up to ``depth`` levels deep, in definition order: the layers an embedding can be taken from."""
    return [name for name, _ in model.named_modules() if name and name.count(".") < depth]
