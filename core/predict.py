"""Predict with trust: ``python -m core.predict --model NAME [--json] FILES...``.

Per file: the label at the model's operating threshold, the calibrated P(PNEUMONIA), the conformal prediction set,
and whether the image looks like the chest films the model was trained on (``in_distribution``, ``ood_score``:
1.0 is the gate). A file that cannot be read gets a one-line error on stderr and the others go on; the exit status
is 0 when at least one file was predicted. For education and research only, not for diagnosis.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.io import ImageError, load_image
from core.trust import assess
from core.zoo import BUNDLED, DISCLAIMER, ModelUnavailable, load_model


def predict_files(model: str, files: list[Path]) -> tuple[list[dict], list[str]]:
    """(one result dict per readable file, one error line per unreadable one)."""
    loaded = load_model(model)
    results, errors = [], []
    for file in files:
        try:
            image = load_image(file)
        except (ImageError, OSError) as err:
            errors.append(f"{file}: {err}")
            continue
        results.append({"file": str(file), **assess(loaded, image).as_dict()})
    return results, errors


def _line(row: dict) -> str:
    gate = "" if row["in_distribution"] is not False else f"  NOT LIKE A TRAINING X-RAY: {row['ood_reason']}"
    threshold = f" (threshold {row['threshold']:.3f})" if row["threshold"] is not None else ""
    return (f"{row['file']}: {row['label']}  P = {row['probability']:.3f}{threshold}  "
            f"set {{{', '.join(row['prediction_set'])}}} ({row['set_reading']}){gate}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=DISCLAIMER)
    p.add_argument("--model", default=BUNDLED, help="zoo name or path to a .safetensors checkpoint")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.add_argument("files", nargs="+", type=Path)
    args = p.parse_args(argv)
    try:
        results, errors = predict_files(args.model, args.files)
    except ModelUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(results))
    else:
        print(DISCLAIMER)
        for row in results:
            print(_line(row))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
