"""The batch CLI on real X-rays: overlay PNG + raw .npy per image, a CSV row per file (errors included),
deletion/insertion AUC from core.explain.quality, and argument errors."""

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from core.data import data_dir
from core.explain import explain
from core.explain.__main__ import COLUMNS, main
from core.explain.augment import explain_augmented
from core.explain.quality import deletion
from core.io import load_image
from core.trust import assess
from core.zoo import get_spec, predict, preprocess
from tests.helpers import film_where_card_and_argmax_differ


@pytest.fixture(scope="module")
def xray_files(tmp_path_factory) -> list:
    folder = data_dir()
    assert folder is not None, "the chest X-ray folder is missing (set CNNLENS_DATA)"
    src = tmp_path_factory.mktemp("in")
    (src / "sub").mkdir()
    normal = sorted((folder / "NORMAL").iterdir())[0]
    pneumonia = sorted((folder / "PNEUMONIA").iterdir())[0]
    shutil.copy(normal, src / normal.name)
    shutil.copy(pneumonia, src / "sub" / pneumonia.name)
    (src / "sub" / "notes.png").write_text("not an image")
    return [src]


@pytest.mark.data
def test_cli_writes_overlays_raw_maps_and_a_csv(xray_files, tmp_path, bundled):
    out = tmp_path / "out"
    code = main(["--model", "cxr-resnet18", "--method", "grad_cam", "--out", str(out), *map(str, xray_files)])
    assert code == 1  # one file could not be read
    with open(out / "grad_cam.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 3
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and bad[0]["file"].endswith("notes.png") and "not an image" in bad[0]["error"].lower()
    for row in (r for r in rows if not r["error"]):
        stem = row["file"].rsplit("/", 1)[1].rsplit(".", 1)[0]
        heat = np.load(out / f"{stem}.npy")
        side = get_spec("cxr-resnet18").preprocessing.size
        assert heat.shape == (side, side)  # maps at the model's input size
        picture = np.asarray(Image.open(out / f"{stem}.png"))
        image = load_image(row["file"]).array
        assert picture.shape[0] == image.shape[0] and picture.shape[1] > image.shape[1]
        x = preprocess(load_image(row["file"]), bundled.spec.preprocessing)
        e = explain(bundled, x, "grad_cam")[0]
        np.testing.assert_allclose(heat, e.heatmap, rtol=1e-5, atol=1e-7)
        assert row["prediction"] == row["target"] == e.target_name
        assert float(row["score"]) == pytest.approx(e.score, abs=1e-5) and float(row["seconds"]) > 0
        assert float(row["deletion_auc"]) == pytest.approx(deletion(bundled, x, e.heatmap, e.target).auc, abs=1e-5)
        assert 0 <= float(row["insertion_auc"]) <= 1


@pytest.mark.data
def test_cli_params_target_and_no_quality(xray_files, tmp_path):
    out = tmp_path / "occ"
    code = main(["--model", "cxr-resnet18", "--method", "occlusion", "--param", "patch=40", "--param", "stride=40",
                 "--target", "0", "--no-quality", "--out", str(out), str(xray_files[0] / "sub")])
    assert code == 1
    with open(out / "occlusion.csv") as f:
        row = next(r for r in csv.DictReader(f) if not r["error"])
    assert row["target"] == "NORMAL" and row["deletion_auc"] == "" and row["prediction"] in ("NORMAL", "PNEUMONIA")


@pytest.mark.data
def test_cli_explains_the_class_at_the_operating_threshold_and_averages_augmented_maps(tmp_path, bundled):
    """The CLI's prediction and default target are the apps' card class, not the arg-max; --augment N gives
    core.explain.augment's average of N copies."""
    path = film_where_card_and_argmax_differ()  # the prediction card and the softmax arg-max name other classes
    image = load_image(path)
    x = preprocess(image, bundled.spec.preprocessing)
    card = assess(bundled, image).label
    assert card != bundled.spec.class_names[int(predict(bundled, x).argmax())]  # the case this test is about
    out = tmp_path / "tta"
    assert main(["--model", "cxr-resnet18", "--method", "grad_cam", "--augment", "3", "--no-quality",
                 "--out", str(out), str(path)]) == 0
    with open(out / "grad_cam.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["prediction"] == row["target"] == card
    target = bundled.spec.class_names.index(card)
    expected = explain_augmented(bundled, x, "grad_cam", target, augmentations=3)[0]
    plain = explain(bundled, x, "grad_cam", target)[0].heatmap
    heat = np.load(out / f"{path.stem}.npy")
    np.testing.assert_allclose(heat, expected.heatmap, rtol=1e-5, atol=1e-6 * np.abs(plain).max())
    assert not np.allclose(heat, plain, rtol=1e-3, atol=1e-3 * np.abs(plain).max())
    with pytest.raises(SystemExit):
        main(["--model", "cxr-resnet18", "--method", "grad_cam", "--augment", "0", "--out", str(out), str(path)])


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    for argv, message in [
        (["--method", "grad_cam", "--param", "steps=3"], "has no parameter"),
        (["--method", "occlusion", "--param", "patch"], "NAME=VALUE"),
        (["--method", "occlusion", "--param", "patch=0"], "between"),
        (["--method", "nope"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["--model", "cxr-resnet18", "--out", str(tmp_path), *argv, str(tmp_path)])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert main(["--model", "no-such-model", "--method", "saliency", "--out", str(tmp_path), str(tmp_path)]) == 2
    assert "Unknown model" in capsys.readouterr().err
    assert main(["--model", "cxr-resnet18", "--method", "saliency", "--out", str(tmp_path), str(tmp_path)]) == 1
    assert "no image files" in capsys.readouterr().err
