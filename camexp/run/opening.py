"""Taking a run folder: refuse symlinks where camexp writes, lock it, recompose a resumed run
(and record an extension to more epochs), write ``.hydra/`` and the "running" results.json."""

from __future__ import annotations

import logging
import os

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from camexp.errors import UserError
from camexp.run import distributed
from camexp.run.extend import check_epochs_left, extended_overrides, extension_history
from camexp.run.folder import created_now
from camexp.run.lock import RunLock, refuse_symlinks
from camexp.run.recompose import recompose_run, saved_overrides
from camexp.run.record import RunRecord
from camexp.run.tracking import write_text_atomic


def save_extension(run_dir: str, cfg: DictConfig, overrides: list[str]) -> None:
    """A resumed run given more epochs: its ``.hydra/config.yaml`` and ``overrides.yaml`` say so
    (hydra.yaml keeps the run's group choices), so the report and the next resume see them."""
    folder = os.path.join(run_dir, ".hydra")
    write_text_atomic(os.path.join(folder, "config.yaml"), OmegaConf.to_yaml(cfg))
    write_text_atomic(os.path.join(folder, "overrides.yaml"), OmegaConf.to_yaml(overrides))


def save_hydra_files(run_dir: str, cfg: DictConfig, overrides: list[str]) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` as Hydra writes them, but atomically and under
    the lock; kept as they are when the folder already holds a checkpoint to resume."""
    folder = os.path.join(run_dir, ".hydra")
    if os.path.exists(os.path.join(run_dir, "checkpoints", "last.pt")) and os.path.isdir(folder):
        return
    hydra_node = OmegaConf.create({"hydra": HydraConfig.get()})
    write_text_atomic(os.path.join(folder, "config.yaml"), OmegaConf.to_yaml(cfg))
    write_text_atomic(os.path.join(folder, "hydra.yaml"), OmegaConf.to_yaml(hydra_node))
    write_text_atomic(os.path.join(folder, "overrides.yaml"), OmegaConf.to_yaml(overrides))


def open_run(cfg: DictConfig, run_dir: str, overrides: list[str]):
    """Lock the folder, recompose a resumed run, write .hydra/ and results.json "running"."""
    if distributed.is_main():
        try:
            refuse_symlinks(run_dir)
        except UserError:
            drop_log_file(run_dir)  # Hydra opened camexp.log: nothing may reach its target
            raise
    lock = RunLock(run_dir).acquire() if distributed.is_main() else None
    try:
        if cfg.get("resume"):
            if created_now(run_dir):  # Hydra made the folder that resume= names
                raise UserError(f"resume={cfg.resume}: no such folder; pass a camexp run folder")
            same = os.path.abspath(str(cfg.resume)) == os.path.abspath(run_dir)
            if distributed.is_main() and not same:
                raise UserError(f"resume={cfg.resume} runs in that folder; drop hydra.run.dir")
            cfg = recompose_run(str(cfg.resume), overrides, cli_cfg=cfg)
            check_epochs_left(str(cfg.resume), int(cfg.epochs))  # or AlreadyCompleted: exit 0
            history = extension_history(str(cfg.resume), int(cfg.epochs))
            overrides = saved_overrides(str(cfg.resume))
            extended = extended_overrides(str(cfg.resume), overrides, int(cfg.epochs))
            if extended is not None and distributed.is_main():
                save_extension(run_dir, cfg, extended)
                overrides = extended
            return cfg, RunRecord(run_dir, cfg, overrides, extended_from=history), lock
        if distributed.is_main():
            save_hydra_files(run_dir, cfg, overrides)
        return cfg, RunRecord(run_dir, cfg, overrides), lock
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def drop_log_file(run_dir: str) -> None:
    """Close and remove the run's log file handler (before anything is written through it)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and os.path.dirname(
            handler.baseFilename
        ) == os.path.abspath(run_dir):
            root.removeHandler(handler)
            handler.close()
