"""A start that fails on the user's input leaves no run folder behind.

Hydra creates the run folder (and its log file) before any camexp code runs, so a typo caught
after composition (a missing dataset, ``resume=`` of a folder that does not exist) would leave an
empty-looking folder with a ``.lock`` and a ``camexp.log``. :class:`NoteNewFolder`, a Hydra
callback (``hydra.callbacks`` in configs/config.yaml), notes before Hydra's ``mkdir`` whether the
single run's folder is new; :func:`remove_failed_start` removes it again after a user error,
unless the run trained (``checkpoints/`` exists) or the folder was there before. A sweep's jobs
keep their folders: their results.json is how the sweep's summary lists the failure.
"""

from __future__ import annotations

import os
import shutil

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

_new: set[str] = set()  # absolute paths of run folders this process's single run created


def note_new(run_dir: str) -> None:
    path = os.path.abspath(run_dir)
    _new.discard(path)
    if not os.path.lexists(path):
        _new.add(path)


def created_now(run_dir: str) -> bool:
    """True when Hydra created ``run_dir`` for this single run (``resume=`` of a folder that
    did not exist)."""
    return os.path.abspath(run_dir) in _new


class NoteNewFolder(Callback):
    """Hydra calls ``on_run_start`` (single runs only) with the config whose ``hydra.run.dir``
    it is about to create: ``${now:}`` and the pid are cached, so this is the same path."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        run_dir = OmegaConf.select(config, "hydra.run.dir", throw_on_resolution_failure=False)
        if run_dir is not None:
            note_new(str(run_dir))


def remove_failed_start(run_dir: str, output_dir: str | None = None) -> bool:
    """Remove ``run_dir`` when this process created it and it holds no training; then its empty
    parents up to ``output_dir`` (``outputs/2025-01-31/``). Returns True when removed."""
    path = os.path.abspath(run_dir)
    if path not in _new or os.path.exists(os.path.join(path, "checkpoints")):
        return False
    _new.discard(path)
    shutil.rmtree(path, ignore_errors=True)
    if output_dir:
        stop, parent = os.path.abspath(output_dir), os.path.dirname(path)
        while parent.startswith(stop + os.sep) and parent != stop:
            try:
                os.rmdir(parent)  # only an empty folder: another run's stays
            except OSError:
                break
            parent = os.path.dirname(parent)
    return not os.path.exists(path)
