"""Run folders -> runs -> groups: the reading half of ``camexp-report``.

A run folder is any folder holding ``results.json`` or Hydra's ``.hydra/`` (a job killed before
it wrote results.json is still listed, as ``incomplete``). A run's value for a key is, in order:
its override (``.hydra/overrides.yaml``), its config-group choice (``.hydra/hydra.yaml``, for keys
such as ``backbone``), or the value in its resolved config (``.hydra/config.yaml``). A transfer
run's ``source.*`` keys (``source.loss``, ``source.seed``, ...) are what its results.json records
about the source checkpoint: group by them to compare pretraining (``--cols source.loss``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from camexp.errors import UserError
from camexp.report.folder_files import SkippedRun, load_yaml
from camexp.run.keys import RESULT_NEUTRAL_KEYS, neutral

# Keys that vary between runs without changing their results: never a grouping key (a key
# and everything under it: ``metrics`` covers ``metrics=none`` and ``metrics.images=8``).
NOT_GROUPED = ("seed", *RESULT_NEUTRAL_KEYS)
MISSING = "-"
# results.json's resolved precision (amp=auto differs by machine): runs of different precision
# are never pooled, since it is a grouping key whenever it varies.
PRECISION = "precision"
# Tasks that train a classifier and write the same metrics (test/acc1, test_best/acc1, the val
# curve): one table may hold them (a KD table's student-alone row is a classify run).
TRAINING_TASKS = {"classify", "kd", "transfer"}
SOURCE = "source."  # a transfer run's source summary (camexp/models/provenance.py)
# results.json's record of a run extended by ``resume=RUN epochs=N`` (the epochs it had before):
# an extended run is not the run ``epochs=N`` trains from the start (docs/protocols.md), so
# extended and fresh runs are never pooled, as PRECISION.
EXTENDED = "extended_from"
# Datasets whose ``dataset.root`` is the dataset itself (any folder of class folders), not just
# where the same files lie: there the root is a grouping key like any other.
ROOT_IS_THE_DATASET = ("imagefolder",)


@dataclass
class Run:
    path: str
    status: str  # completed | failed | diverged | running | preempted | incomplete | ...
    task: str | None
    metrics: dict
    overrides: dict  # key -> value, as typed on the command line (normalised numbers)
    choices: dict  # config group -> option (hydra.runtime.choices)
    config: object  # OmegaConf DictConfig or None
    error: str | None = None
    epochs_completed: int | None = None
    precision: str | None = None  # bf16 | fp32 (results.json); None: an older run
    source: dict = field(default_factory=dict)  # task=transfer: results.json's source summary
    extended_from: str = MISSING  # "3" (or "3,6"): the epochs before each extension

    def value(self, key: str) -> str:
        if key == PRECISION:
            return str(self.precision or MISSING)
        if key == EXTENDED:
            return self.extended_from
        if key.startswith(SOURCE):
            found = self.source.get(key[len(SOURCE) :])
            plain = found is not None and not isinstance(found, dict | list)
            return normalise(str(found)) if plain else MISSING
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return str(self.choices[key])
        if self.config is not None:
            found = OmegaConf.select(self.config, key, throw_on_resolution_failure=False)
            if found is not None and not OmegaConf.is_config(found):
                return normalise(str(found))
        return MISSING

    @property
    def seed(self) -> str:
        return self.value("seed")


@dataclass
class Group:
    key: tuple  # ((name, value), ...) over the grouping keys
    runs: list = field(default_factory=list)  # completed runs only

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.key) or "all runs"


def normalise(value: str) -> str:
    """'1.0', '1' and '1.00' are one group: numbers are written in their shortest form."""
    if value.lower() in ("true", "false"):  # Hydra writes sweep values as True/False
        return value.lower()
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number):
        return value
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


def parse_overrides(lines: list) -> dict:
    """``['loss.cam.weight=0', '+x=1', '~y']`` -> ``{'loss.cam.weight': '0', 'x': '1'}``."""
    parsed = {}
    for line in lines:
        line = str(line)
        if line.startswith("~") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        parsed[key.lstrip("+")] = normalise(value)
    return parsed


def not_finite(metrics: dict) -> list:
    """Names of the metrics that are no finite number (NaN, inf, an int beyond float)."""
    bad = []
    for name, value in metrics.items():
        try:
            finite = not isinstance(value, int | float) or math.isfinite(float(value))
        except OverflowError:  # 10**400 in results.json
            finite = False
        if not finite:
            bad.append(name)
    return bad


def load_run(folder: str) -> Run:
    """Raises SkippedRun when the folder's files are not what camexp writes."""
    results = {}
    results_path = os.path.join(folder, "results.json")
    if os.path.isfile(results_path):
        try:
            with open(results_path) as f:
                results = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            results = {"status": "unreadable", "error": f"results.json: {err}"}
        if not isinstance(results, dict):
            raise SkippedRun(
                f"{results_path} holds a JSON {type(results).__name__}, not camexp's object"
            )
    check_fields(results, results_path)
    hydra_dir = os.path.join(folder, ".hydra")
    overrides_yaml = load_yaml(os.path.join(hydra_dir, "overrides.yaml"))
    override_lines = (
        list(overrides_yaml) if overrides_yaml is not None else results.get("overrides", [])
    )
    hydra_yaml = load_yaml(os.path.join(hydra_dir, "hydra.yaml"))
    choices = {}
    if hydra_yaml is not None:
        found = OmegaConf.select(hydra_yaml, "hydra.runtime.choices", default=None)
        if found is not None and not OmegaConf.is_dict(found):
            raise SkippedRun(f"{hydra_dir}/hydra.yaml: hydra.runtime.choices is not a mapping")
        if found is not None:
            choices = {
                k: v for k, v in OmegaConf.to_container(found).items() if not k.startswith("hydra")
            }
    config = load_yaml(os.path.join(hydra_dir, "config.yaml"))
    if config is None and isinstance(results.get("config"), dict):
        config = OmegaConf.create(results["config"])
    task = results.get("task")
    if task is None and config is not None:
        task = OmegaConf.select(config, "task.name", default=None)
    status, metrics = str(results.get("status", "incomplete")), dict(results.get("metrics") or {})
    if status == "completed" and not_finite(metrics):  # a NaN is a failed run: never averaged
        status = "diverged"
        results["error"] = f"not a finite number: {', '.join(not_finite(metrics)[:3])}"
    overrides = parse_overrides(override_lines)
    return Run(
        path=folder,
        status=status,
        task=task,
        metrics=dict(results.get("metrics") or {}),
        overrides=overrides,
        choices=choices,
        config=config,
        error=results.get("error"),
        epochs_completed=results.get("epochs_completed"),
        precision=results.get("precision") or stated_precision(overrides, config),
        source=results.get("source") or {},  # a dict: check_fields
        extended_from=",".join(str(e) for e in results.get(EXTENDED) or ()) or MISSING,
    )


