"""Class-folder image datasets, patient-level splits and the default data location.

The chest X-ray folder has ``NORMAL/`` and ``PNEUMONIA/`` subfolders; file names carry the patient
(``person123_bacteria_45.jpeg``, ``IM-0117-0001.jpeg``), so splits keep each patient on one side.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.io import load_image
from core.zoo import Preprocessing, TrainingSplit, preprocess

REPO_ROOT = Path(__file__).resolve().parent.parent
FALLBACK_DATA = REPO_ROOT.parent / "shared" / "data" / "chest_xray" / "train"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm"}
CLASS_NAMES = ("NORMAL", "PNEUMONIA")
_DATASET = "Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for Classification"
_DOI = "10.17632/rscbjbr9sj.2"
ATTRIBUTION = f"Chest X-rays: Kermany, Zhang, Goldbaum (2018), {_DATASET}, Mendeley Data v2, doi:{_DOI}, CC BY 4.0."
ATTRIBUTION_MARKDOWN = (f"Chest X-rays: Kermany, Zhang, Goldbaum (2018), *{_DATASET}*, Mendeley Data v2, "
                        f"[doi:{_DOI}](https://doi.org/{_DOI}), CC BY 4.0.")


def data_dir() -> Path | None:
    """``$CNNLENS_DATA`` if set, else the shared chest X-ray folder if it exists, else None."""
    env = os.environ.get("CNNLENS_DATA")
    if env:
        path = Path(env).expanduser()
        if (path / "train").is_dir() and not any(p.name in CLASS_NAMES for p in path.iterdir()):
            path = path / "train"
        return path if path.is_dir() else None
    return FALLBACK_DATA if FALLBACK_DATA.is_dir() else None


def external_dir() -> Path | None:
    """The new-patient folder beside the training folder (``chest_xray/external``), or None."""
    train = data_dir()
    folder = train.parent / "external" if train is not None else None
    return folder if folder is not None and (folder / CLASS_NAMES[0]).is_dir() else None


@dataclass(frozen=True)
class ImageFolderIndex:
    """File paths with integer labels from a class-subfolder layout."""

    root: Path
    class_names: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageFolderIndex:
        """A new index with only the given positions."""
        idx = np.asarray(indices, dtype=int)
        return ImageFolderIndex(self.root, self.class_names, tuple(self.paths[i] for i in idx), self.labels[idx])


def index_folder(root: Path | str, class_names: Sequence[str] | None = None) -> ImageFolderIndex:
    """List images under ``root/<class>/``, sorted, labelled by class folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Data folder {root} does not exist.")
    names = tuple(class_names) if class_names else tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not names:
        raise FileNotFoundError(f"{root} has no class subfolders (expected e.g. NORMAL/ and PNEUMONIA/).")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        folder = root / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise FileNotFoundError(f"No images found in the class folders of {root}.")
    return ImageFolderIndex(root, names, tuple(paths), np.asarray(labels, dtype=np.int64))


_PATIENT = [
    (re.compile(r"^(person\d+)_", re.I), "{}"),
    (re.compile(r"^NORMAL2-IM-(\d+)-", re.I), "normal2-{}"),
    (re.compile(r"^IM-(\d+)-", re.I), "im-{}"),
]


def patient_id(path: Path | str) -> str:
    """The patient a chest X-ray file belongs to, from its name (falls back to the file stem)."""
    name = Path(path).name
    for pattern, template in _PATIENT:
        match = pattern.match(name)
        if match:
            return template.format(match.group(1).lower())
    return Path(name).stem


def patient_groups(paths: Sequence[Path]) -> np.ndarray:
    """Group ids that keep each patient, and byte-identical duplicate files, in one group."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first_patient_of_hash: dict[str, str] = {}
    for path in paths:
        pid = patient_id(path)
        digest = hashlib.md5(Path(path).read_bytes()).hexdigest()
        other = first_patient_of_hash.setdefault(digest, pid)
        parent[find(pid)] = find(other)  # union: duplicates join the first file's patient
    roots = [find(patient_id(p)) for p in paths]
    codes = {r: i for i, r in enumerate(dict.fromkeys(roots))}
    return np.asarray([codes[r] for r in roots])


def patient_split(index: ImageFolderIndex, val_fraction: float = 0.2, seed: int = 0
                  ) -> tuple[ImageFolderIndex, ImageFolderIndex]:
    """Stratified train/validation split with no patient (or duplicate image) on both sides."""
    from sklearn.model_selection import StratifiedGroupKFold  # lazy: pages that only list files stay quick to import

    groups = patient_groups(index.paths)
    folds = StratifiedGroupKFold(n_splits=round(1 / val_fraction), shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(index)), index.labels, groups))
    return index.subset(train_idx), index.subset(val_idx)


def split_digest(index: ImageFolderIndex) -> str:
    """A digest of the images' class-folder and file names: identifies a validation set across machines."""
    names = sorted(f"{p.parent.name}/{p.name}" for p in index.paths)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def held_out_paths(index: ImageFolderIndex, split: TrainingSplit) -> frozenset[Path] | None:
    """The images of ``index`` a model trained with ``split`` never saw (its validation patients), recomputed:
    the split is deterministic for a seed. None when ``index`` is not the folder it was trained on: the
    recomputed validation set has other per-class counts or, where the checkpoint records one, another digest."""
    _, val = patient_split(index, split.val_fraction, split.seed)
    counts = tuple(int(c) for c in np.bincount(val.labels, minlength=len(index.class_names)))
    if counts != split.val_per_class or (split.val_digest is not None and split_digest(val) != split.val_digest):
        return None
    return frozenset(val.paths)


def load_tensors(index: ImageFolderIndex, prep: Preprocessing, progress: bool = True) -> torch.Tensor:
    """Decode and preprocess every image of an index into one N x C x S x S float tensor."""
    batch = torch.empty(len(index), prep.channels, prep.size, prep.size)
    for i, path in enumerate(tqdm(index.paths, desc="Loading images", disable=not progress, leave=False)):
        batch[i] = preprocess(load_image(path), prep)[0]
    return batch
