"""The one wiring of every training: classify, kd, transfer, fewshot's stage 1 and the benchmark
scripts (scripts/bench.py, scripts/bench_tta.py).

:func:`build_parts` builds everything a training needs, in one labelled order: device and seeds,
objective, data, model, teacher, optimizer and schedule, regularizer, weight average and TTA,
precision, CAM metrics and pictures, tracker, and the trainer over them. :func:`train` is that
build followed by the run's visible steps: resume, fit, test, report. What a task changes is
passed in :class:`TaskParts`: how the model is made (transfer: the source's architecture and
weights, then its surgery), the teacher (kd), the optimizer's parameter groups (transfer: backbone
and head lrs), metrics known before training (kd: the teacher's), hooks after each epoch (the
benchmarks' off-the-clock measurements), and extra record fields. Everything else (DDP wrapping,
one-line optimizer and scheduler errors, seeding, the device, the checkpoint's model record, rank
0 alone reporting) is the same for every task. Options are checked once, by the entry point
(camexp/run/options.py). See docs/design.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf

from camexp.data.progressive import check_smallest_size
from camexp.engine import tta_level
from camexp.models.ema import build_weight_average
from camexp.models.teacher import check_teacher_terms, teacher_terms
from camexp.report.pictures import RunPictures
from camexp.run import distributed
from camexp.run.distributed import unwrap
from camexp.run.record import RunRecord
from camexp.run.tracking import Progress, Tracker
from camexp.training.data import Data, build_data
from camexp.training.final_test import final_test
from camexp.training.model import (
    build_cam_quality,
    build_loss,
    build_model,
    build_regularizer,
    checkpoint_meta,
    configured_arch,
)
from camexp.training.optim import build_optimizer, build_scheduler, configured_param_groups
from camexp.training.setup import amp_dtype, resolve_device, seed_everything
from camexp.training.trainer import Trainer

log = logging.getLogger(__name__)


def default_model(cfg: DictConfig, data: Data, needs_cam: bool, device: torch.device):
    """task=classify's model: ``cfg.backbone``, fresh weights. Returns (model, architecture)."""
    return build_model(cfg, data, needs_cam, device), configured_arch(cfg)


@dataclass
class TaskParts:
    """What a training task changes in the wiring; every default is task=classify's."""

    # (cfg, data, needs_cam, device) -> (model, architecture {backbone, kwargs, small_input_stem})
    model: Callable = default_model
    # (cfg, data, objective, device) -> FrozenTeacher; a task with a teacher needs a term reading it
    teacher: Callable | None = None
    # (cfg, model) -> the optimizer's parameter groups
    param_groups: Callable = configured_param_groups
    # (trainer, teacher) -> metrics measured before the first step (kd: the teacher's accuracy)
    before_training: Callable | None = None
    # (trainer, row) after each epoch's checkpoint: measurements off the training clock
    epoch_hooks: list = field(default_factory=list)
    hparams: dict = field(default_factory=dict)  # extra columns of TensorBoard's HParams
    meta: dict = field(default_factory=dict)  # extra checkpoint meta (transfer: its source)
    fields: dict = field(default_factory=dict)  # extra results.json fields
    status: str = "completed"  # fewshot's stage 1 leaves the run "running" for stage 2


@dataclass
class Parts:
    """Everything one training needs, as :func:`build_parts` built it."""

    device: torch.device
    objective: torch.nn.Module
    data: Data
    model: torch.nn.Module  # DDP-wrapped under torchrun
    arch: dict  # the checkpoint's architecture record
    teacher: torch.nn.Module | None  # kd's frozen teacher
    optimizer: torch.optim.Optimizer
    scheduler: object
    regularizer: object
    trainer: Trainer  # the epoch loop over all of the above


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


