"""Pieces every Streamlit page shares: the disclaimer, attribution, X-ray app link and the model picker."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.data import ATTRIBUTION_MARKDOWN, data_dir
from core.zoo import BUNDLED, DISCLAIMER, LoadedModel, ModelUnavailable, load_model, model_names, unavailable_reason

XRAY_APP_URL = os.environ.get("CNNLENS_XRAY_URL", "http://127.0.0.1:7860")
ALLOWED_ENV = "CNNLENS_ALLOWED_DATA"  # further folders visitors may open, os.pathsep-separated (operator's choice)


def shared_folders(*also: Path | None) -> dict[str, Path]:
    """The server folders visitors may open, by the name they see: the data folder, a page's own ``also`` (None
    entries skipped) and those the operator lists in ``$CNNLENS_ALLOWED_DATA``; symlinks resolved, missing ones
    left out, names made unique. Pages offer these and nothing else on the server."""
    listed = [Path(p).expanduser() for p in os.environ.get(ALLOWED_ENV, "").split(os.pathsep) if p.strip()]
    roots: dict[str, Path] = {}
    for candidate in (data_dir(), *also, *listed):
        if candidate is None:
            continue
        try:
            folder = candidate.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, unreadable or a symlink loop
            continue
        if folder.is_dir() and folder not in roots.values():
            label, n = folder.name or "data", 2
            while label in roots:
                label, n = f"{folder.name or 'data'} ({n})", n + 1
            roots[label] = folder
    return roots


def page_header(title: str, intro: str, banner: bool = False) -> None:
    """Title, the education-only disclaimer and a one-paragraph intro at the top of a page; ``banner`` shows the
    disclaimer as a bold warning box (the home page) rather than a caption."""
    st.title(title)
    if banner:
        st.warning(f"**{DISCLAIMER}**")
    else:
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


def usable_models(demos: bool = False) -> tuple[list[str], dict[str, str]]:
    """Zoo models that can be used here (nothing is loaded or downloaded to find out), and the others with the
    one-line reason each cannot; ``demos`` adds the digits CNN."""
    reasons = {name: unavailable_reason(name) for name in model_names(demos=demos)}
    return [n for n, why in reasons.items() if why is None], {n: why for n, why in reasons.items() if why is not None}


def unavailable_note(unavailable: dict[str, str]) -> None:
    """The models that cannot be used here, once, in a closed expander in the sidebar: one line each. The bundled
    model is what every page is about, so its absence is also said on the page itself."""
    if BUNDLED in unavailable:
        st.warning(f"The bundled model {BUNDLED} cannot be used here: {unavailable[BUNDLED]}.")
    if unavailable:
        with st.sidebar.expander(f"{len(unavailable)} unavailable here"):
            for n, why in unavailable.items():
                st.caption(f"**{n}** is unavailable: {why}.")


def model_picker(key: str) -> LoadedModel:
    """Sidebar choice among the zoo models that can be used here; the others are listed once, closed, with their
    reason (nothing is ever downloaded). Only the chosen model is loaded; if that fails the page stops with why."""
    side = st.sidebar
    side.header("Model")
    names, unavailable = usable_models()
    if not names:
        unavailable_note(unavailable)
        st.error("No model can be used here: " + " ".join(f"{n}: {why}." for n, why in unavailable.items()))
        st.stop()
    name = side.selectbox("Model", names, key=key)
    unavailable_note(unavailable)
    loaded, reason = cached_model(name)
    if loaded is None:
        st.error(f"{name} cannot be used here. {reason}")
        st.stop()
    return loaded
