"""What the page shows, as values Gradio components accept: images (uint8), Markdown and dicts.

Pictures come from ``core.explain.render`` (colour maps, overlays, colour bars); this module only picks
sizes and words.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from apps.xray.session import Panel, Session
from apps.xray.session import Stability as StabilityResult
from apps.xray.similar import Neighbour
from core.data import ATTRIBUTION_MARKDOWN
from core.explain import render
from core.explain.base import Explanation, MethodInfo
from core.explain.quality import Agreement, read_agreement
from core.io import LoadedImage
from core.trust import Assessment
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


OOD_BANNER = "Unlike the chest X-rays this model was trained on: its prediction and maps mean little"


def prediction_card(assessment: Assessment | None) -> str:
    """HTML for the prediction: the out-of-distribution banner first, then the class at the operating threshold,
    the calibrated probability on a bar with the threshold marked, every class's probability and the conformal
    set. A plain softmax (models without trust data) is labelled as such."""
    if assessment is None:
        return "<div class='pred-card pred-empty'>No image yet.</div>"
    a, e = assessment, html.escape
    parts = []
    if a.in_distribution is False:
        parts.append(f"<div class='pred-ood' role='alert'>⛔ <b>{OOD_BANNER}</b> ({e(a.ood_reason or '')}).</div>")
    parts.append(f"<div class='pred-class'>{e(a.label)}</div>")
    if a.threshold is not None and a.positive is not None:
        side = "at or above" if a.probability >= a.threshold else "below"
        parts.append(
            f"<div class='pred-rule'>calibrated P({e(a.positive)}) = <b>{a.probability:.0%}</b>, {side} the "
            f"operating threshold {a.threshold:.0%}</div>"
            f"<div class='pred-bar' title='probability bar; the dark tick is the threshold'>"
            f"<div class='pred-fill' style='width:{100 * a.probability:.1f}%'></div>"
            f"<div class='pred-tick' style='left:{100 * a.threshold:.1f}%'></div></div>")
    else:
        parts.append("<div class='pred-rule'>softmax probability (this model has no calibration, operating "
                     "threshold or out-of-distribution gate)</div>")
    top = sorted(a.probabilities.items(), key=lambda kv: kv[1], reverse=True)[:5]
    parts.append("<div class='pred-rows'>" + " · ".join(f"{e(k)} {v:.0%}" for k, v in top) + "</div>")
    if a.calibrated:
        verdict = ("the model cannot tell these apart at this confidence" if len(a.prediction_set) > 1
                   else "one class")
        parts.append(f"<div class='pred-set'>90% prediction set: {{{e(', '.join(a.prediction_set))}}}: {verdict}"
                     f"</div><div class='pred-gate'>out-of-distribution score {a.ood_score:.2f} "
                     "(above 1.00 is flagged)</div>")
    return "<div class='pred-card'>" + "".join(parts) + f"<div class='pred-note'>{SHORT_DISCLAIMER}</div></div>"


# Cosine distance below which the nearest training image is the same film (re-encoded, resized): measured in
# tests/apps/test_xray_parts.py, a training film re-saved as PNG sits at < 1e-4, other patients' films at > 0.005.
SEEN_DISTANCE = 1e-3


def prediction_lines(assessment: Assessment) -> list[str]:
    """The prediction card as plain sentences, for the report."""
    a = assessment
    lines = [] if a.in_distribution is not False else [f"WARNING: {OOD_BANNER} ({a.ood_reason})."]
    if a.threshold is not None:
        side = "at or above" if a.probability >= a.threshold else "below"
        lines.append(f"Prediction: {a.label}: calibrated P({a.positive}) = {a.probability:.3f}, {side} the operating "
                     f"threshold {a.threshold:.3f}; 90% prediction set {{{', '.join(a.prediction_set)}}}; "
                     f"out-of-distribution score {a.ood_score:.2f} (flagged above 1.00).")
    else:
        lines.append(f"Prediction: {a.label} (softmax {a.probability:.3f}; no calibration, threshold or gate).")
    return lines


def seen_in_training(neighbours: Sequence[Neighbour]) -> str:
    """A warning line when the nearest training case is (nearly) this very image, else nothing."""
    if not neighbours or neighbours[0].distance >= SEEN_DISTANCE:
        return ""
    return (f"⚠️ **Seen in training:** this image is (nearly) identical to the training image "
            f"{html.escape(neighbours[0].item)} (distance {neighbours[0].distance:.4f}), so its prediction is "
            "not a test of the model.\n\n")


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
