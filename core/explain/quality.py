"""How far to trust a heatmap: deletion/insertion curves, the model-randomisation sanity check, agreement
between maps and stability over seeds, each with a one-line plain-language reading for the apps.

- Deletion / insertion (Petsiuk et al. 2018, RISE): remove (or reveal) pixels in order of importance and
  follow the target-class probability; a good map makes it fall (rise) fast, i.e. a small deletion AUC and a
  large insertion AUC. All steps are built and evaluated in batches on the model's device.
- Sanity check (Adebayo et al. 2018): re-initialise the top layers of a copy of the model; a map that depends
  on what the model learned must change, so a low rank correlation with the trained model's map is good.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from core.explain.base import Explanation, batches, blur, explain
from core.zoo import LoadedModel

MapLike = np.ndarray | torch.Tensor
Model = LoadedModel | nn.Module
_RESET_LOCK = threading.Lock()  # reset_parameters draws from torch's global RNG


# ---------------------------------------------------------------- deletion and insertion


@dataclass(frozen=True)
class Curve:
    """Target probability as a growing share of the most important pixels is deleted (or inserted)."""

    kind: Literal["deletion", "insertion"]
    fractions: np.ndarray
    scores: np.ndarray
    auc: float


def deletion(model: Model, x: torch.Tensor, heatmap: MapLike, target: int | None = None, *, steps: int = 50,
             baseline: Literal["zero", "blur"] = "zero", batch_size: int = 64) -> Curve:
    """Deletion curve: replace the most important pixels first with ``baseline`` (zero = the training mean after
    normalisation, or a blurred copy) in ``steps`` equal steps; a small AUC means the map finds what matters."""
    net, x = _net_and_input(model, x)
    if baseline not in ("zero", "blur"):
        raise ValueError(f"baseline must be 'zero' or 'blur', got {baseline!r}.")
    end = torch.zeros_like(x) if baseline == "zero" else blur(x)
    return _curve("deletion", net, x, end, heatmap, target, steps, batch_size)


def insertion(model: Model, x: torch.Tensor, heatmap: MapLike, target: int | None = None, *, steps: int = 50,
              batch_size: int = 64) -> Curve:
    """Insertion curve: reveal the most important pixels first onto a blurred copy of the image; a large AUC
    means the highlighted pixels alone bring the model's score back."""
    net, x = _net_and_input(model, x)
    return _curve("insertion", net, blur(x), x, heatmap, target, steps, batch_size)


