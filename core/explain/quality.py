"""How far to trust a heatmap: deletion/insertion curves, the model-randomisation sanity check, agreement
between maps and stability over seeds, each with a one-line plain-language reading for the apps.

- Deletion / insertion (Petsiuk et al. 2018, RISE): remove (or reveal) pixels in order of importance and
  follow the target-class probability; a good map makes it fall (rise) fast, i.e. a small deletion AUC and a
  large insertion AUC. All steps are built and evaluated in batches on the model's device. What deleted pixels
  become (and inserted ones start from) is the ``baseline``: blur, the training mean (zero), the image's mean, black.
- ROAD (Rong et al. 2022, remove and debias): removed pixels are filled by noisy linear imputation from their
  neighbours instead of a constant, which leaks far less of the removed shape to the model; the target probability
  after removing each share of the most (MoRF) or least (LeRF) relevant pixels. Matches pytorch-grad-cam's
  ``metrics.road`` (without noise, to float precision).
- Sanity check (Adebayo et al. 2018): re-initialise the top layers of several copies of the model; a map that
  depends on what the model learned must change, so a low rank correlation with the trained model's map is good.
  One random copy is noise, so the check reports the median |rho| over copies and its interquartile range, and
  gives a verdict only when the IQR is narrow; the sign of rho is ignored throughout (a flipped map keeps its
  structure). ``cascade`` randomises deeper and deeper blocks.
- ``trust`` runs every check for an existing explanation and returns them typed (``Trust``), with readings.
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

from core.explain.base import BATCH, METHODS, Context, Explanation, ProgressFn, batches, explain
from core.explain.base import baseline as baseline_image
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


CurveBaseline = Literal["zero", "blur", "mean", "black"]
CURVE_BASELINES: tuple[str, ...] = ("zero", "blur", "mean", "black")
DELETION_BASELINE: CurveBaseline = "zero"  # chosen by measurement: bench/faithfulness.py (see FAITHFULNESS)
INSERTION_BASELINE: CurveBaseline = "blur"


def curve_baseline(model: Model, x: torch.Tensor, kind: str) -> torch.Tensor:
    """What deleted pixels become (and inserted pixels start from): ``zero`` model input (the training mean
    intensity), a ``blur``red copy, the image's own ``mean`` intensity, or ``black`` (pixel value 0, through the
    model's normalisation when ``model`` is a LoadedModel; a bare module's input is taken to be in [0, 1])."""
    if kind not in CURVE_BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(CURVE_BASELINES)}, got {kind!r}.")
    net, x = _net_and_input(model, x)
    prep = model.spec.preprocessing if isinstance(model, LoadedModel) else None
    return baseline_image(Context(net, x.device, "", 0, 1, {}, prep=prep), x, kind)


def deletion(model: Model, x: torch.Tensor, heatmap: MapLike, target: int | None = None, *, steps: int = 50,
             baseline: CurveBaseline = DELETION_BASELINE, batch_size: int = BATCH) -> Curve:
    """Deletion curve: replace the most important pixels first with ``baseline`` (``curve_baseline``: the image's
    flat mean by default, blur, zero = the training mean after normalisation, black) in ``steps`` equal steps; a
    small AUC means the map finds what matters."""
    net, x = _net_and_input(model, x)
    return _curve("deletion", net, x, curve_baseline(model, x, baseline), heatmap, target, steps, batch_size)


def insertion(model: Model, x: torch.Tensor, heatmap: MapLike, target: int | None = None, *, steps: int = 50,
              baseline: CurveBaseline = INSERTION_BASELINE, batch_size: int = BATCH) -> Curve:
    """Insertion curve: reveal the most important pixels first onto ``baseline`` (``curve_baseline``; default a
    blurred copy of the image); a large AUC means the highlighted pixels alone bring the model's score back."""
    net, x = _net_and_input(model, x)
    return _curve("insertion", net, curve_baseline(model, x, baseline), x, heatmap, target, steps, batch_size)


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


# ---------------------------------------------------------------- ROAD: remove and debias

ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)  # shares of pixels removed (pytorch-grad-cam averages 10 % .. 90 %)
ROAD_NOISE = 0.01  # std of the imputation noise in model-input units (as the paper's code and pytorch-grad-cam)
ROAD_NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
                   ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))  # (dy, dx), weight: Rong et al. 2022
RoadOrder = Literal["morf", "lerf"]


