"""What the page shows, as values Gradio components accept: images (uint8), Markdown and dicts.

Pictures come from ``core.explain.render`` (colour maps, overlays, colour bars); this module only picks
sizes and words.
"""

from __future__ import annotations

import functools
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.font_manager import FontProperties, findfont
from PIL import Image, ImageDraw, ImageFont

from apps.xray.session import Panel, Session
from apps.xray.session import Stability as StabilityResult
from apps.xray.similar import Neighbour
from core.data import ATTRIBUTION_MARKDOWN
from core.explain import guide, render
from core.explain.base import BASELINE_HELP, Explanation, MethodInfo
from core.explain.quality import (
    DELETION_BASELINE,
    INSERTION_BASELINE,
    MEASURED_IMAGES,
    MEASURED_MODEL,
    MEASURED_SIDE,
    SANITY,
    SANITY_COPIES_MEASURED,
    SANITY_IMAGES,
    Agreement,
    read_agreement,
)
from core.io import LoadedImage
from core.trust import Assessment
from core.zoo import DISCLAIMER, ModelSpec

DISPLAY_SIDE = 320  # overlays are drawn on the X-ray at this size: sharp on screen, cheap to encode
SEEN_SIDE = 224  # the model's input is shown at this size, whatever its resolution (its label gives the real one)
SHORT_DISCLAIMER = "For education and research only. Not for diagnosis."
STRIP_HEIGHT = 16  # the disclaimer strip under every map (pixels)
BAR_WIDTH = 118  # the colour bar beside every map (pixels): room for tick labels a person can read
BAR_FONT, BAR_TICKS = 10, 5  # its tick labels: points, and at most this many


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
    return with_disclaimer(with_colour_bar(picture, vmin, vmax, signed=signed, cmap=cmap, label=label))


def colour_bar(vmin: float, vmax: float, *, signed: bool, cmap: str, label: str, height: int) -> np.ndarray:
    """The board's colour bar (``render.colour_bar``, height x BAR_WIDTH) with tick labels large enough to read when
    the map is shown at its own size: five ticks at 10 pt (the core renderer's 7 pt shrink to 5 px on the board)."""
    return render.colour_bar(vmin, vmax, signed=signed, cmap=cmap, label=label, height=height, width=BAR_WIDTH,
                             font=BAR_FONT, ticks=BAR_TICKS)


def with_colour_bar(picture: np.ndarray, vmin: float, vmax: float, *, signed: bool = False, cmap: str | None = None,
                    label: str = "") -> np.ndarray:
    """The picture with the board's colour bar on the right, same height."""
    return render.with_colour_bar(picture, vmin, vmax, signed=signed, cmap=cmap, label=label, width=BAR_WIDTH,
                                  font=BAR_FONT, ticks=BAR_TICKS, min_height=160)


@functools.cache
def _strip_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A bold sans-serif for the disclaimer strip: matplotlib's DejaVu Sans Bold, always installed with it."""
    try:
        return ImageFont.truetype(findfont(FontProperties(family="DejaVu Sans", weight="bold")), size)
    except OSError:
        return ImageFont.load_default(size=size)


def with_disclaimer(picture: np.ndarray) -> np.ndarray:
    """The picture with a strip below it saying education and research only, so a saved map carries it too."""
    strip = Image.new("RGB", (picture.shape[1], STRIP_HEIGHT), (255, 247, 237))
    draw = ImageDraw.Draw(strip)
    # the largest size that fits the width (a narrow portrait map gets a smaller one, a very narrow one the gist)
    for text, size in [(SHORT_DISCLAIMER, size) for size in (12, 11, 10, 9)] + [("Not for diagnosis.", 10)]:
        font = _strip_font(size)
        width = draw.textlength(text, font=font)
        if width <= picture.shape[1] - 4:
            break
    draw.text((max(2, (picture.shape[1] - width) / 2), STRIP_HEIGHT / 2), text, fill=(154, 52, 18), font=font,
              anchor="lm")
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
    return with_disclaimer(with_colour_bar(picture, vmin, vmax, cmap=style.unsigned, label="std over seeds"))


# ---------------------------------------------------------------- words


OOD_BANNER = "Unlike the chest X-rays this model was trained on: its prediction and maps mean little"
OOD_TITLE = "Not like the chest X-rays this model knows"


