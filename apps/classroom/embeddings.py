"""Embedding explorer: t-SNE / UMAP / PCA maps of what a network's layer makes of a dataset, with numbers
(silhouette, k-NN accuracy, precision@k), similar-image search, misclassified cases and model comparison."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from apps.common import ALLOWED_ENV, page_footer, page_header, shared_folders, unavailable_note, usable_models
from core import embed as E
from core.data import ATTRIBUTION
from core.embed.digits import DIGITS_MODEL
from core.embed.held_out import held_out_files, held_out_mask
from core.embed.models import UNTRAINED_SUFFIX
from core.embed.plot import COLOUR_BY, classes_match, csv_bytes, points_table, scatter_figure, scatter_png
from core.explain import METHODS, explain
from core.explain.render import overlay
from core.io import ImageError, load_image
from core.zoo import LoadedModel, ModelSpec, ModelUnavailable, preprocess

SOURCES = ("Image folder", "Zip upload", "MedMNIST", "Digits (built in)")
DEFAULT_IMAGES = 1000  # for larger sets; smaller ones (e.g. the 1,797 digits) are shown whole
MIN_IMAGES = 10
MIN_PER_CLASS = 5  # the held-out split and k-NN accuracy use 5 patient-grouped folds: 5 images per class at least
THUMB = 224  # thumbnail pixels; shown at column width


def data_roots() -> dict[str, Path]:
    """The folders visitors may open here (``apps.common.shared_folders``), with ``$CNNLENS_DATA`` itself when it
    is set (the data folder proper may be its ``train/``)."""
    configured = os.environ.get("CNNLENS_DATA")
    return shared_folders(Path(configured).expanduser() if configured else None)


def resolve_folder(roots: dict[str, Path], label: str, typed: str) -> tuple[Path, str]:
    """(folder, the name visitors see) for a subfolder typed under the root ``label``; ``..``, symlinks and
    absolute paths are resolved first, and anything outside every root is refused (SourceError) without saying
    whether it exists."""
    text = typed.strip()
    try:
        folder = (roots[label] / text).resolve() if text else roots[label]
    except (OSError, RuntimeError) as err:
        raise E.SourceError("That folder cannot be opened.") from err
    for name, root in roots.items():
        if folder.is_relative_to(root):
            relative = folder.relative_to(root).as_posix()
            return folder, name if relative == "." else f"{name}/{relative}"
    raise E.SourceError(f"That folder is outside the folders this server shares ({', '.join(roots)}). Type a "
                        f"subfolder of one of them; an operator can share more with ${ALLOWED_ENV}.")


def public(text: str, roots: dict[str, Path]) -> str:
    """A message with every shared folder's server path replaced by the name visitors see."""
    for label, root in sorted(roots.items(), key=lambda item: -len(str(item[1]))):
        text = text.replace(str(root), label)
    return text


def score(value: float, fmt: str) -> str:
    """A metric's value, or a dash when it could not be computed (NaN)."""
    return "—" if math.isnan(value) else format(value, fmt)


# ------------------------------------------------------------------------------------ cached building blocks
@st.cache_resource(show_spinner="Indexing the image folder…", max_entries=4)
def _folder(path: str) -> E.ImageSet:
    return E.folder_source(path or None)


@st.cache_resource(show_spinner="Checking the zip…", max_entries=2)
def _zip(content_hash: str, name: str, _data: bytes) -> E.ImageSet:
    return E.zip_source(_data, name)


@st.cache_resource(show_spinner="Loading MedMNIST (downloads once)…", max_entries=4)
def _medmnist(flag: str, split: str, size: int) -> E.ImageSet:
    return E.medmnist_source(flag, split, size)


@st.cache_resource(show_spinner=False)
def _digits() -> E.ImageSet:
    return E.digits_source()


@st.cache_resource(show_spinner=False, max_entries=16)
def _subsample(fingerprint: str, n: int, seed: int, _images: E.ImageSet) -> E.ImageSet:
    return E.subsample(_images, n, seed)


@st.cache_resource(show_spinner="Loading the model (the digits CNN trains once, in seconds)…", max_entries=6)
def _model(name: str) -> LoadedModel:
    return E.load(name)


