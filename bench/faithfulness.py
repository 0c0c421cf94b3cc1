"""Faithfulness of every registered explainer on new patients: how often a method's map beats smooth random maps.

On ``--images`` films of the new-patient folder (``core.data.external_dir()``, evenly spaced over its sorted NORMAL
and PNEUMONIA files) and the bundled model ``cxr-resnet18`` (or a candidate: ``--model``), each method explains the
predicted class (the class on the apps' prediction card: at the operating threshold, ``core.trust``) and its map is
scored against the random-map reference of the app (``quality.random_map``, seeds 0-2, 10 x 10 grid, averaged as
``quality.reference_curves``) under

- deletion AUC (lower wins) and insertion AUC (higher wins) for every baseline in ``--baselines`` (what deleted
  pixels become / inserted pixels start from: ``quality.curve_baseline``), in ``--steps`` steps;
- ROAD (``quality.road``, noisy linear imputation, removal shares ``--fractions``): MoRF mean (lower wins), LeRF
  mean (higher wins) and their combination (LeRF - MoRF) / 2 (higher wins).

A map "beats random" on an image when its figure is strictly better than the reference's mean. The first table
gives, per baseline, the share of (method, image) pairs that beat random, the median gap in units of the spread
of the random maps' AUCs on the same image, and how far the methods' win shares agree with ROAD's, so the
baseline that separates maps from random best is chosen by measurement (``summarise``); the second gives, per
method, the share of images won under each metric (deletion and insertion at the chosen baseline) and the median
margin. ``core.explain.quality.FAITHFULNESS`` carries that table for the app's readings.

``--sanity`` measures the randomisation sanity check instead, on the first ``--images`` of the same films
(``quality.sanity_check`` with ``--sanity-copies`` copies, the app's randomised layers, the same cheap settings):
per method the median over films of the median |rho| between the map and the maps of the randomised copies (0: the
map changes completely with the model, as it should; near 1: it does not depend on what the model learnt).
``quality.SANITY`` carries it.

Cheap settings keep the run affordable on two shared CPU cores (one torch thread: two contend badly there):
Score-CAM 64 channels, SmoothGrad 10 samples, Integrated Gradients 16 steps, GradientSHAP 8 samples, occlusion
stride 20 (patch 20), meaningful perturbation 50 steps, LIME and Kernel SHAP 200 samples; everything else at its
defaults. Curves use 10 steps (the app: 32); every baseline is measured on the first ``--baseline-images`` films
only, the rest get the chosen ones; a map equal to an earlier one up to scale reuses its figures (HiRes-CAM,
XGrad-CAM and Grad-CAM equal CAM on the bundled GAP network). The recorded run (20 methods, 50 films, 192 px) took
29 minutes; ROAD's sparse solves are about half of it.

    python -m bench.faithfulness [--json] [--images 50] [--methods grad_cam,lime] [--baselines blur,mean,zero]
                                 [--baseline-images 20]
    python -m bench.faithfulness --sanity --images 10 [--sanity-copies 3] [--methods ...]
                                 [--threads 1] [--save FILE | --load FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

import core.explain  # noqa: F401  (registers every method)
from bench.common import table
from core.data import external_dir, index_folder
from core.explain import METHODS, explain, quality
from core.io import load_image
from core.trust import assess_batch
from core.zoo import BUNDLED, load_model, preprocess

CHEAP: dict[str, dict[str, Any]] = {
    "score_cam": {"max_channels": 64},
    "smoothgrad": {"n_samples": 10},
    "integrated_gradients": {"steps": 16},
    "gradient_shap": {"n_samples": 8},
    "occlusion": {"stride": 20},
    "meaningful_perturbation": {"steps": 50},
    "lime": {"n_samples": 200},
    "kernel_shap": {"n_samples": 200},
}
REFERENCE_SEEDS = (0, 1, 2)
REFERENCE_GRID = 10  # as the X-ray app (apps/xray/analysis.py)
STEPS = 10
BASELINES = ("blur", "mean", "zero")
BASELINE_IMAGES = 20
SANITY_COPIES = 3
FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
METRICS = ("deletion", "insertion", "road_morf", "road_lerf", "road")
LOWER_WINS = {"deletion", "road_morf"}
CURVES = ("deletion", "insertion")


def pick_images(count: int) -> list:
    """``count`` paths evenly spaced over the sorted new-patient files (both classes in proportion)."""
    folder = external_dir()
    if folder is None:
        raise SystemExit("the new-patient folder (chest_xray/external) is missing; set CNNLENS_DATA")
    paths = index_folder(folder).paths
    if count > len(paths):
        raise SystemExit(f"asked for {count} images, the folder has {len(paths)}")
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, count).round()]


def settings(method: str) -> dict[str, Any]:
    """The method's parameters for this run: its cheap settings, restricted to parameters it has."""
    known = {p.name for p in METHODS[method].params}
    return {k: v for k, v in CHEAP.get(method, {}).items() if k in known}


