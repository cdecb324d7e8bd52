"""Knowledge distillation (Hinton, Vinyals, Dean: "Distilling the Knowledge in a Neural Network",
2015).

    L_kd = T^2 * mean_b KL( p_t^T || p_s^T ),   p^T = softmax(z / T)

with z_s, z_t the student's and the frozen teacher's logits (B, K) and T the temperature. The T^2
factor keeps the gradient scale of the soft term independent of T (Hinton et al. §2).
"""

import torch
import torch.nn.functional as F
from torch import nn

from camexp.errors import UserError


def require_teacher(teacher, term: str) -> None:
    """Stop with one line when a term that reads the teacher runs without one."""
    if teacher is None:
        raise UserError(
            f"loss.{term} needs a teacher; use task=kd teacher=<name> teacher.ckpt=PATH "
            f"or drop {term} from the loss list"
        )


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0
) -> torch.Tensor:
    """``T^2 * mean_b sum_k p_t[b, k] (log p_t[b, k] - log p_s[b, k])``; logits (B, K) -> scalar."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)  # (B, K)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)  # (B, K)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)  # (B,)
    return temperature**2 * kl.mean()


class KDLoss(nn.Module):
    """The ``kd`` term: Hinton KD against the teacher's logits."""

    needs_teacher = True

    def __init__(self, weight: float = 0.9, temperature: float = 4.0):
        super().__init__()
        if temperature <= 0:
            raise UserError(f"loss.kd.temperature must be > 0, got {temperature}")
        self.weight = weight
        self.temperature = temperature

    def forward(self, student, teacher, targets: torch.Tensor) -> torch.Tensor:
        require_teacher(teacher, "kd")
        return kd_loss(student.logits, teacher.logits, self.temperature)