@st.cache_resource(show_spinner="Finding the patients the model never trained on…", max_entries=8)
def _held_out(fingerprint: str, model_name: str, _images: E.ImageSet, _spec: ModelSpec) -> frozenset | None:
    return held_out_files(_images, _spec)


@st.cache_resource(show_spinner=False, max_entries=12)
def _embeddings(fingerprint: str, model_name: str, layer: str, _images: E.ImageSet, _model: LoadedModel
                ) -> E.Embeddings:
    """Embeddings (from the disk cache when present) with a progress bar while they are computed."""
    bar = st.progress(0.0, text=f"Embedding {len(_images):,} images with {model_name} at {layer}…")
    emb = E.embed(_model, _images, layer,
                  progress=lambda f: bar.progress(f, text=f"Embedding with {model_name} at {layer}: {f:.0%}"))
    bar.empty()  # created and emptied inside, so Streamlit's replay of this cached call leaves nothing behind
    return emb


@st.cache_data(show_spinner=False, max_entries=32)
def _projection(embedding_key: str, params: E.ProjectionParams, _vectors: np.ndarray) -> np.ndarray:
    return E.project(_vectors, params)


@st.cache_data(show_spinner=False, max_entries=32)
def _separation(embedding_key: str, k: int, metric: str, _vectors: np.ndarray, _labels: np.ndarray,
                _groups: tuple[str, ...]) -> E.Separation:
    return E.separation(_vectors, _labels, np.asarray(_groups), k=k, metric=metric)


@st.cache_resource(show_spinner=False, max_entries=8)
def _index(embedding_key: str, metric: str, _vectors: np.ndarray) -> E.neighbours.NearestNeighbors:
    return E.neighbour_index(_vectors, metric)


# Image captions on this page: 12 px, so that a file name (up to 30 characters, 173 px) fits its thumbnail's width on
# its own line in the grids below at 1440 px instead of wrapping inside the name ("IM-0631-0001-" / "0002.jpeg").
CAPTION_CSS = "<style>[data-testid='stImageCaption'] p { font-size: 12px; line-height: 1.35; }</style>"


def thumbs(images: E.ImageSet, table: pd.DataFrame, rows: list[int], per_row: int = 2,
           extras: list[str] | None = None) -> None:
    """A grid of thumbnails of table rows, captioned with the file name on its own line (unreadable files show
    their error instead). ``per_row`` keeps a thumbnail as wide as a file name."""
    extras = extras or [""] * len(rows)
    for start in range(0, len(rows), per_row):
        cols = st.columns(per_row)
        for col, row, extra in zip(cols, rows[start:start + per_row], extras[start:start + per_row], strict=False):
            try:
                picture = E.thumbnail(images.image(int(table["position"].iloc[row])), THUMB)
                col.image(picture, caption=caption(table, row, extra, lines=True), width="stretch")
            except ImageError as err:
                col.caption(f"{caption(table, row, extra)}: {err}")


def caption(table: pd.DataFrame, row: int, extra: str = "", lines: bool = False) -> str:
    """Short caption of one point: file, true class, prediction with confidence. ``lines``: the file name alone on
    the first line (a Markdown line break), so it is never split between the facts."""
    r = table.iloc[row]
    mark = "" if pd.isna(r["correct"]) else (" ✓" if r["correct"] else " ✗")
    name = r["item"].rsplit("/", 1)[-1]
    facts = f"true {r['label']} · pred {r['predicted']} {r['confidence']:.2f}{mark}{extra}"
    return f"{name}  \n{facts}" if lines else f"{name} · {facts}"


@dataclass(frozen=True)
class View:
    """What the sections below the controls share: the images, model, embedding, map and its scores."""

    images: E.ImageSet
    subset: E.ImageSet
    source_name: str
    loaded: LoadedModel
    layer: str
    compare_name: str
    emb: E.Embeddings
    params: E.ProjectionParams
    colour_by: str
    has_correct: bool
    table: pd.DataFrame
    sep: E.Separation
    k: int

    @property
    def credit(self) -> str:
        """Where the images come from, for exported pictures: MedMNIST's licence note, the chest X-ray dataset's
        attribution for a shared folder of its two classes, or the source's public name."""
        medmnist = [note for note in self.images.notes if note.startswith("MedMNIST")]
        if medmnist:
            return medmnist[0]
        if self.images.folder is not None and set(self.images.class_names) == {"NORMAL", "PNEUMONIA"}:
            return ATTRIBUTION
        return f"Images: {self.source_name}."

    @property
    def model_name(self) -> str:
        """The model's zoo name."""
        return self.loaded.spec.name

    @property
    def labels(self) -> np.ndarray:
        """True labels of the embedded images."""
        return self.subset.labels[self.emb.kept]

    @property
    def groups(self) -> tuple[str, ...]:
        """Patient (or group) of each embedded image."""
        return tuple(self.subset.groups[i] for i in self.emb.kept)


