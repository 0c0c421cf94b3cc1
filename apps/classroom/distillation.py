"""Distillation: a tiny CNN trained on hard labels vs on the bundled model's softened outputs, side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from apps.common import page_footer, page_header
from core.lessons import distillation as D
from core.lessons import transfer as T
from core.zoo import BUNDLED, LoadedModel, ModelUnavailable, get_spec, load_model

DECODE_PX = 192  # the teacher's input size
VALIDATION_FILMS = 200
SHORT = {"validation fold": "validation", "external (new patients)": "new patients"}  # table headings


@st.cache_resource(show_spinner=False, max_entries=3)
def _task(films: int) -> T.Task:
    bar = st.progress(0.0, text="Reading the chest X-rays…")
    task = T.chest_task(get_spec(BUNDLED).training_split, DECODE_PX, films, VALIDATION_FILMS,
                        progress=lambda f, text: bar.progress(min(f, 1.0), text=text))
    bar.empty()
    return task


@st.cache_resource(show_spinner="Loading the teacher…")
def _teacher() -> LoadedModel:
    return load_model(BUNDLED, torch.device("cpu"))


@st.cache_data(show_spinner=False, max_entries=16)
def _student(data_key: str, temperature: float, alpha: float, settings: D.StudentSettings, _task: T.Task
             ) -> D.Result:
    what = "the hard-label student" if alpha == 0 else f"the distilled student (T = {temperature:g})"
    bar = st.progress(0.0, text=f"Training {what}…")
    result = D.student(_teacher(), _task, temperature, alpha, settings,
                       lambda f: bar.progress(min(f, 1.0), text=f"Training {what}: {f:.0%} of the epochs done"))
    bar.empty()
    return result


@st.cache_data(show_spinner="Scoring the teacher on the held-out films…", max_entries=4)
def _teacher_result(data_key: str, _task: T.Task) -> D.Result:
    return D.score_teacher(_teacher(), _task)


@st.cache_data(show_spinner=False, max_entries=8)
def _teacher_logits(data_key: str, _task: T.Task) -> np.ndarray:
    return D.teacher_logits(_teacher(), _task.pool).numpy()


def _controls() -> dict:
    """Temperature, soft-term weight, transfer set and student settings."""
    c1, c2, c3 = st.columns(3, gap="medium")
    temperature = c1.slider("Temperature T", 1.0, 10.0, 4.0, 0.5, key="di_T",
                            help="Both the teacher's and the student's logits are divided by T before the softmax.")
    alpha = c1.slider("Weight of the teacher's soft targets (alpha)", 0.1, 1.0, 0.7, 0.1, key="di_alpha",
                      help="Loss = alpha·T²·KL(teacher_T ‖ student_T) + (1 − alpha)·CE(student, labels).")
    films = c2.select_slider("Training films (transfer set)", [200, 400, 600, 1000, 2000], value=600, key="di_films")
    epochs = c2.slider("Epochs", 1, 30, 8, key="di_epochs")
    size = c3.select_slider("Student input (px)", [32, 48, 64, 96], value=D.STUDENT_SIZE, key="di_size")
    width = c3.select_slider("Student width (first block's channels)", [4, 8, 16], value=8, key="di_width")
    return {"T": temperature, "alpha": alpha, "films": films,
            "settings": D.StudentSettings(size=size, width=width, epochs=epochs)}


def _softening(logits: np.ndarray, temperature: float) -> None:
    """How the temperature flattens the teacher's outputs on the training films."""
    st.subheader("What the student is asked to match")
    t = torch.from_numpy(logits)
    hard = D.softened(t, 1.0)[:, 1].numpy()
    soft = D.softened(t, temperature)[:, 1].numpy()
    fig = go.Figure([go.Histogram(x=hard, name="T = 1 (the teacher's own probabilities)", xbins={"size": 0.025},
                                  opacity=0.7),
                     go.Histogram(x=soft, name=f"T = {temperature:g}", xbins={"size": 0.025}, opacity=0.7)])
    fig.update_layout(barmode="overlay", height=300, margin={"l": 40, "r": 10, "t": 10, "b": 40},
                      xaxis_title="teacher's P(PNEUMONIA) on the training films", yaxis_title="films",
                      legend={"orientation": "h", "y": 1.12})
    st.plotly_chart(fig, key="di_soft")
    certain = float(np.mean((hard < 0.02) | (hard > 0.98)))
    st.caption(f"At T = 1, {certain:.0%} of the {len(hard):,} films get a probability within 0.02 of 0 or 1: almost "
               f"hard labels. At T = {temperature:g} the same logits spread out, and how unsure the teacher is about "
               "each film (its 'dark knowledge') becomes something the student can learn.")


