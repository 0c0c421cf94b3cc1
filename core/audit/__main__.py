"""``python -m core.audit``: audit a folder of images with one model and cluster the explanations.

Writes OUT/parts/*.parquet while it runs (a rerun skips finished files), then OUT/audit.parquet (one row per
image with its cluster) and OUT/clusters.parquet (one row per cluster). For education and research only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.audit.engines import ENGINES, audit
from core.audit.finish import load
from core.audit.pipeline import BATCH_SIZE
from core.audit.store import AuditFolderError
from core.io import ImageError
from core.zoo import DISCLAIMER, ModelUnavailable


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="python -m core.audit", description=__doc__.splitlines()[0],
                                epilog=DISCLAIMER)
    p.add_argument("--model", required=True, help="zoo name or a .safetensors checkpoint from core.train")
    p.add_argument("--data", required=True, type=Path, help="image folder (NORMAL/ and PNEUMONIA/ give labels)")
    p.add_argument("--out", required=True, type=Path, help="audit folder (created; a rerun resumes it)")
    p.add_argument("--methods", default="grad_cam", help="comma-separated explanation methods (default grad_cam)")
    p.add_argument("--engine", choices=ENGINES, default="local")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray with 2 CPUs)")
    p.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per GPU, else per CPU)")
    p.add_argument("--limit", type=int, default=None, help="audit only the first N files (sorted)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--clusters", type=int, default=None, help="number of clusters (default: best silhouette)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the audit and print the cluster table; exit status 2 with a sentence on bad input."""
    args = parse(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.address and args.engine != "ray":
        print("--address needs --engine ray.", file=sys.stderr)
        return 2
    try:
        out = audit(args.model, args.data, args.out, methods, engine=args.engine, address=args.address,
                    limit=args.limit, batch_size=args.batch_size, clusters=args.clusters, workers=args.workers,
                    show_progress=True)
    except (ModelUnavailable, AuditFolderError, FileNotFoundError, ImageError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows, clusters, _ = load(out)
    shown = clusters.drop(columns=["mean_map", "prototypes"])
    print(shown.to_string(index=False))
    print(f"{len(rows)} files, {int(rows['error'].notna().sum())} unreadable; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
