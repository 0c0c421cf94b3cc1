"""Batch explanations from the command line: an overlay PNG (with its colour bar) and the raw heatmap (.npy) per
image, and one CSV row per image with prediction, score, seconds and deletion/insertion AUC.

The prediction is the class the apps show: at the model's operating threshold when it has one (``core.trust``),
else the most probable class; it is the class explained unless ``--target`` names another. ``--augment N``
averages the maps of N augmented copies (``core.explain.augment``: the image itself plus small shifts, rotations
and intensity jitter, mapped back).

    python -m core.explain --model cxr-resnet18 --method grad_cam --param ... [--augment 8] --out DIR FILES...
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from core.data import IMAGE_SUFFIXES
from core.explain import METHODS
from core.explain.augment import explain_augmented
from core.explain.base import BATCH, resolve_params
from core.explain.quality import deletion, insertion
from core.explain.render import overlay, value_range, with_colour_bar
from core.io import ImageError, load_image
from core.trust import assess
from core.zoo import ModelUnavailable, load_model, preprocess

COLUMNS = ("file", "prediction", "target", "score", "seconds", "deletion_auc", "insertion_auc", "error")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--param name=value`` may repeat)."""
    methods = ", ".join(METHODS)
    p = argparse.ArgumentParser(prog="python -m core.explain", description=__doc__.splitlines()[0],
                                epilog=f"methods: {methods}. For education and research only; not for diagnosis.")
    p.add_argument("--model", required=True, help="zoo name (e.g. cxr-resnet18) or a .safetensors checkpoint")
    p.add_argument("--method", required=True, choices=list(METHODS), metavar="METHOD", help=f"one of: {methods}")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a method parameter")
    p.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument("--target", type=int, default=None,
                   help="class index to explain (default: the predicted class, at the operating threshold)")
    p.add_argument("--augment", type=int, default=1, metavar="N",
                   help="average the maps of N augmented copies: the image, then shifts up to 5%% of the side, "
                        "rotations up to 5 degrees and 5%% intensity jitter (default 1: none)")
    p.add_argument("--layer", default=None, help="layer for CAM methods (default: the model's CAM layer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=BATCH,
                   help=f"perturbations per forward pass (default {BATCH}: 16 on a CPU, 64 on a GPU)")
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in the overlay")
    p.add_argument("--no-quality", action="store_true", help="skip the deletion/insertion curves (faster)")
    p.add_argument("inputs", nargs="+", type=Path, metavar="FILES_OR_DIRS")
    args = p.parse_args(argv)
    if not 1 <= args.augment <= 64:
        p.error(f"--augment must be between 1 and 64, got {args.augment}.")
    try:
        args.params = resolve_params(METHODS[args.method], dict(_pair(s) for s in args.param))
    except ValueError as err:
        p.error(str(err))
    return args


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--param takes NAME=VALUE, got {text!r}.")
    return name.strip(), value.strip()


def image_files(inputs: Iterable[Path]) -> list[Path]:
    """Files as given plus every image below each folder (sorted), without duplicates."""
    found: dict[Path, None] = {}
    for path in inputs:
        if path.is_dir():
            found.update(dict.fromkeys(sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)))
        else:
            found[path] = None
    return list(found)


def _stem(path: Path, taken: set[str]) -> str:
    stem, i = path.stem, 1
    while stem in taken:
        i += 1
        stem = f"{path.stem}-{i}"
    taken.add(stem)
    return stem


def main(argv: list[str] | None = None) -> int:
    """Explain every image; returns 0 when all succeeded, 1 when some could not be read, 2 without a model."""
    args = parse_args(argv)
    try:
        loaded = load_model(args.model)
    except ModelUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    files = image_files(args.inputs)
    if not files:
        print("error: no image files found in the inputs.", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    info, taken, failures = METHODS[args.method], set(), 0
    with open(args.out / f"{args.method}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for path in tqdm(files, desc=info.label, unit="image"):
            row = {"file": str(path)}
            try:
                image = load_image(path)
            except ImageError as err:
                failures += 1
                writer.writerow({**row, "error": str(err)})
                continue
            x = preprocess(image, loaded.spec.preprocessing, loaded.device)
            predicted = assess(loaded, image).label
            target = loaded.spec.class_names.index(predicted) if args.target is None else args.target
            e = explain_augmented(loaded, x, args.method, target, augmentations=args.augment, layer=args.layer,
                                  seed=args.seed, batch_size=args.batch_size, **args.params)[0]
            row.update(prediction=predicted, target=e.target_name, score=f"{e.score:.6f}", seconds=f"{e.seconds:.4f}")
            if not args.no_quality:
                row.update(deletion_auc=f"{deletion(loaded, x, e.heatmap, e.target).auc:.6f}",
                           insertion_auc=f"{insertion(loaded, x, e.heatmap, e.target).auc:.6f}")
            stem = _stem(path, taken)
            np.save(args.out / f"{stem}.npy", e.heatmap)
            vmin, vmax = value_range(e.heatmap, e.signed)
            picture = overlay(image.array, e.heatmap, signed=e.signed, alpha=args.alpha)
            Image.fromarray(with_colour_bar(picture, vmin, vmax, signed=e.signed, label=info.label)).save(
                args.out / f"{stem}.png")
            writer.writerow(row)
            handle.flush()
    if failures:
        print(f"{failures} of {len(files)} files could not be read; see the error column of the CSV.",
              file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
