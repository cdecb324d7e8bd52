"""The checkpoint contract: what a checkpoint records about its model and its data, the one function
that builds a model from it, and the one function that checks it against a run.

A checkpoint written by a training task carries, besides the weights (``state["model"]``)::

    meta["model"]   = {backbone, kwargs, small_input_stem, in_chans, num_classes, image_size,
                       mean, std, exact_cam}           # enough to rebuild the network and feed it
    meta["dataset"] = {name, classes}                  # what its classifier's outputs mean
    meta["split"]   = {val_size, split_seed, subset}   # which training images it held out

Every consumer (task=eval, the KD teacher, the transfer source, the few-shot backbone, the report's
CAM pictures) reads it with :func:`read_checkpoint`, builds the network with
:func:`build_from_spec` / :func:`model_from_checkpoint` and compares it with its run through
:func:`check_checkpoint`; the user never restates what the checkpoint knows. See docs/design.md.

A consumer that re-creates the validation split of the checkpoint's own dataset (task=eval, a
transfer on the same dataset, the KD teacher's val accuracy) uses the checkpoint's split or stops
on a mismatch (:func:`check_split`), so its "val" images are never ones the net trained on.
Checkpoints written before ``meta["split"]`` existed cannot be checked: a warning says so and the
run's configured split is used.
"""

from __future__ import annotations

import logging
import math

from camexp.errors import UserError
from camexp.models.backbone import Backbone, build_backbone
from camexp.run.checkpoint import load_checkpoint
from camexp.run.keys import loads_files

MODEL_KEYS = ("backbone", "kwargs", "small_input_stem", "in_chans", "num_classes", "image_size",
              "mean", "std", "exact_cam")  # fmt: skip
DATASET_KEYS = ("name", "classes")
# The type of each recorded fact, as model_spec, dataset_identity and split_identity write it;
# ``[float]`` is a list of them. read_checkpoint refuses any other (a crafted or damaged meta).
TYPES = {
    "model": {"backbone": str, "kwargs": dict, "small_input_stem": bool, "in_chans": int,
              "num_classes": int, "image_size": int, "mean": [float], "std": [float],
              "exact_cam": bool},
    "dataset": {"name": str, "classes": [str]},
    "split": {"val_size": int, "split_seed": int, "subset": dict},
}  # fmt: skip
HELD_OUT = ("val_size", "split_seed")  # with the dataset, these decide which images are val
log = logging.getLogger(__name__)
# What a mismatch means, per compared fact; a caller may replace a hint (e.g. transfer's channels).
HINTS = {
    "backbone": "the architecture comes from the checkpoint: set the expected name to {saved} "
    "or leave it null",
    "small_input_stem": "the architecture comes from the checkpoint",
    "in_chans": "its first conv expects {saved}-channel images",
    "num_classes": "its classifier has {saved} outputs",
    "image_size": "the input size must be the one it was trained on",
    "mean": "the input normalisation must be the one it was trained with",
    "std": "the input normalisation must be the one it was trained with",
    "classes": "its outputs mean other classes",
    "dataset": "it was trained on another dataset",
    "val_size": "its validation images were held out with dataset.val_size={saved}; use it",
    "split_seed": "its validation images were held out with dataset.split_seed={saved}; use it",
}


def model_spec(*, backbone: str, kwargs: dict, small_input_stem: bool, in_chans: int,
               num_classes: int, image_size: int, mean, std, exact_cam: bool) -> dict:  # fmt: skip
    """``meta["model"]``: plain values only (the checkpoint is loaded with weights_only=True)."""
    return {
        "backbone": str(backbone),
        "kwargs": dict(kwargs),
        "small_input_stem": bool(small_input_stem),
        "in_chans": int(in_chans),
        "num_classes": int(num_classes),
        "image_size": int(image_size),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "exact_cam": bool(exact_cam),
    }


def dataset_identity(name: str, classes) -> dict:
    """``meta["dataset"]``: the dataset's name and its class names in label order."""
    return {"name": str(name), "classes": [str(c) for c in classes]}


def split_identity(val_size, split_seed, subset) -> dict:
    """``meta["split"]``: which training images were held out as val (and the debug subset)."""
    subset = {str(k): (None if v is None else int(v)) for k, v in dict(subset or {}).items()}
    return {"val_size": int(val_size), "split_seed": int(split_seed), "subset": subset}


def saved_split(state: dict, path: str, role: str) -> dict | None:
    """The checkpoint's ``meta["split"]``, or None with a warning (written before it existed)."""
    split = state["meta"].get("split")
    if not isinstance(split, dict) or any(k not in split for k in HELD_OUT):
        log.warning("%s %s records no validation split (written by an older camexp): its val "
                    "images may overlap this run's; using this run's dataset.val_size and "
                    "dataset.split_seed", role, path)  # fmt: skip
        return None
    return split


def check_split(state: dict, path: str, *, role: str, split: dict, hint: str = "") -> None:
    """This run's held-out split (``split``: val_size, split_seed) must be the checkpoint's when
    both come from the same dataset; one line otherwise (a warning for an older checkpoint)."""
    if saved_split(state, path, role) is None:
        return
    hints = {k: HINTS[k] + hint for k in HELD_OUT}
    check_checkpoint(state, path, role=role, expect={k: split[k] for k in HELD_OUT}, hints=hints)