def figures(loaded: Any, x: torch.Tensor, heatmap: np.ndarray, target: int, baselines: dict[str, Sequence[str]],
            steps: int, fractions: Sequence[float]) -> dict[str, float]:
    """Every metric of one map: deletion / insertion AUC per baseline (``baselines[kind]``) and the ROAD figures."""
    out: dict[str, float] = {}
    for b in baselines["deletion"]:
        out[f"deletion/{b}"] = quality.deletion(loaded, x, heatmap, target, steps=steps, baseline=b).auc
    for b in baselines["insertion"]:
        out[f"insertion/{b}"] = quality.insertion(loaded, x, heatmap, target, steps=steps, baseline=b).auc
    r = quality.road(loaded, x, heatmap, target, fractions=fractions)
    out.update({"road_morf": r.morf.mean, "road_lerf": r.lerf.mean, "road": r.combined})
    return out


def same_map(a: np.ndarray, b: np.ndarray) -> bool:
    """Two maps equal up to a positive scale (to 1e-5 of their peaks), e.g. CAM and Grad-CAM on a GAP network:
    their figures differ only by the order of float-level ties, so the later one reuses the earlier's."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    pa, pb = np.abs(a).max(), np.abs(b).max()
    return bool(pa > 0 and pb > 0 and np.allclose(a / pa, b / pb, rtol=0, atol=1e-5))


def measure(images: int, methods: Sequence[str], baselines: Sequence[str], steps: int,
            fractions: Sequence[float], baseline_images: int = BASELINE_IMAGES, model: str = BUNDLED) -> dict[str, Any]:
    """Per image: each method's figures and the random maps' figures (mean and spread). Every baseline is
    measured on the first ``baseline_images`` images, which choose one per curve (``choose``); the rest get the
    chosen ones only. A map equal to an earlier method's up to scale (``same_map``) reuses its figures."""
    torch.manual_seed(0)
    loaded = load_model(model, torch.device("cpu"))
    paths = pick_images(images)
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    used = {kind: list(baselines) for kind in CURVES}
    bar = tqdm(total=len(paths) * (len(methods) + 1), desc="faithfulness", unit="map", file=sys.stderr)
    for i, path in enumerate(paths):
        if i == min(baseline_images, len(paths)) and len(baselines) > 1:
            chosen = choose(records, methods)
            used = {kind: [chosen[kind]] for kind in CURVES}
        x = preprocess(load_image(path), loaded.spec.preprocessing, loaded.device)
        record: dict[str, Any] = {"file": f"{path.parent.name}/{path.name}", "methods": {}, "seconds": {},
                                  "same_as": {}}
        shape = (int(x.shape[-2]), int(x.shape[-1]))
        target, seen = loaded.spec.class_names.index(assess_batch(loaded, x)[0].label), []
        for method in methods:
            t0 = time.perf_counter()
            e = explain(loaded, x, method, target, **settings(method))[0]
            record["seconds"][method] = time.perf_counter() - t0
            twin = next((name for name, heat in seen if same_map(heat, e.heatmap)), None)
            if twin is not None:
                record["same_as"][method] = twin
                record["methods"][method] = record["methods"][twin]
            else:
                seen.append((method, e.heatmap))
                record["methods"][method] = figures(loaded, x, e.heatmap, target, used, steps, fractions)
            bar.update()
        randoms = [figures(loaded, x, quality.random_map(shape, s, REFERENCE_GRID), target, used, steps, fractions)
                   for s in REFERENCE_SEEDS]
        bar.update()
        record["target"] = target
        record["random"] = {k: float(np.mean([r[k] for r in randoms])) for k in randoms[0]}
        record["random_sd"] = {k: float(np.std([r[k] for r in randoms])) for k in randoms[0]}
        records.append(record)
    bar.close()
    return {"model": model, "images": len(paths), "methods": list(methods), "baselines": list(baselines),
            "baseline_images": min(baseline_images, len(paths)), "steps": steps, "fractions": list(fractions),
            "reference": {"seeds": list(REFERENCE_SEEDS), "grid": REFERENCE_GRID},
            "settings": {m: settings(m) for m in methods}, "input_size": loaded.spec.preprocessing.size,
            "threads": torch.get_num_threads(), "wall_seconds": time.perf_counter() - started,
            "records": records}


