"""core.io: every awkward file is loaded correctly or refused with ImageError and a specific sentence."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.io import ImageError, load_image
from tests.core.corpus import GRAY, broken_files, dicom_bytes, pil_bytes

RAMP16 = (np.arange(64 * 80).reshape(64, 80) * 12 % 4096).astype(np.uint16)


@pytest.mark.parametrize("name", sorted(broken_files()))
def test_broken_files_are_refused_with_a_specific_message(name):
    data, phrase = broken_files()[name]
    with pytest.raises(ImageError, match=phrase):
        load_image(data)


def test_refusals_name_no_python_internals():
    for name, (data, _) in broken_files().items():
        with pytest.raises(ImageError) as err:
            load_image(data)
        assert "Traceback" not in str(err.value) and len(str(err.value)) < 300, name


@pytest.mark.parametrize("source", [None, 3, 4.5, ["a"]])
def test_wrong_types_are_refused(source):
    with pytest.raises(ImageError, match="Expected image bytes"):
        load_image(source)


def test_missing_path(tmp_path):
    with pytest.raises(ImageError, match="No file"):
        load_image(tmp_path / "nope.png")


# ------------------------------------------------------------------ formats that must load

def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.stack([gray, 255 - gray, gray // 2], axis=-1).astype(np.uint8)


CASES = {
    # name: (bytes, expected array shape, expected array or None)
    "png_l8": (pil_bytes(Image.fromarray(GRAY), "PNG"), (48, 64), GRAY / 255.0),
    "png_16bit": (pil_bytes(Image.fromarray(GRAY.astype(np.uint16) * 257), "PNG"), (48, 64), GRAY / 255.0),
    "png_rgb_gray_channels": (pil_bytes(Image.fromarray(np.stack([GRAY] * 3, -1)), "PNG"), (48, 64), GRAY / 255.0),
    "png_rgb_colour": (pil_bytes(Image.fromarray(_rgb(GRAY)), "PNG"), (48, 64, 3), _rgb(GRAY) / 255.0),
    "png_rgba_opaque": (pil_bytes(Image.fromarray(GRAY).convert("RGBA"), "PNG"), (48, 64), GRAY / 255.0),
    "png_la": (pil_bytes(Image.fromarray(GRAY).convert("LA"), "PNG"), (48, 64), GRAY / 255.0),
    "png_palette": (pil_bytes(Image.fromarray(GRAY).convert("P"), "PNG"), (48, 64), None),
    "png_1bit": (pil_bytes(Image.fromarray(GRAY > 127), "PNG"), (48, 64), (GRAY > 127).astype(float)),
    "tiff_16bit": (pil_bytes(Image.fromarray(GRAY.astype(np.uint16) * 257), "TIFF"), (48, 64), GRAY / 255.0),
    "tiff_float": (pil_bytes(Image.fromarray(GRAY.astype(np.float32) * 3 - 7), "TIFF"), (48, 64),
                   (GRAY - GRAY.min()) / float(GRAY.max() - GRAY.min())),
    "bmp": (pil_bytes(Image.fromarray(GRAY), "BMP"), (48, 64), GRAY / 255.0),
    "jpeg_gray": (pil_bytes(Image.fromarray(GRAY), "JPEG", quality=95), (48, 64), None),
    "jpeg_cmyk": (pil_bytes(Image.fromarray(_rgb(GRAY)).convert("CMYK"), "JPEG"), (48, 64, 3), None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_formats_load_to_float_in_unit_range(name):
    data, shape, expected = CASES[name]
    img = load_image(data)
    assert img.array.dtype == np.float32
    assert img.array.shape == shape
    assert img.array.min() >= 0.0 and img.array.max() <= 1.0
    if expected is not None:
        np.testing.assert_allclose(img.array, expected, atol=1e-3)


def test_rgba_transparency_is_composited_onto_black_with_a_note():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:20, :, 3] = 255  # top half opaque, bottom transparent
    img = load_image(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert img.array[:20].min() == pytest.approx(200 / 255, abs=1e-3)
    assert img.array[20:].max() == 0.0
    assert any("Transparency" in n for n in img.notes)


def test_jpeg_exif_orientation_is_applied():
    img = Image.fromarray(GRAY)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    loaded = load_image(pil_bytes(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.array.shape == (64, 48)
    assert loaded.array[0, -1] < 0.1 and loaded.array[0, 0] > 0.1  # dark corner moved from top-left to top-right


def test_path_and_bytes_give_the_same_image(tmp_path):
    data = pil_bytes(Image.fromarray(GRAY), "PNG")
    path = tmp_path / "x.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(load_image(path).array, load_image(data).array)


def test_pixel_cap_is_checked_before_decoding():
    big = pil_bytes(Image.new("L", (400, 300)), "PNG")
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(big, max_pixels=100_000)


# ------------------------------------------------------------------ DICOM

def test_dicom_monochrome2_loads_with_safe_metadata_only():
    img = load_image(dicom_bytes(RAMP16))
    assert img.array.shape == (64, 80)
    expected = (RAMP16 - RAMP16.min()) / float(RAMP16.max() - RAMP16.min())
    np.testing.assert_allclose(img.array, expected, atol=1e-6)
    assert img.metadata == {"format": "DICOM", "modality": "CR", "view": "PA", "size": "80 x 64",
                            "bit_depth": "12", "channels": "1"}
    text = repr(img)
    for secret in ("Doe", "Jane", "SECRET", "1980", "2024"):
        assert secret not in text


def test_monochrome1_and_monochrome2_of_the_same_pixels_give_the_same_array():
    mono2 = load_image(dicom_bytes(RAMP16, "MONOCHROME2")).array
    mono1 = load_image(dicom_bytes(4095 - RAMP16, "MONOCHROME1")).array
    np.testing.assert_allclose(mono1, mono2, atol=1e-6)


def test_dicom_rescale_slope_and_intercept_are_applied_before_windowing():
    plain = load_image(dicom_bytes(RAMP16)).array
    rescaled = load_image(dicom_bytes(RAMP16, RescaleSlope=2, RescaleIntercept=-1024)).array
    np.testing.assert_allclose(rescaled, plain, atol=1e-6)  # linear rescale, then min-max: same picture
    windowed = load_image(dicom_bytes(RAMP16, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=1024,
                                      WindowWidth=2048)).array
    values = RAMP16.astype(float) * 2 - 1024
    inside = (values > 100) & (values < 1900)
    expected = np.clip((values - (1024 - 0.5)) / (2048 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(windowed[inside], expected[inside], atol=2e-3)
    assert windowed[values <= 0].max() == pytest.approx(0.0, abs=1e-6)


def test_multiframe_dicom_shows_first_frame_with_a_note():
    frames = np.stack([RAMP16, 4095 - RAMP16, RAMP16 // 2])
    img = load_image(dicom_bytes(frames, frames=3))
    np.testing.assert_allclose(img.array, load_image(dicom_bytes(RAMP16)).array, atol=1e-6)
    assert any("frame 1 of 3" in n for n in img.notes)


def test_rle_compressed_dicom_is_decoded():
    from pydicom import dcmread
    from pydicom.uid import RLELossless

    raw = dicom_bytes(RAMP16)
    import io

    ds = dcmread(io.BytesIO(raw))
    ds.compress(RLELossless)
    buf = io.BytesIO()
    ds.save_as(buf)
    np.testing.assert_allclose(load_image(buf.getvalue()).array, load_image(raw).array, atol=1e-6)
