"""The transfer, distillation and architecture pages: run headless with AppTest, turn their main controls, check the
numbers they show against scikit-learn, torch and torchvision, and load each in Chromium for a screenshot."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score
from torch.utils.flop_counter import FlopCounterMode
from torchvision import models as tvm

from core.lessons import architectures as A
from core.lessons import distillation as D
from core.lessons import transfer as T
from tests.conftest import wait_for_plots
from tests.helpers import PAGES, chart, plotly_array, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def page(name: str, state: dict | None = None, timeout: float = 600):
    """A page after its first run, with widget values set beforehand (so the defaults' heavy work never runs)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=timeout)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    run(at)
    assert not at.error, [e.value for e in at.error]
    return at


def traces(at, key: str) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(legend name, y axis) -> (x, y) of every line of the curve figure. Axes run along the first row (AUC, one
    per evaluation set), then the second (accuracy): with one set y is AUC and y2 accuracy."""
    return {(t["name"], t.get("yaxis", "y")): (plotly_array(t["x"]), plotly_array(t["y"]))
            for t in chart(at, key)["data"]}


def frame(at, column: str):
    """The one table with this column."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, f"{len(found)} tables with a column {column!r}"
    return found[0]


def _by_hand(task: T.Task, px: int, kinds: list[str], classifier: str, sizes: list[int]) -> tuple[list, list]:
    """AUC and accuracy of a classifier fitted with scikit-learn directly on the first n pool images."""
    x = T.handcrafted_features(task.pool.head(max(sizes)), px, kinds)
    held = next(iter(task.evals.values()))
    xt = T.handcrafted_features(held, px, kinds)
    aucs, accs = [], []
    for n in sizes:
        model = T.make_classifier(classifier).fit(x[:n], task.pool.labels[:n])
        proba = model.predict_proba(xt)
        aucs.append(roc_auc_score(held.labels, proba, multi_class="ovr", labels=model.classes_))
        accs.append(accuracy_score(held.labels, model.classes_[proba.argmax(1)]))
    return aucs, accs


# ------------------------------------------------------------------------------------------------ transfer
def test_transfer_page_on_digits_follows_its_controls(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path))
    task = T.digits_task()
    at = page("transfer", {"tr_data": "scikit-learn digits", "tr_sizes": [20, 50], "tr_epochs": 1,
                           "tr_approaches": ["a", "b", "d"]})
    lines = traces(at, "tr_curves")
    names = {name for name, _ in lines}
    assert names == {"(a) hand-crafted + logistic regression", "(a) hand-crafted + random forest",
                     "(b) embeddings + logistic regression", "(b) embeddings + random forest", "(d) from scratch"}
    aucs, accs = _by_hand(task, 64, list(T.HANDCRAFTED), "logistic regression", [20, 50])
    x, y = lines[("(a) hand-crafted + logistic regression", "y")]
    np.testing.assert_array_equal(x, [20, 50])
    np.testing.assert_allclose(y, aucs, rtol=1e-6)
    np.testing.assert_allclose(lines[("(a) hand-crafted + logistic regression", "y2")][1], accs, rtol=1e-6)
    points = frame(at, "scored on")
    row = points[(points["approach"] == "(a) hand-crafted + logistic regression") & (points["training images"] == 50)]
    assert row["ROC AUC"].item() == pytest.approx(aucs[1]) and row["scored on"].item() == "held-out half"
    timing = frame(at, "features (s)")
    assert list(timing["approach"]) == ["(a) hand-crafted features", "(b) embeddings of digits-cnn",
                                        "(d) from scratch"]
    assert (timing["training over all sizes (s)"] > 0).all()

    # other features, size and classifier: the curve follows
    at.select_slider(key="tr_px").set_value(32)
    at.multiselect(key="tr_kinds").set_value(["HOG"])
    at.multiselect(key="tr_clf").set_value(["random forest"])
    at.multiselect(key="tr_approaches").set_value(["a", "c"])
    run(at)
    lines = traces(at, "tr_curves")
    assert {name for name, _ in lines} == {"(a) hand-crafted + random forest", "(c) fine-tuned"}
    aucs, _ = _by_hand(task, 32, ["HOG"], "random forest", [20, 50])
    np.testing.assert_allclose(lines[("(a) hand-crafted + random forest", "y")][1], aucs, rtol=1e-6)
    assert all(0 <= v <= 1 for v in lines[("(c) fine-tuned", "y")][1])