def _data(roots: dict[str, Path]) -> tuple[E.ImageSet, E.ImageSet, str]:
    """The image source chosen in the sidebar and the subset to embed; returns all images, the subset and the
    source's public name. Stops the page with a reason when there is nothing to embed."""
    side = st.sidebar
    side.header("Data")
    roots = data_roots()
    default_source = 0 if roots else 3
    kind = side.radio("Source", SOURCES, index=default_source, key="emb_source",
                      help="Image folder: one subfolder per class (default: the chest X-ray training set).")
    source_name = ""
    try:
        if kind == "Image folder":
            if not roots:
                st.info("This server shares no image folder (set $CNNLENS_DATA, or list folders in "
                        f"${ALLOWED_ENV}). Upload a zip, or use MedMNIST or the built-in digits.")
                st.stop()
            root_label = side.selectbox("Data folder", list(roots), key="emb_root",
                                        help="The folders this server shares; others cannot be opened here.")
            typed = side.text_input("Subfolder", value="", key="emb_folder", placeholder="(the data folder itself)",
                                    help="A folder inside the data folder with one subfolder per class, e.g. "
                                         "NORMAL/ and PNEUMONIA/. Leave empty for the data folder itself.")
            folder, source_name = resolve_folder(roots, root_label, typed)
            try:
                images = _folder(str(folder))
            except E.SourceError as err:
                raise E.SourceError(public(str(err), roots)) from err
        elif kind == "Zip upload":
            upload = side.file_uploader("Zip of class folders", type=["zip"], key="emb_zip",
                                        help="e.g. NORMAL/*.png and PNEUMONIA/*.png, zipped. Nothing is written to "
                                             "disk.")
            if upload is None:
                st.info("Upload a zip of a class-folder tree (one subfolder per class) in the sidebar.")
                st.stop()
            data = upload.getvalue()
            images = _zip(hashlib.sha256(data).hexdigest(), upload.name, data)
        elif kind == "MedMNIST":
            flags = E.medmnist_flags()
            flag = side.selectbox("Dataset", list(flags), index=list(flags).index("pneumoniamnist"), key="emb_flag",
                                  help="MedMNIST v2 (CC BY 4.0); needs the internet once per dataset.")
            split = side.selectbox("Split", ["test", "val", "train"], key="emb_split")
            size = side.selectbox("Image size", [28, 64, 128, 224], key="emb_size")
            images = _medmnist(flag, split, size)
        else:
            images = _digits()
    except E.SourceError as err:
        st.error(public(str(err), roots))
        st.stop()
    source_name = source_name or images.name  # a folder's server path is never shown, only its shared name
    for note in images.notes:
        side.caption(note)

    n_max = len(images)
    if n_max > MIN_IMAGES:
        n = side.slider("Images to embed", MIN_IMAGES, n_max, n_max if n_max <= 2 * DEFAULT_IMAGES else DEFAULT_IMAGES,
                        key=f"emb_n_{n_max}",
                        help="A class-stratified random subset; the first embedding of a new subset takes a while, "
                             "every rerun after that is read from the cache.")
        seed = int(side.number_input("Subset seed", 0, 10_000, 0, key="emb_seed"))
    else:
        n, seed = n_max, 0
        side.caption(f"All {n_max} images are used.")
    subset = _subsample(images.fingerprint, n, seed, images)
    return images, subset, source_name


