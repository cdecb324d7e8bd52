"""What a run leaves behind: metrics.csv, TensorBoard events, results.json (every file written
atomically, by rank 0 only), and the progress line (camexp.run.progress)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import resource
import subprocess
import sys
import tempfile

from camexp.run.distributed import is_main
from camexp.run.keys import neutral
from camexp.run.progress import Progress, track  # noqa: F401  (the trainer imports them here)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- atomic files
def current_umask() -> int:
    """The process's umask, read without changing it (Linux); elsewhere set and put back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)  # the brief window errs on the private side
    os.umask(umask)
    return umask


def shareable(fd: int) -> None:
    """mkstemp makes files 0600; give ``fd`` the mode a plain ``open`` would (0666 less the
    umask), so a group can read a run folder on shared storage when the umask lets it."""
    os.fchmod(fd, 0o666 & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto
    ``path``, on any failure it is removed. A reader never sees a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]  # savefig / save_image pick the format by the suffix
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        shareable(fd)
    finally:
        os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)


def write_json_atomic(path: str, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


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


# ----------------------------------------------------------------------------- hparams
def short_value(value):
    """A value TensorBoard's HParams table shows in one cell: numbers and booleans as they
    are, anything else as a one-line string of at most 60 characters."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = " ".join(str(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def typed(text: str):
    """An override's value as typed -> bool, int, float or the string itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def flatten(values: dict, prefix: str = "") -> dict:
    """``{"loss": {"cam": {"weight": 1}}}`` -> ``{"loss.cam.weight": 1}`` (``_target_`` left
    out: the option names say what was built)."""
    out = {}
    for key, value in values.items():
        if key in ("_target_", "_partial_"):
            continue
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def hparams_of(knobs: dict, overrides: list[str]) -> dict:
    """The HParams row of a run: the task's knobs (nested dicts flattened, e.g. every
    ``loss.cam.*`` option) and every key of the command line, as typed (``regularizer=cutmix``
    shows ``cutmix``, not the composed dict); values shortened to one cell."""
    row = flatten(knobs)
    for line in overrides:
        key, sep, value = str(line).partition("=")
        if sep and not key.startswith(("~", "hydra.", "hydra/")):
            row[key.lstrip("+")] = typed(value)
    return {k: short_value(v) for k, v in row.items()}


def run_name(overrides: list[str]) -> str:
    """A TensorBoard run name from the overrides that change results:
    ``loss.cam.weight=1,seed=2``; ``defaults`` without any. Characters a folder name cannot
    hold become ``_``."""
    keep = [str(o) for o in overrides if not neutral(str(o).partition("=")[0])]
    name = ",".join(keep) or "defaults"
    name = re.sub(r"[^\w.,=+\-\[\]]", "_", name)
    return name if len(name) <= 120 else name[:117] + "..."


# ----------------------------------------------------------------------------- the tracker
class Tracker:
    """One per run: metrics.csv rows, TensorBoard scalars/images/hparams, in one TensorBoard run
    ``RUN_DIR/tensorboard/<overrides>`` (``tensorboard --logdir`` on a sweep folder lists each job
    under its overrides). Under torchrun only rank 0 writes."""

    def __init__(self, run_dir: str, tensorboard: bool = True, overrides: list | None = None):
        self.run_dir = run_dir
        self.csv_path = os.path.join(run_dir, "metrics.csv")
        self.overrides = list(overrides or [])
        self.rows: list[dict] = []
        self.writer = None
        self.enabled = is_main()  # under torchrun only rank 0 writes the run folder
        if tensorboard and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb_dir = os.path.join(run_dir, "tensorboard", run_name(self.overrides))
            self.writer = SummaryWriter(self.tb_dir)

    # metrics.csv is rewritten whole (atomically) at each epoch: a kill never leaves a torn row
    def write_csv(self) -> None:
        if not self.enabled:
            return
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in self.rows:
            writer.writerow([format_value(row.get(c, "")) for c in columns])
        write_text_atomic(self.csv_path, out.getvalue())

    def log_epoch(self, epoch: int, row: dict, echo: bool = True) -> None:
        if not self.enabled:
            return
        row = {"epoch": epoch, **row}
        self.rows.append(row)
        self.write_csv()
        if not echo:
            return
        if self.writer is not None:
            for name, value in row.items():
                if name not in ("epoch", "lr") and isinstance(value, int | float):
                    self.writer.add_scalar(name, value, epoch)  # lr: per step, log_step
            self.writer.flush()
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
        if not self.enabled:  # rank > 0 must never touch rank 0's file
            return
        self.rows = [{"epoch": epoch, **row} for epoch, row in enumerate(history, start=1)]
        self.write_csv()

    def log_lr(self, step: int, optimizer) -> None:
        """The learning rate per step, after the scheduler's step: the value at x = s is the one
        step s + 1 uses (transfer's extra parameter groups as ``lr/group<i>``). No host sync."""
        if self.writer is None:
            return
        first = float(optimizer.param_groups[0]["lr"])
        self.writer.add_scalar("lr", first, step)
        for i, group in enumerate(optimizer.param_groups[1:], start=1):
            if float(group["lr"]) != first:  # e.g. no-decay groups share it: not repeated
                self.writer.add_scalar(f"lr/group{i}", float(group["lr"]), step)

    def add_image(self, tag: str, image, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, step)

    def add_hparams(self, hparams: dict, metrics: dict) -> None:
        """The HParams summary, written into this run (not a second one): the task's knobs
        plus every command-line key (``hparams_of``), against the final metrics."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        row = hparams_of(hparams, self.overrides)
        metrics = {k: float(v) for k, v in metrics.items()}
        experiment, start, end = hparams_summary(row, metrics)
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_value(value):
    return f"{value:.6g}" if isinstance(value, float) else value
