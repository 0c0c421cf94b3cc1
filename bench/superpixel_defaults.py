"""How the LIME / Kernel SHAP defaults were chosen: on the bundled model and real chest X-rays, the Spearman rank
correlation of the superpixel weights with a reference of many more samples (another seed), and the seconds per
map, next to the model's bare throughput measured in the same run.

    python -m bench.superpixel_defaults [--json] [--images 3] [--skip 0] [--segments 50] [--samples 500,1000]

The target is a map that ranks regions like the reference (rho >= 0.9) in under 5 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch

from bench.common import table
from core.data import data_dir
from core.explain import METHODS, explain
from core.explain.quality import rank_correlation
from core.io import load_image
from core.zoo import load_model, preprocess


def throughput(model: torch.nn.Module, x: torch.Tensor, rows: int, batch_size: int) -> float:
    """Images per second of bare batched forwards of ``x`` (the floor every sampling method pays)."""
    batch = x.expand(batch_size, -1, -1, -1).contiguous()
    with torch.inference_mode():
        model(batch)
        start = time.perf_counter()
        for _ in range(max(1, rows // batch_size)):
            model(batch)
    return max(1, rows // batch_size) * batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    """Measure every (method, segments, samples) on a few X-rays and print per-image rows and a summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the per-image rows as JSON")
    p.add_argument("--images", type=int, default=3, help="X-rays, alternating pneumonia / normal")
    p.add_argument("--skip", type=int, default=0, help="start after this many X-rays of that sequence")
    p.add_argument("--methods", default="lime,kernel_shap")
    p.add_argument("--segments", default=str(METHODS["lime"].defaults()["n_segments"]))
    p.add_argument("--samples", default=str(METHODS["lime"].defaults()["n_samples"]))
    p.add_argument("--reference", type=int, default=4000, help="samples of the reference map")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rate", type=float, default=300.0, help="img/s of the target machine, for the projection")
    args = p.parse_args(argv)
    loaded = load_model("cxr-resnet18")
    folders = [sorted((data_dir() / name).iterdir()) for name in ("PNEUMONIA", "NORMAL")]
    paths = [folders[i % 2][i // 2] for i in range(args.skip, args.skip + args.images)]
    rows: list[dict[str, Any]] = []
    for path in paths:
        x = preprocess(load_image(path), loaded.spec.preprocessing, loaded.device)
        rate = throughput(loaded.model, x, 512, args.batch_size)
        for method in args.methods.split(","):
            for n_segments in (int(v) for v in args.segments.split(",")):
                common = {"n_segments": n_segments, "batch_size": args.batch_size}
                reference = explain(loaded, x, method, n_samples=args.reference, seed=10_000, **common)[0]
                for n_samples in (int(v) for v in args.samples.split(",")):
                    e = explain(loaded, x, method, n_samples=n_samples, seed=0, **common)[0]
                    assert (e.extras["segments"] == reference.extras["segments"]).all()
                    rows.append({
                        "image": path.name, "method": method, "n_segments": e.extras["n_segments"],
                        "segments_param": n_segments, "n_samples": n_samples,
                        "spearman": rank_correlation(e.extras["weights"], reference.extras["weights"]),
                        "seconds": e.seconds, "model_img_per_s": rate,
                        "projected_seconds": e.seconds * rate / args.rate,
                    })
                    print(f"{path.name} {method} {n_segments} {n_samples}: rho {rows[-1]['spearman']:.3f} "
                          f"{e.seconds:.2f} s ({rate:.0f} img/s)", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    summary = []
    for key in sorted({(r["method"], r["segments_param"], r["n_samples"]) for r in rows}):
        group = [r for r in rows if (r["method"], r["segments_param"], r["n_samples"]) == key]
        summary.append({
            "method": key[0], "n_segments": key[1], "n_samples": key[2],
            "min_spearman": min(r["spearman"] for r in group),
            "median_spearman": statistics.median(r["spearman"] for r in group),
            "median_seconds": statistics.median(r["seconds"] for r in group),
            f"projected_at_{args.rate:.0f}": statistics.median(r["projected_seconds"] for r in group),
        })
    print(f"{len(paths)} X-rays, reference {args.reference} samples (other seed), batch size {args.batch_size}")
    print(table(summary, list(summary[0])))


if __name__ == "__main__":
    main()
