"""The image chooser the classroom pages share: a chest X-ray from the data folder, a scikit-image sample, or an
upload, decoded once by ``core.io`` and cached, with a clear message for a file that cannot be read."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import streamlit as st

from core.data import CLASS_NAMES, data_dir, index_folder
from core.io import ImageError, load_image
from core.lessons.conv import SAMPLES, sample_image

XRAY, SAMPLE, UPLOAD = "chest X-ray", "scikit-image sample", "upload"
FORMATS = "PNG, JPEG, TIFF, BMP or DICOM"


@dataclass(frozen=True)
class PickedImage:
    """The chosen image in [0, 1] (grayscale or RGB), a stable key for caches, a caption and decoder notes."""

    array: np.ndarray
    key: str
    name: str
    notes: tuple[str, ...] = ()


@st.cache_data(show_spinner=False)
def xray_paths(root: str) -> dict[str, list[str]]:
    """The data folder's X-ray paths by class name; classes without images are left out, and a folder without
    any gives an empty dict (the pages then offer the other sources)."""
    try:
        index = index_folder(root, CLASS_NAMES)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return {}
    by_class = {name: [str(p) for p, label in zip(index.paths, index.labels, strict=True) if label == i]
                for i, name in enumerate(index.class_names)}
    return {name: paths for name, paths in by_class.items() if paths}


@st.cache_data(show_spinner=False, max_entries=32)
def decode(source: bytes | str) -> tuple[np.ndarray, tuple[str, ...]]:
    """``core.io.load_image`` on a path or an upload's bytes, cached: (array, notes)."""
    loaded = load_image(source)
    return loaded.array, loaded.notes


@st.cache_data(show_spinner=False, max_entries=8)
def _sample(name: str) -> np.ndarray:
    return sample_image(name)  # float64, as scikit-image gives it: the convolution lesson's numbers stay exact


def pick_image(prefix: str, *, sidebar: bool = False, default: str = XRAY,
               fallback: str | None = None) -> PickedImage | None:
    """Let the visitor choose an image; widget keys start with ``prefix``.

    ``default`` is the source selected first (X-rays only when the data folder exists). While no file is
    uploaded, ``fallback`` (a scikit-image sample) stands in; without one the page is told to wait. Returns None
    after showing the reason when there is no usable image.
    """
    where = st.sidebar if sidebar else st
    root = data_dir()
    paths = xray_paths(str(root)) if root else {}
    sources = [*([XRAY] if paths else []), SAMPLE, UPLOAD]
    source = where.radio("Source" if sidebar else "Image", sources,  # the sidebar has an "Image" header
                         index=sources.index(default) if default in sources else 0,
                         horizontal=not sidebar, key=f"{prefix}_source")
    if source == XRAY:
        label = where.selectbox("Class", list(paths), index=len(paths) - 1, key=f"{prefix}_xray_class")
        number = where.number_input(f"Image number (of {len(paths[label])})", 1, len(paths[label]), 1,
                                    key=f"{prefix}_xray_index")
        path = paths[label][int(number) - 1]
        picked = _decoded(path, path, f"{label} X-ray #{number}", "this X-ray")
    elif source == SAMPLE:
        name = where.selectbox("Sample", SAMPLES, key=f"{prefix}_sample")
        picked = PickedImage(_sample(name), f"skimage:{name}", f"{name} (scikit-image)")
    else:
        upload = where.file_uploader(FORMATS, key=f"{prefix}_upload")
        if upload is None:
            if fallback is None:
                where.info(f"Choose a file ({FORMATS}).")
                return None
            where.info(f"Choose a file; until then the {fallback} sample is used.")
            return PickedImage(_sample(fallback), f"skimage:{fallback}", f"{fallback} (scikit-image)")
        data = upload.getvalue()
        picked = _decoded(data, hashlib.sha256(data).hexdigest(), upload.name, upload.name)
    for note in picked.notes if picked else ():
        where.caption(note)
    return picked


def _decoded(source: bytes | str, key: str, name: str, what: str) -> PickedImage | None:
    try:
        array, notes = decode(source)
    except ImageError as err:
        st.error(f"Could not use {what}: {err}")
        return None
    return PickedImage(array, key, name, notes)
