"""task=kd: distil a frozen teacher (a camexp checkpoint) into the student ``backbone``.

    camexp task=kd teacher=resnet56 teacher.ckpt=PATH 'loss=[ce,kd,ccm]'

The teacher is checked against its checkpoint (architecture, class count, input channels, stem,
input normalisation and size) before any data is trained on, then runs once per step in the
engine in eval mode without gradients. Loss terms that read it have ``needs_teacher = True``.
"""

import logging
import os

from omegaconf import DictConfig

from camexp.engine import evaluate
from camexp.errors import UserError
from camexp.models.teacher import FrozenTeacher, check_teacher, needs_teacher_cam, teacher_terms
from camexp.run import distributed
from camexp.run.checkpoint import load_checkpoint
from camexp.run.record import RunRecord
from camexp.tasks.classify import hparams
from camexp.training import parts as build

log = logging.getLogger(__name__)


def require_teacher_config(cfg: DictConfig) -> DictConfig:
    teacher = cfg.get("teacher")
    if teacher is None or not teacher.get("name"):
        raise UserError(
            "task=kd needs a teacher: add teacher=<name> teacher.ckpt=PATH "
            "(e.g. teacher=resnet56 teacher.ckpt=outputs/.../checkpoints/best.pt)"
        )
    if not teacher.get("ckpt"):
        raise UserError(
            f"task=kd needs the teacher's weights: add teacher.ckpt=PATH (a camexp run's "
            f"checkpoints/best.pt of a {teacher.name} trained on {cfg.dataset.name})"
        )
    return teacher


def build_teacher(t: DictConfig, state: dict, data: build.Data, needs_cam: bool, device, cfg):
    """The teacher from ``teacher.*``, checked against ``state``, weights loaded, frozen."""
    image_size = int(cfg.dataset.image_size) if cfg.dataset.get("image_size") else data.image_size
    check_teacher(
        state,
        str(t.ckpt),
        backbone=str(t.name),
        num_classes=data.num_classes,
        in_chans=data.channels,
        small_input_stem=bool(t.small_input_stem),
        mean=data.mean,
        std=data.std,
        image_size=image_size,
    )
    model = build.build_model(cfg, data, needs_cam, device, spec=t)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:200]
        raise UserError(
            f"teacher checkpoint {t.ckpt} does not fit teacher {t.name}: {first}"
        ) from err
    return FrozenTeacher(model)


def run(cfg: DictConfig, record: RunRecord) -> dict:
    # --- setup: the teacher's checkpoint first, so a bad path stops before any data loads
    build.check_common(cfg)
    t = require_teacher_config(cfg)
    state = load_checkpoint(str(t.ckpt))
    device = build.resolve_device(str(cfg.device))
    build.seed_everything(int(cfg.seed), bool(cfg.deterministic))
    objective = build.build_loss(cfg).to(device)
    reads_teacher = teacher_terms(objective)

    # --- data, student, teacher, the loop (a bad optim/sched option stops before any evaluation)
    data = build.build_data(cfg, device)
    model = build.build_model(cfg, data, objective.needs_cam, device)
    meta = build.model_meta(cfg, data, model)
    model = distributed.wrap(model, device)  # DistributedDataParallel under torchrun
    teacher = build_teacher(t, state, data, needs_teacher_cam(objective), device, cfg)
    optimizer = build.build_optimizer(cfg, model)
    trainer = build.build_trainer(
        cfg, record, model=model, objective=objective, data=data, optimizer=optimizer,
        device=device, meta=meta,
        teacher=teacher if reads_teacher else None,  # a CE baseline need not pay for it
    )  # fmt: skip
    teacher_metrics = {}
    if cfg.task.get("eval_teacher", True):
        shown = data.val or data.test
        prefix = "teacher/val" if data.val is not None else "teacher/test"
        teacher_metrics = evaluate(
            teacher, shown, device, amp_dtype=trainer.amp_dtype, prefix=prefix
        )
        teacher_metrics.pop(f"{prefix}/images_per_s")
    log.info(
        "distilling %s (%s, %s) into %s on %s; terms reading the teacher: %s",
        t.name,
        t.ckpt,
        ", ".join(f"{k} {v:.2f}" for k, v in teacher_metrics.items()) or "not evaluated",
        cfg.backbone.name,
        cfg.dataset.name,
        ", ".join(reads_teacher) or "none (the teacher is not run)",
    )

    # --- train and test
    results = trainer.fit_and_report(
        {**hparams(cfg), "teacher": str(t.name)},
        {k: round(v, 4) for k, v in teacher_metrics.items()},
    )
    if not distributed.is_main():  # rank 0 tests and writes the results
        return results
    m = results["metrics"]
    log.info(
        "student test acc1 %.2f (last), %.2f (best on val, epoch %s)",
        m["test/acc1"],
        m["test_best/acc1"],
        m.get("best_epoch"),
    )
    teacher_info = {"name": str(t.name), "ckpt": os.path.abspath(str(t.ckpt))}
    return record.write("completed", teacher=teacher_info, **results)
