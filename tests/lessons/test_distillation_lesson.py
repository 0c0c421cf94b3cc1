"""Distillation lesson: the students train with core.distill's loss, the distilled one follows the teacher, the
teacher's logits are cached, and the scores are scikit-learn's."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from core import distill
from core.lessons import distillation as D
from core.lessons.transfer import LessonSet, Task
from core.zoo import LoadedModel, ModelSpec, Preprocessing

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _toy(n: int = 160, size: int = 16, seed: int = 0):
    """Films whose left half is brighter for class 1; a 'teacher' whose logits read that brightness exactly."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 120, (n, size, size)).astype(np.uint8)
    images[labels == 1, :, : size // 2] += 100
    return LessonSet(images, labels, tuple(f"toy:{seed}:{i}" for i in range(n)), 255.0)


class Brightness(torch.nn.Module):
    """A fixed teacher: logit difference proportional to the left half's mean minus the right half's."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(6.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        d = (x[..., :half].mean((1, 2, 3)) - x[..., half:].mean((1, 2, 3))) * self.scale
        return torch.stack([-d / 2, d / 2], 1)


def _teacher() -> LoadedModel:
    prep = Preprocessing(16, 1, (0.5,), (0.25,))
    spec = ModelSpec("toy-teacher", "", "toy", prep, ("0", "1"), "", "", Brightness, lambda m: None, "memory")
    return LoadedModel(spec, Brightness().eval(), torch.device("cpu"))


def test_student_training_calls_core_distill(monkeypatch):
    calls = []
    real = distill.distillation_loss

    def spy(student, teacher, labels, temperature=4.0, alpha=0.7, **kw):
        calls.append((temperature, alpha, teacher.clone(), labels.clone()))
        return real(student, teacher, labels, temperature, alpha, **kw)

    monkeypatch.setattr(distill, "distillation_loss", spy)
    data = _toy(40)
    x = torch.from_numpy(data.images).float()[:, None] / 255
    y = torch.from_numpy(data.labels).long()
    logits = torch.randn(40, 2)
    D.train_student(x, y, logits, 3.0, 0.4, D.StudentSettings(size=16, epochs=2, batch_size=16))
    assert len(calls) == 2 * 3  # 2 epochs of ceil(40 / 16) batches
    assert {(t, a) for t, a, _, _ in calls} == {(3.0, 0.4)}
    seen = torch.cat([t for _, _, t, _ in calls[:3]])
    labels = torch.cat([lab for _, _, _, lab in calls[:3]])
    # every film once per epoch, each with its own teacher logits and label
    order = [int(np.flatnonzero((logits == row).all(1))[0]) for row in seen]
    assert sorted(order) == list(range(40)) and torch.equal(labels, y[order])


def test_distilled_student_follows_the_teacher_not_noisy_labels():
    """Labels flipped at random for 40 % of the films: a student trained on the teacher alone (alpha = 1) ranks new
    films like the teacher, the hard-label student much less well."""
    data = _toy(240, seed=1)
    rng = np.random.default_rng(5)
    noisy = np.where(rng.random(len(data.labels)) < 0.4, 1 - data.labels, data.labels)
    x = torch.from_numpy(data.images).float()[:, None] / 255
    x = (x - 0.5) / 0.25
    teacher = Brightness()
    with torch.no_grad():
        soft = teacher(x)
    settings = D.StudentSettings(size=16, width=4, epochs=25, lr=1e-2, batch_size=32)
    test = _toy(200, seed=2)
    xt = (torch.from_numpy(test.images).float()[:, None] / 255 - 0.5) / 0.25
    aucs = {}
    for alpha in (0.0, 1.0):
        student = D.train_student(x, torch.from_numpy(noisy).long(), soft, 2.0, alpha, settings)
        with torch.no_grad():
            p = torch.softmax(student(xt), 1)[:, 1].numpy()
        aucs[alpha] = roc_auc_score(test.labels, p)
    assert aucs[1.0] > 0.95
    assert aucs[1.0] > aucs[0.0]


def test_teacher_logits_are_cached_by_weights_and_images(tmp_path):
    from core.embed.cache import ArrayCache

    cache = ArrayCache(tmp_path)
    teacher = _teacher()
    data = _toy(20)
    first = D.teacher_logits(teacher, data, cache)
    x = D.model_inputs(data, teacher.spec.preprocessing)
    torch.testing.assert_close(first, teacher.model(x).detach())
    assert len(list(cache.entries("teacher-logits"))) == 1
    with torch.no_grad():
        teacher.model.scale.fill_(2.0)  # other weights: another entry
    second = D.teacher_logits(teacher, data, cache)
    assert len(list(cache.entries("teacher-logits"))) == 2
    torch.testing.assert_close(second, first / 3)


def test_softened_outputs_flatten_with_temperature():
    logits = torch.tensor([[0.0, 4.0]])
    assert D.softened(logits, 1.0)[0, 1] == pytest.approx(1 / (1 + np.exp(-4)))
    assert D.softened(logits, 4.0)[0, 1] == pytest.approx(1 / (1 + np.exp(-1)))


def test_scores_are_scikit_learns_and_sizes_are_counted(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path))
    teacher = _teacher()
    task = Task("toy", ("0", "1"), _toy(80), {"new": _toy(60, seed=3)}, "toy-teacher")
    result = D.score_teacher(teacher, task)
    x = D.model_inputs(task.evals["new"], teacher.spec.preprocessing)
    p = torch.softmax(teacher.model(x), 1)[:, 1].detach().numpy()
    assert result.auc["new"] == pytest.approx(roc_auc_score(task.evals["new"].labels, p))
    assert result.accuracy["new"] == pytest.approx(accuracy_score(task.evals["new"].labels, p >= 0.5))
    assert result.params == 1 and result.images_per_s > 0
    student = D.student(teacher, task, 2.0, 0.5, D.StudentSettings(size=16, width=4, epochs=2))
    assert student.params == sum(p.numel() for p in D.TinyCNN(4).parameters())
    assert student.name == "student, distilled (T = 2, alpha = 0.5)" and 0 <= student.auc["new"] <= 1
    assert D.student(teacher, task, 2.0, 0.0, D.StudentSettings(size=16, width=4, epochs=1)).name == \
        "student, hard labels"
