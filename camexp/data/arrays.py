"""The in-memory form every array reader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ArraySplit:
    """One split held in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])
