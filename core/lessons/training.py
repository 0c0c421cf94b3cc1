"""Live training of a small CNN on low-resolution chest X-rays, one epoch at a time, for the Training lab.

The films are decoded once at 64 px (disk-cached), split by patient with ``core.data.patient_split`` (the same
fold ``core.train`` uses) and scored every epoch on three sets: the training images (loss and accuracy averaged
over the epoch's batches while the network learns, with dropout and augmentation on: the usual training curve),
the patient-level validation fold and ``external/`` (new patients). Every loss shown is the plain mean
cross-entropy, also when the optimised loss is class-weighted, so the three curves stay comparable.

``LiveRun`` is an iterator of ``EpochRecord``: the page draws each record as it arrives, and stopping is simply
not asking for the next one. A run is a function of its ``Settings`` (seeded), so a finished run can be replayed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from core.data import CLASS_NAMES, ImageFolderIndex, data_dir, external_dir, index_folder, load_tensors, patient_split
from core.embed.cache import ArrayCache, default_cache, digest
from core.evaluate import binary_metrics
from core.nets import WideResNet18
from core.zoo import Preprocessing

IMAGE_SIZE = 64
VAL_FRACTION = 0.2
SPLIT_SEED = 0  # core.train's default: the validation fold is the one the bundled model was checked on
DECODE_CHUNK = 256  # images decoded between two progress reports
EVAL_BATCH = 512
Architecture = Literal["resnet", "plain"]
Optimiser = Literal["sgd", "momentum", "adam"]
OPTIMISERS: dict[str, str] = {"sgd": "SGD", "momentum": "SGD with momentum 0.9", "adam": "Adam (AdamW)"}
ARCHITECTURES: dict[str, str] = {"resnet": "ResNet-18 topology (the bundled model's, narrower)",
                                 "plain": "plain conv-pool stack (4 blocks)"}
ProgressFn = Callable[[float], None]


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Images:
    """Decoded films in [0, 1] (N x 1 x S x S float32) with their labels (N, 1 = PNEUMONIA)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class LabData:
    """The three sets a live run is scored on; ``external`` is None when the new-patient folder is missing."""

    train: Images
    validation: Images
    external: Images | None
    key: str = ""  # identifies the films and the image size (the disk cache's key)


def _decode(index: ImageFolderIndex, size: int, progress: ProgressFn | None, done: int, total: int) -> torch.Tensor:
    """``load_tensors`` in chunks, reporting the overall fraction decoded after each chunk."""
    raw = Preprocessing(size, 1, (0.0,), (1.0,))
    parts = []
    for start in range(0, len(index), DECODE_CHUNK):
        parts.append(load_tensors(index.subset(range(start, min(start + DECODE_CHUNK, len(index)))), raw,
                                  progress=False))
        if progress is not None:
            progress((done + start + len(parts[-1])) / total)
    return torch.cat(parts)


def _fingerprint(index: ImageFolderIndex) -> tuple:
    """File names, sizes and modification times: a changed, added or removed film changes the cache key."""
    return tuple((str(p), (s := p.stat()).st_size, s.st_mtime_ns) for p in index.paths)


def load_lab_data(folder: Path | None = None, external: Path | None = None, size: int = IMAGE_SIZE,
                  progress: ProgressFn | None = None, cache: ArrayCache | None = None) -> LabData:
    """Decode the training folder (split by patient) and the new-patient folder once at ``size`` px, cached on disk
    under the user's cache folder (``$CNNLENS_CACHE``); the defaults are ``core.data``'s folders."""
    folder = folder or data_dir()
    if folder is None:
        raise FileNotFoundError("No chest X-ray folder: set $CNNLENS_DATA to a folder with NORMAL/ and PNEUMONIA/.")
    external = external if external is not None else external_dir()
    index = index_folder(folder, CLASS_NAMES)
    try:
        train_idx, val_idx = patient_split(index, VAL_FRACTION, SPLIT_SEED)
    except ValueError as err:  # scikit-learn's fold splitter needs a few patients of each class
        counts = ", ".join(f"{n} {c}" for c, n in zip(CLASS_NAMES, np.bincount(index.labels, minlength=2),
                                                          strict=True))
        raise ValueError(f"{folder} has too few films for a patient-level validation fold ({counts}; at least "
                         f"{round(1 / VAL_FRACTION)} patients of each class are needed).") from err
    ext_idx = index_folder(external, CLASS_NAMES) if external is not None else None
    parts = {"train": train_idx, "validation": val_idx, **({"external": ext_idx} if ext_idx is not None else {})}
    key = digest("training-lab-v1", size, *((name, _fingerprint(idx)) for name, idx in parts.items()))
    total = sum(len(idx) for idx in parts.values())

    def compute() -> dict[str, np.ndarray]:
        arrays, done = {}, 0
        for name, idx in parts.items():
            arrays[f"{name}_x"] = _decode(idx, size, progress, done, total).numpy()
            arrays[f"{name}_y"] = idx.labels
            done += len(idx)
        return arrays

    arrays, _ = (cache or default_cache()).fetch("training_lab", key, compute)
    sets = {name: Images(torch.from_numpy(arrays[f"{name}_x"]), torch.from_numpy(arrays[f"{name}_y"]).long())
            for name in parts}
    return LabData(sets["train"], sets["validation"], sets.get("external"), key)


