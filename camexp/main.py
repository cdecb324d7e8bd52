"""The one entry point: ``camexp [overrides...]`` == ``python -m camexp [overrides...]``.

Composes the config, dispatches on ``task.name`` to ``camexp.tasks.<name>.run`` and turns a
user error into one line on stderr and a non-zero exit (tracebacks with HYDRA_FULL_ERROR=1).
"""

import importlib
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from camexp.errors import Diverged, Preempted, UserError
from camexp.run import distributed
from camexp.run.checkpoint import load_checkpoint
from camexp.run.record import RunRecord

log = logging.getLogger("camexp")

# The top-level configs/ folder of the checkout, as an absolute path: a relative config_path
# is read as a Python package when camexp runs as a console script.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


# Used by configs/config.yaml's hydra.run.dir and hydra.output_subdir (see `resume`).
# Under torchrun, ranks other than 0 get a scratch folder of their own: rank 0 writes the run.
def run_dir_resolver(resume, default):
    if resume:
        return resume
    return default if distributed.is_main() else distributed.side_run_dir()


OmegaConf.register_new_resolver("camexp_run_dir", run_dir_resolver, replace=True)
OmegaConf.register_new_resolver(
    "camexp_hydra_subdir", lambda resume: None if resume else ".hydra", replace=True
)
# Run and sweep folders end in the launching process's id, so runs started in the same
# microsecond (an array of single jobs) never share a folder. Cached: a sweep's jobs, resolved in
# worker processes, see the launcher's id and hence its folder.
OmegaConf.register_new_resolver("camexp_pid", os.getpid, use_cache=True, replace=True)
RESUME_ALLOWED = ("resume", "progress", "log_every", "tensorboard", "device", "checkpoint_every")


def resumed_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """``resume=RUN_DIR``: the run continues with the config saved in its last checkpoint."""
    run_dir = str(cfg.resume)
    extra = [o for o in overrides if o.split("=")[0].lstrip("+~") not in RESUME_ALLOWED]
    if extra:
        raise UserError(
            f"resume={run_dir} continues that run with its own config; drop {' '.join(extra)}"
        )
    last = os.path.join(run_dir, "checkpoints", "last.pt")
    composed = os.path.join(run_dir, ".hydra", "config.yaml")
    if os.path.exists(last):
        resumed = OmegaConf.create(load_checkpoint(last)["config"])
    elif os.path.exists(composed):  # killed before its first checkpoint: start it over
        resumed = OmegaConf.load(composed)
    else:
        raise UserError(
            f"resume={run_dir}: no checkpoints/last.pt or .hydra/config.yaml there; "
            "pass a camexp run folder"
        )
    resumed.resume = run_dir
    for override in overrides:  # the few volatile keys the command line may still change
        key, _, _ = override.partition("=")
        OmegaConf.update(resumed, key.lstrip("+~"), OmegaConf.select(cfg, key.lstrip("+~")))
    saved = os.path.join(run_dir, ".hydra", "overrides.yaml")
    original = list(OmegaConf.load(saved)) if os.path.exists(saved) else []
    return resumed, original


EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again (resume)


def load_task(name: str):
    try:
        return importlib.import_module(f"camexp.tasks.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"camexp.tasks.{name}":
            raise
        raise UserError(f"unknown task {name!r}; see `camexp --help` for the task options") from err


def user_error_of(err: Exception) -> Exception | None:
    """The UserError or Diverged behind ``err``: hydra's ``instantiate`` wraps whatever a
    ``_target_`` raises (a dataset reader, a loss's option check) in InstantiationException."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err if isinstance(err, UserError | Diverged) else None


def run_task(cfg: DictConfig) -> dict | None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    overrides = list(hydra_cfg.overrides.task)
    if cfg.get("resume"):
        try:
            cfg, overrides = resumed_config(cfg, overrides)
        except UserError as err:
            print(f"camexp: error: {err}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
    record = RunRecord(hydra_cfg.runtime.output_dir, cfg, overrides)
    try:
        return load_task(str(cfg.task.name)).run(cfg, record)
    except Preempted as err:
        record.fail("preempted", err)
        log.warning("%s; continue with resume=%s", err, record.run_dir)
        print(f"camexp: {err}; continue with resume={record.run_dir}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)  # the signal was for the process: a sweep stops here too
    except (UserError, Diverged, InstantiationException) as raised:
        err = user_error_of(raised)
        if err is None:
            record.fail("failed", raised)
            raise
        diverged = isinstance(err, Diverged)
        record.fail("diverged" if diverged else "failed", err)
        log.error("%s", err)
        print(f"camexp: {'diverged' if diverged else 'error'}: {err}", file=sys.stderr)
        if full_error:
            raise
        if not multirun:  # in a sweep the other jobs go on; results.json holds the error
            sys.exit(EXIT_DIVERGED if diverged else EXIT_USER_ERROR)
        return None
    except Exception as err:
        record.fail("failed", err)
        raise
    finally:
        distributed.remove_side_run_dir(hydra_cfg.runtime.output_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    return run_task(cfg)


if __name__ == "__main__":
    main()
