"""Checkpoints are data, never code: atomic writes, ``weights_only=True`` loads.

A checkpoint is a dict of tensors and plain Python values: ``format``, ``model`` (required),
``optimizer``, ``scheduler``, ``epoch``, ``step``, ``rng``, ``config`` (resolved, as plain
containers) and ``meta`` (the model spec and dataset identity of the checkpoint contract,
camexp/models/from_checkpoint.py, docs/design.md §5). Under torchrun ``ranks`` holds every
rank's generators, loader place and epoch sums; rank 0 alone reads and writes the file and
hands the other ranks their part.
"""

import hashlib
import math
import os
import pickle
import random
import tempfile

import numpy as np
import torch

from camexp.errors import UserError
from camexp.run import distributed
from camexp.run.keys import RESULT_NEUTRAL_KEYS, neutral
from camexp.run.tracking import shareable

FORMAT = "camexp-checkpoint-v1"
# Keys a resumed run may change (and a checkpoint's config may differ in): the keys that leave
# results unchanged (camexp/run/keys.py, the one list), plus ``fewshot``, which only changes what
# is measured after training, and ``amp``: a resume keeps the checkpoint's stored precision unless
# amp= is stated, then warns that the run mixes precisions (camexp/precision.py), and ``epochs``:
# a resume may extend a run (never shorten it; the schedule is recomputed, camexp/run/extend.py).
VOLATILE_KEYS = (*RESULT_NEUTRAL_KEYS, "fewshot", "amp", "epochs")
# Config blocks (and leaves, by dotted path) added after runs were trained without them, with the
# values that mean "as before they existed": a run whose saved config lacks one resumes when this
# checkout has those values, and is refused otherwise, as any changed setting.
ADDED_KEYS = {
    "erasing": {"prob": 0.0},
    "progressive": {"initial_scale": 1.0},
    "backbone.kwargs.whiten_bias_epochs": None,  # AirNet's whitening bias trains throughout
}


def save_checkpoint(path: str, state: dict, fmt: str = FORMAT) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``; ``fmt``
    tags the file (a checkpoint unless another kind of state says otherwise).

    A kill at any moment leaves either the old or the new file, never a torn one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        shareable(fd)
        with os.fdopen(fd, "wb") as f:
            torch.save({**state, "format": fmt}, f)
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
    if not isinstance(state.get("model"), dict):
        raise UserError(f"{path} holds no model weights (no 'model' entry); it is damaged")
    for key in ("config", "meta"):  # read as mappings by resume and by every consumer
        if key in state and not isinstance(state[key], dict):
            kind = type(state[key]).__name__
            raise UserError(f"{path}: its {key} is a {kind}, not a mapping; the file is damaged")
    return state


def config_difference(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, ignoring keys that do not change results: the one
    check of a checkpoint's config against a run's."""
    keys = sorted(set(saved) | set(current))
    out = []
    for key in keys:
        if neutral(f"{prefix}{key}", VOLATILE_KEYS):
            continue
        a, b = saved.get(key), current.get(key)
        if key not in saved and as_before(f"{prefix}{key}", b):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_difference(a, b, f"{prefix}{key}.")
        elif a != b and not (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b)):
            out.append(f"{prefix}{key}")
    return out


def as_before(dotted: str, value) -> bool:
    """``value`` of an ADDED_KEYS block or leaf is the behaviour of the code before it."""
    if dotted not in ADDED_KEYS:
        return False
    before = ADDED_KEYS[dotted]
    if isinstance(before, dict):
        return isinstance(value, dict) and all(value.get(k) == v for k, v in before.items())
    return value == before


def without_added_defaults(config: dict, prefix: str = "") -> dict:
    """``config`` (a plain dict) less the ADDED_KEYS blocks and leaves at their "as before"
    values: what a record of a recipe keeps, so that adding one changes no earlier record."""
    out = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if as_before(dotted, value):
            continue
        if isinstance(value, dict) and any(k.startswith(f"{dotted}.") for k in ADDED_KEYS):
            value = without_added_defaults(value, f"{dotted}.")
        out[key] = value
    return out


def file_sha256(path: str) -> str:
    """The hex sha256 of a file's bytes: what a run records of an input file (kd: the teacher)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_difference(saved_meta: dict, meta: dict) -> str | None:
    """The first input file recorded in ``meta`` (an entry ``{..., "path", "sha256"}``, e.g.
    kd's ``teacher``) whose bytes differ from those the checkpoint's run started with."""
    for name, now in meta.items():
        then = saved_meta.get(name)
        if not (isinstance(now, dict) and "sha256" in now and isinstance(then, dict)):
            continue
        if then.get("sha256") != now["sha256"]:
            return (
                f"the {name} file {now.get('path')} differs from the one this run started with "
                f"(sha256 {str(then.get('sha256'))[:12]}... then, {now['sha256'][:12]}... now); "
                f"put that {name} back, or start a new run"
            )
    return None


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


def read_resume_state(run_dir: str, config: dict, meta: dict | None = None) -> dict | None:
    """``run_dir/checkpoints/last.pt`` if it exists, checked against the run's ``config`` and
    the input files its ``meta`` records (:func:`input_difference`).
    Rank 0 reads it; under torchrun the other ranks receive what it read (or the error), since
    they never touch the run folder."""
    path, found = os.path.join(run_dir, "checkpoints", "last.pt"), None
    try:
        if distributed.is_main():
            folder = os.path.dirname(path)
            for name in os.listdir(folder) if os.path.isdir(folder) else []:
                if name.startswith(".tmp-"):  # a save killed before its rename
                    os.unlink(os.path.join(folder, name))
            found = load_checkpoint(path) if os.path.exists(path) else None
            differing = config_difference((found or {}).get("config", {}), config)
            if found is not None and differing:
                raise UserError(
                    f"{run_dir} already holds a checkpoint of another config (differs in "
                    f"{', '.join(differing[:5])}); use a new run folder, or resume={run_dir} to "
                    "continue that run with its own config"
                )
            changed = input_difference(found.get("meta") or {}, meta or {}) if found else None
            if changed:
                raise UserError(f"resume={run_dir}: {changed}")
    except UserError as err:
        distributed.broadcast_from_main({"error": str(err)})
        raise
    found = distributed.broadcast_from_main(found)
    if found is not None and set(found) == {"error"}:  # rank 0 refused it: so do the others
        raise UserError(found["error"])
    return found


def own_rank_state(state: dict, run_dir: str) -> dict:
    """This rank's generators, loader place and sums: ``state["ranks"][rank]`` under torchrun."""
    if not distributed.enabled():
        return state
    ranks = state.get("ranks") or []
    if len(ranks) != distributed.world_size():
        raise UserError(
            f"{run_dir}'s checkpoint was saved by {len(ranks) or 1} process(es); resume it "
            f"with as many (torchrun --nproc_per_node {len(ranks) or 1})"
        )
    return ranks[distributed.rank()]
