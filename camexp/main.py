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
from hydra.types import RunMode
from omegaconf import DictConfig

from camexp.errors import Diverged, UserError
from camexp.tasks.record import RunRecord

log = logging.getLogger("camexp")

# The top-level configs/ folder of the checkout, as an absolute path: a relative config_path
# is read as a Python package when camexp runs as a console script.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3


def load_task(name: str):
    try:
        return importlib.import_module(f"camexp.tasks.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"camexp.tasks.{name}":
            raise
        raise UserError(f"unknown task {name!r}; see `camexp --help` for the task options") from err


def run_task(cfg: DictConfig) -> dict | None:
    hydra_cfg = HydraConfig.get()
    record = RunRecord(hydra_cfg.runtime.output_dir, cfg, list(hydra_cfg.overrides.task))
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        return load_task(str(cfg.task.name)).run(cfg, record)
    except (UserError, Diverged) as err:
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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    return run_task(cfg)


if __name__ == "__main__":
    main()