def test_transfer_page_refuses_bad_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path))
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PAGES / "transfer.py"), default_timeout=300)
    at.session_state["tr_data"] = "scikit-learn digits"
    at.session_state["tr_sizes"] = []
    run(at)
    assert [e.value for e in at.error] == ["Choose at least one training-set size."]
    assert not at.get("plotly_chart")


@pytest.mark.data
def test_transfer_page_on_chest_xrays(tmp_path, monkeypatch):
    from core.zoo import get_spec

    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path))
    at = page("transfer", {"tr_sizes": [20, 50], "tr_val": 100, "tr_approaches": ["a"], "tr_px": 32,
                           "tr_clf": ["logistic regression"]})
    captions = " ".join(c.value for c in at.caption)
    assert "validation fold, 100 images" in captions and "external (new patients), 269 images" in captions
    task = T.chest_task(get_spec("cxr-resnet18").training_split, 192, 50, 100)
    lines = traces(at, "tr_curves")
    x = T.handcrafted_features(task.pool, 32)
    for axis, (name, held) in zip(("y", "y2"), task.evals.items(), strict=True):
        xt = T.handcrafted_features(held, 32)
        expected = [roc_auc_score(held.labels, T.make_classifier("logistic regression").fit(
            x[:n], task.pool.labels[:n]).predict_proba(xt)[:, 1]) for n in (20, 50)]
        np.testing.assert_allclose(lines[("(a) hand-crafted + logistic regression", axis)][1], expected,
                                   rtol=1e-6, err_msg=name)


# -------------------------------------------------------------------------------------------- distillation
@pytest.mark.data
def test_distillation_page_scores_and_temperature(tmp_path, monkeypatch, bundled):
    from core.data import CLASS_NAMES, external_dir, index_folder
    from core.io import load_image
    from core.zoo import predict, preprocess

    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path))
    at = page("distillation", {"di_films": 200, "di_epochs": 1, "di_size": 32, "di_width": 4})
    table = frame(at, "images/s").set_index("model")
    teacher = table.loc["teacher (cxr-resnet18)"]
    assert teacher["parameters"] == sum(p.numel() for p in bundled.model.parameters())
    assert table.loc["student, hard labels", "parameters"] == sum(p.numel() for p in D.TinyCNN(4).parameters())
    # the teacher's AUC on new patients, from the files through the zoo's own preprocessing
    ext = index_folder(external_dir(), CLASS_NAMES)
    x = torch.cat([preprocess(load_image(p), bundled.spec.preprocessing) for p in ext.paths])
    p = predict(bundled, x)[:, 1].cpu().numpy()
    assert teacher["AUC, new patients"] == pytest.approx(roc_auc_score(ext.labels, p), abs=0.005)
    assert teacher["accuracy, new patients"] == pytest.approx(accuracy_score(ext.labels, p >= 0.5),
                                                                        abs=0.01)
    hard_before = table.loc["student, hard labels"].drop(["images/s", "training (s)"])

    at.slider(key="di_T").set_value(2.0)
    at.slider(key="di_alpha").set_value(1.0)
    run(at)
    table = frame(at, "images/s").set_index("model")
    assert "student, distilled (T = 2, alpha = 1)" in table.index
    assert table.loc["student, hard labels"].drop(["images/s", "training (s)"]).equals(hard_before)  # T plays no part
    soft = chart(at, "di_soft")["data"]
    assert soft[1]["name"] == "T = 2"