def build_parts(cfg: DictConfig, record: RunRecord, task: TaskParts) -> Parts:
    """Build one training, in this order (a user error stops it before any step)."""
    # 1. device (this rank's under torchrun) and seeds
    device = resolve_device(str(cfg.device))
    record.note(device=device)
    seed_everything(int(cfg.seed), bool(cfg.deterministic))

    # 2. objective: its terms decide whether the model needs an exact CAM and the loop a teacher
    objective = build_loss(cfg).to(device)
    check_teacher_terms(objective, has_teacher=task.teacher is not None)

    # 3. data: train, val held out of train, test, the picture batch, boxes
    data = build_data(cfg, device)

    # 4. model: the task's (surgery included), its checkpoint record, DDP under torchrun
    model, arch = task.model(cfg, data, objective.needs_cam, device)
    check_smallest_size(model, data.train, device)  # progressive resizing's first batches
    meta = {**checkpoint_meta(cfg, data, model, arch), **task.meta}
    model = distributed.wrap(model, device)

    # 5. teacher (kd): built and checked against the data before any step
    teacher = task.teacher(cfg, data, objective, device) if task.teacher else None

    # 6. optimizer and per-step schedule: a bad optim.* or sched.* value is one line
    optimizer = build_optimizer(cfg, model, task.param_groups(cfg, unwrap(model)))
    scheduler = build_scheduler(cfg, optimizer, len(data.train))

    # 7. batch regularizer: soft targets for CE and CAM-loss alike
    regularizer = build_regularizer(cfg, data.num_classes)

    # 8. weight average (EMA) and test-time augmentation, evaluated beside the live weights
    ema = build_weight_average(model, decay=float(cfg.ema.decay), every=int(cfg.ema.every),
                               warmup=bool(cfg.ema.warmup))  # fmt: skip
    tta = tta_level(str(cfg.tta))

    # 9. precision (amp=auto: bf16 where the hardware has it natively)
    amp = amp_dtype(str(cfg.amp), device)

    # 10. CAM quality at the end, CAM pictures after every epoch
    cam_quality = build_cam_quality(cfg)
    pictures = RunPictures(data, record.run_dir, record.base["overrides"])

    # 11. tracker: metrics.csv and TensorBoard
    tracker = Tracker(record.run_dir, tensorboard=bool(cfg.tensorboard),
                      overrides=record.base["overrides"])  # fmt: skip

    # 12. the epoch loop over these parts
    progress = cfg.progress
    trainer = Trainer(
        model, objective, data, optimizer, scheduler, regularizer, tracker, device,
        epochs=int(cfg.epochs),
        run_dir=record.run_dir,
        config=OmegaConf.to_container(cfg, resolve=True),
        meta=meta,
        teacher=teacher if teacher_terms(objective) else None,
        amp_dtype=amp,
        log_every=int(cfg.log_every),
        checkpoint_every=int(cfg.checkpoint_every or 0),
        skip_nonfinite=int(cfg.skip_nonfinite or 0),
        progress=Progress(None if progress in ("auto", None) else bool(progress)),
        cam_quality=cam_quality,
        ema=ema,
        tta=tta,
        pictures=pictures,
        epoch_hooks=list(task.epoch_hooks),
    )  # fmt: skip
    return Parts(device, objective, data, model, arch, teacher, optimizer, scheduler, regularizer,
                 trainer)  # fmt: skip


def train(cfg: DictConfig, record: RunRecord, task: TaskParts | None = None) -> dict:
    """Build, resume, fit, test and record one training run; returns the results (rank 0: as
    written to results.json)."""
    task = task or TaskParts()
    parts = build_parts(cfg, record, task)
    trainer, data = parts.trainer, parts.data
    record.note(precision=trainer.precision)  # a resume may change it: then results say so
    reading = teacher_terms(parts.objective)
    log.info(
        "%s on %s: %d classes, %d train batches of %d, device %s%s",
        parts.arch["backbone"], cfg.dataset.name, data.num_classes, len(data.train),
        cfg.batch_size, parts.device,
        f"; terms reading the teacher: {', '.join(reading)}" if parts.teacher else "",
    )  # fmt: skip

    with trainer.session():  # a stop or divergence records how far the run got
        known = task.before_training(trainer, parts.teacher) if task.before_training else {}
        trainer.resume()  # from the run folder's checkpoints/last.pt, when it has one
        trainer.fit()  # the remaining epochs: train, validate, checkpoint
        results = final_test(trainer)  # last and best-on-val weights, CAM quality, cams.png
        results["metrics"].update(known)
        trainer.report_hparams({**hparams(cfg, parts.arch["backbone"]), **task.hparams},
                               results["metrics"])  # fmt: skip

    # report: rank 0 tested and writes results.json; the other ranks only return
    if not distributed.is_main():
        return results
    m = results["metrics"]
    best = (f"{m['test_best/acc1']:.2f} (best on val, epoch {m.get('best_epoch')})"
            if "test_best/acc1" in m else "no best-on-val (dataset.val_size=0)")  # fmt: skip
    log.info("test acc1 %.2f (last), %s; %.0f train images/s", m["test/acc1"], best,
             results["train_images_per_s"])  # fmt: skip
    return record.write(task.status, **task.fields, **results)


def run(cfg: DictConfig, record: RunRecord) -> dict:
    """task=classify: train a classifier (CE, optionally CAM-loss) and test it. Nothing of the
    wiring changes: ``camexp loss.cam.weight=0,1 seed=0,1,2 -m`` is the paper's comparison."""
    return train(cfg, record, TaskParts())