def impute(x: torch.Tensor, removed: MapLike, noise: float = ROAD_NOISE, generator: torch.Generator | None = None
           ) -> torch.Tensor:
    """Noisy linear imputation (ROAD): every removed pixel becomes the weighted mean of its in-image 8-neighbours
    (sides 1/6, diagonals 1/12), removed neighbours included, which is one sparse linear system per image solved
    for all channels at once (float64, CPU), plus Gaussian noise of std ``noise`` drawn from ``generator``.

    ``x``: C x H x W (or 1 x C x H x W); ``removed``: H x W, true where a pixel is removed. Kept pixels are
    returned unchanged; at least one pixel must be kept.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    image = x[0] if x.ndim == 4 else x
    gone = np.asarray(removed.detach().cpu() if isinstance(removed, torch.Tensor) else removed, dtype=bool)
    c, h, w = image.shape
    if gone.shape != (h, w):
        raise ValueError(f"removal mask shape {gone.shape} does not match the image ({h} x {w}).")
    if gone.all():
        raise ValueError("ROAD needs at least one kept pixel to impute from.")
    flat = image.detach().reshape(c, -1).double().cpu().numpy()
    index = np.flatnonzero(gone.ravel())
    n = len(index)
    if n == 0:
        return x.clone()
    variable = np.full(h * w, -1)
    variable[index] = np.arange(n)
    row, col = np.divmod(index, w)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, c))
    rows, cols, values = [np.arange(n)], [np.arange(n)], []
    for (dy, dx), weight in ROAD_NEIGHBOURS:
        r, q = row + dy, col + dx
        inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
        diagonal[inside] += weight
        eq, neighbour = np.flatnonzero(inside), (r * w + q)[inside]
        unknown = gone.ravel()[neighbour]
        rhs[eq[~unknown]] -= weight * flat[:, neighbour[~unknown]].T
        rows.append(eq[unknown])
        cols.append(variable[neighbour[unknown]])
        values.append(np.full(int(unknown.sum()), weight))
    system = coo_matrix((np.concatenate([-diagonal, *values]), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(n, n)).tocsc()
    solution = np.asarray(spsolve(system, rhs)).reshape(n, c).T
    filled = torch.from_numpy(flat.copy())
    filled[:, index] = torch.from_numpy(solution)
    if noise:
        filled[:, index] += noise * torch.randn(c, n, generator=generator, dtype=torch.float64)
    return filled.to(image.device, image.dtype).reshape(x.shape)


@dataclass(frozen=True)
class RoadCurve:
    """ROAD in one order: the target probability after removing each share of pixels (``fractions``) and
    imputing them. ``morf`` removes the most relevant pixels first (a good map makes the score drop: small
    ``mean``), ``lerf`` the least relevant first (a good map keeps the score: large ``mean``). ``full`` is the
    probability on the intact image."""

    order: RoadOrder
    fractions: np.ndarray
    scores: np.ndarray
    full: float

    @property
    def mean(self) -> float:
        """Mean probability over the removal shares (pytorch-grad-cam's average across thresholds)."""
        return float(np.mean(self.scores))


@dataclass(frozen=True)
class Road:
    """ROAD in both orders for one map."""

    morf: RoadCurve
    lerf: RoadCurve

    @property
    def combined(self) -> float:
        """(mean LeRF - mean MoRF) / 2, pytorch-grad-cam's ROADCombined: larger is better, 0 = no better than
        an order that does not matter."""
        return (self.lerf.mean - self.morf.mean) / 2


def road_curve(model: Model, x: torch.Tensor, heatmap: MapLike, target: int | None = None, *,
               order: RoadOrder = "morf", fractions: Sequence[float] = ROAD_FRACTIONS, noise: float = ROAD_NOISE,
               seed: int = 0, batch_size: int = BATCH) -> RoadCurve:
    """ROAD (Rong et al. 2022) in one ``order``: for each share f in ``fractions`` remove round(f * H * W) pixels
    ranked by the map (ties in raster order, as deletion), impute them (``impute``; the noise of share f is seeded
    by (``seed``, f), so the same removal gets the same noise whatever else is asked) and score the target class's
    softmax probability, all images in batches. ``target`` defaults to the predicted class."""
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}.")
    if not fractions or not all(0 <= f < 1 for f in fractions):
        raise ValueError(f"fractions must be shares in [0, 1), got {list(fractions)}.")
    net, x = _net_and_input(model, x)
    h, w = x.shape[-2:]
    heat = torch.as_tensor(np.asarray(heatmap) if not isinstance(heatmap, torch.Tensor) else heatmap).detach().cpu()
    rank = _importance_rank(heat if order == "morf" else -heat.double(), (h, w), torch.device("cpu"))
    images = []
    for f in fractions:
        count = round(f * h * w)
        state = np.random.SeedSequence([seed, count]).generate_state(2)
        gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        images.append(impute(x, (rank < count).numpy(), noise, gen))
    stack = torch.cat(images)
    with torch.inference_mode():
        full_logits = net(x)
        target = int(full_logits.argmax(1)) if target is None else int(target)
        full = float(torch.softmax(full_logits.float(), 1)[0, target])
        scores = torch.cat([torch.softmax(net(stack[span]).float(), 1)[:, target]
                            for span in batches(len(stack), batch_size)])
    return RoadCurve(order, np.asarray(fractions, dtype=np.float64), scores.cpu().numpy().astype(np.float64), full)