def prediction_card(assessment: Assessment | None) -> str:
    """HTML for the prediction: the out-of-distribution banner first, then the class at the operating threshold,
    the calibrated probability on a bar with the threshold marked, every class's probability and the conformal
    set. A plain softmax (models without trust data) is labelled as such. Out of distribution, the class is
    greyed and marked unreliable under a red banner, so a glance does not read it as a finding."""
    head = "<div class='pred-head'>Prediction</div>"
    if assessment is None:
        return f"<div class='pred-card pred-empty'>{head}<div class='pred-rows'>No image yet.</div></div>"
    a, e = assessment, html.escape
    ood = a.in_distribution is False
    parts = [head]
    if ood:
        parts.append(f"<div class='pred-ood' role='alert'><div class='pred-ood-title'><span class='pred-ood-icon' "
                     f"aria-hidden='true'>!</span>{OOD_TITLE}</div><div class='pred-ood-text'>{OOD_BANNER}"
                     f"{f' ({e(a.ood_reason)})' if a.ood_reason else ''}.</div></div>")
    doubt = " pred-doubt" if ood else ""
    unreliable = "<span class='pred-unreliable'>unreliable</span>" if ood else ""
    parts.append(f"<div class='pred-class{doubt}'>{e(a.label)}{unreliable}</div>")
    if a.threshold is not None and a.positive is not None:
        side = "at or above" if a.probability >= a.threshold else "below"
        parts.append(
            f"<div class='pred-rule'>calibrated P({e(a.positive)}) = <b>{a.probability:.0%}</b>, {side} the "
            f"operating threshold {a.threshold:.0%}</div>"
            f"<div class='pred-bar{doubt}' title='probability bar; the dark tick is the threshold'>"
            f"<div class='pred-fill' style='width:{100 * a.probability:.1f}%'></div>"
            f"<div class='pred-tick' style='left:{100 * a.threshold:.1f}%'></div></div>")
    else:
        parts.append("<div class='pred-rule'>softmax probability (this model has no calibration, operating "
                     "threshold or out-of-distribution gate)</div>")
    top = sorted(a.probabilities.items(), key=lambda kv: kv[1], reverse=True)[:5]
    kind = "calibrated" if a.calibrated else "softmax"
    parts.append(f"<div class='pred-rows'>{kind}: " + " · ".join(f"{e(k)} {v:.0%}" for k, v in top) + "</div>")
    if a.calibrated:
        if a.coverage is not None:  # in words, an empty set included ("uncertain")
            conformal = f"conformal prediction set: {e(a.set_reading)}"
        else:
            verdict = ("the model cannot tell these apart at this confidence" if len(a.prediction_set) > 1
                       else "one class")
            conformal = f"90% prediction set: {{{e(', '.join(a.prediction_set))}}}: {verdict}"
        flagged = " pred-flagged" if ood else ""
        gate = "" if a.ood_score is None else (f"<div class='pred-gate{flagged}'>out-of-distribution score "
                                               f"{a.ood_score:.2f} (above 1.00 is flagged)</div>")
        parts.append(f"<div class='pred-set'>{conformal}</div>{gate}")
    return (f"<div class='pred-card{' pred-card-ood' if ood else ''}'>" + "".join(parts)
            + f"<div class='pred-note'>{SHORT_DISCLAIMER}</div></div>")


# Cosine distance below which the nearest training image is the same film. Measured with the bundled model on
# every 20th training film (261): the film re-saved as PNG sits at 0.000000 from itself; the nearest *other* film
# at 0.0019 or more (median 0.0069).
SEEN_DISTANCE = 1e-3


def prediction_lines(assessment: Assessment) -> list[str]:
    """The prediction card as plain sentences, for the report."""
    a = assessment
    lines = [] if a.in_distribution is not False else [f"WARNING: {OOD_BANNER} ({a.ood_reason})."]
    if a.threshold is not None:
        side = "at or above" if a.probability >= a.threshold else "below"
        conformal = (f"conformal prediction set: {a.set_reading}" if a.coverage is not None
                     else f"90% prediction set {{{', '.join(a.prediction_set)}}}")
        gate = "" if a.ood_score is None else f"; out-of-distribution score {a.ood_score:.2f} (flagged above 1.00)"
        lines.append(f"Prediction: {a.label}: calibrated P({a.positive}) = {a.probability:.3f}, {side} the operating "
                     f"threshold {a.threshold:.3f}; {conformal}{gate}.")
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
    """One paragraph on a method: the question it answers, its description (stochastic, layer, signed), its cost
    in model passes and its record where the benchmark measured it (on the bundled model)."""
    tags = [info.family] + (["stochastic: set a seed"] if info.stochastic else []) + (
        ["uses a layer"] if info.uses_layer else []) + (["signed"] if info.signed else [])
    question = guide.QUESTIONS.get(info.name)
    text = (f"**{info.label}** ({', '.join(tags)}). " + (f"_{question}_ " if question else "") + info.description
            + f"\n\n**Cost:** {guide.cost(info.name, {}, MEASURED_SIDE)} per image at the default settings.")
    line = guide.record(info.name)
    return text + (f" **Measured on {MEASURED_MODEL}:** {line}; the method guide above compares every method."
                   if line else "")


