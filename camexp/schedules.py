"""Learning-rate schedules stepped once per iteration: linear warm-up, then cosine or steps.

Built with ``_partial_: true`` from YAML; the task supplies the optimizer, epochs and steps.
"""

import math

from torch.optim.lr_scheduler import LambdaLR

from camexp.errors import UserError


def warmup_factor(step: int, warmup_steps: int) -> float:
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def warmup_cosine(
    optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Cosine decay (Loshchilov & Hutter, 2017) from the base lr to ``min_lr_ratio * lr``."""
    total = max(epochs * steps_per_epoch, 1)
    warmup = int(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return warmup_factor(step, warmup)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def warmup_multistep(
    optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    milestones: list[int],
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
) -> LambdaLR:
    """Multiply the lr by ``gamma`` at each milestone epoch (He et al., 2016 recipe)."""
    if any(m > epochs for m in milestones):
        raise UserError(f"sched.milestones {list(milestones)} lie beyond epochs={epochs}")
    warmup = int(warmup_epochs * steps_per_epoch)
    bounds = sorted(m * steps_per_epoch for m in milestones)

    def factor(step: int) -> float:
        decays = sum(step >= b for b in bounds)
        return warmup_factor(step, warmup) * gamma**decays

    return LambdaLR(optimizer, factor)
