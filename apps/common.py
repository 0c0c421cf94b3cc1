"""Pieces every Streamlit page shares: the disclaimer, attribution and X-ray app link."""

from __future__ import annotations

import os

import streamlit as st

from core.zoo import DISCLAIMER

XRAY_APP_URL = os.environ.get("CNNLENS_XRAY_URL", "http://127.0.0.1:7860")
ATTRIBUTION = (
    "Chest X-rays: Kermany, Zhang, Goldbaum (2018), *Labeled Optical Coherence Tomography (OCT) and Chest X-Ray "
    "Images for Classification*, Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0."
)


def page_header(title: str, intro: str) -> None:
    """Title, one-paragraph intro and the education-only disclaimer at the top of a page."""
    st.title(title)
    st.caption(f":warning: {DISCLAIMER}")
    st.markdown(intro)


def page_footer() -> None:
    """Data attribution at the bottom of a page."""
    st.divider()
    st.caption(f"{DISCLAIMER} {ATTRIBUTION}")