def sample_training_set(images: Images, size: int, normal_share: float | None, seed: int) -> Images:
    """A seeded random subset of ``size`` training films; ``normal_share`` (0-1) fixes the fraction of NORMAL
    films, None keeps the folder's own mix (a stratified sample)."""
    labels = images.y.numpy()
    counts = np.bincount(labels, minlength=2)
    if size < 4:
        raise ValueError(f"A training set needs at least 4 films, not {size}.")
    if size > len(labels):
        raise ValueError(f"The training fold has {len(labels):,} films; {size:,} were asked for.")
    share = counts[0] / len(labels) if normal_share is None else normal_share
    n_normal = min(max(round(size * share), 1), size - 1)  # one film of each class at least
    want = (n_normal, size - n_normal)
    for label, (n, have) in enumerate(zip(want, counts, strict=True)):
        if n > have:
            raise ValueError(f"{size:,} films with {share:.0%} NORMAL need {n:,} {CLASS_NAMES[label]} "
                             f"films; the training fold has {have:,}. Choose fewer films or another share.")
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), want[c], replace=False) for c in (0, 1)]))
    return Images(images.x[keep], images.y[keep])


# ---------------------------------------------------------------------------------------------- models


def _without_batch_norm(model: nn.Module) -> None:
    """Replace every BatchNorm2d by Identity; each residual branch's last conv starts at zero (Fixup's rule),
    so the blocks start as identities and the signal does not grow through the stack without normalisation."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, nn.Identity())
        else:
            _without_batch_norm(child)
    for module in model.modules():
        if isinstance(module, BasicBlock):
            nn.init.zeros_(module.conv2.weight)


def plain_cnn(width: int, dropout: float, batch_norm: bool) -> nn.Sequential:
    """Four conv 3x3 - (BN) - ReLU - max-pool 2 blocks of width w, 2w, 4w, 8w, global average pool, dropout,
    linear: the classic stack before residual connections."""
    layers: list[nn.Module] = []
    channels = 1
    for out in (width, 2 * width, 4 * width, 8 * width):
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm),
                   *([nn.BatchNorm2d(out)] if batch_norm else []), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(channels, len(CLASS_NAMES)))


def build_model(architecture: Architecture, width: int, dropout: float, batch_norm: bool) -> nn.Module:
    """A fresh one-channel, two-class network (seed the global RNG first for a reproducible start)."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"Dropout must be in [0, 1), not {dropout}.")
    if architecture == "plain":
        return plain_cnn(width, dropout, batch_norm)
    if architecture != "resnet":
        raise ValueError(f"Unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")
    model = WideResNet18(width=width, in_channels=1, num_classes=len(CLASS_NAMES))
    if not batch_norm:
        _without_batch_norm(model)
    model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    return model


def make_optimiser(kind: Optimiser, params: Iterator[nn.Parameter], lr: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """SGD, SGD with momentum 0.9, or Adam with decoupled weight decay (AdamW; equal to Adam when the decay is 0)."""
    if kind == "adam":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if kind in ("sgd", "momentum"):
        return torch.optim.SGD(params, lr=lr, momentum=0.9 if kind == "momentum" else 0.0, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimiser {kind!r}; choose one of {', '.join(OPTIMISERS)}.")


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """n / (classes x count) per class: each class carries the same total weight in the loss."""
    counts = torch.bincount(labels, minlength=len(CLASS_NAMES)).float()
    return len(labels) / (len(CLASS_NAMES) * counts)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-film random rotation (±8°), zoom (0.92-1.1), shift (±6 %), brightness and contrast (±20 %).

    Written for whole batches with one ``grid_sample``: torchvision's v2 transforms draw one set of parameters per
    call, so per-film jitter would mean a Python loop over the batch (what ``core.train`` does at 192 px), which
    here would cost more than the network's own step."""
    n = len(x)

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    angle = uniform(-8.0, 8.0) * math.pi / 180
    scale = 1.0 / uniform(0.92, 1.1)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, uniform(-0.12, 0.12)], 1),
                         torch.stack([sin, cos, uniform(-0.12, 0.12)], 1)], 1)  # shifts in [-1, 1] units: ±6 %
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    mean = moved.mean(dim=(1, 2, 3), keepdim=True)
    contrast, brightness = uniform(0.8, 1.2).view(-1, 1, 1, 1), uniform(0.8, 1.2).view(-1, 1, 1, 1)
    return ((moved - mean) * contrast + mean * brightness).clamp(0, 1)