def read_checkpoint(path: str, role: str = "checkpoint") -> dict:
    """Load ``path`` (plain data only) and require the weights and the contract's ``meta``."""
    state = load_checkpoint(path)
    if not isinstance(state.get("model"), dict):
        raise UserError(
            f"{role} {path} holds no model weights; pass a camexp training run's "
            "checkpoints/best.pt or last.pt"
        )
    meta = state.get("meta")
    if not isinstance(meta, dict):
        raise UserError(f"{role} {path} has no meta record; it was not written by a camexp run")
    if not isinstance(meta.get("model"), dict) or not isinstance(meta.get("dataset"), dict):
        raise UserError(
            f"{role} {path} has an older camexp meta without its model spec (meta.model, "
            "meta.dataset); retrain it with this version of camexp"
        )
    missing = [f"model.{k}" for k in MODEL_KEYS if k not in meta["model"]]
    missing += [f"dataset.{k}" for k in DATASET_KEYS if k not in meta["dataset"]]
    if missing:
        raise UserError(f"{role} {path}: its meta lacks {', '.join(missing)}; retrain it")
    for part, types in TYPES.items():
        record = meta.get(part, {}) if part == "split" else meta[part]  # split: older ones lack it
        for key, kind in types.items() if isinstance(record, dict) else ():
            if key in record and not _fits(record[key], kind):
                raise UserError(
                    f"{role} {path}: its meta.{part}.{key} is {record[key]!r:.80}, not "
                    f"{_kind(kind)}; the file is damaged or not camexp's, retrain it"
                )
    model = meta["model"]
    for key in ("in_chans", "num_classes", "image_size"):
        if model[key] < 1:
            raise UserError(f"{role} {path}: its meta.model.{key} is {model[key]}; retrain it")
    if not all(isinstance(k, str) for k in model["kwargs"]):
        raise UserError(f"{role} {path}: its meta.model.kwargs has a key that is not a name")
    loading = [k for k in model["kwargs"] if loads_files(k)]
    if loading:  # camexp never records one: a crafted file would make timm load another
        raise UserError(
            f"{role} {path}: its meta.model.kwargs sets {loading[0]!r}, which loads weights or "
            "files; camexp checkpoints never hold it: the file is damaged or not camexp's"
        )
    return state


def _fits(value, kind) -> bool:
    if isinstance(kind, list):
        return isinstance(value, list) and all(_fits(v, kind[0]) for v in value)
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


def _kind(kind) -> str:
    if isinstance(kind, list):
        return f"a list of {kind[0].__name__}"
    return ("an " if kind.__name__[0] in "aeiou" else "a ") + kind.__name__


def build_from_spec(spec: dict, *, needs_cam: bool, num_classes: int | None = None,
                    in_chans: int | None = None, image_size: int | None = None,
                    drop_rate: float = 0.0) -> Backbone:  # fmt: skip
    """The network ``spec`` (``meta["model"]``) describes, with fresh weights. Transfer gives a
    new class count, channel count or input size; everyone else rebuilds it as it was."""
    return build_backbone(
        spec["backbone"],
        spec["num_classes"] if num_classes is None else num_classes,
        spec["in_chans"] if in_chans is None else in_chans,
        spec["image_size"] if image_size is None else image_size,
        needs_cam=needs_cam,
        small_input_stem=spec["small_input_stem"],
        drop_rate=drop_rate,
        **spec["kwargs"],
    )


def model_from_checkpoint(state: dict, path: str, *, needs_cam: bool, role: str) -> Backbone:
    """The checkpoint's network with its weights (strictly), in eval mode."""
    spec = state["meta"]["model"]
    if needs_cam and not spec["exact_cam"]:
        raise UserError(
            f"{role} {path} is a {spec['backbone']} without an exact CAM (its head is not "
            "global-average-pool -> linear); this use needs its CAM"
        )
    model = build_from_spec(spec, needs_cam=needs_cam)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        lines = str(err).strip().splitlines()  # torch: a header line, then the first problem
        first = (lines[1] if len(lines) > 1 else lines[0]).strip()[:200]
        raise UserError(
            f"{role} {path}: its weights do not fit the {spec['backbone']} its meta records "
            f"({first})"
        ) from err
    return model.eval()


def _same(saved, current) -> bool:
    if isinstance(saved, list | tuple) and isinstance(current, list | tuple):
        if len(saved) != len(current):
            return False
        return all(_same(a, b) for a, b in zip(saved, current, strict=True))
    if isinstance(saved, float) or isinstance(current, float):
        return math.isclose(float(saved), float(current), abs_tol=1e-6)
    return saved == current


def _show(value) -> str:
    if isinstance(value, list | tuple) and len(value) > 4:
        return f"[{', '.join(map(str, value[:3]))}, ... ({len(value)} in all)]"
    return str(list(value)) if isinstance(value, tuple) else str(value)


def check_checkpoint(
    state: dict, path: str, *, role: str, expect: dict, hints: dict | None = None
) -> None:
    """The one check of a checkpoint against a run: every fact in ``expect`` (keys of
    ``meta["model"]``, ``classes``, or ``dataset`` for the dataset's name) must equal the
    checkpoint's; the first mismatch stops with one line naming both values and what to do."""
    meta = state["meta"]
    for key, current in expect.items():
        if key == "dataset":
            saved = meta["dataset"]["name"]
        elif key == "classes":
            saved = meta["dataset"]["classes"]
        elif key in HELD_OUT:
            saved = meta["split"][key]
        else:
            saved = meta["model"][key]
        if _same(saved, current):
            continue
        hint = {**HINTS, **(hints or {})}[key].format(saved=_show(saved), current=_show(current))
        trained_on = meta["dataset"]["name"]
        raise UserError(
            f"{role} {path} ({meta['model']['backbone']} trained on {trained_on}) has "
            f"{key}={_show(saved)}, this run has {key}={_show(current)}; {hint}"
        )
