"""Max-pool backprop: pooling forward, then the gradient routed back window by window; strided-conv gradients."""

import numpy as np
import pandas as pd
import streamlit as st

from apps.common import page_footer, page_header
from apps.grid_plots import PADDING_FILL, TARGET, WINDOW, Highlight, Panel, grid_figure
from core.lessons import pooling
from core.lessons.conv import cell_arithmetic, fmt

GRIDS = {
    "the 5×5 example": pooling.DEFAULT_GRID,
    "ties": pooling.TIES_GRID,
    "random 6×6": np.random.default_rng(7).integers(0, 10, size=(6, 6)).astype(np.float64),
}


def _editor(values: np.ndarray, key: str) -> np.ndarray:
    """An editable integer-friendly grid; blank cells count as 0."""
    frame = pd.DataFrame(values, columns=[str(j) for j in range(values.shape[1])])
    edited = st.data_editor(frame, key=key, hide_index=True,
                            column_config={c: st.column_config.NumberColumn(c, format="%g") for c in frame})
    return np.nan_to_num(edited.to_numpy(dtype=np.float64))


def _pooling() -> None:
    """Editable grid and upstream gradient; forward with argmaxes, backward step by step, ties."""
    c_grid, c_ctrl, c_up = st.columns([1.3, 1, 1], gap="large")
    with c_ctrl:
        preset = st.selectbox("Activation grid", list(GRIDS), key="pool_preset")
        mode = st.radio("Pooling", ["max", "avg"], horizontal=True, key="pool_mode",
                        format_func={"max": "max", "avg": "average"}.get)
        kernel = st.slider("Window k×k", 2, 4, 3, key="pool_k")
        stride = st.slider("Stride", 1, 3, 1, key="pool_stride")
    with c_grid:
        st.markdown("**Activations x** (editable)")
        x = _editor(GRIDS[preset], f"pool_grid_{preset}")
    try:
        forward = pooling.pool_forward(x, kernel, stride, mode)
    except ValueError as err:
        st.error(str(err))
        return
    out_shape = forward.output.shape
    with c_up:
        st.markdown(f"**Upstream gradient ∂L/∂y** ({out_shape[0]}×{out_shape[1]}, editable)")
        upstream = _editor(np.arange(1.0, forward.output.size + 1).reshape(out_shape),
                           f"pool_up_{out_shape[0]}x{out_shape[1]}")
        st.caption("Distinct numbers make it easy to see which window each share came from.")

    # ------------------------------------------------------------------------------------------ forward
    st.subheader("Forward")
    overlap = "windows overlap" if stride < kernel else "windows do not overlap"
    st.markdown(f"{kernel}×{kernel} windows, stride {stride}: {overlap}; output {out_shape[0]}×{out_shape[1]}.")
    counts = forward.argmax_counts()
    if mode == "max":
        winners = [(r, c) for r, c in zip(*np.nonzero(counts), strict=True)]
        panels = [Panel(x, "x: each window's max outlined", [Highlight(winners, WINDOW)]),
                  Panel(counts.astype(float), "windows won by each input", colorscale="Oranges"),
                  Panel(forward.output, "y = maxpool(x)", colorscale="Greens")]
    else:
        panels = [Panel(x, "x"), Panel(forward.output, "y = avgpool(x)", colorscale="Greens")]
    st.plotly_chart(grid_figure(panels, cell_px=40), key="pool_fwd_fig")
    torch_out, torch_grad = pooling.torch_reference(x, kernel, stride, mode, upstream)
    same_fwd = np.allclose(torch_out, forward.output)
    st.caption(f"PyTorch's {'max' if mode == 'max' else 'avg'}_pool2d gives "
               f"{'the same output' if same_fwd else 'a DIFFERENT output'}.")

    # ----------------------------------------------------------------------------------------- backward
    st.subheader("Backward, one window at a time")
    steps = pooling.pool_backward(forward, upstream)
    b1, b2 = st.columns([1, 3])
    with b1:
        step = st.slider("Step", 1, len(steps), 1, key="pool_step") if len(steps) > 1 else 1
    current = steps[step - 1]
    before = steps[step - 2].grad_after if step > 1 else np.zeros_like(x)
    targets = [(r, c) for r, c, _ in current.shares]
    with b2:
        st.plotly_chart(grid_figure([
            Panel(x, "x: window read", [Highlight(current.window.cells(), WINDOW), Highlight(targets, TARGET)]),
            Panel(upstream, "∂L/∂y", [Highlight([(current.window.out_row, current.window.out_col)], WINDOW)],
                  colorscale="Purples"),
            Panel(current.grad_after, f"∂L/∂x after step {step}", [Highlight(targets, TARGET)], colorscale="Oranges"),
        ], cell_px=40), key="pool_bwd_fig")
    st.code(current.text(before), language=None, wrap_lines=True)
    log = []
    previous = np.zeros_like(x)
    for i, s in enumerate(steps[:step], start=1):
        log.append({"step": i, "window": f"({s.window.out_row}, {s.window.out_col})", "routing": s.text(previous)})
        previous = s.grad_after
    with st.expander(f"All {step} step(s) so far", expanded=False):
        st.dataframe(pd.DataFrame(log), hide_index=True)
    if step == len(steps):
        same = np.allclose(torch_grad, current.grad_after)
        st.success("Final ∂L/∂x equals PyTorch autograd." if same else "Final ∂L/∂x DIFFERS from PyTorch autograd.")
    else:
        st.caption(f"Move to step {len(steps)} to compare the finished gradient with PyTorch autograd.")

    # --------------------------------------------------------------------------------------------- ties
    st.subheader("Ties")
    st.info(pooling.TIE_RULE)
    tied = pooling.tied_windows(forward) if mode == "max" else []
    if tied:
        st.markdown("Windows with a tie in this grid: " + "; ".join(
            f"({w.out_row}, {w.out_col}) max {fmt(w.value)} at {', '.join(str(t) for t in w.ties)} → gradient to "
            f"{w.argmax}" for w in tied))
    elif mode == "max":
        st.caption("No window in this grid has a tie; choose the 'ties' grid to see some.")