def _pick_model(images: E.ImageSet) -> tuple[LoadedModel, str, str]:
    """The model, its layer and the model to compare with, chosen in the sidebar."""
    side = st.sidebar
    side.header("Model")
    names, unavailable = usable_models(demos=True)  # models that cannot load are never offered
    preferred = DIGITS_MODEL if images.name == "scikit-learn digits" else names[0]
    model_name = side.selectbox("Model", names, index=names.index(preferred), key=f"emb_model_{preferred}")
    try:
        loaded = _model(model_name)
    except ModelUnavailable as err:
        st.error(str(err))
        st.stop()
    layers = E.layer_names(loaded.model)
    layer = side.selectbox("Layer", layers, index=layers.index(loaded.spec.embedding_layer),
                           key=f"emb_layer_{model_name}",
                           help="Spatial layers are average-pooled to one vector per image (global average pooling).")
    compare_options = ["(none)", model_name + UNTRAINED_SUFFIX, *[m for m in names if m != model_name]]
    compare_name = side.selectbox("Compare with", compare_options, key=f"emb_compare_{model_name}",
                                  help="A second model on the same images: is the trained network's space better "
                                       "organised than an untrained copy's?")
    unavailable_note(unavailable)
    return loaded, layer, compare_name


def _embedding(subset: E.ImageSet, loaded: LoadedModel, layer: str, roots: dict[str, Path]) -> E.Embeddings:
    """The subset's embedding (cached), with warnings when too few images or classes remain."""
    model_name = loaded.spec.name
    try:
        emb = _embeddings(subset.fingerprint, model_name, layer, subset, loaded)
    except ValueError as err:  # e.g. none of the images could be read
        st.error(public(str(err), roots))
        st.stop()
    if len(emb) < 3:
        st.warning(f"Only {len(emb)} readable image(s): a map needs at least 3.")
        st.stop()
    per_class = np.bincount(subset.labels[emb.kept], minlength=len(subset.class_names))
    few = [f"{name} {int(count)}" for name, count in zip(subset.class_names, per_class, strict=True)
           if count < MIN_PER_CLASS]
    if few:
        st.warning(f"Few images per class ({', '.join(few)}). The held-out split and the {MIN_PER_CLASS}-fold k-NN "
                   f"accuracy need at least {MIN_PER_CLASS} images in every class: k-NN accuracy uses fewer folds or "
                   "is left out (—), and training / held-out cannot be told apart. Add images for steadier numbers.")
    return emb


def _map(images: E.ImageSet, subset: E.ImageSet, source_name: str, loaded: LoadedModel, layer: str,
         compare_name: str, emb: E.Embeddings) -> View:
    """The map's controls, the 2-D projection and the scores, gathered for the sections below."""
    model_name = loaded.spec.name
    labels = subset.labels[emb.kept]
    groups = tuple(subset.groups[i] for i in emb.kept)
    c1, c2, c3, c4 = st.columns([1.4, 1, 1.2, 1], vertical_alignment="bottom")
    method = c1.segmented_control("Map", E.METHODS, default="t-SNE", key="emb_method") or "t-SNE"
    metric = c2.selectbox("Distance", E.METRICS, index=1, key="emb_metric",
                          help="Cosine compares the directions of the vectors; Euclidean also their lengths. Used by "
                               "the map, the scores and the neighbour search.")
    has_correct = classes_match(subset.class_names, loaded.spec.class_names)
    try:
        held_files = _held_out(images.fingerprint, model_name, images, loaded.spec)  # once a folder
    except ValueError:  # too few images or patients per class for the 5-fold split: not the folder it trained on
        held_files = None
    held_out = held_out_mask(subset, held_files)
    hidden = {*([] if has_correct else ["correct / incorrect"]),
              *([] if held_out is not None else ["training / held-out"])}
    colour_by = c3.selectbox("Colour by", [c for c in COLOUR_BY if c not in hidden], key="emb_colour")
    with c4.popover("Map settings", width="stretch"):
        perplexity = st.slider("t-SNE perplexity", 5, 100, 30, key="emb_perp",
                               help="Roughly the number of neighbours each point keeps close.")
        n_neighbors = st.slider("UMAP neighbours", 2, 100, 15, key="emb_nn",
                                help="Small: local detail; large: global structure.")
        min_dist = st.slider("UMAP min distance", 0.0, 0.99, 0.1, 0.01, key="emb_md",
                             help="How tightly UMAP packs similar points.")
        map_seed = int(st.number_input("UMAP seed", 0, 999, 0, key="emb_mseed",
                                       help="t-SNE starts from PCA here, so it needs no seed."))
    params = E.ProjectionParams(method, metric, map_seed, perplexity, n_neighbors, min_dist)

    with st.spinner(f"Computing the {method} map of {len(emb):,} points…"):
        xy = _projection(emb.key, params, emb.vectors)
    table = points_table(subset, emb, xy, loaded.spec.class_names, held_out)
    k = 10
    sep = _separation(emb.key, k, metric, emb.vectors, labels, groups)
    return View(images, subset, source_name, loaded, layer, compare_name, emb, params, colour_by, has_correct, table,
                sep, k)


