"""Cross-entropy against soft targets (one-hot, smoothed, or Mixup/CutMix rows)."""

import torch
import torch.nn.functional as F
from torch import nn


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``L_ce = mean_b -sum_k T[b, k] log softmax(z)[b, k]``.

    logits (B, K); targets soft (B, K) or int labels (B,).
    """
    if targets.dim() == 1:
        return F.cross_entropy(logits, targets)
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


class CrossEntropy(nn.Module):
    """The classification term; label smoothing and mixing already live in the targets."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def forward(self, student, teacher, targets: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(student.logits, targets)
