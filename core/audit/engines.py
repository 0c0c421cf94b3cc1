"""Where the per-batch step runs: in this process (``local``) or on Ray Data (``ray``), then the clustering.

Both engines feed ``pipeline.Auditor`` the same batches of pending files and write each finished batch as one
part (``store``), so they produce the same rows and are resumable in the same way. The Ray engine is optional:
``ray`` is imported only inside ``run_ray``, after usage statistics are switched off (nothing phones home).
With no ``address`` it starts a local Ray with 2 CPUs and no dashboard; with one it joins that cluster, whose
workers need CNN Lens installed (``pip install .[ray]``) and the data folder and model weights at the same
paths (a shared file system).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from core.audit.finish import finish
from core.audit.pipeline import BATCH_SIZE, AuditConfig, Auditor, Item, list_items
from core.audit.store import finished_files, prepare, write_part

ENGINES = ("local", "ray")
LOCAL_RAY_CPUS = 2
REPO_ROOT = Path(__file__).resolve().parents[2]
ProgressFn = Callable[[int, int], None]  # (files done, files to do in this run)


def chunks(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive batches of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def run_local(config: AuditConfig, pending: Sequence[Item], batch_size: int = BATCH_SIZE) -> Iterator[pa.Table]:
    """Rows of every pending file, one table per batch, computed in this process."""
    auditor = Auditor(config)
    for batch in chunks(pending, batch_size):
        yield auditor.audit(batch)


def run_ray(config: AuditConfig, pending: Sequence[Item], batch_size: int = BATCH_SIZE, address: str | None = None,
            workers: int | None = None) -> Iterator[pa.Table]:
    """Rows of every pending file, one table per batch, computed by an actor pool on Ray Data (one GPU per
    actor when the cluster has GPUs, else one CPU); ``workers`` actors (default: one per GPU, else per CPU)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before ray is imported: no usage report leaves the machine
    import ray

    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, logging_level="warning")
        else:  # the repository on the workers' path, as in this process (not needed for an installed copy)
            path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
            ray.init(num_cpus=LOCAL_RAY_CPUS, include_dashboard=False, logging_level="warning",
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # the audit shows its own bar
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        size = workers or gpus or max(1, int(resources.get("CPU", 1)))
        data = ray.data.from_items([asdict(it) for it in pending], override_num_blocks=max(1, len(pending)
                                                                                            // batch_size))
        rows = data.map_batches(Auditor, fn_constructor_args=(config,), batch_size=batch_size,
                                batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size),
                                num_cpus=0 if gpus else 1,
                                num_gpus=1 if gpus else 0)
        yield from rows.iter_batches(batch_size=None, batch_format="pyarrow")
    finally:
        if started:
            ray.shutdown()


def audit(model: str, data: Path | str, out: Path | str, methods: Iterable[str] = ("grad_cam",), *,
          engine: str = "local", address: str | None = None, limit: int | None = None,
          batch_size: int = BATCH_SIZE, clusters: int | None = None, workers: int | None = None,
          progress: ProgressFn | None = None, show_progress: bool = False) -> Path:
    """Audit the images under ``data`` (the first ``limit``, sorted) into ``out`` and cluster the maps.

    Files already in ``out`` are skipped (a killed run resumes); ``progress`` gets (done, to do) after each
    batch and ``show_progress`` adds a tqdm bar. Returns ``out``.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}.")
    if batch_size < 1 or (limit is not None and limit < 1):
        raise ValueError("batch size and limit must be positive.")
    config = AuditConfig(model, tuple(methods))
    out = Path(out)
    items = list_items(data)[:limit]
    prepare(out, config, str(Path(data).expanduser().resolve()))
    done = finished_files(out)
    pending = [it for it in items if it.file not in done]
    if pending:
        tables = (run_local(config, pending, batch_size) if engine == "local"
                  else run_ray(config, pending, batch_size, address, workers))
        finished = 0
        with tqdm(total=len(pending), desc="Auditing", unit="img", disable=not show_progress) as bar:
            for table in tables:
                write_part(out, table)
                finished += table.num_rows
                bar.update(table.num_rows)
                if progress is not None:
                    progress(finished, len(pending))
    finish(out, clusters=clusters)
    return out
