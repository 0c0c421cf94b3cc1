"""Receptive field: what one output unit can see, layer by layer, in hand-built stacks and real networks."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from apps.common import page_footer, page_header
from apps.image_picker import PickedImage, decode, pick_image, xray_paths
from core import zoo
from core.data import data_dir
from core.lessons import receptive_field as rf
from core.lessons.conv import SAMPLES, sample_image
from core.zoo import ModelUnavailable, Preprocessing, denormalise, preprocess

Network = str | tuple[rf.LayerSpec, ...]  # an architecture name or a hand-built stack

# ------------------------------------------------------------------------------------------ cached work


@st.cache_data(show_spinner=False, max_entries=32)
def _analysis(net: Network, size: int) -> rf.Analysis:
    if isinstance(net, str):
        return rf.analyse_module(_model(net, False), size, net)
    return rf.analyse_stack(net, size)


@st.cache_resource(show_spinner=False, max_entries=8)
def _model(net: Network, trained: bool) -> torch.nn.Module:
    if isinstance(net, str):
        return zoo.trained_architecture(net) if trained else zoo.build_architecture(net)
    if trained:
        raise ModelUnavailable(f"A hand-built stack has no trained weights: pick {zoo.BUNDLED} to compare.")
    return rf.stack_module(net)


@st.cache_resource(show_spinner=False, max_entries=16)
def _probe(net: Network, trained: bool, node: str) -> torch.nn.Module:
    return rf.unit_probe(_model(net, trained), node)


def _prep(net: Network, size: int) -> Preprocessing:
    if isinstance(net, str):
        base = zoo.architecture_preprocessing(net)
        return Preprocessing(size, base.channels, base.mean, base.std)
    return Preprocessing(size, 1, (0.0,), (1.0,))


def _extra_images(count: int, skip: str) -> list[np.ndarray]:
    """Other inputs to average the effective receptive field over: up to four X-rays of each class (evenly spaced
    through the folder) if present, else scikit-image samples; never the image with key ``skip`` again."""
    root = data_dir()
    if root:
        paths = [p for ps in xray_paths(str(root)).values() for p in ps[:: max(1, len(ps) // 4)][:4] if p != skip]
        return [decode(p)[0] for p in paths[:count]]
    return [sample_image(name) for name in SAMPLES if skip != f"skimage:{name}"][:count]


@st.cache_data(show_spinner=False, max_entries=32)
def _erf(net: Network, trained: bool, node: str, unit: tuple[int, int], size: int, image: np.ndarray,
         image_key: str, n_inputs: int) -> np.ndarray:
    if not isinstance(net, str):  # a stack's rows are numbered; its torch module names layers by position
        rows = [r.name for r in rf.analyse_stack(net, size).rows]
        node = rf.stack_node_names(_model(net, False))[rows.index(node)]
    prep = _prep(net, size)
    batch = torch.cat([preprocess(a, prep) for a in [image, *_extra_images(n_inputs - 1, image_key)]])
    return rf.effective_receptive_field(_probe(net, trained, node), batch, unit)


# ------------------------------------------------------------------------------------------ figures

FIELD = "#d62728"
# one clearly different hue per series (Streamlit's theme gave two reds and two blues): red stays for the field
SERIES = {"receptive field (px)": "#1f4e99", "shortest path's field (px)": "#2a9d3a", "jump (px)": "#e68a00",
          "output size (units)": "#8c564b"}
LINES = ("#1f4e99", "#e68a00", "#2a9d3a")  # the lines of the profile and growth charts, in order
ERF_SCALE = [[0.0, "rgba(255,120,0,0)"], [0.3, "rgba(255,120,0,0.6)"], [1.0, "rgba(255,255,0,0.9)"]]


def _image_trace(display: np.ndarray) -> go.Heatmap:
    gray = display if display.ndim == 2 else display.mean(axis=-1)
    return go.Heatmap(z=gray, colorscale="gray", showscale=False, hoverinfo="skip", zmin=0, zmax=1)


def _field_shapes(fig: go.Figure, u: rf.UnitField, shade: bool = True, **where: int) -> None:
    """Full field dashed (it may reach into the padding), in-image part outlined and, if ``shade``, tinted."""
    (r0, r1), (c0, c1) = u.rows, u.cols
    fig.add_shape(type="rect", x0=c0 - 0.5, x1=c1 + 0.5, y0=r0 - 0.5, y1=r1 + 0.5,
                  line={"color": FIELD, "width": 2, "dash": "dash"}, **where)
    (r0, r1), (c0, c1) = u.clipped_rows, u.clipped_cols
    fig.add_shape(type="rect", x0=c0 - 0.5, x1=c1 + 0.5, y0=r0 - 0.5, y1=r1 + 0.5, line={"color": FIELD, "width": 2},
                  fillcolor="rgba(214,39,40,0.15)" if shade else None, **where)


def _frame(fig: go.Figure, u: rf.UnitField, size: int, height: int, whole_field: bool = True) -> None:
    """Square axes around the image and, if ``whole_field``, the unit's whole field (padding part included)."""
    margin = 2 if whole_field else round(0.15 * size)
    lo = min(0, u.rows[0], u.cols[0]) - margin if whole_field else -margin
    hi = max(size - 1, u.rows[1], u.cols[1]) + margin if whole_field else size - 1 + margin
    fig.update_xaxes(range=[lo, hi], showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(range=[hi, lo], showgrid=False, zeroline=False, scaleanchor="x")
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, plot_bgcolor="#e8e8e8",
                      showlegend=False, dragmode=False)


