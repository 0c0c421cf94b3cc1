"""Hand-crafted vs learned features: learning curves of four approaches over the number of labelled images."""

from __future__ import annotations

import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from apps.common import page_footer, page_header
from core.embed.models import load as load_embedding_model
from core.lessons import transfer as T
from core.zoo import BUNDLED, IMAGENET_MODELS, LoadedModel, ModelUnavailable, get_spec, unavailable_reason

DATASETS = ("chest X-rays", "scikit-learn digits")
SIZE_CHOICES = (20, 50, 100, 200, 300, 500, 1000)
APPROACHES = {
    "a": "(a) hand-crafted features",
    "b": "(b) frozen embeddings",
    "c": "(c) fine-tune last block",
    "d": "(d) from scratch",
}
DECODE_PX = 192  # the bundled model's input size: its embeddings see the films as it was trained on them
COLOURS = {"a": "#1f77b4", "b": "#ff7f0e", "c": "#2ca02c", "d": "#d62728"}


# ------------------------------------------------------------------------------------------ cached work
@st.cache_resource(show_spinner=False, max_entries=4)
def _task(dataset: str, pool: int, val: int) -> T.Task:
    if dataset == "scikit-learn digits":
        return T.digits_task()
    bar = st.progress(0.0, text="Reading the chest X-rays…")
    task = T.chest_task(get_spec(BUNDLED).training_split, DECODE_PX, pool, val,
                        progress=lambda f, text: bar.progress(min(f, 1.0), text=text))
    bar.empty()
    return task


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _model(name: str) -> LoadedModel:
    return load_embedding_model(name, torch.device("cpu"))


@st.cache_data(show_spinner=False, max_entries=32)
def _handcrafted(data_key: str, px: int, kinds: tuple[str, ...], classifiers: tuple[str, ...],
                 sizes: tuple[int, ...], _task: T.Task) -> tuple[list[T.CurvePoint], float]:
    start = time.perf_counter()
    with st.spinner(f"Hand-crafted features at {px} px ({', '.join(kinds)})…"):
        x_pool = T.handcrafted_features(_task.pool.head(max(sizes)), px, kinds)
        evals = {name: (T.handcrafted_features(s, px, kinds), s.labels) for name, s in _task.evals.items()}
    features = time.perf_counter() - start
    points = []
    for clf in classifiers:
        points += T.classifier_curve(f"a|{clf}", clf, x_pool, _task.pool.labels[:len(x_pool)], evals, sizes,
                                     len(_task.class_names))
    return points, features


@st.cache_data(show_spinner=False, max_entries=32)
def _embedded(data_key: str, model: str, classifiers: tuple[str, ...], sizes: tuple[int, ...], _task: T.Task
              ) -> tuple[list[T.CurvePoint], float, bool]:
    loaded = _model(model)
    start = time.perf_counter()
    bar = st.progress(0.0, text=f"Embedding with {model}…")
    pool = _task.pool.head(max(sizes))
    parts = {"pool": pool, **_task.evals}
    vectors, hits = {}, []
    for i, (name, images) in enumerate(parts.items()):
        vectors[name], hit = T.cnn_embeddings(loaded, images, _task.class_names, f"{_task.name} {name}",
                                         lambda f, i=i, name=name: bar.progress((i + f) / len(parts),
                                                                                text=f"Embedding {name} with {model}"))
        hits.append(hit)
    bar.empty()
    features = time.perf_counter() - start
    evals = {name: (vectors[name], s.labels) for name, s in _task.evals.items()}
    points = []
    for clf in classifiers:
        points += T.classifier_curve(f"b|{clf}|{model}", clf, vectors["pool"], pool.labels, evals, sizes,
                                     len(_task.class_names))
    return points, features, all(hits)


@st.cache_data(show_spinner=False, max_entries=32)
def _cnn(data_key: str, model: str, settings: T.CNNSettings, sizes: tuple[int, ...], scratch: bool,
         _task: T.Task) -> tuple[list[T.CurvePoint], bool]:
    loaded = _model(model)
    approach = "d" if scratch else "c"
    bar = st.progress(0.0, text=f"{APPROACHES[approach]}…")
    key = T.curve_key(approach, T.model_key(loaded), data_key, settings, sizes)
    points, hit = T.cached_curve(key, lambda: T.cnn_curve(approach, loaded, _task, sizes, settings, scratch,
                                                          lambda f, text: bar.progress(f, text=text)))
    bar.empty()
    return points, hit


