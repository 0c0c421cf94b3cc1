"""Activation maximisation: the image a trained network responds to most, grown from noise by gradient ascent."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from apps.common import model_picker, page_footer, page_header
from core.hooks import spatial_layers
from core.lessons.activation_max import Settings, Synthesis, Target, maximise
from core.zoo import LoadedModel, predict, preprocess

DEFAULTS = Settings()

@st.cache_data(show_spinner=False)
def _layers(name: str, _model: LoadedModel) -> list[str]:
    prep = _model.spec.preprocessing
    return spatial_layers(_model.model, preprocess(np.full((prep.size, prep.size), 0.5, np.float32), prep,
                                                   _model.device))


@st.cache_data(show_spinner=False, max_entries=24)
def _synthesise(name: str, kind: str, index: int, layer: str | None, settings: tuple, _model: LoadedModel
                ) -> Synthesis:
    """Run (or reuse) one synthesis, with a progress bar while it runs."""
    s = Settings(*settings)
    bar = st.progress(0.0, text=f"Gradient ascent: step 0 of {s.steps}")
    result = maximise(_model.model, _model.spec.preprocessing, Target(kind, index, layer), s,
                      progress=lambda f: bar.progress(f, text=f"Gradient ascent: step {round(f * s.steps)} "
                                                              f"of {s.steps}"))
    bar.empty()  # created and emptied inside, so Streamlit's replay of this cached call leaves nothing behind
    return result


def stretched(img: np.ndarray) -> np.ndarray:
    """Display only: the image's own range mapped to [0, 1]."""
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else img


def picture(img: np.ndarray, height: int, stretch: bool) -> object:
    """A synthesised image with crisp pixels; grey images keep their values, ``stretch`` only moves the colour range."""
    if img.ndim == 2:
        low, high = (float(img.min()), float(img.max())) if stretch else (0.0, 1.0)
        fig = px.imshow(img, zmin=low, zmax=high, color_continuous_scale="gray")
    else:
        fig = px.imshow(stretched(img) if stretch else img, zmin=0, zmax=1)
    fig.update_coloraxes(showscale=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 0, "b": 0}, dragmode=False)
    return fig


def _controls(loaded: LoadedModel) -> tuple[str, int, str | None, Settings]:
    """The target (a class score, or a layer's channel) and the optimisation settings; returns the target kind,
    its index, its layer (None for a class) and the settings."""
    spec, model_name = loaded.spec, loaded.spec.name
    # The target kind sits outside the form so that choosing it takes effect at once: the class selector is disabled
    # while a channel is maximised (the layer and channel stay editable, so both can be set before switching).
    kind = st.radio("Maximise", ["class", "channel"], key="am_kind", horizontal=True,
                    format_func=lambda k: "a class score" if k == "class" else "a channel")
    with st.form("am_form", border=True):
        c_class, c_layer, c_channel = st.columns([1.5, 1.5, 1])
        index_class = c_class.selectbox("Class", range(len(spec.class_names)), key=f"am_class_{model_name}",
                                        index=len(spec.class_names) - 1, format_func=lambda i: spec.class_names[i],
                                        disabled=kind != "class",
                                        help="The class whose score (logit) is maximised; not used for a channel.")
        layers = _layers(model_name, loaded)
        layer_choice = c_layer.selectbox("Layer", layers, key=f"am_layer_{model_name}",
                                         index=layers.index("layer3") if "layer3" in layers else 0,
                                         help="The layer whose channel's mean activation is maximised; not used for a "
                                              "class score.")
        channel = int(c_channel.number_input("Channel", 0, 4095, 0, key="am_channel",
                                             help="Channel number within the layer (see the feature-maps page); "
                                                  "not used for a class score."))
        st.markdown("**Optimisation and image priors**")
        c1, c2, c3, c4 = st.columns(4)
        steps = c1.slider("Steps", 8, 400, DEFAULTS.steps, 8, key="am_steps")
        lr = c1.select_slider("Learning rate (Adam)", [0.005, 0.01, 0.02, 0.05, 0.1, 0.2], DEFAULTS.lr, key="am_lr")
        l2 = c2.slider("L2 towards grey", 0.0, 20.0, DEFAULTS.l2, 0.5, key="am_l2",
                       help="Weight of the mean squared distance of the pixels from mid-grey.")
        tv = c2.slider("Total variation", 0.0, 20.0, DEFAULTS.tv, 0.5, key="am_tv",
                       help="Weight of the mean absolute difference between neighbouring pixels.")
        jitter = c3.slider("Jitter (pixels)", 0, 16, DEFAULTS.jitter, key="am_jitter",
                           help="Random shift of the image before every step.")
        blur_every = c3.slider("Blur every … steps (0 = never)", 0, 32, DEFAULTS.blur_every, key="am_blur_every")
        blur_sigma = c4.slider("Blur sigma (pixels)", 0.0, 3.0, DEFAULTS.blur_sigma, 0.1, key="am_blur_sigma")
        seed = int(c4.number_input("Seed", 0, 10_000, DEFAULTS.seed, key="am_seed",
                                   help="Chooses the starting noise and the jitter; the same seed gives the same "
                                        "image."))
        st.form_submit_button("Synthesise", type="primary")

    settings = Settings(steps=steps, lr=lr, l2=l2, tv=tv, jitter=jitter, blur_every=blur_every, blur_sigma=blur_sigma,
                        noise=DEFAULTS.noise, frames=DEFAULTS.frames, seed=seed)
    index, layer = (index_class, None) if kind == "class" else (channel, layer_choice)
    return kind, index, layer, settings


