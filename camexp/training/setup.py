"""The run's setup: the device, the seeds, the precision. (Options are checked once, by the entry
point: camexp/run/options.py.)"""

import logging
import os
import random

import numpy as np
import torch

from camexp.errors import UserError
from camexp.precision import choose_amp, describe
from camexp.run import distributed

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if distributed.enabled():  # under torchrun: this rank's GPU, or the CPU with gloo
        return distributed.setup(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"device={name!r} is not an option; use auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


def amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """``amp`` -> the autocast dtype (None: fp32), logged with its reason (camexp/precision.py)."""
    dtype, reason = choose_amp(name, device)
    log.info("precision: %s (amp=%s: %s)", describe(dtype), name, reason)
    return dtype