def _net_and_input(model: Model, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    net = model.model if isinstance(model, LoadedModel) else model
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or len(x) != 1:
        raise ValueError(f"expected one image (1 x C x H x W), got shape {tuple(x.shape)}")
    return net, x.to(next(net.parameters()).device)


def _curve(kind: Literal["deletion", "insertion"], net: nn.Module, start: torch.Tensor, end: torch.Tensor,
           heatmap: MapLike, target: int | None, steps: int, batch_size: int) -> Curve:
    """Images lerp(start, end, first-n-pixels mask) for n = 0 .. H*W in ``steps`` steps, scored in batches."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    h, w = start.shape[-2:]
    rank = _importance_rank(heatmap, (h, w), start.device)
    counts = torch.round(torch.linspace(0, h * w, steps + 1, device=start.device)).long()
    scores = torch.empty(steps + 1, device=start.device)
    with torch.inference_mode():
        if target is None:
            target = int(net(end if kind == "insertion" else start).argmax(1))
        for span in batches(steps + 1, batch_size):
            mask = (rank[None] < counts[span, None, None]).unsqueeze(1).to(start.dtype)
            scores[span] = torch.softmax(net(torch.lerp(start, end, mask)).float(), dim=1)[:, target]
    fractions = (counts.float() / (h * w)).cpu().numpy()
    values = scores.cpu().numpy()
    return Curve(kind, fractions, values, float(np.trapezoid(values, fractions)))


def _importance_rank(heatmap: MapLike, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Each pixel's position (0 = most important) when sorted by decreasing heatmap value; ties keep raster order."""
    heat = torch.as_tensor(np.asarray(heatmap) if not isinstance(heatmap, torch.Tensor) else heatmap)
    if tuple(heat.shape) != shape:
        raise ValueError(f"heatmap shape {tuple(heat.shape)} does not match the image ({shape[0]} x {shape[1]}).")
    order = torch.argsort(-heat.flatten().double(), stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return rank.view(shape).to(device)


# ---------------------------------------------------------------- model-randomisation sanity check


def top_layers(model: nn.Module, blocks: int = 1) -> tuple[str, ...]:
    """The classifier head plus the last ``blocks`` parameterised blocks before it (ResNet: layer4.1, fc)."""
    children = [(name, m) for name, m in model.named_children() if any(True for _ in m.parameters())]
    if not children:
        raise ValueError("The model has no layers with parameters to randomise.")
    head = children[-1][0]
    if len(children) == 1:
        return (head,)
    body_name, body = children[-2]
    inner = [f"{body_name}.{name}" for name, m in body.named_children() if any(True for _ in m.parameters())]
    return (*(inner[-blocks:] if inner else [body_name]), head)


def randomised_copy(model: nn.Module, layers: Sequence[str] | None = None, seed: int = 0
                    ) -> tuple[nn.Module, tuple[str, ...]]:
    """A deep copy of ``model`` whose ``layers`` (default: top_layers) are re-initialised, and their names.

    Every submodule with ``reset_parameters`` is reset under a forked, seeded RNG, so the copy is the same for
    a seed and the global random state is untouched; a lock keeps concurrent calls (web requests) from
    drawing from each other's seeded stream.
    """
    layers = tuple(layers) if layers is not None else top_layers(model)
    clone = copy.deepcopy(model)
    device = next(clone.parameters()).device
    with _RESET_LOCK, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for name in layers:
            for module in clone.get_submodule(name).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    return clone.eval(), layers


@dataclass(frozen=True)
class SanityCheck:
    """Rank correlation between a method's map on the trained model and on top-randomised copies.

    ``correlations`` holds the signed Spearman rho for each copy; ``spearman`` is their mean size |rho| (a sign
    flip keeps a map's structure, so it counts as similar); ``spearman_abs`` the mean rho of the maps' absolute
    values (Adebayo et al. report both).
    """

    spearman: float
    spearman_abs: float
    correlations: tuple[float, ...]
    layers: tuple[str, ...]
    trained: Explanation
    randomised: tuple[Explanation, ...]


def sanity_check(model: Model, x: torch.Tensor, method: str, target: int | None = None, *,
                 layers: Sequence[str] | None = None, seed: int = 0, copies: int = 1, **options: Any
                 ) -> SanityCheck:
    """Explain one image with the trained model and with ``copies`` copies whose top layers are re-initialised
    (seeds ``seed``, ``seed + 1``, ...; same target and method seed); ``options`` go to ``explain`` (layer,
    batch_size, method parameters). One random copy gives a noisy answer (on the bundled model rho moves by
    +-0.5 between initialisations), so use a few copies when the number matters."""
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}.")
    net = model.model if isinstance(model, LoadedModel) else model
    trained = explain(model, x, method, target, seed=seed, **options)[0]
    randomised, names = [], tuple(layers) if layers is not None else top_layers(net)
    for copy_seed in range(seed, seed + copies):
        random_net, _ = randomised_copy(net, names, copy_seed)
        random_model = dataclasses.replace(model, model=random_net) if isinstance(model, LoadedModel) else random_net
        randomised.append(explain(random_model, x, method, trained.target, seed=seed, **options)[0])
    signed = tuple(rank_correlation(trained.heatmap, r.heatmap) for r in randomised)
    unsigned = [rank_correlation(np.abs(trained.heatmap), np.abs(r.heatmap)) for r in randomised]
    return SanityCheck(float(np.mean(np.abs(signed))), float(np.mean(unsigned)), signed, names, trained,
                       tuple(randomised))


# ---------------------------------------------------------------- agreement and stability


def random_map(shape: tuple[int, int], seed: int = 0, grid: int = 8) -> np.ndarray:
    """A smooth random map: uniform noise on a ``grid`` x ``grid`` lattice, upsampled bilinearly to ``shape``.

    The fair reference for deletion / insertion: like a real map it removes contiguous regions, whereas a
    per-pixel random order makes salt-and-pepper images that are far out of distribution for the model (on the
    bundled model its deletion curve falls faster than that of any region-based map).
    """
    noise = torch.rand(1, 1, grid, grid, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.nn.functional.interpolate(noise, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def rank_correlation(a: MapLike, b: MapLike) -> float:
    """Spearman rank correlation of two maps over pixels (NaN when a map is constant)."""
    a, b = _flat(a), _flat(b)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.size} vs {b.size} pixels.")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def top_overlap(a: MapLike, b: MapLike, fraction: float = 0.1) -> float:
    """Intersection over union of the two maps' top ``fraction`` of pixels."""
    a, b = _flat(a), _flat(b)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.size} vs {b.size} pixels.")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    k = max(1, round(fraction * a.size))
    top_a = set(np.argsort(-a, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(top_a & top_b) / len(top_a | top_b)


def _flat(m: MapLike) -> np.ndarray:
    return (m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)).astype(np.float64).ravel()


@dataclass(frozen=True)
class Agreement:
    """Pairwise Spearman correlation and top-``fraction`` IoU between named maps."""

    names: tuple[str, ...]
    spearman: np.ndarray
    iou: np.ndarray
    fraction: float


def agreement(maps: Mapping[str, MapLike], fraction: float = 0.1) -> Agreement:
    """Pairwise agreement matrices (symmetric, diagonal 1) for several maps of the same image."""
    names = tuple(maps)
    n = len(names)
    rho, iou = np.eye(n), np.eye(n)
    for i, j in itertools.combinations(range(n), 2):
        rho[i, j] = rho[j, i] = rank_correlation(maps[names[i]], maps[names[j]])
        iou[i, j] = iou[j, i] = top_overlap(maps[names[i]], maps[names[j]], fraction)
    return Agreement(names, rho, iou, fraction)


@dataclass(frozen=True)
class Stability:
    """A stochastic method's maps over several seeds: per-pixel mean and std, and mean pairwise Spearman."""

    seeds: tuple[int, ...]
    mean: np.ndarray
    std: np.ndarray
    spearman: float


def stability(model: Model, x: torch.Tensor, method: str, target: int | None = None, *,
              seeds: Sequence[int] = (0, 1, 2), **options: Any) -> Stability:
    """Explain one image once per seed (same target); ``options`` go to ``explain``."""
    if len(seeds) < 2:
        raise ValueError("stability needs at least two seeds.")
    maps: list[np.ndarray] = []
    for seed in seeds:
        e = explain(model, x, method, target, seed=seed, **options)[0]
        target = e.target
        maps.append(e.heatmap)
    stack = np.stack(maps)
    pairs = [rank_correlation(a, b) for a, b in itertools.combinations(maps, 2)]
    return Stability(tuple(seeds), stack.mean(0), stack.std(0), float(np.mean(pairs)))


# ---------------------------------------------------------------- plain-language readings
# The thresholds below are rules of thumb for a one-line reading, not statistical tests.


def read_deletion(curve: Curve, reference: Curve | None = None) -> str:
    """One line on a deletion curve: against a ``reference`` curve (of ``random_map``) when given, else by its
    AUC relative to the unperturbed score. Deleting pixels is out of distribution for the model, so even a
    random order can make the score fall; the reference makes the reading honest."""
    if reference is not None:
        ratio = curve.auc / max(reference.auc, 1e-12)
        if ratio < 0.8:
            verdict = f"the score falls faster than with a random pixel order (AUC {reference.auc:.2f}) — the " \
                      "map points at what the model uses"
        elif ratio < 1.2:
            verdict = f"the score falls about as fast as with a random pixel order (AUC {reference.auc:.2f}) — " \
                      "the map adds little"
        else:
            verdict = f"the score falls slower than with a random pixel order (AUC {reference.auc:.2f}) — the " \
                      "map misses what the model uses"
        return f"deletion AUC {curve.auc:.2f}: {verdict}"
    share = curve.auc / max(float(curve.scores[0]), 1e-12)
    if share < 0.35:
        verdict = "removing the highlighted pixels first makes the score fall fast — the map points at what the " \
                  "model uses"
    elif share < 0.65:
        verdict = "the score falls gradually as highlighted pixels go — the map only partly points at what the " \
                  "model uses"
    else:
        verdict = "the score holds up while the highlighted pixels are removed — the map misses what the model uses"
    return f"deletion AUC {curve.auc:.2f}: {verdict}"


def read_insertion(curve: Curve, reference: Curve | None = None) -> str:
    """One line on an insertion curve: against a ``reference`` curve (of ``random_map``) when given, else by its
    AUC relative to the score of the full image."""
    if reference is not None:
        ratio = curve.auc / max(reference.auc, 1e-12)
        if ratio > 1.2:
            verdict = f"the score comes back faster than with a random pixel order (AUC {reference.auc:.2f}) — " \
                      "the highlighted pixels carry the evidence"
        elif ratio > 0.8:
            verdict = f"the score comes back about as fast as with a random pixel order (AUC {reference.auc:.2f})" \
                      " — the map adds little"
        else:
            verdict = f"the score comes back slower than with a random pixel order (AUC {reference.auc:.2f}) — " \
                      "the evidence lies elsewhere"
        return f"insertion AUC {curve.auc:.2f}: {verdict}"
    share = curve.auc / max(float(curve.scores[-1]), 1e-12)
    if share > 0.7:
        verdict = "revealing the highlighted pixels first brings the score back fast — they carry the evidence"
    elif share > 0.4:
        verdict = "the score comes back gradually as highlighted pixels are revealed — they carry part of the evidence"
    else:
        verdict = "the score barely comes back from the highlighted pixels — the evidence lies elsewhere"
    return f"insertion AUC {curve.auc:.2f}: {verdict}"


def read_sanity(check: SanityCheck | float) -> str:
    """One line on the model-randomisation check: the closer ρ is to 0 (either sign), the more the map depends
    on the learned weights."""
    rho = check.spearman if isinstance(check, SanityCheck) else float(check)
    if np.isnan(rho):
        return "sanity check undefined: one of the maps is flat"
    if abs(rho) < 0.3:  # a sign flip keeps the map's structure, so judge the size of the correlation
        verdict = "the map changes completely when the top layers are randomised — it reflects what the model learned"
    elif abs(rho) < 0.7:
        verdict = "the map changes partly when the top layers are randomised — it mixes learned evidence with " \
                  "image structure"
    else:
        verdict = "the map barely changes when the top layers are randomised — it shows image structure more than " \
                  "the model's reasoning"
    return f"sanity check ρ = {rho:.2f}: {verdict}"


def read_agreement(rho: float, iou: float, fraction: float = 0.1) -> str:
    """One line on how far two maps agree."""
    if np.isnan(rho):
        return "agreement undefined: one of the maps is flat"
    if rho > 0.7 and iou > 0.5:
        verdict = "the two maps rank pixels alike and highlight the same regions"
    elif rho > 0.3 or iou > 0.25:
        verdict = "the two maps agree partly — compare the regions they disagree on"
    else:
        verdict = "the two maps disagree — at least one of them is not showing what the model uses"
    return f"agreement ρ = {rho:.2f}, top-{fraction:.0%} overlap {iou:.2f}: {verdict}"


def read_stability(result: Stability) -> str:
    """One line on whether a stochastic map is stable across seeds."""
    rho = result.spearman
    if np.isnan(rho):
        return "stability undefined: the maps are flat"
    if rho >= 0.9:
        verdict = "the map is stable: other seeds give the same ranking"
    elif rho >= 0.7:
        verdict = "the map is fairly stable; fine details change with the seed — trust the main regions only"
    else:
        verdict = "the map changes with the seed — use more samples before reading it"
    return f"stability ρ = {rho:.2f} over {len(result.seeds)} seeds: {verdict}"
