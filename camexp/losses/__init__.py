"""Loss terms, one file each; :class:`Objective` sums named, weighted terms."""

from camexp.losses.cam import CAMLoss, cam_loss
from camexp.losses.ce import CrossEntropy, soft_cross_entropy
from camexp.losses.objective import Objective, build_objective

__all__ = [
    "CAMLoss",
    "CrossEntropy",
    "Objective",
    "build_objective",
    "cam_loss",
    "soft_cross_entropy",
]
