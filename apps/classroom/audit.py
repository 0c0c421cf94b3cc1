"""Dataset audit: explain every image of a folder, cluster the explanations (SpRAy-style) and browse the clusters,
their maps and the images whose evidence sits at the borders and corners (markers, text)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from apps.common import ALLOWED_ENV, XRAY_APP_URL, model_picker, page_footer, page_header, shared_folders
from core.audit import audit, edge_ranking, load
from core.audit.store import RESULTS
from core.audit.summaries import THORAX_BOX
from core.data import external_dir
from core.explain import METHODS
from core.explain.render import overlay
from core.io import ImageError, load_image
from core.zoo import LoadedModel

AUDITS_ENV = "CNNLENS_AUDITS"  # where this page writes and finds audit folders (server side, never typed in)
AUDITS = Path(os.environ.get(AUDITS_ENV, Path(__file__).resolve().parents[2] / "runs" / "audits"))
FAST_METHODS = ("grad_cam", "grad_cam_pp", "saliency", "layer_cam")  # one pass or one gradient an image
SHOWN = 8  # images per gallery row


def data_roots() -> dict[str, Path]:
    """The folders visitors may audit (``apps.common.shared_folders``, with the new-patient folder), chosen from a
    list, never typed."""
    return shared_folders(external_dir())


def audit_folders() -> list[Path]:
    """Finished audits under the audits folder, newest first."""
    found = [p.parent for p in AUDITS.glob(f"*/{RESULTS}")] if AUDITS.is_dir() else []
    return sorted(found, key=lambda p: (p / RESULTS).stat().st_mtime, reverse=True)


@st.cache_data(show_spinner="Reading the audit…", max_entries=8)
def _load(folder: str, _mtime: float) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    return load(Path(folder))


@st.cache_data(show_spinner=False, max_entries=256)
def _thumbnail(path: str, heatmap: tuple[float, ...] | None, side: int) -> np.ndarray | None:
    try:
        image = load_image(path, keep_side=256).array
    except ImageError:
        return None
    if heatmap is None:
        return image
    return overlay(image, np.asarray(heatmap, np.float32).reshape(side, side), alpha=0.45)


# ------------------------------------------------------------------------------------ sections
def run_section(loaded: LoadedModel) -> Path | None:
    """Choose a shared folder and settings, run a small audit with a progress bar; the folder it wrote."""
    roots = data_roots()
    if not roots:
        st.info(f"No image folder is shared on this server (set $CNNLENS_DATA or ${ALLOWED_ENV}).")
        return None
    a, b, c = st.columns(3)
    label = a.selectbox("Image folder", list(roots), key="audit_folder")
    limit = b.slider("Images (the first, sorted)", 10, 400, 40, step=10, key="audit_limit")
    methods = c.multiselect("Maps", [m for m in FAST_METHODS if m in METHODS], default=["grad_cam"],
                            key="audit_methods")
    if not st.button("Run the audit", type="primary", key="audit_run", disabled=not methods):
        return None
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{loaded.spec.name}-{label}-{'+'.join(methods)}-{limit}")
    bar = st.progress(0.0, text="Starting…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Audited {done} of {total} new images")

    out = audit(loaded.spec.name, roots[label], AUDITS / name, methods, limit=limit, batch_size=16,
                progress=progress)
    bar.progress(1.0, text=f"Done: {out.name} (images audited before were reused)")
    return out


def clusters_section(rows: pd.DataFrame, clusters: pd.DataFrame, settings: dict, image_root: Path | None) -> None:
    """The cluster table, one cluster's mean map and prototypes."""
    method = clusters["method"].iloc[0]
    st.subheader("Clusters of explanations")
    st.caption(f"{len(clusters)} clusters of the **{method}** maps ({clusters['algorithm'].iloc[0]} clustering), "
               f"measured on {int(clusters['size'].sum())} readable images of `{Path(settings['data']).name}` "
               f"with {settings['model']}. A cluster that is one class, with its evidence outside the thorax box "
               "or at the edges, is a shortcut suspect.")
    table = clusters.drop(columns=["mean_map", "prototypes", "algorithm", "method"])
    st.dataframe(table, hide_index=True, key="audit_clusters", column_config={
        "accuracy": st.column_config.NumberColumn(format="percent"),
        **{c: st.column_config.NumberColumn(format="%.2f") for c in table.columns if c.startswith("mean_")}})
    chosen = st.selectbox("Cluster", clusters["cluster"].tolist(), key="audit_cluster")
    row = clusters.set_index("cluster").loc[chosen]
    side = int(settings["map_side"])
    left, right = st.columns([1, 2])
    fig = px.imshow(np.asarray(row["mean_map"]).reshape(side, side), color_continuous_scale="Viridis",
                    title=f"Mean map of cluster {chosen} (shares)")
    fig.update_layout(height=320, margin={"l": 0, "r": 0, "t": 40, "b": 0})
    left.plotly_chart(fig, key="audit_mean_map")
    members = rows.set_index("file")
    right.markdown("**Prototypes** (nearest the mean map)")
    gallery(right, list(row["prototypes"]), members, method, side, image_root)


