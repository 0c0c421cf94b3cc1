"""Example X-rays from the data folder (when there is one): a few of each class, picked deterministically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data import data_dir, index_folder
from core.embed import thumbnail
from core.io import ImageError, load_image

PER_CLASS = 4
THUMBNAIL = 96


@dataclass(frozen=True)
class Example:
    """One example image: where it is, what to call it, and a small preview."""

    path: Path
    label: str
    thumbnail: np.ndarray


def pick_examples(per_class: int = PER_CLASS) -> list[Example]:
    """Evenly spaced images of every class folder (none when there is no data folder)."""
    root = data_dir()
    if root is None:
        return []
    try:
        index = index_folder(root)
    except FileNotFoundError:
        return []
    examples: list[Example] = []
    for label, name in enumerate(index.class_names):
        positions = np.flatnonzero(index.labels == label)
        for i in positions[np.linspace(0, len(positions) - 1, min(per_class, len(positions))).round().astype(int)]:
            path = index.paths[i]
            try:
                examples.append(Example(path, f"{name} · {path.name}", thumbnail(load_image(path).array, THUMBNAIL)))
            except ImageError:
                continue
    return examples