# results.json's fields the report reads, and the JSON types camexp writes them as (None too).
FIELD_TYPES = {
    "status": str, "task": str, "error": str, "metrics": dict, "precision": str,
    "epochs_completed": int, "overrides": list, "source": dict, EXTENDED: list,
}  # fmt: skip


def check_fields(results: dict, path: str) -> None:
    """A field of another type than camexp writes: the run is skipped with one line (a
    crafted or damaged file is never half-read into a table)."""
    for name, kind in FIELD_TYPES.items():
        value = results.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise SkippedRun(
                f"{path}: its {name!r} is a JSON {type(value).__name__}, not camexp's "
                f"{kind.__name__}; the file is damaged or not camexp's"
            )
    if any(not isinstance(e, int) or isinstance(e, bool) for e in results.get(EXTENDED) or ()):
        raise SkippedRun(f"{path}: its {EXTENDED!r} is not a list of epoch counts")


def stated_precision(overrides: dict, config) -> str | None:
    """The precision of a run older than results.json's ``precision``: fp32 where ``amp=none``
    was its setting (no autocast, on every machine); unknown (None) for ``amp=auto``."""
    amp = overrides.get("amp")
    if amp is None and config is not None:
        amp = OmegaConf.select(config, "amp", default=None, throw_on_resolution_failure=False)
    return "fp32" if str(amp) == "none" else None


def find_runs(paths: list, task: str | None = None, where: tuple = ()) -> list:
    """Every run folder under ``paths`` (each a run folder or any folder above run folders), of
    ``task`` when given, whose config values match every ``key=value`` of ``where``."""
    folders = []
    for path in paths:
        if not os.path.isdir(path):
            raise UserError(f"{path}: no such folder; give run or sweep folders (e.g. outputs/)")
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in (".hydra", ".submitit", "checkpoints"))
            if "results.json" in files or os.path.isdir(os.path.join(root, ".hydra")):
                folders.append(root)
                dirs[:] = [d for d in dirs if d != "tensorboard"]
    runs, skipped = [], []
    # one run reached twice (a symlink, a path given twice, a folder inside another) counts once
    for folder in dict.fromkeys(os.path.realpath(f) for f in folders):
        try:
            runs.append(load_run(folder))
        except SkippedRun as err:
            skipped.append(str(err))
            print(f"camexp-report: warning: skipped a run: {err}", file=sys.stderr)
    if not runs and skipped:
        raise UserError(f"no readable run under {', '.join(paths)}: {skipped[0]}")
    if not runs:
        raise UserError(
            f"no runs under {', '.join(paths)}: found no folder with results.json or .hydra/"
        )
    runs = filter_runs(runs, task, where)
    tasks = {}
    for run in runs:
        tasks[run.task] = tasks.get(run.task, 0) + 1
    if len(tasks) > 1 and not set(tasks) <= TRAINING_TASKS:
        found = ", ".join(f"{t} ({n} runs)" for t, n in sorted(tasks.items(), key=str))
        raise UserError(
            f"runs of different tasks are mixed: {found}; report one task at a time (--task NAME)"
        )
    return runs


