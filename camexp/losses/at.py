"""Attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017).

    Q(F) = vec( mean_c |F[:, c]|^p ) / || vec( mean_c |F[:, c]|^p ) ||_2       (B, H*W)
    L_at = sum_{stages s} mean_{b, j} ( Q(F_s^student) - Q(F_s^teacher) )_{b, j}^2

with F_s the output of stage s (``stages="all"``, the default: the three stages of the CIFAR
ResNets and WRNs; for WRN the block outputs before the final BN-ReLU), or only the last-stage
features that feed the classifier (``stages="last"``, camexp's earlier variant). When the spatial
sizes of a pair differ, the larger map is average-pooled to the smaller one. This is ``at_loss`` of
mdistiller (mdistiller/distillers/AT.py, ``feats[1:]``) and RepDistiller (distiller_zoo/AT.py,
``feat[1:-1]``), p = 2, weight 1000 (mdistiller's CFG.AT.LOSS.FEAT_WEIGHT, RepDistiller's -b 1000).
Their ``Q`` takes ``F^p`` without the absolute value of the paper; for the default p = 2 the two
are the same.
"""

import torch
import torch.nn.functional as F
from torch import nn

from camexp.errors import UserError
from camexp.losses.kd import require_teacher

STAGES = ("all", "last")


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``Q(F)``: the L2-normalised spatial attention of (B, C, H, W) features. Returns (B, H*W)."""
    return F.normalize(features.float().abs().pow(p).mean(dim=1).flatten(1), dim=1)


def stage_at_loss(
    student_features: torch.Tensor, teacher_features: torch.Tensor, p: float = 2.0
) -> torch.Tensor:
    """One stage: mean squared difference of the two attention maps; (B, C, H, W) -> scalar."""
    s_size, t_size = student_features.shape[-2:], teacher_features.shape[-2:]
    if s_size != t_size:
        small = min(s_size, t_size, key=lambda hw: hw[0] * hw[1])
        student_features = F.adaptive_avg_pool2d(student_features, small)
        teacher_features = F.adaptive_avg_pool2d(teacher_features, small)
    return (attention_map(student_features, p) - attention_map(teacher_features, p)).pow(2).mean()


def at_loss(student_stages, teacher_stages, p: float = 2.0) -> torch.Tensor:
    """Sum of :func:`stage_at_loss` over paired stages (sequences of (B, C_i, H_i, W_i))."""
    if len(student_stages) != len(teacher_stages):
        raise UserError(
            f"loss.at pairs stages, but the student has {len(student_stages)} and the teacher "
            f"{len(teacher_stages)}; use loss.at.stages=last"
        )
    return sum(stage_at_loss(s, t, p) for s, t in zip(student_stages, teacher_stages, strict=True))


class ATLoss(nn.Module):
    """The ``at`` term: attention transfer on every stage (default) or the last one."""

    needs_teacher = True

    def __init__(self, weight: float = 1000.0, p: float = 2.0, stages: str = "all"):
        super().__init__()
        if p <= 0:
            raise UserError(f"loss.at.p must be > 0, got {p}")
        if stages not in STAGES:
            raise UserError(f"loss.at.stages={stages!r} is not an option; use all or last")
        self.weight = weight
        self.p = p
        self.stages = stages

    def forward(self, student, teacher, targets: torch.Tensor) -> torch.Tensor:
        require_teacher(teacher, "at")
        if self.stages == "last":
            return stage_at_loss(student.features, teacher.features.detach(), self.p)
        if not student.stages or not teacher.stages:
            raise UserError(
                "loss.at.stages=all needs the per-stage outputs of student and teacher, and this "
                "backbone exposes none (no stage_names or feature_info); use loss.at.stages=last"
            )
        return at_loss(student.stages, [t.detach() for t in teacher.stages], self.p)
