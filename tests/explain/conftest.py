"""Session fixtures for the explainer tests: one real chest X-ray (the bundled model is in tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

from core.data import data_dir
from core.io import load_image
from core.zoo import LoadedModel, preprocess


@pytest.fixture(scope="session")
def xray(bundled: LoadedModel) -> torch.Tensor:
    """The first pneumonia X-ray of the data folder, preprocessed for the bundled model (1 x 1 x 160 x 160)."""
    folder = data_dir()
    assert folder is not None, "the chest X-ray folder is missing (set CNNLENS_DATA)"
    path = sorted((folder / "PNEUMONIA").iterdir())[0]
    return preprocess(load_image(path), bundled.spec.preprocessing, bundled.device)
