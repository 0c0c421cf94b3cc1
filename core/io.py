"""Image input: turn uploaded bytes or a path into a float array in [0, 1] plus safe metadata.

Every way a file can be unreadable ends in :class:`ImageError` with a sentence a person can act on.
Nothing here logs, stores or returns patient identifiers: DICOM files yield only modality, view,
size and bit depth.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000  # 8000 x 8000: larger than any radiograph, small enough to decode safely

# Decoder warnings never reach a log: the decode result decides (a bad file raises ImageError), and pydicom's
# can quote tag values (identifiers). Installed once here, because warnings.catch_warnings() is not thread-safe
# and the apps decode uploads on several threads at once (overlapping blocks can leave the process's filters
# switched off, or on, for good). Pillow's own decompression-bomb limit sits above MAX_PIXELS, which is checked
# before any pixel is decoded.
for _module in (r"PIL\.", r"pydicom\.", r"core\.io"):
    warnings.filterwarnings("ignore", module=_module)
MAX_BYTES = 256 * 1024 * 1024
MIN_SIDE = 32  # below this a classifier has nothing to look at

_PIL_FORMATS = {"PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"}


class ImageError(ValueError):
    """An input that cannot be used as an image; ``str(err)`` is a human sentence."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image: ``array`` is float32 in [0, 1], H x W (grayscale) or H x W x 3 (colour)."""

    array: np.ndarray
    metadata: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def is_grayscale(self) -> bool:
        """True when the image has a single channel."""
        return self.array.ndim == 2


def load_image(source: bytes | bytearray | str | Path, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Decode PNG, JPEG, TIFF, BMP or DICOM from bytes or a path; raise ImageError otherwise."""
    data = _read_source(source)
    kind = _sniff(data)
    if kind == "dicom":
        return _load_dicom(data, max_pixels)
    return _load_pillow(data, max_pixels)


def _read_source(source: bytes | bytearray | str | Path) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"No file at {path.name!r}.")
        if path.stat().st_size > MAX_BYTES:
            raise ImageError(f"The file is larger than {MAX_BYTES // 2**20} MiB.")
        data = path.read_bytes()
    else:
        raise ImageError(f"Expected image bytes or a file path, got {type(source).__name__}.")
    if not data:
        raise ImageError("The file is empty (0 bytes).")
    if len(data) > MAX_BYTES:
        raise ImageError(f"The file is larger than {MAX_BYTES // 2**20} MiB.")
    return data


def _sniff(data: bytes) -> str:
    """Classify by magic bytes so non-images are refused with a specific reason."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith((b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF8", b"RIFF")):
        return "pillow"
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise ImageError("This is a ZIP archive, not an image. Upload a PNG, JPEG, TIFF or DICOM file.")
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        raise ImageError("SVG vector drawings are not supported. Upload a PNG, JPEG, TIFF or DICOM file.")
    if head.startswith((b"<!doctype html", b"<html")):
        raise ImageError("This is an HTML page, not an image. Upload a PNG, JPEG, TIFF or DICOM file.")
    if head.startswith(b"%pdf"):
        raise ImageError("This is a PDF document, not an image. Upload a PNG, JPEG, TIFF or DICOM file.")
    if _looks_like_text(data[:4096]):
        raise ImageError("This is a text file, not an image. Upload a PNG, JPEG, TIFF or DICOM file.")
    raise ImageError("Unrecognised file format. Upload a PNG, JPEG, TIFF, BMP or DICOM file.")


def _looks_like_text(chunk: bytes) -> bool:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError("The image has no pixels.")
    if width * height > max_pixels:
        raise ImageError(
            f"The image is {width} x {height} pixels, more than the {max_pixels:,}-pixel limit "
            "(possible decompression bomb)."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"The image is {width} x {height} pixels, too small to classify (min {MIN_SIDE}).")


def _load_pillow(data: bytes, max_pixels: int) -> LoadedImage:
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format or "unknown"
        if fmt not in _PIL_FORMATS:
            raise ImageError(f"{fmt} images are not supported.")
        _check_size(*img.size, max_pixels)  # before any pixel is decoded
        img = ImageOps.exif_transpose(img)
        bits = _bit_depth(img)
        array, notes = _pil_to_array(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError("The image is too large to decode safely (possible decompression bomb).") from err
    except UnidentifiedImageError as err:
        raise ImageError("The file looks like an image but could not be decoded; it may be corrupt.") from err
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, ZeroDivisionError) as err:
        raise ImageError(f"The image could not be decoded; it may be truncated or corrupt ({_brief(err)}).") from err
    except (MemoryError, RecursionError) as err:
        raise ImageError("The image could not be decoded within safe limits.") from err
    height, width = array.shape[:2]
    meta = {"format": fmt, "size": f"{width} x {height}", "bit_depth": str(bits),
            "channels": "1" if array.ndim == 2 else "3"}
    return LoadedImage(array, meta, tuple(notes))