# ------------------------------------------------------------------------------------------ sections
def _controls() -> dict:
    """Data, sizes and per-approach settings."""
    c1, c2 = st.columns([1, 3], gap="medium")
    dataset = c1.radio("Data", DATASETS, key="tr_data")
    approaches = c2.multiselect("Approaches", list(APPROACHES), default=list(APPROACHES), format_func=APPROACHES.get,
                                key="tr_approaches")
    c1, c2, c3 = st.columns(3, gap="medium")
    with c1:
        sizes = st.multiselect("Training-set sizes (labelled images)", SIZE_CHOICES, default=[20, 50, 100, 200],
                               key="tr_sizes")
        val = st.select_slider("Validation films (chest X-rays)", [100, 200, 400, 1043], value=200, key="tr_val",
                               help="A seeded sample of the bundled model's held-out patients' films.")
        classifiers = st.multiselect("Classifiers for (a) and (b)", T.CLASSIFIERS, default=list(T.CLASSIFIERS),
                                     key="tr_clf")
    with c2:
        px = st.select_slider("Hand-crafted features at (px)", [32, 64, 96, 128], value=64, key="tr_px")
        kinds = st.multiselect("Hand-crafted features", T.HANDCRAFTED, default=list(T.HANDCRAFTED), key="tr_kinds")
        imagenet = [n for n in IMAGENET_MODELS if unavailable_reason(n) is None]
        models = ([BUNDLED, *imagenet] if dataset == "chest X-rays" else ["digits-cnn"])
        model = st.selectbox("Pretrained model for (b) and (c)", models, key="tr_model")
    with c3:
        cnn_px = st.select_slider("CNN input for (c) and (d) (px)", [48, 64, 96, 128, 192], value=64, key="tr_cnn_px",
                                  disabled=dataset != "chest X-rays")
        epochs = st.slider("Epochs", 1, 20, 4, key="tr_epochs")
        factor = st.select_slider("Earlier layers' learning rate (× the last block's)", [0.0, 0.01, 0.1, 0.3, 1.0],
                                  value=0.1, key="tr_factor", help="0 freezes them.")
    return {"dataset": dataset, "approaches": approaches, "sizes": tuple(sorted(sizes)), "val": val,
            "classifiers": tuple(classifiers), "px": px, "kinds": tuple(kinds), "model": model,
            "cnn_px": cnn_px if dataset == "chest X-rays" else 8, "epochs": epochs, "factor": factor,
            "imagenet": imagenet}


def _label(approach: str) -> str:
    """'a|logistic regression' -> '(a) hand-crafted + logistic regression'."""
    key, *rest = approach.split("|")
    names = {"a": "(a) hand-crafted", "b": "(b) embeddings", "c": "(c) fine-tuned", "d": "(d) from scratch"}
    return " + ".join([names[key], *rest[:1]])


def _figure(points: list[T.CurvePoint], sets: list[str]) -> go.Figure:
    """AUC and accuracy against training-set size (log axis), one column per evaluation set."""
    fig = make_subplots(rows=2, cols=len(sets), shared_xaxes=True, vertical_spacing=0.08, horizontal_spacing=0.06,
                        subplot_titles=[f"ROC AUC, {s}" for s in sets] + [f"accuracy, {s}" for s in sets])
    approaches = list(dict.fromkeys(p.approach for p in points))
    for approach in approaches:
        dash = "dot" if "random forest" in approach else "solid"
        for col, s in enumerate(sets, start=1):
            pts = sorted((p for p in points if p.approach == approach and p.evaluated_on == s), key=lambda p: p.n_train)
            for row, values in ((1, [p.auc for p in pts]), (2, [p.accuracy for p in pts])):
                fig.add_trace(go.Scatter(x=[p.n_train for p in pts], y=values, mode="lines+markers",
                                         name=_label(approach), legendgroup=approach,
                                         showlegend=row == 1 and col == 1,
                                         line={"color": COLOURS[approach[0]], "dash": dash}), row=row, col=col)
    sizes = sorted({p.n_train for p in points})
    fig.update_xaxes(type="log", tickvals=sizes, ticktext=[f"{n:,}" for n in sizes])
    fig.update_xaxes(title_text="labelled training images", row=2)
    fig.update_layout(height=620, margin={"l": 40, "r": 10, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.15})
    return fig


