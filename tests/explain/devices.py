"""Devices for tests that run a model (explainers, the zoo, embeddings, the receptive-field lesson): the CPU always,
CUDA when this machine has it (skipped otherwise). A test parametrised with ``DEVICES`` has "cuda" in its id, so
``pytest -k cuda`` (``make test-gpu``, ``bench/gpu_check.sh``) runs exactly the CUDA subset."""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def on(device: str, *items: torch.nn.Module | torch.Tensor) -> tuple:
    """Each module (in eval mode) and tensor moved to ``device``."""
    return tuple(item.to(device).eval() if isinstance(item, torch.nn.Module) else item.to(device) for item in items)


def minmax(a: object) -> object:
    """Min-max normalised as pytorch-grad-cam's ``scale_cam_image``: (a - min) / (max - min + 1e-7)."""
    a = a - a.min()
    return a / (a.max() + 1e-7)


def peer_scaled(a: object) -> object:
    """A map scaled as pytorch-grad-cam returns it: ``scale_cam_image`` per layer, then again after averaging the
    layers (which matters for maps whose maximum is near the 1e-7)."""
    return minmax(minmax(a))
