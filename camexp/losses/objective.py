"""The training objective: a sum of named, weighted terms, each returned for logging.

Every term is ``term(student: Output, teacher: Output | None, targets (B, K)) -> scalar`` with a
``weight`` attribute. A term with weight 0 (or still in its warm-up) is computed without gradient
so that its value is logged for the baseline too: the CE baseline's CAM-loss is a measurement.
"""

import torch
from torch import nn

from camexp.errors import UserError


class Objective(nn.Module):
    def __init__(self, terms: dict[str, nn.Module]):
        super().__init__()
        if not terms:
            raise UserError("the objective has no terms; choose some with e.g. 'loss=[ce,cam]'")
        self.terms = nn.ModuleDict(terms)
        self.epoch = 0

    @property
    def needs_cam(self) -> bool:
        """Whether any term reads CAMs, so the backbone must have an exact GAP + linear head."""
        return any(getattr(term, "needs_cam", False) for term in self.terms.values())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def weight_of(self, name: str) -> float:
        term = self.terms[name]
        if self.epoch < getattr(term, "warmup_epochs", 0):
            return 0.0
        return float(term.weight)

    def forward(self, student, teacher, targets: torch.Tensor):
        total = student.logits.new_zeros((), dtype=torch.float32)
        parts = {}
        for name, term in self.terms.items():
            weight = self.weight_of(name)
            if weight == 0.0:
                with torch.no_grad():
                    parts[name] = term(student, teacher, targets).detach().float()
                continue
            value = term(student, teacher, targets).float()
            parts[name] = value.detach()
            total = total + weight * value
        return total, parts


def reference_ce_weights(term_configs: dict) -> dict[str, float]:
    """``{term: ce_weight}`` of the terms that declare the CE weight of their reference recipe
    (``loss.<term>.ce_weight``: KD 0.1, AT and CAT-KD 1.0; a null declares none)."""
    return {
        name: float(spec["ce_weight"])
        for name, spec in term_configs.items()
        if isinstance(spec, dict) and spec.get("ce_weight") is not None
    }


def check_reference_ce(term_configs: dict, ce_stated: bool) -> None:
    """Unless ``loss.ce.weight`` was stated, the terms' reference CE weights must agree: the
    composed CE weight is then each of them (configs/kd_ce_weight.yaml)."""
    declared = reference_ce_weights(term_configs)
    if not ce_stated and len(set(declared.values())) > 1:
        listed = ", ".join(f"{n} {w:g}" for n, w in declared.items())
        raise UserError(
            f"the loss terms' references use different CE weights ({listed}); state one, e.g. "
            f"loss.ce.weight={min(declared.values()):g}"
        )


def build_objective(term_configs: dict, instantiate, ce_stated: bool = True) -> Objective:
    """Instantiate each term from its config (a mapping with ``_target_`` and ``weight``; a
    ``ce_weight`` is the reference CE weight the term declares, checked, never passed on).

    ``instantiate`` is hydra's, passed in so this module does not read the config system.
    ``ce_stated``: ``loss.ce.weight`` was given, not composed from the terms' ``ce_weight``.
    """
    check_reference_ce(term_configs, ce_stated)
    terms = {}
    for name, spec in term_configs.items():
        spec = {k: v for k, v in spec.items() if k != "ce_weight"}
        if "_target_" not in spec:
            raise UserError(
                f"loss.{name} is not a loss term (no _target_): task=kd sets loss.{name}.weight, "
                f"so put {name} in the loss list, e.g. 'loss=[ce,kd]' (loss.ce.weight=0: no CE)"
            )
        weight = spec.get("weight", 1.0)
        if weight is None or float(weight) < 0:
            raise UserError(f"loss.{name}.weight must be >= 0, got {weight}")
        terms[name] = instantiate(spec)
    return Objective(terms)