def _numbers(v: View) -> None:
    """Images, accuracy, silhouette, k-NN accuracy and precision@k of this embedding."""
    emb, table, sep, k, model_name, metric = v.emb, v.table, v.sep, v.k, v.model_name, v.params.metric
    has_correct, source_name = v.has_correct, v.source_name
    m = st.columns(5)
    m[0].metric("Images", f"{len(emb):,}", help=f"{source_name}; {len(emb.skipped)} unreadable skipped")
    held_rows = table["split"].eq("held out").fillna(False).to_numpy(bool)
    if has_correct and held_rows.any():
        m[1].metric("Model accuracy, held out", f"{table['correct'][held_rows].mean():.1%}",
                    help=f"On the {held_rows.sum():,} images shown from patients {model_name} never trained on (its "
                         f"validation patients, recomputed from the seed its checkpoint records). On all "
                         f"{len(table):,} images, training ones included: {table['correct'].mean():.1%}. Colour by "
                         "**training / held-out** to see them.")
    elif has_correct:
        m[1].metric("Model accuracy", f"{table['correct'].mean():.1%}",
                    help=f"{int((~table['correct']).sum())} misclassified, ringed in the map. Measured on these "
                         "images: where the model was trained on them (the digits CNN on the train/ half), this is "
                         "not a test result.")
    else:
        m[1].metric("Model accuracy", "—", help="The model's classes are not this dataset's classes.")
    m[2].metric("Silhouette", score(sep.silhouette, ".3f"),
                help=f"{metric} distance, full {emb.vectors.shape[1]}-D space (needs two classes)")
    m[3].metric(f"{k}-NN on the embedding", score(sep.knn_accuracy, ".1%"),
                help=f"Accuracy of a {k}-nearest-neighbour classifier fitted on these embedding vectors and true "
                     f"labels, {sep.folds}-fold cross-validated with patients kept together, ± {sep.knn_std:.1%}: "
                     "how well the classes separate in this layer, not the model's own predictions."
                if sep.folds else
                "Needs at least 2 images (and 2 patients) in every class and two classes to cross-validate.")
    m[4].metric(f"Precision@{k}", f"{sep.precision_at_k:.1%}", help="Share of each image's 10 nearest neighbours "
                "with the same label, averaged over the dataset")
    if emb.skipped:
        with st.expander(f"{len(emb.skipped)} unreadable image(s) skipped"):
            st.write("\n".join(f"- {s}" for s in emb.skipped[:50]))


def _map_and_selection(v: View) -> tuple[list[int], list[int]]:
    """The map, and the selected points' (or the most confident mistakes') thumbnails; returns the selected rows
    and the misclassified rows."""
    table, has_correct, method, subset = v.table, v.has_correct, v.params.method, v.subset
    left, right = st.columns([3, 2])
    with left:
        event = st.plotly_chart(scatter_figure(table, v.colour_by, height=560), key="emb_map",
                                on_select="rerun", selection_mode=("points", "box", "lasso"))
        st.caption(f"{method} of {v.model_name} · {v.layer} · {len(v.emb):,} images. "
                   "Drag to lasso points (box and zoom in the toolbar); double-click to clear.")
    points = event.selection.points if event and event.selection else []
    selected = sorted({int(p["customdata"][0]) for p in points if p.get("customdata")} & set(range(len(table))))
    wrong_rows = table.index[table["correct"].eq(False).fillna(False)].tolist()
    with right:
        if selected:
            wrong = table["correct"].iloc[selected].eq(False).sum()
            st.markdown(f"**{len(selected)} selected** · {wrong} misclassified" if has_correct
                        else f"**{len(selected)} selected**")
            shown = selected[:18]
            thumbs(subset, table, shown)
            if len(selected) > len(shown):
                st.caption(f"Showing {len(shown)} of {len(selected)}.")
        else:
            by_conf = table.iloc[wrong_rows].sort_values("confidence", ascending=False).index.tolist()[:9]
            if by_conf:
                st.markdown("**Most confident mistakes** — select points in the map to see them here")
                thumbs(subset, table, by_conf)
            else:
                st.info("Select points in the map (click, or lasso) to see their images, labels and predictions.")
    return selected, wrong_rows


