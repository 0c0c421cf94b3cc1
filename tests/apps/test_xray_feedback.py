"""What the X-ray page says back, in-process (issue 15): Explain pressed while a job runs is answered (queued or
busy), Stop says what it stopped, a corrupt checkpoint is explained beside the checkpoint panel, only the chosen
segmenter's settings are shown, the prediction card's out-of-distribution banner, and the readable disclaimer strip
and colour bar under every map."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from apps.xray import views
from apps.xray.controls import condition, method_controls
from apps.xray.limits import Limits
from apps.xray.models import zoo_status
from apps.xray.ui import JOB_STALE_SECONDS, Jobs, XrayUI
from apps.xray.uploads import UploadJanitor
from core.explain import METHODS
from core.trust import Assessment
from tests.helpers import corrupt_checkpoint

STYLE = ("viridis", "RdBu_r", 0.5)


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> XrayUI:
    page = XrayUI(zoo_status(), UploadJanitor(tmp_path_factory.mktemp("uploads")), None, [], Limits(1, 1))
    page.build()
    return page


def visitor(name: str = "s1") -> SimpleNamespace:
    return SimpleNamespace(session_hash=name)  # what handlers read of gr.Request


# ---------------------------------------------------------------- busy, queued, stopped


def test_jobs_tell_requests_from_running_work_and_forget_stale_ones(monkeypatch):
    jobs = Jobs()
    jobs.add("a", "request", "LIME")
    jobs.add("a", "work", "the trust checks")
    jobs.add("b", "work", "SmoothGrad")
    assert jobs.labels("a", "request") == ["LIME"] and jobs.labels("a") == ["LIME", "the trust checks"]
    jobs.remove("a", "request", "LIME")
    jobs.remove("a", "request", "LIME")  # already gone (Stop cleared it): nothing happens
    assert jobs.labels("a") == ["the trust checks"]
    assert jobs.clear("b") == ["SmoothGrad"] and jobs.labels("b") == []
    with jobs.running("c", "Occlusion"):
        assert jobs.labels("c", "work") == ["Occlusion"]
    assert jobs.labels("c") == []
    import apps.xray.ui as ui_module

    clock = [1000.0]
    monkeypatch.setattr(ui_module.time, "monotonic", lambda: clock[0])
    jobs.add("d", "request", "LIME")  # e.g. refused by a full queue: its handler never ran
    clock[0] += JOB_STALE_SECONDS + 1
    assert jobs.labels("d") == []


def test_explain_while_busy_is_answered_and_stop_says_what_it_stopped(ui, session):
    assert ui.on_request(visitor(), None, "lime") == {ui.queue_note: ""}  # no image: on_explain says so
    assert ui.on_request(visitor(), session, "lime") == {ui.queue_note: ""}  # nothing else running: starts now
    busy = ui.on_request(visitor(), session, "smoothgrad")[ui.queue_note]  # Gradio drops this click
    assert busy.startswith("**Busy:**") and "LIME is still being computed" in busy
    stopped = ui.on_stop(visitor(), session, *STYLE)
    assert stopped[ui.work] == "Stopped: LIME. The maps already on the board are kept."
    assert ui.on_stop(visitor(), session, *STYLE)[ui.work] == "Nothing was running."

    ui.jobs.add("s1", "work", "the trust checks")  # the upload's trust checks hold the heavy queue
    queued = ui.on_request(visitor(), session, "lime")[ui.queue_note]
    assert queued == "**Queued:** LIME starts after the trust checks (**Stop** cancels all)."
    assert ui.on_request(visitor("s2"), session, "lime") == {ui.queue_note: ""}  # another visitor is not waiting
    assert ui.jobs.clear("s1") == ["the trust checks", "LIME"]
    ui.jobs.clear("s2")


def test_stop_marks_unfinished_trust_checks_as_stopped(ui, session):
    from apps.xray import analysis

    session.panels = []
    session.add(analysis.run_method(session, "grad_cam", {}))  # on the board, trust checks not run
    text = ui.on_stop(visitor(), session, *STYLE)[ui.slots[0].text]
    assert "Trust checks stopped" in text and "running" not in text
    assert "running" in ui._board(session, views.Style())[ui.slots[0].text]  # while they run


def test_explain_releases_its_request_whatever_happens(ui):
    ui.on_request(visitor("s3"), object(), "grad_cam")
    result = ui.on_explain(visitor("s3"), None, "grad_cam", "predicted class", "", 0, False, 8, *STYLE,
                           *(w.value for w in ui.controls.components()))
    assert "Upload an X-ray" in result[ui.work] and result[ui.queue_note] == ""
    assert ui.jobs.labels("s3") == []


# ---------------------------------------------------------------- checkpoint problems


def test_a_corrupt_checkpoint_is_explained_beside_the_checkpoint_panel(ui, tmp_path):
    weights = tmp_path / "broken.pt"
    corrupt_checkpoint(weights)
    with pytest.raises(IndexError):  # what the issue saw surface as "Something went wrong (IndexError)"
        torch.load(weights, weights_only=True)
    result = ui.on_checkpoint(str(weights), "resnet18", "NORMAL, PNEUMONIA", 224, None, *STYLE)
    note = result[ui.ckpt_note]
    assert note.startswith("⚠️ **Problem:**") and "corrupt or truncated" in note and "IndexError" in note
    assert ui.status not in result and ui.model not in result  # the image's status and the model stay as they were
    assert "Choose a weights file first" in ui.on_checkpoint(None, "resnet18", "A, B", 224, None, *STYLE)[
        ui.ckpt_note]
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "The weights file is empty" in ui.on_checkpoint(str(empty), "resnet18", "A, B", 224, None, *STYLE)[
        ui.ckpt_note]


# ---------------------------------------------------------------- only the controls that apply


def test_segmenter_settings_depend_on_the_chosen_segmenter():
    params = METHODS["lime"].params
    by_name = {p.name: p for p in params}
    assert condition(by_name["n_segments"], params) == ("segmenter", "slic")
    assert condition(by_name["kernel_size"], params) == ("segmenter", "quickshift")
    assert condition(by_name["min_size"], params) == ("segmenter", "felzenszwalb")
    assert condition(by_name["n_samples"], params) is None and condition(by_name["segmenter"], params) is None
    with gr.Blocks():
        controls = method_controls(METHODS, "lime")
    for method in ("lime", "kernel_shap"):
        assert controls.widget(method, "n_segments").visible and controls.widget(method, "compactness").visible
        for hidden in ("kernel_size", "max_dist", "scale", "min_size"):
            assert not controls.widget(method, hidden).visible, (method, hidden)
        assert controls.widget(method, "hide").visible and controls.widget(method, "n_samples").visible
    assert controls.conditions[("lime", "scale")] == ("segmenter", "felzenszwalb")


# ---------------------------------------------------------------- what is drawn


def assessment(in_distribution: bool | None) -> Assessment:
    return Assessment({"NORMAL": 0.05, "PNEUMONIA": 0.95}, "PNEUMONIA", "PNEUMONIA", 0.95, 0.26, ("PNEUMONIA",),
                      in_distribution, 5.66 if in_distribution is False else 0.6,
                      "its features are 5.7x as far from the training X-rays as the gate allows"
                      if in_distribution is False else None, True, 0.9)


def test_prediction_card_puts_a_banner_before_a_greyed_unreliable_class():
    card = views.prediction_card(assessment(False))
    assert "pred-card-ood" in card and "role='alert'" in card and views.OOD_TITLE in card
    assert card.index("pred-ood") < card.index("pred-class") < card.index("unreliable")
    assert "pred-doubt" in card and "pred-flagged" in card and "⛔" not in card  # no emoji a headless font lacks
    usual = views.prediction_card(assessment(True))
    assert "pred-ood" not in usual and "unreliable" not in usual and "PNEUMONIA only, at the 90% level" in usual
    assert views.prediction_card(None).count("Prediction") == 1


def test_disclaimer_strip_and_colour_bar_stay_readable():
    picture = np.zeros((267, 320, 3), np.uint8)
    framed = views.with_disclaimer(views.with_colour_bar(picture, 0.0, 0.17, cmap="viridis", label="importance"))
    assert framed.shape == (267 + views.STRIP_HEIGHT, 320 + views.BAR_WIDTH, 3)
    strip = framed[-views.STRIP_HEIGHT:]
    ink = np.argwhere((strip.astype(int) - strip[0, 0].astype(int)).any(axis=2))
    assert ink[:, 0].max() - ink[:, 0].min() >= 8  # letters at least 8 px tall (they were 6 px)
    assert ink[:, 1].min() > 0 and ink[:, 1].max() < framed.shape[1] - 1  # and the whole sentence fits
    bar = views.colour_bar(0.0, 0.17, signed=False, cmap="viridis", label="importance", height=267)
    assert bar.shape == (267, views.BAR_WIDTH, 3)


def test_unavailable_models_in_one_line_without_server_paths():
    reason = ("needs torchvision's ImageNet weights (resnet18-f37072fd.pth), which are not in the torch hub cache "
              "(/root/.cache/torch/hub/checkpoints); this app never downloads, so fetch them once.")
    text = views.unavailable_models({"resnet18-imagenet": reason})
    assert text == ("- **resnet18-imagenet** is unavailable: needs torchvision's ImageNet weights "
                    "(resnet18-f37072fd.pth), which are not in the torch hub cache.")
    assert views.unavailable_models({}) == ""


def test_trust_table_is_one_row_per_check(session):
    from apps.xray import analysis

    panel = analysis.run_method(session, "grad_cam", {})
    panel.quality = analysis.assess(session, panel)
    text = views.panel_text(panel)
    assert "| check | this map | random order |" in text
    for row in ("| deletion AUC ↓ |", "| insertion AUC ↑ |", "| sanity median \\|ρ\\| (→0) |"):
        assert row in text
    assert "Trust checks stopped" in views.panel_text(analysis.run_method(session, "grad_cam", {}), running=False)


@pytest.fixture(scope="module")
def session():
    from apps.xray import analysis
    from core.io import LoadedImage

    ramp = np.tile(np.linspace(0.1, 0.9, 192, dtype=np.float32), (160, 1))
    image = LoadedImage(ramp, {"format": "PNG", "size": "192 x 160", "bit_depth": "8", "channels": "1"})
    return analysis.open_session(image, "ramp.png", "cxr-resnet18", uploaded=False)


def test_strip_font_shrinks_to_fit_a_narrow_map():
    narrow = views.with_disclaimer(np.zeros((300, 200, 3), np.uint8))
    strip = Image.fromarray(narrow[-views.STRIP_HEIGHT:])
    background = strip.getpixel((0, 0))
    ink = [x for x in range(strip.width) for y in range(strip.height) if strip.getpixel((x, y)) != background]
    assert ink and min(ink) > 0 and max(ink) < strip.width - 1  # a portrait map's strip still holds the sentence
