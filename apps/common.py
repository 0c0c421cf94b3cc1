"""Pieces every Streamlit page shares: the disclaimer, attribution and X-ray app link."""

from __future__ import annotations

import os

import streamlit as st

from core.data import ATTRIBUTION_MARKDOWN
from core.zoo import DISCLAIMER, LoadedModel, ModelUnavailable, load_model, model_names, unavailable_reason

XRAY_APP_URL = os.environ.get("CNNLENS_XRAY_URL", "http://127.0.0.1:7860")


def page_header(title: str, intro: str) -> None:
    """Title, one-paragraph intro and the education-only disclaimer at the top of a page."""
    st.title(title)
    st.caption(f":warning: {DISCLAIMER}")
    st.markdown(intro)


def page_footer() -> None:
    """Data attribution at the bottom of a page."""
    st.divider()
    st.caption(f"{DISCLAIMER} {ATTRIBUTION_MARKDOWN}")


@st.cache_resource(show_spinner="Loading the model…", ttl=600)
def cached_model(name: str) -> tuple[LoadedModel | None, str]:
    """A zoo model, or None and the reason it cannot be loaded here (re-checked every 10 minutes, so weights
    fetched meanwhile are picked up without a restart)."""
    try:
        return load_model(name), ""
    except ModelUnavailable as err:
        return None, str(err)


def model_picker(key: str) -> LoadedModel:
    """Sidebar choice of a zoo model. Models that cannot be used here are marked, with the reason (found without
    loading anything); only the chosen model is loaded, and if that fails the page stops with the reason."""
    side = st.sidebar
    side.header("Model")
    reasons = {name: unavailable_reason(name) for name in model_names()}
    name = side.selectbox("Model", list(reasons), key=key,
                          format_func=lambda n: n if reasons[n] is None else f"{n} (unavailable)")
    unavailable = {n: why for n, why in reasons.items() if why is not None}
    if unavailable:
        with side.expander(f"{len(unavailable)} unavailable here"):
            for n, why in unavailable.items():
                st.caption(f"**{n}** is unavailable: {why}.")
    loaded, reason = cached_model(name)  # with internet access, torchvision weights download here
    if loaded is None:
        st.error(f"{name} cannot be used here. {reason}")
        st.stop()
    return loaded
