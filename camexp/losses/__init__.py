"""Loss terms, one file each; :class:`Objective` sums named, weighted terms."""

from camexp.losses.at import ATLoss, at_loss, stage_at_loss
from camexp.losses.cam import CAMLoss, cam_loss
from camexp.losses.catkd import CATKDLoss, cat_kd_loss
from camexp.losses.ccm import CCMLoss, caam_cam_matching_loss
from camexp.losses.ce import CrossEntropy, soft_cross_entropy
from camexp.losses.kd import KDLoss, kd_loss
from camexp.losses.objective import Objective, build_objective

__all__ = [
    "ATLoss",
    "CAMLoss",
    "CATKDLoss",
    "CCMLoss",
    "CrossEntropy",
    "KDLoss",
    "Objective",
    "at_loss",
    "build_objective",
    "caam_cam_matching_loss",
    "cam_loss",
    "cat_kd_loss",
    "kd_loss",
    "soft_cross_entropy",
    "stage_at_loss",
]
