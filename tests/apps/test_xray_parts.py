"""The X-ray app's pieces in-process: uploads janitor, model choice and user checkpoints, controls, session board,
trust figures, stability and the report."""

from __future__ import annotations

import io

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision import models as tvm

from apps.xray import analysis, views
from apps.xray.controls import control, method_controls
from apps.xray.examples import Example, dicom_examples
from apps.xray.models import USER_PREFIX, get_model, load_user_checkpoint, parse_class_names, zoo_status
from apps.xray.report import build_figure, delete_reports, write_report
from apps.xray.session import MAX_PANELS, Panel
from apps.xray.uploads import UploadError, UploadJanitor
from core.explain import METHODS, explain, guide, quality
from core.explain.augment import explain_augmented
from core.explain.base import Param
from core.io import LoadedImage, load_image
from core.zoo import DISCLAIMER, ModelUnavailable, load_model, predict
from tests.helpers import film_where_card_and_argmax_differ

RAMP = np.tile(np.linspace(0.1, 0.9, 192, dtype=np.float32), (160, 1))  # a 192 x 160 grey test image


@pytest.fixture(scope="module")
def session():
    image = LoadedImage(RAMP + 0.05 * np.random.default_rng(0).random(RAMP.shape).astype(np.float32),
                        {"format": "PNG", "size": "192 x 160", "bit_depth": "8", "channels": "1"})
    return analysis.open_session(image, "ramp.png", "cxr-resnet18", uploaded=False)


# ---------------------------------------------------------------- uploads


def test_janitor_reads_then_deletes_uploads_after_the_grace_period_only(tmp_path):
    root = tmp_path / "gradio"
    upload = root / "abc123" / "xray.png"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"pixels")
    outside = tmp_path / "mine.png"
    outside.write_bytes(b"keep me")
    janitor = UploadJanitor(root, grace=30)
    assert janitor.take(upload) == b"pixels" and janitor.take(outside) == b"keep me"
    assert janitor.sweep() == 0 and upload.exists()  # still within its grace period
    assert janitor.pending() == 1  # the file outside Gradio's folder is never scheduled
    assert janitor.flush() == 1
    assert not upload.exists() and not upload.parent.exists() and outside.exists()
    with pytest.raises(UploadError, match="no longer on the server"):
        janitor.take(upload)


def test_janitor_rearms_the_grace_period_on_every_use(tmp_path):
    upload = tmp_path / "h" / "x.png"
    upload.parent.mkdir()
    upload.write_bytes(b"1")
    janitor = UploadJanitor(tmp_path, grace=10)
    janitor.take(upload)
    janitor._due[upload.resolve()] = 0.0  # its first grace period is over...
    janitor.take(upload)  # ...but another request uses the same (content-addressed) upload
    assert janitor.sweep() == 0 and upload.exists()


def test_janitor_spares_a_file_uploaded_again_after_it_was_scheduled(tmp_path):
    upload = tmp_path / "h" / "x.png"
    upload.parent.mkdir()
    upload.write_bytes(b"first visitor")
    janitor = UploadJanitor(tmp_path, grace=10)
    janitor.take(upload)
    again = tmp_path / "h" / ".incoming"
    again.write_bytes(b"first visitor")
    again.replace(upload)  # Gradio renames a second, identical upload into the same place
    assert janitor.sweep(now=float("inf")) == 0 and upload.exists()  # its own request has not read it yet
    assert janitor.pending() == 1  # re-armed: deleted a grace period later unless used again
    assert janitor.sweep(now=float("inf")) == 1 and not upload.exists()


# ---------------------------------------------------------------- models


def test_zoo_status_lists_uncached_imagenet_models_with_a_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    status = zoo_status()
    assert "cxr-resnet18" in status.available
    assert set(status.unavailable) == {"resnet18-imagenet", "densenet121-imagenet"}
    assert all("torch hub cache" in reason for reason in status.unavailable.values())


def test_class_names_are_parsed_and_checked():
    assert parse_class_names("NORMAL, PNEUMONIA\nCOVID") == ("NORMAL", "PNEUMONIA", "COVID")
    with pytest.raises(ValueError, match="at least two"):
        parse_class_names("ONLY")
    with pytest.raises(ValueError, match="distinct"):
        parse_class_names("A, A")