def gallery(where: st.delta_generator.DeltaGenerator, files: list[str], rows: pd.DataFrame, method: str, side: int,
            image_root: Path | None) -> None:
    """Images with their stored map overlaid, captioned with label and prediction (nothing without a root)."""
    if image_root is None:
        return
    cols = where.columns(min(len(files), SHOWN) or 1)
    for col, file in zip(cols, files[:SHOWN], strict=False):
        r = rows.loc[file]
        picture = _thumbnail(str(image_root / file), tuple(map(float, r[f"map_{method}"])), side)
        if picture is None:
            col.caption(f"{file}: not readable")
            continue
        col.image(picture, caption=f"{file} · true {r['label']} · predicted {r['prediction']}", width="stretch")


def outliers_section(rows: pd.DataFrame, settings: dict, image_root: Path | None) -> None:
    """Images whose evidence sits most at the borders and corners, and the unreadable files."""
    method = settings["methods"][0]
    left, right, top, bottom = THORAX_BOX
    st.subheader("Evidence at the edges")
    st.caption(f"Share of the positive **{method}** relevance in the border band (10 % of the side) and the corner "
               f"squares (20 %). The thorax box is a fixed rectangle ({left:.0%}-{right:.0%} across, "
               f"{top:.0%}-{bottom:.0%} down), not a lung segmentation: rotated, off-centre or tightly cropped films "
               "and lateral views put lung outside it, so treat these shares as a screening list.")
    ranked = edge_ranking(rows, method, top=20)
    st.dataframe(ranked, hide_index=True, key="audit_edges", column_config={
        c: st.column_config.NumberColumn(format="%.2f") for c in ranked.columns if c.startswith(method)})
    gallery(st, ranked["file"].tolist(), rows.set_index("file"), method, int(settings["map_side"]), image_root)
    st.markdown(f"To look closer, [open the X-ray app]({XRAY_APP_URL}) and upload the image there: it explains "
                "one film with every method and its trust checks.")
    broken = rows[rows["error"].notna()]
    if len(broken):
        with st.expander(f"{len(broken)} unreadable files"):
            st.dataframe(broken[["file", "error"]], hide_index=True, key="audit_errors")


def main() -> None:
    """The page: run or open an audit, then browse its clusters and edge-heavy images."""
    page_header(
        "Dataset audit",
        "Before trusting a model, look at **how** it decides across a whole data set. The audit explains every "
        "image, makes each map into shares of its positive relevance, and clusters the maps (spectral relevance "
        "analysis, SpRAy: Lapuschkin et al. 2019). A cluster of one class whose evidence sits on a burnt-in "
        "marker, text or the film's edge is a **shortcut**: the model learned something other than the lungs. "
        "The same audit runs on tens of thousands of films with `python -m core.audit` (optionally on Ray).",
    )
    loaded = model_picker("audit_model")
    run_tab, open_tab = st.tabs(["Run a small audit", "Open an audit"])
    with run_tab:
        ran = run_section(loaded)
    with open_tab:
        folders = audit_folders()
        picked = st.selectbox("Audit", folders, format_func=lambda p: p.name, key="audit_open") if folders else None
    folder = ran or picked
    if folder is None:
        st.info("Run an audit, or open one, to browse its clusters.")
        page_footer()
        return
    rows, clusters, settings = _load(str(folder), (folder / RESULTS).stat().st_mtime)
    image_root = Path(settings["data"])
    if not any(image_root.is_relative_to(root) for root in data_roots().values()):
        st.warning("This audit's images are in a folder this server does not share: tables only.")
        image_root = None
    clusters_section(rows, clusters, settings, image_root)
    outliers_section(rows, settings, image_root)
    page_footer()


main()
