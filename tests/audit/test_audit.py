"""The local audit end to end on the planted-marker set: rows against independent computations, error rows,
cluster statistics against the rows, and the planted shortcut found by the clustering."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage.measure import block_reduce

from core.audit import audit, edge_ranking, load
from core.audit.__main__ import main
from core.audit.store import AuditFolderError
from core.explain import explain
from core.zoo import load_model
from tests.audit.conftest import MARKER, SIDE

METHODS = ("grad_cam", "saliency")


@pytest.fixture(scope="module")
def audited(marker_set, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data folder with two broken files, model, finished audit folder)."""
    root, model = marker_set
    data = tmp_path_factory.mktemp("audit-data") / "set"
    shutil.copytree(root, data)
    (data / "PNEUMONIA" / "notes.png").write_text("not an image at all")
    good = (data / "NORMAL" / "normal_000.png").read_bytes()
    (data / "NORMAL" / "truncated.png").write_bytes(good[:60])
    out = tmp_path_factory.mktemp("audit-out") / "audit"
    audit(str(model), data, out, METHODS, batch_size=8)
    return data, model, out


def test_rows_match_independent_computation(audited):
    data, model, out = audited
    rows = pd.read_parquet(out / "audit.parquet").set_index("file")
    loaded = load_model(str(model), torch.device("cpu"))
    net = loaded.model
    for name in ("NORMAL/normal_003.png", "PNEUMONIA/pneumonia_005.png"):
        pixels = np.asarray(Image.open(data / name), dtype=np.float32) / 255
        x = torch.from_numpy((pixels - 0.5) / 0.25)[None, None]
        with torch.no_grad():
            h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            pooled = net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(h))))).flatten(1)
            p = torch.softmax(net.fc(pooled), 1)[0]
        row = rows.loc[name]
        top = int(p.argmax())
        assert row["label"] == name.split("/")[0]
        assert row["prediction"] == loaded.spec.class_names[top]
        assert np.isclose(row["probability"], float(p[top]), atol=1e-5)  # no trust data: the top softmax
        np.testing.assert_allclose(row["embedding"], pooled[0].numpy(), rtol=1e-4, atol=1e-5)
        for method in METHODS:
            heatmap = explain(loaded, x, method, top)[0].heatmap  # alone, not in a batch of 8
            small = block_reduce(heatmap, (SIDE // 16, SIDE // 16), np.mean).ravel()
            np.testing.assert_allclose(row[f"map_{method}"], small, rtol=1e-3, atol=1e-6 * np.abs(small).max())
            positive = np.clip(heatmap, 0, None)
            inside = positive[int(0.1 * SIDE):int(0.9 * SIDE), int(0.15 * SIDE):int(0.85 * SIDE)].sum()
            assert np.isclose(row[f"{method}_thorax"], inside / positive.sum(), atol=0.02)


def test_broken_files_are_rows_with_their_error(audited):
    _, _, out = audited
    rows = pd.read_parquet(out / "audit.parquet").set_index("file")
    assert len(rows) == 50
    broken = rows.loc[["PNEUMONIA/notes.png", "NORMAL/truncated.png"]]
    assert broken["error"].str.startswith("ImageError").all()
    assert broken["prediction"].isna().all() and (broken["cluster"] == -1).all()
    assert rows.drop(broken.index)["error"].isna().all()
    assert (rows.drop(broken.index)["cluster"] >= 0).all()


def test_cluster_table_agrees_with_rows(audited):
    _, _, out = audited
    rows, clusters, settings = load(out)
    assert settings["methods"] == list(METHODS)
    read = rows[rows["error"].isna()]
    counts = pd.crosstab(read["cluster"], read["label"])
    for _, c in clusters.iterrows():
        member = read[read["cluster"] == c["cluster"]]
        assert c["size"] == len(member)
        assert c["true_NORMAL"] == counts.loc[c["cluster"]].get("NORMAL", 0)
        assert np.isclose(c["accuracy"], (member["label"] == member["prediction"]).mean())
        assert np.isclose(c["mean_grad_cam_corner"], member["grad_cam_corner"].mean())
        assert set(c["prototypes"]) <= set(member["file"])
        assert np.isclose(np.sum(c["mean_map"]), 1.0, atol=1e-4)  # a mean of maps made into shares


def test_planted_marker_gets_its_own_cluster_with_evidence_at_the_marker(audited):
    _, _, out = audited
    rows, clusters, _ = load(out)
    read = rows[rows["error"].isna()]
    marked = read["label"] == "PNEUMONIA"  # every PNEUMONIA image carries the marker, no NORMAL one does
    main_cluster = read.loc[marked, "cluster"].mode()[0]
    in_cluster = read["cluster"] == main_cluster
    assert (marked & in_cluster).sum() >= 0.9 * marked.sum()  # nearly all marked images together...
    assert (marked & in_cluster).sum() >= 0.9 * in_cluster.sum()  # ...and nearly alone
    mean_map = np.asarray(clusters.set_index("cluster").loc[main_cluster, "mean_map"]).reshape(16, 16)
    cell = SIDE // 16
    marker_cells = slice(MARKER[0] // cell, -(-MARKER[1] // cell))
    quarter = slice(0, 8)
    assert mean_map[quarter, quarter].sum() > 0.5  # most evidence in the marker's quarter
    # the marker covers 4 x 4 of the 16 x 16 cells: more than twice their area share (Grad-CAM is 4 x 4 here)
    assert mean_map[marker_cells, marker_cells].sum() > 2 * mean_map[marker_cells, marker_cells].size / 256
    assert read.loc[marked, "grad_cam_corner"].mean() > 2 * read.loc[~marked, "grad_cam_corner"].mean()
    top = edge_ranking(read, "grad_cam", top=10)
    assert (top["label"] == "PNEUMONIA").all()


def test_rerun_with_other_methods_is_refused(audited):
    data, model, out = audited
    with pytest.raises(AuditFolderError, match="methods"):
        audit(str(model), data, out, ("saliency",))


def test_cli_explains_bad_input(tmp_path, capsys, marker_set):
    _, model = marker_set
    assert main(["--model", str(model), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--model", str(model), "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--methods", "grad_cam,nope"]) == 2
    assert "nope" in capsys.readouterr().err