def test_user_torchvision_checkpoint_loads_predicts_like_the_original_and_suggests_a_layer(tmp_path):
    torch.manual_seed(0)
    original = tvm.resnet18(weights=None, num_classes=3).eval()
    path = tmp_path / "mine.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}}, path)
    key, loaded, layer = load_user_checkpoint(path, "resnet18", "A, B, C", 64)
    assert key.startswith(USER_PREFIX) and get_model(key) is loaded
    assert layer == "layer4.1.relu"  # the last module with a spatial output
    assert loaded.spec.class_names == ("A", "B", "C") and loaded.spec.preprocessing.size == 64
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = torch.softmax(original(x), 1)
    assert torch.allclose(predict(loaded, x), expected, atol=1e-6)


def test_user_checkpoint_errors_are_specific(tmp_path):
    state = tvm.resnet18(weights=None, num_classes=2).state_dict()
    path = tmp_path / "two.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ModelUnavailable, match="do not fit this architecture"):
        load_user_checkpoint(path, "resnet18", "A, B, C")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match="not a readable PyTorch or safetensors checkpoint"):
        load_user_checkpoint(garbage, "resnet18", "A, B")
    with pytest.raises(ValueError, match="Unknown architecture"):
        load_user_checkpoint(path, "vit_b_16", "A, B")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_user_checkpoint(empty, "resnet18", "A, B")


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Boom()}, path)
    with pytest.raises(ValueError, match="refused because loading them could run code"):
        load_user_checkpoint(path, "resnet18", "A, B")


# ---------------------------------------------------------------- controls


@pytest.mark.parametrize(("param", "kind"), [
    (Param("n", "N", "int", 10, 1, 100, 1), gr.Slider),
    (Param("f", "F", "float", 0.5, 0.0, 1.0), gr.Slider),
    (Param("u", "U", "float", 0.5), gr.Number),
    (Param("c", "C", "choice", "a", choices=("a", "b")), gr.Dropdown),
    (Param("b", "B", "bool", True), gr.Checkbox),
])
def test_each_parameter_kind_gets_a_widget(param, kind):
    with gr.Blocks():
        widget = control(param)
    assert isinstance(widget, kind) and widget.value == param.default


def test_float_slider_steps_land_on_the_default():
    with gr.Blocks():
        widget = control(Param("compactness", "C", "float", 10.0, 0.01, 100.0))
    steps = (10.0 - 0.01) / widget.step
    assert abs(steps - round(steps)) < 1e-6


def test_method_controls_cover_every_registered_parameter_and_pick_the_chosen_methods_values():
    with gr.Blocks():
        controls = method_controls(METHODS, "grad_cam")
    assert set(controls.groups) == set(METHODS)
    assert [(m, p) for m, p, _ in controls.widgets] == [(m, p.name) for m, info in METHODS.items()
                                                         for p in info.params]
    values = tuple(w.value for _, _, w in controls.widgets)
    assert controls.build_overrides("lime", values) == METHODS["lime"].defaults()
    assert controls.build_overrides("grad_cam", values) == {}


def test_sliders_are_narrowed_to_the_work_budget_and_say_so():
    from apps.xray.limits import Limits

    bounds = Limits(1, 1).slider_bounds((192, 192))
    with gr.Blocks():
        controls = method_controls(METHODS, "lime", bounds)
    lime = controls.widget("lime", "n_samples")
    low, high = bounds[("lime", "n_samples")]
    step = METHODS["lime"].params[0].step
    assert high - step < lime.maximum <= high < METHODS["lime"].params[0].high and lime.minimum == low
    assert (lime.maximum - lime.minimum) % step == 0  # a value the slider can reach
    assert "work budget allows" in lime.info and lime.value <= high
    stride = controls.widget("occlusion", "stride")
    assert stride.minimum == bounds[("occlusion", "stride")][0] > 1


# ---------------------------------------------------------------- analysis