def road(model: Model, x: torch.Tensor, heatmap: MapLike, target: int | None = None, *,
         fractions: Sequence[float] = ROAD_FRACTIONS, noise: float = ROAD_NOISE, seed: int = 0,
         batch_size: int = BATCH) -> Road:
    """ROAD in both orders (MoRF and LeRF) for one map; see ``road_curve``."""
    kw = {"fractions": fractions, "noise": noise, "seed": seed, "batch_size": batch_size}
    return Road(road_curve(model, x, heatmap, target, order="morf", **kw),
                road_curve(model, x, heatmap, target, order="lerf", **kw))


# ---------------------------------------------------------------- model-randomisation sanity check

SANITY_COPIES = 5  # randomised copies per check: one draw is noise (on real X-rays rho ranges over -0.8 .. +0.5)
MIN_COPIES = 3  # fewer copies give no spread to judge, so no verdict
MAX_IQR = 0.3  # a wider interquartile range of |rho| than the narrowest band: the draw decides the verdict, so none
SANITY_BANDS = (0.3, 0.7)  # |rho| below the first: the map changed completely; from the second on: barely changed
Verdict = Literal["learned", "mixed", "structure", "inconclusive"]
_UNRECORDED = ("batch_size", "class_names", "prep")  # explain keywords an Explanation does not record


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


def cascade_layers(model: nn.Module) -> tuple[str, ...]:
    """Parameterised blocks from the output down, the order of cascading randomisation: the head, then each
    stage's blocks from its last (ResNet: fc, layer4.1, layer4.0, layer3.1, ..., layer1.0, bn1, conv1)."""
    order: list[str] = []
    for name, child in reversed(list(model.named_children())):
        if not any(True for _ in child.parameters()):
            continue
        inner = [f"{name}.{n}" for n, m in child.named_children() if any(True for _ in m.parameters())]
        order += reversed(inner) if inner else [name]
    if not order:
        raise ValueError("The model has no layers with parameters to randomise.")
    return tuple(order)


