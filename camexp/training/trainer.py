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
import signal
import time
from dataclasses import dataclass, field

import torch

from camexp.engine import EpochMeter, evaluate, train_one_epoch
from camexp.errors import Diverged, Preempted, UserError
from camexp.metrics.convergence import convergence_epochs
from camexp.report.pictures import cam_grid, save_png
from camexp.run.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from camexp.run.distributed import is_main, unwrap
from camexp.run.tracking import Progress, Tracker

log = logging.getLogger(__name__)

# Keys that do not change a run's results: a resumed run may differ from its checkpoint in these.
# ``metrics`` and ``fewshot`` only change what is measured after training.
VOLATILE_KEYS = ("resume", "progress", "log_every", "tensorboard", "eval_batch_size", "device",
                 "checkpoint_every", "paths", "metrics", "fewshot")  # fmt: skip
PREEMPT_SIGNALS = ("SIGTERM", "SIGUSR1")  # SLURM sends one of these before a time limit


@dataclass
class Trainer:
    model: torch.nn.Module
    objective: torch.nn.Module
    data: object  # camexp.training.parts.Data
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
    preempt_requested: bool = False
    cam_quality: object | None = None  # camexp.metrics.CamQuality: CAM metrics at the end (#9)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, name: str) -> str:
        return os.path.join(self.run_dir, "checkpoints", f"{name}.pt")

    def resumable_loader(self) -> bool:
        return hasattr(self.data.train, "state_dict")

    def state(self, meter: EpochMeter | None = None) -> dict:
        """Everything needed to continue; ``meter`` set means "inside epoch self.epoch + 1"."""
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.epoch * len(self.data.train) + (meter.steps if meter else 0),
            "rng": rng_state(),
            "loader": self.data.train.state_dict() if self.resumable_loader() else None,
            "regularizer": self.regularizer.state_dict(),
            "meter": meter.state_dict() if meter else None,
            "history": self.history,
            "best": {"acc1": self.best_acc, "epoch": self.best_epoch},
            "config": self.config,
            "meta": self.meta,
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
        if is_main():  # data-parallel ranks hold identical weights: one writes
            save_checkpoint(self.checkpoint_path(name), self.state(meter))

    def resume_if_possible(self) -> None:
        folder = os.path.dirname(self.checkpoint_path("last"))
        if is_main() and os.path.isdir(folder):  # a save killed before its rename
            for name in os.listdir(folder):
                if name.startswith(".tmp-"):
                    os.unlink(os.path.join(folder, name))
        path = self.checkpoint_path("last")
        if not os.path.exists(path):
            return
        state = load_checkpoint(path)
        differing = config_difference(state.get("config", {}), self.config)
        if differing:
            raise UserError(
                f"{self.run_dir} already holds a checkpoint of another config (differs in "
                f"{', '.join(differing[:5])}); use a new run folder, or resume={self.run_dir} "
                "to continue that run with its own config"
            )
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.regularizer.load_state_dict(state["regularizer"])
        if state["loader"] is not None and self.resumable_loader():
            self.data.train.load_state_dict(state["loader"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.best_acc, self.best_epoch = state["best"]["acc1"], state["best"]["epoch"]
        if state["meter"] is not None and self.resumable_loader():
            self.meter = EpochMeter(self.device)
            self.meter.load_state_dict(state["meter"])
        set_rng_state(state["rng"])
        self.tracker.rewrite(self.history)
        log.info("resumed %s at epoch %d, step %d", path, self.epoch, state["step"])

    # ------------------------------------------------------------------ signals
    def request_preemption(self, signum, frame) -> None:
        log.warning("received %s: saving at the end of this step", signal.Signals(signum).name)
        self.preempt_requested = True

    def install_signal_handlers(self) -> dict:
        previous = {}
        for name in PREEMPT_SIGNALS:
            if hasattr(signal, name):
                try:
                    previous[name] = signal.signal(getattr(signal, name), self.request_preemption)
                except ValueError:  # not the main thread: leave signals to the caller
                    return previous
        return previous

    def after_step(self, meter: EpochMeter, bar) -> None:
        if self.preempt_requested:
            if self.resumable_loader():
                self.save("last", meter)
            raise Preempted(f"preempted at epoch {self.epoch + 1}, step {meter.steps}")
        if self.checkpoint_every and meter.steps % self.checkpoint_every == 0:
            if self.resumable_loader() and meter.steps < len(self.data.train):
                self.save("last", meter)
        if bar is not None and meter.steps % self.log_every == 0:
            Progress.show(bar, meter.summary(across_ranks=False))

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        self.resume_if_possible()
        previous = self.install_signal_handlers()
        try:
            while self.epoch < self.epochs:
                self.run_epoch()
        except (Diverged, Preempted) as err:
            err.epochs_completed = self.epoch
            err.metrics = self.summary_metrics()
            raise
        finally:
            for name, handler in previous.items():
                signal.signal(getattr(signal, name), handler)
        return self.finish()

    def fit_and_report(self, hparams: dict, extra_metrics: dict | None = None) -> dict:
        """``fit()``, then TensorBoard's HParams summary; the tracker is closed either way."""
        try:
            results = self.fit()
            results["metrics"].update(extra_metrics or {})
            numbers = {k: v for k, v in results["metrics"].items() if isinstance(v, float)}
            self.tracker.add_hparams(hparams, {f"hparam/{k}": v for k, v in numbers.items()})
            return results
        finally:
            self.tracker.close()

    def run_epoch(self) -> None:
        epoch = self.epoch + 1
        started = time.perf_counter()
        meter, self.meter = self.meter or EpochMeter(self.device), None
        loader, bar = self.progress.wrap(self.data.train, f"epoch {epoch}/{self.epochs}")
        skipped = sum(row.get("train/skipped_steps", 0) for row in self.history)
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
        row = dict(stats)
        selection = self.data.val or self.data.test
        row.update(evaluate(self.model, selection, self.device, amp_dtype=self.amp_dtype))
        if not math.isfinite(row["val/loss"]):  # finite weights can still overflow: lr too high
            raise Diverged(f"the validation loss is {row['val/loss']} after epoch {epoch}")
        row["epoch_time_s"] = time.perf_counter() - started
        self.epoch = epoch
        self.history.append(row)
        improved = row["val/acc1"] > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = row["val/acc1"], epoch
        self.log_pictures(epoch)
        # best.pt first: a kill between the two saves resumes from the older last.pt and
        # recomputes this epoch, which rewrites the same best.pt.
        if improved:
            self.save("best")
        self.save("last")
        self.tracker.log_epoch(epoch, row)

    def log_pictures(self, epoch: int) -> torch.Tensor | None:
        if len(self.data.picture_labels) == 0:
            return None
        grid = cam_grid(self.model, self.data.picture_images, self.data.picture_labels,
                        self.data.mean, self.data.std)  # fmt: skip
        self.tracker.add_image("cams/image_cam_caam", grid, epoch)
        return grid

    def summary_metrics(self) -> dict:
        if not self.history:
            return {}
        return {"val/acc1_best": self.best_acc, "val/acc1_last": self.history[-1]["val/acc1"],
                "best_epoch": self.best_epoch}  # fmt: skip

    def finish(self) -> dict:
        """Test with the last weights, then with the best-on-val weights; pictures to PNG."""
        metrics = self.summary_metrics()
        metrics.update(convergence_epochs([row["val/acc1"] for row in self.history]))
        if not is_main():  # rank 0 tests and reports; the other ranks hold the same weights
            return {"epochs_completed": len(self.history), "metrics": metrics}
        metrics.update(evaluate(self.model, self.data.test, self.device,
                                amp_dtype=self.amp_dtype, prefix="test"))  # fmt: skip
        grid = self.log_pictures(self.epochs)
        if grid is not None:
            save_png(grid, os.path.join(self.run_dir, "cams.png"))
        if self.cam_quality is not None:  # with the last weights, like test/acc1
            metrics.update(self.cam_quality(self.model, self.data, self.device))
        last_state = {k: v.clone() for k, v in unwrap(self.model).state_dict().items()}
        unwrap(self.model).load_state_dict(load_checkpoint(self.checkpoint_path("best"))["model"])
        best = evaluate(self.model, self.data.test, self.device, amp_dtype=self.amp_dtype,
                        prefix="test")  # fmt: skip
        metrics.update({k.replace("test/", "test_best/"): v for k, v in best.items()})
        unwrap(self.model).load_state_dict(last_state)
        metrics.pop("test/images_per_s", None)
        metrics.pop("test_best/images_per_s", None)
        train_speeds = [row["train/images_per_s"] for row in self.history]
        # The first epoch includes warm-up (allocator, kernels); report the steady state.
        steady = train_speeds[1:] or train_speeds
        return {
            "epochs_completed": len(self.history),
            "metrics": {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
            "train_images_per_s": round(sum(steady) / len(steady), 1),
            # folder datasets with on_corrupt=skip: the unreadable training images left out
            "skipped_images": getattr(self.data.train, "skipped", []),
        }


def config_difference(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, ignoring keys that do not change results."""
    keys = sorted(set(saved) | set(current))
    out = []
    for key in keys:
        if not prefix and key in VOLATILE_KEYS:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_difference(a, b, f"{prefix}{key}.")
        elif a != b and not (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b)):
            out.append(f"{prefix}{key}")
    return out