def method_guide() -> str:
    """Every method in one table: the question it answers, its cost and its measured record on the bundled model."""
    rows = guide.table(MEASURED_SIDE)
    head = (f"Share of the {MEASURED_IMAGES} films on which each method's map beats random maps, by check, and the "
            "sanity check's median |ρ|:\n\n| method | question it answers | model passes per image (defaults) | "
            "deletion | insertion | ROAD | sanity \\|ρ\\| |\n|---|---|---|---|---|---|---|")
    body = "\n".join(f"| **{html.escape(r['method'], quote=False)}** | {html.escape(r['question'], quote=False)} | "
                     f"{r['cost']} | {r['deletion']} | {r['insertion']} | {r['road']} | {r['sanity']} |" for r in rows)
    sanity = (f" The sanity column is the median |ρ| between a map and the maps of {SANITY_COPIES_MEASURED} copies "
              f"with re-initialised top layers, on the first {SANITY_IMAGES} films (0: the map depends on what the "
              "model learnt, as it should; near 1: it does not)." if SANITY else " The sanity check was not measured "
              "per method yet; the board runs it for every map.")
    return (f"{head}\n{body}\n\n_Measured by bench/faithfulness.py with **{MEASURED_MODEL}** ({MEASURED_SIDE} px) "
            f"on {MEASURED_IMAGES} new-patient films (external/, patients not in training), explaining the predicted "
            "class: the share of films on which the map beats smooth random maps when the most important pixels are "
            f"deleted (filled with {BASELINE_HELP[DELETION_BASELINE]}), inserted (onto "
            f"{BASELINE_HELP[INSERTION_BASELINE]}) or removed with ROAD (filled from their neighbours).{sanity} "
            "Slow methods ran at cheap settings (see the benchmark). Other models were "
            "not measured: there, these figures say nothing._\n\n"
            "**Test-time augmentation** (any method; the checkbox under the picker, or `--augment N` in "
            "`python -m core.explain`): the method also explains copies of the image shifted by up to 5% of its side, "
            "rotated by up to 5° and with contrast and brightness jittered by up to 5%, for the same class; each map "
            "is mapped back onto the image and the maps are averaged. It costs one run of the method per copy and "
            "smooths away detail that depends on the exact pixel grid; the trust checks score the averaged map, and "
            "the sanity check compares the method's own map with its randomised copies' maps. The figures above are "
            "for maps without it.")


def unavailable_models(unavailable: dict[str, str]) -> str:
    """Zoo models that cannot be used here, one line each with the reason (shown in a closed accordion)."""
    if not unavailable:
        return ""
    return "\n".join(f"- **{name}** is unavailable: {html.escape(one_line(reason), quote=False)}"
                     for name, reason in unavailable.items())


def one_line(reason: str) -> str:
    """A reason's first clause, without server paths in brackets: what a visitor needs, not where files live."""
    first = reason.split(";")[0].strip().rstrip(".")
    return re.sub(r"\s*\([^()]*/[^()]*\)", "", first) + "."


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def panel_text(panel: Panel, running: bool = True) -> str:
    """The trust panel under one map: target, score, time, AUCs, sanity check and their readings.

    One row per check (this map against the random-order baseline), so the table stays three short columns wide
    when four maps share the board; ``running`` False says the checks were stopped rather than still coming."""
    e = panel.explanation
    head = (f"**{html.escape(panel.title)}** — class **{e.target_name}** (softmax {e.score:.3f}, not calibrated), "
            f"{e.seconds:.2f} s")
    q = panel.quality
    if q is None:
        return f"{head}\n\n" + ("_Trust checks running…_" if running else
                                 "_Trust checks stopped: press **Explain** again to run them._")
    q1, q3 = q.sanity.quartiles
    return (f"{head}\n\n"
            "| check | this map | random order |\n|---|---|---|\n"
            f"| deletion AUC ↓ | {_fmt(q.deletion.auc)} | {_fmt(q.reference.deletion.auc)} |\n"
            f"| insertion AUC ↑ | {_fmt(q.insertion.auc)} | {_fmt(q.reference.insertion.auc)} |\n"
            f"| sanity median \\|ρ\\| (→0) | {_fmt(q.sanity.median, 2)} (IQR {_fmt(q1, 2)}–{_fmt(q3, 2)}) | — |\n\n"
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
