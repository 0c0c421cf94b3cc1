"""The audit page headless (AppTest): run a small audit on a shared folder, open an audit, and check that the
numbers it shows are the ones computed from the rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.audit import audit, edge_ranking
from tests.helpers import first_run, run


def table(at, column: str) -> pd.DataFrame:
    """The first table on the page with ``column`` (AppTest does not expose dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


@pytest.fixture
def shared(marker_set, tmp_path, monkeypatch):
    root, model = marker_set
    monkeypatch.setenv("CNNLENS_ALLOWED_DATA", str(root))
    monkeypatch.setenv("CNNLENS_AUDITS", str(tmp_path / "audits"))
    return root, model, tmp_path / "audits"


def test_opened_audit_shows_the_clusters_and_edges_of_its_rows(shared):
    root, model, audits = shared
    out = audit(str(model), root, audits / "tiny", ["grad_cam"], batch_size=16)
    at = first_run("audit")
    rows = pd.read_parquet(out / "audit.parquet")
    shown = table(at, "true_NORMAL")
    sizes = rows.groupby("cluster").size()
    assert dict(zip(shown["cluster"], shown["size"], strict=True)) == sizes.to_dict()
    for _, c in shown.iterrows():
        member = rows[rows["cluster"] == c["cluster"]]
        assert c["true_PNEUMONIA"] == (member["label"] == "PNEUMONIA").sum()
        assert np.isclose(c["accuracy"], (member["label"] == member["prediction"]).mean())
        assert np.isclose(c["mean_grad_cam_edges"], member["grad_cam_edges"].mean())
    edges = table(at, "grad_cam_edges")
    expected = rows.sort_values("grad_cam_edges", ascending=False)["file"].head(20).tolist()
    assert edges["file"].tolist() == expected
    assert edges["file"].tolist() == edge_ranking(rows, "grad_cam", 20)["file"].tolist()
    assert any("Mean map of cluster" in str(c.proto) for c in at.get("plotly_chart"))
    assert not at.warning  # the marker set is shared, so images are shown
    at.selectbox(key="audit_cluster").set_value(int(shown["cluster"].iloc[-1]))
    run(at)
    assert "X-ray app" in "".join(m.value for m in at.markdown)


def test_small_audit_runs_with_progress_on_a_shared_folder(shared):
    root, _, audits = shared
    at = first_run("audit")
    assert at.info[0].value.startswith("Run an audit")
    at.selectbox(key="audit_folder").set_value(next(o for o in at.selectbox(key="audit_folder").options
                                                    if o.endswith(root.name)))
    at.slider(key="audit_limit").set_value(10)
    at.button(key="audit_run").click()
    run(at)
    written = list(audits.glob("*/audit.parquet"))
    assert len(written) == 1
    rows = pd.read_parquet(written[0])
    assert len(rows) == 10 and rows["error"].isna().all()
    shown = table(at, "true_NORMAL")
    assert shown["size"].sum() == 10
    assert any("Done" in str(p.proto) for p in at.get("progress"))
