"""Class attention transfer (Guo, Chen, Wang, Huang, Gao, Li: "Class Attention Transfer Based
Knowledge Distillation", CVPR 2023): the CAMs of *every* class, pooled to a small grid, matched.

    P(M) = adaptive_avg_pool(M, R x R),   M_k = W[k] . F          (B, K, R, R)
    L_catkd = mean_{b,k,i} ( n(P(M_s)) - n(P(M_t)) )^2

with n the L2 normalisation of each pooled map over its R*R cells (``normalize=true``) or the
identity. R = 2 is the paper's CIFAR setting. Because pooling and the CAM are both linear,
P(M) is computed as the CAM of the pooled features, which costs (B, C, R, R) instead of K maps.
The student's CAM keeps the gradient to its classifier (the CAT-KD models compute CAMs with their
classification layer); CAMs omit the bias (DESIGN.md §1's CAM).
"""

import torch
import torch.nn.functional as F
from torch import nn

from camexp.cam import class_activation_maps
from camexp.errors import UserError
from camexp.losses.kd import require_teacher


def pooled_cams(features: torch.Tensor, weight: torch.Tensor, grid: int) -> torch.Tensor:
    """CAMs of every class average-pooled to ``grid x grid``. Returns (B, K, grid, grid)."""
    pooled = F.adaptive_avg_pool2d(features.float(), grid)  # (B, C, R, R)
    return class_activation_maps(pooled, weight.float())


def cat_kd_loss(
    student_features: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_features: torch.Tensor,
    teacher_weight: torch.Tensor,
    *,
    grid: int = 2,
    normalize: bool = True,
) -> torch.Tensor:
    """MSE between pooled (and optionally L2-normalised) student and teacher CAMs -> scalar."""
    if student_weight is None or teacher_weight is None:
        raise UserError("loss.catkd needs CAMs: student and teacher heads must be GAP -> linear")
    cam_s = pooled_cams(student_features, student_weight, grid).flatten(2)  # (B, K, R*R)
    cam_t = pooled_cams(teacher_features.detach(), teacher_weight.detach(), grid).flatten(2)
    if normalize:
        cam_s, cam_t = F.normalize(cam_s, dim=2), F.normalize(cam_t, dim=2)
    return F.mse_loss(cam_s, cam_t)


class CATKDLoss(nn.Module):
    """The ``catkd`` term."""

    needs_cam = True
    needs_teacher = True
    needs_teacher_cam = True

    def __init__(self, weight: float = 1.0, grid: int = 2, normalize: bool = True):
        super().__init__()
        if grid < 1:
            raise UserError(f"loss.catkd.grid must be >= 1, got {grid}")
        self.weight = weight
        self.grid = grid
        self.normalize = normalize

    def forward(self, student, teacher, targets: torch.Tensor) -> torch.Tensor:
        require_teacher(teacher, "catkd")
        return cat_kd_loss(
            student.features,
            student.fc_weight,
            teacher.features,
            teacher.fc_weight,
            grid=self.grid,
            normalize=self.normalize,
        )
