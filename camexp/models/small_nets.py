"""Small-image CNNs (CIFAR 32x32, MNIST-like 28x28) registered in timm's model registry.

Importing this module makes ``timm.create_model('resnet20', num_classes=10, in_chans=1)`` work.

* ``resnet20/32/44/56/110``: the CIFAR ResNets of He et al., "Deep Residual Learning for Image
  Recognition", CVPR 2016, §4.2: a 3x3 conv stem of 16 channels, three stages of n = (depth-2)/6
  BasicBlocks of widths 16/32/64, stride 2 at the first block of stages 2 and 3. The downsampling
  shortcut is a 1x1 conv + BN ("option B"), as in CRD (Tian et al., ICLR 2020) and mdistiller.
* ``resnet8x4``, ``resnet32x4``: the 4x-wide knowledge-distillation variants of CRD / mdistiller:
  stem 32, stages 64/128/256, depth 8 (n=1) and 32 (n=5).
* ``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2``, ``wrn_28_10``: Wide ResNets WRN-d-k of Zagoruyko &
  Komodakis, "Wide Residual Networks", BMVC 2016: pre-activation blocks (BN-ReLU-conv),
  n = (depth-4)/6 blocks per stage, widths 16, 16k, 32k, 64k, a final BN-ReLU before pooling,
  optional dropout between the two convs of a block (``block_drop_rate``).

Every model has the timm classifier API (``forward_features``, ``forward_head``, ``get_classifier``,
``reset_classifier``, ``num_features``, ``pretrained_cfg``) and a GAP -> dropout -> ``fc`` head, so
``mean_hw(einsum(features, fc.weight)) + fc.bias == logits`` (the CAM identity in ``camexp.cam``).
``stage_names`` lists the attributes holding the three stages (for attention transfer hooks).
There are no pretrained weights; ``pretrained=True`` raises ``UserError``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import timm.models
import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from camexp.errors import UserError

__all__ = ["CifarResNet", "WideResNet"]

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


class BasicBlock(nn.Module):
    """Post-activation residual block of He et al.: conv-BN-ReLU-conv-BN, + shortcut, ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_chs, out_chs, stride)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = conv3x3(out_chs, out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_chs != out_chs:  # option B: projection shortcut
            self.downsample = nn.Sequential(
                conv1x1(in_chs, out_chs, stride), nn.BatchNorm2d(out_chs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class CifarResNet(_SmallNet):
    """CIFAR ResNet of He et al. (CVPR 2016, §4.2); ``widths`` = (stem, stage1, stage2, stage3)."""

    def __init__(
        self,
        depth: int = 20,
        widths: tuple[int, int, int, int] = (16, 16, 32, 64),
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__()
        _check_kwargs(type(self).__name__, kwargs)
        if (depth - 2) % 6:
            raise UserError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self._stage_chs = widths[1:]
        self.conv1 = conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(widths[0], widths[1], n, stride=1)
        self.layer2 = self._stage(widths[1], widths[2], n, stride=2)
        self.layer3 = self._stage(widths[2], widths[3], n, stride=2)
        self._finish(widths[3], num_classes, in_chans, drop_rate)

    @staticmethod
    def _stage(in_chs: int, out_chs: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_chs, out_chs, stride)]
        blocks += [BasicBlock(out_chs, out_chs) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, w0, H, W)
        x = self.layer1(x)  # (B, w1, H, W)
        x = self.layer2(x)  # (B, w2, H/2, W/2)
        return self.layer3(x)  # (B, w3, H/4, W/4), after the last block's ReLU


class WideBlock(nn.Module):
    """Pre-activation block of Zagoruyko & Komodakis: BN-ReLU-conv-(dropout)-BN-ReLU-conv, + x.

    When the shape changes, the 1x1 projection shortcut takes the pre-activated input (as in the
    authors' code and mdistiller).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = conv3x3(in_chs, out_chs, stride)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = conv3x3(out_chs, out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.drop_rate = drop_rate
        self.shortcut = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = conv1x1(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.relu(self.bn2(self.conv1(out)))
        out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class WideResNet(_SmallNet):
    """WRN-depth-k of Zagoruyko & Komodakis (BMVC 2016); ``block_drop_rate`` is their dropout."""

    def __init__(
        self,
        depth: int = 16,
        widen_factor: int = 2,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        block_drop_rate: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__()
        _check_kwargs(type(self).__name__, kwargs)
        if (depth - 4) % 6:
            raise UserError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        k = widen_factor
        widths = (16, 16 * k, 32 * k, 64 * k)
        self._stage_chs = widths[1:]
        self.block_drop_rate = block_drop_rate
        self.conv1 = conv3x3(in_chans, widths[0])
        self.layer1 = self._stage(widths[0], widths[1], n, 1, block_drop_rate)
        self.layer2 = self._stage(widths[1], widths[2], n, 2, block_drop_rate)
        self.layer3 = self._stage(widths[2], widths[3], n, 2, block_drop_rate)
        self.bn = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self._finish(widths[3], num_classes, in_chans, drop_rate)

    @staticmethod
    def _stage(in_chs: int, out_chs: int, n: int, stride: int, p: float) -> nn.Sequential:
        blocks = [WideBlock(in_chs, out_chs, stride, p)]
        blocks += [WideBlock(out_chs, out_chs, 1, p) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # (B, 16, H, W)
        x = self.layer1(x)  # (B, 16k, H, W)
        x = self.layer2(x)  # (B, 32k, H/2, W/2)
        x = self.layer3(x)  # (B, 64k, H/4, W/4), pre-activation
        return self.relu(self.bn(x))  # final BN-ReLU before pooling


# --- timm registry -------------------------------------------------------------------------------

_ARCHS: dict[str, tuple[type[_SmallNet], dict[str, Any]]] = {
    "resnet20": (CifarResNet, dict(depth=20)),
    "resnet32": (CifarResNet, dict(depth=32)),
    "resnet44": (CifarResNet, dict(depth=44)),
    "resnet56": (CifarResNet, dict(depth=56)),
    "resnet110": (CifarResNet, dict(depth=110)),
    "resnet8x4": (CifarResNet, dict(depth=8, widths=(32, 64, 128, 256))),
    "resnet32x4": (CifarResNet, dict(depth=32, widths=(32, 64, 128, 256))),
    "wrn_16_2": (WideResNet, dict(depth=16, widen_factor=2)),
    "wrn_40_1": (WideResNet, dict(depth=40, widen_factor=1)),
    "wrn_40_2": (WideResNet, dict(depth=40, widen_factor=2)),
    "wrn_28_10": (WideResNet, dict(depth=28, widen_factor=10)),
}

# Read by timm.models.register_model: gives each name a registry pretrained_cfg (without weights).
default_cfgs = {name: _instance_cfg(3, 10) for name in _ARCHS}


def _create(name: str, pretrained: bool, **kwargs: Any) -> _SmallNet:
    if pretrained:
        raise UserError(
            f"no pretrained weights exist for {name}; use pretrained=False (train from scratch)"
        )
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    cls, arch = _ARCHS[name]
    model = cls(**arch, **kwargs)
    model.pretrained_cfg.update(architecture=name, **overlay)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def _register(fn: Callable[..., _SmallNet]) -> Callable[..., _SmallNet]:
    """``register_model``, silent when this module's own name is registered again (a reload)."""
    known = timm.models.is_model(fn.__name__)
    if known and timm.models.model_entrypoint(fn.__name__).__module__ == __name__:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return register_model(fn)
    return register_model(fn)  # a clash with another module's model still warns


@_register
def resnet20(pretrained: bool = False, **kwargs: Any) -> _SmallNet:
    return _create("resnet20", pretrained, **kwargs)


@_register
def resnet32(pretrained: bool = False, **kwargs: Any) -> _SmallNet:
    return _create("resnet32", pretrained, **kwargs)


@_register
def resnet44(pretrained: bool = False, **kwargs: Any) -> _SmallNet:
    return _create("resnet44", pretrained, **kwargs)


@_register
def resnet56(pretrained: bool = False, **kwargs: Any) -> _SmallNet:
    return _create("resnet56", pretrained, **kwargs)


@_register
def resnet110(pretrained: bool = False, **kwargs: Any) -> _SmallNet:
    return _create("resnet110", pretrained, **kwargs)


@_register
def resnet8x4(pretrained: bool = False, **kwargs: Any) -> _SmallNet:
    return _create("resnet8x4", pretrained, **kwargs)


@_register
def resnet32x4(pretrained: bool = False, **kwargs: Any) -> _SmallNet:
    return _create("resnet32x4", pretrained, **kwargs)


@_register
def wrn_16_2(pretrained: bool = False, **kwargs: Any) -> _SmallNet:
    return _create("wrn_16_2", pretrained, **kwargs)


@_register
def wrn_40_1(pretrained: bool = False, **kwargs: Any) -> _SmallNet:
    return _create("wrn_40_1", pretrained, **kwargs)


@_register
def wrn_40_2(pretrained: bool = False, **kwargs: Any) -> _SmallNet:
    return _create("wrn_40_2", pretrained, **kwargs)


@_register
def wrn_28_10(pretrained: bool = False, **kwargs: Any) -> _SmallNet:
    return _create("wrn_28_10", pretrained, **kwargs)
