"""The receptive-field page: AppTest turns its knobs and checks what it shows against independent numbers
(Araujo et al.'s VGG-16 table, hand arithmetic, autograd-based ERFs); Chromium loads it, picks a unit by
clicking a dot, and saves screenshots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core import zoo
from core.data import CLASS_NAMES, data_dir, index_folder
from core.io import load_image
from core.lessons import receptive_field as rf
from core.lessons.conv import sample_image
from core.zoo import get_spec, load_model, preprocess
from tests.helpers import chart, first_run, plotly_array, run

SIZE = get_spec(zoo.BUNDLED).preprocessing.size  # the bundled model's input side, the page's default


def fresh() -> AppTest:
    return first_run("receptive_field", timeout=300)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def erf_maps(at: AppTest) -> list[np.ndarray]:
    """The effective receptive fields the ERF chart draws (the heatmaps carrying the raw map as customdata)."""
    return [plotly_array(t["customdata"], np.float64) for t in chart(at, "rf_erf_chart")["data"]
            if t.get("customdata") is not None]


def open_tab(at: AppTest, label: str) -> AppTest:
    at.session_state["rf_tab"] = label
    return run(at)


def set_unit(at: AppTest, arch: str, size: int, node: str, unit: tuple[int, int]) -> None:
    key = f"rf_unit_{arch}_{size}_{node}"
    at.number_input(key=f"{key}_row").set_value(unit[0])
    at.number_input(key=f"{key}_col").set_value(unit[1])


@pytest.fixture(scope="module")
def page() -> AppTest:
    return fresh()


# ------------------------------------------------------------------------------------------ architectures


def test_defaults_show_the_bundled_model(page):
    shown = metrics(page)
    # ResNet-18 topology by hand: 7 + 2*2 (pool) + 4 convs*2*4 + (2*4 + 3*2*8) + (2*8 + 3*2*16) + (2*16 + 3*2*32)
    assert shown["Receptive field"] == f"{7 + 4 + 32 + 56 + 112 + 224} px" == "435 px"
    grid = SIZE // 32
    assert shown["Jump (effective stride)"] == "32 px" and shown["Output grid"] == f"{grid} × {grid}"
    # a central unit's 435 px field (e.g. unit (2, 2): -153..281) holds the whole SIZE px image
    assert shown["Field in the padding"] == f"{1 - SIZE ** 2 / 435 ** 2:.0%}"
    table = page.dataframe[0].value
    assert table["node"].iloc[-1] == "layer4.1.add" and table["RF size"].iloc[-1] == 435
    assert (table["shortest path RF"] <= table["RF size"]).all()
    assert any("paths disagree" in note for note in table["note"])


def test_vgg16_shows_araujo_values_and_the_unit_box():
    at = fresh()
    at.selectbox(key="rf_arch").set_value("vgg16")
    run(at)
    shown = metrics(at)
    assert shown["Receptive field"] == "212 px" and shown["Jump (effective stride)"] == "32 px"
    assert shown["Output grid"] == "7 × 7"
    table = at.dataframe[0].value.set_index("node")
    assert table.loc["features.23", ["RF size", "jump", "effective padding"]].tolist() == [100, 16, 42]  # pool4
    set_unit(at, "vgg16", 224, "features.30", (3, 1))
    run(at)
    open_tab(at, "Unit on the image")
    rects = [s for s in chart(at, "rf_unit_vgg16_224_features.30_click")["layout"]["shapes"]
             if s["type"] == "rect"]
    # unit (3, 1): rows -90 + 3*32 = 6 .. 217, cols -90 + 32 = -58 .. 153 (dashed), clipped at column 0 (solid)
    assert (rects[0]["y0"], rects[0]["y1"], rects[0]["x0"], rects[0]["x1"]) == (5.5, 217.5, -58.5, 153.5)
    assert (rects[1]["x0"], rects[1]["x1"]) == (-0.5, 153.5)
    assert metrics(at)["Field in the padding"] == f"{58 / 212:.0%}"


def test_widgets_change_the_outputs():
    at = fresh()
    before = metrics(at)
    at.select_slider(key="rf_size_cxr-resnet18").set_value(320)
    run(at)
    assert metrics(at)["Output grid"] == "10 × 10" and metrics(at)["Receptive field"] == before["Receptive field"]
    at.selectbox(key="rf_node_cxr-resnet18").set_value("layer2.0.conv1")
    run(at)
    assert metrics(at)["Receptive field"] == "51 px" and metrics(at)["Jump (effective stride)"] == "8 px"
    padding_centre = metrics(at)["Field in the padding"]
    set_unit(at, "cxr-resnet18", 320, "layer2.0.conv1", (0, 0))
    run(at)
    assert padding_centre == "0%" and metrics(at)["Field in the padding"] != "0%"


# ------------------------------------------------------------------------------------------ stacks


def stack_page() -> AppTest:
    at = fresh()
    at.radio(key="rf_mode").set_value("build a stack")
    return run(at)


def test_stack_presets_and_edits(monkeypatch):
    at = stack_page()
    assert metrics(at)["Receptive field"] == "16 px"  # small CNN: 3, 5, 6, 10, 14, 16
    at.selectbox(key="rf_preset").set_value("strided: four conv 3×3 /2")
    run(at)
    assert metrics(at)["Receptive field"] == "31 px" and metrics(at)["Jump (effective stride)"] == "16 px"
    at.session_state["rf_stack_strided: four conv 3×3 /2"] = {
        "edited_rows": {3: {"dilation": 3}}, "added_rows": [], "deleted_rows": []}
    run(at)
    assert metrics(at)["Receptive field"] == f"{15 + (3 * 2 + 1 - 1) * 8} px"  # last layer's k' = 7 at jump 8
    open_tab(at, "1-D view and dilation")
    spec = chart(at, "rf_stack_1d")
    xs = [x for trace in spec["data"] for x in plotly_array(trace["x"], np.float64)]
    assert max(xs) - min(xs) == 15 + 6 * 8 - 1  # the input row spans the field


def test_stack_erf_stays_in_the_field_and_has_no_trained_twin():
    at = open_tab(stack_page(), "Effective receptive field")
    table = at.dataframe[-1].value  # the ERF table (the stack editor is a data frame too)
    assert table["weights"].tolist() == ["random weights"]
    assert table["mass inside the field"].tolist() == ["100.0000%"]
    assert any("no trained weights" in i.value for i in at.info)
    (erf,) = erf_maps(at)
    rows, cols = np.nonzero(erf)
    # small CNN, 96 px, centre unit (12, 12) of the last pool: field 16 px from 12 * 4 - 6 = 42 to 57
    assert rows.min() >= 42 and rows.max() <= 57 and cols.min() >= 42 and cols.max() <= 57


def test_bad_stacks_show_errors_and_the_app_keeps_serving():
    at = stack_page()
    at.session_state["rf_stack_small CNN: (conv 3×3 ×2, max-pool 2×2) ×2"] = {
        "edited_rows": {2: {"padding": 2}}, "added_rows": [], "deleted_rows": []}
    run(at)
    assert at.error and "Layer 3" in at.error[0].value and "at most half" in at.error[0].value
    at.session_state["rf_stack_small CNN: (conv 3×3 ×2, max-pool 2×2) ×2"] = {
        "edited_rows": {}, "added_rows": [], "deleted_rows": []}
    at.number_input(key="rf_stack_size").set_value(8)
    at.selectbox(key="rf_preset").set_value("AlexNet front end")
    run(at)
    assert at.error and "smaller than the kernel span" in at.error[0].value


def test_dilation_demo_counts_paths():
    at = open_tab(stack_page(), "1-D view and dilation")
    growth = chart(at, "rf_growth")
    assert [plotly_array(t["y"], np.float64).tolist() for t in growth["data"]] == [[3, 5, 7, 9], [5, 9, 13, 17],
                                                                                  [3, 7, 15, 31]]
    at.radio(key="rf_dil_schedule").set_value("constant")
    run(at)
    demo = chart(at, "rf_dilation_1d")["data"]
    input_holes = plotly_array(demo[0]["x"], np.float64)  # trace 0: input positions no path reaches
    assert len(input_holes) > 0 and all(x % 2 == 1 for x in input_holes)  # gridding: odd pixels never count


# ------------------------------------------------------------------------------------------ effective RF


def test_erf_of_random_and_trained_weights(page):
    at = open_tab(page, "Effective receptive field")
    table = at.dataframe[-1].value
    assert table["weights"].tolist() == ["random weights", "trained weights"]
    assert (table["mass inside the field"] == "100.0000%").all()
    heat = erf_maps(at)
    assert len(heat) == 2
    centre = SIZE // 32 // 2  # the page's default unit: the middle of the grid
    box = rf.unit_field(rf.analyse_module(zoo.build_architecture(zoo.BUNDLED), SIZE), "layer4.1.add", (centre, centre))
    for erf, radius in zip(heat, table.iloc[:, 1], strict=True):
        assert erf.shape == (SIZE, SIZE) and erf.sum() == pytest.approx(1.0)
        assert radius == round(rf.mass_radius(erf, box.centre, 0.9), 1)
    at.slider(key="rf_erf_fraction").set_value(0.5)
    run(at)
    smaller = at.dataframe[-1].value.iloc[:, 1]
    assert (smaller < table.iloc[:, 1]).all()


def test_erf_map_equals_autograd_through_a_forward_hook():
    """One input, a conv node: the trained map the page draws equals |d unit / d input| computed here via a hook."""
    at = fresh()
    root = data_dir()
    if root:
        at.selectbox(key="rf_xray_class").set_value(CLASS_NAMES[0])  # NORMAL X-ray #1: index_folder's first
    at.selectbox(key="rf_node_cxr-resnet18").set_value("layer3.0.conv2")
    run(at)
    open_tab(at, "Effective receptive field")
    at.slider(key="rf_erf_inputs").set_value(1)
    run(at)
    shown = erf_maps(at)[1]  # trained weights

    image = load_image(index_folder(root, CLASS_NAMES).paths[0]).array if root else sample_image("camera")
    model = load_model(zoo.BUNDLED, torch.device("cpu")).model
    x = preprocess(image, get_spec(zoo.BUNDLED).preprocessing).requires_grad_(True)
    captured = {}
    hook = model.layer3[0].conv2.register_forward_hook(lambda m, a, out: captured.setdefault("out", out))
    try:
        model(x)
    finally:
        hook.remove()
    out = captured["out"]
    (grad,) = torch.autograd.grad(out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum(), x)
    expected = grad[0].abs().sum(0).double().numpy()
    np.testing.assert_allclose(shown, expected / expected.sum(), rtol=1e-4, atol=1e-9)


def test_erf_says_why_imagenet_weights_are_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    at = fresh()
    at.selectbox(key="rf_arch").set_value("alexnet")
    run(at)
    at.select_slider(key="rf_size_alexnet").set_value(96)
    open_tab(at, "Effective receptive field")
    assert any("never downloads" in i.value for i in at.info)
    assert at.dataframe[-1].value["weights"].tolist() == ["random weights"]


# ------------------------------------------------------------------------------------------ browser


@pytest.mark.browser
def test_page_in_chromium_and_click_to_pick_a_unit(browser, streamlit_url, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(streamlit_url)  # enter through the navigation: direct page URLs bypass st.navigation
        page.get_by_role("link", name="Receptive field").first.click(timeout=120_000)
        page.wait_for_selector("text=Mendeley Data", timeout=180_000)
        page.wait_for_selector("[data-testid='stDataFrame']", timeout=120_000)
        assert page.locator("h1").first.inner_text() == "Receptive field"
        assert page.locator("[data-testid='stException']").count() == 0
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        page.set_viewport_size({"width": 1400, "height": min(height + 50, 6000)})  # Streamlit scrolls inside
        page.wait_for_timeout(1500)
        page.screenshot(path=str(artifacts / "lesson_receptive_field.png"), full_page=True)

        page.get_by_role("tab", name="Unit on the image").click()
        dots = page.locator(".js-plotly-plot .scatterlayer .trace").first.locator("path.point")
        dots.first.wait_for(timeout=120_000)
        assert dots.count() == (SIZE // 32) ** 2  # one dot per unit of layer4.1.add
        values = ("() => [...document.querySelectorAll('input[type=number][aria-label^=\"Unit \"]')]"
                  ".map(e => e.value)")
        middle = str(SIZE // 32 // 2)
        assert page.evaluate(values) == [middle, middle]  # unit row and column: the centre unit before the click
        dots.first.click(force=True)  # the top-left dot: unit (0, 0)
        page.wait_for_function(f"() => ({values})().join() === '0,0'", timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(artifacts / "lesson_receptive_field_unit.png"), full_page=True)

        page.get_by_role("tab", name="Effective receptive field").click()
        page.wait_for_selector("text=Heat: mean", timeout=240_000)  # the caption under the computed maps
        page.wait_for_timeout(2000)
        page.screenshot(path=str(artifacts / "lesson_receptive_field_erf.png"), full_page=True)
        assert page.locator("[data-testid='stException']").count() == 0
    finally:
        page.close()
