"""The life of results.json: ``running`` at the start, then ``completed``, ``failed``,
``diverged``, ``preempted`` or ``interrupted`` with the error, so a sweep's report lists every run
instead of losing some. Never left ``running`` after an exit Python can handle: when the disk is
too full for the atomic write, a short record overwrites the file in place."""

import json
import math
import os
import time

from omegaconf import DictConfig, OmegaConf

from camexp.errors import Diverged
from camexp.run.distributed import is_main
from camexp.run.machine import machine_record
from camexp.run.tracking import peak_rss_mb, versions, write_json_atomic


def resolved_or_raw(cfg: DictConfig) -> dict:
    """The config with interpolations resolved (a KD pair's CAT-KD weight as its number, not
    ``${oc.select:...}``), or as written when a value cannot be resolved (the run then fails on
    that value with its own one-line error, and results.json still records what was asked)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001  (any resolver error: the raw config is still a record)
        return OmegaConf.to_container(cfg, resolve=False)


def non_finite(metrics: dict, prefix: str = "") -> list[str]:
    """``name=value`` of every metric that is NaN or infinite (nested dicts included)."""
    out = []
    for name, value in metrics.items():
        if isinstance(value, dict):
            out += non_finite(value, f"{prefix}{name}/")
        elif isinstance(value, float) and not math.isfinite(value):
            out.append(f"{prefix}{name}={value}")
    return out


class RunRecord:
    def __init__(
        self, run_dir: str, cfg: DictConfig, overrides: list[str], extended_from: list = ()
    ):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, "results.json")
        self.start = time.time()
        self.base = {
            "task": str(cfg.task.name),
            "overrides": list(overrides),
            "config": resolved_or_raw(cfg),
            "versions": versions(),
        }
        if extended_from:  # resume=RUN epochs=N: the epochs before each extension (run/extend.py)
            self.base["extended_from"] = list(extended_from)
        self.device = self.precision = None  # known once the task resolves them: note()
        if is_main():
            os.makedirs(run_dir, exist_ok=True)
        self.write("running", epochs_completed=0, metrics={})

    def note(self, *, device=None, precision: str | None = None) -> None:
        """Facts every later write records, a failed run's too: the device and the precision
        (``bf16``/``fp32``; camexp-report never pools runs of different precision)."""
        self.device = str(device) if device is not None else self.device
        self.precision = precision if precision is not None else self.precision

    def write(self, status: str, **fields) -> dict:
        not_finite = non_finite(fields.get("metrics") or {}) if status == "completed" else []
        if not_finite:  # a NaN is a failed run, never a number in a table (main.py: exit 3)
            err = Diverged(
                f"{', '.join(not_finite[:3])} not a finite number: the run diverged "
                "(a NaN/inf in the weights or the loss); lower the lr or check the data"
            )
            err.metrics, err.epochs_completed = fields["metrics"], fields.get("epochs_completed", 0)
            raise err
        results = {
            "status": status,
            **{k: self.base[k] for k in ("task",)},
            "precision": self.precision,
            **fields,
            "wall_time_s": round(time.time() - self.start, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "machine": machine_record(self.device),
            **{k: v for k, v in self.base.items() if k != "task"},
        }
        if is_main():  # under torchrun only rank 0 writes the run folder
            write_json_atomic(self.path, results)
        self.status = status  # once "completed", a late signal or error leaves it so (main.py)
        return results

    def fail(self, status: str, error: BaseException, **fields) -> dict:
        if getattr(self, "status", None) == "completed":  # finished before the error came
            return {"status": "completed"}
        fields.setdefault("epochs_completed", getattr(error, "epochs_completed", 0))
        fields.setdefault("metrics", getattr(error, "metrics", {}))
        message = f"{type(error).__name__}: {error}"
        try:
            return self.write(status, error=message, **fields)
        except OSError as write_error:  # a full disk: the small record below still fits
            short = {"status": status, "task": self.base["task"], "error": message,
                     "epochs_completed": fields["epochs_completed"],
                     "note": f"full record not written ({write_error})"}  # fmt: skip
            if is_main():
                self.overwrite_in_place(short)
            return short

    def overwrite_in_place(self, short: dict) -> None:
        """Not atomic, by necessity: the blocks of the old, longer record are reused."""
        try:
            with open(self.path, "r+" if os.path.exists(self.path) else "w") as f:
                f.seek(0)
                f.write(json.dumps(short, default=str))
                f.truncate()
        except OSError:
            pass  # nothing more can be written; the exception that stopped the run propagates
