"""Activation functions: curves and derivatives, saturation, softmax temperature, vanishing gradients."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from apps.common import page_footer, page_header
from core.lessons import activations as A

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


@st.cache_data(show_spinner=False)
def _gradient_norms(names: tuple[str, ...], depth: int, matched: bool, params: tuple[float, float, float]
                    ) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        act = A.activation(name, alpha=params[0], elu_alpha=params[1], beta=params[2])
        out[name] = A.layer_gradient_norms(act, depth, gain=A.init_gain(name, params[0]) if matched else None)
    return out


def _curves() -> tuple[list[str], tuple[float, float, float]]:
    """Chosen activations with their derivatives, saturated ranges and formulas; returns the choice and its
    parameters (leaky slope, ELU alpha, softplus beta) for the depth section."""
    chosen = st.multiselect("Activations", A.NAMES, default=["sigmoid", "tanh", "ReLU", "GELU"], key="act_names")
    p1, p2, p3, p4 = st.columns(4)
    alpha = p1.slider("leaky ReLU slope α", 0.0, 0.5, 0.01, 0.01, key="act_alpha")
    elu_alpha = p2.slider("ELU α", 0.1, 2.0, 1.0, 0.1, key="act_elu")
    beta = p3.slider("softplus β", 0.25, 5.0, 1.0, 0.25, key="act_beta")
    threshold = p4.select_slider("Saturated where |f′| <", [0.001, 0.01, 0.05, 0.1, 0.2], value=0.05, key="act_thr")
    span = st.slider("x range", 2.0, 12.0, 6.0, 0.5, key="act_span")
    acts = [A.activation(name, alpha=alpha, elu_alpha=elu_alpha, beta=beta) for name in chosen]

    if not acts:
        st.info("Pick at least one activation.")
    else:
        x = np.linspace(-span, span, 601)
        cols = min(len(acts), 4)
        rows = -(-len(acts) // cols)
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=[a.name for a in acts], horizontal_spacing=0.05,
                            vertical_spacing=0.16 / rows)
        for i, act in enumerate(acts):
            r, c = i // cols + 1, i % cols + 1
            fig.add_trace(go.Scatter(x=x, y=act.f(x), name="f(x)", line={"color": "#1f77b4"}), row=r, col=c)
            fig.add_trace(go.Scatter(x=x, y=act.df(x), name="f′(x)", line={"color": "#d62728", "dash": "dash"}),
                          row=r, col=c)
            for lo, hi in A.saturation_intervals(act, -span, span, threshold):  # after the traces: plotly skips
                fig.add_vrect(x0=lo, x1=hi, fillcolor="rgba(214,39,40,0.12)", line_width=0, row=r, col=c)  # empty plots
        fig.update_yaxes(range=[-1.5, min(span, 4.0) + 0.2], zeroline=True)
        fig.update_xaxes(zeroline=True)
        fig.update_layout(height=290 * rows + 40, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=False)
        st.plotly_chart(fig, key="act_curves")
        st.caption(f"Solid blue: f(x); dashed red: the derivative f′(x). Shaded: saturated, |f′(x)| < {threshold:g}: "
                   f"an input there passes back less than {threshold:g} of the gradient it receives.")
        table = []
        for act in acts:
            sat = A.saturation_intervals(act, -span, span, threshold)
            where = ", ".join(f"[{lo:.2f}, {hi:.2f}]" for lo, hi in sat) or "nowhere in range"
            table.append({"activation": act.name, "saturated for x in": where,
                          "max |f′|": float(np.abs(act.df(x)).max()), "f′(0)": float(act.df(np.array([0.0]))[0])})
        number = st.column_config.NumberColumn(format="%.4g")
        st.dataframe(pd.DataFrame(table), hide_index=True, column_config={"max |f′|": number, "f′(0)": number})
        with st.expander("Formulas", expanded=True):
            for act in acts:
                a, b = st.columns(2)
                a.latex(act.formula)
                b.latex(act.derivative)
                st.caption(act.note)
    return chosen, (alpha, elu_alpha, beta)


def _softmax() -> None:
    """Softmax at a temperature: probabilities, entropy and the Jacobian."""
    st.subheader("Softmax with temperature")
    st.latex(r"p_i = \frac{e^{z_i/T}}{\sum_j e^{z_j/T}},\qquad \frac{\partial p_i}{\partial z_j} = "
             r"\frac{p_i(\delta_{ij} - p_j)}{T}")
    s1, s2 = st.columns([1, 2])
    with s1:
        raw = st.text_input("Logits z (comma-separated)", "2.0, 1.0, 0.1, -1.0", key="act_logits")
        temperature = st.select_slider("Temperature T", [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0], value=1.0, key="act_T")
    try:
        logits = A.parse_numbers(raw)
    except ValueError as err:
        st.error(str(err))
    else:
        p = A.softmax(logits, temperature)
        p_one = A.softmax(logits, 1.0)
        with s1:
            st.metric("Entropy", f"{A.entropy_bits(p):.3f} bits", help=f"0 = certain, {np.log2(len(p)):.2f} = uniform")
            st.caption("T < 1 sharpens towards the largest logit; T > 1 flattens towards uniform. Large logits "
                       "saturate softmax: its Jacobian (right) goes to zero, like a sigmoid's slope.")
        labels = [f"z{i} = {v:g}" for i, v in enumerate(logits)]
        with s2:
            bars = go.Figure([go.Bar(x=labels, y=p, name=f"T = {temperature:g}", marker_color="#1f77b4",
                                     text=[f"{v:.3f}" for v in p], textposition="outside")])
            if temperature != 1.0:
                bars.add_trace(go.Bar(x=labels, y=p_one, name="T = 1 (for comparison)", marker_color="#c7c7c7"))
            bars.update_layout(barmode="group", height=300, yaxis={"range": [0, 1.1], "title": "probability"},
                               margin={"l": 10, "r": 10, "t": 30, "b": 10})
            st.plotly_chart(bars, key="act_softmax")
            jac = A.softmax_jacobian(logits, temperature)
            heat = go.Figure(go.Heatmap(z=jac, x=labels, y=labels, colorscale="RdBu_r", zmid=0,
                                        text=[[f"{v:.3f}" for v in row] for row in jac], texttemplate="%{text}"))
            heat.update_yaxes(autorange="reversed")
            heat.update_layout(title="Jacobian ∂p_i/∂z_j", height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10})
            st.plotly_chart(heat, key="act_jacobian")


def _vanishing_gradients(chosen: list[str], params: tuple[float, float, float]) -> None:
    """The product of slopes along one chain, then gradient norms measured in a real MLP."""
    alpha, elu_alpha, beta = params
    st.subheader("Why deep sigmoid networks stopped learning")
    st.markdown(
        r"A chain $a_l = f(z_l)$, $z_l = w\,a_{l-1} + b_l$ has $\partial a_L/\partial a_0 = \prod_l w\,f'(z_l)$: one "
        "factor per layer (the chain rule). The sigmoid's slope is "
        "at most 0.25, so 20 layers give at most 0.25²⁰ ≈ 10⁻¹². ReLU's slope is exactly 1 wherever the unit is on, "
        "so the product does not shrink along active paths (it is 0 through a unit that is off, which is why ReLU "
        "networks need enough active units, and why leaky variants exist)."
    )
    v1, v2, v3, v4 = st.columns(4)
    depth = v1.slider("Depth L", 2, 60, 20, key="act_depth")
    weight = v2.slider("Weight w", 0.5, 2.0, 1.0, 0.1, key="act_w")
    bias_std = v3.slider("Bias spread (std)", 0.0, 2.0, 1.0, 0.1, key="act_bstd")
    chain_seed = v4.number_input("Seed", 0, 9999, 0, key="act_seed")
    weights, biases = A.chain_parameters(depth, weight, bias_std, int(chain_seed))
    chain_names = chosen or list(A.NAMES)
    chain = go.Figure()
    for name in chain_names:
        act = A.activation(name, alpha=alpha, elu_alpha=elu_alpha, beta=beta)
        product = np.abs(A.scalar_chain(act, weights, biases, x0=0.5).product)
        product[product == 0] = np.nan  # log axes cannot show 0: leave a gap instead
        chain.add_trace(go.Scatter(x=np.arange(1, depth + 1), y=product, mode="lines+markers", name=name,
                                   line={"color": COLOURS[A.NAMES.index(name)]}))
    chain.add_trace(go.Scatter(x=np.arange(1, depth + 1), y=0.25 ** np.arange(1, depth + 1), name="0.25^L (sigmoid "
                               "best case, w = 1)", line={"color": "grey", "dash": "dot"}))
    chain.update_yaxes(type="log", title="|∂a_L/∂a_0|", exponentformat="power")
    chain.update_xaxes(title="layer L")
    chain.update_layout(height=380, margin={"l": 10, "r": 10, "t": 20, "b": 10})
    st.plotly_chart(chain, key="act_chain")
    st.caption("A line that stops has hit exactly 0: the path went through a ReLU that was off. This chain is a single "
               "path; in a wide layer other units are on, which is what the measurement below shows.")

    st.markdown("**Measured in a real network**: a 64-unit-wide MLP of the chosen depth on random data, one "
                "backward pass with autograd; the gradient norm of each layer's weights, first layer on the left.")
    init = st.radio("Initialisation", ["matched", "default"], horizontal=True, key="act_init", format_func={
        "matched": "matched to the activation (He for ReLU-likes, Glorot gain for sigmoid/tanh)",
        "default": "PyTorch's nn.Linear default"}.get)
    with st.spinner("Backpropagating…"):
        norms = _gradient_norms(tuple(chain_names), depth, init == "matched", (alpha, elu_alpha, beta))
    mlp = go.Figure()
    for name, values in norms.items():
        mlp.add_trace(go.Scatter(x=np.arange(1, depth + 1), y=values, mode="lines+markers", name=name,
                                 line={"color": COLOURS[A.NAMES.index(name)]}))
    mlp.update_yaxes(type="log", title="‖∂L/∂W_l‖", exponentformat="power")
    mlp.update_xaxes(title="layer l")
    mlp.update_layout(height=380, margin={"l": 10, "r": 10, "t": 20, "b": 10})
    st.plotly_chart(mlp, key="act_mlp")
    ratios = {name: values[0] / values[-1] for name, values in norms.items()}
    st.markdown("First-layer gradient ÷ last-layer gradient: " + ", ".join(
        f"**{name}** {ratio:.1e}" for name, ratio in ratios.items()) + ". Values far below 1 mean the early layers "
        "barely learn. With PyTorch's default initialisation every activation's gradients shrink: weight scale "
        "matters as much as the activation.")


def main() -> None:
    """The page: header, curves, softmax, vanishing gradients, footer."""
    page_header(
        "Activation functions",
        "Backpropagation multiplies one derivative per layer. Where an activation's slope is near zero "
        "(**saturation**, shaded) almost no gradient gets through, and a product of many slopes below 1 shrinks "
        "exponentially with depth: the vanishing-gradient problem that ReLU's slope of exactly 1 eased.",
    )
    chosen, params = _curves()
    _softmax()
    _vanishing_gradients(chosen, params)
    page_footer()


if __name__ == "__main__":
    main()
