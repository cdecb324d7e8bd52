"""The one wiring of every training task: classify, kd, transfer and fewshot's stage 1.

``train(cfg, record, TaskParts(...))`` builds the parts in a fixed order (setup, loss, data, model,
teacher, optimisation, resume, train, test, report; the labelled sections below) and writes the
run record. What a task changes is passed in :class:`TaskParts`: how the model is made (transfer:
the source's architecture and weights, then its surgery), the teacher (kd), the optimizer's
parameter groups (transfer: backbone and head lrs), metrics known before training (kd: the
teacher's), and extra record fields. Everything else (DDP wrapping, one-line optimizer and
scheduler errors, seeding, the device, the checkpoint's model record, rank 0 alone reporting) is
the same for every task. See docs/design.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf

from camexp.engine import tta_level
from camexp.models.ema import build_weight_average
from camexp.models.teacher import teacher_terms
from camexp.run import distributed
from camexp.run.distributed import unwrap
from camexp.run.record import RunRecord
from camexp.training import parts as build

log = logging.getLogger(__name__)


def default_model(cfg: DictConfig, data: build.Data, needs_cam: bool, device: torch.device):
    """task=classify's model: ``cfg.backbone``, fresh weights. Returns (model, architecture)."""
    return build.build_model(cfg, data, needs_cam, device), build.configured_arch(cfg)


@dataclass
class TaskParts:
    """What a training task changes in the wiring; every default is task=classify's."""

    # (cfg, data, needs_cam, device) -> (model, architecture {backbone, kwargs, small_input_stem})
    model: Callable = default_model
    # (cfg, data, objective, device) -> FrozenTeacher; it runs in the loop if a term reads it
    teacher: Callable | None = None
    # (cfg, model) -> the optimizer's parameter groups
    param_groups: Callable = build.configured_param_groups
    # (trainer, teacher) -> metrics measured before the first step (kd: the teacher's accuracy)
    before_training: Callable | None = None
    hparams: dict = field(default_factory=dict)  # extra columns of TensorBoard's HParams
    meta: dict = field(default_factory=dict)  # extra checkpoint meta (transfer: its source)
    fields: dict = field(default_factory=dict)  # extra results.json fields
    status: str = "completed"  # fewshot's stage 1 leaves the run "running" for stage 2


def hparams(cfg: DictConfig, backbone: str) -> dict:
    """The knobs a sweep turns, for TensorBoard's HParams dashboard (flattened by the tracker)."""
    return {
        "backbone": backbone,
        "dataset": cfg.dataset.name,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.optim.lr,
        "regularizer": OmegaConf.to_container(cfg.regularizer),  # flattened: one column a knob
        "loss": OmegaConf.to_container(cfg.loss, resolve=True),  # every loss.<term>.* option
    }


def build_trainer(
    cfg: DictConfig, record: RunRecord, *, model, objective, data: build.Data, optimizer,
    device: torch.device, meta: dict, teacher=None,
):  # fmt: skip
    """The epoch loop with the run's options, schedule and regularizer; the tracker it writes to
    is ``trainer.tracker``."""
    from camexp.report.pictures import run_title
    from camexp.run.tracking import Progress, Tracker
    from camexp.training.trainer import Trainer

    scheduler = build.build_scheduler(cfg, optimizer, len(data.train))
    regularizer = build.build_regularizer(cfg, data.num_classes)
    progress = cfg.progress
    tracker = Tracker(record.run_dir, tensorboard=bool(cfg.tensorboard),
                      overrides=record.base["overrides"])  # fmt: skip
    return Trainer(
        model, objective, data, optimizer, scheduler, regularizer, tracker, device,
        epochs=int(cfg.epochs),
        run_dir=record.run_dir,
        config=OmegaConf.to_container(cfg, resolve=True),
        meta=meta,
        teacher=teacher,
        amp_dtype=build.amp_dtype(str(cfg.amp), device),
        log_every=int(cfg.log_every),
        checkpoint_every=int(cfg.checkpoint_every or 0),
        skip_nonfinite=int(cfg.skip_nonfinite or 0),
        progress=Progress(None if progress in ("auto", None) else bool(progress)),
        cam_quality=build.build_cam_quality(cfg),
        ema=build_weight_average(model, decay=float(cfg.ema.decay), every=int(cfg.ema.every),
                                 warmup=bool(cfg.ema.warmup)),
        tta=tta_level(str(cfg.tta)),
        picture_title=run_title(record.run_dir, record.base["overrides"]),
    )  # fmt: skip


def train(cfg: DictConfig, record: RunRecord, parts: TaskParts | None = None) -> dict:
    """Build, fit, test and record one training run; returns the results (rank 0: as written)."""
    parts = parts or TaskParts()

    # --- setup: options, device (this rank's under torchrun), seeds
    build.check_common(cfg)
    device = build.resolve_device(str(cfg.device))
    record.note(device=device)
    build.seed_everything(int(cfg.seed), bool(cfg.deterministic))

    # --- loss: its terms decide whether the model needs an exact CAM and the loop a teacher
    objective = build.build_loss(cfg).to(device)

    # --- data
    data = build.build_data(cfg, device)

    # --- model: the task's (surgery included), its checkpoint record, DDP under torchrun
    model, arch = parts.model(cfg, data, objective.needs_cam, device)
    meta = {**build.checkpoint_meta(cfg, data, model, arch), **parts.meta}
    model = distributed.wrap(model, device)

    # --- teacher (kd): built and checked against the data before any step
    teacher = parts.teacher(cfg, data, objective, device) if parts.teacher else None
    reads_teacher = teacher_terms(objective)

    # --- optimisation: a bad optim.* or sched.* value is one line, before any evaluation
    optimizer = build.build_optimizer(cfg, model, parts.param_groups(cfg, unwrap(model)))
    trainer = build_trainer(
        cfg, record, model=model, objective=objective, data=data, optimizer=optimizer,
        device=device, meta=meta,
        teacher=teacher if reads_teacher else None,  # a CE baseline need not pay for it
    )  # fmt: skip
    record.note(precision=trainer.precision)  # a resume may change it: then results say so
    log.info(
        "%s on %s: %d classes, %d train batches of %d, device %s%s",
        arch["backbone"], cfg.dataset.name, data.num_classes, len(data.train), cfg.batch_size,
        device, f"; terms reading the teacher: {', '.join(reads_teacher)}" if teacher else "",
    )  # fmt: skip

    # --- resume (from the run folder's last.pt, inside fit), train, test
    known = parts.before_training(trainer, teacher) if parts.before_training else {}
    results = trainer.fit_and_report({**hparams(cfg, arch["backbone"]), **parts.hparams}, known)

    # --- report: rank 0 tested and writes results.json; the other ranks only return
    if not distributed.is_main():
        return results
    m = results["metrics"]
    best = (f"{m['test_best/acc1']:.2f} (best on val, epoch {m.get('best_epoch')})"
            if "test_best/acc1" in m else "no best-on-val (dataset.val_size=0)")  # fmt: skip
    log.info("test acc1 %.2f (last), %s; %.0f train images/s", m["test/acc1"], best,
             results["train_images_per_s"])  # fmt: skip
    return record.write(parts.status, **parts.fields, **results)