def unit_figure(display: np.ndarray, row: rf.Row, u: rf.UnitField, size: int) -> go.Figure:
    """The input with the chosen unit's field, and one clickable dot per unit of the layer (at its field centre)."""
    f = row.field
    ii, jj = np.meshgrid(np.arange(row.height), np.arange(row.width), indexing="ij")
    dot = float(np.clip(360 / max(row.height, row.width), 3, 12))
    scatter = go.Scatter if row.height * row.width <= 1600 else go.Scattergl  # WebGL only when dots are many
    fig = go.Figure([_image_trace(display), scatter(
        x=(f.start + jj * f.jump + (f.size - 1) / 2).ravel(), y=(f.start + ii * f.jump + (f.size - 1) / 2).ravel(),
        customdata=np.stack([ii.ravel(), jj.ravel()], axis=1).tolist(), mode="markers",
        marker={"size": dot, "color": "rgba(31,111,235,0.55)", "line": {"width": 0}},
        hovertemplate="unit (%{customdata[0]}, %{customdata[1]})<extra></extra>")])
    fig.add_trace(go.Scatter(x=[u.centre[1]], y=[u.centre[0]], mode="markers", hoverinfo="skip",
                             marker={"size": dot + 6, "color": FIELD, "symbol": "x"}))
    _field_shapes(fig, u)
    _frame(fig, u, size, 560)
    fig.update_layout(title=f"{row.name}, unit {u.unit}: grey is padding")
    return fig


