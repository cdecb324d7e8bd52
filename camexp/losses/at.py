"""Attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017),
on the last stage.

    Q(F) = vec( mean_c |F[:, c]|^p ) / || vec( mean_c |F[:, c]|^p ) ||_2       (B, H*W)
    L_at = mean_{b, j} ( Q(F_s) - Q(F_t) )_{b, j}^2

with F_s, F_t the student's and teacher's last-stage features. When the spatial sizes differ, the
larger map is average-pooled to the smaller one (as RepDistiller does). p = 2 and the weight 1000
follow the authors' code and mdistiller's CIFAR-100 setting (there summed over stages; here only
the last stage, as the issue asks).
"""

import torch
import torch.nn.functional as F
from torch import nn

from camexp.errors import UserError
from camexp.losses.kd import require_teacher


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``Q(F)``: the L2-normalised spatial attention of (B, C, H, W) features. Returns (B, H*W)."""
    return F.normalize(features.float().abs().pow(p).mean(dim=1).flatten(1), dim=1)


def at_loss(
    student_features: torch.Tensor, teacher_features: torch.Tensor, p: float = 2.0
) -> torch.Tensor:
    """Mean squared difference of the two attention maps; features (B, C, H, W) -> scalar."""
    s_size, t_size = student_features.shape[-2:], teacher_features.shape[-2:]
    if s_size != t_size:
        small = min(s_size, t_size, key=lambda hw: hw[0] * hw[1])
        student_features = F.adaptive_avg_pool2d(student_features, small)
        teacher_features = F.adaptive_avg_pool2d(teacher_features, small)
    return (attention_map(student_features, p) - attention_map(teacher_features, p)).pow(2).mean()


class ATLoss(nn.Module):
    """The ``at`` term: attention transfer on the last stage."""

    needs_teacher = True

    def __init__(self, weight: float = 1000.0, p: float = 2.0):
        super().__init__()
        if p <= 0:
            raise UserError(f"loss.at.p must be > 0, got {p}")
        self.weight = weight
        self.p = p

    def forward(self, student, teacher, targets: torch.Tensor) -> torch.Tensor:
        require_teacher(teacher, "at")
        return at_loss(student.features, teacher.features.detach(), self.p)
