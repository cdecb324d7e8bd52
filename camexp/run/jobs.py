"""What a run shares with the other jobs of a sweep: the CPU cores and the console.

``threads=auto`` gives each job its share of the cores: the cores this process may use divided
by the jobs a parallel launcher (Hydra's joblib, configs/hydra/launcher/parallel.yaml) runs at
once, unless OMP_NUM_THREADS says otherwise. Measured on a 2-core machine: two jobs with torch's
default of one thread per core each fall from ~3,000 to ~150 images/s; one thread each keeps both
near half the machine's rate. Parallel jobs also share one console, so each log line starts
with its job's number.

    threads = apply_threads(cfg.threads, hydra_cfg)   # once, before the task builds anything
    prefix_job_logs(hydra_cfg)                         # "[job 3] ..." under a parallel launcher
"""

from __future__ import annotations

import logging
import os

import torch
from hydra.types import RunMode

from camexp.errors import UserError

log = logging.getLogger(__name__)


def cores() -> int:
    """The cores this process may run on (a SLURM job or taskset sees its own share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


def parallel_jobs(hydra_cfg) -> int:
    """How many jobs of this sweep run at once on this machine: joblib's ``n_jobs`` (-1: one per
    core); 1 for a single run and for the basic and submitit launchers (a SLURM job has cores of
    its own, and submitit's local jobs get theirs through ``cpus_per_task``)."""
    launcher = getattr(hydra_cfg, "launcher", None)
    target = str((launcher or {}).get("_target_", "")) if launcher is not None else ""
    if getattr(hydra_cfg, "mode", None) != RunMode.MULTIRUN or "joblib" not in target:
        return 1
    n_jobs = int(launcher.get("n_jobs", -1) or -1)
    return cores() if n_jobs < 0 else max(n_jobs, 1)


def threads_for(value, hydra_cfg) -> tuple[int, str]:
    """``threads`` (``auto`` or a positive integer) -> (torch threads, why)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, "threads"
    if str(value) != "auto":
        raise UserError(
            f"threads={value} must be auto or a whole number >= 1 (auto: the cores / the "
            "launcher's parallel jobs)"
        )
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) >= 1:
        return int(omp), "OMP_NUM_THREADS"
    jobs = parallel_jobs(hydra_cfg)
    share = max(cores() // jobs, 1)
    return share, f"{cores()} cores / {jobs} parallel job(s)" if jobs > 1 else f"{cores()} cores"


def apply_threads(value, hydra_cfg) -> int:
    """Set torch's intra-op threads once for the run, and say so in the log."""
    threads, why = threads_for(value, hydra_cfg)
    torch.set_num_threads(threads)
    log.info("torch threads: %d (%s)", threads, why)
    return threads


class JobPrefix(logging.Filter):
    """Prefix a record's message with ``[job N] `` (once, whichever handler sees it first)."""

    def __init__(self, num: int):
        super().__init__()
        self.prefix = f"[job {num}] "

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "camexp_job_prefixed", False):
            record.msg = self.prefix + str(record.msg)
            record.camexp_job_prefixed = True
        return True


def prefix_job_logs(hydra_cfg) -> JobPrefix | None:
    """Under a parallel launcher, every handler of the root logger prefixes the job's number;
    returns the filter (None when jobs do not share the console)."""
    if parallel_jobs(hydra_cfg) <= 1:
        return None
    prefix = JobPrefix(int(hydra_cfg.job.num))
    for handler in logging.getLogger().handlers:
        handler.addFilter(prefix)
    return prefix
