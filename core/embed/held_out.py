"""Which images a model never trained on: the patients ``core.train`` held out for validation.

A map or an accuracy over images the model was trained on flatters it; the held-out patients are the honest
subset. The split is recomputed from the seed and fraction the checkpoint records, and trusted only when the
recomputed validation set matches the recorded one (``core.data.held_out_paths``: per-class counts and, where
recorded, a digest of the file names), so another folder, or a changed one, gives no answer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.data import held_out_paths, index_folder
from core.embed.sources import ImageSet
from core.zoo import ModelSpec


def held_out_files(images: ImageSet, spec: ModelSpec) -> frozenset[Path] | None:
    """The files in the folder of ``images`` that ``spec``'s model never trained on; None when that is unknown
    (the model records no split, or the folder is not the one it was trained on). Costs a pass over the folder
    (duplicate detection reads every file), so callers cache it per folder."""
    if spec.training_split is None or images.folder is None:
        return None
    return held_out_paths(index_folder(images.folder, images.class_names), spec.training_split)


def held_out_mask(images: ImageSet, held: frozenset[Path] | None) -> np.ndarray | None:
    """One flag per image of ``images`` (e.g. a subset of the folder): True when it is in ``held``."""
    return None if held is None else np.array([path in held for path in images.store], dtype=bool)