def _results(loaded: LoadedModel, result: Synthesis, kind: str, settings: Settings) -> None:
    """Scores, the synthesised image, the ascent's history, the model's prediction for it and the frames."""
    spec = loaded.spec
    target_label = result.target.describe(spec.class_names)
    score_name = "logit" if kind == "class" else "mean activation"
    st.subheader(f"The input that maximises {target_label}")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(f"Start {score_name} (noise)", f"{result.start_score:.3f}")
    m2.metric(f"Final {score_name}", f"{result.final_score:.3f}", f"{result.final_score - result.start_score:+.3f}")
    if kind == "class":
        m3.metric("Gain: exp(Δ logit)", f"{result.gain:.3g}×",
                  help="A logit can be negative, so its ratio means nothing; exp(logit) is the class's unnormalised "
                       "probability, and its ratio is exp(final − start). Tenfold = a rise of ln 10 ≈ 2.3.")
        m4.metric("Softmax probability", f"{result.final_probability:.1%}",
                  f"{100 * (result.final_probability - result.start_probability):+.1f} points from noise")
    else:
        m3.metric("Gain: final / start", "n/a" if math.isnan(result.gain) else f"{result.gain:.3g}×",
                  help="Ratio of mean activations, defined when the noise already activates the channel (start > 0).")

    left, right = st.columns([3, 2], gap="large")
    with left:
        stretch = st.toggle("Stretch contrast for display", value=True, key="am_stretch",
                            help="Maps the image's own darkest and brightest pixels to black and white. Off: pixel "
                                 "values exactly as the network sees them (0 = black, 1 = white).")
        st.plotly_chart(picture(result.image, 480, stretch), key="am_final", config={"displayModeBar": False})
        st.caption(f"After {settings.steps} steps, {spec.preprocessing.size} × {spec.preprocessing.size} pixels "
                   f"(values {result.image.min():.2f} to {result.image.max():.2f}, before normalisation).")
    with right:
        history = pd.DataFrame({"step": np.arange(1, len(result.history) + 1), score_name: result.history})
        fig = px.line(history, x="step", y=score_name)
        fig.update_layout(height=260, margin={"l": 0, "r": 0, "t": 10, "b": 0})
        # the title as text above the chart, which wraps: inside the chart it ran past its width ("…jittered imag")
        st.markdown(f"**{score_name.capitalize()} during the ascent** (on each step's jittered image)")
        st.plotly_chart(fig, key="am_history", config={"displayModeBar": False})
        probs = predict(loaded, preprocess(result.image, spec.preprocessing, loaded.device))[0].cpu().numpy()
        top = np.argsort(-probs)[:5]
        st.markdown("**The model's prediction for the synthesised image**")
        st.dataframe(pd.DataFrame({"class": [spec.class_names[i] for i in top], "probability": probs[top]}),
                     hide_index=True, key="am_probs",
                     column_config={"probability": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0,
                                                                                   format="percent")})

    st.markdown("**Along the way**")
    cols = st.columns(len(result.frames))
    for col, (step, frame) in zip(cols, result.frames, strict=True):
        col.image(stretched(frame) if stretch else frame, caption="noise (step 0)" if step == 0 else f"step {step}",
                  width="stretch", clamp=True)


def main() -> None:
    """The page: header, model, target and settings, the synthesis (cached), results, footer."""
    page_header(
        "Activation maximisation",
        "What input would make the network most sure of *pneumonia*, or light up one channel the most? Start from "
        "random noise and follow the gradient of that score with respect to the **pixels**, keeping the pixels in the "
        "range of a real image. Left alone, this finds high-frequency patterns no X-ray contains, so the usual image "
        "priors pull it towards natural-looking inputs: an **L2** pull towards grey, **total variation** against "
        "pixel noise, random **jitter** so the pattern cannot rely on exact pixel positions, and a **blur** every few "
        "steps. The result shows what the network has learned to look for, not what pneumonia looks like.",
    )
    loaded = model_picker("am_model")
    st.sidebar.caption(f"Runs on **{loaded.device.type.upper()}**.")
    kind, index, layer, settings = _controls(loaded)
    try:
        result = _synthesise(loaded.spec.name, kind, index, layer, tuple(asdict(settings).values()), loaded)
    except ValueError as err:  # e.g. a channel number beyond the layer's channel count
        st.error(str(err))
        st.stop()
    _results(loaded, result, kind, settings)
    page_footer()


if __name__ == "__main__":
    main()
