"""What the page shows, as values Gradio components accept: images (uint8), Markdown and dicts.

Pictures come from ``core.explain.render`` (colour maps, overlays, colour bars); this module only picks
sizes and words.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from apps.xray.session import Panel, Session
from apps.xray.session import Stability as StabilityResult
from core.data import ATTRIBUTION_MARKDOWN
from core.explain import render
from core.explain.base import Explanation, MethodInfo
from core.explain.quality import Agreement, read_agreement
from core.io import LoadedImage
from core.zoo import DISCLAIMER, ModelSpec

DISPLAY_SIDE = 320  # overlays are drawn on the X-ray at this size: sharp on screen, cheap to encode
SEEN_SIDE = 224  # the model's input is shown at this size, whatever its resolution (its label gives the real one)
SHORT_DISCLAIMER = "For education and research only. Not for diagnosis."


@dataclass(frozen=True)
class Style:
    """How maps are drawn: a colour map for unsigned and one for signed maps, and the overlay opacity."""

    unsigned: str = render.UNSIGNED_CMAPS[0]
    signed: str = render.SIGNED_CMAPS[0]
    opacity: float = 0.5

    def cmap(self, signed: bool) -> str:
        """The colour map for a map of this signedness."""
        return self.signed if signed else self.unsigned


# ---------------------------------------------------------------- pictures


def display(array: np.ndarray, side: int | None = None) -> np.ndarray:
    """Image in [0, 1] -> uint8, optionally resized so its longer side is ``side``."""
    img = Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8))
    if side is not None and max(img.size) != side:
        scale = side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    return np.asarray(img)


def _base(session: Session) -> np.ndarray:
    return display(session.image.array, DISPLAY_SIDE).astype(np.float32) / 255.0


def overlay_map(session: Session, heatmap: np.ndarray, signed: bool, style: Style, label: str = "") -> np.ndarray:
    """A heatmap over the uploaded X-ray (aspect restored), with its colour bar and the disclaimer."""
    cmap = style.cmap(signed)
    vmin, vmax = render.value_range(heatmap, signed)
    picture = render.overlay(_base(session), heatmap, signed=signed, alpha=float(style.opacity), cmap=cmap)
    return with_disclaimer(render.with_colour_bar(picture, vmin, vmax, signed=signed, cmap=cmap, label=label))


def with_disclaimer(picture: np.ndarray) -> np.ndarray:
    """The picture with a strip below it saying education and research only, so a saved map carries it too."""
    strip = Image.new("RGB", (picture.shape[1], 16), "white")
    draw = ImageDraw.Draw(strip)
    draw.text((4, 2), SHORT_DISCLAIMER, fill=(154, 52, 18), font=ImageFont.load_default(size=10))
    return np.concatenate([picture, np.asarray(strip)], axis=0)


def overlay(session: Session, explanation: Explanation, style: Style) -> np.ndarray:
    """One explanation drawn over the X-ray with its colour bar."""
    label = "attribution (signed)" if explanation.signed else "importance"
    return overlay_map(session, explanation.heatmap, explanation.signed, style, label)


def spread(std: np.ndarray, style: Style) -> np.ndarray:
    """Per-pixel standard deviation over seeds, coloured on its own scale, with a colour bar."""
    side = DISPLAY_SIDE
    grown = np.asarray(Image.fromarray(std.astype(np.float32)).resize((side, side), Image.Resampling.BILINEAR))
    vmin, vmax = render.value_range(std, False)
    picture = render.colourise(grown, False, (vmin, vmax), style.unsigned)
    return with_disclaimer(render.with_colour_bar(picture, vmin, vmax, cmap=style.unsigned, label="std over seeds"))


# ---------------------------------------------------------------- words


def status(text: str, ok: bool) -> str:
    """The status box: plain notes, or a clearly marked problem."""
    return text if ok else f"⚠️ **Problem:** {text}"


def notes(image: LoadedImage) -> str:
    """The loader's notes (e.g. transparency removed, first frame shown) as one line."""
    return (" " + " ".join(image.notes)) if image.notes else ""


def metadata_line(image: LoadedImage) -> str:
    """Safe metadata (format, size, bit depth; DICOM also modality and view) in one line."""
    order = ("format", "modality", "view", "size", "bit_depth", "channels")
    names = {"bit_depth": "bit depth"}
    return " · ".join(f"{names.get(k, k)}: {image.metadata[k]}" for k in order if k in image.metadata)


