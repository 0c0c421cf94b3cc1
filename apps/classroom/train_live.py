"""Train live: a small CNN learns pneumonia from 64 px chest X-rays while the loss and accuracy curves of the
training films, the patient-level validation fold and new patients grow epoch by epoch."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from apps.common import page_footer, page_header
from core.data import data_dir, external_dir
from core.lessons import training as T

DEFAULTS = T.Settings()
REPLAYS = 48  # finished runs kept for instant replay (all visitors share them)
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
BATCH_SIZES = (8, 16, 32, 64, 128, 256)
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1)
WIDTHS = (4, 8, 16, 32)
NORMAL_SHARES: dict[str, float | None] = {"as collected": None, "50 %": 0.5, "25 %": 0.25, "10 %": 0.1, "5 %": 0.05}
SETS = {"train": ("training films (running, during the epoch)", "#1f6feb"),
        "validation": ("validation fold (other patients, same hospital)", "#d29922"),
        "external": ("external/ (new patients)", "#cf222e")}
SHORT = {"train": "Training films", "validation": "Validation fold", "external": "New patients"}
PANELS = (("loss", "Loss (cross-entropy)"), ("accuracy", "Accuracy"),
          ("specificity", "Specificity (NORMAL films recognised)"))
CONTROL_KEYS = {"architecture": "tl_arch", "width": "tl_width", "lr": "tl_lr", "batch_size": "tl_batch",
                "epochs": "tl_epochs", "optimiser": "tl_opt", "weight_decay": "tl_wd", "dropout": "tl_dropout",
                "batch_norm": "tl_bn", "augment": "tl_aug", "class_weighting": "tl_cw", "train_size": "tl_size",
                "normal_share": "tl_share", "seed": "tl_seed"}


@st.cache_resource(show_spinner=False, max_entries=4)
def lab_data(folder: str, external: str | None) -> T.LabData:
    """The three sets decoded at 64 px (from the disk cache when present), with a progress bar while decoding."""
    bar = st.progress(0.0, text="Decoding the chest X-rays at 64 px (once; cached on disk)…")
    data = T.load_lab_data(Path(folder), Path(external) if external else None,
                           progress=lambda f: bar.progress(f, text=f"Decoding the chest X-rays at 64 px: {f:.0%}"))
    bar.empty()
    return data


@st.cache_resource(show_spinner=False)
def finished_runs() -> OrderedDict[str, list[T.EpochRecord]]:
    """Finished runs by data and settings: the same settings replay instantly (runs are seeded)."""
    return OrderedDict()


def apply_preset() -> None:
    """Copy the chosen preset's settings into the controls."""
    settings = T.preset(st.session_state["tl_preset"]).settings
    for field, key in CONTROL_KEYS.items():
        st.session_state[key] = control_value(settings, field)


def control_value(settings: T.Settings, field: str) -> object:
    """A setting as its control holds it (the NORMAL share by its label)."""
    value = getattr(settings, field)
    return next(k for k, v in NORMAL_SHARES.items() if v == value) if field == "normal_share" else value


