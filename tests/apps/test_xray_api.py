"""The X-ray app's /predict and /explain through gradio_client against a live server, on real X-rays.

Expected numbers are computed in this process with core (model, explainers, quality, render), so the test
checks that the app runs the right model, method, target and settings and sends their results unchanged.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.explain import METHODS, explain, quality
from core.io import load_image
from core.zoo import DISCLAIMER, load_model, predict, preprocess
from tests.core.corpus import broken_files
from tests.helpers import cpu_during, cpu_settled

pytestmark = pytest.mark.data
COST_PARAMS = ("n_samples", "steps")  # parameters that set a method's cost: run them at their lower bound


def _handle(path: Path):
    from gradio_client import handle_file

    return handle_file(str(path))


def _call(client, *args, api_name: str):
    return client.predict(*args, api_name=api_name)


def _expected_probs(path: Path) -> dict[str, float]:
    loaded = load_model("cxr-resnet18")
    probs = predict(loaded, preprocess(load_image(path), loaded.spec.preprocessing))[0]
    return dict(zip(loaded.spec.class_names, probs.tolist(), strict=True))


def _fast_params(method: str) -> dict[str, object]:
    return {p.name: int(p.low) for p in METHODS[method].params if p.name in COST_PARAMS and p.low is not None}


# ---------------------------------------------------------------- /predict


@pytest.mark.parametrize("label", ["NORMAL", "PNEUMONIA"])
def test_predict_returns_the_models_probabilities(xray_client, xray_server, label):
    for path in xray_server.images(label)[:2]:
        result = _call(xray_client, _handle(path), api_name="/predict")
        got = {c["label"]: c["confidence"] for c in result["confidences"]}
        expected = _expected_probs(path)
        assert got.keys() == expected.keys()
        assert all(abs(got[k] - expected[k]) < 1e-5 for k in got)
        assert result["label"] == max(expected, key=expected.get)


def test_assess_returns_the_calibrated_prediction_set_and_gate(xray_client, xray_server, tmp_path):
    from core.trust import assess

    loaded = load_model("cxr-resnet18")
    for path in (xray_server.images("NORMAL")[0], xray_server.images("PNEUMONIA")[0]):
        got = _call(xray_client, _handle(path), api_name="/assess")
        expected = assess(loaded, load_image(path)).as_dict()
        assert got["label"] == expected["label"] and got["prediction_set"] == expected["prediction_set"]
        assert got["probability"] == pytest.approx(expected["probability"], abs=1e-5)
        assert got["threshold"] == pytest.approx(expected["threshold"])
        assert got["ood_score"] == pytest.approx(expected["ood_score"], rel=1e-4)
        assert got["in_distribution"] is True and got["calibrated"] is True and "education" in got["disclaimer"]
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((256, 256), 128, np.uint8)).save(flat)
    verdict = _call(xray_client, _handle(flat), api_name="/assess")
    assert verdict["in_distribution"] is False and verdict["ood_score"] > 1 and verdict["ood_reason"]


def test_predict_refuses_an_unknown_model(xray_client, xray_server):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Unknown model 'no-such-net'"):
        _call(xray_client, _handle(xray_server.images("NORMAL")[0]), "no-such-net", api_name="/predict")


# ---------------------------------------------------------------- /explain


def test_grad_cam_overlay_and_quality_match_core(xray_client, xray_server):
    path = xray_server.images("PNEUMONIA")[0]
    overlay_path, summary = _call(xray_client, _handle(path), "grad_cam", "{}", api_name="/explain")
    loaded = load_model("cxr-resnet18")
    x = preprocess(load_image(path), loaded.spec.preprocessing)
    expected = explain(loaded, x, "grad_cam")[0]
    assert summary["method"] == "grad_cam" and summary["model"] == "cxr-resnet18"
    assert summary["target"] == expected.target and summary["target_name"] == expected.target_name
    assert summary["score"] == pytest.approx(expected.score, abs=1e-5)
    assert summary["seconds"] > 0 and summary["disclaimer"] == DISCLAIMER
    deletion = quality.deletion(loaded, x, expected.heatmap, expected.target, steps=32,
                                baseline=quality.DELETION_BASELINE)
    insertion = quality.insertion(loaded, x, expected.heatmap, expected.target, steps=32)
    q = summary["quality"]
    assert q["deletion_auc"] == pytest.approx(deletion.auc, abs=1e-3)
    assert q["insertion_auc"] == pytest.approx(insertion.auc, abs=1e-3)
    assert -1 <= q["sanity_spearman"] <= 1 and 0 <= q["deletion_auc_random"] <= 1
    assert len(q["readings"]) == 3 and q["readings"][0].startswith("deletion AUC")
    picture = np.asarray(Image.open(overlay_path).convert("RGB")).astype(int)
    from apps.xray import views  # the same renderer, fed the heatmap computed here
    from apps.xray.analysis import open_session

    session = open_session(load_image(path), "test", "cxr-resnet18", uploaded=False)
    reference = views.overlay(session, expected, views.Style()).astype(int)
    assert picture.shape == reference.shape
    assert np.abs(picture - reference).mean() < 1.0  # same map, same colours (up to float noise across processes)


def test_explain_averages_augmented_copies_when_asked(xray_client, xray_server):
    from apps.xray import views
    from apps.xray.analysis import open_session
    from core.explain.augment import explain_augmented

    path = xray_server.images("PNEUMONIA")[0]
    params = json.dumps({"augment": 4, "quality": False, "target": "PNEUMONIA"})
    overlay_path, summary = _call(xray_client, _handle(path), "grad_cam", params, api_name="/explain")
    assert summary["extras"]["augment"]["augmentations"] == 4
    loaded = load_model("cxr-resnet18")
    x = preprocess(load_image(path), loaded.spec.preprocessing)
    expected = explain_augmented(loaded, x, "grad_cam", 1, augmentations=4, seed=0)[0]
    plain = explain(loaded, x, "grad_cam", 1)[0]
    session = open_session(load_image(path), "test", "cxr-resnet18", uploaded=False)
    picture = np.asarray(Image.open(overlay_path).convert("RGB")).astype(int)
    augmented = views.overlay(session, expected, views.Style()).astype(int)
    unaugmented = views.overlay(session, plain, views.Style()).astype(int)
    assert np.abs(picture - augmented).mean() < 1.0  # the averaged map ...
    assert np.abs(picture - unaugmented).mean() > 2 * np.abs(picture - augmented).mean()  # ... not the plain one


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_registered_method_explains_through_the_api(xray_client, xray_server, method):
    path = xray_server.images("NORMAL")[1]
    params = {**_fast_params(method), "quality": False, "target": "PNEUMONIA"}
    overlay_path, summary = _call(xray_client, _handle(path), method, json.dumps(params), api_name="/explain")
    assert summary["method"] == method and summary["target_name"] == "PNEUMONIA" and summary["target"] == 1
    assert summary["score"] == pytest.approx(_expected_probs(path)["PNEUMONIA"], abs=1e-5)
    assert summary["quality"] is None
    for name, value in _fast_params(method).items():
        assert summary["params"][name] == value
    assert summary["signed"] == METHODS[method].signed
    picture = np.asarray(Image.open(overlay_path).convert("RGB"))
    assert picture.ndim == 3 and picture.shape[0] >= 160 and picture.std() > 5  # an image, not a blank


@pytest.mark.parametrize(("params", "message"), [
    ("not json", "params must be a JSON object"),
    ("[1, 2]", "params must be a JSON object"),
    ('{"n_samples": 3}', "n_samples must be between"),
    ('{"bogus": 1}', "has no parameter"),
    ('{"target": "CAT"}', "Unknown target class 'CAT'"),
    ('{"colormap": "jet"}', "colour map 'jet' is not offered"),
])
def test_bad_settings_give_specific_errors(xray_client, xray_server, params, message):
    from gradio_client.exceptions import AppError

    method = "lime" if "n_samples" in params else "grad_cam"
    with pytest.raises(AppError, match=message):
        _call(xray_client, _handle(xray_server.images("NORMAL")[0]), method, params, api_name="/explain")


def test_a_dicom_is_explained_without_leaking_identifiers(xray_client, tmp_path):
    from tests.core.corpus import dicom_bytes

    ramp = (np.add.outer(np.arange(128), np.arange(128)) * 16).astype(np.uint16)
    dicom = tmp_path / "study.dcm"
    dicom.write_bytes(dicom_bytes(ramp))
    overlay_path, summary = _call(xray_client, _handle(dicom), "grad_cam", "{}", api_name="/explain")
    text = json.dumps(summary)
    assert "SECRET-12345" not in text and "Doe" not in text and "19800101" not in text
    assert set(summary["probabilities"]) == {"NORMAL", "PNEUMONIA"}
    assert Path(overlay_path).stat().st_size > 0


# ---------------------------------------------------------------- hostile files


@pytest.mark.parametrize("name", sorted(broken_files()))
def test_broken_file_is_an_error_then_the_next_request_is_served(xray_client, xray_server, tmp_path, name):
    from gradio_client.exceptions import AppError

    data, phrase = broken_files()[name]
    bad = tmp_path / f"{name}.png"
    bad.write_bytes(data)
    endpoint = "/explain" if name.startswith("dicom") else "/predict"
    with pytest.raises(AppError) as err:
        _call(xray_client, _handle(bad), api_name=endpoint)
    assert phrase.lower() in str(err.value).lower()
    assert "Traceback" not in str(err.value)
    good = _call(xray_client, _handle(xray_server.images("PNEUMONIA")[1]), api_name="/predict")
    assert {c["label"] for c in good["confidences"]} == {"NORMAL", "PNEUMONIA"}


def test_uploads_are_deleted_after_the_request(xray_client, xray_server, tmp_path):
    marker = tmp_path / "upload-marker-7f3a.jpeg"
    marker.write_bytes(xray_server.images("NORMAL")[2].read_bytes())
    _call(xray_client, _handle(marker), api_name="/predict")
    deadline = time.monotonic() + 40  # the server runs with a 5 s grace and sweeps every 5 s
    while any(xray_server.gradio_tmp.rglob(marker.name)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(xray_server.gradio_tmp.rglob(marker.name))


# ---------------------------------------------------------------- cancellation


def test_cancelling_a_slow_explanation_stops_the_work(xray_client, xray_server):
    from gradio_client.utils import Status

    job = xray_client.submit(_handle(xray_server.images("PNEUMONIA")[2]), "kernel_shap",
                             json.dumps({"n_samples": 6000, "quality": False}), api_name="/explain")
    deadline = time.monotonic() + 120
    running = (Status.PROCESSING, Status.PROGRESS)  # PROGRESS once the explainer reports its first batch
    while job.status().code not in running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.status().code in running
    busy = cpu_during(xray_server.pid, 3.0)
    job.cancel()
    time.sleep(3.0)  # the explainer checks for cancellation at every batch
    idle = cpu_settled(xray_server.pid, below=0.25 * busy)
    assert busy > 0.5, f"the explanation used only {busy:.2f} CPU-s in 3 s: it was not running"
    assert idle < 0.25 * busy, (f"after cancelling, the server still used {idle:.2f} CPU-s per 3 s for 20 s "
                                f"({busy:.2f} before)")
    after = _call(xray_client, _handle(xray_server.images("NORMAL")[0]), "grad_cam", '{"quality": false}',
                  api_name="/explain")
    assert after[1]["method"] == "grad_cam"
