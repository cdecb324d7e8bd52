"""Any timm CNN as a CAM-ready backbone: ``forward(x) -> Output(logits, features, fc_weight)``.

The wrapper computes the head itself, ``logits = W . dropout(mean_hw(F)) + b``, so the CAM identity
``mean_hw(M_k) + b[k] == logits[:, k]`` holds by construction. Whether a timm model's own head is
exactly that (global average pool -> dropout -> linear) is checked numerically once at build time;
heads that transform after pooling (MobileNetV3's conv_head, ConvNeXt's head norm) or models with
token outputs (ViTs) have no exact CAM and are refused when a CAM-based term is on.
"""

import difflib
import logging
from typing import NamedTuple

import timm
import torch
import torch.nn.functional as F
from torch import nn

import camexp.models.airnet  # noqa: F401  (registers the AirNets into timm)
import camexp.models.small_nets  # noqa: F401  (registers the small-image nets into timm)
from camexp.errors import UserError

log = logging.getLogger(__name__)


class Output(NamedTuple):
    logits: torch.Tensor  # (B, K)
    features: torch.Tensor  # (B, C, H, W), last conv stage, before pooling
    fc_weight: torch.Tensor | None  # (K, C); None when the head is not GAP + linear
    stages: tuple = ()  # per-stage outputs (B, C_i, H_i, W_i) for attention transfer; () if unknown


class Backbone(nn.Module):
    def __init__(self, model: nn.Module, exact_cam: bool):
        super().__init__()
        self.model = model
        self.exact_cam = exact_cam
        self.drop_rate = float(getattr(model, "drop_rate", 0.0) or 0.0)
        # Stage outputs, caught by forward hooks: the small nets' ``stage_names`` (for WRN the
        # block outputs before the final BN-ReLU, as mdistiller's feats), else timm's
        # feature_info without its stem (mdistiller's ImageNet ResNets: layer1..layer4).
        names = getattr(model, "stage_names", None)
        if names is None:
            names = [info["module"] for info in list(getattr(model, "feature_info", []))[1:]]
        try:
            modules = [model.get_submodule(name) for name in names]
        except AttributeError:  # a timm model whose feature_info names no submodule: no stages
            modules = []
        self._stages: list = []
        for module in modules:
            module.register_forward_hook(self._keep_stage)

    def _keep_stage(self, module, inputs, output) -> None:
        self._stages.append(output)

    @property
    def classifier(self) -> nn.Linear:
        return self.model.get_classifier()

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def forward(self, x: torch.Tensor) -> Output:
        self._stages = []
        features = self.model.forward_features(x)  # (B, C, H, W)
        stages, self._stages = tuple(self._stages), []
        if not self.exact_cam:
            return Output(self.model.forward_head(features), features, None, stages)
        pooled = features.mean(dim=(2, 3))  # (B, C)
        pooled = F.dropout(pooled, self.drop_rate, self.training)
        fc = self.classifier
        return Output(F.linear(pooled, fc.weight, fc.bias), features, fc.weight, stages)


def suggest_model(name: str) -> str:
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def use_small_input_stem(model: nn.Module, name: str) -> None:
    """Replace an ImageNet stem (7x7/2 conv + 3x3/2 max-pool) by a 3x3 stride-1 conv, no pool.

    The CIFAR convention (e.g. the small-image ResNet-18 of Kuang Liu's pytorch-cifar): on 32x32
    input an ImageNet stem leaves a 1x1 final map, where a CAM has no spatial extent.
    """
    if hasattr(model, "conv1") and hasattr(model, "maxpool"):  # timm ResNet / ResNeXt / WRN
        old = model.conv1
        first = old[0] if isinstance(old, nn.Sequential) else old  # deep stems: 'resnet*d'
        out_ch = old[-1].out_channels if isinstance(old, nn.Sequential) else old.out_channels
        model.conv1 = nn.Conv2d(first.in_channels, out_ch, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif hasattr(model, "features") and hasattr(model.features, "conv0"):  # timm DenseNet
        old = model.features.conv0
        model.features.conv0 = nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=False)
        model.features.pool0 = nn.Identity()
    else:
        raise UserError(
            f"backbone.small_input_stem=true supports timm ResNet/ResNeXt/DenseNet, not {name}; "
            "use a small-image model (resnet20, wrn_16_2, ...) instead"
        )


@torch.no_grad()
def head_is_gap_linear(model: nn.Module, in_chans: int, image_size: int) -> tuple[bool, tuple]:
    """Compare the model's own forward with GAP -> linear on its features, in eval mode."""
    was_training = model.training
    model.eval()
    x = torch.randn(2, in_chans, image_size, image_size)
    try:
        features = model.forward_features(x)
        fc = model.get_classifier()
        # MobileNetV3's conv_head sits between the features and a Linear of another width
        if (
            features.dim() != 4
            or not isinstance(fc, nn.Linear)
            or fc.in_features != features.shape[1]
        ):
            return False, tuple(features.shape[1:])
        ours = F.linear(features.mean(dim=(2, 3)), fc.weight, fc.bias)
        theirs = model.forward_head(features)
        exact = ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)
        return exact, tuple(features.shape[1:])
    finally:
        model.train(was_training)


def build_backbone(
    name: str,
    num_classes: int,
    in_chans: int,
    image_size: int,
    *,
    needs_cam: bool,
    pretrained: bool = False,
    small_input_stem: bool = False,
    drop_rate: float = 0.0,
    **timm_kwargs,
) -> Backbone:
    """Create ``name`` from timm's registry and check that its CAM is exact when one is needed."""
    if not timm.is_model(name):
        raise UserError(f"unknown backbone {name!r}{suggest_model(name)} (see timm.list_models())")
    try:
        model = timm.create_model(
            name,
            pretrained=pretrained,
            num_classes=num_classes,
            in_chans=in_chans,
            drop_rate=drop_rate,
            **timm_kwargs,
        )
    except UserError:
        raise
    except (RuntimeError, OSError) as err:
        if pretrained:
            raise UserError(
                f"could not load pretrained weights for {name} ({err}); without a network use "
                "init.checkpoint=PATH or backbone.pretrained=false"
            ) from err
        raise
    if small_input_stem:
        use_small_input_stem(model, name)
    try:
        exact, feature_shape = head_is_gap_linear(model, in_chans, image_size)
    except RuntimeError as err:  # e.g. AirNet's three pools at 8 px: "Output size is too small"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"backbone {name} cannot take {image_size}x{image_size} px images ({first[:200]}); "
            "raise dataset.image_size or choose a backbone for small images"
        ) from None
    if needs_cam and not exact:
        raise UserError(
            f"backbone {name} has no exact CAM: its head is not global-average-pool -> linear "
            f"(features {feature_shape}); turn the CAM terms off (loss.cam.weight=0 is not enough: "
            "use 'loss=[ce]') or choose a ResNet/ResNeXt/WRN/DenseNet/RegNet/EfficientNet"
        )
    if exact and min(feature_shape[1:]) < 2:
        log.warning(
            "backbone %s leaves a %dx%d final map on %dpx input: a CAM there has no spatial "
            "extent; use a small-image model (resnet20, wrn_16_2, ...) or "
            "backbone.small_input_stem=true",
            name,
            feature_shape[1],
            feature_shape[2],
            image_size,
        )
    return Backbone(model, exact_cam=exact)