def controls(n_train: int) -> tuple[T.Settings, bool]:
    """The preset picker and the training form; returns the settings and whether Train was pressed."""
    for field, key in CONTROL_KEYS.items():
        st.session_state.setdefault(key, control_value(DEFAULTS, field))
    st.session_state["tl_size"] = min(st.session_state["tl_size"], n_train)
    chosen = st.selectbox("Preset", T.PRESET_NAMES, key="tl_preset", on_change=apply_preset,
                          help="Fills in the settings below; press Train to run them.")
    st.info(f"**Look for:** {T.preset(chosen).look_for}")
    with st.form("tl_form"):
        c1, c2, c3, c4 = st.columns(4)
        architecture = c1.radio("Network", list(T.ARCHITECTURES), key="tl_arch", format_func=T.ARCHITECTURES.get)
        width = c1.select_slider("Width (channels of the first stage)", WIDTHS, key="tl_width")
        batch_norm = c1.toggle("Batch normalisation", key="tl_bn")
        optimiser = c2.selectbox("Optimiser", list(T.OPTIMISERS), key="tl_opt", format_func=T.OPTIMISERS.get)
        lr = c2.select_slider("Learning rate (log scale)", LEARNING_RATES, key="tl_lr")
        batch_size = c2.select_slider("Batch size", BATCH_SIZES, key="tl_batch")
        epochs = c2.slider("Epochs", 1, 60, key="tl_epochs")
        weight_decay = c3.select_slider("Weight decay", WEIGHT_DECAYS, key="tl_wd")
        dropout = c3.slider("Dropout before the classifier", 0.0, 0.8, step=0.1, key="tl_dropout")
        augment = c3.toggle("Augmentation", key="tl_aug",
                            help="Each training film is randomly rotated, zoomed and shifted a little and its "
                                 "brightness and contrast jittered, anew every epoch.")
        class_weighting = c3.toggle("Class weighting in the loss", key="tl_cw",
                                    help="Weights each class by n / (2 × its count), so NORMAL and PNEUMONIA films "
                                         "carry the same total weight.")
        train_size = int(c4.number_input(f"Training films (of {n_train:,})", 4, n_train, step=50, key="tl_size"))
        share = c4.selectbox("Share of NORMAL films", list(NORMAL_SHARES), key="tl_share",
                             help="'as collected': the training fold's own mix (about a quarter NORMAL).")
        seed = int(c4.number_input("Seed", 0, 10_000, key="tl_seed",
                                   help="Chooses the films, the starting weights and the batch order."))
        start = st.form_submit_button("Train", type="primary")
    settings = T.Settings(architecture, width, lr, batch_size, epochs, optimiser, weight_decay, dropout, batch_norm,
                          augment, class_weighting, train_size, NORMAL_SHARES[share], seed)
    return settings, start


def curves_figure(records: list[T.EpochRecord], epochs: int) -> go.Figure:
    """Loss, accuracy and specificity per epoch for the three sets, on a fixed epoch axis."""
    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[title for _, title in PANELS],
                        horizontal_spacing=0.07)
    x = [r.epoch for r in records]
    for name, (label, colour) in SETS.items():
        scores = [getattr(r, name) for r in records]
        if any(s is None for s in scores):
            continue
        for col, (metric, _) in enumerate(PANELS, start=1):
            fig.add_scatter(x=x, y=[getattr(s, metric) for s in scores], name=label, legendgroup=name,
                            showlegend=col == 1, mode="lines+markers", line={"color": colour}, row=1, col=col)
    fig.update_xaxes(title="epoch", range=[0.5, epochs + 0.5], dtick=max(1, epochs // 10))
    for col in (2, 3):
        fig.update_yaxes(range=[-0.02, 1.02], tickformat=".0%", row=1, col=col)
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.22})
    return fig


def epoch_table(records: list[T.EpochRecord]) -> pd.DataFrame:
    """Every number the curves draw, one row per epoch and set."""
    rows = []
    for r in records:
        for name, (label, _) in SETS.items():
            s = getattr(r, name)
            if s is not None:
                rows.append({"epoch": r.epoch, "set": label, "films": s.n, "loss": s.loss, "accuracy": s.accuracy,
                             "sensitivity": s.sensitivity, "specificity": s.specificity, "ROC AUC": s.roc_auc,
                             "called PNEUMONIA": s.called_positive})
    return pd.DataFrame(rows)


def show_run(records: list[T.EpochRecord], settings: T.Settings, note: str) -> None:
    """The finished (or stopped) run: curves, status, the last epoch's numbers and the table behind the curves."""
    st.plotly_chart(curves_figure(records, settings.epochs), key="tl_curves", config={"displayModeBar": False})
    st.caption(note)
    last = records[-1]
    if last.diverged:
        st.error(f"The loss became infinite or NaN in epoch {last.epoch}: the learning rate is too high for these "
                 "settings. Lower it and train again.")
        records = records[:-1]
    if records:
        last = records[-1]
        cols = st.columns(3)
        for col, name in zip(cols, SETS, strict=True):
            s = getattr(last, name)
            if s is not None:
                col.metric(f"{SHORT[name]}: accuracy", f"{s.accuracy:.1%}",
                           help=f"Loss {s.loss:.3f}, sensitivity {s.sensitivity:.1%}, specificity "
                                f"{s.specificity:.1%}, ROC AUC {s.roc_auc:.3f}, on {s.n:,} films.")
        seconds = sum(r.train_seconds + r.score_seconds for r in records)
        st.caption(f"Accuracy after epoch {last.epoch} (hover for the other numbers). {len(records)} epoch(s), "
                   f"{seconds:.1f} s of training and scoring when first run.")
    with st.expander("Numbers behind the curves"):
        st.dataframe(epoch_table(records), hide_index=True, key="tl_table",
                     column_config={c: st.column_config.NumberColumn(format="%.4f")
                                    for c in ("loss", "accuracy", "sensitivity", "specificity", "ROC AUC",
                                              "called PNEUMONIA")})