def _results(settings: dict, task: T.Task) -> None:
    """Run (or fetch) every chosen approach, then draw the curves and the tables."""
    sizes = settings["sizes"]
    try:
        sizes = tuple(T.check_sizes(sizes, len(task.pool)))
    except ValueError as err:
        st.error(str(err))
        return
    key = T.data_key(task)
    points: list[T.CurvePoint] = []
    timing = []
    try:
        if "a" in settings["approaches"]:
            pts, feat = _handcrafted(key, settings["px"], settings["kinds"], settings["classifiers"], sizes, task)
            points += pts
            timing.append(("(a) hand-crafted features", feat, "computed", pts))
        if "b" in settings["approaches"]:
            pts, feat, hit = _embedded(key, settings["model"], settings["classifiers"], sizes, task)
            points += pts
            timing.append((f"(b) embeddings of {settings['model']}", feat,
                           "read from core.embed's cache" if hit else "computed", pts))
        cnn = T.CNNSettings(settings["cnn_px"], settings["epochs"], earlier_lr_factor=settings["factor"])
        for code, scratch in (("c", False), ("d", True)):
            if code in settings["approaches"]:
                pts, hit = _cnn(key, settings["model"], cnn, sizes, scratch, task)
                points += pts
                how = "curve read from the disk cache" if hit else "none: the network learns them"
                timing.append((APPROACHES[code], None, how, pts))
    except (ValueError, ModelUnavailable) as err:
        st.error(str(err))
        return
    if not points:
        st.info("Choose at least one approach (and a classifier for (a) and (b)).")
        return
    sets = list(task.evals)
    st.plotly_chart(_figure(points, sets), key="tr_curves")
    st.caption(f"Measured on {task.name}: " + "; ".join(f"{name}, {len(s):,} images" for name, s in
                                                        task.evals.items()) + ". Dotted: random forest. A flat "
               "accuracy line at the share of the commoner class means the model gives every image that class.")
    table = pd.DataFrame([{"approach": _label(p.approach), "training images": p.n_train, "scored on": p.evaluated_on,
                           "ROC AUC": p.auc, "accuracy": p.accuracy} for p in points])
    with st.expander("Every point as a table"):
        st.dataframe(table, hide_index=True, column_config={
            "ROC AUC": st.column_config.NumberColumn(format="%.3f"),
            "accuracy": st.column_config.NumberColumn(format="%.3f")})
    st.subheader("Time per approach")
    rows = []
    for name, features, how, pts in timing:
        fits = {}
        for p in pts:  # one time per (approach, size): scoring sets repeat it
            fits[(p.approach, p.n_train)] = p.seconds
        rows.append({"approach": name, "features (s)": features, "features": how,
                     "training over all sizes (s)": sum(fits.values())})
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.1f") for c in ("features (s)", "training over all sizes (s)")})
    st.caption("Wall-clock seconds on this server's CPU, measured when each result was first computed (results are "
               "cached); (c) and (d) include scoring. Other work on the machine changes them.")


def _explain(task: T.Task, settings: dict) -> None:
    """What the four approaches are and what to read in the curves."""
    with st.expander("What the approaches are, and what is fair to compare", expanded=False):
        st.markdown(
            "- **(a)** HOG (gradient orientations in an 8 × 8 grid of cells), uniform LBP texture histograms and "
            "intensity statistics, computed by scikit-image at the chosen size; then a standardised logistic "
            "regression or a random forest (scikit-learn).\n"
            "- **(b)** the pretrained network's global-average-pooled features (its embedding layer), frozen; "
            "the same classifiers on top.\n"
            "- **(c)** the pretrained network with a fresh linear head: the last block and head learn at the "
            "full rate, earlier layers at the chosen fraction (one optimiser, two parameter groups; 0 freezes "
            "them; their BatchNorm statistics stay fixed).\n"
            "- **(d)** the same architecture from random weights.\n\n"
            "**Fairness.** The bundled model learned its features from about 4,000 labelled films of *this* task "
            "(the training patients), so (b) and (c) start from far more labels than the curve's x-axis says; the "
            "honest transfer test is an ImageNet network, used here only when its weights are on disk.")
        for note in task.notes:
            st.caption(note)
        missing = [n for n in IMAGENET_MODELS if n not in settings["imagenet"]]
        if missing and settings["dataset"] == "chest X-rays":
            st.caption("Not available here: " + "; ".join(f"**{n}** ({unavailable_reason(n)})" for n in missing))


def main() -> None:
    """The page."""
    page_header(
        "Hand-crafted vs learned features",
        "The traditional recipe extracts **hand-designed features** (texture, edges, intensity) and trains a "
        "classifier on them; deep learning **learns the features**, either reusing a pretrained network (frozen "
        "embeddings, or fine-tuning its last block) or training from scratch. Which wins depends on how many "
        "labelled images you have: the learning curves below train each approach on 20 … N images and score it on "
        "patients it never saw.",
    )
    settings = _controls()
    try:
        task = _task(settings["dataset"], max(settings["sizes"], default=20), settings["val"])
    except (FileNotFoundError, ValueError, ModelUnavailable) as err:
        st.error(f"{err} Choose the digits instead: they are bundled with scikit-learn.")
        page_footer()
        return
    _explain(task, settings)
    _results(settings, task)
    page_footer()


main()
