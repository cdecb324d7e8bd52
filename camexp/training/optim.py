"""The optimizer (parameter groups, lr scaling, Lookahead) and the per-step lr schedule from
``cfg.optim`` and ``cfg.sched``, with one-line errors for values torch rejects."""

import logging

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from timm.optim import Lookahead

from camexp.errors import UserError

log = logging.getLogger(__name__)


def param_groups(model: torch.nn.Module, weight_decay: float, decay_norm_and_bias: bool):
    """Optionally exempt norm weights and biases (every 1-d parameter) from weight decay."""
    if decay_norm_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def configured_param_groups(cfg: DictConfig, model: torch.nn.Module) -> list[dict]:
    """task=classify's groups: every trainable parameter, norms and biases optionally undecayed."""
    return param_groups(model, float(cfg.optim.weight_decay), bool(cfg.optim.decay_norm_and_bias))


CAMEXP_OPTIM_KEYS = ("decay_norm_and_bias", "lookahead", "lr_scaling")  # not the optimizer's


def build_optimizer(cfg: DictConfig, model: torch.nn.Module, groups: list | None = None):
    """``cfg.optim`` over ``groups`` (default: :func:`configured_param_groups`), every group's lr
    scaled by :func:`lr_scale`, wrapped in timm's Lookahead when ``optim.lookahead.k > 0``."""
    spec = OmegaConf.to_container(cfg.optim, resolve=True)
    camexp_keys = {key: spec.pop(key, None) for key in CAMEXP_OPTIM_KEYS}
    groups = configured_param_groups(cfg, model) if groups is None else groups
    optimizer = call_partial("optim", instantiate(spec), groups)
    scale = lr_scale(camexp_keys["lr_scaling"], int(cfg.batch_size))
    for group in optimizer.param_groups:  # before the scheduler reads them as initial_lr
        group["lr"] *= scale
    if scale != 1.0:
        log.info("optim: lr x %.4g for batch %d (lr_scaling %s)", scale, int(cfg.batch_size),
                 camexp_keys["lr_scaling"])  # fmt: skip
    lookahead = camexp_keys["lookahead"] or {"k": 0}
    if int(lookahead["k"]) > 0:
        alpha, k = float(lookahead["alpha"]), int(lookahead["k"])
        optimizer = call_partial("optim.lookahead", Lookahead, optimizer, alpha=alpha, k=k)
    return optimizer


def lr_scale(scaling: dict | None, batch_size: int) -> float:
    """The factor on every configured lr for a global batch of ``batch_size``: 1 (``none``),
    ``batch_size / base_batch`` (``linear``, Goyal et al. 2017) or its square root (``sqrt``)."""
    rule = (scaling or {}).get("rule", "none")
    if rule == "none":
        return 1.0
    if rule not in ("linear", "sqrt"):
        raise UserError(
            f"optim.lr_scaling.rule={rule!r} is not an option; use none, linear or sqrt"
        )
    base = int(scaling["base_batch"])
    if base <= 0:
        raise UserError(f"optim.lr_scaling.base_batch={base} must be a positive batch size")
    ratio = batch_size / base
    return ratio if rule == "linear" else ratio**0.5


def build_scheduler(cfg: DictConfig, optimizer, steps_per_epoch: int):
    return call_partial(
        "sched", instantiate(cfg.sched), optimizer, epochs=int(cfg.epochs),
        steps_per_epoch=steps_per_epoch,
    )  # fmt: skip


def call_partial(group: str, factory, *args, **kwargs):
    """Call a ``_partial_`` leaf; an unknown key or a value torch rejects (``+optim.bogus=1``,
    ``optim.momentum=-1``) becomes one line naming the group, not a traceback."""
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"{group}: {err}; check the {group}.* keys (camexp --cfg job)") from err
