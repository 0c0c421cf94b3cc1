"""Judge a classifier: ROC and precision-recall curves, a threshold with its confusion matrix, and how precision
and NPV depend on the prevalence of disease, on the validation fold and on new patients side by side."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from apps.common import model_picker, page_footer, page_header
from core.data import CLASS_NAMES, data_dir, external_dir, index_folder
from core.lessons import thresholds as J
from core.zoo import LoadedModel

SETS = {"validation": "Validation fold", "external": "external/ (new patients)"}
POINT, STORED = "#cf222e", "#1a7f37"
DEFAULT_PREVALENCE = 0.10


@st.cache_data(show_spinner=False, max_entries=16)
def scores(model_name: str, which: str, folder_name: str | None, _loaded: LoadedModel
           ) -> tuple[np.ndarray, np.ndarray] | str:
    """(labels, P(PNEUMONIA)) of one set (from the disk cache when present), or why the set is unavailable."""
    folder = Path(folder_name) if folder_name else None
    if folder is None:
        return ("no chest X-ray folder here (set $CNNLENS_DATA)" if which == "validation"
                else "no external/ folder beside the training folder")
    try:
        index = J.validation_index(_loaded, folder) if which == "validation" else index_folder(folder, CLASS_NAMES)
    except (ValueError, FileNotFoundError) as err:
        return str(err)
    bar = st.progress(0.0, text=f"Scoring {len(index):,} films of the {SETS[which]} with {model_name}…")
    result = J.scored(_loaded, index, progress=lambda f: bar.progress(f, text=f"Scoring the {SETS[which]}: {f:.0%}"))
    bar.empty()  # created and emptied inside, so Streamlit's replay of this cached call leaves nothing behind
    return result


def what_chose_what(which: str, selected: str | None, stored: J.StoredThreshold | None) -> str:
    """Which choices this set took part in, from the checkpoint's own records."""
    roles = []
    if selected is not None and (selected == which or (which == "external" and selected.startswith("external"))):
        roles.append("the training epoch")
    if stored is not None and stored.fitted_on.startswith("external" if which == "external" else "validation"):
        roles.append("the calibration and the operating threshold")
    if not roles:
        return "This set chose nothing about the model: its numbers are an honest estimate for films like these."
    return (f"This set chose {' and '.join(roles)}: its numbers at that threshold are optimistic, as any score "
            "measured on the data that made a choice.")


def roc_figure(curves: J.Curves, point: J.OperatingPoint, stored: J.OperatingPoint | None) -> go.Figure:
    """The ROC curve with the current threshold's point (and the stored threshold's)."""
    fig = go.Figure()
    fig.add_scatter(x=curves.fpr, y=curves.tpr, mode="lines", name=f"ROC (AUC {curves.roc_auc:.3f})",
                    line={"color": "#1f6feb"})
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"color": "#8c959f", "dash": "dot"})
    if stored is not None:
        fig.add_scatter(x=[stored.fpr], y=[stored.sensitivity], mode="markers", name="stored threshold",
                        marker={"color": STORED, "size": 13, "symbol": "diamond-open", "line": {"width": 3}})
    fig.add_scatter(x=[point.fpr], y=[point.sensitivity], mode="markers", name=f"threshold {point.threshold:.3f}",
                    marker={"color": POINT, "size": 11})
    fig.update_xaxes(title="1 − specificity (false-positive rate)", range=[-0.02, 1.02])
    fig.update_yaxes(title="sensitivity (recall)", range=[-0.02, 1.02])
    return _layout(fig)


def pr_figure(curves: J.Curves, point: J.OperatingPoint, stored: J.OperatingPoint | None) -> go.Figure:
    """The precision-recall curve with the current threshold's point (and the stored threshold's)."""
    fig = go.Figure()
    fig.add_scatter(x=curves.recall, y=curves.precision, mode="lines", line={"color": "#1f6feb"},
                    name=f"PR (average precision {curves.average_precision:.3f})")
    fig.add_scatter(x=[0, 1], y=[curves.prevalence] * 2, mode="lines", line={"color": "#8c959f", "dash": "dot"},
                    name=f"call everything PNEUMONIA ({curves.prevalence:.0%})")
    for op, name, marker in ((stored, "stored threshold", {"color": STORED, "size": 13, "symbol": "diamond-open",
                                                           "line": {"width": 3}}),
                             (point, f"threshold {point.threshold:.3f}", {"color": POINT, "size": 11})):
        if op is not None and not math.isnan(op.precision):
            fig.add_scatter(x=[op.sensitivity], y=[op.precision], mode="markers", name=name, marker=marker)
    fig.update_xaxes(title="recall (sensitivity)", range=[-0.02, 1.02])
    fig.update_yaxes(title="precision (PPV)", range=[-0.02, 1.02])
    return _layout(fig)


