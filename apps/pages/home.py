"""Home: what CNN Lens teaches and where to find each lesson."""

import streamlit as st

from apps.common import XRAY_APP_URL, page_footer, page_header

page_header(
    "CNN Lens",
    "An open suite for seeing inside convolutional networks, built around chest X-rays. "
    "Every number a lesson shows is checked against PyTorch in the test suite.",
)

st.subheader("Lessons")
for group, pages in st.session_state.get("_cnnlens_pages", {}).items():
    st.markdown(f"**{group}**")
    for page, blurb in pages:
        st.page_link(page, label=f"{page.title} — {blurb}")

st.subheader("Explain my X-ray")
st.markdown(
    f"Upload a chest X-ray (PNG, JPEG, TIFF or DICOM) and see the bundled model's prediction and why: "
    f"Grad-CAM, saliency, occlusion and LIME side by side, with quality checks. [Open the X-ray app]({XRAY_APP_URL})."
)
page_footer()
