"""Home: what CNN Lens teaches and where to find each lesson."""

import streamlit as st

from apps.catalogue import LESSONS
from apps.common import XRAY_APP_URL, page_footer, page_header


def _lessons() -> None:
    """Every lesson by group, one link each with its blurb."""
    group = None
    for lesson in LESSONS:
        if lesson.group != group:
            group = lesson.group
            st.subheader(group)
        st.page_link(lesson.file, label=f"**{lesson.title}** — {lesson.blurb}", icon=lesson.icon)


def _xray_app() -> None:
    """Where the X-ray app is."""
    st.subheader("Explain my X-ray")
    st.markdown(
        "Upload a chest X-ray (PNG, JPEG, TIFF or DICOM) and see the bundled model's prediction and why: Grad-CAM, "
        f"saliency, occlusion and LIME side by side, with quality checks. [Open the X-ray app]({XRAY_APP_URL})."
    )


def main() -> None:
    """The home page: header, the disclaimer in full view, the lessons, the X-ray app, footer."""
    page_header(
        "CNN Lens",
        "An open suite for seeing inside convolutional networks, built around chest X-rays. "
        "Every number a lesson shows is checked against an independent computation in the test suite.",
        banner=True,
    )
    _lessons()
    _xray_app()
    page_footer()


if __name__ == "__main__":
    main()
