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
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 64_000_000  # 8000 x 8000: larger than any radiograph, small enough to decode safely
# What the decoded raster may occupy (pixels x channels x bytes per sample, before any conversion to float): 8000 x
# 8000 8-bit grey or 16-bit grey up to 67 Mpx, colour up to 44.7 Mpx. Without it an 8000 x 8000 RGB PNG of 200 KB
# passes the pixel cap and pins gigabytes once converted to float.
MAX_DECODED_BYTES = 128 * 2**20
# Longer side above which an image is kept downscaled (to this side): twice the largest model input (1024 px) and
# far above the display sizes, so nothing the apps compute changes, while an 8000 x 8000 upload is kept as 16 MiB
# of float32 grey instead of 244 MiB (732 MiB in colour).
KEEP_SIDE = 2048

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
    """A decoded image: ``array`` is float32 in [0, 1], H x W (grayscale) or H x W x 3 (colour), at most
    ``KEEP_SIDE`` on its longer side unless asked otherwise; ``metadata["size"]`` is the file's own size and, when
    the array is smaller, ``metadata["analysed_at"]`` the array's."""

    array: np.ndarray
    metadata: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def is_grayscale(self) -> bool:
        """True when the image has a single channel."""
        return self.array.ndim == 2


def load_image(source: bytes | bytearray | str | Path, max_pixels: int = MAX_PIXELS,
               keep_side: int | None = KEEP_SIDE, max_bytes: int = MAX_DECODED_BYTES) -> LoadedImage:
    """Decode PNG, JPEG, TIFF, BMP or DICOM from bytes or a path; raise ImageError otherwise.

    Bounded before any pixel is decoded (``max_pixels``, and ``max_bytes`` for the decoded raster, channels and
    bit depth included), and kept at most ``keep_side`` on the longer side (None keeps the full resolution), so
    what a caller holds, in a session or a cache, stays small however large the upload.
    """
    data = _read_source(source)
    kind = _sniff(data)
    if kind == "dicom":
        return _load_dicom(data, max_pixels, keep_side, max_bytes)
    return _load_pillow(data, max_pixels, keep_side, max_bytes)


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


# (channels, bytes per sample) of the raster Pillow decodes; palette images count as the RGB or RGBA they become.
_MODE_LAYOUT = {"1": (1, 1), "L": (1, 1), "P": (3, 1), "PA": (4, 1), "LA": (2, 1), "La": (2, 1), "I;16": (1, 2),
                "I;16B": (1, 2), "I;16L": (1, 2), "I;16N": (1, 2), "I": (1, 4), "F": (1, 4), "RGB": (3, 1),
                "YCbCr": (3, 1), "LAB": (3, 1), "HSV": (3, 1)}


def _check_decoded(width: int, height: int, channels: int, sample_bytes: int, max_bytes: int) -> None:
    """Refuse a raster that would take more than ``max_bytes`` once decoded (before any pixel is decoded)."""
    size = width * height * channels * sample_bytes
    if size > max_bytes:
        kind = "grey" if channels == 1 else f"{channels} channels"
        raise ImageError(
            f"The image is {width} x {height} pixels ({kind}, {8 * sample_bytes}-bit): {size / 2**20:,.0f} MiB "
            f"once decoded, more than the {max_bytes / 2**20:,.0f} MiB limit. Upload a smaller image (an X-ray "
            "needs no more than 2048 pixels a side)."
        )


def _shrink_size(width: int, height: int, keep_side: int | None) -> tuple[int, int] | None:
    """The size to keep an image at, longer side ``keep_side``; None when it is small enough already."""
    if keep_side is None or max(width, height) <= keep_side:
        return None
    scale = keep_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