def confusion_figure(point: J.OperatingPoint) -> go.Figure:
    """The 2 x 2 confusion matrix (rows: true class, columns: predicted), counts written in the cells."""
    z = [[point.tn, point.fp], [point.fn, point.tp]]
    names = [f"{c}" for c in CLASS_NAMES]
    fig = go.Figure(go.Heatmap(z=z, x=[f"called {n}" for n in names], y=[f"truly {n}" for n in names],
                               colorscale="Blues", showscale=False, text=z, texttemplate="%{text}",
                               textfont={"size": 18}))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=230, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def prevalence_figure(point: J.OperatingPoint, prevalence: float) -> go.Figure:
    """Precision and NPV against the prevalence of disease at this threshold's sensitivity and specificity."""
    grid = np.linspace(0.005, 0.995, 199)
    ppv, npv = J.predictive_values(point.sensitivity, point.specificity, grid)
    at_ppv, at_npv = J.predictive_values(point.sensitivity, point.specificity, prevalence)
    fig = go.Figure()
    fig.add_scatter(x=grid, y=ppv, mode="lines", name="precision (PPV)", line={"color": POINT})
    fig.add_scatter(x=grid, y=npv, mode="lines", name="NPV", line={"color": "#1f6feb"})
    fig.add_scatter(x=[prevalence, prevalence], y=[float(at_ppv), float(at_npv)], mode="markers",
                    name=f"prevalence {prevalence:.1%}", marker={"color": "#24292f", "size": 10})
    fig.update_xaxes(title="prevalence of pneumonia", tickformat=".0%", range=[0, 1])
    fig.update_yaxes(title="predictive value", tickformat=".0%", range=[-0.02, 1.02])
    return _layout(fig)


def _layout(fig: go.Figure) -> go.Figure:
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      legend={"orientation": "h", "y": -0.28, "x": 0})
    return fig


def numbers_table(point: J.OperatingPoint, curves: J.Curves, prevalence: float) -> pd.DataFrame:
    """Every number of one set at the current threshold, with what it measures."""
    ppv, npv = J.predictive_values(point.sensitivity, point.specificity, prevalence)
    rows = [("sensitivity (recall)", point.sensitivity, "pneumonia films found"),
            ("specificity", point.specificity, "NORMAL films cleared"),
            ("precision (PPV)", point.precision, "PNEUMONIA calls that are right"),
            ("NPV", point.npv, "NORMAL calls that are right"),
            ("F1", point.f1, "harmonic mean of the two above"),
            ("accuracy", point.accuracy, "films called right"),
            ("ROC AUC", curves.roc_auc, "any threshold: ranking"),
            ("average precision", curves.average_precision, "any threshold: PR area"),
            (f"precision at {prevalence:.1%} prevalence", float(ppv), "same sens. and spec."),
            (f"NPV at {prevalence:.1%} prevalence", float(npv), "same sens. and spec.")]
    return pd.DataFrame(rows, columns=["measure", "value", "meaning"])


