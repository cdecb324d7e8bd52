"""What a run leaves behind: metrics.csv, TensorBoard events, results.json, a progress line."""

import csv
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile

from camexp.run.distributed import is_main

log = logging.getLogger(__name__)


def write_json_atomic(path: str, data: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def versions() -> dict:
    import timm
    import torch

    import camexp

    try:
        here = os.path.dirname(os.path.abspath(__file__))
        git = (
            subprocess.run(
                ["git", "-C", here, "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        git = None
    return {
        "camexp": camexp.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "git": git,
    }


class Tracker:
    """One per run: appends epoch rows to metrics.csv and TensorBoard, writes results.json."""

    def __init__(self, run_dir: str, tensorboard: bool = True):
        self.run_dir = run_dir
        self.csv_path = os.path.join(run_dir, "metrics.csv")
        self.results_path = os.path.join(run_dir, "results.json")
        self.columns: list[str] | None = None
        self.writer = None
        self.enabled = is_main()  # under torchrun only rank 0 writes the run folder
        if tensorboard and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def log_epoch(self, epoch: int, row: dict, echo: bool = True) -> None:
        if not self.enabled:
            return
        row = {"epoch": epoch, **row}
        if self.columns is None:
            self.columns = list(row)
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow([format_value(row.get(c, "")) for c in self.columns])
        if self.writer is not None and echo:
            for name, value in row.items():
                if name != "epoch" and isinstance(value, int | float):
                    self.writer.add_scalar(name, value, epoch)
            self.writer.flush()
        if not echo:
            return
        log.info(
            "epoch %d  %s",
            epoch,
            "  ".join(
                f"{k}={format_value(v)}"
                for k, v in row.items()
                if k != "epoch" and ("acc1" in k or k.startswith("train/loss") or k == "lr")
            ),
        )

    def rewrite(self, history: list[dict]) -> None:
        """Start metrics.csv over from a resumed run's history (no duplicate epochs)."""
        self.columns = None
        if os.path.exists(self.csv_path):
            os.unlink(self.csv_path)
        for epoch, row in enumerate(history, start=1):
            self.log_epoch(epoch, row, echo=False)

    def add_image(self, tag: str, image, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, step)

    def add_hparams(self, hparams: dict, metrics: dict) -> None:
        if self.writer is not None:
            clean = {
                k: v if isinstance(v, int | float | str | bool) else str(v)
                for k, v in hparams.items()
            }
            self.writer.add_hparams(clean, metrics, run_name="hparams")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_value(value):
    return f"{value:.6g}" if isinstance(value, float) else value


class Progress:
    """A tqdm bar over a loader on a terminal; nothing (epoch log lines suffice) otherwise."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def wrap(self, loader, desc: str):
        if not self.enabled:
            return loader, None
        from tqdm import tqdm

        bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
        return bar, bar

    @staticmethod
    def show(bar, stats: dict) -> None:
        if bar is None:
            return
        shown = {
            k.removeprefix("train/"): v
            for k, v in stats.items()
            if k.startswith("train/") and k != "train/images_per_s"
        }
        shown["img/s"] = stats.get("train/images_per_s", 0.0)
        bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
