"""Plotly figures the lesson pages share: small annotated grids with highlighted cells, and large images.

Presentation only (no maths): a "panel" is one matrix shown as a heatmap with its numbers written in the
cells; highlights outline or shade cells (a sliding window, an argmax, padding).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.lessons.conv import fmt

WINDOW = "#d62728"  # the cells being read right now
TARGET = "#2ca02c"  # the cell being written right now
PADDING_FILL = "rgba(120,120,120,0.28)"


@dataclass(frozen=True)
class Highlight:
    """Cells to outline (``fill`` None) or shade (``fill`` an rgba colour)."""

    cells: Iterable[tuple[int, int]]
    color: str = WINDOW
    width: float = 3.0
    fill: str | None = None


@dataclass(frozen=True)
class Panel:
    """One matrix to draw; NaN cells are left blank (e.g. output cells not computed yet)."""

    values: np.ndarray
    title: str
    highlights: Sequence[Highlight] = field(default_factory=tuple)
    colorscale: str = "Blues"
    symmetric: bool = False  # centre the colour scale on zero (signed values, gradients)


def _label(v: float) -> str:
    """A cell's number without the brackets fmt puts round negatives (they read as noise inside a grid)."""
    if np.isnan(v):
        return ""
    magnitude = fmt(abs(v))
    return f"-{magnitude}" if v < 0 and magnitude != "0" else magnitude


def _cell_text(values: np.ndarray) -> list[list[str]]:
    return [[_label(v) for v in row] for row in values]


def grid_figure(panels: Sequence[Panel | None], cell_px: int = 36, rows: int = 1, font_px: int = 13) -> go.Figure:
    """Panels side by side (or in ``rows`` rows, filled row by row) with square cells and their values written in.

    A None panel leaves its slot empty, to line up panels in a table-like layout.
    """
    cols = -(-len(panels) // rows)
    shapes = [None if p is None else np.asarray(p.values).shape for p in panels]
    widths = [max((sh[1] for sh in shapes[c::cols] if sh), default=1) for c in range(cols)]
    tallest = max(sh[0] for sh in shapes if sh)
    gap_px = 64  # room for a title and the column numbers between rows
    plot_px = rows * tallest * cell_px + (rows - 1) * gap_px
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p.title if p else "" for p in panels],
                        column_widths=widths, horizontal_spacing=0.2 / cols, vertical_spacing=gap_px / plot_px)
    shapes, axes = [], {}
    for i, panel in enumerate(panels):
        r, c = i // cols + 1, i % cols + 1
        n = "" if i == 0 else str(i + 1)  # make_subplots numbers axes row by row
        if panel is None:
            axes[f"xaxis{n}"] = axes[f"yaxis{n}"] = {"visible": False}
            continue
        v = np.asarray(panel.values, dtype=np.float64)
        finite = v[np.isfinite(v)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if panel.symmetric:
            peak = max(abs(lo), abs(hi), 1e-12)
            lo, hi = -peak, peak
        fig.add_trace(go.Heatmap(z=v, text=_cell_text(v), texttemplate="%{text}", textfont={"size": font_px},
                                 colorscale="RdBu_r" if panel.symmetric else panel.colorscale, zmin=lo,
                                 zmax=hi if hi > lo else lo + 1, showscale=False, xgap=1, ygap=1,
                                 hovertemplate="row %{y}, col %{x}: %{text}<extra></extra>"), row=r, col=c)
        # shapes as plain dicts added in one go: add_shape() per cell is orders of magnitude slower
        for hl in panel.highlights:
            line = {"color": hl.color if hl.fill is None else "rgba(0,0,0,0)", "width": hl.width}
            shapes += [{"type": "rect", "xref": f"x{n}", "yref": f"y{n}", "x0": x - 0.5, "x1": x + 0.5,
                        "y0": y - 0.5, "y1": y + 0.5, "line": line, "fillcolor": hl.fill or "rgba(0,0,0,0)",
                        "layer": "above"} for y, x in hl.cells]
        axes[f"yaxis{n}"] = {"range": [v.shape[0] - 0.5, -0.5], "scaleanchor": f"x{n}", "constrain": "domain",
                             "showgrid": False, "zeroline": False, "dtick": 1, "tickfont": {"size": 10}}
        axes[f"xaxis{n}"] = {"range": [-0.5, v.shape[1] - 0.5], "constrain": "domain", "showgrid": False,
                             "zeroline": False, "dtick": 1, "side": "top", "tickfont": {"size": 10}}
    fig.update_layout(shapes=shapes, **axes)
    fig.update_annotations(yshift=30, font={"size": 14})
    # a light background makes blank (NaN) cells visible as empty slots
    fig.update_layout(height=plot_px + 70, margin={"l": 10, "r": 10, "t": 60, "b": 10}, plot_bgcolor="#f4f4f4")
    return fig


def image_figure(display: np.ndarray, raw: np.ndarray, title: str, height: int = 360) -> go.Figure:
    """A large grayscale image (display values in [0, 1]) whose hover shows the raw numbers at each pixel."""
    fig = go.Figure(go.Heatmap(z=display, customdata=raw, colorscale="gray", zmin=0.0, zmax=1.0, showscale=False,
                               hovertemplate="row %{y}, col %{x}: %{customdata:.4g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showgrid=False)
    fig.update_xaxes(constrain="domain", showgrid=False, side="top")
    fig.update_layout(title={"text": title, "font": {"size": 14}, "y": 0.99}, height=height,
                      margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig
