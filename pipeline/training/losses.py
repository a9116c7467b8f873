"""The distillation loss, the one place that says what `kd` means."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DistillationLoss(nn.Module):
    """(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(teacher_T || student_T)
    + beta * feature term.

    Labels are class indices or, for mixed images, distributions over the classes; CE
    smooths them by `label_smoothing` (the teacher's term is never smoothed).

    With `hard`, the soft term is replaced by CE on the teacher's argmax (DeiT's hard
    distillation) and T is unused. The feature term compares a learned linear projection
    of the student's pooled features with the teacher's: MSE, or 1 - cosine similarity.
    Without teacher outputs (baseline) the loss is plain CE. alpha = beta = 0 is allowed.
    """

    def __init__(self, alpha: float = 0.5, temperature: float = 4.0, beta: float = 0.0,
                 feature_loss: str = "mse", hard: bool = False, label_smoothing: float = 0.0,
                 student_dim: int | None = None, teacher_dim: int | None = None):
        super().__init__()
        if feature_loss not in ("mse", "cosine"):
            raise ValueError(f"feature_loss = {feature_loss!r}: use 'mse' or 'cosine'")
        self.alpha, self.temperature, self.beta = alpha, temperature, beta
        self.feature_loss, self.hard, self.label_smoothing = feature_loss, hard, label_smoothing
        self.projector = nn.Linear(student_dim, teacher_dim) if beta and student_dim else None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                teacher_logits: torch.Tensor | None = None, features: torch.Tensor | None = None,
                teacher_features: torch.Tensor | None = None) -> torch.Tensor:
        ce = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        if teacher_logits is None:
            return ce
        teacher_logits = teacher_logits.float()
        if self.hard:
            soft = F.cross_entropy(logits, teacher_logits.argmax(1))
        else:
            t = self.temperature
            soft = t * t * F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                                    reduction="batchmean", log_target=True)
        loss = (1 - self.alpha) * ce + self.alpha * soft
        if self.projector is not None:
            loss = loss + self.beta * self._feature_term(self.projector(features), teacher_features.float())
        return loss

    def _feature_term(self, projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.feature_loss == "mse":
            return F.mse_loss(projected, target)
        return (1 - F.cosine_similarity(projected, target, dim=1)).mean()
