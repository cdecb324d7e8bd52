"""The epoch loop shared by every training task: train, validate, checkpoint, picture, and
finally test the last and the best-on-val weights. The step loop itself is engine.py."""

import logging
import os
import time
from dataclasses import dataclass, field

import torch

from camexp.checkpoint import load_checkpoint, rng_state, save_checkpoint
from camexp.engine import evaluate, train_one_epoch
from camexp.errors import Diverged
from camexp.pictures import cam_grid, save_png
from camexp.tracking import Progress, Tracker

log = logging.getLogger(__name__)


@dataclass
class Trainer:
    model: torch.nn.Module
    objective: torch.nn.Module
    data: object  # camexp.tasks.build.Data
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
    progress: Progress = field(default_factory=Progress)
    history: list = field(default_factory=list)

    # ------------------------------------------------------------------ checkpoints
    def state(self, epoch: int) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "step": epoch * len(self.data.train),
            "rng": rng_state(),
            "loader_rng": self.data.train.generator.get_state()
            if hasattr(self.data.train, "generator")
            and isinstance(self.data.train.generator, torch.Generator)
            else None,
            "config": self.config,
            "meta": self.meta,
        }

    def checkpoint_path(self, name: str) -> str:
        return os.path.join(self.run_dir, "checkpoints", f"{name}.pt")

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        best_acc, best_epoch = -1.0, 0
        stats = {}
        for epoch in range(1, self.epochs + 1):
            started = time.perf_counter()
            loader, bar = self.progress.wrap(self.data.train, f"epoch {epoch}/{self.epochs}")
            try:
                stats = train_one_epoch(
                    self.model,
                    self.objective,
                    loader,
                    self.optimizer,
                    self.scheduler,
                    self.regularizer,
                    self.device,
                    epoch=epoch - 1,
                    teacher=self.teacher,
                    amp_dtype=self.amp_dtype,
                    log_every=self.log_every,
                    on_log=lambda step, s, bar=bar: Progress.show(bar, s),
                )
            except Diverged as err:
                err.epochs_completed = epoch - 1
                err.metrics = self.summary_metrics(best_acc, best_epoch)
                raise
            finally:
                if bar is not None:
                    bar.close()
            row = dict(stats)
            selection = self.data.val or self.data.test
            row.update(
                evaluate(self.model, selection, self.device, amp_dtype=self.amp_dtype, prefix="val")
            )
            row["epoch_time_s"] = time.perf_counter() - started
            self.history.append(row)
            self.tracker.log_epoch(epoch, row)
            self.log_pictures(epoch)
            save_checkpoint(self.checkpoint_path("last"), self.state(epoch))
            if row["val/acc1"] > best_acc:
                best_acc, best_epoch = row["val/acc1"], epoch
                save_checkpoint(self.checkpoint_path("best"), self.state(epoch))
        return self.finish(best_acc, best_epoch)

    def log_pictures(self, epoch: int) -> torch.Tensor | None:
        if len(self.data.picture_labels) == 0:
            return None
        grid = cam_grid(
            self.model,
            self.data.picture_images,
            self.data.picture_labels,
            self.data.mean,
            self.data.std,
        )
        self.tracker.add_image("cams/image_cam_caam", grid, epoch)
        return grid

    def summary_metrics(self, best_acc: float, best_epoch: int) -> dict:
        if not self.history:
            return {}
        return {
            "val/acc1_best": best_acc,
            "val/acc1_last": self.history[-1]["val/acc1"],
            "best_epoch": best_epoch,
        }

    def finish(self, best_acc: float, best_epoch: int) -> dict:
        """Test with the last weights, then with the best-on-val weights; pictures to PNG."""
        metrics = self.summary_metrics(best_acc, best_epoch)
        metrics.update(
            evaluate(
                self.model, self.data.test, self.device, amp_dtype=self.amp_dtype, prefix="test"
            )
        )
        grid = self.log_pictures(self.epochs)
        if grid is not None:
            save_png(grid, os.path.join(self.run_dir, "cams.png"))
        last_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(load_checkpoint(self.checkpoint_path("best"))["model"])
        best = evaluate(
            self.model, self.data.test, self.device, amp_dtype=self.amp_dtype, prefix="test"
        )
        metrics.update({k.replace("test/", "test_best/"): v for k, v in best.items()})
        self.model.load_state_dict(last_state)
        metrics.pop("test/images_per_s", None)
        metrics.pop("test_best/images_per_s", None)
        train_speeds = [row["train/images_per_s"] for row in self.history]
        # The first epoch includes warm-up (allocator, kernels); report the steady state.
        steady = train_speeds[1:] or train_speeds
        return {
            "epochs_completed": len(self.history),
            "metrics": {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
            "train_images_per_s": round(sum(steady) / len(steady), 1),
        }
