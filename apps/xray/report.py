"""A one-page report (PNG or PDF, matplotlib) of what the visitor saw: input, prediction, maps, trust figures.

Reports are written to a private folder inside Gradio's temp area; Gradio copies the file into its own cache
to serve it (which ``delete_cache`` cleans), and this module deletes its copies older than a few minutes.
"""

from __future__ import annotations

import datetime as dt
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
from core.zoo import DISCLAIMER

KEEP_SECONDS = 600
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


def _sweep() -> None:
    """Delete this app's report files older than KEEP_SECONDS."""
    if not _FOLDER.is_dir():
        return
    cutoff = time.time() - KEEP_SECONDS
    for old in _FOLDER.iterdir():
        if old.stat().st_mtime < cutoff:
            old.unlink(missing_ok=True)


def build_figure(session: Session, style: views.Style) -> Figure:
    """The report page as a matplotlib Figure (A4 portrait)."""
    loaded = get_model(session.model_key)
    panels = session.panels
    fig = Figure(figsize=(8.27, 11.69))
    fig.suptitle("Explain my X-ray — CNN Lens report", fontsize=14, fontweight="bold", y=0.985)
    fig.text(0.5, 0.955, DISCLAIMER, ha="center", fontsize=9, color="#9a3412", fontweight="bold")
    grid = fig.add_gridspec(4, 4, top=0.93, bottom=0.08, hspace=0.55, wspace=0.25, height_ratios=[1.1, 1.0, 0.55, 0.5])

    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(views.display(session.image.array), cmap="gray" if session.image.is_grayscale else None)
    ax.set_title("Input", fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(grid[0, 1])
    ax.imshow(views.display(analysis.model_view(session)), cmap="gray" if loaded.spec.preprocessing.channels == 1
              else None)
    ax.set_title("What the model saw", fontsize=9)
    ax.axis("off")

    ax = fig.add_subplot(grid[0, 2:])
    names = list(session.probabilities)[:8]
    values = [session.probabilities[n] for n in names]
    ax.barh(names[::-1], values[::-1], color="#3b82f6")
    ax.set_xlim(0, 1)
    ax.set_title(f"Prediction — {session.model_key}", fontsize=9)
    ax.tick_params(labelsize=8)
    for i, v in enumerate(values[::-1]):
        ax.text(min(v + 0.02, 0.85), i, f"{v:.1%}", va="center", fontsize=8)

    for i in range(4):
        ax = fig.add_subplot(grid[1, i])
        ax.axis("off")
        if i < len(panels):
            ax.imshow(views.overlay(session, panels[i].explanation, style))
            ax.set_title("\n".join(textwrap.wrap(panels[i].title, 24)), fontsize=8)

    text_ax = fig.add_subplot(grid[2:, :])
    text_ax.axis("off")
    lines = [f"Source: {session.source} · model: {session.model_key} ({loaded.spec.description})",
             f"Image: {views.metadata_line(session.image)}", ""]
    for p in panels:
        e = p.explanation
        lines.append(f"{p.title}: class {e.target_name} (p = {e.score:.3f}), {e.seconds:.2f} s")
        if p.quality:
            q = p.quality
            lines.append(f"   deletion AUC {q['deletion_auc']:.3f} (random {q['deletion_auc_random']:.3f}), insertion "
                         f"AUC {q['insertion_auc']:.3f} (random {q['insertion_auc_random']:.3f}), sanity ρ "
                         f"{q['sanity_spearman']:.2f}")
            lines += ["   " + line for reading in q["readings"] for line in textwrap.wrap(reading, 110)]
    agreement = analysis.agreement(session)
    if agreement is not None:
        lines.append("")
        lines.append(f"Agreement (Spearman ρ / top-{agreement.fraction:.0%} IoU):")
        for i, j in zip(*np.triu_indices(len(agreement.names), 1), strict=True):
            lines.append(f"   {agreement.names[i]} vs {agreement.names[j]}: ρ {agreement.spearman[i, j]:.2f}, "
                         f"IoU {agreement.iou[i, j]:.2f}")
    if session.neighbours:
        lines.append("")
        lines.append("Similar training cases: " + ", ".join(f"{n.label} ({n.distance:.3f})"
                                                              for n in session.neighbours))
    text_ax.text(0, 1, "\n".join(lines[:48]), va="top", ha="left", fontsize=7.5, family="DejaVu Sans")
    fig.text(0.5, 0.035, DISCLAIMER, ha="center", fontsize=9, color="#9a3412", fontweight="bold")
    fig.text(0.5, 0.018, views.ATTRIBUTION_PLAIN, ha="center", fontsize=6.5, color="#444444", wrap=True)
    fig.text(0.99, 0.005, dt.datetime.now().strftime("Generated %Y-%m-%d %H:%M"), ha="right", fontsize=6,
             color="#666666")
    return fig
