"""CAAM-CAM matching distillation (Wang et al., "CAM-loss", ICCV 2021, §3.3): the frozen
teacher's target-class CAM supervises the student's class-agnostic activation map.

    L_ccm = mean_{b,h,w} d( N(A_s), N(R(M_T^t)) )

with A_s = sum_c F_s[:, c] the student's CAAM (B, H, W), M_T^t = sum_k T[:, k] W_t[k] . F_t the
teacher's target CAM (B, H_t, W_t), R a bilinear resize to the student's H x W (only when the sizes
differ), N the per-map normalisation and d the pointwise distance of CAM-loss (camexp.losses.cam).
The teacher is frozen, so only the student's features receive gradient.

What the paper fixes: teacher target CAM as the target, student CAAM as the prediction. The
normalisation, distance, ReLU, soft/hard target and the resize mode are reconstructions, named
options with CAM-loss's defaults (docs/design.md §1).
"""

import torch
import torch.nn.functional as F
from torch import nn

from camexp.cam import class_agnostic_map, normalize, target_cam
from camexp.errors import UserError
from camexp.losses.cam import float32_maps, map_distance, map_options
from camexp.losses.kd import require_teacher


def caam_cam_matching_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    teacher_weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    norm: str = "minmax",
    distance: str = "l1",
    relu: bool = False,
    target: str = "soft",
    eps: float = 1e-6,
) -> torch.Tensor:
    """CCM between the student's CAAM and the teacher's target CAM; returns a scalar.

    student_features (B, C_s, H, W); teacher_features (B, C_t, H_t, W_t); teacher_weight (K, C_t);
    targets int labels (B,) or soft (B, K). ``relu`` clamps both maps at zero before resizing.
    """
    if teacher_weight is None:
        raise UserError("loss.ccm needs the teacher's CAM: its head must be GAP -> linear")
    if target == "hard" and targets.dim() == 2:
        targets = targets.argmax(dim=1)
    with float32_maps(student_features.device):
        t_features, t_weight = teacher_features.detach().float(), teacher_weight.detach().float()
        cam = target_cam(t_features, t_weight, targets)  # (B, H_t, W_t)
        caam = class_agnostic_map(student_features.float())  # (B, H, W)
        if relu:
            cam, caam = cam.relu(), caam.relu()
        if cam.shape[-2:] != caam.shape[-2:]:
            size = caam.shape[-2:]
            cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return map_distance(normalize(caam, norm, eps), normalize(cam, norm, eps), distance)


class CCMLoss(nn.Module):
    """The ``ccm`` term; ``weight`` is beta in L = L_ce + beta L_ccm (+ gamma L_kd)."""

    needs_teacher = True
    needs_teacher_cam = True

    def __init__(
        self,
        weight: float = 1.0,
        warmup_epochs: int = 0,
        norm: str = "minmax",
        distance: str = "l1",
        relu: bool = False,
        target: str = "soft",
        eps: float = 1e-6,
    ):
        super().__init__()
        self.weight = weight
        self.warmup_epochs = warmup_epochs  # beta is 0 before this epoch
        self.options = map_options("ccm", norm, distance, target, relu=relu, eps=eps)

    def forward(self, student, teacher, targets: torch.Tensor) -> torch.Tensor:
        require_teacher(teacher, "ccm")
        return caam_cam_matching_loss(
            student.features, teacher.features, teacher.fc_weight, targets, **self.options
        )