def test_session_prediction_matches_the_model(session):
    loaded = load_model("cxr-resnet18")
    from core.zoo import preprocess

    expected = predict(loaded, preprocess(session.image, loaded.spec.preprocessing))[0]
    assert list(session.probabilities.values()) == pytest.approx(expected.tolist(), abs=1e-6)
    view = analysis.model_view(session)
    side = loaded.spec.preprocessing.size  # the bundled model's input size (160 px, then 192 px)
    assert view.shape == (side, side) and view.min() >= 0 and view.max() <= 1


def test_board_replaces_same_settings_and_keeps_the_four_newest(session):
    board = analysis.open_session(session.image, "x", "cxr-resnet18", uploaded=False)
    first = analysis.run_method(board, "grad_cam", {})
    board.add(first)
    board.add(analysis.run_method(board, "grad_cam", {}))
    assert len(board.panels) == 1
    for method in ("saliency", "grad_cam_pp", "layer_cam", "cam"):
        board.add(analysis.run_method(board, method, {}))
    assert len(board.panels) == MAX_PANELS
    assert [p.explanation.method for p in board.panels] == ["saliency", "grad_cam_pp", "layer_cam", "cam"]


def test_run_method_settings_errors_name_the_problem(session):
    with pytest.raises(ValueError, match="Unknown method"):
        analysis.run_method(session, "magic", {})
    with pytest.raises(ValueError, match="no layer 'layer9'"):
        analysis.run_method(session, "grad_cam", {}, layer="layer9")
    with pytest.raises(ValueError, match="out of range"):
        analysis.run_method(session, "grad_cam", {}, target=5)


