"""Trust figures of the bundled model: the out-of-distribution gate on non-chest images and on new patients,
the calibration and conformal estimates stored by ``core.calibrate``, and the cost of the gate per prediction.

The non-chest set here differs from the one in tests/trust/test_ood.py (other scikit-image pictures, other
synthetic images, other misuses of chest films), so the tests do not choose the figures.

    python -m bench.trust [--json] [--repeats 15]
"""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import skimage.data
import torch
from PIL import Image

from bench.common import interleaved_medians, table
from core.data import CLASS_NAMES, external_dir, index_folder
from core.io import load_image
from core.trust import assess, read_checkpoint_trust, trust_for
from core.zoo import BUNDLED, load_model, predict, preprocess


def _png(array: np.ndarray) -> bytes:
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = (np.clip(array / (array.max() or 1), 0, 1) * 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def non_chest_set(xray: np.ndarray) -> dict[str, bytes]:
    """Photos, microscopy, a retina, textures, logos, a phantom, faces, synthetic images and misused films."""
    rng = np.random.default_rng(11)
    names = ("coffee", "rocket", "horse", "hubble_deep_field", "immunohistochemistry", "retina", "grass", "gravel",
             "colorwheel", "logo", "microaneurysms", "cat", "shepp_logan_phantom")
    images = {name: getattr(skimage.data, name)() for name in names}
    images["face (LFW)"] = np.kron(skimage.data.lfw_subset()[0], np.ones((8, 8)))
    images["gaussian noise"] = np.clip(rng.normal(0.5, 0.2, (224, 224)), 0, 1)
    images["white"] = np.full((300, 300), 255, np.uint8)
    images["vertical stripes"] = np.tile((np.arange(256) // 16 % 2 * 255).astype(np.uint8), (256, 1))
    images["radial gradient"] = np.hypot(*np.mgrid[-1:1:256j, -1:1:256j])
    images["upside-down chest film"] = xray[::-1].copy()
    images["chest film rotated 90° left"] = np.rot90(xray, -1).copy()
    images["mirrored, inverted chest film"] = 255 - xray[:, ::-1]
    return {name: _png(a) for name, a in images.items()}


def measure(repeats: int) -> dict:
    """Gate decisions on the non-chest set and on every new-patient film; stored estimates; gate cost."""
    loaded = load_model(BUNDLED, torch.device("cpu"))
    trust = trust_for(loaded.spec)
    if trust is None:
        raise SystemExit("The bundled model carries no trust data: run python -m core.calibrate first.")
    films = index_folder(external_dir(), CLASS_NAMES)
    xray = (load_image(films.paths[0]).array * 255).astype(np.uint8)
    others = {name: assess(loaded, load_image(data)) for name, data in non_chest_set(xray).items()}
    flagged_films = [p.name for p in films.paths if not assess(loaded, load_image(p)).in_distribution]
    image = load_image(films.paths[1])
    prep = loaded.spec.preprocessing
    medians = interleaved_medians({"softmax only (floor)": lambda: predict(loaded, preprocess(image, prep)),
                                   "prediction + calibration + set + gate": lambda: assess(loaded, image)}, repeats)
    return {
        "non_chest": [{"image": n, "flagged": not a.in_distribution, "ood_score": a.ood_score,
                       "reason": a.ood_reason or "", "label": a.label} for n, a in others.items()],
        "non_chest_flagged": float(np.mean([not a.in_distribution for a in others.values()])),
        "external_flagged": len(flagged_films) / len(films),
        "external_n": len(films),
        "stored": read_checkpoint_trust(loaded.spec),
        "seconds": medians,
        "gate_cost_ratio": medians["prediction + calibration + set + gate"] / medians["softmax only (floor)"],
    }


def main() -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(1)
    result = measure(args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(table(result["non_chest"], ["image", "flagged", "ood_score", "label", "reason"]))
    print(f"\nnon-chest images flagged: {result['non_chest_flagged']:.0%} of {len(result['non_chest'])}")
    print(f"new-patient films flagged (external/, which set the gate): {result['external_flagged']:.1%} "
          f"of {result['external_n']}")
    print(f"stored cross-fitted estimates on external/: {json.dumps(result['stored'].get('cross_fitted'))}")
    print(f"per-image cost: {result['gate_cost_ratio']:.2f}x a softmax-only forward ({result['seconds']})")


if __name__ == "__main__":
    main()
