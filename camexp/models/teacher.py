"""The frozen teacher of task=kd: a wrapper that stays in eval mode without gradients whatever the
training loop asks of it, and the checks of the loss terms that read it.

The teacher's network comes from its checkpoint (camexp/models/from_checkpoint.py), which also
checks it against the student's data; the task wiring (camexp/tasks/kd.py) reads the config.
"""

import torch
from torch import nn

from camexp.errors import UserError


class FrozenTeacher(nn.Module):
    """A teacher that never trains: eval mode (BatchNorm uses its running statistics, dropout is
    off), ``requires_grad=False`` on every parameter, forward under ``no_grad``. ``train()`` is a
    no-op, so a loop calling ``.train()`` on a module tree that holds the teacher cannot flip it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor):
        return self.model(x)


def teacher_terms(objective: nn.Module) -> list[str]:
    """Names of the objective's terms that read the teacher's output."""
    return [n for n, t in objective.terms.items() if getattr(t, "needs_teacher", False)]


def needs_teacher_cam(objective: nn.Module) -> bool:
    """Whether a term reads the teacher's CAM (then its head must be exact GAP -> linear)."""
    return any(getattr(t, "needs_teacher_cam", False) for t in objective.terms.values())


def check_teacher_terms(objective: nn.Module, has_teacher: bool) -> None:
    """A KD term without a teacher, or a teacher without a KD term (task=kd training plain CE),
    stops at build time, not at the first step."""
    names = teacher_terms(objective)
    if has_teacher and not names:
        raise UserError(
            f"task=kd but no loss term reads the teacher (loss: {', '.join(objective.terms)}); "
            "add one, e.g. 'loss=[ce,kd]', or use task=classify for the student alone"
        )
    if names and not has_teacher:
        raise UserError(
            f"loss term(s) {', '.join(names)} need a teacher; use task=kd teacher.ckpt=PATH, "
            "or drop them from the loss list"
        )