def _results(results: list[D.Result], task: T.Task) -> None:
    """The three models side by side."""
    st.subheader("Teacher and the two students")
    sets = list(task.evals)
    short = {s: SHORT.get(s, s) for s in sets}
    rows = []
    for r in results:
        row = {"model": r.name, "parameters": r.params, "input (px)": r.input_size, "images/s": r.images_per_s}
        for s in sets:
            row[f"AUC, {short[s]}"] = r.auc[s]
            row[f"accuracy, {short[s]}"] = r.accuracy[s]
        row["training (s)"] = r.train_seconds
        rows.append(row)
    fmt = {c: st.column_config.NumberColumn(format="%.3f") for c in rows[0] if c.startswith(("AUC", "accuracy"))}
    fmt |= {"parameters": st.column_config.NumberColumn(format="%d"),
            "images/s": st.column_config.NumberColumn(format="%.0f"),
            "training (s)": st.column_config.NumberColumn(format="%.1f")}
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config=fmt)
    fig = go.Figure([go.Bar(name=r.name, x=[f"AUC, {short[s]}" for s in sets] + [f"accuracy, {short[s]}" for s in sets],
                            y=[r.auc[s] for s in sets] + [r.accuracy[s] for s in sets]) for r in results])
    fig.update_layout(barmode="group", height=340, yaxis_range=[0, 1], margin={"l": 40, "r": 10, "t": 10, "b": 40},
                      legend={"orientation": "h", "y": 1.15})
    st.plotly_chart(fig, key="di_bars")
    teacher, hard, _ = results
    st.caption(f"Measured on {', '.join(f'{s} ({len(task.evals[s]):,} films)' for s in sets)}; accuracy at the 0.5 "
               f"threshold. The students have {teacher.params / hard.params:,.0f}× fewer parameters than the teacher. "
               "images/s: forward passes on this server's CPU while the page ran (other work changes them). "
               "Both students share the seed, the films and the optimiser steps; only the loss differs.")


def main() -> None:
    """The page."""
    page_header(
        "Distillation",
        "A large network's outputs carry more than its labels: how sure it is, and which films look alike. "
        "**Knowledge distillation** (Hinton et al. 2015) trains a small *student* on the teacher's probabilities "
        "softened by a temperature T, not only on the 0/1 labels. Here the teacher is the bundled ResNet-18 at "
        f"{DECODE_PX} px and the student a three-block CNN of a few thousand parameters at low resolution; both "
        "students are scored on new patients.",
    )
    settings = _controls()
    try:
        task = _task(settings["films"])
        _teacher()
    except (FileNotFoundError, ValueError, ModelUnavailable) as err:
        st.error(f"{err} This lesson needs the chest X-ray folder and the bundled model.")
        page_footer()
        return
    key = T.data_key(task)
    with st.spinner("Teacher: logits for the training films (cached after the first run)…"):
        _teacher_logits(key, task)
    results = [_teacher_result(key, task), _student(key, 1.0, 0.0, settings["settings"], task),
               _student(key, settings["T"], settings["alpha"], settings["settings"], task)]
    _softening(_teacher_logits(key, task), settings["T"])
    _results(results, task)
    st.caption("The loss is core.distill.distillation_loss, the one core.train uses to distil checkpoints: "
               "alpha·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha)·cross-entropy; the hard-label "
               "student is the same call with alpha = 0.")
    page_footer()


main()