# ---------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Settings:
    """Everything that decides a live run (with the data, it decides the run exactly: it is seeded)."""

    architecture: Architecture = "resnet"
    width: int = 8
    lr: float = 1e-3
    batch_size: int = 64
    epochs: int = 10
    optimiser: Optimiser = "adam"
    weight_decay: float = 0.0
    dropout: float = 0.0
    batch_norm: bool = True
    augment: bool = False
    class_weighting: bool = True
    train_size: int = 2000
    normal_share: float | None = None  # None: the folder's own mix (26 % NORMAL)
    seed: int = 0

    def key(self) -> str:
        """A stable text key for caching a run."""
        return repr(dataclasses.astuple(self))


@dataclass(frozen=True)
class SetScore:
    """One set's numbers at one epoch; sensitivity and specificity at P(PNEUMONIA) >= 0.5."""

    loss: float  # mean cross-entropy, unweighted
    accuracy: float
    sensitivity: float
    specificity: float
    roc_auc: float
    called_positive: float  # share of films called PNEUMONIA
    n: int


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch did: the training batches' running scores, validation and new-patient scores, timings."""

    epoch: int
    train: SetScore
    validation: SetScore
    external: SetScore | None
    train_seconds: float
    score_seconds: float
    diverged: bool = False  # the loss became infinite or NaN: the run ends here


def set_score(labels: np.ndarray, prob_positive: np.ndarray, loss: float) -> SetScore:
    """Threshold metrics of ``core.evaluate.binary_metrics`` at 0.5, with the given mean loss."""
    m = binary_metrics(labels, prob_positive, 0.5)
    return SetScore(float(loss), float(m["accuracy"]), float(m["sensitivity"]), float(m["specificity"]),
                    float(m["roc_auc"]), float(np.mean(np.asarray(prob_positive) >= 0.5)), int(m["n"]))


@torch.no_grad()
def score_images(model: nn.Module, images: Images, mean: float, std: float) -> SetScore:
    """Evaluation-mode scores of ``model`` on a set (normalised with the training set's mean and std)."""
    model.eval()
    logits = torch.cat([model((images.x[i:i + EVAL_BATCH] - mean) / std) for i in range(0, len(images), EVAL_BATCH)])
    loss = F.cross_entropy(logits, images.y).item()
    return set_score(images.y.numpy(), torch.softmax(logits, 1)[:, 1].numpy(), loss)


def _nan_score(n: int) -> SetScore:
    nan = float("nan")
    return SetScore(nan, nan, nan, nan, nan, nan, n)


