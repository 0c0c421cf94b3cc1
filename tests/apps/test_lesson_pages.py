"""The convolution, pooling and activation pages: run headless with AppTest, turn their knobs, check the numbers
they show against torch, and load each in Chromium for a screenshot."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.lessons import activations as A
from core.lessons import conv, pooling
from tests.conftest import wait_for_plots
from tests.helpers import chart, first_run, heatmap, plotly_array, run


def run_page(name):
    at = first_run(name, timeout=180)
    assert not at.error, [e.value for e in at.error]
    return at


def code_text(at):
    return [c.value for c in at.code]


def edit_state(values: dict[int, dict[str, float]]):
    """The data-editor state a browser sends after cell edits (row -> {column: value})."""
    return {"edited_rows": values, "added_rows": [], "deleted_rows": []}


# ------------------------------------------------------------------------------------------- convolution
@pytest.fixture(scope="module")
def conv_page():
    return run_page("convolution")


def test_convolution_defaults_match_torch(conv_page):
    at = conv_page
    latex = [x.value for x in at.latex]
    assert any(r"\left\lfloor \frac{128 + 2\cdot 1 - 1\cdot(3-1) - 1}{1}" in x for x in latex)  # same padding, 3x3
    assert any("torch's conv2d produced exactly this shape" in m.value for m in at.markdown)
    out = heatmap(at, "conv_out_fig", 0)
    image = conv.to_gray(conv.sample_image("camera"), 128)
    ref = F.conv2d(torch.tensor(image)[None, None], torch.tensor(conv.kernel_preset("Sobel x"))[None, None],
                   padding=1)[0, 0].numpy()
    np.testing.assert_allclose(plotly_array(chart(at, "conv_out_fig")["data"][0]["customdata"]), ref, atol=1e-9)
    assert out.min() >= 0 and out.max() <= 1  # displayed rescaled
    # the step-through cell shown equals conv2d on the same small grid
    grid = conv.small_grid(7, 0)
    small = F.conv2d(torch.tensor(grid)[None, None], torch.tensor(conv.kernel_preset("Sobel x"))[None, None],
                     padding=1)[0, 0].numpy()
    assert code_text(at)[0].startswith("out[0, 0] = ") and code_text(at)[0].endswith(f"= {conv.fmt(small[0, 0])}")
    # the cs231n cell equals conv2d with stride 2, padding 1 and biases
    ex = conv.cs231n_example(0)
    ref_mc = F.conv2d(torch.tensor(ex.x)[None], torch.tensor(ex.weights), torch.tensor(ex.biases), stride=2,
                      padding=1)[0].numpy()
    assert code_text(at)[1].endswith(f"= {conv.fmt(ref_mc[0, 0, 0])}")
    np.testing.assert_array_equal(heatmap(at, "conv_mc_fig", 3), ref_mc[0])


def test_convolution_knobs_change_outputs():
    at = run_page("convolution")
    before_out = plotly_array(chart(at, "conv_out_fig")["data"][0]["customdata"])
    at.slider(key="conv_stride").set_value(2)
    at.radio(key="conv_padding").set_value("valid")
    run(at)
    assert any("= 63" in x.value for x in at.latex)  # floor((128 - 2 - 1)/2) + 1
    assert plotly_array(chart(at, "conv_out_fig")["data"][0]["customdata"]).shape == (63, 63)
    assert any("**63 × 63**" in m.value for m in at.markdown)

    at.selectbox(key="conv_preset").set_value("Gaussian")
    run(at)
    gauss = plotly_array(chart(at, "conv_out_fig")["data"][0]["customdata"])
    assert gauss.min() >= 0 > before_out.min()  # a blur of a non-negative image stays non-negative; Sobel does not

    # edit one kernel weight as a browser would, and the output follows
    at.session_state["conv_kernel_Gaussian_3"] = edit_state({1: {"1": 1.25}})
    run(at)
    kernel = conv.kernel_preset("Gaussian")
    kernel[1, 1] = 1.25
    edited = plotly_array(chart(at, "conv_out_fig")["data"][0]["customdata"])
    image = conv.to_gray(conv.sample_image("camera"), 128)
    ref = F.conv2d(torch.tensor(image)[None, None], torch.tensor(kernel)[None, None], stride=2)[0, 0].numpy()
    np.testing.assert_allclose(edited, ref, atol=1e-9)
    assert "1.25" in code_text(at)[0]

    at.slider(key="conv_step").set_value(5)
    run(at)
    assert code_text(at)[0].startswith("out[1, 1] = ")  # 3x3 output (7x7 grid, valid, stride 2): cell 5 is (1, 1)
    at.slider(key="conv_mc_step").set_value(18)
    run(at)
    assert "o[2, 2, 1]" in code_text(at)[1]


def test_convolution_bad_settings_and_uploads_show_errors():
    at = run_page("convolution")
    at.radio(key="conv_padding").set_value("custom")
    run(at)  # enables the p input
    at.number_input(key="conv_custom_p").set_value(9)
    at.selectbox(key="conv_fill").set_value("reflect")
    run(at)
    assert at.error and "Reflect padding must be smaller" in at.error[0].value  # 7x7 step-through grid
    assert len(cost_tables(at)) == 2 and at.get("plotly_chart")  # the other sections still render
    at.radio(key="conv_source").set_value("upload")
    run(at)
    at.file_uploader(key="conv_upload").set_value(("notes.txt", b"just some text", "text/plain"))
    run(at)
    assert any("text file, not an image" in e.value for e in at.error)
    png = io.BytesIO()
    Image.fromarray((np.indices((40, 48)).sum(0) % 2 * 255).astype(np.uint8)).save(png, format="PNG")
    at.file_uploader(key="conv_upload").set_value(("checks.png", png.getvalue(), "image/png"))
    at.radio(key="conv_padding").set_value("same")
    run(at)
    assert not at.error
    assert plotly_array(chart(at, "conv_out_fig")["data"][0]["customdata"]).shape == (40, 48)


def cost_tables(at):
    return [d.value for d in at.dataframe if "parameters" in d.value.columns]


def test_costs_table_follows_inputs(conv_page):
    at = conv_page
    tables = cost_tables(at)
    std, sep = tables[0].iloc[0], tables[0].iloc[1]
    assert std["parameters"] == f"{3 * 3 * 32 * 64 + 64:,}" and sep["parameters"] == f"{9 * 32 + 32 * 64 + 96:,}"
    assert tables[1].iloc[1]["parameters"] == f"{2 * (9 * 64 * 64 + 64):,}"
    at.number_input(key="conv_cout").set_value(128)
    run(at)
    assert cost_tables(at)[0].iloc[0]["parameters"] == f"{3 * 3 * 32 * 128 + 128:,}"


@pytest.mark.data
def test_convolution_on_a_chest_xray():
    from core.data import data_dir

    assert data_dir() is not None, "set CNNLENS_DATA or deselect with -m 'not data'"
    at = run_page("convolution")
    at.radio(key="conv_source").set_value("chest X-ray")
    run(at)
    at.number_input(key="conv_xray_index").set_value(3)
    run(at)
    assert not at.error
    assert max(plotly_array(chart(at, "conv_in_fig")["data"][0]["z"]).shape) == 128
    assert "X-ray #3" in chart(at, "conv_in_fig")["layout"]["title"]["text"]


# ------------------------------------------------------------------------------------------------ pooling
def test_pooling_forward_backward_match_torch():
    at = run_page("pooling")
    x = torch.tensor(pooling.DEFAULT_GRID)[None, None].requires_grad_()
    y = F.max_pool2d(x, 3, 1)
    upstream = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(1, 1, 3, 3)
    (y * upstream).sum().backward()
    np.testing.assert_array_equal(heatmap(at, "pool_fwd_fig", 2), y[0, 0].detach().numpy())
    assert "dx[1, 0] += 1" in code_text(at)[0]
    at.slider(key="pool_step").set_value(9)
    run(at)
    np.testing.assert_array_equal(heatmap(at, "pool_bwd_fig", 2), x.grad[0, 0].numpy())
    assert at.success and "equals PyTorch autograd" in at.success[0].value

    at.radio(key="pool_mode").set_value("avg")
    run(at)
    x.grad = None
    y = F.avg_pool2d(x, 3, 1)
    (y * upstream).sum().backward()
    np.testing.assert_allclose(heatmap(at, "pool_fwd_fig", 1), y[0, 0].detach().numpy(), atol=1e-12)
    at.slider(key="pool_step").set_value(9)
    run(at)
    np.testing.assert_allclose(heatmap(at, "pool_bwd_fig", 2), x.grad[0, 0].numpy(), atol=1e-12)


def test_pooling_edits_window_stride_and_ties():
    at = run_page("pooling")
    at.session_state["pool_grid_the 5×5 example"] = edit_state({0: {"0": 50}})
    run(at)
    assert heatmap(at, "pool_fwd_fig", 2)[0, 0] == 50
    at.slider(key="pool_k").set_value(2)
    at.slider(key="pool_stride").set_value(2)
    run(at)
    assert heatmap(at, "pool_fwd_fig", 2).shape == (2, 2)
    assert any("windows do not overlap" in m.value for m in at.markdown)
    at.selectbox(key="pool_preset").set_value("ties")
    run(at)
    ties = [m.value for m in at.markdown if m.value.startswith("Windows with a tie")]
    assert ties and "(0, 0) max 5 at (0, 1), (1, 0) → gradient to (0, 1)" in ties[0]
    at.session_state["pool_up_2x2"] = edit_state({0: {"0": 7}})
    run(at)
    assert "upstream 7" in code_text(at)[0]


def test_strided_conv_walkthrough_matches_autograd():
    at = run_page("pooling")
    for n, k, s in [(5, 3, 2), (8, 3, 3)]:
        at.slider(key="sc_n").set_value(n)
        at.slider(key="sc_k").set_value(k)
        at.slider(key="sc_s").set_value(s)
        run(at)
        xs, ws, gs = pooling.strided_example(n, k, s, 0)
        xt = torch.tensor(xs)[None, None].requires_grad_()
        wt = torch.tensor(ws)[None, None].requires_grad_()
        (F.conv2d(xt, wt, stride=s) * torch.tensor(gs)).sum().backward()
        np.testing.assert_allclose(heatmap(at, "sc_bwd_fig", 3), xt.grad[0, 0].numpy(), atol=1e-12)
        np.testing.assert_allclose(heatmap(at, "sc_fd_fig", 0), wt.grad[0, 0].numpy(), atol=1e-12)
        np.testing.assert_allclose(heatmap(at, "sc_fd_fig", 1), xt.grad[0, 0].numpy(), atol=1e-6)
        errors = {m.label: float(m.value) for m in at.metric}
        assert all(v < 1e-6 for v in errors.values()) and len(errors) == 3
    at.slider(key="sc_cell").set_value(n * n)
    run(at)
    assert code_text(at)[-1].startswith(f"∂L/∂x[{n - 1}, {n - 1}] = ")


# -------------------------------------------------------------------------------------------- activations
def test_activation_page_curves_saturation_softmax_and_depth():
    at = run_page("activations")
    curves = chart(at, "act_curves")
    assert len(curves["data"]) == 8  # f and f' for the 4 default activations
    sat = A.saturation_intervals(A.activation("sigmoid"), -6, 6, 0.05)
    tanh = A.saturation_intervals(A.activation("tanh"), -6, 6, 0.05)
    relu = A.saturation_intervals(A.activation("ReLU"), -6, 6, 0.05)
    gelu = A.saturation_intervals(A.activation("GELU"), -6, 6, 0.05)
    assert len(curves["layout"]["shapes"]) == len(sat) + len(tanh) + len(relu) + len(gelu)
    x = plotly_array(curves["data"][1]["x"])
    xt = torch.tensor(x, requires_grad=True)
    torch.sigmoid(xt).sum().backward()
    np.testing.assert_allclose(plotly_array(curves["data"][1]["y"]), xt.grad.numpy(), atol=1e-12)

    at.multiselect(key="act_names").set_value(["ELU", "softplus", "SiLU / swish"])
    at.select_slider(key="act_thr").set_value(0.2)
    run(at)
    curves = chart(at, "act_curves")
    assert [a["text"] for a in curves["layout"]["annotations"]] == ["ELU", "softplus", "SiLU / swish"]
    assert len(curves["layout"]["shapes"]) == sum(
        len(A.saturation_intervals(A.activation(n), -6, 6, 0.2)) for n in ["ELU", "softplus", "SiLU / swish"])

    probs = plotly_array(chart(at, "act_softmax")["data"][0]["y"])
    np.testing.assert_allclose(probs, torch.softmax(torch.tensor([2.0, 1.0, 0.1, -1.0], dtype=torch.float64), 0),
                               atol=1e-12)
    entropy = at.metric[0].value
    at.select_slider(key="act_T").set_value(5.0)
    run(at)
    hot = plotly_array(chart(at, "act_softmax")["data"][0]["y"])
    np.testing.assert_allclose(hot, torch.softmax(torch.tensor([2.0, 1.0, 0.1, -1.0], dtype=torch.float64) / 5, 0),
                               atol=1e-12)
    assert at.metric[0].value != entropy
    at.text_input(key="act_logits").set_value("1, two, 3")
    run(at)
    assert at.error and "'two' is not a number" in at.error[0].value

    assert len(plotly_array(chart(at, "act_chain")["data"][0]["x"])) == 20
    at.slider(key="act_depth").set_value(8)
    at.radio(key="act_init").set_value("default")
    run(at)
    assert len(plotly_array(chart(at, "act_chain")["data"][0]["x"])) == 8
    norms = plotly_array(chart(at, "act_mlp")["data"][0]["y"])
    np.testing.assert_allclose(norms, A.layer_gradient_norms(A.activation("ELU"), 8, gain=None), rtol=1e-6)


# ---------------------------------------------------------------------------------------------- browser
@pytest.mark.browser
@pytest.mark.parametrize(("path", "title", "text"), [
    ("convolution", "Convolution playground", "Step through one cell"),
    ("pooling", "Max-pool backprop", "Backward pass of a strided convolution"),
    ("activations", "Activation functions", "Why deep sigmoid networks stopped learning"),
])
def test_page_renders_in_chromium(browser, streamlit_url, artifacts, path, title, text):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(streamlit_url)  # enter through the app's navigation first (see report on direct page URLs)
        page.wait_for_selector("h1", timeout=120_000)
        page.goto(f"{streamlit_url}/{path}")
        page.wait_for_selector("text=Mendeley Data", timeout=180_000)  # the footer: the page ran to the end
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                               timeout=120_000)
        assert page.locator("h1").first.inner_text() == title
        assert page.get_by_text(text).count() >= 1
        assert page.locator("[data-testid='stException']").count() == 0
        wait_for_plots(page, 3)
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        page.set_viewport_size({"width": 1400, "height": min(height + 50, 16_000)})  # Streamlit scrolls inside
        page.wait_for_timeout(2000)
        page.screenshot(path=str(artifacts / f"lesson_{path}.png"), full_page=True)
    finally:
        page.close()


# ------------------------------------------------------------------------------------------ one page style
STYLED_PAGES = ["home", "convolution", "pooling", "activations", "receptive_field", "feature_maps", "activation_max",
                "embeddings"]


@pytest.mark.parametrize("name", STYLED_PAGES)
def test_page_is_sections_and_a_main_that_runs_only_as_a_script(name):
    """Top level: imports, definitions, constants and ``if __name__ == "__main__": main()``; no Streamlit call."""
    import ast
    import runpy

    from tests.helpers import PAGES

    tree = ast.parse((PAGES / f"{name}.py").read_text())
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
    *body, guard = [node for node in tree.body if not isinstance(node, ast.Expr | ast.Constant)
                    or not isinstance(getattr(node, "value", None), ast.Constant)]  # the docstring aside
    assert all(isinstance(node, allowed) for node in body), [ast.dump(n)[:80] for n in body
                                                              if not isinstance(n, allowed)]
    for node in body:
        if isinstance(node, ast.Assign | ast.AnnAssign):  # constants only: no st.* or page work at import
            calls = [c for c in ast.walk(node) if isinstance(c, ast.Call)]
            assert not any(ast.unparse(c.func).startswith("st.") for c in calls), ast.unparse(node)
    assert ast.unparse(guard) == "if __name__ == '__main__':\n    main()"
    module = runpy.run_path(str(PAGES / f"{name}.py"), run_name="imported")  # importable: nothing runs
    assert callable(module["main"])


def test_home_shows_the_disclaimer_in_a_box_and_links_every_lesson():
    from streamlit.testing.v1 import AppTest

    from apps.catalogue import LESSONS
    from core.zoo import DISCLAIMER
    from tests.helpers import ROOT

    at = run(AppTest.from_file(str(ROOT / "apps" / "streamlit_app.py"), default_timeout=120))
    assert [w.value for w in at.warning] == [f"**{DISCLAIMER}**"]  # bold, in a box: not a small grey caption
    assert not any(c.value.startswith(":warning:") for c in at.caption)
    assert len(at.get("page_link")) == len(LESSONS)
