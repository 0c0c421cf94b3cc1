"""Feature maps and filters: what each layer of a trained network computes on one image, next to an untrained copy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
import torch

from apps.common import model_picker, page_footer, page_header
from apps.image_picker import pick_image
from core.explain.render import overlay
from core.hooks import spatial_layers
from core.lessons import features as F
from core.lessons.smoothness import morans_i
from core.zoo import LoadedModel, denormalise, load_untrained, predict, preprocess


# ------------------------------------------------------------------------------------ cached building blocks
@st.cache_data(show_spinner=False, max_entries=64)
def _maps(model_key: str, image_key: str, layer: str, _model: LoadedModel, _x: object) -> F.FeatureMaps:
    return F.feature_maps(_model.model, _x, layer)


@st.cache_data(show_spinner=False, max_entries=16)
def _stats(model_key: str, image_key: str, _model: LoadedModel, _x: object, layers: tuple[str, ...]
           ) -> list[F.LayerStats]:
    return F.layer_statistics(_model.model, _x, layers)


# ------------------------------------------------------------------------------------ figures (display only)
def grid_figure(maps: F.FeatureMaps, order: np.ndarray, per_channel: bool, height: int) -> go.Figure:
    """The channel mosaic as a heatmap, with one invisible point per tile to hover and click."""
    mo = F.mosaic(maps.maps[order], per_channel=per_channel)
    fig = go.Figure(go.Heatmap(z=mo.image, colorscale="Viridis", zmin=0, zmax=1, showscale=False, hoverinfo="skip"))
    centres = np.array([mo.centre(k) for k in range(len(order))])
    fig.add_trace(go.Scatter(
        x=centres[:, 1], y=centres[:, 0], mode="markers", marker={"size": 8, "opacity": 0},
        customdata=np.stack([np.arange(1, len(order) + 1), order, maps.means[order]], axis=1),
        hovertemplate="rank %{customdata[0]:.0f} · channel %{customdata[1]:.0f}<br>"
                      "mean %{customdata[2]:.3f}<extra></extra>", showlegend=False))
    fig.update_xaxes(visible=False, range=[-0.5, mo.image.shape[1] - 0.5])
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", constrain="domain")
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 0, "b": 0}, hoverdistance=-1,
                      plot_bgcolor="rgba(0,0,0,0)", dragmode=False)
    return fig


def image_figure(picture: np.ndarray, height: int, gray: bool = True) -> go.Figure:
    """A picture shown with crisp pixels (NaN gaps transparent)."""
    if picture.ndim == 3:
        fig = px.imshow(np.nan_to_num(picture, nan=1.0), zmin=0, zmax=1)
    else:
        fig = px.imshow(picture, zmin=0, zmax=1, color_continuous_scale="gray" if gray else "Viridis")
        fig.update_coloraxes(showscale=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 0, "b": 0}, dragmode=False)
    return fig


def map_figure(values: np.ndarray, title: str) -> go.Figure:
    """One channel's raw map with a colour bar (values as the network computed them)."""
    fig = px.imshow(values, color_continuous_scale="Viridis", aspect="equal")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=300, margin={"l": 0, "r": 0, "t": 30, "b": 0}, title={"text": title, "font_size": 13})
    return fig


def _smoothness_reading(trained: float, untrained: float, model_name: str) -> str:
    """What the two smoothness numbers say about this model, in words."""
    if trained >= 0.5:
        return f"{model_name}'s trained filters are smooth: neighbouring weights move together."
    if trained - untrained >= 0.15:
        return (f"{model_name}'s trained filters are only partly smooth: smoother than random, but many still look "
                "noisy, as a network trained from scratch on a few thousand X-rays can leave them.")
    return f"{model_name}'s trained filters are about as rough as random ones: training barely shaped them."