def _inspect(v: View, index: E.neighbours.NearestNeighbors, selected: list[int], wrong_rows: list[int]) -> None:
    """One image with its Grad-CAM and its nearest neighbours in the embedding."""
    table, subset, loaded, emb, labels, metric = v.table, v.subset, v.loaded, v.emb, v.labels, v.params.metric
    order = selected or wrong_rows or list(range(len(table)))
    choices = order + [r for r in range(len(table)) if r not in set(order)]
    row = st.selectbox("Image", choices, format_func=lambda r: caption(table, r), key=f"emb_focus_{order[0]}",
                       help="Defaults to the first selected point, else the first mistake.")
    pos = int(table["position"].iloc[row])
    array = subset.image(pos)
    cols = st.columns([1, 1, 3], gap="medium")
    cols[0].image(E.thumbnail(array, THUMB), caption=caption(table, row, lines=True), width="stretch")
    if "grad_cam" in METHODS:
        exp = explain(loaded, preprocess(array, loaded.spec.preprocessing), "grad_cam")[0]
        cols[1].image(E.thumbnail(overlay(array, exp.heatmap) / 255.0, THUMB), width="stretch",
                      caption=f"Grad-CAM ({loaded.spec.cam_layer}) for {exp.target_name}, p = {exp.score:.2f}")
    with cols[2]:
        kk = st.slider("Neighbours", 3, 24, 8, key="emb_k")
        dist, found = E.nearest(index, emb.vectors[row], kk + 1)
        st.markdown(f"**Nearest neighbours** ({metric} distance in the {emb.vectors.shape[1]}-D embedding); "
                    f"{np.mean(labels[found[1:]] == labels[row]):.0%} share its label")
        thumbs(subset, table, found[1:].tolist(), per_row=3, extras=[f" · d {d:.3f}" for d in dist[1:]])


def _similar(v: View, index: E.neighbours.NearestNeighbors) -> None:
    """The images nearest to an uploaded one."""
    table, subset, loaded, layer = v.table, v.subset, v.loaded, v.layer
    query = st.file_uploader("An image to search for (PNG, JPEG, TIFF, BMP or DICOM)",
                             type=["png", "jpg", "jpeg", "tif", "tiff", "bmp", "dcm"], key="emb_query")
    if query is not None:
        try:
            q = load_image(query.getvalue())
        except ImageError as err:
            st.error(str(err))
        else:
            vec, probs = E.embed_array(loaded, q.array, layer)
            dist, found = E.nearest(index, vec, 12)
            top = int(np.argmax(probs))
            st.image(E.thumbnail(q.array, 224), width=224,
                     caption=f"query · model says {loaded.spec.class_names[top]} ({probs[top]:.2f})")
            thumbs(subset, table, found.tolist(), per_row=5, extras=[f" · d {d:.3f}" for d in dist])


