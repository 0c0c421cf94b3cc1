"""Which images a model never trained on: the patients ``core.train`` held out for validation.

A map or an accuracy over images the model was trained on flatters it; the held-out patients are the honest
subset. The split is recomputed from the seed and fraction the checkpoint records, and trusted only when the
recomputed validation set has the recorded size (so another folder, or a changed one, gives no answer).
"""

from __future__ import annotations

import numpy as np

from core.data import held_out_paths, index_folder
from core.embed.sources import ImageSet
from core.zoo import ModelSpec


def held_out_mask(images: ImageSet, spec: ModelSpec) -> np.ndarray | None:
    """True for each image of a patient ``spec``'s model never trained on; None when that is unknown (the model
    records no split, or the images are not from the folder it was trained on)."""
    if spec.training_split is None or images.folder is None:
        return None
    held = held_out_paths(index_folder(images.folder, images.class_names), spec.training_split)
    if held is None:
        return None
    return np.array([path in held for path in images.store], dtype=bool)
