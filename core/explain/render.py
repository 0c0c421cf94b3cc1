"""Heatmaps that carry their scale: colour maps, overlays on (1-channel) X-rays and colour bars.

Unsigned maps use a perceptually uniform, colour-blind-safe map (viridis, cividis, inferno, magma); signed maps
use a diverging map (RdBu_r: blue negative, red positive) with 0 always at its centre, so the colour of zero
never moves. The scale is either per image or fixed (vmin, vmax), e.g. shared across images and methods via
``shared_scale``, and the same scale drives the colour bar. Colours come from matplotlib's colormaps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from PIL import Image

UNSIGNED_CMAPS = ("viridis", "cividis", "inferno", "magma")
SIGNED_CMAPS = ("RdBu_r", "coolwarm", "PuOr_r")
Scale = Literal["per-image"] | tuple[float, float]


def colormap(signed: bool, name: str | None = None) -> Colormap:
    """The matplotlib colour map for a signed (diverging) or unsigned (sequential) heatmap."""
    allowed = SIGNED_CMAPS if signed else UNSIGNED_CMAPS
    name = name or allowed[0]
    if name not in allowed:
        kind = "signed (diverging)" if signed else "unsigned (sequential)"
        raise ValueError(f"colour map {name!r} is not offered for {kind} maps; choose one of {', '.join(allowed)}.")
    return matplotlib.colormaps[name]


def value_range(heatmap: np.ndarray, signed: bool, scale: Scale = "per-image") -> tuple[float, float]:
    """(vmin, vmax) the colours span: a fixed scale as given; per image, [min, max] for unsigned maps and
    [-m, m] with m = max |value| for signed maps (so 0 sits at the centre of the diverging map)."""
    if scale != "per-image":
        vmin, vmax = (float(v) for v in scale)
        if not vmax > vmin:
            raise ValueError(f"a fixed scale needs vmin < vmax, got ({vmin}, {vmax}).")
        if signed and not np.isclose(vmin, -vmax):
            raise ValueError(f"a signed map needs a scale symmetric about 0, got ({vmin}, {vmax}).")
        return vmin, vmax
    h = np.asarray(heatmap, dtype=np.float64)
    if signed:
        m = float(np.abs(h).max())
        return (-m, m) if m > 0 else (-1.0, 1.0)
    lo, hi = float(h.min()), float(h.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def shared_scale(heatmaps: Iterable[np.ndarray], signed: bool) -> tuple[float, float]:
    """One fixed scale covering several maps (to compare images or methods on the same colours)."""
    maps = [np.asarray(h, dtype=np.float64) for h in heatmaps]
    if not maps:
        raise ValueError("shared_scale needs at least one heatmap.")
    if signed:
        m = max(float(np.abs(h).max()) for h in maps)
        return (-m, m) if m > 0 else (-1.0, 1.0)
    lo, hi = min(float(h.min()) for h in maps), max(float(h.max()) for h in maps)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def colourise(heatmap: np.ndarray, signed: bool, scale: Scale = "per-image", cmap: str | None = None) -> np.ndarray:
    """Heatmap (H x W) -> uint8 RGB (H x W x 3) on the given scale (values outside it are clipped)."""
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"a heatmap must be H x W, got shape {h.shape}.")
    vmin, vmax = value_range(h, signed, scale)
    t = np.clip((h - vmin) / (vmax - vmin), 0.0, 1.0)
    return colormap(signed, cmap)(t, bytes=True)[..., :3]


def to_rgb(image01: np.ndarray) -> np.ndarray:
    """Image in [0, 1] (H x W grey, H x W x 1 or H x W x 3) -> float H x W x 3 in [0, 1]."""
    img = np.asarray(image01, dtype=np.float64)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an H x W or H x W x 3 image, got shape {img.shape}.")
    return np.clip(img, 0.0, 1.0)


def overlay(image01: np.ndarray, heatmap: np.ndarray, *, signed: bool = False, alpha: float = 0.5,
            cmap: str | None = None, scale: Scale = "per-image") -> np.ndarray:
    """Blend a colourised heatmap over an image -> uint8 RGB at the image's size.

    A heatmap of another size (e.g. model-input resolution over the original X-ray) is resized bilinearly
    with Pillow before colouring, so colours still match the colour bar.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    base = to_rgb(image01)
    h = np.asarray(heatmap, dtype=np.float32)
    if h.shape != base.shape[:2]:
        if h.ndim != 2:
            raise ValueError(f"a heatmap must be H x W, got shape {h.shape}.")
        vmin, vmax = value_range(h, signed, scale)  # keep the scale of the map as computed, not as resampled
        h = np.asarray(Image.fromarray(h).resize(base.shape[1::-1], Image.Resampling.BILINEAR))
        scale = (vmin, vmax)
    colours = colourise(h, signed, scale, cmap).astype(np.float64) / 255.0
    return np.round(255.0 * ((1.0 - alpha) * base + alpha * colours)).astype(np.uint8)


def colour_bar(vmin: float, vmax: float, *, signed: bool = False, cmap: str | None = None, label: str = "",
               height: int = 256, width: int = 90, font: float = 7, ticks: int | None = None) -> np.ndarray:
    """A vertical colour bar with tick labels as a uint8 RGB image (height x width x 3): ``font`` points for
    the ticks and label, at most ``ticks`` ticks (None: matplotlib's choice)."""
    if not vmax > vmin:
        raise ValueError(f"a colour bar needs vmin < vmax, got ({vmin}, {vmax}).")
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)  # no pyplot: no global state, safe in threads
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.05, 0.2, 0.9))
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(vmin, vmax), colormap(signed, cmap)),
                       cax=ax)
    if ticks is not None:
        bar.locator = matplotlib.ticker.MaxNLocator(ticks)  # the default formatter gives the ticks their digits
        bar.update_ticks()
    ax.tick_params(labelsize=font, length=3)
    if label:
        ax.set_ylabel(label, fontsize=font + 1, labelpad=2)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def with_colour_bar(picture: np.ndarray, vmin: float, vmax: float, *, signed: bool = False,
                    cmap: str | None = None, label: str = "", width: int = 90, font: float = 7,
                    ticks: int | None = None, min_height: int = 120) -> np.ndarray:
    """A picture (H x W x 3 uint8) with its colour bar (``colour_bar``) appended on the right, same height; the
    bar is drawn at least ``min_height`` tall and resized to the picture."""
    bar = colour_bar(vmin, vmax, signed=signed, cmap=cmap, label=label, height=max(picture.shape[0], min_height),
                     width=width, font=font, ticks=ticks)
    if bar.shape[0] != picture.shape[0]:
        bar = np.asarray(Image.fromarray(bar).resize((bar.shape[1], picture.shape[0]), Image.Resampling.LANCZOS))
    return np.concatenate([picture, bar], axis=1)
