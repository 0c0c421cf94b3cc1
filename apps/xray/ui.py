"""The "Explain my X-ray" page: layout, and one handler per user action.

Handlers return dicts of component updates and never raise for a user's mistake: a bad file, setting
or model ends in the status box (and a toast) so the page stays usable. Work that takes long (slow
explainers, trust checks, stability) runs in the ``heavy`` queue with a progress bar and a Stop button that
really stops it (see ``apps.xray.cancel``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from apps.xray import analysis, views
from apps.xray.api import register_api
from apps.xray.cancel import Cancelled, progress_callback
from apps.xray.controls import method_controls
from apps.xray.examples import Example
from apps.xray.limits import Limits
from apps.xray.models import ARCHITECTURES, ZooStatus, get_model, load_user_checkpoint
from apps.xray.report import write_report
from apps.xray.session import MAX_PANELS, Session
from apps.xray.similar import SimilarCases
from apps.xray.uploads import UploadError, UploadJanitor
from core.explain import render
from core.explain.base import METHODS
from core.io import ImageError, LoadedImage, load_image
from core.zoo import BUNDLED, DISCLAIMER, ModelUnavailable

log = logging.getLogger(__name__)
USER_ERRORS = (ImageError, UploadError, ValueError, ModelUnavailable)
PREDICTED = "predicted class"  # the class on the prediction card (analysis.predicted_index)
STYLE_INPUTS = 3  # unsigned colour map, signed colour map, opacity
CSS = """
/* Gradio ships a 5 kB subset as Source Sans Pro SemiBold (weight 600) that lacks capital A, so bold text fell back
   to another font for that one letter ("PNEUMONIᴀ"); its full Bold file is served too: use it for 600 and 700. */
@font-face { font-family: "Source Sans Pro"; font-weight: 600; font-style: normal;
             src: url("static/fonts/SourceSansPro/SourceSansPro-Bold.woff2") format("woff2"); }
@font-face { font-family: "Source Sans Pro"; font-weight: 700; font-style: normal;
             src: url("static/fonts/SourceSansPro/SourceSansPro-Bold.woff2") format("woff2"); }
