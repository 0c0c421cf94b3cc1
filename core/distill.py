"""Knowledge distillation (Hinton et al. 2015): a student learns from a teacher's softened outputs.

One loss for everything that distils: ``core.train --teacher`` (an ensemble distilled into the bundled model)
and the classroom's distillation lesson.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 4.0, alpha: float = 0.7, weight: torch.Tensor | None = None,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``.

    Both outputs are softened by the temperature T; the T^2 factor keeps the soft term's gradients on the
    scale of the hard one as T grows (Hinton et al. 2015, section 2). ``alpha = 0`` is plain cross-entropy,
    ``alpha = 1`` learns from the teacher alone. The KL term is averaged over the batch.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    soft = F.kl_div(F.log_softmax(student_logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels, weight=weight, label_smoothing=label_smoothing)
    return alpha * temperature ** 2 * soft + (1.0 - alpha) * hard


def ensemble_logits(models: list[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Log of the members' mean probabilities: the ensemble's prediction as logits (averaging probabilities,
    not logits, so one over-confident member cannot dominate)."""
    with torch.no_grad():
        probs = torch.stack([torch.softmax(m(x).float(), 1) for m in models]).mean(0)
    return probs.clamp_min(1e-12).log()
