"""Bundled-model throughput: batched images/s against torchvision's ResNet-18 at 224 px in the same run.

Perturbation explainers (LIME, SHAP, occlusion) cost hundreds of forwards, so the bundled model must be fast;
the reference floor is the standard ResNet-18 (3 x 224 x 224) run round-robin with it on the same threads.

    python -m bench.model_speed [--json] [--batch 32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json

import torch
from torchvision.models import resnet18

from bench.common import interleaved_medians, table
from core.zoo import get_spec, instantiate


def measure(batch: int, repeats: int) -> list[dict]:
    """Images per second of the bundled model and of a standard ResNet-18, forward only, no grad."""
    loaded = instantiate(get_spec("cxr-resnet18"), torch.device("cpu"))
    prep = loaded.spec.preprocessing
    reference = resnet18(weights=None).eval()
    x_ours = torch.randn(batch, prep.channels, prep.size, prep.size)
    x_ref = torch.randn(batch, 3, 224, 224)

    def ours() -> None:
        with torch.no_grad():
            loaded.model(x_ours)

    def ref() -> None:
        with torch.no_grad():
            reference(x_ref)

    medians = interleaved_medians({"cxr-resnet18": ours, "resnet18 @224 (reference)": ref}, repeats)
    floor = medians["resnet18 @224 (reference)"]
    return [{"model": name, "batch": batch, "threads": torch.get_num_threads(), "seconds": s,
             "images_per_second": batch / s, "speedup_vs_reference": floor / s} for name, s in medians.items()]


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = measure(args.batch, args.repeats)
    print(json.dumps(rows) if args.json else table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
