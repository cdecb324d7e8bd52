"""task=kd: distil a frozen teacher (a camexp checkpoint) into the student ``backbone``.

    camexp task=kd teacher.ckpt=PATH backbone=resnet8x4 'loss=[ce,kd,ccm]'

The teacher's architecture is the checkpoint's (its ``meta.model``); ``teacher.name``, when set
(the KD pair groups set it), must match it. Before any data is trained on, the checkpoint is
checked against the student's data (classes, input channels, size and normalisation) by the one
contract check (camexp/models/from_checkpoint.py). Its sha256 goes into the run's checkpoints and
results.json: a resume with another file at that path stops with one line. The teacher then
runs once per step in the engine, in eval mode without gradients; loss terms that read it have
``needs_teacher = True``.
Everything else is the shared wiring (camexp/training/wiring.py).
"""

import logging
import os

from omegaconf import DictConfig

from camexp.engine import evaluate
from camexp.errors import UserError
from camexp.models.from_checkpoint import (
    HELD_OUT,
    check_checkpoint,
    check_split,
    model_from_checkpoint,
    read_checkpoint,
)
from camexp.models.teacher import FrozenTeacher, needs_teacher_cam
from camexp.run.checkpoint import file_sha256
from camexp.run.progress import track
from camexp.run.record import RunRecord
from camexp.training.data import Data
from camexp.training.model import place
from camexp.training.wiring import TaskParts, train

log = logging.getLogger(__name__)
ROLE = "teacher checkpoint"


def read_teacher(cfg: DictConfig) -> tuple[dict, str]:
    """The teacher's checkpoint and path, its architecture checked against ``teacher.name``."""
    if not cfg.teacher.ckpt:
        raise UserError(
            "task=kd needs a teacher: add teacher.ckpt=PATH (a camexp run's checkpoints/best.pt, "
            "e.g. teacher.ckpt=outputs/.../checkpoints/best.pt)"
        )
    path = os.path.abspath(str(cfg.teacher.ckpt))
    state = read_checkpoint(path, ROLE)
    if cfg.teacher.name is not None:
        hint = "set teacher.name={saved} or teacher.name=null"
        check_checkpoint(state, path, role=ROLE, expect={"backbone": str(cfg.teacher.name)},
                         hints={"backbone": hint})  # fmt: skip
    return state, path


def teacher_builder(state: dict, path: str):
    def build_teacher(cfg: DictConfig, data: Data, objective, device) -> FrozenTeacher:
        check_checkpoint(state, path, role=ROLE, expect={
            "classes": data.classes, "num_classes": data.num_classes, "in_chans": data.channels,
            "image_size": data.image_size, "mean": list(data.mean), "std": list(data.std),
        })  # fmt: skip
        model = model_from_checkpoint(state, path, needs_cam=needs_teacher_cam(objective),
                                      role=ROLE)  # fmt: skip
        return FrozenTeacher(place(cfg, model, device))

    return build_teacher


def teacher_metrics(cfg: DictConfig, state: dict, path: str):
    """The teacher's accuracy on val (test without a val split), once, before training; on the
    teacher's own dataset val must be the split it held out (or teacher/val is inflated)."""

    def measure(trainer, teacher) -> dict:
        if not cfg.task.eval_teacher:
            return {}
        data = trainer.data
        if data.val is not None and state["meta"]["dataset"]["name"] == str(cfg.dataset.name):
            check_split(state, path, role=ROLE, split={k: int(cfg.dataset[k]) for k in HELD_OUT},
                        hint=" (the teacher's split), or task.eval_teacher=false")  # fmt: skip
        prefix = "teacher/val" if data.val is not None else "teacher/test"
        metrics = evaluate(teacher, track(data.val or data.test, "teacher"), trainer.device,
                           amp_dtype=trainer.amp_dtype, prefix=prefix)  # fmt: skip
        metrics.pop(f"{prefix}/images_per_s")
        log.info("teacher: %s", ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
        return {k: round(v, 4) for k, v in metrics.items()}

    return measure


def run(cfg: DictConfig, record: RunRecord) -> dict:
    state, path = read_teacher(cfg)  # a bad path or name stops before any data loads
    name = state["meta"]["model"]["backbone"]
    digest = file_sha256(path)  # resume refuses another file at this path (run/checkpoint.py)
    parts = TaskParts(
        teacher=teacher_builder(state, path),
        before_training=teacher_metrics(cfg, state, path),
        hparams={"teacher": name},
        meta={"teacher": {"path": path, "sha256": digest}},
        fields={"teacher": {"name": name, "ckpt": path, "sha256": digest}},
    )
    return train(cfg, record, parts)
