"""Architectures: parameters, multiply-adds, receptive field and CPU speed measured from the models themselves."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from apps.common import page_footer, page_header
from core.lessons import architectures as A
from core.zoo import BUNDLED, ModelUnavailable, get_spec

SIZES = ("each model's own", 128, 192, 224, 320)


@st.cache_data(show_spinner=False)
def _measured(name: str, size: int | None) -> A.Measured:
    return A.measure(name, size)


@st.cache_data(show_spinner=False, max_entries=64)
def _speed(name: str, size: int, threads: int) -> float:
    return A.images_per_second(name, size)


def _usable() -> list[str]:
    """The architectures that can be built here: the bundled one needs its weights file for its configuration."""
    try:
        get_spec(BUNDLED)
    except ModelUnavailable as err:
        st.caption(f"**{BUNDLED}** is left out: {err}")
        return [n for n in A.architecture_names() if n != BUNDLED]
    return A.architecture_names()


def _table(names: list[str]) -> None:
    """Every architecture's numbers, computed at the chosen input size."""
    st.subheader("Measured from the models")
    choice = st.selectbox("Input size (px)", SIZES, key="ar_size")
    size = None if choice == SIZES[0] else int(choice)
    zoo = A.zoo_architectures()
    bar = st.progress(0.0, text="Counting…")
    rows, papers, measured = [], [], []
    for i, name in enumerate(names):
        bar.progress(i / len(names), text=f"Counting {name}…")
        m = _measured(name, size)
        measured.append(m)
        rows.append({"architecture": name, "in the zoo as": zoo.get(name, "bundled" if name == BUNDLED else "—"),
                     "input (px)": m.size, "parameters (M)": m.params / 1e6, "multiply-adds (G)": m.macs / 1e9,
                     "receptive field (px)": m.receptive_field, "top-1 %": m.top1, "top-5 %": m.top5})
        paper = A.PAPERS.get(name)
        if paper:
            papers.append({"architecture": name, "parameters (M), measured": m.params / 1e6,
                           "parameters (M), paper": paper.params_m, "top-1 %, torchvision": m.top1,
                           "top-1 %, paper": paper.top1, "top-5 %, torchvision": m.top5, "top-5 %, paper": paper.top5,
                           "paper": f"{paper.paper}, {paper.protocol}"})
    bar.empty()
    two = {c: st.column_config.NumberColumn(format="%.2f") for c in ("parameters (M)", "multiply-adds (G)")}
    one = {c: st.column_config.NumberColumn(format="%.1f") for c in ("top-1 %", "top-5 %")}
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config=two | one)
    st.caption(
        "Parameters: sum of p.numel() over the model's parameters. Multiply-adds: half of the FLOPs that "
        "torch.utils.flop_counter.FlopCounterMode counts for one image (convolutions and matrix products only; "
        "BatchNorm, activations and pooling add a few percent). Receptive field: core.lessons.receptive_field's "
        "analysis of the traced graph (the largest path; it can exceed the image). Top-1/top-5: ImageNet-1k "
        "validation, single 224 px crop, from the `meta` of torchvision's default weights (read offline; the bundled "
        "model classifies chest X-rays, not ImageNet). GoogLeNet without its two training-only heads.")
    st.markdown("**Beside the seed's table:** what the papers reported, against the counts above and torchvision's "
                "re-trained weights.")
    st.dataframe(pd.DataFrame(papers), hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.1f") for c in papers[0] if c != "architecture" and c != "paper"})
    st.caption("Paper numbers are typed from each paper, with its protocol: multi-crop testing, ensembles and older "
               "training recipes explain most differences (torchvision's ResNet-50 default weights use a 2021 recipe).")
    for m in measured:
        if m.rf_note:
            st.caption(f"**{m.name}**: no receptive field shown: {m.rf_note}")
    with_acc = [m for m in measured if m.top1 is not None]
    fig = go.Figure(go.Scatter(
        x=[m.macs / 1e9 for m in with_acc], y=[m.top1 for m in with_acc], mode="markers+text",
        text=[m.name for m in with_acc], textposition="top center",
        marker={"size": [8 + 40 * (m.params / max(x.params for x in with_acc)) ** 0.5 for m in with_acc]},
        customdata=[m.params / 1e6 for m in with_acc],
        hovertemplate="%{text}<br>%{x:.2f} G multiply-adds<br>top-1 %{y:.1f} %<br>%{customdata:.1f} M parameters"))
    fig.update_layout(height=380, xaxis={"type": "log", "title": f"multiply-adds per image (G, log), {size or 224} px",
                                         "tickvals": [0.2, 0.5, 1, 2, 5, 10, 20]},
                      yaxis_title="ImageNet top-1 % (torchvision)", margin={"l": 40, "r": 10, "t": 10, "b": 40})
    st.plotly_chart(fig, key="ar_scatter")
    st.caption("Marker area follows the parameter count: VGG-16 spends the most of both for less accuracy than "
               "networks built from bottlenecks, depthwise-separable or compound-scaled blocks.")


def _speed_section(usable: list[str]) -> None:
    """CPU images/s of the chosen architectures, measured here on demand and cached."""
    st.subheader("Speed on this CPU")
    c1, c2 = st.columns([3, 1])
    names = c1.multiselect("Architectures to time", usable, default=usable[:1], key="ar_speed_names")
    size = c2.select_slider("Input (px)", [64, 128, 192, 224], value=192, key="ar_speed_size")
    if not names:
        return
    threads = torch.get_num_threads()
    rows = []
    bar = st.progress(0.0, text="Timing…")
    for i, name in enumerate(names):
        bar.progress(i / len(names), text=f"Timing {name} at {size} px (untrained copy, batches of 4)…")
        rows.append({"architecture": name, "images/s": _speed(name, size, threads),
                     "multiply-adds (G)": _measured(name, size).macs / 1e9})
    bar.empty()
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
        "images/s": st.column_config.NumberColumn(format="%.1f"),
        "multiply-adds (G)": st.column_config.NumberColumn(format="%.2f")})
    st.caption(f"Best of 3 batches of 4 random images after a warm-up, {threads} torch thread(s), on this server while "
               "the page ran (other work changes it; results are cached per architecture and size). Speed does not "
               "follow multiply-adds alone: depthwise convolutions and DenseNet's concatenations move more memory "
               "per multiply-add.")


