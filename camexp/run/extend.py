"""``resume=RUN_DIR epochs=N``: a run is continued, extended, or already done.

``epochs`` is the one result-changing key a resume may change (camexp/run/checkpoint.py's
VOLATILE_KEYS), and only upwards. Extending a run recomputes its lr schedule for the new total:
the scheduler steps on from the checkpoint's step along the schedule of ``epochs=N`` (a cosine
that was near zero at the old end jumps to the new curve's value there), and the log says so
(docs/protocols.md, "Extending a run"). A completed run resumed with nothing to add trains,
tests and logs nothing: results.json, metrics.csv and TensorBoard stay as they are.
"""

from __future__ import annotations

import json
import os

import yaml

from camexp.errors import UserError


class AlreadyCompleted(Exception):
    """The resumed run completed its epochs: the entry point says so and exits 0."""


def recorded_results(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "results.json")) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}  # no record (a run killed at once): the checkpoint decides, in the trainer
    return record if isinstance(record, dict) else {}


def check_epochs_left(run_dir: str, epochs: int) -> None:
    """Refuse ``epochs`` below what the run completed; raise AlreadyCompleted when a completed
    run has nothing left to train."""
    record = recorded_results(run_dir)
    done = record.get("epochs_completed")
    if not isinstance(done, int) or isinstance(done, bool):
        return
    if epochs < done:
        raise UserError(
            f"resume={run_dir} completed {done} epochs; epochs={epochs} cannot shorten it "
            f"(give epochs >= {done}, or start a new run)"
        )
    if record.get("status") == "completed" and epochs == done:
        raise AlreadyCompleted(
            f"resume={run_dir}: already completed ({done} epochs); nothing to do (to train "
            f"longer: resume={run_dir} epochs=N with N > {done})"
        )


def recorded_epochs(run_dir: str) -> int | None:
    try:
        with open(os.path.join(run_dir, ".hydra", "config.yaml")) as f:
            epochs = (yaml.safe_load(f) or {}).get("epochs")
    except (OSError, yaml.YAMLError, AttributeError):
        return None  # recompose_run has already refused a damaged file
    return epochs if isinstance(epochs, int) else None


def extended_overrides(run_dir: str, saved: list[str], epochs: int) -> list[str] | None:
    """The run's overrides with ``epochs=N`` when the resume changes its epochs; else None."""
    if recorded_epochs(run_dir) in (None, epochs):
        return None
    kept = [o for o in saved if o.lstrip("+~").partition("=")[0] != "epochs"]
    return [*kept, f"epochs={epochs}"]


def extension_history(run_dir: str, epochs: int) -> list[int]:
    """The epochs the run had before each extension (results.json's ``extended_from``), this
    resume's included when it extends the run to ``epochs``: camexp-report never pools an
    extended run with fresh ones, and a later resume of it keeps the record."""
    recorded = recorded_results(run_dir).get("extended_from")
    history = [e for e in recorded if type(e) is int] if isinstance(recorded, list) else []
    before = recorded_epochs(run_dir)
    return [*history, before] if before not in (None, epochs) else history


def extend_schedule(state: dict, epochs: int, scheduler, optimizer) -> str:
    """A checkpoint of a run with fewer ``epochs``: the scheduler (a LambdaLR built for the new
    total) sets the lr it gives the checkpoint's step; returns the log's note ("" when the
    run keeps its epochs)."""
    before = (state.get("config") or {}).get("epochs")
    if not isinstance(before, int) or before == epochs:
        return ""
    started = state["epoch"] + (1 if state.get("meter") is not None else 0)
    if epochs < started:
        raise UserError(
            f"the run's checkpoint is at epoch {started}; epochs={epochs} cannot shorten it "
            f"(give epochs >= {started}, or start a new run)"
        )
    step = scheduler.last_epoch  # LambdaLR: the lr of the next step is base * factor(step)
    pairs = zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    lrs = [base * factor(step) for base, factor in pairs]
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    return (
        f"; extended from {before} to {epochs} epochs: the lr schedule is recomputed for "
        f"{epochs} epochs and goes on from step {step} on it (lr {lrs[0]:.4g})"
    )