#status .prose { font-size: 0.95rem; }
.disclaimer { color: #9a3412; font-weight: 600; }
.pred-card { padding: 6px 4px; line-height: 1.35; }
.pred-head { font-size: 0.8rem; font-weight: 600; letter-spacing: 0.04em; text-transform: uppercase;
             color: var(--body-text-color-subdued); margin-bottom: 2px; }
.pred-class { font-size: 2rem; font-weight: 700; line-height: 1.2; margin: 2px 0 6px; overflow-wrap: anywhere; }
.pred-class.pred-doubt { color: #9ca3af; }
.pred-unreliable { display: inline-block; vertical-align: middle; margin-left: 10px; padding: 2px 8px;
                   border-radius: 4px; background: #b91c1c; color: #fff; font-size: 0.85rem; font-weight: 700;
                   letter-spacing: 0.03em; text-transform: uppercase; }
.pred-card-ood { border: 2px solid #b91c1c; border-radius: 10px; padding: 8px 10px; }
.pred-ood { background: #b91c1c; color: #fff; padding: 10px 12px; border-radius: 8px; margin: 4px 0 8px; }
#prediction .pred-ood-title { display: flex; align-items: center; gap: 8px; font-size: 1.15rem; font-weight: 700;
                              line-height: 1.25; color: #fff; }
.pred-ood-icon { flex: none; display: inline-flex; align-items: center; justify-content: center; width: 1.6rem;
                 height: 1.6rem; border-radius: 50%; background: #fff; color: #b91c1c; font-weight: 700; }
#prediction .pred-ood-text { margin-top: 4px; font-size: 0.95rem; color: #fff; }
.pred-bar { position: relative; height: 12px; background: #e5e7eb; border-radius: 6px; margin: 6px 0; }
.pred-fill { position: absolute; left: 0; top: 0; bottom: 0; background: #1f6feb; border-radius: 6px; }
.pred-bar.pred-doubt .pred-fill { background: #9ca3af; }
.pred-tick { position: absolute; top: -4px; bottom: -4px; width: 3px; background: #111827; }
.pred-rows, .pred-set, .pred-gate, .pred-rule { font-size: 0.9rem; }
.pred-flagged { color: #b91c1c; font-weight: 700; }
.pred-note { font-size: 0.8rem; color: #9a3412; margin-top: 4px; }
/* the board: table cells wrap between words only, never inside one ("delet ion") */
#board .prose table { width: auto; max-width: 100%; }
#board .prose th, #board .prose td { word-break: normal; overflow-wrap: normal; hyphens: manual; }
#board .prose th { white-space: nowrap; }
/* the method guide: words never break inside ("inserti on"), the figure columns never wrap ("100 %") */
#method-guide .prose th, #method-guide .prose td { word-break: normal; overflow-wrap: normal; hyphens: manual; }
#method-guide .prose th:nth-child(n+4), #method-guide .prose td:nth-child(n+4) { white-space: nowrap; }
#queue-note .prose p { font-size: 0.95rem; background: #fef3c7; border-left: 4px solid #d97706; padding: 6px 10px;
                       border-radius: 4px; margin: 0; }
/* galleries: columns share the width (Gradio's 100 px minimum pushed a 4th column out of a 380 px column; the
   examples take as many 84 px columns as fit, so "PNEUMONIA" fits under each), the examples take the height of
   their rows, and captions show their whole text on up to two lines */
#similar .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important; }
#examples .grid-container { grid-template-columns: repeat(auto-fill, minmax(84px, 1fr)) !important; }
#examples, #examples .gallery-container, #examples .grid-wrap { height: auto !important; min-height: 0 !important; }
#examples .grid-wrap { overflow: visible !important; max-height: none !important; }  /* 4 rows with the DICOM pair */
#similar .caption-label, #examples .caption-label { white-space: normal; text-overflow: clip; overflow: visible;
                                                   max-width: calc(100% - 8px); line-height: 1.2; text-align: center; }
"""
JOB_STALE_SECONDS = 900.0  # a request still marked pending after this long is forgotten (e.g. refused by a full queue)


@dataclass
class Slot:
    """One place on the comparison board."""

    column: gr.Column
    image: gr.Image
    text: gr.Markdown


class Jobs:
    """What each browser session has waiting or running in the heavy queue, so that pressing Explain while a job
    runs is answered (queued, or busy) instead of silently ignored, and Stop can say what it stopped.

    Two kinds: ``request`` from an Explain click until its handler ends (Gradio drops a second click on the same
    button while the first is pending) and ``work`` while a heavy handler runs (explanation, trust checks, seeds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, list[tuple[str, str, float]]] = {}  # session -> [(kind, label, since)]

    def _fresh(self, session: str) -> list[tuple[str, str, float]]:
        now = time.monotonic()
        jobs = [j for j in self._jobs.get(session, []) if now - j[2] < JOB_STALE_SECONDS]
        self._jobs[session] = jobs
        return jobs

    def labels(self, session: str, kind: str | None = None) -> list[str]:
        """Labels of the session's jobs (of one kind), oldest first, each once."""
        with self._lock:
            return list(dict.fromkeys(label for k, label, _ in self._fresh(session) if kind in (None, k)))

    def add(self, session: str, kind: str, label: str) -> None:
        with self._lock:
            self._fresh(session).append((kind, label, time.monotonic()))

    def remove(self, session: str, kind: str, label: str) -> None:
        """Forget one job (the oldest of that kind and label); nothing when Stop already cleared it."""
        with self._lock:
            jobs = self._fresh(session)
            for i, (k, name, _) in enumerate(jobs):
                if (k, name) == (kind, label):
                    del jobs[i]
                    break
            if not jobs:
                self._jobs.pop(session, None)

    def clear(self, session: str) -> list[str]:
        """Forget every job of the session; their labels, each once."""
        with self._lock:
            labels = [label for _, label, _ in self._fresh(session)]
            self._jobs.pop(session, None)
        return list(dict.fromkeys(labels))

    @contextlib.contextmanager
    def running(self, session: str, label: str) -> Iterator[None]:
        """Mark heavy work as running for the duration of a block."""
        self.add(session, "work", label)
        try:
            yield
        finally:
            self.remove(session, "work", label)


def _session_id(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"  # outside a browser session (tests, scripts)


def _and(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def guarded(box: str = "status") -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Turn a user's mistake (or a cancelled run) into a message in the ``box`` Markdown (and a toast) instead of
    a failed event, so the page stays usable."""

    def decorate(fn: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(fn)
        def wrapper(self: XrayUI, *args: Any, **kwargs: Any) -> dict:
            target = getattr(self, box)
            try:
                return fn(self, *args, **kwargs)
            except Cancelled:
                return {target: views.status("Stopped.", ok=True)}
            except USER_ERRORS as err:
                gr.Warning(str(err))
                return {target: views.status(str(err), ok=False)}
            except Exception as err:  # a bug: log it, tell the visitor without internals, keep serving
                log.exception("handler %s failed", fn.__name__)
                gr.Warning("Something went wrong on the server; the app is still running.")
                return {target: views.status(f"Something went wrong on the server ({type(err).__name__}); the app "
                                             "is still running.", ok=False)}

        return wrapper

    return decorate


class XrayUI:
    """Builds the Blocks page and holds its components so handlers can address them by name."""

    def __init__(self, zoo: ZooStatus, janitor: UploadJanitor, similar: SimilarCases | None,
                 examples: list[Example], limits: Limits) -> None:
        self.zoo, self.janitor, self.similar, self.examples, self.limits = zoo, janitor, similar, examples, limits
        self.jobs = Jobs()
        self.default_model = BUNDLED if BUNDLED in zoo.available else (zoo.available[0] if zoo.available else None)
        for name in zoo.available:  # before the first request: DeepLIFT's first call would trace beside others'
            try:
                analysis.warm_up(name)
            except Exception:  # a model that cannot be prepared still serves every other method
                log.exception("could not prepare %s for DeepLIFT and LRP", name)

    # ------------------------------------------------------------ layout

    def build(self) -> gr.Blocks:
        """The whole page, its events and the API endpoints."""
        with gr.Blocks(title="Explain my X-ray · CNN Lens", delete_cache=(60, 600)) as demo:
            gr.Markdown("# Explain my X-ray\nDrop a chest X-ray: see what the model predicts, where it looked, "
                        "how far to trust each map, and similar training cases.")
            gr.Markdown(f"⚠️ {DISCLAIMER}", elem_classes=["disclaimer"], elem_id="disclaimer")
            self.state = gr.State(None, time_to_live=3600)
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    self._input_column()
                with gr.Column(scale=1, min_width=300):
                    self.input_view = gr.Image(label="Your image", interactive=False, height=260,
                                               elem_id="input-view", buttons=[])
                    self.seen_view = gr.Image(label="What the model saw", interactive=False, height=200,
                                              elem_id="seen-view", buttons=[])
                    self.meta = gr.Markdown(elem_id="metadata")
                with gr.Column(scale=1, min_width=300):
                    self.label = gr.HTML(views.prediction_card(None), label="Prediction", elem_id="prediction")
                    self.status = gr.Markdown(views.status("Upload an X-ray or pick an example.", ok=True),
                                              elem_id="status")
                    self.similar_gallery = gr.Gallery(label="Similar training cases (education only)", columns=3,
                                                      height=300, allow_preview=True, elem_id="similar",
                                                      interactive=False)
                    self.similar_note = gr.Markdown(elem_id="similar-note")
            self._explain_section()
            self._report_section()
            gr.Markdown(views.footer(), elem_id="footer-note")
            self._wire()
            register_api(self.janitor, self.zoo, self.limits)
        return demo

    def _slider_bounds(self) -> dict[tuple[str, str], tuple[float, float]]:
        """Method sliders narrowed to the work budget at the default model's input size (other models are still
        checked per request, with a message that says what fits)."""
        if self.default_model is None:
            return {}
        side = get_model(self.default_model).spec.preprocessing.size
        return self.limits.slider_bounds((side, side))

    def _input_column(self) -> None:
        self.upload = gr.File(label="Chest X-ray: PNG, JPEG, TIFF or DICOM", file_count="single", type="filepath",
                              height=130, elem_id="upload")
        self.paste = gr.Image(label="…or paste an image from the clipboard", sources=["clipboard"], type="filepath",
                              height=130, elem_id="paste")
        # captions are the class only (the file name is in the status line once picked): a whole file name does not
        # fit under a thumbnail a quarter of a column wide; the gallery is as tall as its rows (CSS), none cut off
        self.example_gallery = gr.Gallery(
            value=[(e.thumbnail, e.short) for e in self.examples],
            label="Examples (training X-rays, Kermany et al.)", columns=4, allow_preview=False,
            visible=bool(self.examples), elem_id="examples", interactive=False, buttons=[])
        choices = list(self.zoo.available)
        self.model = gr.Dropdown(choices, value=self.default_model, label="Model", elem_id="model")
        if self.zoo.unavailable:  # offered once, closed, one line each: as the classroom's model picker does
            with gr.Accordion(f"{len(self.zoo.unavailable)} unavailable here", open=False,
                              elem_id="unavailable-models"):
                gr.Markdown(views.unavailable_models(self.zoo.unavailable))
        with gr.Accordion("Use your own checkpoint", open=False):
            self.ckpt_arch = gr.Dropdown(list(ARCHITECTURES), value="resnet18", label="torchvision architecture")
            self.ckpt_file = gr.File(label="Weights (.pt, .pth or .safetensors)", type="filepath", height=120,
                                     elem_id="ckpt-file")
            self.ckpt_classes = gr.Textbox(label="Class names, comma-separated", value="NORMAL, PNEUMONIA")
            self.ckpt_size = gr.Number(224, label="Input size (pixels)", precision=0)
            self.ckpt_button = gr.Button("Load checkpoint", elem_id="ckpt-load")
            self.ckpt_note = gr.Markdown(elem_id="ckpt-note")

    def _explain_section(self) -> None:
        method = analysis.default_method()
        gr.Markdown("## Where did the model look?")
        with gr.Accordion("Method guide: the question each method answers, its cost and how it fared on the bundled "
                          "model", open=False, elem_id="method-guide"):
            gr.Markdown(views.method_guide(), elem_id="method-guide-table")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                self.method = gr.Dropdown([(info.label, name) for name, info in METHODS.items()], value=method,
                                          label="Explanation method", elem_id="method")
                self.method_info = gr.Markdown(views.method_description(METHODS[method]), elem_id="method-info")
                with gr.Row():
                    self.target = gr.Dropdown([PREDICTED], value=PREDICTED, label="Explain class", elem_id="target")
                    self.seed = gr.Number(0, label="Seed", precision=0, minimum=0,
                                          visible=METHODS[method].stochastic)
                self.layer = gr.Textbox(label="Layer (dotted name)", visible=METHODS[method].uses_layer,
                                        elem_id="layer")
                with gr.Group():  # the copies slider under its checkbox: side by side, both were squeezed
                    self.augment = gr.Checkbox(False, label="Test-time augmentation", elem_id="augment",
                                               info="Average the maps of shifted (≤5%), rotated (≤5°) and "
                                                    "intensity-jittered (≤5%) copies, mapped back")
                    self.copies = gr.Slider(2, analysis.MAX_AUGMENTATIONS, value=8, step=1, visible=False,
                                            label="Copies (the image included)", elem_id="augment-copies")
                with gr.Accordion("Method settings", open=False, elem_id="method-settings"):
                    self.controls = method_controls(METHODS, method, self._slider_bounds())
                with gr.Row():
                    self.cmap = gr.Dropdown(list(render.UNSIGNED_CMAPS), value=views.Style.unsigned,
                                            label="Colour map", min_width=120)
                    self.cmap_signed = gr.Dropdown(list(render.SIGNED_CMAPS), value=views.Style.signed,
                                                   label="Signed maps", min_width=120)
                self.opacity = gr.Slider(0, 1, value=views.Style.opacity, step=0.05, label="Overlay opacity")
            with gr.Column(scale=3, elem_id="board"):
                # the buttons head the board, beside its progress bar, however long the settings on the left get
                with gr.Row(elem_id="board-actions"):
                    self.explain_button = gr.Button("Explain", variant="primary", elem_id="explain", min_width=120)
                    self.stop_button = gr.Button("Stop", variant="stop", elem_id="stop", min_width=100)
                    self.clear_button = gr.Button("Clear maps", elem_id="clear", min_width=100)
                self.queue_note = gr.Markdown(elem_id="queue-note")
                self.work = gr.Markdown("Grad-CAM appears here on upload; choose another method and press "
                                        "**Explain** to compare up to four maps.", elem_id="work", min_height=40)
                with gr.Row():
                    self.slots = [self._slot(i) for i in range(MAX_PANELS)]
                self.agreement = gr.Markdown(elem_id="agreement")
                with gr.Accordion("Stability over seeds (stochastic methods)", open=False):
                    self.stability_button = gr.Button("Check the latest stochastic map over 3 seeds")
                    with gr.Row():
                        self.stability_mean = gr.Image(label="Mean map", interactive=False, height=260, buttons=[])
                        self.stability_spread = gr.Image(label="Per-pixel spread (std)", interactive=False,
                                                         height=260, buttons=[])
                    self.stability_note = gr.Markdown()

    def _slot(self, i: int) -> Slot:
        # two maps a row from 1024 to 1440 px wide (the board is 644 to 900 px): four in a row left each map, its
        # colour bar and its table too narrow
        with gr.Column(visible=False, min_width=300, elem_id=f"slot-{i}") as column:
            image = gr.Image(interactive=False, height=300, elem_id=f"map-{i}",
                             buttons=["download"])
            text = gr.Markdown(elem_id=f"trust-{i}")
        return Slot(column, image, text)

    def _report_section(self) -> None:
        gr.Markdown("## Report")
        with gr.Row():
            self.report_format = gr.Radio(["PNG", "PDF"], value="PDF", label="Format", scale=1)
            self.report_button = gr.Button("Build report", scale=1, elem_id="build-report")
            self.report_file = gr.File(label="Report (education and research only)", interactive=False, scale=2,
                                       elem_id="report")

    # ------------------------------------------------------------ events

    def _wire(self) -> None:
        board = self._board_components()
        analysed = [self.state, self.input_view, self.seen_view, self.meta, self.label, self.status, self.work,
                    self.target, self.layer, self.upload, self.paste, self.similar_gallery, self.similar_note,
                    self.stability_mean, self.stability_spread, self.stability_note, *board]
        style = [self.cmap, self.cmap_signed, self.opacity]
        private = {"api_visibility": "private"}  # only /predict and /explain are API endpoints
        fast = {**self.limits.fast(), **private}
        heavy = {**self.limits.heavy(), "show_progress_on": [self.work], **private}
        starts = [
            self.upload.upload(self.on_file, [self.upload, self.model, *style], analysed, **fast),
            self.paste.upload(self.on_file, [self.paste, self.model, *style], analysed, **fast),
            self.example_gallery.select(self.on_example, [self.model, *style], analysed, **fast),
            self.model.input(self.on_model, [self.state, self.model, *style], analysed, **fast),
            self.ckpt_button.click(self.on_checkpoint, [self.ckpt_file, self.ckpt_arch, self.ckpt_classes,
                                                        self.ckpt_size, self.state, *style],
                                   [*analysed, self.model, self.ckpt_note, self.ckpt_file], **heavy),
        ]
        follow_ups = []
        for start in starts:
            trust = start.then(self.on_assess, [self.state, *style], [self.state, self.work, *board], **heavy)
            follow_ups.append(trust)
            start.then(self.on_similar, [self.state], [self.state, self.similar_gallery, self.similar_note], **fast)
        self.augment.change(lambda on: gr.Slider(visible=on), self.augment, self.copies, queue=False,
                            show_progress="hidden", **private)
        self.method.change(self.on_method, [self.method],
                           [self.method_info, self.seed, self.layer, *self.controls.groups.values()],
                           queue=False, **private)
        self.controls.wire(**private)  # e.g. LIME's quickshift settings only while quickshift is chosen
        # Gradio drops a click on Explain while the previous one is pending; this answer (no queue, every click)
        # says whether the new request waits behind other work or was dropped because the last one is not done
        self.explain_button.click(self.on_request, [self.state, self.method], [self.queue_note], queue=False,
                                  trigger_mode="multiple", show_progress="hidden", **private)
        explained = self.explain_button.click(
            self.on_explain, [self.state, self.method, self.target, self.layer, self.seed, self.augment, self.copies,
                              *style,
                              *self.controls.components()], [self.state, self.work, self.queue_note, *board],
            **heavy)
        # success, not then: a cancelled explanation must not start trust checks after Stop; always_last: a map
        # added while the previous trust checks run gets its own checks once they end, instead of being dropped
        assessed = explained.success(self.on_assess, [self.state, *style], [self.state, self.work, *board],
                                     trigger_mode="always_last", **heavy)
        stability = self.stability_button.click(
            self.on_stability, [self.state, *style],
            [self.state, self.work, self.stability_mean, self.stability_spread, self.stability_note], **heavy)
        cancellable = [explained, assessed, stability, *follow_ups]
        self.stop_button.click(self.on_stop, [self.state, *style], [self.work, self.queue_note, *board],
                               cancels=cancellable, queue=False, **private)
        for event in cancellable:  # Gradio runs .then listeners of a cancelled event: clear its "Error" badge
            event.then(self.on_settle, None, [self.queue_note], queue=False, show_progress_on=[self.work], **private)
        for control in style:
            control.change(self.on_style, [self.state, *style], [*board, self.stability_mean, self.stability_spread],
                           **fast)
        self.clear_button.click(self.on_clear, [self.state, *style], [self.state, *board], **fast)
        self.report_button.click(self.on_report, [self.state, self.report_format, *style],
                                 [self.report_file, self.work], **{**heavy, "show_progress_on": [self.report_file]})

    def _board_components(self) -> list[gr.components.Component]:
        return [c for s in self.slots for c in (s.column, s.image, s.text)] + [self.agreement]

    def _board(self, session: Session | None, style: views.Style, running: bool = True) -> dict:
        """Updates for the four board slots and the agreement matrix (``running`` False: trust checks stopped)."""
        panels = session.panels if session else []
        updates: dict = {self.agreement: views.agreement_table(analysis.agreement(session) if session else None)}
        for i, slot in enumerate(self.slots):
            if i < len(panels):
                p = panels[i]
                updates[slot.column] = gr.Column(visible=True)
                updates[slot.image] = gr.Image(views.overlay(session, p.explanation, style), label=p.title)
                updates[slot.text] = views.panel_text(p, running)
            else:
                updates[slot.column] = gr.Column(visible=False)
                updates[slot.image] = None
                updates[slot.text] = ""
        return updates

    # ------------------------------------------------------------ handlers

    @guarded()
    def on_file(self, path: str | None, model_key: str, *style: Any) -> dict:
        """A file was uploaded or pasted: decode it once, release the upload, analyse the image."""
        if not path:
            return {self.state: gr.skip()}
        name = Path(path).name
        reset = {self.upload: None, self.paste: None}
        try:
            image = load_image(self.janitor.take(path))
        except (ImageError, UploadError) as err:
            gr.Warning(f"{name}: {err}")
            return {**self._cleared(), **reset, self.status: views.status(f"Could not use **{name}**: {err}", False)}
        return {**self._analyse(image, name, model_key, views.Style(*style), uploaded=True), **reset}

    @guarded()
    def on_example(self, model_key: str, cmap: str, signed_cmap: str, opacity: float, evt: gr.SelectData) -> dict:
        """An example thumbnail was clicked (Gradio passes the click as ``evt``, found by its type)."""
        example = self.examples[evt.index]
        return self._analyse(load_image(example.path), example.label, model_key,
                             views.Style(cmap, signed_cmap, opacity), uploaded=False)

    @guarded()
    def on_model(self, session: Session | None, model_key: str, *style: Any) -> dict:
        """Another model was chosen: predict again and restart the board with its first map."""
        if session is not None and session.model_key == model_key:
            return {self.state: gr.skip()}  # the same model picked again: keep the board
        if session is None:
            loaded = get_model(model_key)
            return {self.target: gr.Dropdown([PREDICTED, *loaded.spec.class_names], value=PREDICTED),
                    self.layer: loaded.spec.cam_layer,
                    self.status: views.status(f"Model **{model_key}** selected.", ok=True)}
        return self._analyse(session.image, session.source, model_key, views.Style(*style), uploaded=session.uploaded)

    def _analyse(self, image: LoadedImage, source: str, model_key: str | None, style: views.Style, *,
                 uploaded: bool) -> dict:
        if not model_key:
            raise ModelUnavailable("No model is available here; see the list of unavailable models.")
        started = time.perf_counter()
        session = analysis.open_session(image, source, model_key, uploaded=uploaded)
        loaded = get_model(model_key)
        first = analysis.first_method()
        if first is not None:
            session.add(analysis.run_method(session, first, {}))
        seconds = time.perf_counter() - started
        done = f"prediction{' and ' + METHODS[first].label if first else ''} in {seconds:.2f} s."
        return {
            **self._cleared(),
            self.state: session,
            self.input_view: views.display(image.array),
            self.seen_view: gr.Image(views.display(analysis.model_view(session), views.SEEN_SIDE),
                                     label=views.model_view_label(loaded.spec)),
            self.meta: views.metadata(image),
            self.label: views.prediction_card(session.assessment),
            self.status: views.status(f"**{source}** ({model_key}): {done}" + views.notes(image), ok=True),
            self.target: gr.Dropdown([PREDICTED, *loaded.spec.class_names], value=PREDICTED),
            self.layer: loaded.spec.cam_layer,
            self.work: "Checking how far to trust the map…" if first else "",
            **self._board(session, style),
        }

    def _cleared(self) -> dict:
        return {self.state: None, self.input_view: None, self.seen_view: None, self.meta: "",
                self.label: views.prediction_card(None),
                self.similar_gallery: None, self.similar_note: "", self.stability_mean: None,
                self.stability_spread: None, self.stability_note: "", self.work: "",
                **self._board(None, views.Style())}

    def on_method(self, method: str) -> dict:
        """Show the chosen method's description and only its settings."""
        info = METHODS[method]
        groups = dict(zip(self.controls.groups.values(), self.controls.visibility(method), strict=True))
        return {self.method_info: views.method_description(info), self.seed: gr.Number(visible=info.stochastic),
                self.layer: gr.Textbox(visible=info.uses_layer), **groups}

    def on_request(self, request: gr.Request, session: Session | None, method: str) -> dict:
        """Explain was clicked: say at once whether the map is computed now, waits behind other work, or whether
        the click was dropped because the previous map is still being computed."""
        if session is None:
            return {self.queue_note: ""}  # on_explain says what to do first
        sid, label = _session_id(request), METHODS[method].label
        pending = self.jobs.labels(sid, "request")
        if pending:  # Gradio ignores a click on a button whose previous click is still pending
            return {self.queue_note: f"**Busy:** {_and(pending)} is still being computed, so this click was not "
                                     f"queued. Press **Explain** again when it appears (or **Stop** it first)."}
        busy = self.jobs.labels(sid, "work")
        self.jobs.add(sid, "request", label)
        if busy:
            return {self.queue_note: f"**Queued:** {label} starts after {_and(busy)} (**Stop** cancels "
                                     "all)."}
        return {self.queue_note: ""}

    def on_explain(self, request: gr.Request, session: Session | None, method: str, target: str, layer: str,
                   seed: float, augment: bool, copies: float, *style_and_values: Any,
                   progress: gr.Progress = gr.Progress()) -> dict:  # noqa: B008
        """Run the selected method with its settings (averaged over ``copies`` augmented copies when ``augment``)
        and add the map to the board."""
        sid, label = _session_id(request), METHODS[method].label
        try:
            with self.jobs.running(sid, label):
                result = self._explain(session, method, target, layer, seed, int(copies or 1) if augment else 1,
                                       *style_and_values, progress=progress)
        finally:
            self.jobs.remove(sid, "request", label)
        return {**result, self.queue_note: ""}

    @guarded("work")
    def _explain(self, session: Session | None, method: str, target: str, layer: str, seed: float,
                 augmentations: int, *style_and_values: Any, progress: gr.Progress) -> dict:
        if session is None:
            raise ValueError("Upload an X-ray (or pick an example) first.")
        style, values = views.Style(*style_and_values[:STYLE_INPUTS]), style_and_values[STYLE_INPUTS:]
        overrides = self.controls.build_overrides(method, values)
        # refused before any work if too big
        self.limits.check_work(method, overrides, tuple(session.x.shape[-2:]), copies=augmentations)
        report = progress_callback(progress, f"{METHODS[method].label}…")
        panel = analysis.run_method(session, method, overrides, None if target == PREDICTED else target, layer,
                                    int(seed or 0), report, augmentations)
        session.add(panel)
        text = f"{panel.title}: {panel.explanation.seconds:.2f} s. Checking how far to trust it…"
        return {self.state: session, self.work: views.status(text, ok=True), **self._board(session, style)}

    def on_settle(self) -> dict:
        """Nothing to compute: runs after a heavy event ends or is cancelled so its progress area is reset."""
        return {self.queue_note: gr.skip()}

    def on_stop(self, request: gr.Request, session: Session | None, *style: Any) -> dict:
        """Stop was pressed (Gradio cancels the heavy events): say what was stopped and mark unfinished checks."""
        stopped = self.jobs.clear(_session_id(request))
        text = (f"Stopped: {_and(stopped)}. The maps already on the board are kept." if stopped
                else "Nothing was running.")
        return {self.work: views.status(text, ok=True), self.queue_note: "",
                **self._board(session, views.Style(*style), running=False)}

    @guarded("work")
    def on_assess(self, request: gr.Request, session: Session | None, *style: Any,
                  progress: gr.Progress = gr.Progress()) -> dict:  # noqa: B008
        """Compute trust figures for every map on the board that lacks them."""
        if session is None:
            return {self.state: gr.skip()}
        todo = [p for p in session.panels if p.quality is None]
        with self.jobs.running(_session_id(request), "the trust checks"):
            for i, panel in enumerate(todo):
                report = progress_callback(progress, f"Trust checks for {panel.title}…", i / len(todo),
                                           1 / len(todo))
                panel.quality = analysis.assess(session, panel, report)
        done = {self.work: views.status("Trust checks done.", ok=True)} if todo else {}
        return {self.state: session, **self._board(session, views.Style(*style)), **done}

    @guarded("work")
    def on_stability(self, request: gr.Request, session: Session | None, *style: Any,
                     progress: gr.Progress = gr.Progress()) -> dict:  # noqa: B008
        """Re-run the latest stochastic map with a few seeds: mean, spread and a reading."""
        stochastic = [p for p in (session.panels if session else []) if METHODS[p.explanation.method].stochastic]
        if session is None or not stochastic:
            raise ValueError("Explain with a stochastic method first (e.g. LIME, Kernel SHAP, SmoothGrad).")
        panel, look = stochastic[-1], views.Style(*style)
        with self.jobs.running(_session_id(request), "the stability check"):
            result = analysis.stability(session, panel, progress_callback(progress, f"{panel.title} over seeds…"))
        session.stability = result
        return {self.state: session, self.work: views.status(result.summary["reading"], ok=True),
                self.stability_mean: views.overlay_map(session, result.mean, panel.explanation.signed, look),
                self.stability_spread: views.spread(result.spread, look),
                self.stability_note: views.stability_text(panel, result)}

    @guarded()
    def on_style(self, session: Session | None, *style: Any) -> dict:
        """Colour map or opacity changed: redraw the board (and the stability view) without recomputing."""
        look = views.Style(*style)
        redrawn = self._board(session, look)
        result = session.stability if session else None
        if result is not None:
            redrawn[self.stability_mean] = views.overlay_map(session, result.mean, METHODS[result.method].signed, look)
            redrawn[self.stability_spread] = views.spread(result.spread, look)
        return redrawn

    @guarded()
    def on_clear(self, session: Session | None, *style: Any) -> dict:
        """Empty the board."""
        if session is not None:
            session.panels = []
        return {self.state: session, **self._board(session, views.Style(*style))}

    @guarded()
    def on_similar(self, session: Session | None) -> dict:
        """Nearest training images in the bundled model's embedding space."""
        if session is None or self.similar is None:
            return {self.state: gr.skip()}
        neighbours = self.similar.query(session.image.array)
        session.neighbours = neighbours
        return {self.state: session, self.similar_note: views.seen_in_training(neighbours) + self.similar.status(),
                self.similar_gallery: [(n.thumbnail, f"{n.label} · {n.distance:.3f}") for n in neighbours]}

    @guarded("work")
    def on_report(self, session: Session | None, fmt: str, *style: Any) -> dict:
        """Write a PNG or PDF report of what is on screen."""
        if session is None:
            raise ValueError("Upload an X-ray (or pick an example) first.")
        path = write_report(session, fmt.lower(), views.Style(*style))
        return {self.report_file: str(path), self.work: views.status(f"Report ready ({fmt}).", ok=True)}

    @guarded()
    def on_checkpoint(self, path: str | None, arch: str, classes: str, size: float, session: Session | None,
                      *style: Any) -> dict:
        """Load a user's checkpoint, select it, suggest its target layer and re-analyse the current image.

        Every problem with the file is told beside the checkpoint panel (and in a toast), in words: a corrupt file
        can make the unpickler fail in ways no loader anticipates (IndexError, TypeError), which still only means
        the file cannot be read."""
        if not path:
            return self._checkpoint_problem("Choose a weights file first.", keep_file=True)
        self.janitor.release(path)
        try:
            key, loaded, layer = load_user_checkpoint(Path(path), arch, classes, int(size or 224))
        except USER_ERRORS as err:
            return self._checkpoint_problem(str(err))
        except Exception as err:  # whatever a damaged file makes the loader raise
            log.warning("checkpoint %s unreadable: %r", Path(path).suffix, err)
            return self._checkpoint_problem(
                f"The weights file could not be read: it looks corrupt or truncated (unpacking it failed with "
                f"{type(err).__name__}). Save it again with torch.save(model.state_dict(), path) or as "
                "safetensors, and upload the new file.")
        text = (f"Loaded **{loaded.spec.description}** ({len(loaded.spec.class_names)} classes); suggested target "
                f"layer `{layer}`.")
        chosen = {self.model: gr.Dropdown([*self.zoo.available, key], value=key), self.ckpt_note: text,
                  self.ckpt_file: None}
        if session is None:
            return {**chosen, self.layer: layer, self.status: views.status(text, ok=True),
                    self.target: gr.Dropdown([PREDICTED, *loaded.spec.class_names], value=PREDICTED)}
        try:
            analysed = self._analyse(session.image, session.source, key, views.Style(*style),
                                     uploaded=session.uploaded)
        except Exception as err:  # the model loaded but cannot run on this image at this size
            log.warning("checkpoint %s failed on the image: %r", key, err)
            message = str(err) if isinstance(err, USER_ERRORS) else (
                f"The checkpoint loaded but failed on this image ({type(err).__name__}); check the architecture, "
                "class names and input size match how it was trained.")
            return {**self._checkpoint_problem(message), self.model: gr.Dropdown([*self.zoo.available, key],
                                                                                 value=session.model_key)}
        return {**analysed, **chosen, self.layer: layer}

    def _checkpoint_problem(self, message: str, keep_file: bool = False) -> dict:
        """A checkpoint problem, shown beside the checkpoint panel (and as a toast), not in the image's status."""
        gr.Warning(message)
        return {self.ckpt_note: views.status(message, ok=False), **({} if keep_file else {self.ckpt_file: None})}