class LiveRun:
    """A seeded training run that yields one ``EpochRecord`` per epoch; ``model`` is the network being trained
    (between two records it holds the weights the last record scored)."""

    def __init__(self, data: LabData, settings: Settings) -> None:
        s = self.settings = settings
        if s.epochs < 1 or s.batch_size < 1 or s.width < 1 or not s.lr > 0 or s.weight_decay < 0:
            raise ValueError("Epochs, batch size and width must be at least 1, the learning rate above 0 and the "
                             "weight decay at least 0.")
        self.train = sample_training_set(data.train, s.train_size, s.normal_share, s.seed)
        self.validation, self.external = data.validation, data.external
        self.mean, self.std = float(self.train.x.mean()), float(self.train.x.std().clamp_min(1e-6))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            self.model = build_model(s.architecture, s.width, s.dropout, s.batch_norm)
            self._dropout_state = torch.random.get_rng_state()  # dropout draws from here, kept apart from callers'
        self.optimiser = make_optimiser(s.optimiser, self.model.parameters(), s.lr, s.weight_decay)
        self.weights = class_weights(self.train.y) if s.class_weighting else None
        self.generator = torch.Generator().manual_seed(s.seed)

    def __iter__(self) -> Iterator[EpochRecord]:
        for epoch in range(1, self.settings.epochs + 1):
            record = self.epoch(epoch)
            yield record
            if record.diverged:
                return

    def epoch(self, epoch: int) -> EpochRecord:
        """Train one pass over the training set in shuffled batches, then score the three sets."""
        s, started = self.settings, time.perf_counter()
        self.model.train()
        order = torch.randperm(len(self.train), generator=self.generator)
        loss_sum, probs, labels = 0.0, [], []
        with torch.random.fork_rng(devices=[]):
            torch.random.set_rng_state(self._dropout_state)
            for start in range(0, len(order), s.batch_size):
                idx = order[start:start + s.batch_size]
                x, y = self.train.x[idx], self.train.y[idx]
                if s.augment:
                    x = augment(x, self.generator)
                logits = self.model((x - self.mean) / self.std)
                per_film = F.cross_entropy(logits, y, reduction="none")
                # the weighted mean F.cross_entropy(weight=w) computes: sum w_y * l / sum w_y
                loss = per_film.mean() if self.weights is None else (
                    (self.weights[y] * per_film).sum() / self.weights[y].sum())
                if not torch.isfinite(loss):
                    return EpochRecord(epoch, _nan_score(len(self.train)), _nan_score(len(self.validation)),
                                       None if self.external is None else _nan_score(len(self.external)),
                                       time.perf_counter() - started, 0.0, diverged=True)
                self.optimiser.zero_grad(set_to_none=True)
                loss.backward()
                self.optimiser.step()
                loss_sum += per_film.detach().sum().item()
                probs.append(torch.softmax(logits.detach(), 1)[:, 1])
                labels.append(y)
            self._dropout_state = torch.random.get_rng_state()
        trained = time.perf_counter()
        train = set_score(torch.cat(labels).numpy(), torch.cat(probs).numpy(), loss_sum / len(order))
        validation = score_images(self.model, self.validation, self.mean, self.std)
        external = None if self.external is None else score_images(self.model, self.external, self.mean, self.std)
        return EpochRecord(epoch, train, validation, external, trained - started, time.perf_counter() - trained)


# ---------------------------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """Settings that make one lesson visible, with what to look for."""

    name: str
    settings: Settings
    look_for: str


PRESETS: tuple[Preset, ...] = (
    Preset("Default: a reasonable start", Settings(),
           "All three curves fall together; new patients stay below the validation fold."),
    Preset("Overfit a tiny training set",
           Settings(train_size=100, epochs=40, normal_share=0.5, lr=3e-3),
           "The training loss falls to almost zero and its accuracy reaches 100 %, while the validation and "
           "new-patient losses stop falling and drift up: the network memorised 100 films. The gap between the "
           "curves is the overfitting."),
    Preset("A learning rate that is too high",
           Settings(optimiser="momentum", lr=1.0, epochs=8, batch_norm=False),
           "The loss does not fall: every step overshoots, accuracy sits at chance on the (class-weighted) training "
           "films and flips between 'all NORMAL' and 'all PNEUMONIA' on the other sets. Set the learning rate to "
           "0.01 and it learns. (Batch normalisation is off here: it makes a network far more tolerant of large "
           "rates; switch it on and compare.)"),
    Preset("No class weighting: the model answers PNEUMONIA for everything",
           Settings(class_weighting=False, normal_share=0.1, train_size=1000, optimiser="sgd", lr=0.01, epochs=8),
           "With 90 % PNEUMONIA films and a plain loss, calling every film PNEUMONIA is already 90 % right: the "
           "specificity (NORMAL films recognised) stays near 0. Switch class weighting on and compare."),
    Preset("Regularisation closes the gap",
           Settings(train_size=100, epochs=40, normal_share=0.5, lr=3e-3, augment=True, dropout=0.5,
                    weight_decay=0.05),
           "The same 100 films as 'Overfit a tiny training set', with augmentation, dropout and weight decay: the "
           "training loss stays well above zero and the validation and new-patient losses end lower: the gap "
           "between the curves is much smaller."),
    Preset("Validation looks better than new patients",
           Settings(train_size=4000, epochs=6),
           "Validation films come from the same hospital and period as the training films (other patients, though); "
           "the new patients in external/ do not, and every number is lower there."),
)
PRESET_NAMES = tuple(p.name for p in PRESETS)


def preset(name: str) -> Preset:
    """A preset by name, with a clear error for an unknown one."""
    for p in PRESETS:
        if p.name == name:
            return p
    raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}.")