def parse_where(conditions) -> list[tuple[str, str]]:
    """``["loss.cam.weight=1", ...]`` -> ``[("loss.cam.weight", "1"), ...]`` (values normalised
    as run values are: ``1.0`` == ``1``)."""
    parsed = []
    for text in conditions:
        key, eq, value = str(text).partition("=")
        if not eq or not key.strip() or any(c in key for c in " ,"):
            raise UserError(f"--where {text!r}: write key=value with a dotted config key, e.g. "
                            "--where loss.cam.weight=1 (repeat --where for several)")  # fmt: skip
        parsed.append((key.strip(), normalise(value.strip())))
    return parsed


def filter_runs(runs: list, task: str | None, where) -> list:
    """The runs of ``task`` whose value of each ``where`` key is its value; none left: one
    line naming what there is."""
    kept = [run for run in runs if task is None or run.task == task]
    if not kept:
        found = ", ".join(sorted({str(run.task) for run in runs}))
        raise UserError(f"no runs of task {task!r} among the {len(runs)} found (tasks: {found})")
    for key, value in parse_where(where):
        matching = [run for run in kept if run.value(key) == value]
        if not matching:
            seen = sorted({run.value(key) for run in kept}, key=sort_key)
            raise UserError(f"--where {key}={value} matches no run; its values: "
                            f"{', '.join(seen)}")  # fmt: skip
        kept = matching
    return kept


def grouping_keys(runs: list, ignore=NOT_GROUPED, keep=()) -> list:
    """The override keys whose value differs between runs, except ``ignore``; ``keep`` always."""
    keys = dict.fromkeys(keep)
    for run in runs:
        keys.update(dict.fromkeys(run.overrides))
    for never_pooled in (PRECISION, EXTENDED):  # bf16 and fp32, extended and fresh runs
        if len({run.value(never_pooled) for run in runs if run.status == "completed"}) > 1:
            keep = (*keep, never_pooled)
            keys[never_pooled] = None
    varying = [
        k
        for k in keys
        if k in keep or (not ignored(k, ignore) and len({run.value(k) for run in runs}) > 1)
    ]
    return sorted(varying, key=lambda k: (k not in keep, list(keep).index(k) if k in keep else k))


def default_ignored(runs: list) -> tuple:
    """NOT_GROUPED for these runs: ``dataset.root`` is grouped on where it is the dataset."""
    if any(run.value("dataset") in ROOT_IS_THE_DATASET for run in runs):
        return tuple(k for k in NOT_GROUPED if k != "dataset.root")
    return NOT_GROUPED


def ignored(key: str, ignore) -> bool:
    """``key`` is one of ``ignore`` or lies under one (``metrics.images`` under ``metrics``)."""
    return neutral(key, tuple(ignore))


def group_runs(runs: list, keys: list) -> list:
    """Completed runs grouped by their values of ``keys``, in first-seen order per key value."""
    groups: dict = {}
    for run in runs:
        if run.status != "completed":
            continue
        key = tuple((k, run.value(k)) for k in keys)
        groups.setdefault(key, Group(key)).runs.append(run)
    for group in groups.values():
        check_seeds(group)
    return sorted(groups.values(), key=lambda g: tuple(sort_key(v) for _, v in g.key))


def check_seeds(group: Group) -> None:
    """Two runs of one seed in a group would be averaged as two seeds: a copied run, or runs
    that differ only in an ignored key. One line names them and what to do."""
    seen: dict = {}
    for run in group.runs:
        if run.seed != MISSING and run.seed in seen:
            raise UserError(
                f"{group.label()}: seed {run.seed} twice ({seen[run.seed]} and {run.path}); "
                "a copy of one run or runs that differ in an ignored key would count as two "
                "seeds: give each run once, or tell them apart with --rows/--cols KEY"
            )
        seen[run.seed] = run.path


def sort_key(value: str):
    """Numbers in numeric order before words in alphabetical order."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)