def _brief(err: BaseException) -> str:
    return str(err).splitlines()[0][:120] if str(err) else type(err).__name__


def _bit_depth(img: Image.Image) -> int:
    return {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(img.mode, 8)


def _pil_to_array(img: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Convert any Pillow mode to float32 in [0, 1]; grayscale stays 2-D."""
    notes: list[str] = []
    if getattr(img, "n_frames", 1) > 1:
        notes.append(f"Multi-frame file: showing frame 1 of {img.n_frames}.")
    mode = img.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        notes.append("Transparency removed by compositing onto black.")
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB" if mode != "LA" else "L")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") else None
        return _normalise(arr, scale), notes
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0, notes
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0]), notes  # colour-encoded grayscale (common for X-rays)
    return rgb, notes


def _normalise(arr: np.ndarray, scale: float | None) -> np.ndarray:
    """Map to [0, 1]: by a fixed full-scale value when known, else by the image's own range."""
    if not np.all(np.isfinite(arr)):
        raise ImageError("The image contains non-finite pixel values.")
    if scale is not None:
        return (arr / scale).astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros_like(arr, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def _load_dicom(data: bytes, max_pixels: int) -> LoadedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)  # its messages can quote tag values (identifiers)
    try:
        return _decode_dicom(pydicom.dcmread(io.BytesIO(data)), max_pixels)
    except ImageError:
        raise
    except InvalidDicomError as err:
        raise ImageError("The file has a DICOM header but is not valid DICOM.") from err
    except (MemoryError, RecursionError) as err:
        raise ImageError("The DICOM could not be decoded within safe limits.") from err
    except Exception as err:  # pydicom raises many exception types on malformed files
        raise ImageError(f"The DICOM file is corrupt or truncated ({type(err).__name__}).") from err


def _decode_dicom(ds: object, max_pixels: int) -> LoadedImage:
    """Pixels of a parsed dataset through modality LUT, VOI LUT and photometric handling; safe tags only."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds:
        raise ImageError("The DICOM file has no pixel data (it may be a report or structured document).")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _check_size(cols, rows, max_pixels)
    if rows * cols * max(frames, 1) > 4 * max_pixels:
        raise ImageError(f"The DICOM holds {frames} frames of {cols} x {rows}: too large to decode safely.")
    try:
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError) as err:
        syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        raise ImageError(
            f"The DICOM pixel data is compressed as {getattr(syntax, 'name', syntax)}, and no installed decoder "
            "handles it (install pylibjpeg with pylibjpeg-libjpeg / pylibjpeg-openjpeg, or GDCM)."
        ) from err
    notes: list[str] = []
    if frames > 1:
        pixels = pixels[0]
        notes.append(f"Multi-frame DICOM: showing frame 1 of {frames}.")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("MONOCHROME") and pixels.ndim == 2:
        arr = apply_modality_lut(pixels, ds)
        arr = apply_voi_lut(arr, ds) if ("WindowCenter" in ds or "VOILUTSequence" in ds) else arr
        arr = _normalise(np.asarray(arr, dtype=np.float64), None)
        if photometric == "MONOCHROME1":
            arr = 1.0 - arr  # MONOCHROME1 stores bright as low values; flip to the MONOCHROME2 convention
            notes.append("MONOCHROME1 inverted to display like MONOCHROME2.")
    elif pixels.ndim == 3 and pixels.shape[-1] == 3:
        arr = _normalise(np.asarray(pixels, dtype=np.float64), None)
    else:
        raise ImageError(f"Unsupported DICOM photometric interpretation {photometric!r}.")
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise ImageError(f"The image is {arr.shape[1]} x {arr.shape[0]} pixels, too small to classify.")
    meta = {
        "format": "DICOM",
        "modality": str(ds.get("Modality", "unknown")),
        "view": str(ds.get("ViewPosition", "") or "unknown"),
        "size": f"{arr.shape[1]} x {arr.shape[0]}",
        "bit_depth": str(ds.get("BitsStored", ds.get("BitsAllocated", "unknown"))),
        "channels": "1" if arr.ndim == 2 else "3",
    }
    return LoadedImage(arr.astype(np.float32), meta, tuple(notes))