# EXIF orientation -> the transpose that displays the image upright (as ImageOps.exif_transpose)
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def _shrink(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``img`` resized to ``size`` (area-averaged, then Lanczos). Palette and bilevel images are converted first,
    since Pillow resizes those by nearest neighbour."""
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _load_pillow(data: bytes, max_pixels: int, keep_side: int | None, max_bytes: int) -> LoadedImage:
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format or "unknown"
        if fmt not in _PIL_FORMATS:
            raise ImageError(f"{fmt} images are not supported.")
        width, height = img.size
        _check_size(width, height, max_pixels)  # before any pixel is decoded
        if fmt == "JPEG" and keep_side is not None:
            img.draft(None, (keep_side, keep_side))  # decode at 1/2, 1/4 or 1/8 scale when that is still large
        layout = (4, 1) if img.mode == "P" and "transparency" in img.info else _MODE_LAYOUT.get(img.mode, (4, 1))
        _check_decoded(*img.size, *layout, max_bytes)
        orientation = img.getexif().get(0x0112, 1)
        frames = getattr(img, "n_frames", 1)
        bits = _bit_depth(img)
        target = _shrink_size(*img.size, keep_side)
        if target is not None:
            img = _shrink(img, target)
        transpose = _ORIENT.get(orientation)
        if transpose is not None:
            img = img.transpose(transpose)
            width, height = (height, width) if orientation >= 5 else (width, height)
        array, notes = _pil_to_array(img, frames)
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
    meta = {"format": fmt, "size": f"{width} x {height}", "bit_depth": str(bits),
            "channels": "1" if array.ndim == 2 else "3"}
    return _kept(array, meta, notes, width, height)


def _kept(array: np.ndarray, meta: dict[str, str], notes: list[str], width: int, height: int) -> LoadedImage:
    """The LoadedImage, with a note and ``analysed_at`` when the array is smaller than the file's ``width`` x
    ``height``."""
    kept_h, kept_w = array.shape[:2]
    if (kept_w, kept_h) != (width, height):
        meta["analysed_at"] = f"{kept_w} x {kept_h}"
        notes.append(f"Downscaled from {width} x {height} to {kept_w} x {kept_h} pixels for analysis (the models "
                     "look at 1024 pixels at most).")
    return LoadedImage(array, meta, tuple(notes))


def _brief(err: BaseException) -> str:
    return str(err).splitlines()[0][:120] if str(err) else type(err).__name__


def _bit_depth(img: Image.Image) -> int:
    return {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(img.mode, 8)


def _pil_to_array(img: Image.Image, frames: int = 1) -> tuple[np.ndarray, list[str]]:
    """Convert any Pillow mode to float32 in [0, 1]; grayscale stays 2-D. ``frames``: how many the file holds."""
    notes: list[str] = []
    if frames > 1:
        notes.append(f"Multi-frame file: showing frame 1 of {frames}.")
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


def _load_dicom(data: bytes, max_pixels: int, keep_side: int | None, max_bytes: int) -> LoadedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)  # its messages can quote tag values (identifiers)
    try:
        return _decode_dicom(pydicom.dcmread(io.BytesIO(data)), max_pixels, keep_side, max_bytes)
    except ImageError:
        raise
    except InvalidDicomError as err:
        raise ImageError("The file has a DICOM header but is not valid DICOM.") from err
    except (MemoryError, RecursionError) as err:
        raise ImageError("The DICOM could not be decoded within safe limits.") from err
    except Exception as err:  # pydicom raises many exception types on malformed files
        raise ImageError(f"The DICOM file is corrupt or truncated ({type(err).__name__}).") from err


def _decode_dicom(ds: object, max_pixels: int, keep_side: int | None = KEEP_SIDE,
                  max_bytes: int = MAX_DECODED_BYTES) -> LoadedImage:
    """Pixels of a parsed dataset through modality LUT, VOI LUT and photometric handling, then kept at most
    ``keep_side`` a side; safe tags only."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds:
        raise ImageError("The DICOM file has no pixel data (it may be a report or structured document).")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _check_size(cols, rows, max_pixels)
    if rows * cols * max(frames, 1) > 4 * max_pixels:
        raise ImageError(f"The DICOM holds {frames} frames of {cols} x {rows}: too large to decode safely.")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    sample_bytes = max(1, (int(ds.get("BitsAllocated", 8) or 8) + 7) // 8)
    if rows * cols * max(frames, 1) * samples * sample_bytes > max_bytes:  # pixel_array decodes every frame
        if frames > 1:
            raise ImageError(f"The DICOM holds {frames} frames of {cols} x {rows}: more than the "
                             f"{max_bytes / 2**20:,.0f} MiB limit once decoded.")
        _check_decoded(cols, rows, samples, sample_bytes, max_bytes)
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
    height, width = arr.shape[:2]
    meta = {
        "format": "DICOM",
        "modality": str(ds.get("Modality", "unknown")),
        "view": str(ds.get("ViewPosition", "") or "unknown"),
        "size": f"{width} x {height}",
        "bit_depth": str(ds.get("BitsStored", ds.get("BitsAllocated", "unknown"))),
        "channels": "1" if arr.ndim == 2 else "3",
    }
    arr = arr.astype(np.float32)
    target = _shrink_size(width, height, keep_side)
    if target is not None:
        arr = _shrink_float(arr, target)
    return _kept(arr, meta, notes, width, height)


def _shrink_float(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float32 image in [0, 1] (H x W or H x W x 3) resized to ``size`` (width, height), one plane at a time."""
    planes = [arr] if arr.ndim == 2 else [arr[..., c] for c in range(arr.shape[2])]
    small = [np.asarray(Image.fromarray(np.ascontiguousarray(p)).resize(size, Image.Resampling.LANCZOS,
                                                                          reducing_gap=3.0)) for p in planes]
    out = small[0] if arr.ndim == 2 else np.stack(small, axis=-1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
