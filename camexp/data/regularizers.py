"""Batch regularizers that turn labels into soft targets (B, K): label smoothing, Mixup
(Zhang et al., ICLR 2018), CutMix (Yun et al., ICCV 2019) and Cutout (DeVries & Taylor, 2017).

One lambda per batch, mixing each image with the batch reversed (timm's "batch" mode). The
same soft targets reach CE and CAM-loss, so under CutMix the target CAM is the area-weighted mix
of both classes' maps (docs/design.md §1). Every default that changes results is in YAML.
"""

import math

import numpy as np
import torch


class Regularizer:
    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.0,
        cutout_size: int = 0,
        seed: int = 0,
    ):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob  # chance a batch is mixed at all
        self.switch_prob = switch_prob  # chance of CutMix rather than Mixup when both are on
        self.label_smoothing = label_smoothing
        self.cutout_size = cutout_size
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

    def soft_targets(self, labels: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """One-hot with ``label_smoothing`` spread uniformly over all K classes (B, K)."""
        off = self.label_smoothing / self.num_classes
        targets = torch.full((labels.shape[0], self.num_classes), off, device=labels.device)
        targets.scatter_(1, labels[:, None], 1.0 - self.label_smoothing + off)
        return targets.to(dtype)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        targets = self.soft_targets(labels)
        if self.cutout_size:
            images = cutout(images, self.cutout_size, self.rng)
        mixing = self.mixup_alpha > 0 or self.cutmix_alpha > 0
        if not mixing or self.rng.random() >= self.prob:
            return images, targets
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or self.rng.random() < self.switch_prob
        )
        if use_cutmix:
            lam = float(self.rng.beta(self.cutmix_alpha, self.cutmix_alpha))
            images, lam = cutmix(images, lam, self.rng)
        else:
            lam = float(self.rng.beta(self.mixup_alpha, self.mixup_alpha))
            images = images * lam + images.flip(0) * (1.0 - lam)
        return images, targets * lam + targets.flip(0) * (1.0 - lam)


def cutmix(images: torch.Tensor, lam: float, rng: np.random.Generator):
    """Paste a box of area ~(1 - lam) from the reversed batch; returns lam from the true area."""
    h, w = images.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    images = images.clone()
    images[..., y0:y1, x0:x1] = images.flip(0)[..., y0:y1, x0:x1]
    return images, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def cutout(images: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Zero one size x size square per image, centred anywhere (may be clipped at the border)."""
    b, _, h, w = images.shape
    cy = torch.as_tensor(rng.integers(0, h, b), device=images.device)[:, None, None]
    cx = torch.as_tensor(rng.integers(0, w, b), device=images.device)[:, None, None]
    ys = torch.arange(h, device=images.device)[None, :, None]
    xs = torch.arange(w, device=images.device)[None, None, :]
    top, left = cy - size // 2, cx - size // 2  # a size x size square, as DeVries & Taylor's
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)  # (B, H, W)
    return images.masked_fill(inside[:, None], 0.0)
