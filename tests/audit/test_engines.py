"""Ray Data and the local engine give the same rows; a run killed midway completes on rerun without redoing
finished files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from core.audit import audit
from core.audit.pipeline import Auditor
from core.audit.store import finished_files
from tests.helpers import ROOT

NUMERIC = ["probability", "grad_cam_thorax", "grad_cam_border", "grad_cam_corner", "grad_cam_edges"]


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "audit.parquet").sort_values("file").reset_index(drop=True)


def test_ray_and_local_engines_give_equal_rows(marker_set, tmp_path):
    root, model = marker_set
    local = audit(str(model), root, tmp_path / "local", ["grad_cam"], batch_size=8)
    ray = audit(str(model), root, tmp_path / "ray", ["grad_cam"], engine="ray", batch_size=8)
    a, b = _rows(local), _rows(ray)
    assert len(a) == len(b) == 48
    assert a["file"].tolist() == b["file"].tolist()
    assert (a["prediction"] == b["prediction"]).all() and (a["label"] == b["label"]).all()
    np.testing.assert_allclose(a[NUMERIC].to_numpy(float), b[NUMERIC].to_numpy(float), rtol=1e-4, atol=1e-6)
    for column in ("embedding", "map_grad_cam"):
        np.testing.assert_allclose(np.stack(a[column]), np.stack(b[column]), rtol=1e-4, atol=1e-6)
    # the same maps give the same clusters, up to their numbering
    assert pd.crosstab(a["cluster"], b["cluster"]).gt(0).sum(axis=1).eq(1).all()


KILL_AFTER_TWO_PARTS = textwrap.dedent("""
    import os, signal, sys
    import core.audit.engines as engines
    from core.audit.store import PARTS, write_part
    calls = []
    def write_then_die(out, table):
        calls.append(1)
        if len(calls) == 3:  # die while the third part is being written: only its temporary file exists
            (out / PARTS / ".part-dying.parquet.tmp").write_bytes(b"PAR1 half a part")
            os.kill(os.getpid(), signal.SIGKILL)
        return write_part(out, table)
    engines.write_part = write_then_die
    sys.argv = ["core.audit", *sys.argv[1:]]
    from core.audit.__main__ import main
    sys.exit(main())
""")


def test_killed_run_completes_on_rerun_without_redoing_finished_files(marker_set, tmp_path, monkeypatch):
    root, model = marker_set
    out = tmp_path / "audit"
    command = [sys.executable, "-c", KILL_AFTER_TWO_PARTS, "--model", str(model), "--data", str(root),
               "--out", str(out), "--batch-size", "6", "--limit", "30"]
    killed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "audit.parquet").exists()
    first = finished_files(out)
    assert len(first) == 12  # two whole parts of 6; the dying third left only a temporary file
    seen: list[str] = []
    original = Auditor.audit

    def spy(self, items):
        seen.extend(it.file for it in items)
        return original(self, items)

    monkeypatch.setattr(Auditor, "audit", spy)
    audit(str(model), root, out, ["grad_cam"], batch_size=6, limit=30)
    assert len(seen) == 18 and not set(seen) & first
    rows = pd.read_parquet(out / "audit.parquet")
    assert sorted(rows["file"]) == sorted(first | set(seen)) and rows["file"].is_unique


def test_local_engine_never_imports_ray(marker_set, tmp_path):
    root, model = marker_set
    script = ("import sys; from core.audit import audit; "
              f"audit({str(model)!r}, {str(root)!r}, {str(tmp_path / 'out')!r}, limit=4); "
              "assert 'ray' not in sys.modules, 'ray imported'")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "audit.parquet").is_file()