def set_column(which: str, labels: np.ndarray, prob: np.ndarray, threshold: float, prevalence: float,
               stored: J.StoredThreshold | None, selected: str | None) -> None:
    """One set's curves, confusion matrix, numbers and prevalence chart."""
    curves = J.curves(labels, prob)
    point = J.operating_point(labels, prob, threshold)
    stored_point = J.operating_point(labels, prob, stored.value) if stored is not None else None
    st.subheader(SETS[which])
    st.caption(f"{len(labels):,} films: {int((labels == 0).sum()):,} NORMAL, {int(labels.sum()):,} PNEUMONIA "
               f"(prevalence {curves.prevalence:.1%}). {what_chose_what(which, selected, stored)}")
    m1, m2 = st.columns(2)
    m1.metric("Sensitivity", f"{point.sensitivity:.1%}")
    m2.metric("Specificity", f"{point.specificity:.1%}")
    m3, m4 = st.columns(2)
    m3.metric("Precision", "—" if math.isnan(point.precision) else f"{point.precision:.1%}",
              help="Undefined (—) when no film is called PNEUMONIA.")
    m4.metric("F1", f"{point.f1:.3f}")
    st.plotly_chart(confusion_figure(point), key=f"jc_cm_{which}", config={"displayModeBar": False})
    st.markdown(f"**ROC curve** (AUC {curves.roc_auc:.3f})")
    st.plotly_chart(roc_figure(curves, point, stored_point), key=f"jc_roc_{which}", config={"displayModeBar": False})
    st.markdown(f"**Precision-recall curve** (average precision {curves.average_precision:.3f})")
    st.plotly_chart(pr_figure(curves, point, stored_point), key=f"jc_pr_{which}", config={"displayModeBar": False})
    st.markdown(f"**Precision and NPV if pneumonia were {prevalence:.1%} of films** (at this threshold's "
                f"sensitivity {point.sensitivity:.1%} and specificity {point.specificity:.1%})")
    st.plotly_chart(prevalence_figure(point, prevalence), key=f"jc_prev_{which}", config={"displayModeBar": False})
    st.dataframe(numbers_table(point, curves, prevalence), hide_index=True, key=f"jc_table_{which}",
                 column_config={"value": st.column_config.NumberColumn(format="%.4f")})


def main() -> None:
    """The page: model, threshold and prevalence, then the validation fold and new patients side by side."""
    page_header(
        "Judge a classifier",
        "A classifier outputs a probability; a **threshold** turns it into a decision. Move the threshold and watch "
        "the confusion matrix, **sensitivity** (pneumonia found), **specificity** (healthy films cleared), "
        "**precision** and **F1** trade against each other, and the point move along the **ROC** and "
        "**precision-recall** curves. Precision also depends on how common the disease is: the **prevalence** "
        "slider shows it at a fixed sensitivity and specificity. The same model is judged on its patient-level "
        "**validation fold** and on **new patients** side by side: numbers measured on the data that made a "
        "choice (the epoch, the threshold) are optimistic.",
    )
    loaded = model_picker("jc_model")
    if tuple(loaded.spec.class_names) != CLASS_NAMES:
        st.error(f"{loaded.spec.name} predicts {len(loaded.spec.class_names)} ImageNet classes, not NORMAL and "
                 "PNEUMONIA: choose a chest X-ray model.")
        st.stop()
    stored = J.stored_threshold(loaded.spec)
    selected = J.selected_on(loaded.spec)
    side = st.sidebar
    side.header("Decision")
    default = round(stored.value, 3) if stored is not None else 0.5
    threshold = side.slider("Threshold on P(PNEUMONIA)", 0.0, 1.0, default, 0.001, key="jc_threshold",
                            format="%.3f", help="A film is called PNEUMONIA when P(PNEUMONIA) ≥ threshold.")
    if stored is not None:
        side.caption(f"Stored operating threshold **{stored.value:.3f}** (green diamond): {stored.rule}; fitted on "
                     f"{stored.fitted_on}. Probabilities are calibrated, as the X-ray app shows them.")
    else:
        side.caption("This model stores no operating threshold; 0.5 is the usual default.")
    prevalence = side.slider("Prevalence of pneumonia", 0.005, 0.95, DEFAULT_PREVALENCE, 0.005, key="jc_prevalence",
                             format="%.3f", help="The share of films with pneumonia where the model would be used.")
    columns = st.columns(2, gap="large")
    for col, which in zip(columns, SETS, strict=True):
        with col:
            folder = data_dir() if which == "validation" else external_dir()
            result = scores(loaded.spec.name, which, str(folder) if folder else None, loaded)
            if isinstance(result, str):
                st.subheader(SETS[which])
                st.warning(f"The {SETS[which]} is not available: {result}")
                continue
            set_column(which, *result, threshold, prevalence, stored, selected)
    page_footer()


if __name__ == "__main__":
    main()
