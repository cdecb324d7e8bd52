"""AirNet: a small, wide, shallow CNN for 28-32 px images, built for a CPU time budget.

The shape follows Keller Jordan's airbench (github.com/KellerJordan/cifar10-airbench, airbench94):

* a **whitened first layer**: a frozen ``k x k`` convolution (no padding) whose ``2 * C * k^2``
  filters are the eigenvectors ``v_i / sqrt(lambda_i + eps)`` of the covariance of the training
  images' ``k x k`` patches, and their negatives (so a following ReLU/GELU loses nothing);
  only its bias trains (``whiten=False``: a trainable convolution of the same shape instead),
  for the first ``whiten_bias_epochs`` epochs only if that is set (airbench94's
  ``whiten_bias_epochs: 3``): once it is frozen no gradient reaches the first conv group's
  input, which skips that convolution's backward pass to its input;
* three **conv groups** ``conv3x3 -> maxpool 2 -> BN -> act -> (conv3x3 -> BN -> act) x (depth-1)``
  of widths ``widths`` (airbench: 64/256/256 for CIFAR-10; here 32/64/128 by default, which fits
  about four ResNet-20 epochs of compute into fifteen);
* a ``GAP -> dropout -> linear`` head (airbench uses a max-pool; the average keeps the CAM
  identity ``mean_hw(M_k) + b[k] == logits[:, k]`` exact).

On 28 px input with ``whiten_kernel=2`` the maps are 27 -> 13 -> 6 -> 3 px: the final 3 x 3 map
still gives CAM-loss a spatial extent (``final_pool=false`` keeps 6 x 6 at about 1.4x the cost).

The whitening is fitted from the first training batch the model sees (``whiten_fitted`` is a
buffer, saved in checkpoints), so no data needs to reach the model's builder. Under torchrun each
rank fits on its own shard; DDP then broadcasts rank 0's buffers before every later step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from camexp.errors import UserError
from camexp.models.small_base import _check_kwargs, _SmallNet, conv3x3

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def whitening_filters(images: torch.Tensor, kernel: int, eps: float = 5e-4) -> torch.Tensor:
    """``(2 * C * k^2, C, k, k)`` filters that whiten the ``k x k`` patches of ``images``.

    With ``P`` the patches (N, D = C k^2) and ``cov = P^T P / N = V diag(lambda) V^T``, the filter
    ``i`` is ``v_i / sqrt(lambda_i + eps)`` (the ZCA-like basis airbench uses), followed by the
    negated copies. ``eps`` (airbench's value) keeps near-constant directions from exploding.
    """
    c = images.shape[1]
    patches = F.unfold(images.float(), kernel)  # (B, C k^2, L)
    patches = patches.transpose(1, 2).reshape(-1, c * kernel * kernel)  # (N, D)
    cov = patches.T @ patches / patches.shape[0]  # (D, D)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())  # ascending
    basis = (eigenvectors / (eigenvalues.clamp_min(0) + eps).sqrt()).T.flip(0)  # rows: filters
    basis = basis.float().reshape(-1, c, kernel, kernel)  # (D, C, k, k)
    return torch.cat([basis, -basis])  # (2 D, C, k, k)


class Whiten(nn.Module):
    """A frozen whitening convolution (weights a buffer, fitted once) with a bias that trains
    throughout, or for the first ``bias_epochs`` epochs only (the training loop calls
    ``set_epoch`` before each epoch; a frozen bias is detached: no update, no weight decay)."""

    def __init__(self, in_chans: int, kernel: int, bias_epochs: int | None = None):
        super().__init__()
        out = 2 * in_chans * kernel * kernel
        self.kernel = kernel
        self.register_buffer("weight", torch.zeros(out, in_chans, kernel, kernel))
        self.register_buffer("whiten_fitted", torch.zeros((), dtype=torch.bool))
        self.bias = nn.Parameter(torch.zeros(out))
        self.out_chs = out
        self.known_fitted = False  # a host-side copy of whiten_fitted once it is True
        self.bias_epochs = bias_epochs
        self.bias_trains = True
        self.leaves_parameters_unused = bias_epochs is not None  # DDP must look (run/distributed)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        if not torch.isfinite(images).all():  # eigh would fail; NaN filters make this step's loss
            self.weight.fill_(float("nan"))  # non-finite (skipped or diverged by the trainer),
            return  # and the next batch fits again
        self.weight.copy_(whitening_filters(images, self.kernel).to(self.weight))
        self.whiten_fitted.fill_(True)

    def set_epoch(self, epoch: int) -> None:  # 0-based
        self.bias_trains = self.bias_epochs is None or epoch < self.bias_epochs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.known_fitted:  # one host sync, at the first step only
            if not bool(self.whiten_fitted):  # False unless loaded from a checkpoint
                self.fit(x)
            self.known_fitted = bool(self.whiten_fitted)
        bias = self.bias if self.bias_trains else self.bias.detach()  # detached: its grad is None
        return F.conv2d(x, self.weight.to(x.dtype), bias.to(x.dtype))  # (B, 2Ck^2, H-k+1, W-k+1)


class ConvGroup(nn.Module):
    """conv3x3 -> maxpool 2 -> BN -> act, then (conv3x3 -> BN -> act) x (depth - 1)."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, act: type, pool: bool):
        super().__init__()
        layers: list[nn.Module] = [conv3x3(in_chs, out_chs)]
        layers += [nn.MaxPool2d(2)] if pool else []
        layers += [nn.BatchNorm2d(out_chs), act()]
        for _ in range(depth - 1):
            layers += [conv3x3(out_chs, out_chs), nn.BatchNorm2d(out_chs), act()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AirNet(_SmallNet):
    """Whitening stem + three conv groups + GAP/linear head (see the module docstring)."""

    def __init__(
        self,
        widths: tuple[int, int, int] = (32, 64, 128),
        depth: int = 2,
        whiten_kernel: int = 2,
        whiten: bool = True,
        whiten_bias_epochs: int | None = None,
        act: str = "gelu",
        final_pool: bool = True,
        num_classes: int = 10,
        in_chans: int = 1,
        drop_rate: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__()
        _check_kwargs(type(self).__name__, kwargs)
        if act not in ACTIVATIONS:
            raise UserError(f"airnet act={act!r} is not an option; use {' or '.join(ACTIVATIONS)}")
        if len(widths) != 3 or depth < 1:
            raise UserError(f"airnet needs 3 widths and depth >= 1, got {widths}, {depth}")
        count = whiten_bias_epochs
        if count is not None and (
            not whiten or isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            raise UserError(
                f"airnet whiten_bias_epochs={count!r} needs whiten=true and a whole number >= 0 "
                "(the epochs the whitening bias trains); leave it null to train it throughout"
            )
        activation = ACTIVATIONS[act]
        self._stage_chs = tuple(widths)
        stem_chs = 2 * in_chans * whiten_kernel * whiten_kernel
        if whiten:
            self.conv1 = Whiten(in_chans, whiten_kernel, whiten_bias_epochs)
        else:  # the ablation: the same shape, trained from a random init
            self.conv1 = nn.Conv2d(in_chans, stem_chs, whiten_kernel, bias=True)
        self.act = activation()
        self.layer1 = ConvGroup(stem_chs, widths[0], depth, activation, pool=True)
        self.layer2 = ConvGroup(widths[0], widths[1], depth, activation, pool=True)
        self.layer3 = ConvGroup(widths[1], widths[2], depth, activation, pool=final_pool)
        self._finish(widths[2], num_classes, in_chans, drop_rate)
        last = 8 if final_pool else 4
        for info, reduction in zip(self.feature_info, (2, 4, last), strict=True):
            info["reduction"] = reduction

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))  # (B, 2Ck^2, H-k+1, W-k+1)
        x = self.layer1(x)  # (B, w1, H/2, W/2)
        x = self.layer2(x)  # (B, w2, H/4, W/4)
        return self.layer3(x)  # (B, w3, H/8, W/8), after the last activation


def _create(pretrained: bool, **kwargs: Any) -> AirNet:
    if pretrained:
        raise UserError("airnet has no pretrained weights; set backbone.pretrained=false")
    kwargs.pop("pretrained_cfg_overlay", None)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    model = AirNet(**kwargs)
    return model.to(device=device, dtype=dtype) if device or dtype else model


@register_model
def airnet(pretrained: bool = False, **kwargs: Any) -> AirNet:
    """AirNet 32/64/128, two convs per group (about 17 M multiply-adds per 28 px image)."""
    return _create(pretrained, **kwargs)


@register_model
def airnet_wide(pretrained: bool = False, **kwargs: Any) -> AirNet:
    """AirNet 64/128/256 (airbench's shape at a quarter of its last widths)."""
    return _create(pretrained, **{"widths": (64, 128, 256), **kwargs})
