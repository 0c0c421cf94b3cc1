"""Dataset audit speed and memory (``core.audit``) on the chest X-ray training folder with the bundled model.

Measured in one run, each as a ratio against a floor taken in the same run:
1. the local engine's per-batch step (decode, trust assessment, embedding, Grad-CAM, summaries) against a bare
   forward + backward (the class score's gradient with respect to the input, no weight gradients) of the same,
   already preprocessed batches, round-robin
   (target >= 0.8x the bare throughput);
2. whole audits (parts written, clusters fitted) with the local engine and with Ray Data on a local 2-CPU Ray
   (target: Ray <= 1.3x the local time), and Ray's start-up (time to its first finished batch);
3. resident memory sampled after every batch over a long stream (default: the whole training folder, 5,216
   images): it must stay flat;
and the cost of a 100,000-film audit at the measured per-image cost.

    python -m bench.audit [--images 256] [--stream 5216] [--batch-size 32] [--threads 2] [--skip-ray]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.common import interleaved_medians, table
from core.audit import audit
from core.audit.pipeline import AuditConfig, Auditor, list_items
from core.data import data_dir
from core.io import load_image
from core.zoo import preprocess

MODEL = "cxr-resnet18"
FILMS = 100_000


def rss_mib() -> float:
    """This process's resident memory in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def step_vs_bare(folder: Path, n: int, batch_size: int, repeats: int) -> dict[str, float]:
    """Seconds per image of the audit's per-batch step and of a bare forward + backward of the same batches."""
    auditor = Auditor(AuditConfig(MODEL))
    items = list_items(folder)[:n]
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    prep = auditor.loaded.spec.preprocessing
    tensors = [torch.cat([preprocess(load_image(it.path), prep) for it in b]) for b in batches]
    net = auditor.loaded.model

    def bare() -> None:  # the input gradient only (no weight gradients): the floor of any gradient explainer
        for x in tensors:
            x = x.clone().requires_grad_(True)
            torch.autograd.grad(net(x)[:, -1].sum(), x)

    def step() -> None:
        for b in batches:
            auditor.audit(b)

    times = interleaved_medians({"bare": bare, "step": step}, repeats)
    return {name: seconds / len(items) for name, seconds in times.items()}


def _timed_audit(folder: Path, out: Path, n: int, batch_size: int, engine: str) -> dict[str, float]:
    """Wall seconds of a whole audit and of its start-up (to the first finished batch: loading the model, for
    Ray also starting Ray and its actors)."""
    marks: list[tuple[float, int]] = []
    start = time.perf_counter()
    audit(MODEL, folder, out, engine=engine, limit=n, batch_size=batch_size,
          progress=lambda done, total: marks.append((time.perf_counter() - start, done)))
    total = time.perf_counter() - start
    return {"seconds": total, "first_batch": marks[0][0]}


def engines(folder: Path, n: int, batch_size: int, skip_ray: bool) -> dict[str, dict[str, float]]:
    """Whole audits of ``n`` images with each engine (see ``_timed_audit``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = {"local": _timed_audit(folder, Path(tmp) / "local", n, batch_size, "local")}
        if not skip_ray:
            out["ray"] = _timed_audit(folder, Path(tmp) / "ray", n, batch_size, "ray")
    return out


def memory(folder: Path, n: int, batch_size: int) -> list[tuple[int, float]]:
    """(images done, resident MiB) after every batch of a local audit of ``n`` images."""
    samples: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        audit(MODEL, folder, Path(tmp) / "stream", limit=n, batch_size=batch_size,
              progress=lambda done, total: samples.append((done, rss_mib())), show_progress=True)
    return samples


def speed(folder: Path, args: argparse.Namespace) -> None:
    """Print the step-vs-bare and engine comparisons and the 100,000-film cost."""
    per_image = step_vs_bare(folder, args.images, args.batch_size, args.repeats)
    whole = engines(folder, args.images, args.batch_size, args.skip_ray)
    local = whole["local"]
    rows = [{"measure": "bare forward+backward", "s/image": per_image["bare"], "images/s": 1 / per_image["bare"]},
            {"measure": "audit step (local)", "s/image": per_image["step"], "images/s": 1 / per_image["step"],
             "ratio": per_image["bare"] / per_image["step"], "target": "throughput >= 0.8x bare"},
            {"measure": "whole audit, local", "s/image": local["seconds"] / args.images,
             "images/s": args.images / local["seconds"], "first batch s": local["first_batch"]}]
    if "ray" in whole:
        ray = whole["ray"]
        rows.append({"measure": "whole audit, Ray (2 CPUs)", "s/image": ray["seconds"] / args.images,
                     "images/s": args.images / ray["seconds"], "first batch s": ray["first_batch"],
                     "ratio": ray["seconds"] / local["seconds"],
                     "after start-up": ((ray["seconds"] - ray["first_batch"])
                                        / (local["seconds"] - local["first_batch"])),
                     "target": "time <= 1.3x local"})
    print(table(rows, ["measure", "s/image", "images/s", "first batch s", "ratio", "after start-up", "target"]))
    cost = local["seconds"] / args.images
    print(f"\n{FILMS:,} films at {cost:.3f} s/image (whole local audit, this machine): "
          f"{FILMS * cost / 3600:.2f} h on 1 worker; " +
          "; ".join(f"{FILMS * cost / 60 / w:.1f} min on {w} such workers" for w in (8, 32, 128)) +
          " (linear scaling assumed)")


def main() -> None:
    """Run the three measurements and print them with the 100,000-film cost."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256, help="images for the speed comparisons (0 skips them)")
    p.add_argument("--stream", type=int, default=5216, help="images for the memory run (0 skips it)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the local engine")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-ray", action="store_true")
    args = p.parse_args()
    folder = data_dir()
    if folder is None:
        raise SystemExit("needs the chest X-ray folder: set CNNLENS_DATA")
    torch.set_num_threads(args.threads)
    print(f"{MODEL}, Grad-CAM, {args.images} images of {folder}, batches of {args.batch_size}, "
          f"{args.threads} torch threads")
    if args.images:
        speed(folder, args)
    if args.stream:
        samples = memory(folder, args.stream, args.batch_size)
        marks = [samples[max(0, round(f * len(samples)) - 1)] for f in (0.1, 0.5, 1.0)]
        print("\nresident memory over the stream: " + ", ".join(f"{mib:.0f} MiB after {done} images"
                                                                   for done, mib in marks))
        print(f"growth from 10 % to the end: {marks[-1][1] - marks[0][1]:+.0f} MiB")


if __name__ == "__main__":
    main()