def layers_figure(analysis: rf.Analysis, selected: str) -> go.Figure:
    """Output size, jump and receptive-field size per layer (log scale), the selected layer marked."""
    names = [r.name for r in analysis.rows]
    x = list(range(1, len(names) + 1))
    fig = go.Figure()
    series = {"receptive field (px)": [r.field.size for r in analysis.rows],
              "shortest path's field (px)": [min(f.size for f, _ in r.paths) for r in analysis.rows],
              "jump (px)": [r.field.jump for r in analysis.rows],
              "output size (units)": [r.height for r in analysis.rows]}
    if series["shortest path's field (px)"] == series["receptive field (px)"]:
        del series["shortest path's field (px)"]
    mode = "markers" if analysis.merges else "lines+markers"  # branches interleave in the table: no lines
    for label, ys in series.items():
        fig.add_trace(go.Scatter(x=x, y=ys, name=label, mode=mode, customdata=names,
                                 marker={"color": SERIES[label], "size": 7}, line={"color": SERIES[label]},
                                 hovertemplate="%{customdata}: %{y}<extra>" + label + "</extra>"))
    fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[analysis.input_size[0]] * 2, name="input size (px)", mode="lines",
                             line={"color": "grey", "dash": "dot"}, hoverinfo="skip"))
    fig.add_vline(x=names.index(selected) + 1, line={"color": FIELD, "dash": "dot"})
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis_title="layer (table row)",
                      yaxis={"type": "log", "title": "pixels / units", "tickvals": [2 ** k for k in range(13)]},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def erf_figure(display: np.ndarray, maps: dict[str, np.ndarray], u: rf.UnitField, radii: dict[str, float],
               size: int) -> go.Figure:
    """ERF heat (linear, scaled to its peak) on the image with the theoretical field and the mass circle."""
    fig = make_subplots(1, len(maps), subplot_titles=list(maps), horizontal_spacing=0.08)
    for col, (label, erf) in enumerate(maps.items(), start=1):
        fig.add_trace(_image_trace(display), 1, col)
        fig.add_trace(go.Heatmap(z=erf / erf.max(), colorscale=ERF_SCALE, showscale=False, zmin=0, zmax=1,
                                 customdata=erf, hovertemplate="row %{y}, col %{x}: %{customdata:.2e}<extra></extra>"),
                      1, col)
        _field_shapes(fig, u, shade=False, row=1, col=col)
        angle = np.linspace(0, 2 * np.pi, 361)  # a line trace, not a shape: plotly clips traces to the axes
        fig.add_trace(go.Scatter(x=u.centre[1] + radii[label] * np.cos(angle),
                                 y=u.centre[0] + radii[label] * np.sin(angle), mode="lines", hoverinfo="skip",
                                 line={"color": "#1f6feb", "width": 2}), 1, col)
    _frame(fig, u, size, 460, whole_field=False)  # the heat lives on the image; the 1-D profile shows the field
    for axis in range(2, len(maps) + 1):
        fig.update_yaxes(scaleanchor=f"x{axis}", selector={"anchor": f"x{axis}"})
    return fig


def profile_figure(maps: dict[str, np.ndarray], u: rf.UnitField) -> go.Figure:
    """1-D view: the ERF summed over rows (mass per column), against the theoretical field's edges."""
    fig = go.Figure()
    for (label, erf), colour in zip(maps.items(), LINES, strict=False):
        fig.add_trace(go.Scatter(y=erf.sum(axis=0), mode="lines", name=label, line={"color": colour}))
    for edge in u.cols:
        fig.add_vline(x=edge, line={"color": FIELD, "dash": "dash"})
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis_title="input column",
                      yaxis_title="share of gradient", title="Mass per column (dashed: theoretical field)",
                      legend={"x": 1, "xanchor": "right", "y": 1, "bgcolor": "rgba(255,255,255,0.7)"})
    return fig


def contributions_figure(layers: tuple[rf.LayerSpec, ...]) -> go.Figure:
    """One row per layer: each unit at its field centre, sized by how many paths reach the top unit from it."""
    contrib = rf.contributions_1d(layers)
    fig = go.Figure()
    for level, (counts, centres) in enumerate(zip(contrib.counts, contrib.centres, strict=True)):
        live = counts > 0
        fig.add_trace(go.Scatter(x=centres[~live], y=[level] * int((~live).sum()), mode="markers",
                                 marker={"size": 7, "color": "white", "line": {"color": "#bbbbbb", "width": 1}},
                                 hovertemplate="no path<extra></extra>"))
        fig.add_trace(go.Scatter(x=centres[live], y=[level] * int(live.sum()), mode="markers",
                                 customdata=counts[live], hovertemplate="%{customdata} paths<extra></extra>",
                                 marker={"size": 7 + 9 * np.sqrt(counts[live] / counts.max()),
                                         "color": np.log1p(counts[live]), "colorscale": "Viridis"}))
    labels = ["input", *(la.describe() for la in layers)]
    fig.update_layout(height=90 + 45 * len(labels), margin={"l": 10, "r": 10, "t": 30, "b": 10}, showlegend=False,
                      yaxis={"tickvals": list(range(len(labels))), "ticktext": labels},
                      xaxis_title="input position (padding dropped)",
                      title="Which units reach the top unit, and by how many paths")
    return fig


