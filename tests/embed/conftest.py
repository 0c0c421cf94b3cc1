"""Fixtures for the embedding explorer tests: a temp cache for the whole session, small image sets, models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import embed as E
from core.zoo import LoadedModel


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test in this folder caches under a temp folder, never in ~/.cache."""
    root = tmp_path_factory.mktemp("cnnlens-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(E.cache.CACHE_ENV, str(root))
        yield root


def write_pattern_folder(root: Path, per_class: int = 6, size: int = 40, seed: int = 0) -> Path:
    """A class-folder tree of PNGs: class 'dark' and class 'light' differ in brightness, plus noise."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("dark", "light")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(0.3 + 0.4 * label + 0.1 * rng.normal(size=(size, size)), 0, 1)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(root / name / f"img{i:02d}.png")
    return root


@pytest.fixture
def pattern_folder(tmp_path: Path) -> Path:
    return write_pattern_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def digits_model() -> LoadedModel:
    """The trained digits CNN (trains once per session into the temp cache)."""
    return E.load("digits-cnn")


@pytest.fixture(scope="session")
def digits() -> E.ImageSet:
    return E.digits_source()
