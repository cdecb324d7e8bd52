"""CAM-loss (Wang et al., "CAM-loss: Towards Learning Spatially Discriminative Feature
Representations", ICCV 2021, arXiv 2109.01359).

    L_cam = mean_{b,h,w} d( N(A), N(M_T) )

with F the last-stage features (B, C, H, W), W the linear classifier (K, C), T the soft targets
(B, K), A = sum_c F[:, c] the class-agnostic activation map (CAAM), M_T = sum_k T[:, k] W[k] . F the
target-class CAM, N a per-map normalisation and d a pointwise distance. The classifier is trained by
CE only (``detach_classifier``); L_cam shapes the backbone.

What is certain: CAM from last-conv features and the target's FC weights, CAAM as the channel sum.
Reconstructed (the paper does not state them; each is an option, docs/design.md §1): the min-max
normalisation, the L1 distance, detaching W, not detaching the CAM branch, no ReLU, soft targets.
"""

import torch
import torch.nn.functional as F
from torch import nn

from camexp.cam import class_agnostic_map, normalize, target_cam
from camexp.errors import UserError

NORMS = ("minmax", "max", "none")
DISTANCES = ("l1", "l2", "smooth_l1")
TARGETS = ("soft", "hard")


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{key}={value!r} is not an option; use one of {', '.join(choices)}")


def map_options(term: str, norm: str, distance: str, target: str, relu: bool, **rest) -> dict:
    """The options CAM-loss and CCM share, checked against their choices (``loss.<term>.*``)."""
    check_choice(f"loss.{term}.norm", norm, NORMS)
    check_choice(f"loss.{term}.distance", distance, DISTANCES)
    check_choice(f"loss.{term}.target", target, TARGETS)
    if norm == "max" and not relu:
        raise UserError(
            f"loss.{term}.norm=max divides each map by its maximum, which inverts a map that is "
            f"negative (CAMs and CAAMs can be); use loss.{term}.norm=minmax or "
            f"loss.{term}.relu=true"
        )
    return dict(norm=norm, distance=distance, target=target, relu=relu, **rest)


def float32_maps(device: torch.device):
    """Autocast off: the maps, their normalisation and the distance run in float32 even inside a
    bf16 autocast region (autocast would cast the einsum back to bf16: 11.7 % gradient error)."""
    return torch.autocast(device.type, enabled=False)


def map_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "l1") -> torch.Tensor:
    """Mean pointwise distance between two stacks of maps of the same shape."""
    if distance == "l1":
        return (a - b).abs().mean()
    if distance == "l2":
        return (a - b).pow(2).mean()
    if distance == "smooth_l1":
        return F.smooth_l1_loss(a, b)
    raise ValueError(f"unknown distance {distance!r}; use one of {DISTANCES}")


def cam_loss(
    features: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    norm: str = "minmax",
    distance: str = "l1",
    detach_classifier: bool = True,
    detach_cam: bool = False,
    relu: bool = False,
    target: str = "soft",
    eps: float = 1e-6,
) -> torch.Tensor:
    """CAM-loss between the CAAM and the target CAM; returns a scalar.

    features (B, C, H, W); weight (K, C); targets int labels (B,) or soft (B, K).
    ``detach_cam`` makes the CAM a fixed target so only the CAAM branch is pulled; ``target="hard"``
    uses the arg-max class of soft targets; ``relu`` clamps both maps at zero before normalising.
    """
    if detach_classifier:
        weight = weight.detach()
    if target == "hard" and targets.dim() == 2:
        targets = targets.argmax(dim=1)
    with float32_maps(features.device):
        features = features.float()  # normalising a bf16 map loses most of its range
        cam = target_cam(features.detach() if detach_cam else features, weight.float(), targets)
        caam = class_agnostic_map(features)  # (B, H, W)
        if relu:
            cam, caam = cam.relu(), caam.relu()
        return map_distance(normalize(caam, norm, eps), normalize(cam, norm, eps), distance)


class CAMLoss(nn.Module):
    """The ``cam`` term: holds CAM-loss's options; ``weight`` is alpha in L = L_ce + alpha L_cam."""

    needs_cam = True

    def __init__(
        self,
        weight: float = 1.0,
        warmup_epochs: int = 0,
        norm: str = "minmax",
        distance: str = "l1",
        detach_classifier: bool = True,
        detach_cam: bool = False,
        relu: bool = False,
        target: str = "soft",
        eps: float = 1e-6,
    ):
        super().__init__()
        self.weight = weight
        self.warmup_epochs = warmup_epochs  # alpha is 0 before this epoch
        self.options = map_options(
            "cam", norm, distance, target, relu=relu, eps=eps,
            detach_classifier=detach_classifier, detach_cam=detach_cam,
        )  # fmt: skip

    def forward(self, student, teacher, targets: torch.Tensor) -> torch.Tensor:
        return cam_loss(student.features, student.fc_weight, targets, **self.options)
