"""Convolution playground: filter an image with any kernel, see the size formula, and step through one cell."""

import numpy as np
import pandas as pd
import streamlit as st

from apps.common import page_footer, page_header
from apps.grid_plots import PADDING_FILL, TARGET, WINDOW, Highlight, Panel, grid_figure, image_figure
from apps.image_picker import SAMPLE, pick_image
from core.lessons import conv


@st.cache_data(show_spinner=False, max_entries=16)
def _gray(image: np.ndarray, side: int) -> np.ndarray:
    return conv.to_gray(image, side)


def _kernel_editor() -> np.ndarray:
    preset = st.selectbox("Kernel preset", conv.PRESETS, index=conv.PRESETS.index("Sobel x"), key="conv_preset")
    size = 3
    if preset in conv.SIZED_PRESETS:
        size = st.select_slider("Kernel size", [1, 3, 5, 7], value=3, key="conv_ksize")
    st.caption(conv.PRESET_NOTES[preset])
    start = pd.DataFrame(conv.kernel_preset(preset, size), columns=[str(j) for j in range(size)])
    edited = st.data_editor(start, key=f"conv_kernel_{preset}_{size}", hide_index=True,
                            column_config={c: st.column_config.NumberColumn(c, format="%.4g") for c in start})
    kernel = edited.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(kernel)):
        st.warning("Empty kernel cells count as 0.")
        kernel = np.nan_to_num(kernel)
    return kernel


def _settings() -> conv.ConvSettings:
    mode = st.radio("Padding", conv.PADDING_MODES, index=1, horizontal=True, key="conv_padding",
                    help="valid: none; same: output ≈ input / stride; full: every overlap; custom: p on each side")
    custom = st.number_input("p (pixels per side)", 0, 10, 1, key="conv_custom_p", disabled=mode != "custom")
    fill = st.selectbox("Padding fill", conv.PAD_FILLS, key="conv_fill", disabled=mode == "valid")
    stride = st.slider("Stride s", 1, 4, 1, key="conv_stride")
    dilation = st.slider("Dilation d", 1, 4, 1, key="conv_dilation")
    return conv.ConvSettings(stride, dilation, mode, int(custom), fill)


def _playground(image: np.ndarray, image_name: str, kernel: np.ndarray, settings: conv.ConvSettings) -> None:
    """The size formula with the user's numbers, then input, kernel and output side by side."""
    k = kernel.shape[0]
    st.subheader("Output size")
    try:
        f_h, f_w = settings.formulas(image.shape, k)
        output = conv.convolve(image, kernel, settings)
    except ValueError as err:
        st.error(str(err))
        return
    pad = settings.padding_for(image.shape, k)
    st.markdown(f"Input **{image.shape[0]} × {image.shape[1]}**, kernel **{k} × {k}**, stride **{settings.stride}**, "
                f"dilation **{settings.dilation}** (the kernel spans d(k−1)+1 = **{settings.dilation * (k - 1) + 1}** "
                f"pixels), padding top/bottom **{pad.top}/{pad.bottom}**, left/right **{pad.left}/{pad.right}** "
                f"({settings.fill}).")
    st.latex(r"n_\text{out} = \left\lfloor \frac{n + 2p - d\,(k-1) - 1}{s} \right\rfloor + 1")
    if f_h.latex == f_w.latex:
        st.latex(r"\text{height and width: } " + f_h.latex)
    else:
        st.latex(r"\text{height: } " + f_h.latex)
        st.latex(r"\text{width: } " + f_w.latex)
    agrees = output.shape == (f_h.n_out, f_w.n_out)
    st.markdown(f"Output: **{output.shape[0]} × {output.shape[1]}**: torch's conv2d produced "
                f"{'exactly this shape' if agrees else 'a DIFFERENT shape from the formula'}.")

    how = st.radio("Show the output", ["rescale", "clip", "abs"], horizontal=True, key="conv_display",
                   format_func={"rescale": "rescaled min..max", "clip": "clipped to 0..1", "abs": "|value|"}.get,
                   help="Filters like Sobel give negative numbers; an image can only show 0..1.")
    col_in, col_k, col_out = st.columns([1, 0.6, 1])
    with col_in:
        st.plotly_chart(image_figure(image, image, f"Input: {image_name}"), key="conv_in_fig")
    with col_k:
        st.plotly_chart(grid_figure([Panel(kernel, f"Kernel {k}×{k}", symmetric=True)], cell_px=44), key="conv_k_fig")
    with col_out:
        out_title = f"Output {output.shape[0]}×{output.shape[1]}, values {output.min():.3g}..{output.max():.3g}"
        st.plotly_chart(image_figure(conv.for_display(output, how), output, out_title), key="conv_out_fig")


