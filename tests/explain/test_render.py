"""Rendering: colour maps by kind, scales (per image, fixed, shared, symmetric for signed maps), overlays on grey,
single-channel and colour images, resizing, and colour bars."""

import matplotlib
import numpy as np
import pytest

from core.explain.render import (
    colormap,
    colour_bar,
    colourise,
    overlay,
    shared_scale,
    to_rgb,
    value_range,
    with_colour_bar,
)

RAMP = np.linspace(0, 1, 64 * 48).reshape(48, 64)


def test_colour_maps_are_colour_blind_safe_choices_per_kind():
    assert colormap(False).name == "viridis" and colormap(True).name == "RdBu_r"
    assert colormap(False, "cividis").name == "cividis"
    with pytest.raises(ValueError, match="not offered for signed"):
        colormap(True, "viridis")
    with pytest.raises(ValueError, match="not offered for unsigned"):
        colormap(False, "jet")


def test_value_ranges_per_image_fixed_and_shared():
    h = np.array([[-1.0, 0.5], [2.0, 3.0]])
    assert value_range(h, signed=False) == (-1.0, 3.0)
    assert value_range(h, signed=True) == (-3.0, 3.0)
    assert value_range(np.zeros((2, 2)), signed=False) == (0.0, 1.0)  # flat maps still get a valid scale
    assert value_range(h, signed=False, scale=(0, 10)) == (0.0, 10.0)
    with pytest.raises(ValueError, match="symmetric"):
        value_range(h, signed=True, scale=(0, 1))
    with pytest.raises(ValueError, match="vmin < vmax"):
        value_range(h, signed=False, scale=(1, 1))
    assert shared_scale([h, 5 * h], signed=False) == (-5.0, 15.0)
    assert shared_scale([h, -4 * h], signed=True) == (-12.0, 12.0)


def test_signed_maps_put_zero_at_the_centre_colour_and_unsigned_span_the_map():
    h = np.array([[-2.0, 0.0, 1.0]])
    rgb = colourise(h, signed=True)
    cmap = matplotlib.colormaps["RdBu_r"]
    np.testing.assert_array_equal(rgb[0, 1], np.array(cmap(0.5, bytes=True)[:3]))
    np.testing.assert_array_equal(rgb[0, 0], np.array(cmap(0.0, bytes=True)[:3]))  # -2 is the extreme
    np.testing.assert_array_equal(rgb[0, 2], np.array(cmap(0.75, bytes=True)[:3]))
    ramp = colourise(RAMP, signed=False)
    viridis = matplotlib.colormaps["viridis"]
    np.testing.assert_array_equal(ramp[0, 0], np.array(viridis(0.0, bytes=True)[:3]))
    np.testing.assert_array_equal(ramp[-1, -1], np.array(viridis(1.0, bytes=True)[:3]))
    clipped = colourise(RAMP, signed=False, scale=(0.25, 0.5))
    np.testing.assert_array_equal(clipped[-1, -1], np.array(viridis(1.0, bytes=True)[:3]))


@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 1), (48, 64, 3)])
def test_overlays_on_grey_single_channel_and_colour_images(shape):
    img = np.random.default_rng(0).random(shape).astype(np.float32)
    out = overlay(img, RAMP, alpha=0.4)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(overlay(img, RAMP, alpha=0.0), np.round(255 * to_rgb(img)).astype(np.uint8))
    np.testing.assert_array_equal(overlay(img, RAMP, alpha=1.0), colourise(RAMP, signed=False))
    grey = to_rgb(img)
    if len(shape) == 2 or shape[-1] == 1:
        assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])


def test_a_heatmap_of_another_size_is_resized_and_keeps_its_scale():
    img = np.full((96, 128), 0.5, np.float32)
    small = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    out = overlay(img, small, alpha=1.0)
    viridis = matplotlib.colormaps["viridis"]
    assert out.shape == (96, 128, 3)
    np.testing.assert_array_equal(out[0, 0], np.array(viridis(0.0, bytes=True)[:3]))  # corner keeps the minimum
    np.testing.assert_array_equal(out[-1, -1], np.array(viridis(1.0, bytes=True)[:3]))
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, small, alpha=1.5)
    with pytest.raises(ValueError, match="H x W"):
        overlay(img, np.zeros((2, 2, 2)))


def test_colour_bars_show_the_map_and_attach_to_pictures():
    bar = colour_bar(-1.0, 1.0, signed=True, label="IG", height=200, width=80)
    assert bar.shape == (200, 80, 3) and bar.dtype == np.uint8
    pixels = bar.reshape(-1, 3).astype(float)
    cmap = matplotlib.colormaps["RdBu_r"]
    for t in (0.0, 0.5, 1.0):  # both ends and the centre of the diverging map are drawn
        assert np.abs(pixels - np.array(cmap(t, bytes=True)[:3])).sum(1).min() < 25, t
    picture = overlay(RAMP, RAMP)
    both = with_colour_bar(picture, 0.0, 1.0)
    assert both.shape[0] == 48 and both.shape[1] > 64
    np.testing.assert_array_equal(both[:, :64], picture)
    with pytest.raises(ValueError, match="vmin < vmax"):
        colour_bar(1.0, 1.0)
