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
from camexp.models.small_base import _check_kwargs, _instance_cfg, _SmallNet, conv1x1, conv3x3

__all__ = ["CifarResNet", "WideResNet", "_check_kwargs", "_SmallNet", "conv3x3"]


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
