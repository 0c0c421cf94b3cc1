"""Large images cost bounded memory: the cap counts channels and bit depth (bytes once decoded), and what is kept is
at most KEEP_SIDE a side whatever the upload, with the file's own size in the metadata. Memory is measured with
tracemalloc (numpy's arrays are traced; Pillow's decode buffer is bounded by the byte cap checked before it)."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from core.io import KEEP_SIDE, MAX_DECODED_BYTES, MAX_PIXELS, ImageError, load_image
from tests.core.corpus import dicom_bytes, pil_bytes

COLOUR, GREY = 2, 0  # PNG colour types


def png(width: int, height: int, colour: int, row: Callable[[int], bytes]) -> bytes:
    """A valid PNG of width x height (8-bit grey or RGB), compressed while it is written: large images, small bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def rows() -> Iterator[bytes]:
        for y in range(height):
            yield b"\x00" + row(y)  # filter type 0

    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(r) for r in rows()) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def measured(fn: Callable[[], object]) -> tuple[object, int]:
    """(result, peak bytes traced while fn ran)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_200_kb_8000_x_7999_rgb_png_is_refused_before_decoding():
    stripe = bytes([200, 40, 40] * 4000 + [40, 40, 200] * 4000)  # colour: the channels differ
    data = png(8000, 7999, COLOUR, lambda y: stripe)
    assert len(data) < 400_000 and MAX_PIXELS >= 8000 * 7999  # under the old pixel cap

    def refused() -> str:
        with pytest.raises(ImageError) as error:
            load_image(data)
        return str(error.value)

    message, peak = measured(refused)
    assert "8000 x 7999 pixels (3 channels, 8-bit): 183 MiB once decoded, more than the 128 MiB limit" in message
    assert peak < 4 * len(data) + 2**20  # nothing but the file's bytes


def test_a_large_colour_png_within_the_cap_is_kept_downscaled():
    width, height = 6000, 4000  # 72 MB decoded: accepted; 288 MB as float32 in full
    row = np.zeros((width, 3), np.uint8)
    row[:, 0] = np.linspace(0, 255, width).astype(np.uint8)
    row[:, 2] = 90
    data = png(width, height, COLOUR, lambda y: row.tobytes())
    loaded, peak = measured(lambda: load_image(data))
    assert loaded.array.shape == (1365, KEEP_SIDE, 3) and loaded.array.dtype == np.float32
    assert loaded.metadata["size"] == "6000 x 4000" and loaded.metadata["analysed_at"] == "2048 x 1365"
    assert any("Downscaled from 6000 x 4000 to 2048 x 1365" in n for n in loaded.notes)
    np.testing.assert_allclose(loaded.array[10, :, 2], 90 / 255, atol=1 / 255)  # the picture survives the shrink
    assert loaded.array.nbytes < 34 * 2**20  # vs 275 MiB kept in full before
    assert peak < 3 * loaded.array.nbytes, f"peak {peak / 2**20:.0f} MiB traced"


def test_an_8000_x_8000_grey_png_still_loads_and_is_kept_at_2048():
    data = png(8000, 8000, GREY, lambda y: bytes([y % 256]) * 8000)
    loaded, peak = measured(lambda: load_image(data))
    assert loaded.array.shape == (KEEP_SIDE, KEEP_SIDE) and loaded.metadata["size"] == "8000 x 8000"
    assert peak < 3 * loaded.array.nbytes  # 16 MiB kept instead of 244 MiB


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_and_keeps_its_orientation():
    img = Image.fromarray(np.tile(np.linspace(0, 255, 4400).astype(np.uint8), (4200, 1)))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    loaded = load_image(pil_bytes(img, "JPEG", quality=90, exif=exif.tobytes()))
    assert loaded.metadata["size"] == "4200 x 4400"  # as displayed, upright
    assert loaded.array.shape == (KEEP_SIDE, round(4200 * KEEP_SIDE / 4400))
    assert loaded.array[0, 0] < 0.1 and loaded.array[-1, 0] > 0.9  # dark side moved from left to top


def test_a_large_dicom_is_kept_downscaled_and_a_huge_one_refused():
    pixels = (np.arange(3000 * 2500) % 4096).reshape(3000, 2500)
    loaded = load_image(dicom_bytes(pixels))
    assert loaded.array.shape == (KEEP_SIDE, round(2500 * KEEP_SIDE / 3000))
    assert loaded.metadata["size"] == "2500 x 3000" and "analysed_at" in loaded.metadata
    with pytest.raises(ImageError, match="more than the 1 MiB limit"):
        load_image(dicom_bytes(np.zeros((1024, 1024))), max_bytes=2**20)  # 16-bit: 2 MiB decoded


def test_small_images_and_keep_side_none_are_untouched():
    img = Image.fromarray(np.full((300, 200), 128, np.uint8))
    loaded = load_image(pil_bytes(img, "PNG"))
    assert loaded.array.shape == (300, 200) and "analysed_at" not in loaded.metadata and not loaded.notes
    big = png(3000, 2100, GREY, lambda y: bytes(3000))
    assert load_image(big, keep_side=None).array.shape == (2100, 3000)


def test_the_byte_cap_is_128_mib():
    assert MAX_DECODED_BYTES == 128 * 2**20
