"""Which command-line keys leave a run's results unchanged (no torch import: camexp-report
reads this too)."""

from __future__ import annotations

import re

# Keys that change where or how a run is shown, not its results (a key and all under it):
# left out of TensorBoard run names, and never a grouping key of camexp-report.
RESULT_NEUTRAL_KEYS = (
    "hydra",
    "resume",
    "progress",
    "log_every",
    "tensorboard",
    "eval_batch_size",
    "cam_pictures",
    "device",
    "checkpoint_every",
    "threads",  # torch CPU threads (camexp/run/jobs.py): the speed, bar the last bits of sums
    "paths",
    "metrics",  # what is measured after training, not the training
    "dataset.root",  # where the same files lie
    "dataset.workers",
)


def neutral(key: str, keys=RESULT_NEUTRAL_KEYS) -> bool:
    """``key`` is one of ``keys`` or lies under one (``metrics.images`` under ``metrics``)."""
    key = key.lstrip("+~")
    return any(key == k or key.startswith((k + ".", k + "/")) for k in keys)


# timm.create_model keyword arguments that read weights, a config or a cache from a file or the
# network (``pretrained``, ``checkpoint_path``, ``pretrained_cfg_overlay``, ``cache_dir``, ...).
# A checkpoint's model record never holds one, and a run folder's saved override that sets one
# under ``backbone.kwargs`` is used only when the command line restates it.
LOADING_KWARG = re.compile(r"pretrain|checkpoint|cache_dir|url|file|hf_hub", re.IGNORECASE)


def loads_files(kwarg: str) -> bool:
    """``kwarg`` (a ``backbone.kwargs`` name) would make timm read a file or the network."""
    return bool(LOADING_KWARG.search(str(kwarg)))
