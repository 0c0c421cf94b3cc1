"""CNN Lens classroom: the Streamlit entry point.

    python -m streamlit run apps/streamlit_app.py    (from the repository root: ``-m`` puts it on the path)
    cnnlens-classroom                                (once installed with ``pip install .``)

Thin by design: each lesson is one file under ``apps/classroom/`` (not ``pages/``: Streamlit would also serve
that folder as old-style pages, bypassing this navigation); the maths lives in ``core``.
"""

import streamlit as st

from apps.catalogue import LESSONS

st.set_page_config(page_title="CNN Lens", page_icon=":material/visibility:", layout="wide")
navigation: dict[str, list] = {"CNN Lens": [st.Page("classroom/home.py", title="Home", icon=":material/home:",
                                                    default=True)]}
for lesson in LESSONS:
    navigation.setdefault(lesson.group, []).append(st.Page(lesson.file, title=lesson.title, icon=lesson.icon))
st.navigation(navigation).run()