def _compare(v: View) -> None:
    """A second model's embedding of the same images: scores side by side and both maps."""
    emb, table, sep, k, model_name, metric = v.emb, v.table, v.sep, v.k, v.model_name, v.params.metric
    compare_name, layer, subset, params, method, colour_by = v.compare_name, v.layer, v.subset, v.params, \
        v.params.method, v.colour_by
    if compare_name == "(none)":
        st.info("Pick a second model under **Compare with** in the sidebar (e.g. the untrained copy) to compare "
                "both embeddings of these images, side by side and in numbers.")
    else:
        try:
            other = _model(compare_name)
        except ModelUnavailable as err:
            st.error(str(err))
        else:
            same_arch = other.spec.architecture == v.loaded.spec.architecture
            other_layer = layer if same_arch else other.spec.embedding_layer
            emb2 = _embeddings(subset.fingerprint, compare_name, other_layer, subset, other)
            labels2 = subset.labels[emb2.kept]
            sep2 = _separation(emb2.key, k, metric, emb2.vectors, labels2, tuple(subset.groups[i] for i in emb2.kept))
            with st.spinner(f"Computing the {method} map of the second model…"):
                xy2 = _projection(emb2.key, params, emb2.vectors)
            table2 = points_table(subset, emb2, xy2, other.spec.class_names)
            scores = pd.DataFrame(
                {"model": [model_name, compare_name], "layer": [layer, other_layer],
                 "dimensions": [emb.vectors.shape[1], emb2.vectors.shape[1]],
                 "silhouette": [sep.silhouette, sep2.silhouette],
                 f"{k}-NN accuracy": [sep.knn_accuracy, sep2.knn_accuracy],
                 f"precision@{k}": [sep.precision_at_k, sep2.precision_at_k]})
            st.dataframe(scores, hide_index=True, column_config={
                "silhouette": st.column_config.NumberColumn(format="%.3f"),
                f"{k}-NN accuracy": st.column_config.NumberColumn(format="percent"),
                f"precision@{k}": st.column_config.NumberColumn(format="percent")})
            colour2 = colour_by if colour_by in ("true label", "confidence") else "true label"
            a, b = st.columns(2)
            a.plotly_chart(scatter_figure(table, colour2, title=model_name, height=420),
                           key="emb_cmp_a")
            b.plotly_chart(scatter_figure(table2, colour2, title=compare_name, height=420),
                           key="emb_cmp_b")


def _export(v: View) -> None:
    """The map's points as CSV and the map as PNG, made on click."""
    table, model_name, layer, method, colour_by = v.table, v.model_name, v.layer, v.params.method, v.colour_by
    stem = f"embedding-{model_name}-{layer}-{method}".replace(" ", "_")
    st.download_button("Download CSV (coordinates, labels, predictions, file names)", lambda: csv_bytes(table),
                       file_name=f"{stem}.csv", mime="text/csv", on_click="ignore", key="emb_csv")
    st.download_button("Download PNG of the map",
                       lambda: scatter_png(table, colour_by, title=f"{model_name} · {layer}", axis=method,
                                           credit=v.credit),
                       file_name=f"{stem}.png", mime="image/png", on_click="ignore", key="emb_png")
    st.caption("Files are made when you click; the PNG carries the disclaimer and the data's attribution. "
               "Embeddings, maps and scores are cached on the server and reused across sessions.")


def main() -> None:
    """The page: header, data, model, embedding, map, numbers, selection, four tabs, footer."""
    page_header(
        "Embedding explorer",
        "Every image becomes one vector: the output of a layer (by default the global-average-pooled features just "
        "before the classifier). If training worked, images of one class sit together in that space. The map squeezes "
        "the vectors into 2-D (**t-SNE**, **UMAP** or **PCA**); the numbers measure separation in the full space: "
        "**silhouette** (-1 to 1), cross-validated **k-NN accuracy** (folds never split a patient) and "
        "**precision@k** (how often a retrieved neighbour shares the query's label). Select points (click, box or "
        "lasso) to see the images; ringed points are the model's mistakes.",
    )
    E.warm_up_umap()  # compiles UMAP's numba code in the background, so choosing UMAP later does not wait for it
    st.html(CAPTION_CSS)
    roots = data_roots()
    images, subset, source_name = _data(roots)
    loaded, layer, compare_name = _pick_model(images)
    emb = _embedding(subset, loaded, layer, roots)
    view = _map(images, subset, source_name, loaded, layer, compare_name, emb)
    _numbers(view)
    selected, wrong_rows = _map_and_selection(view)
    inspect_tab, similar_tab, compare_tab, export_tab = st.tabs(
        ["Inspect one image", "Similar to an upload", "Compare models", "Export"])
    index = _index(emb.key, view.params.metric, emb.vectors)
    with inspect_tab:
        _inspect(view, index, selected, wrong_rows)
    with similar_tab:
        _similar(view, index)
    with compare_tab:
        _compare(view)
    with export_tab:
        _export(view)
    page_footer()


if __name__ == "__main__":
    main()
