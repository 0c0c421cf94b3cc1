"""An audit folder on disk: the settings, Parquet part files written one per finished batch, and the results.

A part is written to a temporary name and renamed when complete, so a run killed at any moment leaves only whole
parts; a rerun reads the ``file`` column of the parts and audits only what they lack (resumable). The settings
file makes a rerun with another model or other methods fail instead of mixing two audits in one folder.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.audit.pipeline import AuditConfig

SETTINGS = "audit.json"
PARTS = "parts"
RESULTS = "audit.parquet"  # every row with its cluster, written once the parts are complete
CLUSTERS = "clusters.parquet"  # one row per cluster


class AuditFolderError(ValueError):
    """An output folder that holds another audit or is not an audit folder; message is human."""


def prepare(out: Path, config: AuditConfig, data: str) -> None:
    """Create ``out`` for ``config`` on ``data``, or check that it already holds the same audit."""
    wanted = {**config.as_dict(), "data": data}
    settings = out / SETTINGS
    if settings.is_file():
        stored = json.loads(settings.read_text())
        if stored != wanted:
            changed = sorted(k for k in wanted.keys() | stored.keys() if stored.get(k) != wanted.get(k))
            raise AuditFolderError(f"{out} holds another audit (different {', '.join(changed)}); "
                                   "choose a new output folder.")
        return
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(wanted, indent=2))


def read_settings(out: Path) -> dict:
    """The settings an audit folder was made with."""
    try:
        return json.loads((Path(out) / SETTINGS).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise AuditFolderError(f"{out} is not an audit folder (no readable {SETTINGS}).") from err


def part_paths(out: Path) -> list[Path]:
    """Complete part files, oldest name first (temporary files of a killed run are ignored)."""
    return sorted((Path(out) / PARTS).glob("part-*.parquet"))


def finished_files(out: Path) -> set[str]:
    """Files already audited in ``out`` (any complete part)."""
    done: set[str] = set()
    for path in part_paths(out):
        done.update(pq.read_table(path, columns=["file"]).column("file").to_pylist())
    return done


def write_part(out: Path, table: pa.Table) -> Path:
    """Write one batch's rows as a new part, atomically (temporary name, then rename)."""
    name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"  # sorts by time written
    tmp = Path(out) / PARTS / f".{name}.tmp"
    pq.write_table(table, tmp)
    final = tmp.with_name(name)
    os.replace(tmp, final)
    return final


def iter_parts(out: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Each complete part as a table (only ``columns`` when given): reading one at a time keeps memory bounded."""
    for path in part_paths(out):
        yield pq.read_table(path, columns=columns)


def read_results(out: Path, columns: list[str] | None = None) -> pa.Table:
    """The finished audit's rows (with ``cluster``), or AuditFolderError when the audit has not finished."""
    path = Path(out) / RESULTS
    if not path.is_file():
        raise AuditFolderError(f"{out} has no {RESULTS}: the audit has not finished (rerun it to complete it).")
    return pq.read_table(path, columns=columns)