def _calculator() -> None:
    """Inception's factorisations, 1x1 bottlenecks and depthwise-separable convolutions, by formula and in torch."""
    st.subheader("Cost calculator")
    c1, c2, c3, c4 = st.columns(4)
    channels = c1.number_input("Channels C (in = out)", 1, 2048, 64, key="ar_c")
    size = c2.number_input("Feature map H = W", 1, 512, 28, key="ar_hw")
    reduce_to = c3.number_input("Bottleneck width (1x1 reduces C to)", 1, 2048, 16, key="ar_b")
    k = c4.select_slider("Kernel k for the bottleneck and depthwise rows", [3, 5, 7], value=5, key="ar_k")
    comparisons = [A.factorise_5x5(channels, size), A.factorise_asymmetric(channels, size),
                   A.bottleneck(channels, channels, reduce_to, k, size), A.depthwise_separable(channels, channels, k,
                                                                                             size)]
    rows = []
    for comp in comparisons:
        for which, cost, make in (("before", comp.before, comp.build_before), ("after", comp.after, comp.build_after)):
            params, macs = A.torch_cost(make, comp.in_channels, size)
            rows.append({"comparison": comp.title, "block": cost.name, "parameters": cost.params,
                         "torch: parameters": params, "multiply-adds": cost.macs, "torch: multiply-adds": macs,
                         "multiply-adds saved": comp.saving if which == "after" else None,
                         "formula": cost.macs_formula})
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
        "multiply-adds saved": st.column_config.NumberColumn(format="percent")})
    st.caption("Formulas from core.lessons.conv (with biases); the torch columns build the same layers (same padding) "
               "and count them with sum(p.numel()) and FlopCounterMode. A 5×5 becomes two 3×3 (same 5 px field): "
               "18/25 of the work, 28 % fewer. A 3×3 becomes 1×3 then 3×1: 6/9, 33 % fewer. A 1×1 bottleneck "
               "shrinks the channels the expensive k×k sees (GoogLeNet's 'reduce' layers). Depthwise-separable: one "
               "k×k filter per channel, then a 1×1 mixing them (MobileNet): about 1/C + 1/k² of the work.")


def main() -> None:
    """The page."""
    page_header(
        "Architectures",
        "From AlexNet to EfficientNet, what did each generation buy? Every number below is computed from the "
        "network itself (built without weights, so nothing is downloaded): its parameters, the multiply-adds of "
        "one forward pass, the receptive field of its last feature map and its speed on this CPU, beside the "
        "ImageNet accuracy its torchvision weights report and the numbers the original papers gave.",
    )
    names = _usable()
    _table(names)
    _speed_section(names)
    _calculator()
    page_footer()


main()
