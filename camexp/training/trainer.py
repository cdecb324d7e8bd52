"""The epoch loop shared by every training task: train, validate, checkpoint, picture, and
finally test the last and the best-on-val weights. The step loop itself is engine.py.

Resume is exact: ``checkpoints/last.pt`` holds the model, optimizer, scheduler, every RNG state
(python, numpy, torch, CUDA, the loader's and the regularizer's generators), the loader's place
inside the epoch, the epoch's running sums and the metrics history. A run folder that already
holds ``last.pt`` continues from it, rewriting metrics.csv from the saved history, so a run killed
at any point and resumed ends with the same metrics as one never interrupted (on CPU with
``deterministic=true``; bit-for-bit for the in-memory data path).
"""

import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from camexp.engine import EpochMeter, evaluate, evaluate_variants, train_one_epoch
from camexp.errors import Diverged, Preempted
from camexp.precision import precision_name, resume_precision
from camexp.run import distributed, signals
from camexp.run.checkpoint import (
    own_rank_state,
    read_resume_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from camexp.run.distributed import is_main, unwrap
from camexp.run.extend import extend_schedule
from camexp.run.progress import slowdown
from camexp.run.tracking import Progress, Tracker, track

log = logging.getLogger(__name__)


@dataclass
class Trainer:
    model: torch.nn.Module
    objective: torch.nn.Module
    data: object  # camexp.training.data.Data
    optimizer: torch.optim.Optimizer
    scheduler: object
    regularizer: object
    tracker: Tracker
    device: torch.device
    epochs: int
    run_dir: str
    config: dict  # resolved, plain containers: saved in checkpoints
    meta: dict  # architecture facts checked when a checkpoint is loaded
    teacher: torch.nn.Module | None = None
    amp_dtype: torch.dtype | None = None
    log_every: int = 50
    checkpoint_every: int = 0  # also save last.pt every N steps (0: at epoch ends only)
    skip_nonfinite: int = 0  # steps with a NaN/inf loss that may be skipped in total
    progress: Progress = field(default_factory=Progress)
    history: list = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    epoch: int = 0  # completed epochs
    meter: EpochMeter | None = None  # the running epoch, when resuming inside it
    cam_quality: object | None = None  # camexp.metrics.CamQuality: CAM metrics at the end (#9)
    ema: object | None = None  # camexp.models.ema.WeightAverage, evaluated as *_ema/* (#17)
    tta: int = 0  # camexp.engine.TTA_LEVELS: the final test also as test_tta/* (#17)
    # (model, epoch) -> a (3, H, W) CAM picture or None, with .save(grid, path): the wiring's
    # camexp.report.pictures.RunPictures (the loop itself draws nothing)
    pictures: Callable | None = None
    # (trainer, row) after each epoch's checkpoint: off-the-clock measurements (bench_tta.py)
    epoch_hooks: list = field(default_factory=list)
    precision: str = ""  # results.json's: bf16 | fp32, or how a resume changed it

    def __post_init__(self):
        self.precision = self.precision or precision_name(self.amp_dtype)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, name: str) -> str:
        return os.path.join(self.run_dir, "checkpoints", f"{name}.pt")

    def resumable_loader(self) -> bool:
        return hasattr(self.data.train, "state_dict")

    def rank_state(self, meter: EpochMeter | None) -> dict:
        """What differs between data-parallel ranks: generators, the loader's shard, the sums."""
        return {
            "rng": rng_state(),
            "loader": self.data.train.state_dict() if self.resumable_loader() else None,
            "regularizer": self.regularizer.state_dict(),
            "meter": meter.state_dict() if meter else None,
        }

    def state(self, meter: EpochMeter | None = None) -> dict:
        """Everything needed to continue; ``meter`` set means "inside epoch self.epoch + 1".
        Under torchrun ``ranks`` holds every rank's own part (a collective: all ranks call it)."""
        ranks = distributed.gather_objects(self.rank_state(meter))
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.epoch * len(self.data.train) + (meter.steps if meter else 0),
            **ranks[0],
            "ranks": ranks if distributed.enabled() else None,
            "history": self.history,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best": {"acc1": self.best_acc, "epoch": self.best_epoch},
            "config": self.config,
            "meta": self.meta,
            "precision": precision_name(self.amp_dtype),  # resumed in it (precision.py)
            "precision_label": self.precision,
        }

    def save(self, name: str, meter: EpochMeter | None = None) -> None:
        """Never write a poisoned state: a non-finite weight or buffer means divergence."""
        for key, value in unwrap(self.model).state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                where = (
                    f"epoch {self.epoch + 1}, step {meter.steps}"
                    if meter
                    else (f"end of epoch {self.epoch}")
                )
                raise Diverged(f"{key} holds NaN/inf at {where}; no checkpoint saved")
        state = self.state(meter)  # every rank: it gathers the ranks' generators
        if is_main():  # data-parallel ranks hold identical weights: one writes
            save_checkpoint(self.checkpoint_path(name), state)

    def resume(self) -> None:
        """Continue from the run folder's last.pt when it has one (the same config, checked)."""
        state = read_resume_state(self.run_dir, self.config, self.meta)
        if state is None:
            return
        own = own_rank_state(state, self.run_dir)
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.regularizer.load_state_dict(own["regularizer"])
        if own["loader"] is not None and self.resumable_loader():
            self.data.train.load_state_dict(own["loader"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.best_acc, self.best_epoch = state["best"]["acc1"], state["best"]["epoch"]
        if own["meter"] is not None and self.resumable_loader():
            self.meter = EpochMeter(self.device)
            self.meter.load_state_dict(own["meter"])
        set_rng_state(own["rng"])
        self.resume_precision(state)
        self.tracker.rewrite(self.history)
        extended = extend_schedule(state, self.epochs, self.scheduler, self.optimizer)
        log.info("resumed at epoch %d, step %d%s", self.epoch, state["step"], extended)

    def resume_precision(self, state: dict) -> None:
        """The checkpoint's precision, unless ``amp=`` was stated on resume (precision.py)."""
        before = state.get("precision")
        self.amp_dtype = resume_precision(before, (state.get("config") or {}).get("amp"),
                                          self.config.get("amp"), self.amp_dtype,
                                          self.epoch + 1)  # fmt: skip
        now, label = precision_name(self.amp_dtype), state.get("precision_label") or before
        changed = before in ("bf16", "fp32") and now != before
        self.precision = (
            f"{label}, then {now} from epoch {self.epoch + 1}" if changed else (label or now)
        )

    # ------------------------------------------------------------------ signals
    def stop_requested(self) -> bool:
        """A stop signal is pending here or (under torchrun) on any rank: every rank stops at
        the same step. Under torchrun this is a tiny all-reduce per step."""
        return distributed.any_rank(signals.pending() is not None, self.device)

    def stopped(self, where: str) -> signals.Stopped:
        name = signals.pending() or "SIGTERM"
        signals.clear()
        return signals.Stopped(f"stopped by {name} {where}", name)

    def after_step(self, meter: EpochMeter, bar) -> None:
        if self.ema is not None:  # the weight average follows every optimizer step (#17)
            self.ema.step(self.model)
        # An epoch's last step is followed by its validation and its epoch-end checkpoint: a stop
        # waits for those (fit), because a mid-epoch state saved after the last step would make
        # the resumed run train that epoch once more (the bug of issue 15).
        if meter.steps < len(self.data.train) and self.stop_requested():
            if self.resumable_loader():
                self.save("last", meter)
                raise self.stopped(f"at epoch {self.epoch + 1}, step {meter.steps} (saved)")
            raise self.stopped(f"at epoch {self.epoch + 1}, step {meter.steps} (epoch restarts)")
        if self.checkpoint_every and meter.steps % self.checkpoint_every == 0:
            if self.resumable_loader() and meter.steps < len(self.data.train):
                self.save("last", meter)
        self.tracker.log_lr(self.epoch * len(self.data.train) + meter.steps, self.optimizer)
        if bar is not None and bar.due(meter.steps, self.log_every):  # and at the epoch's end
            Progress.show(bar, meter.summary(across_ranks=False))

    # ------------------------------------------------------------------ the loop
    @contextmanager
    def session(self):
        """Around resume, fit and test: a stop or a divergence carries how far the run got (its
        record says so), and the tracker is closed however the run ends."""
        try:
            yield self
        except (Diverged, Preempted) as err:
            err.epochs_completed = self.epoch
            err.metrics = self.summary_metrics()
            raise
        finally:
            self.tracker.close()

    def fit(self) -> None:
        """The remaining epochs, each with stop signals deferred to its steps' ends and its own
        end; the final test and CAM metrics stop at once (last.pt holds every epoch)."""
        while self.epoch < self.epochs:
            with signals.deferred():
                self.run_epoch()
                if self.stop_requested():
                    raise self.stopped(f"after epoch {self.epoch} (saved)")

    def report_hparams(self, hparams: dict, metrics: dict) -> None:
        """TensorBoard's HParams summary: the knobs a sweep turns against the final numbers."""
        numbers = {k: v for k, v in metrics.items() if isinstance(v, float)}
        self.tracker.add_hparams(hparams, {f"hparam/{k}": v for k, v in numbers.items()})

    def run_epoch(self) -> None:
        epoch = self.epoch + 1
        started = time.perf_counter()
        meter, self.meter = self.meter or EpochMeter(self.device), None
        loader, bar = self.progress.wrap(self.data.train, f"epoch {epoch}/{self.epochs}")
        skipped = sum(row.get("train/skipped_steps", 0) for row in self.history)
        clock = time.perf_counter()
        try:
            stats = train_one_epoch(
                self.model, self.objective, loader, self.optimizer, self.scheduler,
                self.regularizer, self.device, epoch=epoch - 1, meter=meter, teacher=self.teacher,
                amp_dtype=self.amp_dtype, skip_nonfinite=self.skip_nonfinite - skipped,
                after_step=lambda m: self.after_step(m, bar),
            )  # fmt: skip
        finally:
            if bar is not None:
                bar.close()
        row = dict(stats, train_time_s=time.perf_counter() - clock)  # steps and EMA updates only
        if self.data.val is not None:  # model selection sees the held-out split, never test
            row.update(evaluate(self.model, track(self.data.val, "validate"), self.device,
                                prefix="val", amp_dtype=self.amp_dtype))  # fmt: skip
            row.update(evaluate_variants(self.model, self.data.val, self.device, prefix="val",
                                         amp_dtype=self.amp_dtype,
                                         ema_model=self.ema_model()))  # fmt: skip
            if not math.isfinite(row["val/loss"]):  # finite weights can overflow: lr too high
                raise Diverged(f"the validation loss is {row['val/loss']} after epoch {epoch}")
        row["epoch_time_s"] = time.perf_counter() - started
        self.epoch = epoch
        self.history.append(row)
        improved = self.data.val is not None and row["val/acc1"] > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = row["val/acc1"], epoch
        self.log_pictures(epoch)
        # best.pt first: a kill between the two saves resumes from the older last.pt and
        # recomputes this epoch, which rewrites the same best.pt.
        if improved:
            self.save("best")
        self.save("last")
        self.tracker.log_epoch(epoch, row)
        slow = slowdown([r["train/images_per_s"] for r in self.history])
        if slow:  # once: other jobs on these cores, or throttling (camexp/run/jobs.py)
            log.warning("%s", slow)
        for hook in self.epoch_hooks:
            hook(self, row)

    def ema_model(self) -> torch.nn.Module | None:
        return self.ema.module if self.ema is not None else None

    def log_pictures(self, epoch: int) -> torch.Tensor | None:
        grid = self.pictures(self.model, epoch) if self.pictures is not None else None
        if grid is None:
            return None
        self.tracker.add_image("cams/image_cam_caam", grid, epoch)
        return grid

    def summary_metrics(self) -> dict:
        if not self.history or self.data.val is None:
            return {}
        return {"val/acc1_best": self.best_acc, "val/acc1_last": self.history[-1]["val/acc1"],
                "best_epoch": self.best_epoch}  # fmt: skip
