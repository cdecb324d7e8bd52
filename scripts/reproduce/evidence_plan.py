"""The evidence sweep's plan: evidence.yaml -> runs, and which of them OUT holds already.

A table is a cartesian product of its ``sweep`` (a key's list of values, or a mapping of named
variants, each a list of overrides), on top of ``fixed`` and the spec's ``common`` overrides. An
override value ``evidence:<table>/<run>/<file>`` names a file another run kept (its ``keep``
list): the run reads it through its path under OUT, waits until it is kept, and counts as the
same run on any clone (the comparison cuts the path to table/run/file).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from dataclasses import dataclass, field

import yaml

from camexp.run.checkpoint import file_sha256

FINISHED = ("completed", "diverged")  # a NaN is a result too: listed apart, never averaged
KEPT_FILES = ("results.json", "metrics.csv", os.path.join(".hydra", "overrides.yaml"))
LAST_CKPT = "checkpoints/last.pt"
EVIDENCE_REF = "evidence:"  # an override value naming a kept file of another run: table/run/file


@dataclass
class Run:
    table: str
    name: str  # folder name: the swept values, e.g. seed-0_regularizer-none_loss.cam.weight-0
    overrides: list  # everything camexp gets, except hydra.run.dir
    refs: dict = field(default_factory=dict)  # key -> "<table>/<run>/<file>" read from OUT
    keep: tuple = ()  # files kept besides KEPT_FILES (a checkpoint a later table reads)

    @property
    def needs(self) -> list:
        """The (table, run) pairs whose kept files this run reads."""
        return sorted({tuple(tail.split("/")[:2]) for tail in self.refs.values()})


def sweep_values(values) -> list:
    """A sweep key's values as (label, overrides or None): a list sweeps the key itself, a mapping
    names variants, each a list of overrides (``method: {ce: [task=classify, loss=[ce]]}``)."""
    if isinstance(values, dict):
        return [(str(label), [str(o) for o in overrides]) for label, overrides in values.items()]
    return [(str(v), None) for v in values]


def resolve_refs(overrides: list, labels: dict, out: str) -> tuple[list, dict]:
    """``key=evidence:<table>/<run>/<file>`` -> the file's path under OUT; ``{seed}`` and any other
    swept key in braces is replaced by the run's value first."""
    resolved, refs = [], {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and value.startswith(EVIDENCE_REF):
            tail = value[len(EVIDENCE_REF) :]
            for k, v in labels.items():
                tail = tail.replace("{" + k + "}", v)
            if len(tail.split("/")) < 3 or ".." in tail.split("/") or "{" in tail:
                raise ValueError(f"{override!r} is not {EVIDENCE_REF}<table>/<run>/<file>")
            refs[key] = tail
            override = f"{key}={os.path.join(os.path.abspath(out), *tail.split('/'))}"
        resolved.append(override)
    return resolved, refs


def plan(spec: dict, only: list | None = None, out: str = ".") -> list:
    """evidence.yaml -> [Run]: per table, the cartesian product of its sweep, first key slowest.
    A run that reads another table's run (``evidence:`` values) waits until that run is kept;
    with ``only``, the runs it reads (and what they read) are planned too."""
    runs = []
    common = [str(o) for o in spec.get("common", [])]
    for table in spec["tables"]:
        keys = list(table["sweep"])
        choices = [sweep_values(table["sweep"][k]) for k in keys]
        for values in itertools.product(*choices):
            labels = {k: label for k, (label, _) in zip(keys, values, strict=True)}
            swept = []
            for k, (label, variant) in zip(keys, values, strict=True):
                swept += variant if variant is not None else [f"{k}={label}"]
            name = "_".join(f"{k}-{v}" for k, v in labels.items())
            overrides, refs = resolve_refs([*table.get("fixed", []), *swept, *common], labels, out)
            keep = tuple(table.get("keep", ()))
            if name in table.get("cams", ()):  # the figure reads these runs' weights
                keep = (*keep, LAST_CKPT)
            runs.append(Run(table["name"], name, overrides, refs, tuple(dict.fromkeys(keep))))
    check_refs(runs)
    if not only:
        return runs
    by_key = {(r.table, r.name): r for r in runs}
    wanted = {key for key in by_key if key[0] in only}
    stack = list(wanted)
    while stack:  # what they read, what that reads, ... in whatever order the tables come
        for need in by_key[stack.pop()].needs:
            if need not in wanted:
                wanted.add(need)
                stack.append(need)
    return [r for r in runs if (r.table, r.name) in wanted]


def check_refs(runs: list) -> None:
    """Every ``evidence:`` file is one that a planned run keeps: a typo stops the plan, not the
    sweep hours later."""
    kept = {(r.table, r.name): set(r.keep) for r in runs}
    for run in runs:
        for key, tail in run.refs.items():
            table, name, file = tail.split("/", 2)
            if (table, name) not in kept:
                raise ValueError(f"{run.table}/{run.name}: {key} reads {tail}, but no table "
                                 f"plans a run {table}/{name}")  # fmt: skip
            if file not in kept[(table, name)]:
                raise ValueError(f"{run.table}/{run.name}: {key} reads {tail}, but table {table} "
                                 f"does not keep {file} (add it to its keep list)")  # fmt: skip


def saved_overrides(folder: str) -> list | None:
    path = os.path.join(folder, ".hydra", "overrides.yaml")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return [str(o) for o in (yaml.safe_load(f) or [])]


def comparable(overrides: list, refs: dict) -> list:
    """Overrides with each ``evidence:`` path cut to its table/run/file, so that a run kept on
    one machine (with that clone's absolute path) counts on another."""
    cut = []
    for override in overrides:
        key, _, value = override.partition("=")
        tail = refs.get(key)
        if tail is not None and value.replace(os.sep, "/").endswith("/" + tail):
            override = f"{key}={EVIDENCE_REF}{tail}"
        cut.append(override)
    return sorted(cut)


def finished(run: Run, out: str) -> bool:
    """True when OUT holds this run, whole; a kept run with other overrides stops the sweep."""
    folder = os.path.join(out, run.table, run.name)
    if not os.path.isdir(folder):
        return False
    kept = saved_overrides(folder)
    if kept is not None and comparable(kept, run.refs) != comparable(run.overrides, run.refs):
        sys.exit(
            f"evidence: {folder} was trained with other overrides than evidence.yaml now asks "
            f"for; delete that folder to train it again (kept: {' '.join(kept)})"
        )
    if kept is None:
        return False
    check_inputs(run, folder, out)
    status = status_of(folder)
    whole = all(os.path.isfile(os.path.join(folder, name)) for name in run.keep)
    return status == "diverged" or (status == "completed" and whole)


def input_hashes(run: Run, out: str) -> dict:
    """sha256 of every kept file this run reads: recorded in its machine.json when it starts."""
    return {tail: file_sha256(os.path.join(out, *tail.split("/"))) for tail in run.refs.values()}


def check_inputs(run: Run, folder: str, out: str) -> None:
    """A kept run whose input (a teacher, a source net) is gone or was retrained since is stale:
    the sweep stops and names it, rather than pairing results of two different inputs."""
    try:
        with open(os.path.join(folder, "machine.json")) as f:
            recorded = json.load(f).get("inputs") or {}
    except (OSError, ValueError, AttributeError):
        recorded = {}
    for tail in run.refs.values():
        path = os.path.join(out, *tail.split("/"))
        if tail in recorded and (not kept_file(out, tail) or file_sha256(path) != recorded[tail]):
            sys.exit(
                f"evidence: {folder} was trained on {tail}, which is no longer the file kept "
                "there (retrained or deleted); delete that folder to train it again"
            )


def kept_file(out: str, tail: str) -> bool:
    return os.path.isfile(os.path.join(out, *tail.split("/")))


def ready(run: Run, out: str) -> bool:
    """Every file this run reads from another run is kept (that run completed)."""
    return all(kept_file(out, tail) for tail in run.refs.values())


def status_of(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, "results.json")) as f:
            return json.load(f).get("status")
    except (OSError, ValueError, AttributeError):
        return None