def test_trust_figures_match_core_quality(session, monkeypatch):
    panel = analysis.run_method(session, "grad_cam", {}, target="NORMAL", layer="layer3")
    assert panel.explanation.target == 0 and panel.explanation.params["layer"] == "layer3"
    calls = []
    real = quality.explain
    monkeypatch.setattr(quality, "explain", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    figures = analysis.assess(session, panel)
    monkeypatch.undo()
    assert isinstance(figures, quality.Trust)
    assert len(calls) == analysis.SANITY_COPIES  # the map on the board is reused, not recomputed
    loaded = load_model("cxr-resnet18")
    e = panel.explanation
    # the fills bench/faithfulness.py chose (quality.DELETION_BASELINE, INSERTION_BASELINE; test_quality pins them), so
    # the readings can quote Grad-CAM's record there
    expected = quality.deletion(loaded, session.x, e.heatmap, 0, steps=analysis.CURVE_STEPS,
                                baseline=quality.DELETION_BASELINE)
    assert figures.deletion.auc == pytest.approx(expected.auc, abs=1e-6)
    inserted = quality.insertion(loaded, session.x, e.heatmap, 0, steps=analysis.CURVE_STEPS,
                                 baseline=quality.INSERTION_BASELINE)
    assert figures.insertion.auc == pytest.approx(inserted.auc, abs=1e-6)
    assert all(f"{quality.MEASURED_IMAGES} new-patient films" in r for r in figures.readings[:2])
    rhos = []
    for seed in range(analysis.SANITY_COPIES):
        random_net, layers = quality.randomised_copy(loaded.model, seed=seed)
        redo = explain(random_net, session.x, "grad_cam", 0, layer="layer3")[0]
        rhos.append(quality.sanity_rho(e.heatmap, redo.heatmap))
    assert figures.sanity.correlations == pytest.approx(rhos, abs=1e-6)
    assert figures.sanity.median == pytest.approx(np.median(np.abs(rhos)), abs=1e-6)
    assert figures.sanity.layers == layers and figures.sanity.trained is e
    assert 0 in session.references  # the random-map reference is computed once per target
    assert figures.reference is session.references[0] and figures.reference.target == 0
    assert figures.reference.grid == analysis.REFERENCE_GRID and figures.reference.seeds == analysis.REFERENCE_SEEDS
    panel.quality = figures
    text = views.panel_text(panel)
    assert f"| {figures.sanity.median:.2f} (IQR " in text and "median \\|ρ\\|" in text and "nan" not in text
    assert f"median |ρ| = {figures.sanity.median:.2f}" in text  # the reading repeats the number in the table
    q = analysis.trust_summary(figures)
    assert q["sanity_spearman"] == figures.sanity.median and q["sanity_verdict"] == figures.sanity.verdict
    assert q["sanity_correlations"] == list(figures.sanity.correlations) and len(q["readings"]) == 3
    assert q["deletion_auc_random"] == figures.reference.deletion.auc


def test_stability_summarises_seeds_and_refuses_deterministic_methods(session):
    panel = analysis.run_method(session, "smoothgrad", {"n_samples": 4}, seed=3)
    result = analysis.stability(session, panel)
    maps = [explain(load_model("cxr-resnet18"), session.x, "smoothgrad", panel.explanation.target, seed=s,
                    n_samples=4, noise=panel.explanation.params["noise"])[0].heatmap for s in result.seeds]
    assert np.allclose(result.mean, np.mean(maps, 0), atol=1e-6)
    assert np.allclose(result.spread, np.std(maps, 0), atol=1e-6)
    assert "seeds" in result.summary["reading"]
    with pytest.raises(ValueError, match="deterministic"):
        analysis.stability(session, analysis.run_method(session, "grad_cam", {}))


def test_summary_is_plain_json(session):
    import json

    panel = analysis.run_method(session, "occlusion", {"patch": 40, "stride": 40})
    e, fractions = panel.explanation, np.linspace(0, 1, 3)
    curve = quality.Curve("deletion", fractions, np.zeros(3), float("nan"))
    reference = quality.Reference(curve, quality.Curve("insertion", fractions, np.ones(3), 1.0), e.target, (0,), 4,
                                  "blur")
    sanity = quality.SanityCheck((0.1, -0.2, 0.3), (0.1, 0.2, 0.3), ("fc",), (0, 1, 2), e, (e, e, e))
    panel.quality = quality.Trust(curve, reference.insertion, reference, sanity)
    summary = analysis.summary(session, panel)
    text = json.dumps(summary, allow_nan=False)
    assert '"deletion_auc": null' in text and '"sanity_spearman": 0.2' in text
    # the explained class as index and name; its softmax score told apart from the card's calibrated probability
    names = load_model("cxr-resnet18").spec.class_names
    assert names[summary["target"]] == summary["target_name"] and "softmax" in summary["score_is"]
    assert summary["prediction"]["label"] == session.assessment.label
    assert summary["prediction"]["probability"] == pytest.approx(session.assessment.probability)


@pytest.mark.data
def test_predicted_class_is_the_class_on_the_card_not_the_arg_max():
    """A new-patient film on which the card (calibrated probability against the operating threshold) and the softmax
    arg-max name different classes: the map must explain the card's."""
    film = load_image(film_where_card_and_argmax_differ())
    between = analysis.open_session(film, "x", "cxr-resnet18", uploaded=False)
    names = load_model("cxr-resnet18").spec.class_names
    argmax = max(between.probabilities, key=between.probabilities.get)
    assert between.assessment.label != argmax  # the case this test is about
    panel = analysis.run_method(between, "grad_cam", {})
    assert panel.explanation.target_name == between.assessment.label
    assert panel.explanation.target == names.index(between.assessment.label) == analysis.predicted_index(between)
    assert analysis.summary(between, panel)["target_name"] == between.assessment.label


def test_test_time_augmentation_averages_copies_and_is_checked_as_the_plain_map(session):
    plain = analysis.run_method(session, "grad_cam", {})
    tta = analysis.run_method(session, "grad_cam", {}, augmentations=3)
    expected = explain_augmented(load_model("cxr-resnet18"), session.x, "grad_cam", plain.explanation.target,
                                 augmentations=3)[0]
    peak = np.abs(expected.heatmap).max()
    np.testing.assert_allclose(tta.explanation.heatmap, expected.heatmap, rtol=1e-5, atol=1e-6 * peak)
    assert not np.allclose(tta.explanation.heatmap, plain.explanation.heatmap, atol=1e-3 * peak)
    assert "TTA ×3" in tta.title and tta.key != plain.key
    assert tta.explanation.extras["augment"]["augmentations"] == 3
    figures = analysis.assess(session, tta)  # curves of the averaged map, sanity check of the method's own map
    assert np.array_equal(figures.sanity.trained.heatmap, tta.explanation.extras["unaugmented"])
    loaded = load_model("cxr-resnet18")
    curve = quality.deletion(loaded, session.x, tta.explanation.heatmap, tta.explanation.target,
                             steps=analysis.CURVE_STEPS)
    assert figures.deletion.auc == pytest.approx(curve.auc, abs=1e-6)
    for bad in (0, analysis.MAX_AUGMENTATIONS + 1):
        with pytest.raises(ValueError, match="Test-time augmentation"):
            analysis.run_method(session, "grad_cam", {}, augmentations=bad)
    stochastic = analysis.run_method(session, "smoothgrad", {"n_samples": 2}, augmentations=2)
    with pytest.raises(ValueError, match="without test-time augmentation"):
        analysis.stability(session, stochastic)


def test_the_method_guide_covers_every_method_with_its_measured_record():
    assert set(guide.QUESTIONS) == set(METHODS)  # a new method cannot reach the picker without a question
    text = views.method_guide()
    rows = [line for line in text.splitlines() if line.startswith("| **")]
    assert len(rows) == len(METHODS)
    for name, info in METHODS.items():
        row = next(r for r in rows if r.startswith(f"| **{info.label}** |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == guide.QUESTIONS[name]
        figures = quality.FAITHFULNESS[name]
        assert cells[3:6] == [f"{figures[k][0]:.0%}" for k in ("deletion", "insertion", "road")]
        sanity = quality.SANITY.get(name)
        assert cells[6] == ("n/a" if sanity is None else f"{sanity:.2f}")
    assert f"{quality.MEASURED_IMAGES} new-patient films" in text and quality.MEASURED_MODEL in text
    assert guide.cost("occlusion", {"patch": 40, "stride": 40}, 200) == "26 forwards"  # 5 x 5 patches + prediction
    assert guide.cost("smoothgrad", {"n_samples": 7}, 200) == "7 forwards + backwards"
    lrp = views.method_description(METHODS["lrp"])
    share = f"{quality.FAITHFULNESS['lrp']['deletion'][0]:.0%}"
    assert guide.QUESTIONS["lrp"] in lrp and f"beats random maps on {share}" in lrp and "Cost:" in lrp


@pytest.mark.data
def test_dicom_examples_are_de_identified_twins_of_a_training_image(tmp_path):
    import pydicom

    from core.data import data_dir

    folder = data_dir()
    assert folder is not None, "the chest X-ray folder is missing (set CNNLENS_DATA)"
    path = sorted((folder / "PNEUMONIA").iterdir())[0]
    source = Example(path, f"PNEUMONIA · {path.name}", np.zeros((4, 4)))
    mono2, mono1 = dicom_examples(source, tmp_path)
    assert (mono2.short, mono1.short) == ("DICOM", "DICOM, inverted")
    assert path.name in mono2.label and "MONOCHROME1" in mono1.label
    raw2, raw1 = (pydicom.dcmread(e.path) for e in (mono2, mono1))
    assert (raw2.PhotometricInterpretation, raw1.PhotometricInterpretation) == ("MONOCHROME2", "MONOCHROME1")
    assert np.array_equal(raw1.pixel_array, 4095 - raw2.pixel_array)  # the same film, stored inverted
    assert raw2.PatientName == "" and raw2.PatientID == "" and raw2.PatientIdentityRemoved == "YES"
    assert path.name in raw2.ImageComments and "CC BY 4.0" in raw2.ImageComments
    assert "PatientBirthDate" not in raw2 and "StudyDate" not in raw2
    a2, a1, jpeg = (load_image(p).array for p in (mono2.path, mono1.path, path))
    jpeg = jpeg if jpeg.ndim == 2 else jpeg.mean(axis=2)
    assert load_image(mono2.path).metadata["format"] == "DICOM"
    np.testing.assert_allclose(a1, a2, atol=1e-6)
    assert np.corrcoef(a2.ravel(), jpeg.ravel())[0, 1] > 0.999
    s2, s1 = (analysis.open_session(load_image(e.path), e.label, "cxr-resnet18", uploaded=False)
              for e in (mono2, mono1))
    assert s2.assessment.label == s1.assessment.label
    assert s2.assessment.probability == pytest.approx(s1.assessment.probability, abs=1e-5)
    before = mono2.path.stat().st_mtime_ns
    assert [e.path for e in dicom_examples(source, tmp_path)] == [mono2.path, mono1.path]
    assert mono2.path.stat().st_mtime_ns == before  # written once, reused


def test_dicom_metadata_shown_is_the_safe_subset():
    from core.io import load_image
    from tests.core.corpus import dicom_bytes

    image = load_image(dicom_bytes((np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)))
    text = views.metadata(image)
    assert "modality: CR" in text and "view: PA" in text and "bit depth: 12" in text
    assert "Doe" not in text and "SECRET" not in text


@pytest.mark.data
def test_similar_cases_find_an_indexed_image_first(monkeypatch, tmp_path):
    from apps.xray.similar import SimilarCases
    from core.data import data_dir
    from core.io import load_image

    source = data_dir()
    assert source is not None, "set CNNLENS_DATA or deselect with -m 'not data'"
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for path in sorted((source / label).iterdir())[:3]:
            (tmp_path / "data" / label / path.name).symlink_to(path)
    monkeypatch.setenv("CNNLENS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path / "cache"))
    similar = SimilarCases("cxr-resnet18")
    assert similar.query(RAMP) == []  # not started: nothing, and no error
    similar.start()
    assert similar.wait(timeout=300)
    assert "Nearest of 6 training X-rays" in similar.status()
    query = sorted((tmp_path / "data" / "PNEUMONIA").iterdir())[1]
    found = similar.query(load_image(query).array, k=4)
    assert len(found) == 4 and found[0].item == f"PNEUMONIA/{query.name}" and found[0].label == "PNEUMONIA"
    assert found[0].distance < 1e-5 and [n.distance for n in found] == sorted(n.distance for n in found)
    assert found[0].thumbnail.dtype == np.uint8 and max(found[0].thumbnail.shape[:2]) == 128


# ---------------------------------------------------------------- pictures and report


def test_overlay_keeps_the_uploads_aspect_and_adds_a_colour_bar(session):
    panel = analysis.run_method(session, "grad_cam", {})
    picture = views.overlay(session, panel.explanation, views.Style())
    assert picture.dtype == np.uint8 and picture.shape[0] == 267 + 16  # 192 x 160 at 320 wide, disclaimer strip
    assert picture.shape[1] > 320  # image plus colour bar
    signed = analysis.run_method(session, "occlusion", {"patch": 40, "stride": 40})
    with pytest.raises(ValueError, match="not offered for signed"):
        views.overlay(session, signed.explanation, views.Style("viridis", "viridis", 0.5))


@pytest.mark.parametrize("fmt", ["png", "pdf"])
def test_report_holds_the_disclaimer_and_is_a_valid_file(session, fmt):
    session.panels = [Panel("k", "Grad-CAM", analysis.run_method(session, "grad_cam", {}).explanation)]
    session.panels[0].quality = analysis.assess(session, session.panels[0])
    path = write_report(session, fmt, views.Style())
    data = path.read_bytes()
    if fmt == "png":
        assert Image.open(io.BytesIO(data)).size[0] > 800
    else:
        assert data.startswith(b"%PDF")
    figure = build_figure(session, views.Style())
    texts = " ".join(t.get_text() for t in figure.texts) + " ".join(
        t.get_text() for ax in figure.axes for t in ax.texts)
    assert DISCLAIMER in texts and "Kermany" in texts and "cxr-resnet18" in texts and "deletion AUC" in texts
    assert "ramp.png" in texts  # a data-folder or example name is kept; an upload's is not (test_privacy)
    delete_reports()  # what the app does at shutdown
    assert not path.exists()


def test_malloc_arenas_are_capped_where_glibc_allows_it():
    import platform

    from apps.xray.limits import cap_malloc_arenas

    assert cap_malloc_arenas() is (platform.libc_ver()[0] == "glibc")
