"""The distillation loss against a hand computation."""

import math

import pytest
import torch

from core.distill import distillation_loss, ensemble_logits


def _hand(student: list[float], teacher: list[float], label: int, t: float, alpha: float) -> float:
    def softmax(z: list[float], temp: float) -> list[float]:
        e = [math.exp(v / temp) for v in z]
        return [v / sum(e) for v in e]
    ps, pt = softmax(student, t), softmax(teacher, t)
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
    ce = -math.log(softmax(student, 1.0)[label])
    return alpha * t * t * kl + (1 - alpha) * ce


@pytest.mark.parametrize("t,alpha", [(1.0, 0.5), (4.0, 0.7), (2.5, 1.0), (3.0, 0.0)])
def test_matches_hand_computation(t: float, alpha: float) -> None:
    s, te = [[1.0, -0.5], [0.2, 2.0]], [[3.0, 0.0], [-1.0, 1.5]]
    labels = [0, 1]
    got = distillation_loss(torch.tensor(s), torch.tensor(te), torch.tensor(labels), t, alpha)
    want = sum(_hand(a, b, y, t, alpha) for a, b, y in zip(s, te, labels, strict=True)) / 2
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_student_equal_to_teacher_has_no_soft_loss() -> None:
    z = torch.tensor([[0.3, 1.2], [2.0, -1.0]])
    assert distillation_loss(z, z, torch.tensor([1, 0]), 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_rejects_bad_parameters() -> None:
    z = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(z, z, torch.tensor([0]), 0.0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(z, z, torch.tensor([0]), 2.0, 1.5)


def test_ensemble_averages_probabilities_not_logits() -> None:
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    x = torch.randn(5, 2)
    want = (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2
    torch.testing.assert_close(ensemble_logits([a, b], x).exp(), want.detach())