def _step_through(kernel: np.ndarray, settings: conv.ConvSettings) -> None:
    """The same kernel and settings on a small integer grid, one output cell at a time."""
    k = kernel.shape[0]
    st.subheader("Step through one cell")
    st.markdown("The same kernel and settings on a small grid of integers, so every product can be checked by hand. "
                "Grey cells are padding; the red outline is the window read for the green output cell.")
    g1, g2, g3 = st.columns(3)
    n_small = g1.slider("Grid size", 4, 9, 7, key="conv_grid_n")
    seed = g2.number_input("Seed for new numbers", 0, 9999, 0, key="conv_grid_seed")
    with st.expander("Edit the grid", expanded=False):
        start = pd.DataFrame(conv.small_grid(n_small, int(seed)), columns=[str(j) for j in range(n_small)])
        grid = np.nan_to_num(st.data_editor(start, key=f"conv_grid_{n_small}_{seed}", hide_index=True)
                             .to_numpy(dtype=np.float64))
    try:
        sp = settings.padding_for(grid.shape, k)
        padded = conv.pad(grid, sp, settings.fill)
        small_out = conv.convolve(grid, kernel, settings)
    except ValueError as err:
        st.error(f"Step-through grid: {err}")
        return
    with g3:
        step = st.slider("Output cell (row by row)", 1, small_out.size, 1, key="conv_step") if small_out.size > 1 else 1
    row, col = divmod(step - 1, small_out.shape[1])
    cell = conv.cell_arithmetic(padded, kernel, row, col, settings.stride, settings.dilation)
    is_pad = [(r, c) for r in range(padded.shape[0]) for c in range(padded.shape[1])
              if not (sp.top <= r < sp.top + grid.shape[0] and sp.left <= c < sp.left + grid.shape[1])]
    by_hand = conv.conv_by_hand(padded, kernel, stride=settings.stride, dilation=settings.dilation)[0]
    so_far = np.full(small_out.shape, np.nan)
    so_far.flat[:step] = by_hand.flat[:step]  # the cells computed so far, row by row
    st.plotly_chart(grid_figure([
        Panel(padded, f"Padded input {padded.shape[0]}×{padded.shape[1]}",
              [Highlight(is_pad, fill=PADDING_FILL), Highlight(cell.window, WINDOW)]),
        Panel(kernel, "Kernel", symmetric=True),
        Panel(so_far, f"Output {small_out.shape[0]}×{small_out.shape[1]}", [Highlight([(row, col)], TARGET)],
              colorscale="Greens"),
    ], cell_px=34), key="conv_step_fig")
    st.code(cell.text(), language=None, wrap_lines=True)
    agree = "agrees" if np.isclose(cell.value, small_out[row, col]) else "DISAGREES"
    st.markdown(f"`torch.nn.functional.conv2d` on the same grid gives **{conv.fmt(small_out[row, col])}** at "
                f"({row}, {col}): it {agree} with the sum above.")


def _multi_channel() -> None:
    """The cs231n example: 7x7x3 padded input, two 3x3x3 filters with biases, stride 2."""
    st.subheader("Several channels, several filters (the cs231n example)")
    st.markdown("A 5×5×3 input zero-padded by 1 to 7×7×3, two filters of size 3×3×3 with biases, stride 2: output "
                "3×3×2. Each filter spans **all** input channels: one output value is the sum over 3 channels × 9 "
                "weights, plus the filter's bias. Each filter makes one output channel.")
    m1, m2 = st.columns(2)
    mc_seed = m1.number_input("Seed for new numbers", 0, 9999, 0, key="conv_mc_seed")
    example = conv.cs231n_example(int(mc_seed))
    mc_out = example.output()
    mc_step = m2.slider("Output value", 1, mc_out.size, 1, key="conv_mc_step",
                        help="Filter w0's nine outputs first (row by row), then filter w1's.")
    o, rest = divmod(mc_step - 1, mc_out.shape[1] * mc_out.shape[2])
    mr, mcol = divmod(rest, mc_out.shape[2])
    mc_cell = conv.cell_arithmetic(example.padded, example.weights[o], mr, mcol, example.stride,
                                   bias=float(example.biases[o]))
    border = [(r, c) for r in range(7) for c in range(7) if r in (0, 6) or c in (0, 6)]
    whole = [(i, j) for i in range(3) for j in range(3)]
    panels: list[Panel | None] = []
    for c in range(3):
        panels.append(Panel(example.padded[c], f"input x[:, :, {c}]",
                            [Highlight(border, fill=PADDING_FILL), Highlight(mc_cell.window, WINDOW)]))
        for f in range(2):
            bias = f" (b{f} = {conv.fmt(example.biases[f])})" if c == 0 else ""
            panels.append(Panel(example.weights[f, c], f"w{f}[:, :, {c}]{bias}",
                                [Highlight(whole, WINDOW)] if f == o else [], symmetric=True))
        panels.append(Panel(mc_out[c], f"output o[:, :, {c}]", [Highlight([(mr, mcol)], TARGET)] if c == o else [],
                            colorscale="Greens") if c < 2 else None)
    st.plotly_chart(grid_figure(panels, cell_px=30, rows=3, font_px=12), key="conv_mc_fig")
    st.code(f"filter w{o}, output o[{mr}, {mcol}, {o}]:\n{mc_cell.text()}", language=None, wrap_lines=True)
    padding_1 = conv.ConvSettings(stride=2, padding="custom", custom_padding=1)
    torch_mc = conv.convolve(example.x, example.weights, padding_1, bias=example.biases)
    st.markdown(f"`conv2d` gives **{conv.fmt(torch_mc[o, mr, mcol])}** for o[{mr}, {mcol}, {o}]: "
                f"{'the same' if np.isclose(torch_mc[o, mr, mcol], mc_cell.value) else 'DIFFERENT'}.")


