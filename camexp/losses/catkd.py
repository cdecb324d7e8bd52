"""Class attention transfer (Guo, Chen, Wang, Huang, Gao, Li: "Class Attention Transfer Based
Knowledge Distillation", CVPR 2023): the CAMs of *every* class, pooled to a small grid, matched.

    P(M) = adaptive_avg_pool(M, R x R),   M_k = W[k] . F          (B, K, R, R)
    L_catkd = mean_{b,k,i} ( n(P(M_s)) - n(P(M_t)) )_{b,k,i}^2

with F the last-stage features, W the linear classifier (the CAT-KD models turn it into a bias-free
1x1 conv before pooling, so M_k has no bias), R the grid (``CAM_RESOLUTION``) and n the L2
normalisation of each pooled map over its R*R cells (``IF_NORMALIZE``) or the identity. This
follows ``CAT_loss`` of GzyAftermath/CAT-KD (mdistiller/distillers/CAT_KD.py) step by step:
adaptive average pooling of both CAM stacks, optional ``F.normalize(dim=(2, 3))``,
``F.mse_loss`` (mean over B*K*R*R), times ``CAT_loss_weight``. Because pooling and the CAM are
both linear, P(M) is computed as the CAM of the pooled features, (B, C, R, R) instead of K maps.
The student's CAM keeps the gradient to its classifier (their ``conv_test`` is trained by it).
The authors' code defaults (mdistiller/engine/cfg.py) are weight 400, R = 2, normalisation on; their
CIFAR-100 same-family pairs set normalisation off and their own weights (configs/cifar100/CAT_KD).
"""

import torch
import torch.nn.functional as F
from torch import nn

from camexp.cam import class_activation_maps
from camexp.errors import UserError
from camexp.losses.cam import float32_maps
from camexp.losses.kd import require_teacher


def pooled_cams(features: torch.Tensor, weight: torch.Tensor, grid: int) -> torch.Tensor:
    """CAMs of every class average-pooled to ``grid x grid``. Returns (B, K, grid, grid)."""
    pooled = F.adaptive_avg_pool2d(features.float(), grid)  # (B, C, R, R)
    return class_activation_maps(pooled, weight.float())


def check_grid(grid: int, *feature_maps: torch.Tensor) -> None:
    """A grid finer than a feature map would repeat its cells instead of pooling: stop."""
    for features in feature_maps:
        h, w = features.shape[-2:]
        if grid > min(h, w):
            raise UserError(
                f"loss.catkd.grid={grid} is larger than a {h}x{w} feature map: pooling would "
                f"copy cells instead of averaging them; use loss.catkd.grid <= {min(h, w)}"
            )


def cat_kd_loss(
    student_features: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_features: torch.Tensor,
    teacher_weight: torch.Tensor,
    *,
    grid: int = 2,
    normalize: bool = True,
) -> torch.Tensor:
    """MSE between pooled (and optionally L2-normalised) student and teacher CAMs -> scalar.

    student_features (B, C_s, H_s, W_s), student_weight (K, C_s); the teacher's likewise.
    """
    if student_weight is None or teacher_weight is None:
        raise UserError("loss.catkd needs CAMs: student and teacher heads must be GAP -> linear")
    check_grid(grid, student_features, teacher_features)
    with float32_maps(student_features.device):
        cam_s = pooled_cams(student_features, student_weight, grid).flatten(2)  # (B, K, R*R)
        cam_t = pooled_cams(teacher_features.detach(), teacher_weight.detach(), grid).flatten(2)
        if normalize:
            cam_s, cam_t = F.normalize(cam_s, dim=2), F.normalize(cam_t, dim=2)
        return F.mse_loss(cam_s, cam_t)


class CATKDLoss(nn.Module):
    """The ``catkd`` term; ``weight`` is the authors' beta (``CAT_loss_weight``)."""

    needs_cam = True
    needs_teacher = True
    needs_teacher_cam = True

    def __init__(self, weight: float = 400.0, grid: int = 2, normalize: bool = True):
        super().__init__()
        if int(grid) < 1:
            raise UserError(f"loss.catkd.grid must be >= 1, got {grid}")
        self.weight = weight
        self.grid = int(grid)
        self.normalize = bool(normalize)

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
