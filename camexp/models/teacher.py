"""The frozen teacher of task=kd: compatibility checks against its checkpoint, and a wrapper that
stays in eval mode without gradients whatever the training loop asks of it.

Plain arguments only; the task wiring (camexp/tasks/kd.py) reads the config.
"""

import math

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
    """A KD term without a teacher stops at build time, not at the first step."""
    names = teacher_terms(objective)
    if names and not has_teacher:
        raise UserError(
            f"loss term(s) {', '.join(names)} need a teacher; use task=kd teacher=<name> "
            "teacher.ckpt=PATH, or drop them from the loss list"
        )


def _same_values(a, b) -> bool:
    a, b = list(a), list(b)
    if len(a) != len(b):
        return False
    return all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(a, b, strict=True))


def check_teacher(
    state: dict,
    path: str,
    *,
    backbone: str,
    num_classes: int,
    in_chans: int,
    small_input_stem: bool,
    mean: tuple,
    std: tuple,
    image_size: int | None,
) -> None:
    """Compare a teacher checkpoint's ``meta`` and ``config`` with the teacher config and the
    student's data; raise one UserError line naming the first mismatch."""
    meta = state.get("meta")
    config = state.get("config") or {}
    if not isinstance(meta, dict) or "backbone" not in meta:
        raise UserError(
            f"teacher checkpoint {path} has no architecture record (meta); use a checkpoint "
            "written by a camexp training run (checkpoints/best.pt)"
        )
    expected = {
        "backbone": backbone,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "small_input_stem": small_input_stem,
    }
    for key, value in expected.items():
        if key in meta and meta[key] != value:
            hint = (
                f"use teacher.name={meta[key]}"
                if key == "backbone"
                else f"train the teacher on this dataset ({key}={value})"
            )
            raise UserError(
                f"teacher checkpoint {path} has {key}={meta[key]}, but this run expects "
                f"{key}={value}; {hint}"
            )
    dataset = config.get("dataset") or {}
    for key, value in (("mean", mean), ("std", std)):
        if key in dataset and not _same_values(dataset[key], value):
            raise UserError(
                f"teacher checkpoint {path} was trained with dataset.{key}={list(dataset[key])}, "
                f"the student uses {list(value)}; teacher and student must share the input "
                "normalisation"
            )
    recorded_size = meta.get("image_size", dataset.get("image_size"))
    if recorded_size is not None and image_size is not None and int(recorded_size) != image_size:
        raise UserError(
            f"teacher checkpoint {path} was trained on {recorded_size}px input, the student "
            f"sees {image_size}px; teacher and student must share the input size"
        )
