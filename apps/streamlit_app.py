"""CNN Lens classroom: the Streamlit entry point.

    python -m streamlit run apps/streamlit_app.py    (from the repository root: ``-m`` puts it on the path)
    cnnlens-classroom                                (once installed with ``pip install .``)

Thin by design: each lesson is one file under ``apps/classroom/`` (not ``pages/``: Streamlit would also serve
that folder as old-style pages, bypassing this navigation); the maths lives in ``core``.
"""

import numpy as np
import streamlit as st
from PIL import Image

from apps.catalogue import LESSONS


def favicon() -> Image.Image:
    """A 32 px blue disc drawn here: a ``:material/...`` or emoji page icon makes the browser fetch it from a
    font or emoji CDN, and nothing may phone home."""
    yy, xx = np.mgrid[:32, :32]
    disc = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 <= 15 ** 2
    icon = np.zeros((32, 32, 4), np.uint8)
    icon[disc] = (31, 111, 235, 255)  # the theme's primary colour
    return Image.fromarray(icon)


def main() -> None:
    """Page config, then every lesson in the catalogue's groups behind Streamlit's navigation."""
    st.set_page_config(page_title="CNN Lens", page_icon=favicon(), layout="wide")
    navigation: dict[str, list] = {"CNN Lens": [st.Page("classroom/home.py", title="Home", icon=":material/home:",
                                                        default=True)]}
    for lesson in LESSONS:
        navigation.setdefault(lesson.group, []).append(st.Page(lesson.file, title=lesson.title, icon=lesson.icon))
    st.navigation(navigation).run()


if __name__ == "__main__":
    main()
