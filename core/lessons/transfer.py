"""Hand-crafted vs learned features: learning curves over the number of labelled training images.

Four ways to build a classifier, each scored at every training-set size on the same held-out sets:

(a) hand-crafted features (scikit-image HOG, uniform-LBP texture histograms, intensity statistics) + a
    scikit-learn logistic regression or random forest;
(b) frozen CNN embeddings (``core.embed``'s extraction and disk cache, at the model's embedding layer) + the
    same classifiers;
(c) fine-tuning a pretrained CNN: a fresh head, the last block at the full learning rate, earlier layers at a
    lower one (per-parameter-group learning rates; factor 0 freezes them);
(d) the same architecture trained from scratch.

Chest X-rays: the training pool and the validation set come from the bundled checkpoint's own patient split
(``core.data.held_out_paths`` recomputes the patients it never saw), and ``external/`` holds new patients.
scikit-learn's digits work offline: the pool is the half the digits CNN trained on, the other half scores.
Every training subset is a prefix of one seeded, class-interleaved order, so the curves are nested (the 50
images include the 20) and each prefix keeps the class mix.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import ClassifierMixin, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from core.data import CLASS_NAMES, data_dir, external_dir, held_out_paths, index_folder
from core.embed.cache import ArrayCache, default_cache, digest, weights_digest
from core.embed.features import embed
from core.embed.sources import ImageSet
from core.io import load_image
from core.threads import single_thread
from core.zoo import LoadedModel, Preprocessing, normalise, resize

ProgressFn = Callable[[float, str], None]
DEFAULT_SIZES = (20, 50, 100, 200)
HANDCRAFTED = ("HOG", "LBP", "intensity")
CLASSIFIERS = ("logistic regression", "random forest")
LBP_POINTS, LBP_RADIUS = 8, 1
DECODE_VERSION = "transfer-images-v1"


def _quiet(progress: ProgressFn | None) -> ProgressFn:
    return progress or (lambda _f, _t: None)


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class LessonSet:
    """Images as integers (N x S x S, divided by ``scale`` to get [0, 1]) with labels and one identity each."""

    images: np.ndarray
    labels: np.ndarray
    keys: tuple[str, ...]
    scale: float

    def __len__(self) -> int:
        return len(self.labels)

    def floats(self) -> torch.Tensor:
        """N x 1 x S x S float tensor in [0, 1]."""
        return torch.from_numpy(self.images.astype(np.float32) / self.scale)[:, None]

    def head(self, n: int) -> LessonSet:
        """The first ``n`` images (a learning-curve prefix)."""
        return LessonSet(self.images[:n], self.labels[:n], self.keys[:n], self.scale)


@dataclass(frozen=True)
class Task:
    """A training pool in learning-curve order, the sets every model is scored on, and the pretrained model."""

    name: str
    class_names: tuple[str, ...]
    pool: LessonSet
    evals: dict[str, LessonSet]
    model: str  # the pretrained model of approaches (b) and (c)
    notes: tuple[str, ...] = field(default=())


def curve_order(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded permutation whose every prefix keeps the class mix: each class is shuffled, and its i-th image is
    placed at fractional rank (i + 0.5) / n_class, so the classes interleave in proportion."""
    rng = np.random.default_rng(seed)
    ranks = np.empty(len(labels))
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        ranks[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((rng.random(len(labels)), ranks))


def _decode(paths: Sequence, size: int, progress: ProgressFn, done: int, total: int) -> np.ndarray:
    """Grayscale films resized (``core.zoo.resize``, as the models' preprocessing) and stored as uint8."""
    out = np.empty((len(paths), size, size), np.uint8)
    for i, path in enumerate(paths):
        x = torch.from_numpy(np.ascontiguousarray(load_image(path).array, dtype=np.float32))
        x = x.mean(-1) if x.ndim == 3 else x
        out[i] = (resize(x[None, None], size)[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        if i % 64 == 0:
            progress((done + i) / total, f"Decoding films {done + i:,}/{total:,}")
    return out


def chest_task(spec_split: object, size: int, pool_size: int | None, val_size: int | None, seed: int = 0,
               progress: ProgressFn | None = None, cache: ArrayCache | None = None) -> Task:
    """The chest X-ray task at ``size`` px: the pool from the training patients of ``spec_split`` (a
    ``core.zoo.TrainingSplit``), a seeded stratified sample of its validation patients, and ``external/``.

    ``pool_size`` / ``val_size`` None take every image. Decoded films are cached on disk.
    """
    report = _quiet(progress)
    folder = data_dir()
    if folder is None:
        raise FileNotFoundError("No chest X-ray folder: set $CNNLENS_DATA to a folder with NORMAL/ and PNEUMONIA/.")
    index = index_folder(folder, CLASS_NAMES)
    report(0.0, "Recomputing the bundled model's patient split…")
    held = held_out_paths(index, spec_split)
    if held is None:
        raise ValueError(f"{folder} is not the folder the bundled model was trained on (its recomputed validation "
                         "patients differ), so its held-out patients are unknown.")
    is_val = np.array([p in held for p in index.paths])
    train_pos, val_pos = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    train_pos = train_pos[curve_order(index.labels[train_pos], seed)][:pool_size]
    val_pos = val_pos[curve_order(index.labels[val_pos], seed + 1)][:val_size]
    parts = {"pool": [index.paths[i] for i in train_pos], "validation": [index.paths[i] for i in val_pos]}
    labels = {"pool": index.labels[train_pos], "validation": index.labels[val_pos]}
    ext = external_dir()
    if ext is not None:
        ext_index = index_folder(ext, CLASS_NAMES)
        parts["external"], labels["external"] = list(ext_index.paths), ext_index.labels
    keys = {name: tuple(f"{p}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in paths)
            for name, paths in parts.items()}
    total = sum(len(p) for p in parts.values())

    def compute() -> dict[str, np.ndarray]:
        arrays, done = {}, 0
        for name, paths in parts.items():
            arrays[name] = _decode(paths, size, report, done, total)
            done += len(paths)
        return arrays

    arrays, _ = (cache or default_cache()).fetch("transfer-images", digest(DECODE_VERSION, size, keys), compute)
    sets = {name: LessonSet(arrays[name], labels[name], keys[name], 255.0) for name in parts}
    evals = {"validation fold": sets["validation"]}
    notes = [f"Validation fold: {len(val_pos):,} of the {int(is_val.sum()):,} films of the patients the bundled "
             "model never trained on."]
    if "external" in sets:
        evals["external (new patients)"] = sets["external"]
    else:
        notes.append("No external/ folder beside the training folder: only the validation fold is scored.")
    return Task("chest X-rays", CLASS_NAMES, sets["pool"], evals, "cxr-resnet18", tuple(notes))


def digits_task(seed: int = 0) -> Task:
    """scikit-learn's digits (offline): the pool is the half the digits CNN trained on, scored on the other half."""
    from sklearn.datasets import load_digits

    from core.embed.digits import DIGITS_MODEL, digits_train_indices

    bunch = load_digits()
    images, labels = bunch.images.astype(np.uint8), bunch.target.astype(np.int64)
    train = digits_train_indices(labels)
    held = np.setdiff1d(np.arange(len(labels)), train)
    train = train[curve_order(labels[train], seed)]
    data_id = digest("digits", images, labels)

    def part(idx: np.ndarray) -> LessonSet:
        return LessonSet(images[idx], labels[idx], tuple(f"{data_id}:{i}" for i in idx), 16.0)

    return Task("scikit-learn digits", tuple(str(c) for c in bunch.target_names), part(train),
                {"held-out half": part(held)}, DIGITS_MODEL,
                ("8 x 8 images; the pool is the half the digits CNN trained on, the other half scores.",))


# ---------------------------------------------------------------------------------------------- features


def handcrafted_features(images: LessonSet, size: int, kinds: Sequence[str] = HANDCRAFTED) -> np.ndarray:
    """HOG (9 orientations, an 8 x 8 grid of cells, 2 x 2-cell blocks), a uniform-LBP histogram (P=8, R=1) and
    intensity statistics (mean, std, percentiles, skewness, kurtosis) of every image resized to ``size`` px."""
    from scipy.stats import kurtosis, skew
    from skimage.feature import hog, local_binary_pattern

    unknown = set(kinds) - set(HANDCRAFTED)
    if unknown or not kinds:
        raise ValueError(f"Choose hand-crafted features among {', '.join(HANDCRAFTED)}, got {sorted(kinds)}.")
    if size < 16:
        raise ValueError(f"Hand-crafted features need at least 16 px, got {size}.")
    small = resize(images.floats(), size)[:, 0].clamp(0, 1).numpy().astype(np.float64)
    cell = size // 8
    rows = []
    for img in small:
        parts = []
        if "HOG" in kinds:
            parts.append(hog(img, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2)))
        if "LBP" in kinds:
            lbp = local_binary_pattern((img * 255).astype(np.uint8), LBP_POINTS, LBP_RADIUS, method="uniform")
            parts.append(np.bincount(lbp.astype(int).ravel(), minlength=LBP_POINTS + 2) / lbp.size)
        if "intensity" in kinds:
            flat = img.ravel()
            spread = flat.std()
            shape = [skew(flat), kurtosis(flat)] if spread > 0 else [0.0, 0.0]
            parts.append(np.array([flat.mean(), spread, *np.percentile(flat, [5, 25, 50, 75, 95]), *shape]))
        rows.append(np.concatenate(parts))
    return np.asarray(rows, dtype=np.float32)


def cnn_embeddings(loaded: LoadedModel, images: LessonSet, class_names: tuple[str, ...], name: str,
                   progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, bool]:
    """(the model's embedding-layer vectors for every image, whether they came from the cache), through
    ``core.embed.embed`` (its batching and disk cache: a second call is a file read)."""
    n = len(images)
    image_set = ImageSet(name, class_names, images.labels,
                         tuple(images.keys), tuple(images.keys), tuple(f"{k}|{images.images.shape[1:]}"
                                                                        for k in images.keys),
                         images.images, images.scale)
    with single_thread():
        emb = embed(loaded, image_set, progress=progress, num_workers=0)
    if len(emb.kept) != n:
        raise ValueError(f"{n - len(emb.kept)} images could not be embedded: {' '.join(emb.skipped[:2])}")
    return emb.vectors, emb.from_cache


# ---------------------------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class CurvePoint:
    """One approach trained on ``n_train`` images, scored on one set."""

    approach: str
    n_train: int
    evaluated_on: str
    auc: float
    accuracy: float
    seconds: float  # training (and, for CNNs, scoring) time at this size


def make_classifier(name: str, seed: int = 0) -> ClassifierMixin:
    """A standardised logistic regression or a 200-tree random forest (one core: the page shares the machine)."""
    if name == "logistic regression":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if name == "random forest":
        return RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)
    raise ValueError(f"Unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}.")


def scores(labels: np.ndarray, proba: np.ndarray, classes: np.ndarray, n_classes: int) -> tuple[float, float]:
    """(ROC AUC, accuracy): binary AUC on the positive class, one-vs-rest macro AUC for more classes; AUC is NaN
    when the classifier never saw every class."""
    accuracy = float(accuracy_score(labels, classes[proba.argmax(1)]))
    if len(classes) < n_classes or len(np.unique(labels)) < 2:
        return float("nan"), accuracy
    if n_classes == 2:
        return float(roc_auc_score(labels, proba[:, 1])), accuracy
    return float(roc_auc_score(labels, proba, multi_class="ovr", labels=classes)), accuracy


def check_sizes(sizes: Sequence[int], pool: int) -> list[int]:
    """Sorted distinct sizes, each at least 4 and at most the pool, with a clear error otherwise."""
    chosen = sorted(set(int(s) for s in sizes))
    if not chosen:
        raise ValueError("Choose at least one training-set size.")
    if chosen[0] < 4 or chosen[-1] > pool:
        raise ValueError(f"Training-set sizes must lie between 4 and the pool's {pool:,} images; got {chosen}.")
    return chosen


def classifier_curve(approach: str, classifier: str, x_pool: np.ndarray, y_pool: np.ndarray,
                     evals: dict[str, tuple[np.ndarray, np.ndarray]], sizes: Sequence[int], n_classes: int,
                     seed: int = 0) -> list[CurvePoint]:
    """Fit the classifier on the first n pool rows for every size and score it on every set."""
    points = []
    for n in check_sizes(sizes, len(y_pool)):
        start = time.perf_counter()
        model = clone(make_classifier(classifier, seed)).fit(x_pool[:n], y_pool[:n])
        seconds = time.perf_counter() - start
        for name, (x, y) in evals.items():
            auc, acc = scores(y, model.predict_proba(x), model.classes_, n_classes)
            points.append(CurvePoint(approach, n, name, auc, acc, seconds))
    return points


# ---------------------------------------------------------------------------------------------- CNNs

# Parameter-name prefixes of the "last block" (and head) that fine-tuning trains at the full learning rate.
LAST_BLOCK = {"resnet": ("layer4.", "fc."), "digits-cnn": ("features.7.", "features.8.", "fc.")}


@dataclass(frozen=True)
class CNNSettings:
    """How (c) and (d) train: input size, epochs, learning rate, earlier layers' factor, batch, seed."""

    input_size: int
    epochs: int = 6
    lr: float = 1e-3
    earlier_lr_factor: float = 0.1
    batch_size: int = 32
    min_steps: int = 12  # the smallest sets still get this many optimiser steps
    seed: int = 0


def _family(model: nn.Module) -> str:
    """Which LAST_BLOCK entry applies; fine-tuning is set up for ResNets and the digits CNN only."""
    from torchvision.models import ResNet

    from core.embed.digits import DigitsCNN

    if isinstance(model, ResNet):
        return "resnet"
    if isinstance(model, DigitsCNN):
        return "digits-cnn"
    raise ValueError(f"Fine-tuning is set up for ResNets and the digits CNN, not {type(model).__name__}.")


def fresh_head(model: nn.Module, n_classes: int, seed: int) -> nn.Module:
    """A copy with a new, seeded linear head for ``n_classes`` (as when the new task has other classes)."""
    out = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out.fc = nn.Linear(out.fc.in_features, n_classes)
    return out


def parameter_groups(model: nn.Module, lr: float, earlier_factor: float) -> list[dict]:
    """The last block and head at ``lr``, everything earlier at ``lr * earlier_factor``; a factor of 0 freezes
    the earlier layers (``requires_grad`` off) instead of giving the optimiser a zero rate."""
    last = LAST_BLOCK[_family(model)]
    top, earlier = [], []
    for name, p in model.named_parameters():
        (top if name.startswith(last) else earlier).append(p)
    if earlier_factor < 0:
        raise ValueError(f"The earlier layers' learning-rate factor must be >= 0, got {earlier_factor}.")
    if earlier_factor == 0:
        for p in earlier:
            p.requires_grad_(False)
        return [{"params": top, "lr": lr, "name": "last block + head"}]
    return [{"params": top, "lr": lr, "name": "last block + head"},
            {"params": earlier, "lr": lr * earlier_factor, "name": "earlier layers"}]


def _inputs(images: LessonSet, prep: Preprocessing) -> torch.Tensor:
    return normalise(resize(images.floats(), prep.size), prep).repeat(1, prep.channels, 1, 1)


def train_cnn(model: nn.Module, groups: list[dict], x: torch.Tensor, y: torch.Tensor, settings: CNNSettings,
              frozen_statistics: Sequence[nn.Module] = ()) -> nn.Module:
    """AdamW over the parameter groups for ``settings.epochs`` epochs (at least ``min_steps`` steps), seeded.

    ``frozen_statistics``: BatchNorm layers kept in eval mode (their running statistics untouched), as usual
    when fine-tuning a pretrained network on a few images.
    """
    optimiser = torch.optim.AdamW(groups, weight_decay=1e-4)
    batch = min(settings.batch_size, len(y))
    steps = max(settings.min_steps, settings.epochs * -(-len(y) // batch))
    generator = torch.Generator().manual_seed(settings.seed)
    model.train()
    for module in frozen_statistics:
        module.eval()
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(len(y), generator=generator)])
        idx, order = order[:batch], order[batch:]
        optimiser.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        optimiser.step()
    return model.eval()


@torch.inference_mode()
def predict_proba(model: nn.Module, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Softmax probabilities in batches."""
    return torch.cat([torch.softmax(model(x[i:i + batch]), 1) for i in range(0, len(x), batch)]).cpu().numpy()


def cnn_curve(approach: str, loaded: LoadedModel, task: Task, sizes: Sequence[int], settings: CNNSettings,
              from_scratch: bool, progress: ProgressFn | None = None) -> list[CurvePoint]:
    """Approach (c) (``from_scratch`` False: pretrained weights, fresh head, per-group learning rates) or (d)
    (the same architecture, seeded random weights, one learning rate) at every size, scored on every set."""
    with single_thread():
        return _cnn_curve(approach, loaded, task, sizes, settings, from_scratch, _quiet(progress))


def _cnn_curve(approach: str, loaded: LoadedModel, task: Task, sizes: Sequence[int], settings: CNNSettings,
               from_scratch: bool, report: ProgressFn) -> list[CurvePoint]:
    spec = loaded.spec
    prep = Preprocessing(settings.input_size, spec.preprocessing.channels, spec.preprocessing.mean,
                         spec.preprocessing.std)
    n_classes = len(task.class_names)
    x_pool, y_pool = _inputs(task.pool, prep), torch.from_numpy(task.pool.labels).long()
    evals = {name: (_inputs(s, prep), s.labels) for name, s in task.evals.items()}
    points = []
    chosen = check_sizes(sizes, len(y_pool))
    for i, n in enumerate(chosen):
        report(i / len(chosen), f"{approach}: training on {n:,} images")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            base = spec.build() if from_scratch else loaded.model
            model = fresh_head(base, n_classes, settings.seed)
        if from_scratch:
            groups, frozen = [{"params": list(model.parameters()), "lr": settings.lr}], []
        else:
            groups = parameter_groups(model, settings.lr, settings.earlier_lr_factor)
            last = LAST_BLOCK[_family(model)]
            frozen = [m for name, m in model.named_modules()
                      if isinstance(m, nn.BatchNorm2d) and not f"{name}.".startswith(last)]
        start = time.perf_counter()
        train_cnn(model, groups, x_pool[:n], y_pool[:n], settings, frozen)
        for name, (x, y) in evals.items():
            auc, acc = scores(y, predict_proba(model, x), np.arange(n_classes), n_classes)
            points.append(CurvePoint(approach, n, name, auc, acc, time.perf_counter() - start))
    report(1.0, f"{approach}: done")
    return points


# ---------------------------------------------------------------------------------------------- caching


def curve_key(*parts: object) -> str:
    """Cache key of one approach's curve: everything that changes its numbers."""
    return digest("transfer-curve-v1", *parts)


def cached_curve(key: str, compute: Callable[[], list[CurvePoint]], cache: ArrayCache | None = None
                 ) -> tuple[list[CurvePoint], bool]:
    """A curve from the disk cache (``hit`` True, times as measured when it was computed) or computed and stored."""

    def arrays() -> dict[str, np.ndarray]:
        pts = compute()
        return {"approach": np.array([p.approach for p in pts]), "n": np.array([p.n_train for p in pts]),
                "set": np.array([p.evaluated_on for p in pts]), "auc": np.array([p.auc for p in pts]),
                "acc": np.array([p.accuracy for p in pts]), "seconds": np.array([p.seconds for p in pts])}

    stored, hit = (cache or default_cache()).fetch("transfer-curves", key, arrays)
    points = [CurvePoint(str(a), int(n), str(s), float(u), float(c), float(t)) for a, n, s, u, c, t in
              zip(stored["approach"], stored["n"], stored["set"], stored["auc"], stored["acc"], stored["seconds"],
                  strict=True)]
    return points, hit


def model_key(loaded: LoadedModel) -> str:
    """The pretrained weights' digest, for cache keys."""
    return weights_digest(loaded.model)


def data_key(task: Task) -> str:
    """The task's images and labels, for cache keys."""
    return digest(task.name, task.pool.keys, task.pool.labels,
                  *((name, s.keys, s.labels) for name, s in task.evals.items()))
