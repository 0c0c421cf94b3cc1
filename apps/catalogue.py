"""The classroom's table of contents: one entry per page file under ``apps/pages/``.

The Streamlit entry builds its navigation from this list and the home page links to every entry,
so adding a lesson is one line here plus its page file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lesson:
    """A page of the classroom."""

    group: str
    file: str  # relative to apps/
    title: str
    icon: str
    blurb: str


LESSONS: list[Lesson] = [
    Lesson("Inside a trained network", "pages/embeddings.py", "Embedding explorer", ":material/scatter_plot:",
           "t-SNE / UMAP maps of what the network learned, similar cases, mistakes, trained vs untrained"),
]
