"""python -m core.predict: fields per file, a broken file reported by name while the others go on."""

import json

import pytest

from core import predict
from core.data import CLASS_NAMES, external_dir, index_folder
from core.io import load_image
from core.trust import logits_and_features, trust_for
from core.trust.calibration import scaled_probabilities
from core.zoo import preprocess


@pytest.mark.data
def test_json_fields_values_and_a_broken_file(bundled, tmp_path, capsys):
    film = index_folder(external_dir(), CLASS_NAMES).paths[-1]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    status = predict.main(["--json", str(film), str(broken)])
    out, err = capsys.readouterr()
    assert status == 0
    assert "broken.png" in err and len(err.strip().splitlines()) == 1
    (row,) = json.loads(out)
    assert row["file"] == str(film)
    assert {"label", "probability", "in_distribution", "ood_score", "prediction_set"} <= set(row)
    trust = trust_for(bundled.spec)
    logits, _ = logits_and_features(bundled, preprocess(load_image(film), bundled.spec.preprocessing))
    expected = scaled_probabilities(logits.numpy(), trust.temperature, trust.bias)[0, 1]  # calibrated
    assert row["probability"] == pytest.approx(expected, rel=1e-4)
    assert row["label"] == ("PNEUMONIA" if expected >= trust.threshold else "NORMAL")
    assert row["threshold"] == pytest.approx(trust.threshold)
    assert set(row["prediction_set"]) <= set(CLASS_NAMES) and row["prediction_set"]
    assert row["in_distribution"] == (row["ood_score"] <= 1.0)


def test_only_broken_files_exit_non_zero(tmp_path, capsys):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert predict.main([str(empty)]) == 1
    assert "empty.dcm" in capsys.readouterr().err


def test_set_readings_cover_empty_single_and_both():
    from core.trust import Assessment

    def with_set(classes):
        return Assessment({"NORMAL": 0.5, "PNEUMONIA": 0.5}, "PNEUMONIA", "PNEUMONIA", 0.5, 0.3, classes, True, 0.2,
                          None, True, 0.9)

    assert with_set(()).set_reading.startswith("empty: no class reaches the 90% level")
    assert with_set(("NORMAL",)).set_reading == "NORMAL only, at the 90% level"
    assert "cannot tell them apart at the 90% level" in with_set(("NORMAL", "PNEUMONIA")).set_reading
