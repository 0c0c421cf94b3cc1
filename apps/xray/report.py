"""A one-page report (PNG or PDF, matplotlib) of what the visitor saw: input, prediction, maps, trust figures.

Reports are written to a private folder inside Gradio's temp area; Gradio copies the file into its own cache
to serve it (which ``delete_cache`` cleans), and this module deletes its copies older than a few minutes and all
of them at shutdown (``delete_reports``). A report never names an uploaded file (``Session.shareable_source``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from gradio.utils import get_upload_folder
from matplotlib.figure import Figure

from apps.xray import analysis, views
from apps.xray.models import get_model
from apps.xray.session import Session
from core.data import ATTRIBUTION
from core.zoo import DISCLAIMER

KEEP_SECONDS = 600
ATTRIBUTION_WIDTH = 120  # characters per line of the attribution at 6.5 pt: well inside the A4 width
_FOLDER = Path(get_upload_folder()) / "cnnlens-reports"  # inside Gradio's temp area


def write_report(session: Session, fmt: str, style: views.Style) -> Path:
    """Render the report and return its path; ``fmt`` is "png" or "pdf"."""
    if fmt not in ("png", "pdf"):
        raise ValueError(f"Report format must be PNG or PDF, got {fmt!r}.")
    _sweep()
    figure = build_figure(session, style)
    _FOLDER.mkdir(mode=0o700, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    with tempfile.NamedTemporaryFile(dir=_FOLDER, prefix=f"xray-report-{stamp}-", suffix=f".{fmt}",
                                     delete=False) as handle:
        figure.savefig(handle, format=fmt, dpi=130)
    return Path(handle.name)


def _sweep(keep_seconds: float = KEEP_SECONDS) -> None:
    """Delete this app's report files older than ``keep_seconds``."""
    if not _FOLDER.is_dir():
        return
    cutoff = time.time() - keep_seconds
    for old in _FOLDER.iterdir():
        with contextlib.suppress(FileNotFoundError):  # another request's sweep got there first
            if old.stat().st_mtime < cutoff:
                old.unlink()


def delete_reports() -> None:
    """Delete every report file left (at shutdown): each holds a visitor's X-ray. Gradio serves its own copies."""
    _sweep(keep_seconds=-1.0)


def build_figure(session: Session, style: views.Style) -> Figure:
    """The report page as a matplotlib Figure (A4 portrait): pictures on top, figures and readings below."""
    loaded = get_model(session.model_key)
    fig = Figure(figsize=(8.27, 11.69))
    fig.text(0.5, 0.972, "Explain my X-ray — CNN Lens report", ha="center", fontsize=14, fontweight="bold")
    fig.text(0.5, 0.952, DISCLAIMER, ha="center", fontsize=9, color="#9a3412", fontweight="bold")

    grey = "gray" if session.image.is_grayscale else None
    _picture(fig, (0.04, 0.72, 0.26, 0.21), views.display(session.image.array), "Input", grey)
    _picture(fig, (0.32, 0.72, 0.26, 0.21), views.display(analysis.model_view(session)), "What the model saw",
             "gray" if loaded.spec.preprocessing.channels == 1 else None)
    ax = fig.add_axes((0.72, 0.75, 0.24, 0.16))
    names = sorted(session.probabilities, key=session.probabilities.get)[-8:]
    values = [session.probabilities[n] for n in names]
    ax.barh(names, values, color="#3b82f6")
    ax.set_xlim(0, 1)
    ax.set_title(f"Prediction ({session.model_key})", fontsize=9)
    ax.tick_params(labelsize=7)
    for i, v in enumerate(values):
        ax.text(min(v + 0.02, 0.8), i, f"{v:.1%}", va="center", fontsize=7)

    for i, panel in enumerate(session.panels):
        title = "\n".join(textwrap.wrap(panel.title, 30))
        _picture(fig, (0.02 + 0.245 * i, 0.50, 0.225, 0.19), views.overlay(session, panel.explanation, style), title)

    fig.text(0.04, 0.475, "\n".join(_lines(session, loaded.spec.description)), va="top", ha="left", fontsize=6.8,
             linespacing=1.35)
    fig.text(0.5, 0.045, DISCLAIMER, ha="center", fontsize=9, color="#9a3412", fontweight="bold")
    # wrapped: on one line the 190-character attribution is wider than the page and loses both ends
    fig.text(0.5, 0.038, "\n".join(textwrap.wrap(ATTRIBUTION, ATTRIBUTION_WIDTH)), ha="center", va="top",
             fontsize=6.5, color="#444444", linespacing=1.3)
    fig.text(0.97, 0.006, dt.datetime.now().strftime("Generated %Y-%m-%d %H:%M"), ha="right", fontsize=6,
             color="#666666")
    return fig


def _picture(fig: Figure, rect: tuple[float, float, float, float], image: np.ndarray, title: str,
             cmap: str | None = None) -> None:
    ax = fig.add_axes(rect)
    ax.imshow(image, cmap=cmap)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _lines(session: Session, description: str) -> list[str]:
    """The report's text: source, model, and for each map its target, time and plain-language readings."""
    wrap = functools.partial(textwrap.wrap, width=150, subsequent_indent="    ")
    lines = [*wrap(f"Source: {session.shareable_source}. Model: {session.model_key} — {description}"),
             f"Image: {views.metadata_line(session.image)}"]
    for line in views.prediction_lines(session.assessment):
        lines += wrap(line)
    if views.seen_in_training(session.neighbours):
        n = session.neighbours[0]
        lines += wrap(f"Seen in training: nearly identical to {n.item} (distance {n.distance:.4f}); the prediction "
                      "is not a test of the model.")
    lines.append("")
    for p in session.panels:
        e = p.explanation
        lines.append(f"{p.title}: class {e.target_name} (p = {e.score:.3f}), computed in {e.seconds:.2f} s")
        for reading in p.quality.readings if p.quality is not None else ["trust checks not run"]:
            lines += wrap("  • " + reading)
    agreement = analysis.agreement(session)
    if agreement is not None:
        lines += ["", f"Agreement between the maps (Spearman ρ; overlap of the top {agreement.fraction:.0%} pixels):"]
        for i, j in zip(*np.triu_indices(len(agreement.names), 1), strict=True):
            lines.append(f"  • {agreement.names[i]} vs {agreement.names[j]}: ρ {agreement.spearman[i, j]:.2f}, "
                         f"overlap {agreement.iou[i, j]:.2f}")
    if session.neighbours:
        lines += ["", *wrap("Similar training cases (label, distance): " + ", ".join(
            f"{n.label} ({n.distance:.3f})" for n in session.neighbours))]
    return lines