def _feature_maps(loaded: LoadedModel, image_key: str, x: torch.Tensor, seen: np.ndarray, layers: list[str],
                  shapes: dict[str, tuple[int, ...]]) -> tuple[str, F.FeatureMaps, np.ndarray, str, bool]:
    """Every channel of the chosen layer as a clickable mosaic, and one channel enlarged over the image; returns the
    layer, its maps, their order, the order's name and whether each map is scaled on its own."""
    model_name = loaded.spec.name
    st.subheader("Feature maps")
    c_layer, c_sort, c_scale = st.columns(3, vertical_alignment="bottom")
    default_layer = layers.index("layer1") if "layer1" in layers else 0
    layer = c_layer.selectbox("Layer", layers, index=default_layer, key=f"fm_layer_{model_name}",
                              format_func=lambda n: f"{n}  ({' × '.join(map(str, shapes[n]))})",
                              help="Modules in the order the image flows through them; shape is channels × height × "
                                   "width.")
    sort = c_sort.selectbox("Order", ["highest mean first", "lowest mean first", "channel number"], key="fm_sort",
                            help="Mean activation of each channel over the whole map.")
    per_channel = c_scale.toggle("Scale each map on its own", value=True, key="fm_per_channel",
                                 help="Off: one colour scale for all maps, so strong channels stand out.")

    maps = _maps(model_name, image_key, layer, loaded, x)
    order = {"highest mean first": maps.order, "lowest mean first": maps.order[::-1],
             "channel number": np.arange(len(maps.means))}[sort]
    rank_key = f"fm_rank_{model_name}_{layer}"


    def _picked() -> None:
        """Clicking a tile selects that rank."""
        points = st.session_state[f"fm_grid_{layer}"].selection.get("points", [])
        if points and points[0].get("curve_number") == 1:
            st.session_state[rank_key] = int(points[0]["point_index"])


    g_col, e_col = st.columns([3, 2], gap="large")
    with g_col:
        st.plotly_chart(grid_figure(maps, order, per_channel, 520), key=f"fm_grid_{layer}", on_select=_picked,
                        selection_mode="points", config={"displayModeBar": False})
        st.caption(f"{len(order)} channels of {maps.maps.shape[1]} × {maps.maps.shape[2]}, ordered by {sort}. "
                   "Hover for channel numbers; click a tile to enlarge it.")
    with e_col:
        rank = st.selectbox("Channel", range(len(order)), key=rank_key,
                            format_func=lambda r: f"rank {r + 1}: channel {order[r]} (mean {maps.means[order[r]]:.3f})")
        channel = int(order[rank])
        values = maps.maps[channel]
        alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="fm_alpha")
        st.image(overlay(seen, F.upsample(values, seen.shape[:2]), alpha=alpha, cmap="viridis"),
                 caption=f"{layer} channel {channel} over the input (bilinear upsampling from "
                         f"{values.shape[0]} × {values.shape[1]})", width="stretch")
        st.plotly_chart(map_figure(values, f"channel {channel}: raw values"), key="fm_raw",
                        config={"displayModeBar": False})
    return layer, maps, order, sort, per_channel


def _what_the_network_sees(loaded: LoadedModel, seen: np.ndarray, image_name: str, probs: np.ndarray) -> None:
    """The input as the network sees it, with its top three classes, in the sidebar."""
    spec, side = loaded.spec, st.sidebar
    with side:
        st.header("What the network sees")
        st.image(seen, caption=f"{image_name}, {spec.preprocessing.size} px", width="stretch", clamp=True)
        top = np.argsort(-probs)[:3]
        st.markdown("  \n".join(f"{spec.class_names[i]}: **{probs[i]:.1%}**" for i in top))


def _filters(loaded: LoadedModel, untrained: LoadedModel) -> None:
    """The first layer's kernels, trained and untrained, with their measured smoothness."""
    model_name = loaded.spec.name
    st.subheader("Learned filters of the first layer")
    symmetric = st.toggle("Zero = mid-grey", value=False, key="fm_symmetric",
                          help="On: one scale per filter centred on zero, so excitatory (bright) and inhibitory (dark) "
                               "parts read directly. Off: each filter stretched from its minimum to its maximum.")
    f_trained = F.filter_images(loaded.model, symmetric=symmetric)
    f_untrained = F.filter_images(untrained.model, symmetric=symmetric)
    k_h, k_w = f_trained.images.shape[1:3]
    smooth_t = float(np.nanmedian(morans_i(f_trained.weights())))
    smooth_u = float(np.nanmedian(morans_i(f_untrained.weights())))
    st.caption(f"{f_trained.layer}: {len(f_trained.images)} filters of {k_h} × {k_w} pixels, each scaled on its own. "
               "Networks trained on millions of photos learn smooth edge and blob detectors in their first layer "
               "(Krizhevsky et al. 2012); random filters are noise. Whether *this* model's filters are smooth is "
               "measured below, not assumed.")
    m_t, m_u, m_note = st.columns([1, 1, 2])
    m_t.metric("Smoothness, trained", f"{smooth_t:.2f}", help="Median over the filters of Moran's I: the correlation "
               "of neighbouring weights (1 = smooth, 0 = noise, below 0 = checkerboard).")
    m_u.metric("Smoothness, untrained", f"{smooth_u:.2f}")
    m_note.caption(_smoothness_reading(smooth_t, smooth_u, model_name))
    c1, c2 = st.columns(2, gap="large")
    for col, filt, title in ((c1, f_trained, "Trained"), (c2, f_untrained, "Untrained (random initialisation)")):
        with col:
            st.markdown(f"**{title}**")
            st.plotly_chart(image_figure(F.tile(filt.images).image, 380), key=f"fm_filters_{title[:5]}",
                            config={"displayModeBar": False})