def growth_figure(depth: int, kernel: int, rate: int) -> go.Figure:
    """Field size against depth for the three dilation schedules."""
    growth = rf.growth_table(depth, kernel, rate)
    names = {"none": "no dilation", "constant": f"dilation {rate} throughout", "exponential": f"dilation {rate}^l"}
    fig = go.Figure([go.Scatter(x=list(range(1, depth + 1)), y=ys, name=names[k], mode="lines+markers",
                                line={"color": colour}, marker={"color": colour})
                     for (k, ys), colour in zip(growth.items(), LINES, strict=False)])
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis_title="layers",
                      yaxis_title="receptive field (px)", title="Receptive field vs depth, stride 1",
                      legend={"orientation": "h", "y": -0.3})
    return fig


def _short_note(row: rf.Row) -> str:
    """The table's note in a few words: how many paths disagree and whether they are misaligned."""
    note = row.note() if row.layer is None else ""
    if not note:
        return ""
    return f"{row.n_paths:,} paths disagree" + ("; misaligned" if "misaligned" in note else "")


STACK_COLUMNS = ["type", "kernel", "stride", "padding", "dilation"]


def _stack_editor() -> tuple[rf.LayerSpec, ...] | None:
    preset = st.selectbox("Start from", list(rf.STACK_PRESETS), key="rf_preset")
    start = pd.DataFrame([[la.kind, la.kernel, la.stride, la.padding, la.dilation]
                          for la in rf.STACK_PRESETS[preset]], columns=STACK_COLUMNS)
    number = {c: st.column_config.NumberColumn(c, min_value=0 if c == "padding" else 1, max_value=32, step=1,
                                               required=True) for c in STACK_COLUMNS[1:]}
    edited = st.data_editor(start, key=f"rf_stack_{preset}", num_rows="dynamic", hide_index=True,
                            column_config={"type": st.column_config.SelectboxColumn(
                                "type", options=list(rf.LAYER_KINDS), required=True), **number})
    layers = []
    for i, rec in enumerate(edited.to_dict("records"), start=1):
        try:
            layers.append(rf.LayerSpec(rec["type"], *(int(rec[c]) for c in STACK_COLUMNS[1:])))
        except (TypeError, ValueError) as err:
            st.error(f"Layer {i}: {err}")
            return None
    if not layers:
        st.error("The stack is empty: add a layer.")
        return None
    return tuple(layers)


def _pick_unit(key: str, width: int) -> None:
    """Click callback: the clicked dot (trace 1 of the unit figure, row-major) becomes the chosen unit."""
    dots = [p for p in st.session_state[f"{key}_click"].selection.points if p.get("curve_number") == 1]
    if dots:
        i, j = divmod(int(dots[0]["point_index"]), width)
        st.session_state[f"{key}_row"], st.session_state[f"{key}_col"] = i, j


def _network_and_image() -> tuple[Network | None, int, PickedImage | None]:
    """The network (a real architecture or a hand-built stack), its input size, and the image."""
    net_col, image_col = st.columns([1.25, 1], gap="large")
    with net_col:
        mode = st.radio("Network", ["real architecture", "build a stack"], horizontal=True, key="rf_mode")
        if mode == "build a stack":
            net: Network | None = _stack_editor()
            size = st.number_input("Input size (px)", 8, 512, 96, step=8, key="rf_stack_size")
        else:
            net = st.selectbox("Architecture", list(zoo.LESSON_ARCHITECTURES), key="rf_arch",
                               format_func=lambda n: f"{n}: {zoo.LESSON_ARCHITECTURES[n]}")
            size = st.select_slider("Input size (px)", [64, 96, 128, 160, 192, 224, 256, 320],
                                    value=zoo.architecture_preprocessing(net).size, key=f"rf_size_{net}")
    with image_col:
        picked = pick_image("rf", fallback="camera")
    return net, int(size), picked


