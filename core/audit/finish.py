"""The last step of an audit: cluster every map of one method and write the results beside the parts.

Only the columns clustering needs are read at once (file, labels, one method's small maps and summaries: about
1 KB an image, 100 MB for 100,000 films); the full rows are then streamed part by part into ``audit.parquet``
with their ``cluster`` added, so memory stays bounded whatever the embedding and map sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.audit.clusters import Clustering, cluster_maps, cluster_table
from core.audit.pipeline import map_column, summary_column
from core.audit.store import CLUSTERS, RESULTS, iter_parts, read_settings
from core.audit.summaries import SUMMARY_FIELDS


def finish(out: Path, method: str | None = None, clusters: int | None = None, seed: int = 0) -> Clustering:
    """Cluster the maps of ``method`` (default: the audit's first) and write ``audit.parquet`` (every row with
    its ``cluster``; -1 for files that could not be read) and ``clusters.parquet`` (one row per cluster)."""
    out = Path(out)
    settings = read_settings(out)
    method = method or settings["methods"][0]
    if method not in settings["methods"]:
        raise ValueError(f"This audit has maps for {', '.join(settings['methods'])}, not {method!r}.")
    summaries = [summary_column(method, f) for f in SUMMARY_FIELDS]
    columns = ["file", "label", "prediction", "error", map_column(method), *summaries]
    parts = list(iter_parts(out, columns))
    if not parts:
        raise ValueError(f"{out} has no audited files yet.")
    table = pa.concat_tables(parts)
    rows = table.drop_columns([map_column(method)]).to_pandas()
    ok = rows["error"].isna().to_numpy()
    if not ok.any():
        raise ValueError("No file of this audit could be read; see the error column of its parts.")
    maps = np.asarray(table.column(map_column(method)).filter(pa.array(ok)).to_pylist(), dtype=np.float32)
    result = cluster_maps(maps, clusters, seed)
    assignment = dict(zip(rows["file"][ok], result.labels.tolist(), strict=True))
    per_cluster = cluster_table(rows[ok].reset_index(drop=True), maps, result.labels, int(settings["map_side"]),
                                summaries)
    per_cluster["algorithm"] = result.algorithm
    per_cluster["method"] = method
    pq.write_table(pa.Table.from_pandas(per_cluster, preserve_index=False), out / CLUSTERS)
    _write_results(out, assignment)
    return result


def _write_results(out: Path, assignment: dict[str, int]) -> None:
    """Stream every part into one file with a ``cluster`` column (temporary name, then rename)."""
    tmp = out / f".{RESULTS}.tmp"
    writer: pq.ParquetWriter | None = None
    try:
        for part in iter_parts(out):
            cluster = pa.array([assignment.get(f, -1) for f in part.column("file").to_pylist()], pa.int64())
            part = part.append_column("cluster", cluster)
            writer = writer or pq.ParquetWriter(tmp, part.schema)
            writer.write_table(part)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(out / RESULTS)


def load(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A finished audit as (rows without embeddings, clusters, settings), for pages and notebooks."""
    out = Path(out)
    settings = read_settings(out)
    names = pq.read_schema(out / RESULTS).names
    rows = pq.read_table(out / RESULTS, columns=[n for n in names if n != "embedding"]).to_pandas()
    return rows, pq.read_table(out / CLUSTERS).to_pandas(), settings