def _trained_vs_untrained(loaded: LoadedModel, untrained: LoadedModel, image_key: str, x: torch.Tensor,
                          view: tuple[str, F.FeatureMaps, np.ndarray, str, bool]) -> None:
    """The same layer's mosaic in the trained network and in its untrained copy."""
    model_name = loaded.spec.name
    layer, maps, order, sort, per_channel = view
    st.subheader("Trained vs untrained, same layer")
    u_maps = _maps(f"{model_name}:untrained", image_key, layer, untrained, x)
    u_order = {"highest mean first": u_maps.order, "lowest mean first": u_maps.order[::-1],
               "channel number": np.arange(len(u_maps.means))}[sort]
    c1, c2 = st.columns(2, gap="large")
    for col, m, o, title in ((c1, maps, order, "Trained"), (c2, u_maps, u_order, "Untrained")):
        with col:
            st.markdown(f"**{title}** · {layer}, {sort}")
            st.plotly_chart(grid_figure(m, o, per_channel, 380), key=f"fm_compare_{title}",
                            config={"displayModeBar": False})


def _statistics(loaded: LoadedModel, untrained: LoadedModel, image_key: str, x: torch.Tensor,
                stats: list[F.LayerStats], layers: list[str]) -> None:
    """Per-layer mean, spread, sparsity and dead channels, trained next to untrained."""
    model_name = loaded.spec.name
    st.subheader("Layer statistics")
    u_stats = _stats(f"{model_name}:untrained", image_key, untrained, x, tuple(layers))
    table = pd.DataFrame({
        "layer": [s.layer for s in stats],
        "shape (C × H × W)": [" × ".join(map(str, s.shape)) for s in stats],
        "mean": [s.mean for s in stats],
        "std": [s.std for s in stats],
        "sparsity after ReLU": [s.sparsity for s in stats],
        "dead channels": [s.dead_channels for s in stats],
        "untrained mean": [s.mean for s in u_stats],
        "untrained sparsity": [s.sparsity for s in u_stats],
    })
    fraction = st.column_config.NumberColumn(format="percent")
    st.dataframe(table, hide_index=True, key="fm_stats", height=36 * (len(table) + 1) + 3, column_config={
        "mean": st.column_config.NumberColumn(format="%.3f"), "std": st.column_config.NumberColumn(format="%.3f"),
        "untrained mean": st.column_config.NumberColumn(format="%.3f"), "sparsity after ReLU": fraction,
        "dead channels": fraction, "untrained sparsity": fraction})
    st.caption("Sparsity: share of values that are zero after a ReLU (≤ 0 before it). Dead channels: channels that are "
               "zero everywhere after a ReLU on this image. Statistics are for this one image.")
    long = pd.concat([table.assign(model="trained", sparsity=table["sparsity after ReLU"]),
                      table.assign(model="untrained", sparsity=table["untrained sparsity"])])
    fig = px.line(long, x="layer", y="sparsity", color="model", markers=True)
    fig.update_layout(height=320, margin={"l": 0, "r": 0, "t": 10, "b": 0}, yaxis_tickformat=".0%",
                      legend={"orientation": "h", "y": 1.1})
    st.plotly_chart(fig, key="fm_sparsity")


def main() -> None:
    """The page: header, model and image, feature maps, filters, trained vs untrained, statistics, footer."""
    page_header(
        "Feature maps and filters",
        "A convolutional layer turns the image into a stack of **feature maps**, one per channel (filter). Early "
        "layers respond to edges and blobs, deeper ones to textures and larger parts, at ever coarser resolution. "
        "Pick an image and a layer: the grid shows every channel's map, **strongest on average first**; click a tile "
        "(or pick a rank) to lay that map over the image. Below: the first layer's learned filters, per-layer "
        "statistics, and the same layer in an **untrained** copy of the network, which shows what training added.",
    )
    loaded = model_picker("fm_model")
    st.sidebar.header("Image")
    picked = pick_image("fm", sidebar=True)
    if picked is None:
        st.stop()
    spec, image_key = loaded.spec, picked.key
    x = preprocess(picked.array, spec.preprocessing, loaded.device)
    seen = denormalise(x, spec.preprocessing)  # what the network sees: resized, channel-converted
    probs = predict(loaded, x)[0].cpu().numpy()
    layers = spatial_layers(loaded.model, x)
    stats = _stats(spec.name, image_key, loaded, x, tuple(layers))
    view = _feature_maps(loaded, image_key, x, seen, layers, {s.layer: s.shape for s in stats})
    _what_the_network_sees(loaded, seen, picked.name, probs)
    untrained = load_untrained(spec.name)
    _filters(loaded, untrained)
    _trained_vs_untrained(loaded, untrained, image_key, x, view)
    _statistics(loaded, untrained, image_key, x, stats, layers)
    page_footer()


if __name__ == "__main__":
    main()
