"""Transfer-learning helpers: load a source checkpoint under a new head, freeze, BN modes.

All functions take plain objects (a :class:`camexp.models.backbone.Backbone`, state dicts,
numbers); the task ``camexp.tasks.transfer`` reads the config, builds the source's architecture
from its checkpoint (camexp/models/from_checkpoint.py, which also checks the input channels) and
calls them in order:

1. :func:`load_source_weights` - every tensor but the classifier, strictly: missing, unexpected or
   mis-shaped keys are reported in one line. Different input channels need ``adapt_channels``.
2. :func:`backbone_stages` / :func:`freeze` - ``linear_probe`` freezes the whole backbone,
   ``freeze_stages=N`` the stem and the first N-1 stages (N=1: the stem only).
3. :func:`freeze_batchnorm_stats` - BatchNorm layers use and keep their running statistics.
4. :func:`transfer_param_groups` - backbone and head parameter groups with their own lr.
"""

from __future__ import annotations

import logging

import torch
from timm.models import group_parameters
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from camexp.errors import UserError

log = logging.getLogger(__name__)

MODES = ("finetune", "linear_probe")
BN_MODES = ("auto", "train", "frozen")


# ----------------------------------------------------------------------------- names
def head_prefix(model: nn.Module) -> str:
    """State-dict prefix of the classifier, e.g. ``model.fc.`` for a timm ResNet in a Backbone."""
    fc = model.classifier
    for name, module in model.named_modules():
        if module is fc:
            return f"{name}."
    raise UserError(f"{type(model).__name__} has no classifier module to replace")


