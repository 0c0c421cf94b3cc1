"""Example X-rays from the data folder (when there is one): a few of each class, picked deterministically, and a
DICOM pair made from one of them so a showcase can show DICOM handling in one click.

The DICOM files are written at run time with pydicom from a training image of the public dataset (Kermany et al.
2018, CC BY 4.0), never committed: no patient data beyond the dataset's own image; the only text they carry is the
source file's name and the dataset's attribution. One is stored as MONOCHROME2 (bright = high values), its twin
as MONOCHROME1 (the same film with inverted values, as some X-ray systems store it): both must look and classify
alike.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data import data_dir, index_folder
from core.embed import thumbnail
from core.embed.cache import cache_dir
from core.io import ImageError, LoadedImage, load_image

log = logging.getLogger(__name__)
PER_CLASS = 4
THUMBNAIL = 96
DICOM_BITS = 12  # stored bits of the generated DICOM files (a typical radiograph's depth)
PHOTOMETRIC = {"MONOCHROME2": "DICOM", "MONOCHROME1": "DICOM, inverted"}  # -> gallery caption


@dataclass(frozen=True)
class Example:
    """One example image: where it is, what to call it (status line), its gallery caption and a small preview."""

    path: Path
    label: str
    thumbnail: np.ndarray
    caption: str = ""

    @property
    def short(self) -> str:
        """The gallery caption: the given one, else the class name."""
        return self.caption or self.label.split(" · ")[0]


def pick_examples(per_class: int = PER_CLASS, folder: Path | None = None) -> list[Example]:
    """Evenly spaced images of every class folder (none when there is no data folder), then the DICOM pair made
    from the last class's first pick (written under ``folder``, default: the cache folder's ``examples``)."""
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
    source = next((e for e in examples if e.label.startswith(index.class_names[-1])), None)
    return examples + (dicom_examples(source, folder) if source is not None else [])


def dicom_examples(source: Example, folder: Path | None = None) -> list[Example]:
    """The MONOCHROME2 and MONOCHROME1 DICOM files of ``source``'s image, written once under ``folder`` (default:
    ``examples`` in the cache folder, else a temporary folder); none when they cannot be written."""
    for place in ([folder] if folder is not None else [cache_dir() / "examples",
                                                        Path(tempfile.gettempdir()) / "cnnlens-examples"]):
        try:
            place.mkdir(parents=True, exist_ok=True)
            out = []
            for photometric, caption in PHOTOMETRIC.items():
                path = place / f"{source.path.stem}-{photometric.lower()}.dcm"
                if not path.exists():
                    write_dicom(load_image(source.path), path, photometric, source.path.name)
                image = load_image(path)
                label = f"{source.short} · DICOM ({photometric}) made from {source.path.name}"
                out.append(Example(path, label, thumbnail(image.array, THUMBNAIL), caption))
            return out
        except (OSError, ImageError) as err:
            log.warning("DICOM examples could not be written to %s: %s", place, err)
    return []


def write_dicom(image: LoadedImage, path: Path, photometric: str, source_name: str) -> None:
    """Store a greyscale image as a de-identified DICOM file (secondary capture, DICOM_BITS stored bits); with
    MONOCHROME1 the values are inverted so that the file shows the same film."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    grey = image.array if image.array.ndim == 2 else image.array.mean(axis=2)
    top = 2**DICOM_BITS - 1
    values = np.round(np.clip(grey, 0, 1) * top).astype(np.uint16)
    if photometric == "MONOCHROME1":
        values = (top - values).astype(np.uint16)
    uid = generate_uid(entropy_srcs=[source_name, photometric])  # the same file on every machine
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.PatientName, ds.PatientID = "", ""  # type 2: present and empty
    ds.PatientIdentityRemoved = "YES"
    ds.Modality = "OT"  # other: converted from a JPEG, not acquired
    ds.ImageComments = f"Made by CNN Lens from {source_name} of Kermany et al. 2018 (CC BY 4.0). Education only."
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, DICOM_BITS, DICOM_BITS - 1, 0
    ds.PixelData = values.tobytes()
    partial = path.with_suffix(".part")
    ds.save_as(partial, enforce_file_format=True)
    partial.replace(path)  # never a half-written file under the final name
