"""The shared base of the small-image nets (camexp/models/small_nets.py): the timm classifier API,
the GAP -> dropout -> ``fc`` head, initialisation, and the keyword checks.

``mean_hw(einsum(features, fc.weight)) + fc.bias == logits`` holds for every subclass (the CAM
identity in ``camexp.cam``), because the head is a plain average followed by a linear layer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camexp.errors import UserError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# Keys timm.create_model passes to every entrypoint; meaningless here (there are no weights).
_TIMM_PLUMBING = frozenset(
    {"pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained_model_args"}
)
# Generic timm options accepted only at their "off" value, so shared configs keep working.
_OFF_VALUES = {"drop_path_rate": (0, 0.0), "drop_block_rate": (0, 0.0), "global_pool": ("avg",)}


def _check_kwargs(model: str, kwargs: dict[str, Any]) -> None:
    """Ignore timm's plumbing kwargs; refuse any option these networks do not implement."""
    bad = [
        f"{k}={v!r}"
        for k, v in kwargs.items()
        if k not in _TIMM_PLUMBING and not (k in _OFF_VALUES and v in _OFF_VALUES[k])
    ]
    if bad:
        raise UserError(
            f"{model} does not support {', '.join(bad)}; it takes num_classes, in_chans, drop_rate"
            + (", block_drop_rate" if model == "WideResNet" else "")
        )


def _instance_cfg(in_chans: int, num_classes: int) -> dict[str, Any]:
    """The data/head config of a model instance (timm's ``pretrained_cfg`` keys)."""
    rgb = in_chans == 3
    return {
        "input_size": (in_chans, 32, 32),
        "num_classes": num_classes,
        "mean": CIFAR10_MEAN if rgb else (0.5,) * in_chans,  # placeholder when not RGB
        "std": CIFAR10_STD if rgb else (0.5,) * in_chans,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "pool_size": (8, 8),
        "first_conv": "conv1",
        "classifier": "fc",
    }


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)


class _SmallNet(nn.Module):
    """Shared head, init and timm API. Subclasses build ``conv1``, ``layer1..3`` and the tail."""

    stage_names = ("layer1", "layer2", "layer3")

    def _finish(self, num_features: int, num_classes: int, in_chans: int, drop_rate: float) -> None:
        self.num_features = num_features
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.fc = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = _instance_cfg(in_chans, num_classes)
        self.default_cfg = self.pretrained_cfg  # timm keeps both names for the same dict
        self.feature_info = [
            dict(num_chs=c, reduction=r, module=name)
            for name, c, r in zip(self.stage_names, self._stage_chs, (1, 2, 4), strict=True)
        ]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))  # (B, C, H, W) -> (B, C), global average pooling
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise UserError(f"only global_pool='avg' is supported, got {global_pool!r}")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.zeros_(self.fc.bias)
        self.pretrained_cfg["num_classes"] = num_classes
