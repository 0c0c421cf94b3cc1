"""Awkward and broken image files generated in memory, shared by the I/O, API and fuzz tests."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

RNG = np.random.default_rng(0)
GRAY = (np.linspace(0, 255, 64 * 48).reshape(48, 64)).astype(np.uint8)  # H=48, W=64 ramp


def pil_bytes(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    """Encode a Pillow image to bytes."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels but carries almost no data (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(
        b"IEND", b"")


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", frames: int = 1, syntax: str | None = None,
                with_pixels: bool = True, **tags: object) -> bytes:
    """A minimal valid DICOM file holding ``pixels`` (uint16), with identifying tags that must never leak."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-12345"
    ds.PatientBirthDate = "19800101"
    ds.StudyDate = "20240102"
    ds.Modality = "CR"
    ds.ViewPosition = "PA"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    rows, cols = pixels.shape[-2:]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in tags.items():
        setattr(ds, key, value)
    if with_pixels:
        raw = pixels.astype(np.uint16).tobytes()
        if meta.TransferSyntaxUID.is_compressed:  # wrap as one fragment; no decoder will accept it
            from pydicom.encaps import encapsulate

            raw = encapsulate([raw])
        ds.PixelData = raw
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def zip_bytes() -> bytes:
    """A ZIP archive holding one PNG (an archive, not an image)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("xray.png", pil_bytes(Image.fromarray(GRAY), "PNG"))
    return buf.getvalue()


def broken_files() -> dict[str, tuple[bytes, str]]:
    """Files that must be refused, with a phrase the refusal message must contain."""
    png = pil_bytes(Image.fromarray(GRAY), "PNG")
    jpeg = pil_bytes(Image.fromarray(GRAY), "JPEG")
    ramp = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    return {
        "empty": (b"", "empty"),
        "truncated_png": (png[: len(png) // 2], "truncated"),
        "truncated_jpeg": (jpeg[: len(jpeg) // 2], "truncated"),
        "text": (b"patient notes: nothing to see here\n" * 10, "text file"),
        "html": (b"<!DOCTYPE html><html><body>hi</body></html>", "HTML"),
        "svg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG"),
        "zip": (zip_bytes(), "ZIP"),
        "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF"),
        "random_bytes": (RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes().replace(b"\x00", b"\xff"),
                         "Unrecognised"),
        "bomb_png": (png_header_only(100_000, 100_000), "decompression bomb"),
        "too_small": (pil_bytes(Image.new("L", (16, 16)), "PNG"), "too small"),
        "dicom_no_pixels": (dicom_bytes(ramp, with_pixels=False), "no pixel data"),
        "dicom_unsupported_codec": (dicom_bytes(ramp, syntax="1.2.840.10008.1.2.4.100"), "MPEG2"),
        "dicom_truncated": (dicom_bytes(ramp)[:-3000], "DICOM"),
    }