# ------------------------------------------------------------------------------------------- architectures
def test_architectures_page_counts_and_calculator():
    at = page("architectures", {"ar_size": 128, "ar_speed_names": ["alexnet"], "ar_speed_size": 64})
    table = frame(at, "receptive field (px)").set_index("architecture")
    for name in ("resnet18", "googlenet", "mobilenet_v2"):
        meta = tvm.get_model_weights(name).DEFAULT.meta
        assert table.loc[name, "parameters (M)"] * 1e6 == pytest.approx(meta["num_params"], abs=0.5)
        assert table.loc[name, "top-1 %"] == meta["_metrics"]["ImageNet-1K"]["acc@1"]
        assert table.loc[name, "input (px)"] == 128
    with FlopCounterMode(display=False) as counter:
        tvm.resnet18(weights=None).eval()(torch.zeros(1, 3, 128, 128))
    assert table.loc["resnet18", "multiply-adds (G)"] * 1e9 == pytest.approx(counter.get_total_flops() / 2, abs=1)
    speed = frame(at, "images/s")
    assert list(speed["architecture"]) == ["alexnet"] and speed["images/s"].iloc[0] > 0

    at.number_input(key="ar_c").set_value(32)
    at.number_input(key="ar_hw").set_value(14)
    at.select_slider(key="ar_k").set_value(3)
    run(at)
    costs = frame(at, "formula")
    assert (costs["parameters"] == costs["torch: parameters"]).all()
    assert (costs["multiply-adds"] == costs["torch: multiply-adds"]).all()
    five = costs[costs["block"] == "standard 5x5"].iloc[0]
    assert five["multiply-adds"] == 5 * 5 * 32 * 32 * 14 * 14
    saved = costs["multiply-adds saved"].dropna().to_numpy()
    np.testing.assert_allclose(saved[:2], [0.28, 1 / 3])
    assert A.depthwise_separable(32, 32, 3, 14).saving == pytest.approx(saved[3])


# ------------------------------------------------------------------------------------------------ browser
@pytest.mark.browser
@pytest.mark.parametrize(("path", "title", "text", "plots"), [
    ("architectures", "Architectures", "Cost calculator", 1),
    ("distillation", "Distillation", "Teacher and the two students", 2),
    ("transfer", "Hand-crafted vs learned features", "Time per approach", 1),
])
def test_page_renders_in_chromium(browser, streamlit_url, artifacts, path, title, text, plots):
    page_ = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page_.goto(streamlit_url)
        page_.wait_for_selector("h1", timeout=120_000)
        page_.goto(f"{streamlit_url}/{path}")
        page_.wait_for_selector("text=Mendeley Data", timeout=600_000)  # the footer: the page ran to the end
        page_.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                timeout=300_000)
        assert page_.locator("h1").first.inner_text() == title
        assert page_.get_by_text(text).count() >= 1
        assert page_.locator("[data-testid='stException']").count() == 0
        wait_for_plots(page_, plots)
        height = page_.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        page_.set_viewport_size({"width": 1400, "height": min(height + 50, 16_000)})
        page_.wait_for_timeout(2000)
        page_.screenshot(path=str(artifacts / f"lesson_{path}.png"), full_page=True)
    finally:
        page_.close()


def test_pages_keep_serving_without_the_bundled_weights(tmp_path, monkeypatch):
    from core import zoo

    monkeypatch.setattr(zoo, "BUNDLED_WEIGHTS", tmp_path / "missing.safetensors")
    arch = page("architectures", {"ar_speed_names": ["alexnet"], "ar_speed_size": 64})
    assert any("cxr-resnet18** is left out" in c.value and "missing" in c.value for c in arch.caption)
    assert "cxr-resnet18" not in set(frame(arch, "receptive field (px)")["architecture"])
    for name, state, advice in (("distillation", {"di_films": 400}, "needs the chest X-ray folder and the bundled"),
                                ("transfer", {"tr_sizes": [20], "tr_val": 100}, "Choose the digits instead")):
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=300)
        for key, value in state.items():
            at.session_state[key] = value
        run(at)
        assert len(at.error) == 1 and "missing.safetensors is missing" in at.error[0].value, name
        assert advice in at.error[0].value