def _unit(analysis: rf.Analysis, net_key: str, size: int) -> tuple[str, rf.Row, str, rf.UnitField]:
    """The node and unit to look at, and its field's headline numbers; returns the node, its row, the unit's
    widget key and its field."""
    names = [r.name for r in analysis.rows]
    pick_l, pick_r, pick_c = st.columns([2.4, 1, 1])  # room for "Unit column (0…15)" on one line
    node = pick_l.selectbox("Layer (node) whose unit we look at", names, index=len(names) - 1, key=f"rf_node_{net_key}")
    row = analysis.row(node)
    unit_key = f"rf_unit_{net_key}_{size}_{node}"
    for axis, n in (("row", row.height), ("col", row.width)):
        if st.session_state.get(f"{unit_key}_{axis}", 0) >= n:  # stale click from another grid
            st.session_state[f"{unit_key}_{axis}"] = n // 2
    i = pick_r.number_input(f"Unit row (0…{row.height - 1})", 0, row.height - 1, row.height // 2, key=f"{unit_key}_row")
    j = pick_c.number_input(f"Unit column (0…{row.width - 1})", 0, row.width - 1, row.width // 2, key=f"{unit_key}_col")
    unit = (int(i), int(j))
    u = rf.unit_field(analysis, node, unit)

    m1, m2, m3, m4 = st.columns([1, 1.3, 0.8, 1.2])  # the longer labels get the room to show whole
    m1.metric("Receptive field", f"{row.field.size} px", help="Union over all paths from the input to this node.")
    m2.metric("Jump (effective stride)", f"{row.field.jump} px", help="Input pixels between neighbouring units.")
    m3.metric("Output grid", f"{row.height} × {row.width}")
    m4.metric("Field in the padding", f"{u.padding_fraction:.0%}",
              help="Share of this unit's field outside the image, where it sees only padding (zeros).")
    return node, row, unit_key, u


def _layer_by_layer(analysis: rf.Analysis, node: str) -> None:
    """The per-layer table and chart, and the merge nodes where paths disagree."""
    table = pd.DataFrame(analysis.table())
    # the note column holds a few words that fit its cell; the whole sentence is in the skip-connections table
    table["note"] = [_short_note(r) for r in analysis.rows]
    short = {"effective padding": ("eff. padding", "Effective padding: input pixels the field of unit 0 "
                                                   "reaches beyond the top-left edge."),
             "centre of unit 0": ("centre 0", "Centre of unit 0's field, in input pixels."),
             "shortest path RF": ("shortest RF", "Receptive field of the shortest path (fewest convolutions) "
                                                 "from the input.")}
    st.dataframe(table.drop(columns=["out size"]), hide_index=True, height=300,
                 column_config={"#": st.column_config.NumberColumn("#", pinned=True),
                                "node": st.column_config.TextColumn("node", pinned=True),
                                "paths": st.column_config.NumberColumn(format="localized"),
                                "note": st.column_config.TextColumn("note", width=170),
                                **{c: st.column_config.Column(label, help=text)
                                   for c, (label, text) in short.items()}})
    st.plotly_chart(layers_figure(analysis, node), key="rf_layers_chart")
    for note in analysis.notes:
        st.caption(note)
    if analysis.merges:
        with st.expander(f"Skip connections: {len(analysis.merges)} merge nodes where paths disagree"):
            st.markdown(
                "Where branches meet (a residual **add**, a DenseNet **concatenate**), a unit sees the union of "
                "what every path sees. Paths through shortcuts skip convolutions, so their fields are smaller; "
                "the table's *shortest path RF* column shows the smallest. If paths were centred on different "
                "pixels the network would be misaligned (Araujo et al.); the note says so when it happens.")
            # a static table: its note sentences wrap instead of being cut at the cell's edge
            merges = pd.DataFrame([{"node": r.name, "operation": r.op, "paths": f"{r.n_paths:,}",
                                    "note": r.note()} for r in analysis.merges])
            st.table(merges, hide_index=True)


def _unit_on_the_image(display: np.ndarray, row: rf.Row, u: rf.UnitField, size: int, unit_key: str,
                       image_name: str) -> None:
    """The chosen unit's field drawn on the image; clicking a dot picks another unit."""
    node, unit = u.node, u.unit
    fig_col, text_col = st.columns([2.2, 1])
    with fig_col:
        st.plotly_chart(unit_figure(display, row, u, size), key=f"{unit_key}_click",
                        on_select=lambda: _pick_unit(unit_key, row.width), selection_mode="points")
    with text_col:
        st.markdown(f"**{image_name}**, resized to {size} × {size} px as the network sees it.")
        st.markdown(
            f"Unit **{unit}** of `{node}` sees input rows **{u.rows[0]}…{u.rows[1]}** and columns "
            f"**{u.cols[0]}…{u.cols[1]}** (dashed), centred on ({u.centre[0]:g}, {u.centre[1]:g}). Inside the "
            f"image that is rows {u.clipped_rows[0]}…{u.clipped_rows[1]}, columns "
            f"{u.clipped_cols[0]}…{u.clipped_cols[1]} (shaded); **{u.padding_fraction:.0%}** of the field is "
            "padding.")
        st.markdown("Blue dots are the centres of every unit's field in this layer, one jump apart: **click a "
                    "dot** to choose that unit.")
        if len(row.paths) > 1:
            st.info(row.note())


def _effective_field(net: Network, u: rf.UnitField, size: int, image: np.ndarray, image_key: str,
                     display: np.ndarray) -> None:
    """The effective receptive field of random and trained weights next to the theoretical field."""
    node, unit = u.node, u.unit
    c1, c2 = st.columns(2)
    n_inputs = c1.slider("Inputs to average over", 1, 8, 4, key="rf_erf_inputs",
                         help="Your image plus other X-rays (or scikit-image samples without the data folder).")
    fraction = c2.slider("Mass the circle holds", 0.5, 0.99, 0.9, 0.01, key="rf_erf_fraction")
    maps: dict[str, np.ndarray] = {}
    with st.spinner("Back-propagating from the unit to the input…"):
        maps["random weights"] = _erf(net, False, node, unit, size, image, image_key, n_inputs)
        try:
            maps["trained weights"] = _erf(net, True, node, unit, size, image, image_key, n_inputs)
        except ModelUnavailable as err:
            trained_note = str(err)
        else:
            trained_note = ""
    summaries = {k: rf.summarise_erf(v, u, fraction) for k, v in maps.items()}
    st.plotly_chart(erf_figure(display, maps, u, {k: s.radius for k, s in summaries.items()}, size),
                    key="rf_erf_chart")
    st.dataframe(pd.DataFrame([{"weights": k, f"radius holding {fraction:.0%} (px)": round(s.radius, 1),
                                "diameter / field size": f"{s.size_ratio:.1%}",
                                "mass inside the field": f"{s.inside_box:.4%}"} for k, s in summaries.items()]),
                 hide_index=True)
    if trained_note:
        st.info(trained_note)
    st.plotly_chart(profile_figure(maps, u), key="rf_erf_profile")
    st.caption(
        "Heat: mean |∂ unit / ∂ input| over the inputs (each input's map scaled to sum 1), relative to its peak. "
        "Red: the theoretical field; blue: the circle around its centre holding the chosen share of the "
        "gradient. Gradients never leave the theoretical field (the table's last column), but most of their "
        "mass sits in a core much smaller than it, and the part of the field in the padding sees no pixels. "
        "ImageNet weights are never downloaded here, so the trained comparison uses the bundled X-ray model.")


def _dilation(net: Network) -> None:
    """A stack in 1-D (path counts) and how dilation schedules grow the field."""
    if isinstance(net, tuple):
        st.markdown("**Your stack in 1-D.** Each dot is a unit at its field centre; its size counts the paths "
                    "from it to the top unit (all-ones kernels). Pools count like convolutions here.")
        st.plotly_chart(contributions_figure(net), key="rf_stack_1d")
    else:
        st.info("Switch to *build a stack* to see your own layers in 1-D; the demo below shows dilation.")
    st.markdown("**Dilation.** Stacking dilated 3-tap convolutions grows the field linearly (constant dilation) "
                "or exponentially (dilation doubling each layer, Yu & Koltun 2016; WaveNet) at the same cost. "
                "Constant dilation leaves holes: some inputs never reach the unit (gridding).")
    d1, d2, d3, d4 = st.columns(4)
    schedule = d1.radio("Dilation", rf.SCHEDULES, index=2, key="rf_dil_schedule",
                        format_func={"none": "none", "constant": "constant", "exponential": "doubling"}.get)
    depth = d2.slider("Layers", 1, 6, 4, key="rf_dil_depth")
    kernel = d3.select_slider("Kernel", [2, 3, 5], value=3, key="rf_dil_kernel")
    rate = d4.select_slider("Rate", [2, 3], value=2, key="rf_dil_rate")
    demo = tuple(rf.dilation_stack(schedule, depth, kernel, rate))
    left, right = st.columns([1.4, 1])
    left.plotly_chart(contributions_figure(demo), key="rf_dilation_1d")
    right.plotly_chart(growth_figure(depth, kernel, rate), key="rf_growth")


def main() -> None:
    """The page: header, network and image, the traced table, the unit, four tabs, footer."""
    page_header(
        "Receptive field",
        "A unit deep in a CNN only sees part of the image: its **receptive field**. Each layer widens it by "
        "(k' − 1) × *jump* pixels, where k' = d(k − 1) + 1 is the dilated kernel and the *jump* (effective stride) "
        "is the product of all earlier strides (Araujo, Norris & Sim, Distill 2019). Networks with skip "
        "connections have many paths from the input, each with its own field. And not every pixel in the field "
        "counts equally: the **effective receptive field**, the gradient of one unit with respect to the input "
        "(Luo et al. 2016), is concentrated in the middle.",
    )
    net, size, picked = _network_and_image()
    if net is None or picked is None:
        page_footer()
        st.stop()
    net_key = net if isinstance(net, str) else "stack-" + hashlib.md5(repr(net).encode()).hexdigest()[:10]
    try:
        with st.spinner("Tracing the network…"):
            analysis = _analysis(net, size)
    except (ValueError, ModelUnavailable) as err:
        st.error(str(err))
        page_footer()
        st.stop()
    node, row, unit_key, u = _unit(analysis, net_key, size)
    prep = _prep(net, size)
    display = denormalise(preprocess(picked.array, prep), prep)
    tab_names = ["Layer by layer", "Unit on the image", "Effective receptive field", "1-D view and dilation"]
    tabs = st.tabs(tab_names, key="rf_tab", on_change="rerun")
    with tabs[0]:
        if tabs[0].open:
            _layer_by_layer(analysis, node)
    with tabs[1]:
        if tabs[1].open:
            _unit_on_the_image(display, row, u, size, unit_key, picked.name)
    with tabs[2]:
        if tabs[2].open:
            _effective_field(net, u, size, picked.array, picked.key, display)
    with tabs[3]:
        if tabs[3].open:
            _dilation(net)
    page_footer()


if __name__ == "__main__":
    main()
