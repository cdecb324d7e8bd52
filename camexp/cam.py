"""Class activation maps (Zhou et al., CVPR 2016) and the class-agnostic map of CAM-loss.

Notation (docs/design.md §1): F features of the last conv stage (B, C, H, W); W classifier weight
(K, C); T soft targets (B, K). Because global average pooling is linear,
``mean_hw(M_k) + b[k] == logits[:, k]`` exactly for a GAP -> linear head.

These functions are shared by the losses, the pictures and the metrics.
"""

import torch


def class_activation_maps(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CAM of every class: ``M_k = sum_c W[k, c] F[:, c]``. Returns (B, K, H, W)."""
    return torch.einsum("bchw,kc->bkhw", features, weight)


def class_agnostic_map(features: torch.Tensor) -> torch.Tensor:
    """CAAM, the plain channel sum ``A = sum_c F[:, c]``. Returns (B, H, W)."""
    return features.sum(dim=1)


def target_cam(features: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CAM of the labelled class, ``M_T = sum_k T[:, k] M_k``. Returns (B, H, W).

    ``targets`` is either int labels (B,) or soft targets (B, K); with Mixup/CutMix rows the result
    is the lambda-weighted mix of both classes' maps. Mixing the weights first, ``(T @ W)``, costs
    (B, C) instead of building all K maps.
    """
    if targets.dim() == 1:
        mixed_weight = weight[targets]  # (B, C)
    else:
        mixed_weight = targets.to(weight.dtype) @ weight  # (B, K) @ (K, C) -> (B, C)
    return torch.einsum("bc,bchw->bhw", mixed_weight.to(features.dtype), features)


def normalize(maps: torch.Tensor, mode: str = "minmax", eps: float = 1e-6) -> torch.Tensor:
    """Normalise each map of each sample over its spatial positions.

    ``minmax``: ``(m - min) / (max - min + eps)`` into [0, 1] (reconstructed: docs/design.md §1);
    ``max``: ``m+ / (max(m+) + eps)`` with ``m+ = max(m, 0)``, defined for non-negative maps (after
    a ReLU): dividing a negative map by its negative maximum would invert it, so negative values
    become 0 instead (``[-3, -1] -> [0, 0]``; the losses refuse ``max`` without ``relu``);
    ``none``: unchanged. ``maps`` is (..., H, W).
    """
    if mode == "none":
        return maps
    flat = maps.flatten(-2)  # (..., H*W)
    if mode == "max":
        flat = flat.clamp_min(0)
        out = flat / (flat.amax(dim=-1, keepdim=True) + eps)
    elif mode == "minmax":
        low, high = flat.amin(dim=-1, keepdim=True), flat.amax(dim=-1, keepdim=True)
        out = (flat - low) / (high - low + eps)
    else:
        raise ValueError(f"unknown map normalisation {mode!r}; use minmax, max or none")
    return out.view_as(maps)