def _margin(metric: str, ours: float, random: float) -> float:
    """How much better than random (positive = better), in the metric's own units."""
    kind = metric.split("/")[0]
    return random - ours if kind in LOWER_WINS else ours - random


def _share(records: Sequence[dict[str, Any]], method: str, key: str) -> float:
    return float(np.mean([_margin(key, r["methods"][method][key], r["random"][key]) > 0 for r in records]))


def baseline_rows(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Per curve and baseline, over the images that measured every baseline: the share of (method, image) pairs
    whose map beats random, the median gap in units of the random maps' spread, the random maps' median AUC, and
    ``agrees_with_road``: the Spearman correlation over methods of each method's share of wins under the baseline
    with its share under ROAD MoRF (deletion) or LeRF (insertion), the metric built to avoid the out-of-
    distribution artefacts of constant fills (None with fewer than three methods or no spread)."""
    rows = []
    for kind, road_key in (("deletion", "road_morf"), ("insertion", "road_lerf")):
        keys = [k for k in records[0]["random"] if k.startswith(f"{kind}/")]
        study = [r for r in records if all(k in r["random"] for k in keys)]
        road_shares = [_share(study, m, road_key) for m in methods]
        for key in keys:
            shares = [_share(study, m, key) for m in methods]
            scaled = [_margin(key, r["methods"][m][key], r["random"][key]) / max(r["random_sd"][key], 1e-6)
                      for r in study for m in methods]
            agree = (float(spearmanr(shares, road_shares).statistic)
                     if len(methods) > 2 and np.ptp(shares) > 0 and np.ptp(road_shares) > 0 else None)
            rows.append({"metric": kind, "baseline": key.split("/")[1], "images": len(study),
                         "beats_random": float(np.mean(shares)), "median_gap_in_random_sd": float(np.median(scaled)),
                         "random_auc": float(np.median([r["random"][key] for r in study])),
                         "agrees_with_road": agree})
    return rows


def choose(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, str]:
    """The baseline per curve that lets the largest share of (method, image) pairs beat random (ties: the larger
    median gap in random-map spreads)."""
    rows = baseline_rows(records, methods)
    return {kind: max((r for r in rows if r["metric"] == kind),
                      key=lambda r: (r["beats_random"], r["median_gap_in_random_sd"]))["baseline"]
            for kind in CURVES}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Baseline comparison, the chosen baselines and the per-method table (every image, chosen baselines)."""
    records, methods = result["records"], result["methods"]
    chosen = choose(records, methods)
    rows = []
    for m in methods:
        row: dict[str, Any] = {"method": m}
        for metric in METRICS:
            key = f"{metric}/{chosen[metric]}" if metric in chosen else metric
            row[metric] = _share(records, m, key)
            row[f"{metric}_margin"] = float(np.median([_margin(key, r["methods"][m][key], r["random"][key])
                                                       for r in records]))
        row["seconds"] = float(np.median([r["seconds"][m] for r in records]))
        same = [r.get("same_as", {}).get(m) for r in records]
        row["same_as"] = same[0] if same[0] and all(s == same[0] for s in same) else None
        rows.append(row)
    return {"by_baseline": baseline_rows(records, methods), "chosen_baseline": chosen, "methods": rows}


def report(result: dict[str, Any], summary: dict[str, Any]) -> str:
    """The plain-text tables."""
    chosen = summary["chosen_baseline"]
    cheap = ", ".join(f"{m} {s}" for m, s in result["settings"].items() if s) or "none"
    lines = [f"Faithfulness on {result['images']} new-patient films (external/), model {result['model']} "
             f"({result.get('input_size', '?')} px), predicted class; reference: mean of random_map seeds "
             f"{result['reference']['seeds']} on a "
             f"{result['reference']['grid']} x {result['reference']['grid']} grid; curves {result['steps']} steps; "
             f"ROAD shares {result['fractions']}, noise {quality.ROAD_NOISE}; cheap settings: {cheap}; "
             f"{result['wall_seconds'] / 60:.1f} min with {result.get('threads', '?')} torch thread(s).", "",
             "Baselines (share of method x image pairs beating random; median gap in SDs of the random maps):",
             table(summary["by_baseline"], ["metric", "baseline", "images", "beats_random",
                                            "median_gap_in_random_sd", "random_auc", "agrees_with_road"]),
             f"chosen: deletion -> {chosen['deletion']}, insertion -> {chosen['insertion']}", "",
             f"Share of images where the map beats random (deletion/{chosen['deletion']}, insertion/"
             f"{chosen['insertion']}, ROAD MoRF, LeRF, combined) and median margin over random:"]
    columns = ["method", *METRICS, *(f"{m}_margin" for m in METRICS), "seconds", "same_as"]
    lines.append(table(summary["methods"], columns))
    return "\n".join(lines)


def measure_sanity(images: int, methods: Sequence[str], copies: int = SANITY_COPIES,
                   model: str = BUNDLED) -> dict[str, Any]:
    """The sanity check's median |rho| per film and method on ``images`` of the films ``measure`` uses (the
    predicted class, the cheap settings), and per method the median over films."""
    torch.manual_seed(0)
    loaded = load_model(model, torch.device("cpu"))
    paths = pick_images(images)
    started = time.perf_counter()
    per_film: dict[str, list[float]] = {m: [] for m in methods}
    for path in tqdm(paths, desc="sanity", unit="film", file=sys.stderr):
        x = preprocess(load_image(path), loaded.spec.preprocessing, loaded.device)
        target = loaded.spec.class_names.index(assess_batch(loaded, x)[0].label)
        for method in methods:
            e = explain(loaded, x, method, target, **settings(method))[0]
            per_film[method].append(quality.sanity_check(loaded, x, e, copies=copies).median)
    return {"model": model, "images": len(paths), "copies": copies, "input_size": loaded.spec.preprocessing.size,
            "threads": torch.get_num_threads(), "wall_seconds": time.perf_counter() - started, "per_film": per_film,
            "sanity": {m: float(np.median(v)) for m, v in per_film.items()}}


def sanity_report(result: dict[str, Any]) -> str:
    """The sanity table as text."""
    rows = [{"method": m, "median_abs_rho": v, "films_below_0.5": float(np.mean(np.asarray(result["per_film"][m])
                                                                               < 0.5))}
            for m, v in result["sanity"].items()]
    return (f"Sanity check on {result['images']} new-patient films, model {result['model']} "
            f"({result['input_size']} px), {result['copies']} randomised copies per map; "
            f"{result['wall_seconds'] / 60:.1f} min with {result['threads']} torch thread(s). Median over films of "
            "the median |rho| between the map and the randomised copies' maps (0 is best):\n"
            + table(rows, ["method", "median_abs_rho", "films_below_0.5"]))


def main(argv: Sequence[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--model", default=BUNDLED,
                        help="zoo name or checkpoint path (a candidate before it is bundled)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated registry names")
    parser.add_argument("--baselines", default=",".join(BASELINES), help=f"of {', '.join(quality.CURVE_BASELINES)}")
    parser.add_argument("--baseline-images", type=int, default=BASELINE_IMAGES,
                        help="images on which every baseline is measured (the rest get the chosen ones)")
    parser.add_argument("--sanity", action="store_true", help="measure the randomisation sanity check instead")
    parser.add_argument("--sanity-copies", type=int, default=SANITY_COPIES, help="randomised copies per check")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--fractions", default=",".join(map(str, FRACTIONS)), help="ROAD removal shares")
    parser.add_argument("--json", action="store_true", help="print the summary and every per-image figure as JSON")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on busy shared cores two threads are slower than one)")
    parser.add_argument("--save", help="also write the summary and every per-image figure as JSON to this file")
    parser.add_argument("--load", help="summarise figures saved by --save instead of measuring")
    args = parser.parse_args(argv)
    if args.load:
        with open(args.load) as f:
            result = json.load(f)
        result.pop("summary", None)
        summary = summarise(result)
        print(json.dumps({**result, "summary": summary}, indent=1) if args.json else report(result, summary))
        return
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    torch.set_num_threads(args.threads)
    if args.sanity:
        checked = measure_sanity(args.images, methods, args.sanity_copies, args.model)
        if args.save:
            with open(args.save, "w") as f:
                json.dump(checked, f, indent=1)
        print(json.dumps(checked, indent=1) if args.json else sanity_report(checked))
        return
    result = measure(args.images, methods, [b for b in args.baselines.split(",") if b], args.steps,
                     [float(f) for f in args.fractions.split(",")], args.baseline_images, args.model)
    summary = summarise(result)
    if args.save:
        with open(args.save, "w") as f:
            json.dump({**result, "summary": summary}, f, indent=1)
    if args.json:
        print(json.dumps({**result, "summary": summary}, indent=1))
    else:
        print(report(result, summary))


if __name__ == "__main__":
    main()
