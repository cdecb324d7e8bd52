"""Model EMA: an exponential moving average of the weights, evaluated beside the live weights.

``theta_ema <- d * theta_ema + (1 - d) * theta`` every ``every`` optimizer steps, through timm's
``ModelEmaV3`` (BN running statistics are averaged too). With ``warmup`` the decay ramps up as
timm's ``1 - (1 + t)^(-2/3)`` (t = EMA updates so far), capped at ``decay``, so early averages are
not dominated by the random initialisation (Polyak averaging, as in timm's train.py and airbench).

The averaged model is ``WeightAverage.module``; its accuracies are reported under keys of their
own (``val_ema/*``, ``test_ema/*``), never mixed with the live weights' ones.
"""

import torch
from timm.utils import ModelEmaV3

from camexp.errors import UserError
from camexp.run.distributed import unwrap


class WeightAverage:
    """The EMA copy of a model, updated every ``every`` steps; its state resumes exactly."""

    def __init__(self, model: torch.nn.Module, decay: float, every: int = 1, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise UserError(f"ema.decay must lie in (0, 1) to average, got {decay}")
        if every < 1:
            raise UserError(f"ema.every must be >= 1, got {every}")
        # Per update the decay is d; airbench-style sparse updates keep the same horizon in steps.
        self.every = every
        self.calls = 0  # optimizer steps seen
        self.ema = ModelEmaV3(unwrap(model), decay=decay, use_warmup=warmup)
        self.ema.module.requires_grad_(False)
        for module in self.ema.module.modules():  # compile=true binds forward_features to the
            module.__dict__.pop("forward_features", None)  # live model: the copy gets its own

    @property
    def module(self) -> torch.nn.Module:
        return self.ema.module

    def step(self, model: torch.nn.Module) -> None:
        """Call after each optimizer step; updates the average every ``every`` calls."""
        self.calls += 1
        if self.calls % self.every == 0:
            self.ema.update(unwrap(model), step=self.calls // self.every)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.calls = int(state["calls"])


def build_weight_average(model, *, decay: float, every: int = 1, warmup: bool = True):
    """``decay: 0`` (the default) means no EMA: returns None."""
    return WeightAverage(model, decay, every, warmup) if decay else None