def _costs() -> None:
    """Parameters and multiply-adds: standard vs depthwise-separable, one 5x5 vs two 3x3."""
    st.subheader("What a convolution costs")
    st.markdown("**Standard vs depthwise-separable (MobileNet)**: a k×k filter per input channel, then a 1×1 "
                "convolution to mix channels.")
    a, b, c, d = st.columns(4)
    c_in = a.number_input("C in", 1, 4096, 32, key="conv_cin")
    c_out = b.number_input("C out", 1, 4096, 64, key="conv_cout")
    kk = c.number_input("k", 1, 11, 3, key="conv_cost_k")
    hw = d.number_input("Output H = W", 1, 1024, 56, key="conv_hw")
    costs = [conv.standard_conv_cost(c_in, c_out, kk, hw, hw), conv.depthwise_separable_cost(c_in, c_out, kk, hw, hw)]
    st.dataframe(pd.DataFrame([{"layer": x.name, "parameters": f"{x.params:,}", "= (with biases)": x.params_formula,
                                "multiply-adds": f"{x.macs:,}", "= ": x.macs_formula} for x in costs]), hide_index=True)
    st.markdown(f"Separable needs **{costs[1].macs / costs[0].macs:.1%}** of the multiply-adds "
                f"(1/C_out + 1/k² = {1 / c_out + 1 / kk**2:.1%}).")
    st.markdown("**One 5×5 vs two stacked 3×3 (Inception v3)**: the same 5×5 receptive field with fewer weights, "
                "and an extra non-linearity in between.")
    a, b, _, _ = st.columns(4)
    ch = a.number_input("Channels C (in = out)", 1, 4096, 64, key="conv_inc_c")
    size = b.number_input("H = W", 1, 1024, 28, key="conv_inc_hw")
    inception = [conv.stacked_conv_cost(ch, 5, 1, size, size), conv.stacked_conv_cost(ch, 3, 2, size, size)]
    st.dataframe(pd.DataFrame([{"block": x.name, "parameters": f"{x.params:,}", "= (with biases)": x.params_formula,
                                "multiply-adds": f"{x.macs:,}", "= ": x.macs_formula} for x in inception]),
                 hide_index=True)
    st.markdown(f"Two 3×3 use **{inception[1].params / inception[0].params:.0%}** of the parameters of one 5×5 "
                "(18C² vs 25C² weights).")


def main() -> None:
    """The page: header, controls, the playground on the chosen image, step-through, channels, costs, footer."""
    page_header(
        "Convolution playground",
        "Slide a small kernel over an image: each output pixel is the sum of the window's pixels times the kernel's "
        "weights. Change the padding, stride and dilation and watch the output size follow the formula; then step "
        "through a small grid one cell at a time. Like every deep-learning library, this is cross-correlation "
        "(the kernel is not flipped).",
    )
    left, middle, right = st.columns([1.2, 1, 1], gap="large")
    with left:
        side = st.select_slider("Work at (longest side, px)", [64, 96, 128, 192, 256], value=128, key="conv_side")
        picked = pick_image("conv", default=SAMPLE, fallback="camera")
    with middle:
        kernel = _kernel_editor()
    with right:
        settings = _settings()

    if picked is not None:
        _playground(_gray(picked.array, side), picked.name, kernel, settings)
    _step_through(kernel, settings)
    _multi_channel()
    _costs()
    page_footer()


if __name__ == "__main__":
    main()