def short_list(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


# ----------------------------------------------------------------------------- loading
def load_source_weights(
    model: nn.Module,
    source: dict[str, torch.Tensor],
    *,
    path: str,
    source_chans: int | None = None,
    target_chans: int | None = None,
) -> str:
    """Copy every tensor of ``source`` except the classifier into ``model``; strict otherwise.

    The new head keeps its fresh initialisation. When ``source_chans != target_chans`` (and the
    caller has allowed it) a 4-d weight that differs only in its input-channel dimension (the
    first conv) is adapted by :func:`adapt_input_conv`. Returns a one-line summary.
    """
    head = head_prefix(model)
    own = model.state_dict()
    body = {k: v for k, v in source.items() if not k.startswith(head)}
    missing = [k for k in own if not k.startswith(head) and k not in body]
    unexpected = [k for k in body if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({short_list(missing)})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys ({short_list(unexpected)})")
        raise UserError(
            f"checkpoint {path} does not fit this backbone: {'; '.join(parts)}; "
            "is it a checkpoint of the same backbone.name with the same kwargs?"
        )
    adapted, mismatched = [], []
    for key, value in body.items():
        if value.shape == own[key].shape:
            continue
        first_conv = (
            value.ndim == 4
            and source_chans is not None
            and source_chans != target_chans
            and value.shape[1] == source_chans
            and own[key].shape[1] == target_chans
            and value.shape[0] == own[key].shape[0]
            and value.shape[2:] == own[key].shape[2:]
        )
        if first_conv:
            body[key] = adapt_input_conv(value, target_chans)
            adapted.append(key)
        else:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
    if mismatched:
        raise UserError(
            f"checkpoint {path} does not fit this backbone: shape mismatch in "
            f"{short_list(mismatched, 3)} (checkpoint vs model)"
        )
    heads = {k: v for k, v in own.items() if k.startswith(head)}
    model.load_state_dict({**body, **heads}, strict=True)
    note = f", adapted {', '.join(adapted)} to {target_chans} channels" if adapted else ""
    return (
        f"loaded {len(body)} tensors from {path}; new head {head.rstrip('.')} "
        f"({sum(v.numel() for v in heads.values())} parameters, fresh){note}"
    )


def adapt_input_conv(weight: torch.Tensor, chans: int) -> torch.Tensor:
    """A first-conv weight (O, S, kh, kw) for ``chans`` input channels, timm's rule for any S:
    to 1 channel, the sum over S (a grey image responds as its colour copies did); otherwise
    the S channels repeated to ``chans`` and scaled by S / chans (equal channels respond as
    before)."""
    source = weight.shape[1]
    w = weight.float()
    if chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, -(-chans // source), 1, 1)[:, :chans] * (source / chans)
    return w.to(weight.dtype)


# ----------------------------------------------------------------------------- stages
def backbone_stages(net: nn.Module, head: str) -> list[list[str]]:
    """Parameter names of ``net`` (a timm model) grouped into [stem, stage 1, ..., stage S].

    timm models use their coarse ``group_matcher`` (the grouping timm's layer-wise lr decay
    uses); camexp's small-image nets use their ``feature_info`` stages, with everything before
    the first stage as the stem and everything after the last (WRN's final BN) in the last.
    The classifier (names starting with ``head``) is never in a stage.
    """
    names = [n for n, _ in net.named_parameters() if not n.startswith(head)]
    if hasattr(net, "group_matcher"):
        groups = group_parameters(net, net.group_matcher(coarse=True))
        stages = [[n for n in group if not n.startswith(head)] for group in groups.values()]
        return [s for s in stages if s]
    starts = [f"{info['module']}." for info in getattr(net, "feature_info", [])]
    if not starts:
        raise UserError(
            f"{type(net).__name__} has neither group_matcher nor feature_info; "
            "transfer.freeze_stages needs one of them"
        )
    stages: list[list[str]] = [[] for _ in range(len(starts) + 1)]
    current = 0
    for name in names:
        for i, prefix in enumerate(starts):
            if name.startswith(prefix):
                current = i + 1
        stages[current].append(name)
    return [s for s in stages if s]


def freeze(net: nn.Module, names: set[str]) -> int:
    """``requires_grad=False`` on the named parameters of ``net``; returns how many tensors."""
    count = 0
    for name, param in net.named_parameters():
        if name in names:
            param.requires_grad_(False)
            count += 1
    return count


def _stay_in_eval(module: nn.Module, args) -> None:
    module.train(False)  # runs before every forward: model.train() cannot turn it back on


def freeze_batchnorm_stats(net: nn.Module, only: set[str] | None = None) -> int:
    """Keep BatchNorm layers in eval mode: normalise with, and never update, running stats.

    ``only``: restrict to layers whose weight is among these parameter names (frozen stages);
    None: every BatchNorm layer. Their affine weights stay trainable unless frozen elsewhere.
    Returns the number of layers.
    """
    count = 0
    for name, module in net.named_modules():
        if not isinstance(module, _BatchNorm):
            continue
        if only is not None and f"{name}.weight" not in only:
            continue
        module.register_forward_pre_hook(_stay_in_eval)
        module.train(False)
        count += 1
    return count


def setup_transfer(
    model: nn.Module, *, mode: str, freeze_stages: int = 0, bn: str = "auto"
) -> dict[str, int]:
    """Apply the mode, stage freezing and BN mode to a Backbone; returns counts for the log.

    linear_probe: every backbone parameter frozen, only the new head trains; ``bn=auto`` means
    frozen statistics there and train-mode statistics in finetune. Frozen stages always keep
    their BN statistics (otherwise their outputs would still drift).
    """
    if mode not in MODES:
        raise UserError(f"transfer.mode={mode!r} is not an option; use one of {', '.join(MODES)}")
    if bn not in BN_MODES:
        raise UserError(f"transfer.bn={bn!r} is not an option; use one of {', '.join(BN_MODES)}")
    if freeze_stages < 0:
        raise UserError(f"transfer.freeze_stages must be >= 0, got {freeze_stages}")
    net = model.model
    head = head_prefix(model).removeprefix("model.")
    stages = backbone_stages(net, head)
    if freeze_stages > len(stages):
        raise UserError(
            f"transfer.freeze_stages={freeze_stages} but {type(net).__name__} has "
            f"{len(stages)} (the stem and {len(stages) - 1} stages); use 0..{len(stages)}"
        )
    if mode == "linear_probe":
        frozen = {n for n, _ in net.named_parameters() if not n.startswith(head)}
    else:
        frozen = {n for stage in stages[:freeze_stages] for n in stage}
    tensors = freeze(net, frozen)
    if bn == "frozen" or (bn == "auto" and mode == "linear_probe"):
        bn_layers = freeze_batchnorm_stats(net)
    else:
        bn_layers = freeze_batchnorm_stats(net, only=frozen)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "frozen_tensors": tensors,
        "frozen_bn_layers": bn_layers,
        "trainable_parameters": trainable,
        "stages": len(stages),
    }


# ----------------------------------------------------------------------------- optimisation
def transfer_param_groups(
    model: nn.Module,
    *,
    lr: float,
    head_lr_mult: float,
    weight_decay: float,
    decay_norm_and_bias: bool,
) -> list[dict]:
    """Named parameter groups: backbone at ``lr``, new head at ``lr * head_lr_mult``.

    Frozen parameters are left out; with ``decay_norm_and_bias=false`` 1-d parameters (norms,
    biases) get no weight decay, as in ``camexp.training.optim.param_groups``.
    """
    head = head_prefix(model)
    groups: dict[tuple[str, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "head" if name.startswith(head) else "backbone"
        decay = decay_norm_and_bias or param.ndim > 1
        groups.setdefault((part, decay), []).append(param)
    out = []
    for (part, decay), params in sorted(groups.items()):
        out.append(
            {
                "name": f"{part}{'' if decay else '_no_decay'}",
                "params": params,
                "lr": lr * (head_lr_mult if part == "head" else 1.0),
                "weight_decay": weight_decay if decay else 0.0,
            }
        )
    return out
