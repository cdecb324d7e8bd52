"""Checkpoints are data, never code: atomic writes, ``weights_only=True`` loads.

A checkpoint is a dict of tensors and plain Python values: ``format``, ``model``, ``optimizer``,
``scheduler``, ``epoch``, ``step``, ``rng``, ``config`` (resolved, as plain containers) and
``meta`` (architecture name, class count, input channels) for compatibility checks.
"""

import os
import pickle
import random
import tempfile

import numpy as np
import torch

from camexp.errors import UserError

FORMAT = "camexp-checkpoint-v1"


def save_checkpoint(path: str, state: dict) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A kill at any moment leaves either the old or the new file, never a torn one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str) -> dict:
    """Load a camexp checkpoint on the CPU; refuse anything that would execute code."""
    if not os.path.isfile(path):
        raise UserError(
            f"checkpoint {path} does not exist; pass the path of a .pt file in a run "
            "folder's checkpoints/"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsafe content"
        raise UserError(
            f"refusing {path}: it needs unpickling code to load ({first[:160]}); camexp only "
            "loads checkpoints that are plain data"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable checkpoint ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a camexp checkpoint (no '{FORMAT}' format tag)")
    return state


def rng_state() -> dict:
    """Every global RNG state as tensors and plain values (loadable with weights_only)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(tuple(s) if isinstance(s, list) else s for s in state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
