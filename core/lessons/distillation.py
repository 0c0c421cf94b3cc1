"""Distillation: a tiny CNN learns from the bundled model's softened outputs instead of (only) the hard labels.

Two students with the same architecture, seed, images and optimiser steps: one trained on the labels alone
(``core.distill.distillation_loss`` with alpha = 0, plain cross-entropy), one on the teacher's outputs softened at
temperature T mixed with the labels (alpha > 0). The teacher sees the films at its own resolution; the students
at a low one. Both are scored on the same held-out sets as the teacher, with their size and measured speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core import distill
from core.embed.cache import ArrayCache, default_cache, digest, weights_digest
from core.lessons.transfer import LessonSet, Task, predict_proba, scores
from core.threads import single_thread
from core.zoo import LoadedModel, Preprocessing, normalise, resize

STUDENT_SIZE = 64


class TinyCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU-maxpool blocks (``width``, 2x, 4x channels) -> global average pool -> linear."""

    def __init__(self, width: int = 8, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c = out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.fc(self.features(x).mean((2, 3)))


def model_inputs(images: LessonSet, prep: Preprocessing) -> torch.Tensor:
    """Films resized and normalised as ``prep`` says (the teacher's own, or the student's low resolution)."""
    return normalise(resize(images.floats(), prep.size), prep).repeat(1, prep.channels, 1, 1)


@torch.inference_mode()
def logits(model: nn.Module, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """A model's logits in batches."""
    return torch.cat([model(x[i:i + batch]).float() for i in range(0, len(x), batch)])


def teacher_logits(teacher: LoadedModel, images: LessonSet, cache: ArrayCache | None = None) -> torch.Tensor:
    """The teacher's logits for every film at its own input size, cached on disk by weights and images."""
    key = digest("teacher-logits-v1", weights_digest(teacher.model), teacher.spec.preprocessing, images.keys)
    x = lambda: model_inputs(images, teacher.spec.preprocessing).to(teacher.device)  # noqa: E731
    with single_thread():
        arrays, _ = (cache or default_cache()).fetch("teacher-logits", key,
                                                     lambda: {"logits": logits(teacher.model, x()).cpu().numpy()})
    return torch.from_numpy(arrays["logits"])


def softened(logit: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T): what the soft term of the loss asks the student to match."""
    return torch.softmax(logit / temperature, 1)


@dataclass(frozen=True)
class StudentSettings:
    """How both students train: input size, width, epochs, learning rate, batch and seed."""

    size: int = STUDENT_SIZE
    width: int = 8
    epochs: int = 8
    lr: float = 3e-3
    batch_size: int = 64
    seed: int = 0


def train_student(x: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor, temperature: float, alpha: float,
                  settings: StudentSettings, progress: Callable[[float], None] | None = None) -> TinyCNN:
    """A seeded TinyCNN trained with ``core.distill.distillation_loss`` (alpha = 0: the labels alone)."""
    with single_thread():
        return _train_student(x, y, teacher, temperature, alpha, settings, progress)


def _train_student(x: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor, temperature: float, alpha: float,
                   settings: StudentSettings, progress: Callable[[float], None] | None) -> TinyCNN:
    generator = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = TinyCNN(settings.width, x.shape[1])
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    model.train()
    for epoch in range(settings.epochs):
        for idx in torch.randperm(len(y), generator=generator).split(settings.batch_size):
            optimiser.zero_grad()
            distill.distillation_loss(model(x[idx]), teacher[idx], y[idx], temperature, alpha).backward()
            optimiser.step()
        if progress is not None:
            progress((epoch + 1) / settings.epochs)
    return model.eval()


def images_per_second(model: nn.Module, x: torch.Tensor, repeats: int = 2) -> float:
    """Forward-pass throughput on ``x`` (batches of 128), best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        logits(model, x)
        best = min(best, time.perf_counter() - start)
    return len(x) / best


@dataclass(frozen=True)
class Result:
    """One model's scores per set (AUC, accuracy), size and speed."""

    name: str
    params: int
    input_size: int
    images_per_s: float
    auc: dict[str, float]
    accuracy: dict[str, float]
    train_seconds: float


SPEED_IMAGES = 64  # films timed per throughput measurement


def _score(name: str, model: nn.Module, inputs: dict[str, torch.Tensor], task: Task, size: int, seconds: float
           ) -> Result:
    auc, acc = {}, {}
    for set_name, x in inputs.items():
        labels = task.evals[set_name].labels
        auc[set_name], acc[set_name] = scores(labels, predict_proba(model, x), np.arange(2), 2)
    speed = images_per_second(model, next(iter(inputs.values()))[:SPEED_IMAGES])
    return Result(name, sum(p.numel() for p in model.parameters()), size, speed, auc, acc, seconds)


def score_teacher(teacher: LoadedModel, task: Task) -> Result:
    """The teacher on every evaluation set, at its own input size."""
    prep = teacher.spec.preprocessing
    inputs = {name: model_inputs(s, prep).to(teacher.device) for name, s in task.evals.items()}
    with single_thread():
        return _score(f"teacher ({teacher.spec.name})", teacher.model, inputs, task, prep.size, float("nan"))


def student(teacher: LoadedModel, task: Task, temperature: float, alpha: float, settings: StudentSettings,
            progress: Callable[[float], None] | None = None) -> Result:
    """A student trained on the training films with ``core.distill.distillation_loss`` at ``temperature`` and
    ``alpha`` (0: the labels alone, the temperature then plays no part), scored on every evaluation set."""
    soft = teacher_logits(teacher, task.pool)
    prep = Preprocessing(settings.size, teacher.spec.preprocessing.channels, teacher.spec.preprocessing.mean,
                         teacher.spec.preprocessing.std)
    x, y = model_inputs(task.pool, prep), torch.from_numpy(task.pool.labels).long()
    start = time.perf_counter()
    model = train_student(x, y, soft, temperature, alpha, settings, progress)
    name = "student, hard labels" if alpha == 0 else f"student, distilled (T = {temperature:g}, alpha = {alpha:g})"
    inputs = {name: model_inputs(s, prep) for name, s in task.evals.items()}
    with single_thread():
        return _score(name, model, inputs, task, settings.size, time.perf_counter() - start)