def train(data: T.LabData, settings: T.Settings, key: str) -> list[T.EpochRecord] | None:
    """Run live, drawing each epoch as it ends; None when the settings are refused (the reason is shown)."""
    try:
        run = T.LiveRun(data, settings)
    except ValueError as err:
        st.error(str(err))
        return None
    records: list[T.EpochRecord] = []
    st.session_state["tl_partial"] = (settings, records)  # kept if a Stop (or any rerun) interrupts the loop
    bar = st.progress(0.0, text=f"Epoch 1 of {settings.epochs}…")
    slot = st.empty()
    for record in run:
        records.append(record)
        bar.progress(record.epoch / settings.epochs, text=f"Epoch {record.epoch} of {settings.epochs} done")
        slot.plotly_chart(curves_figure(records, settings.epochs), key=f"tl_live_{record.epoch}",
                          config={"displayModeBar": False})
    bar.empty()
    slot.empty()
    del st.session_state["tl_partial"]
    runs = finished_runs()
    runs[key] = records
    while len(runs) > REPLAYS:
        runs.popitem(last=False)
    return records


def main() -> None:
    """The page: presets and controls, the Stop button, and the live or replayed curves."""
    page_header(
        "Train live",
        "A small convolutional network learns to tell NORMAL from PNEUMONIA chest X-rays at 64 × 64 pixels, here "
        "and now. After every epoch (one pass over the training films) it is scored on three sets: the "
        "**training films** themselves, the **validation fold** (other patients from the same hospital and period; "
        "no patient is on both sides) and **external/** (new patients from elsewhere, who chose nothing here). "
        "Pick a preset to see one lesson, or set every knob yourself. Runs are seeded: the same settings give the "
        "same curves, and a finished run replays at once.",
    )
    folder, external = data_dir(), external_dir()
    if folder is None:
        st.warning("This lesson trains on chest X-rays, and there is no chest X-ray folder here: set $CNNLENS_DATA "
                   "to a folder with NORMAL/ and PNEUMONIA/ (and external/ beside it for new patients).")
        st.stop()
    try:
        data = lab_data(str(folder), str(external) if external else None)
    except (FileNotFoundError, ValueError) as err:
        st.warning(f"This lesson cannot train on the chest X-ray folder here: {err}")
        st.stop()
    if data.external is None:
        st.warning("No external/ folder beside the training folder: the new-patient curve is missing.")
    settings, start = controls(len(data.train))
    stop = st.button("Stop", key="tl_stop", help="Ends the run after the current epoch and keeps what it drew.")
    key = f"{data.key}/{settings.key()}"
    partial = st.session_state.pop("tl_partial", None)
    if start:
        replay = finished_runs().get(key)
        records = replay if replay is not None else train(data, settings, key)
        if records:
            note = ("Replayed: these settings ran before (runs are seeded, so training again would draw the same "
                    "curves)." if replay is not None else "Trained live just now.")
            st.session_state["tl_shown"] = (settings, records, note)
    elif partial is not None and partial[1]:
        done = partial[1]
        verb = "Stopped" if stop else "Interrupted by a change of settings"
        st.session_state["tl_shown"] = (partial[0], done, f"{verb} after epoch {done[-1].epoch} of "
                                                          f"{partial[0].epochs}; a stopped run is not kept for replay.")
    shown = st.session_state.get("tl_shown")
    if shown is None:
        st.markdown("Press **Train** to start.")
    else:
        show_run(shown[1], shown[0], shown[2])
    st.caption("The training curve is averaged over the epoch's batches while the weights change, with dropout and "
               "augmentation on (the usual training curve); the other two score the network as it stands at the end "
               "of the epoch. Every loss is plain cross-entropy, also when the optimised loss is class-weighted; "
               "accuracy, sensitivity and specificity call a film PNEUMONIA when P(PNEUMONIA) ≥ 0.5.")
    page_footer()


if __name__ == "__main__":
    main()