def _strided_conv() -> None:
    """The input and weight gradients of a strided convolution, built step by step and checked."""
    st.subheader("Backward pass of a strided convolution")
    st.markdown(
        "Forward: y = x ⋆ w with stride s (no padding). For L = Σ g·y, each x value gets "
        "Σ g[i, j]·w[a − s·i, b − s·j] over the outputs it fed. The tidy way to compute all of them: **dilate** g "
        "(put s−1 zeros between entries), **pad** it by k−1 zeros, and slide the **kernel flipped by 180°** over it "
        "(a full correlation). The weight gradient is x correlated with the dilated g."
    )
    s1, s2, s3, s4 = st.columns(4)
    n = s1.slider("Input n×n", 4, 8, 5, key="sc_n")
    kk = s2.slider("Kernel k×k", 2, 4, 3, key="sc_k")
    ss = s3.slider("Stride s", 1, 3, 2, key="sc_s")
    seed = s4.number_input("Seed", 0, 9999, 0, key="sc_seed")
    try:
        xs, ws, gs = pooling.strided_example(n, kk, ss, int(seed))
        result = pooling.strided_conv_backward(xs, ws, gs, ss)
    except ValueError as err:
        st.error(str(err))
        return
    st.plotly_chart(grid_figure([Panel(xs, "x"), Panel(ws, "w", symmetric=True),
                                 Panel(result.output, f"y (stride {ss})", symmetric=True),
                                 Panel(gs, "g = ∂L/∂y", colorscale="Purples")], cell_px=34), key="sc_fwd_fig")
    m = gs.shape[0]
    dil_cells = [(i * ss, j * ss) for i in range(m) for j in range(m)]
    pad_cells = [(r, c) for r in range(result.padded_upstream.shape[0]) for c in range(result.padded_upstream.shape[1])
                 if not (kk - 1 <= r < kk - 1 + result.dilated_upstream.shape[0]
                         and kk - 1 <= c < kk - 1 + result.dilated_upstream.shape[1])]
    cc1, cc2 = st.columns([1, 3])
    with cc1:
        gx_cell = st.slider("∂L/∂x cell (row by row)", 1, n * n, 1, key="sc_cell")
    gr, gc = divmod(gx_cell - 1, n)
    cell = cell_arithmetic(result.padded_upstream, result.flipped_kernel, gr, gc)
    note = ""
    if result.uncovered:
        note = f" (+{result.uncovered} zero row/col: no window reached the last input rows)"
    with cc2:
        st.plotly_chart(grid_figure([
            Panel(result.dilated_upstream, f"1. g dilated{note}", [Highlight(dil_cells, TARGET)], colorscale="Purples"),
            Panel(result.padded_upstream, "2. padded by k−1", [Highlight(pad_cells, fill=PADDING_FILL),
                                                               Highlight(cell.window, WINDOW)], colorscale="Purples"),
            Panel(result.flipped_kernel, "3. w flipped 180°", symmetric=True),
            Panel(result.grad_input, "4. ∂L/∂x", [Highlight([(gr, gc)], TARGET)], symmetric=True),
        ], cell_px=30), key="sc_bwd_fig")
    st.code(cell.text().replace("out[", "∂L/∂x["), language=None, wrap_lines=True)
    st.markdown("**Check by finite differences**: nudge every x and w entry by ±0.001, rerun the forward pass, and "
                "take (L(+) − L(−)) / 0.002.")
    with st.spinner("Finite differences…"):
        fd = pooling.finite_difference_check(result)
    f1, f2, f3 = st.columns(3)
    f1.metric("max |∂L/∂x − finite diff.|", f"{fd.max_error_input:.1e}")
    f2.metric("max |∂L/∂w − finite diff.|", f"{fd.max_error_weight:.1e}")
    f3.metric("max |difference from conv2d autograd|", f"{pooling.autograd_max_error(result):.1e}")
    st.plotly_chart(grid_figure([Panel(result.grad_weight, "∂L/∂w = x ⋆ dilated g", symmetric=True),
                                 Panel(fd.grad_input, "∂L/∂x by finite differences", symmetric=True),
                                 Panel(fd.grad_weight, "∂L/∂w by finite differences", symmetric=True)], cell_px=34),
                    key="sc_fd_fig")


def main() -> None:
    """The page: header, max-pool backprop, strided-convolution gradients, footer."""
    page_header(
        "Max-pool backprop",
        "Max pooling keeps the largest value of each window. Backward, each window's upstream gradient goes "
        "**entirely** to the position that won; the others get zero. When windows overlap (3×3 stride 1), one input "
        "can win several windows and its gradient is the **sum**. Average pooling instead shares each gradient "
        "equally across its window.",
    )
    _pooling()
    _strided_conv()
    page_footer()


if __name__ == "__main__":
    main()