def metadata(image: LoadedImage) -> str:
    """Metadata panel text; nothing identifying is ever read from the file (see core.io)."""
    return f"**File:** {html.escape(metadata_line(image))}"


def model_view_label(spec: ModelSpec) -> str:
    """Caption for the preprocessed input."""
    p = spec.preprocessing
    kind = "grey" if p.channels == 1 else "RGB"
    return f"What the model saw ({p.size} x {p.size} {kind}, before normalisation)"


def method_description(info: MethodInfo) -> str:
    """One paragraph on a method, with whether it is stochastic and uses a layer."""
    tags = [info.family] + (["stochastic: set a seed"] if info.stochastic else []) + (
        ["uses a layer"] if info.uses_layer else []) + (["signed"] if info.signed else [])
    return f"**{info.label}** ({', '.join(tags)}). {info.description}"


def unavailable_models(unavailable: dict[str, str]) -> str:
    """List of zoo models that cannot be used here, each with the reason."""
    if not unavailable:
        return ""
    items = "\n".join(f"- **{name}**: {html.escape(reason)}" for name, reason in unavailable.items())
    return f"Not available on this server:\n{items}"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def panel_text(panel: Panel) -> str:
    """The trust panel under one map: target, score, time, AUCs, sanity check and their readings."""
    e = panel.explanation
    head = f"**{html.escape(panel.title)}** — class **{e.target_name}** (p = {e.score:.3f}), {e.seconds:.2f} s"
    q = panel.quality
    if q is None:
        return f"{head}\n\n_Trust checks running…_"
    q1, q3 = q.sanity.quartiles
    return (f"{head}\n\n"
            f"| deletion AUC ↓ | insertion AUC ↑ | sanity median \\|ρ\\| (→0) |\n|---|---|---|\n"
            f"| {_fmt(q.deletion.auc)} (random {_fmt(q.reference.deletion.auc)}) "
            f"| {_fmt(q.insertion.auc)} (random {_fmt(q.reference.insertion.auc)}) "
            f"| {_fmt(q.sanity.median, 2)} (IQR {_fmt(q1, 2)}–{_fmt(q3, 2)}) |\n\n"
            + "\n".join(f"- {html.escape(r)}" for r in q.readings)
            + f"\n\n_Sanity ρ: rank correlation with the map of {len(q.sanity.correlations)} copies whose top "
            f"layers are randomised; its sign is ignored (a flipped map keeps its structure)._")


def agreement_table(agreement: Agreement | None) -> str:
    """Pairwise agreement as a small matrix: Spearman ρ above the diagonal, top-10% IoU below."""
    if agreement is None:
        return ""
    names = [html.escape(n) for n in agreement.names]
    short = [f"({i + 1})" for i in range(len(names))]
    rows = ["| | " + " | ".join(short) + " |", "|---" * (len(names) + 1) + "|"]
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            if i == j:
                cells.append("—")
            elif i < j:
                cells.append(f"ρ {_fmt(agreement.spearman[i, j], 2)}")
            else:
                cells.append(f"IoU {_fmt(agreement.iou[i, j], 2)}")
        rows.append(f"| **{short[i]}** {name} | " + " | ".join(cells) + " |")
    iu = np.triu_indices(len(names), 1)
    worst = int(np.nanargmin(agreement.spearman[iu])) if np.isfinite(agreement.spearman[iu]).any() else 0
    i, j = iu[0][worst], iu[1][worst]
    reading = read_agreement(agreement.spearman[i, j], agreement.iou[i, j], agreement.fraction)
    return (f"**Agreement between the maps** (Spearman ρ above the diagonal, overlap of the top "
            f"{agreement.fraction:.0%} pixels below):\n\n" + "\n".join(rows)
            + f"\n\nLeast agreeing pair, {short[i]} vs {short[j]}: {html.escape(reading)}.")


def stability_text(panel: Panel, result: StabilityResult) -> str:
    """Reading of a stability run."""
    seeds = ", ".join(str(s) for s in result.seeds)
    return (f"**{html.escape(panel.title)}** over seeds {seeds}: {html.escape(result.summary['reading'])}. Mean "
            f"per-pixel spread {_fmt(result.summary['mean_spread'], 4)}.")


def footer() -> str:
    """Disclaimer and data attribution for the bottom of the page."""
    return f"---\n{DISCLAIMER} {ATTRIBUTION_MARKDOWN} Nothing you upload is stored: files are deleted after use."