def randomised_copy(model: nn.Module, layers: Sequence[str] | None = None, seed: int = 0
                    ) -> tuple[nn.Module, tuple[str, ...]]:
    """A deep copy of ``model`` whose ``layers`` (default: top_layers) are re-initialised, and their names.

    Every submodule with ``reset_parameters`` is reset, layer by layer in the order given, under a forked, seeded
    RNG, so the copy is the same for a seed and the global random state is untouched; a lock keeps concurrent
    calls (web requests) from drawing from each other's seeded stream.
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


def sanity_rho(trained: MapLike, randomised: MapLike) -> float:
    """Spearman rho between a map on the trained model and one on a randomised copy, defined for flat maps too.

    A flat (constant) map ranks every pixel equal. Two flat maps therefore rank alike: rho = 1 (the map did not
    change). A flat map shares no ordering with a structured one: rho = 0 (e.g. Grad-CAM of a randomised head is
    often all zero after its ReLU: the map changed completely). Never NaN for finite maps.
    """
    a, b = _flat(trained), _flat(randomised)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.size} vs {b.size} pixels.")
    flat_a, flat_b = bool(np.ptp(a) == 0), bool(np.ptp(b) == 0)
    if flat_a or flat_b:
        return 1.0 if flat_a and flat_b else 0.0
    return float(spearmanr(a, b).statistic)


def _band(size: float) -> Verdict:
    low, high = SANITY_BANDS
    return "learned" if size < low else "mixed" if size < high else "structure"


@dataclass(frozen=True)
class SanityCheck:
    """Rank correlation between a method's map on the trained model and on several top-randomised copies.

    ``correlations`` holds the signed Spearman rho for each copy (``sanity_rho``: flat maps give 1 or 0, never
    NaN). Everything derived uses its size |rho|: a sign flip keeps a map's structure, so rho = -0.9 counts as
    similar as +0.9. ``magnitude_correlations``: rho between the maps' absolute values (Adebayo et al. report
    both; equal to ``correlations`` for unsigned maps). ``seeds``: the copies' initialisation seeds.
    """

    correlations: tuple[float, ...]
    magnitude_correlations: tuple[float, ...]
    layers: tuple[str, ...]
    seeds: tuple[int, ...]
    trained: Explanation
    randomised: tuple[Explanation, ...]

    @property
    def sizes(self) -> np.ndarray:
        """|rho| per copy."""
        return np.abs(np.asarray(self.correlations, dtype=np.float64))

    @property
    def median(self) -> float:
        """Median |rho| over the copies: the headline number (0 = the map changed completely, 1 = not at all)."""
        return float(np.median(self.sizes))

    @property
    def quartiles(self) -> tuple[float, float]:
        """Lower and upper quartile of |rho| over the copies (numpy's linear interpolation: with 5 copies, the
        2nd and 4th smallest)."""
        q1, q3 = np.percentile(self.sizes, [25, 75])
        return float(q1), float(q3)

    @property
    def iqr(self) -> float:
        """Interquartile range of |rho|: how much the answer depends on the random draw."""
        q1, q3 = self.quartiles
        return q3 - q1

    @property
    def flat(self) -> bool:
        """The map on the trained model is constant: it ranks nothing, so there is nothing to check."""
        return bool(np.ptp(self.trained.heatmap) == 0)

    @property
    def verdict(self) -> Verdict:
        """The band of the median |rho| (below 0.3 "learned", below 0.7 "mixed", else "structure"), given only
        when the spread allows one: "inconclusive" when the IQR is wider than MAX_IQR (0.3, the narrowest band),
        with fewer than MIN_COPIES copies, or when the trained map is flat."""
        if self.flat or len(self.correlations) < MIN_COPIES or not np.isfinite(self.sizes).all():
            return "inconclusive"
        return _band(self.median) if self.iqr <= MAX_IQR else "inconclusive"


def sanity_check(model: Model, x: torch.Tensor, method: str | Explanation, target: int | None = None, *,
                 layers: Sequence[str] | None = None, seed: int = 0, copies: int = SANITY_COPIES,
                 progress: ProgressFn | None = None, **options: Any) -> SanityCheck:
    """Explain one image with the trained model (or take its existing ``Explanation`` of ``x``) and with
    ``copies`` copies whose ``layers`` (default: top_layers) are re-initialised with seeds ``seed``,
    ``seed + 1``, ...; same method, target, layer, parameters and method seed.

    With a method name, ``seed`` is also the method's seed and ``options`` go to ``explain`` (layer,
    batch_size, method parameters). With an Explanation its recorded parameters are reused, ``options`` may add
    only what it does not record (e.g. batch_size), and ``target`` must be None or its target.
    """
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}.")
    net = model.model if isinstance(model, LoadedModel) else model
    names = tuple(layers) if layers is not None else top_layers(net)
    if isinstance(method, Explanation):
        trained, runs = method, copies
        if target is not None and target != trained.target:
            raise ValueError(f"target {target} differs from the explanation's target {trained.target}.")
        clash = sorted(set(options) & (set(trained.params) | {"layer", "seed"}))
        if clash:
            raise ValueError(f"{', '.join(clash)} come(s) from the explanation; do not pass them again.")
        recorded = dict(trained.params)
        call = {**recorded, **options, "layer": recorded.get("layer"), "seed": int(recorded.get("seed", 0))}
    else:
        runs = copies + 1
        trained = explain(model, x, method, target, seed=seed, progress=_part(progress, 0, runs), **options)[0]
        call = {**options, "seed": seed}
    randomised = []
    for i, copy_seed in enumerate(range(seed, seed + copies)):
        random_net, _ = randomised_copy(net, names, copy_seed)
        random_model = dataclasses.replace(model, model=random_net) if isinstance(model, LoadedModel) else random_net
        part = _part(progress, runs - copies + i, runs)
        randomised.append(explain(random_model, x, trained.method, trained.target, progress=part, **call)[0])
    signed = tuple(sanity_rho(trained.heatmap, r.heatmap) for r in randomised)
    magnitude = tuple(sanity_rho(np.abs(trained.heatmap), np.abs(r.heatmap)) for r in randomised)
    return SanityCheck(signed, magnitude, names, tuple(range(seed, seed + copies)), trained, tuple(randomised))


def cascade(model: Model, x: torch.Tensor, method: str | Explanation, target: int | None = None, *,
            blocks: Sequence[str] | None = None, seed: int = 0, copies: int = SANITY_COPIES,
            progress: ProgressFn | None = None, **options: Any) -> tuple[SanityCheck, ...]:
    """Cascading randomisation (Adebayo et al. 2018): one SanityCheck per depth, the k-th randomising the first
    k of ``blocks`` (default: cascade_layers, from the output down). A copy keeps its seed across depths, so
    the blocks already randomised keep their random weights as deeper ones join. Arguments as in sanity_check;
    the trained map is computed once."""
    net = model.model if isinstance(model, LoadedModel) else model
    blocks = tuple(blocks) if blocks is not None else cascade_layers(net)
    if not blocks:
        raise ValueError("cascade needs at least one block to randomise.")
    if isinstance(method, Explanation):
        trained = method
    else:
        trained = explain(model, x, method, target, seed=seed, **options)[0]
        options = {k: v for k, v in options.items() if k in _UNRECORDED}  # the rest is recorded in ``trained``
    return tuple(sanity_check(model, x, trained, layers=blocks[:depth], seed=seed, copies=copies,
                              progress=_part(progress, depth - 1, len(blocks)), **options)
                 for depth in range(1, len(blocks) + 1))


def _part(progress: ProgressFn | None, index: int, parts: int) -> ProgressFn | None:
    """Progress of run ``index`` of ``parts`` (each reporting 0..1) as a share of one bar."""
    if progress is None:
        return None
    return lambda fraction: progress((index + fraction) / parts)


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


# What bench/faithfulness.py measured (50 new-patient films of external/, cxr-resnet18 at 192 px, the class on the
# prediction card, each method at cheap settings against the mean of random_map seeds 0-2 on a 10 x 10 grid, curves in
# 10 steps; 29 min at one thread): per method and check, the share of films on which its map beat the random maps
# and the median margin (AUC; ROAD: (LeRF - MoRF) / 2 in probability). The baselines are those that let the most
# maps beat random on the first 20 films (deletion: zero model input, i.e. the training-mean intensity, 84 % of
# method x film pairs, the image's own mean 82 %, a blurred copy 75 %; insertion onto a blurred copy 72 %, mean 61 %,
# zero 59 %). Flat fills favour scattered maps (gradients, IG, DeepLIFT: salt-and-pepper deletions the model has
# never seen); ROAD, which fills removed pixels from their neighbours, disagrees with them, and the readings say so.
MEASURED_MODEL = "cxr-resnet18"
MEASURED_IMAGES = 50
MEASURED_SIDE = 192  # the measured model's input side
FAITHFULNESS: dict[str, dict[str, tuple[float, float]]] = {  # method -> check -> (share won, median margin)
    "cam": {"deletion": (0.44, -0.037), "insertion": (0.34, -0.007), "road": (0.80, 0.007)},
    "grad_cam": {"deletion": (0.44, -0.037), "insertion": (0.34, -0.007), "road": (0.80, 0.007)},
    "grad_cam_pp": {"deletion": (0.40, -0.040), "insertion": (0.28, -0.004), "road": (0.80, 0.015)},
    "layer_cam": {"deletion": (0.40, -0.040), "insertion": (0.28, -0.006), "road": (0.78, 0.012)},
    "hires_cam": {"deletion": (0.44, -0.037), "insertion": (0.34, -0.007), "road": (0.80, 0.007)},
    "xgrad_cam": {"deletion": (0.44, -0.037), "insertion": (0.34, -0.007), "road": (0.80, 0.007)},
    "score_cam": {"deletion": (0.42, -0.047), "insertion": (0.30, -0.006), "road": (0.78, 0.007)},
    "eigen_cam": {"deletion": (0.38, -0.057), "insertion": (0.28, -0.004), "road": (0.52, 0.002)},
    "saliency": {"deletion": (0.48, -0.001), "insertion": (0.72, 0.006), "road": (0.48, -0.001)},
    "smoothgrad": {"deletion": (0.54, 0.012), "insertion": (0.82, 0.006), "road": (0.48, -0.001)},
    "integrated_gradients": {"deletion": (0.60, 0.066), "insertion": (0.50, 0.000), "road": (0.12, -0.014)},
    "guided_backprop": {"deletion": (0.62, 0.073), "insertion": (0.82, 0.009), "road": (0.62, 0.004)},
    "guided_grad_cam": {"deletion": (0.66, 0.087), "insertion": (0.72, 0.005), "road": (0.70, 0.006)},
    "occlusion": {"deletion": (0.98, 0.212), "insertion": (0.86, 0.007), "road": (0.96, 0.030)},
    "meaningful_perturbation": {"deletion": (1.00, 0.445), "insertion": (0.88, 0.011), "road": (0.96, 0.104)},
    "deeplift": {"deletion": (0.68, 0.079), "insertion": (0.46, -0.001), "road": (0.20, -0.008)},
    "gradient_shap": {"deletion": (0.92, 0.319), "insertion": (0.98, 0.028), "road": (0.84, 0.007)},
    "lrp": {"deletion": (0.84, 0.170), "insertion": (0.92, 0.013), "road": (0.90, 0.010)},
    "lime": {"deletion": (0.76, 0.166), "insertion": (0.98, 0.020), "road": (0.96, 0.033)},
    "kernel_shap": {"deletion": (0.68, 0.141), "insertion": (0.96, 0.019), "road": (0.96, 0.027)},
}
# The sanity check's median |rho| per method in the same run (first SANITY_IMAGES films, SANITY_COPIES_MEASURED
# randomised copies each, the app's randomised layers): 0 means the map changes completely when the model's top
# layers are re-initialised, as a faithful map should; near 1, the map does not depend on what the model learnt.
SANITY_IMAGES = 10
SANITY_COPIES_MEASURED = 3
SANITY: dict[str, float] = {  # python -m bench.faithfulness --sanity --images 10 --sanity-copies 3 (6.2 min, 1 thread)
    "cam": 0.40, "grad_cam": 0.40, "grad_cam_pp": 0.70, "layer_cam": 0.70, "hires_cam": 0.40, "xgrad_cam": 0.40,
    "score_cam": 0.87, "eigen_cam": 0.90, "saliency": 0.55, "smoothgrad": 0.48, "integrated_gradients": 0.24,
    "guided_backprop": 0.89, "guided_grad_cam": 0.29, "occlusion": 0.41, "meaningful_perturbation": 0.14,
    "deeplift": 0.16, "gradient_shap": 0.15, "lrp": 0.34, "lime": 0.33, "kernel_shap": 0.34,
}
FLAT_CHECK = 0.9  # random orders keep this share of the score's range (deletion AUC / start score): little to see


def read_record(method: str | None, check: Literal["deletion", "insertion", "road"], model: str | None,
                baseline: str | None = None) -> str:
    """One clause on how often ``method``'s maps beat random maps under ``check`` in the benchmark, or "" when it
    was not measured for ``model`` or (deletion, insertion) with this ``baseline``. When ROAD, which fills removed
    pixels from their neighbours, lets the method win far less often, the clause says so."""
    measured = {"deletion": DELETION_BASELINE, "insertion": INSERTION_BASELINE}.get(check)
    if model != MEASURED_MODEL or method not in FAITHFULNESS or (measured is not None and baseline != measured):
        return ""
    share, margin = FAITHFULNESS[method][check]
    label = METHODS[method].label if method in METHODS else method
    unit = "AUC" if check != "road" else "probability"
    head = f"on {MEASURED_IMAGES} new-patient films {label} beat random maps on {share:.0%} of them"
    if share < 0.45:
        clause = f"{head}: it usually loses to random maps here, so this check does not support its maps"
    elif share < 0.65:
        clause = f"{head}, about as often as a coin toss: this check cannot tell its maps from random ones"
    elif share < 0.8:
        clause = f"{head}, by a median {margin:.3f} {unit}: more often than chance, not reliably"
    else:
        clause = f"{head}, by a median {margin:.3f} {unit}"
    road_share = FAITHFULNESS[method]["road"][0]
    if check != "road" and share >= 0.65 and road_share < share - 0.3:
        clause += f"; but under ROAD (removed pixels filled from their neighbours) only on {road_share:.0%}: much " \
                  "of that lead comes from the fill, not from the map"
    return clause


def _against(kind: str, curve: Curve, reference: Curve, randoms: Sequence[float]) -> str:
    """Where the map's AUC lies against the random maps' (their mean and, with several, their range)."""
    aucs = list(randoms) or [reference.auc]
    lo, hi = min(aucs), max(aucs)
    span = f"AUC {reference.auc:.2f}" + (f", {len(aucs)} maps {lo:.2f}–{hi:.2f}" if len(aucs) > 1 else "")
    better = curve.auc < lo if kind == "deletion" else curve.auc > hi
    worse = curve.auc > hi if kind == "deletion" else curve.auc < lo
    verb = "falls" if kind == "deletion" else "comes back"
    gap = abs(curve.auc - reference.auc)
    if better:
        return f"the score {verb} faster than with random regions ({span}), by {gap:.3f}"
    if worse:
        return f"the score {verb} slower than with random regions ({span}), by {gap:.3f}"
    return f"the score {verb} about as fast as with random regions ({span})"


def read_deletion(curve: Curve, reference: Curve | None = None, *, randoms: Sequence[float] = (),
                  method: str | None = None, model: str | None = None, baseline: str | None = None) -> str:
    """One line on a deletion curve. Against a ``reference`` curve (of ``random_map``; ``randoms``: each random
    map's AUC) the map must fall outside the random maps' range to count as better or worse, and when even random
    orders barely move the score (a reference AUC above FLAT_CHECK of the start) the line says the check shows
    little. Without a reference: by its AUC relative to the unperturbed score. With the ``method`` and ``model``
    of the benchmark (and its ``baseline``), the method's record there is added (``read_record``)."""
    record = read_record(method, "deletion", model, baseline)
    if reference is not None:
        where = _against("deletion", curve, reference, randoms)
        start = max(float(reference.scores[0]), 1e-12)
        if reference.auc >= FLAT_CHECK * start:
            verdict = f"{where}; removing pixels barely moves this model's score even in a random order (random " \
                      f"AUC {reference.auc:.2f}, intact image {start:.2f}), so this check shows little either way"
        elif where.startswith("the score falls faster"):
            verdict = f"{where} — the map points at what the model uses"
        elif where.startswith("the score falls slower"):
            verdict = f"{where} — the map misses what the model uses"
        else:
            verdict = f"{where} — on this image the map does no better than chance"
        return f"deletion AUC {curve.auc:.2f}: {verdict}" + (f"; {record}" if record else "")
    share = curve.auc / max(float(curve.scores[0]), 1e-12)
    if share < 0.35:
        verdict = "removing the highlighted pixels first makes the score fall fast — the map points at what the " \
                  "model uses"
    elif share < 0.65:
        verdict = "the score falls gradually as highlighted pixels go — the map only partly points at what the " \
                  "model uses"
    else:
        verdict = "the score holds up while the highlighted pixels are removed — the map misses what the model uses"
    return f"deletion AUC {curve.auc:.2f}: {verdict}" + (f"; {record}" if record else "")


def read_insertion(curve: Curve, reference: Curve | None = None, *, randoms: Sequence[float] = (),
                   method: str | None = None, model: str | None = None, baseline: str | None = None) -> str:
    """One line on an insertion curve, read as ``read_deletion`` (a random order that already brings back
    FLAT_CHECK of the full image's score leaves the check little to show); without a reference, by its AUC
    relative to the score of the full image."""
    record = read_record(method, "insertion", model, baseline)
    if reference is not None:
        where = _against("insertion", curve, reference, randoms)
        end = max(float(reference.scores[-1]), 1e-12)
        if reference.auc >= FLAT_CHECK * end:
            verdict = f"{where}; even a random order brings this model's score back at once (random AUC " \
                      f"{reference.auc:.2f}, intact image {end:.2f}), so this check shows little either way"
        elif where.startswith("the score comes back faster"):
            verdict = f"{where} — the highlighted pixels carry the evidence"
        elif where.startswith("the score comes back slower"):
            verdict = f"{where} — the evidence lies elsewhere"
        else:
            verdict = f"{where} — on this image the map does no better than chance"
        return f"insertion AUC {curve.auc:.2f}: {verdict}" + (f"; {record}" if record else "")
    share = curve.auc / max(float(curve.scores[-1]), 1e-12)
    if share > 0.7:
        verdict = "revealing the highlighted pixels first brings the score back fast — they carry the evidence"
    elif share > 0.4:
        verdict = "the score comes back gradually as highlighted pixels are revealed — they carry part of the evidence"
    else:
        verdict = "the score barely comes back from the highlighted pixels — the evidence lies elsewhere"
    return f"insertion AUC {curve.auc:.2f}: {verdict}" + (f"; {record}" if record else "")


_SANITY_READINGS = {
    "learned": "the map changes completely when the top layers are randomised — it reflects what the model learned",
    "mixed": "the map changes partly when the top layers are randomised — it mixes learned evidence with image "
             "structure",
    "structure": "the map barely changes when the top layers are randomised — it shows image structure more than "
                 "the model's reasoning",
}


def read_sanity(check: SanityCheck | float) -> str:
    """One line on the model-randomisation check, always by the size |ρ| (a sign flip keeps the map's structure):
    the closer |ρ| is to 0, the more the map depends on the learned weights. A SanityCheck is read by its verdict
    (median |ρ| and IQR over the copies; no verdict when they disagree); a bare number is one copy's ρ."""
    if isinstance(check, SanityCheck):
        if check.flat:
            return "sanity check undefined: the map is flat on the trained model, so there is nothing to compare"
        q1, q3 = check.quartiles
        n = len(check.correlations)
        head = f"sanity check median |ρ| = {check.median:.2f} over {n} randomised cop{'y' if n == 1 else 'ies'}"
        if n < MIN_COPIES:
            return f"{head}: inconclusive — too few copies to tell the map's change from the luck of one draw " \
                   f"(use at least {MIN_COPIES})"
        head += f" (IQR {q1:.2f}–{q3:.2f})"
        if check.verdict == "inconclusive":
            return f"{head}: inconclusive — the copies disagree on how much the map changes (IQR above " \
                   f"{MAX_IQR:.1f}), so its dependence on the learned weights cannot be told from the random draw"
        return f"{head}: {_SANITY_READINGS[check.verdict]}"
    rho = float(check)
    if np.isnan(rho):
        return "sanity check undefined: one of the maps is flat"
    return f"sanity check |ρ| = {abs(rho):.2f}: {_SANITY_READINGS[_band(abs(rho))]}"


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


# ---------------------------------------------------------------- trust: every check for one explanation


@dataclass(frozen=True)
class Reference:
    """Mean deletion and insertion curves of smooth random maps (``random_map``): what a map must beat, and each
    random map's AUC (their spread: a map inside it does no better than chance). It depends only on the image,
    model, target and settings, so an app can compute it once per image and target. ``baseline``: deletion's,
    ``insertion_baseline``: what insertion starts from."""

    deletion: Curve
    insertion: Curve
    target: int
    seeds: tuple[int, ...]
    grid: int
    baseline: CurveBaseline
    insertion_baseline: CurveBaseline = INSERTION_BASELINE
    deletion_aucs: tuple[float, ...] = ()
    insertion_aucs: tuple[float, ...] = ()


def reference_curves(model: Model, x: torch.Tensor, target: int, *, seeds: Sequence[int] = (0, 1, 2), grid: int = 8,
                     steps: int = 50, baseline: CurveBaseline = DELETION_BASELINE,
                     insertion_baseline: CurveBaseline = INSERTION_BASELINE, batch_size: int = BATCH) -> Reference:
    """Deletion and insertion curves of one ``random_map`` per seed (on a ``grid`` x ``grid`` lattice), averaged."""
    if not seeds:
        raise ValueError("reference_curves needs at least one seed.")
    shape = (int(x.shape[-2]), int(x.shape[-1]))
    dels, ins = [], []
    for seed in seeds:
        smooth = random_map(shape, seed, grid)
        dels.append(deletion(model, x, smooth, target, steps=steps, baseline=baseline, batch_size=batch_size))
        ins.append(insertion(model, x, smooth, target, steps=steps, baseline=insertion_baseline,
                             batch_size=batch_size))
    return Reference(_mean_curve(dels), _mean_curve(ins), int(target), tuple(seeds), grid, baseline,
                     insertion_baseline, tuple(c.auc for c in dels), tuple(c.auc for c in ins))


def _mean_curve(curves: Sequence[Curve]) -> Curve:
    scores = np.mean([c.scores for c in curves], axis=0)
    return Curve(curves[0].kind, curves[0].fractions, scores, float(np.mean([c.auc for c in curves])))


@dataclass(frozen=True)
class Trust:
    """How far to trust one map: its deletion and insertion curves, the random-map reference they are read
    against, and the model-randomisation sanity check. ``model``: the model's name when known (the readings then
    add the method's record in bench/faithfulness.py for that model, when measured with the same baseline)."""

    deletion: Curve
    insertion: Curve
    reference: Reference
    sanity: SanityCheck
    model: str | None = None

    @property
    def readings(self) -> tuple[str, str, str]:
        """One plain-language line each on deletion, insertion and the sanity check."""
        method, ref = self.sanity.trained.method, self.reference
        return (read_deletion(self.deletion, ref.deletion, randoms=ref.deletion_aucs, method=method, model=self.model,
                              baseline=ref.baseline),
                read_insertion(self.insertion, ref.insertion, randoms=ref.insertion_aucs, method=method,
                               model=self.model, baseline=ref.insertion_baseline),
                read_sanity(self.sanity))


def trust(model: Model, x: torch.Tensor, explanation: Explanation, *, steps: int = 50,
          baseline: CurveBaseline = DELETION_BASELINE, insertion_baseline: CurveBaseline = INSERTION_BASELINE,
          reference: Reference | None = None, reference_seeds: Sequence[int] = (0, 1, 2), grid: int = 8,
          copies: int = SANITY_COPIES, layers: Sequence[str] | None = None, seed: int = 0, batch_size: int = BATCH,
          progress: ProgressFn | None = None) -> Trust:
    """Every trust check for an existing explanation of ``x`` (its map is not recomputed): deletion (pixels
    replaced by ``baseline``) and insertion (pixels revealed on ``insertion_baseline``) curves in ``steps`` steps,
    the random-map ``reference`` (computed from ``reference_seeds`` and ``grid`` unless given), and the sanity
    check over ``copies`` copies with ``layers`` randomised (seeds ``seed``, ``seed + 1``, ...; of a
    test-time-augmented map, on the map before augmentation, since the copies' maps are not augmented). The default
    baselines are the ones bench/faithfulness.py measured to separate maps from random ones best."""
    target = explanation.target
    if reference is None:
        reference = reference_curves(model, x, target, seeds=reference_seeds, grid=grid, steps=steps,
                                     baseline=baseline, insertion_baseline=insertion_baseline, batch_size=batch_size)
    else:
        asked = (target, baseline, insertion_baseline, steps)
        made = (reference.target, reference.baseline, reference.insertion_baseline,
                len(reference.deletion.fractions) - 1)
        if made != asked:
            raise ValueError(f"the reference was computed for target, baselines and steps {made}, not {asked}.")
    curve_del = deletion(model, x, explanation.heatmap, target, steps=steps, baseline=baseline, batch_size=batch_size)
    curve_ins = insertion(model, x, explanation.heatmap, target, steps=steps, baseline=insertion_baseline,
                          batch_size=batch_size)
    if progress is not None:
        progress(0.1)
    # a test-time-augmented map is checked as the method's own map: the copies' maps are not augmented
    plain = explanation
    if "unaugmented" in explanation.extras:
        plain = dataclasses.replace(explanation, heatmap=explanation.extras["unaugmented"])
    check = sanity_check(model, x, plain, layers=layers, seed=seed, copies=copies, batch_size=batch_size,
                         progress=None if progress is None else lambda f: progress(0.1 + 0.9 * f))
    return Trust(curve_del, curve_ins, reference, check, model.spec.name if isinstance(model, LoadedModel) else None)
