"""The run's top-level options, checked at the entry point before any task starts: Hydra turns
``epochs=abc`` into a string and ``epochs=1.5`` into a float, and ``+epoch=3`` adds a key no code
reads. Each becomes one line saying what to type instead.
"""

import difflib
import os

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from camexp.errors import UserError
from camexp.run.recompose import CONFIG_DIR, compose_config

# name: smallest allowed value (None: any integer)
INTEGERS = {"epochs": 1, "batch_size": 1, "eval_batch_size": 1, "seed": None, "log_every": 1,
            "checkpoint_every": 0, "skip_nonfinite": 0, "cam_pictures": 0,
            # the few-shot episodes: checked here, before stage 1 trains
            "fewshot.n_way": 2, "fewshot.q_query": 1, "fewshot.episodes": 1,
            "fewshot.support_augmentations": 0, "fewshot.logreg.max_iter": 1}  # fmt: skip
# keys whose default is a number but which also take a word (their config comment says so)
WORDS = {"metrics.images": ("all",), "dataset.hflip": ("alternate",)}
MEANING = {"checkpoint_every": "0 saves at epoch ends only", "log_every": "steps between updates"}


def check_integers(cfg: DictConfig) -> None:
    for name, least in INTEGERS.items():
        value = OmegaConf.select(cfg, name, default=None)
        if value is None and name == "eval_batch_size":
            continue  # null: the training batch size
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{name}={value} must be an integer (e.g. {name}={least or 0})")
        if least is not None and value < least:
            why = f"; {MEANING[name]}" if name in MEANING else ""
            raise UserError(f"{name}={value} must be >= {least}{why}")


def check_loss(cfg: DictConfig) -> None:
    if not cfg.get("loss"):
        raise UserError("loss=[] leaves no loss term; pick at least one, e.g. loss=[ce]")


def check_added_keys(cfg: DictConfig, overrides: list[str], known: set[str]) -> None:
    """``+key=value`` may only extend a known top-level entry (``+optim.nesterov=true``); a new
    top-level key is a typo (``+epoch=3``) that no code would read."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return  # Hydra parsed these already; nothing new to say
    for override in parsed:
        if not override.is_add() or override.is_force_add():
            continue
        top = override.key_or_group.lstrip("+").split(".")[0].split("@")[0]
        if top not in known:
            close = difflib.get_close_matches(top, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UserError(
                f"unknown top-level key {top!r} ({override.input_line}){hint} no part of camexp "
                "reads it; `camexp --cfg job` lists the keys"
            )


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_number_types(overrides: list[str]) -> None:
    """``optim.lr=abc`` (any key whose default is a number) -> one line naming the key and its
    type, instead of torch's "'<' not supported between instances of 'str' and 'float'"; and
    ``task.allow_other_dataset=no`` (any key whose default is true or false): Hydra reads ``no``
    as the text 'no', which Python takes as true, so a guard would be off without a word."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return
    groups, suspects = [], []
    for override in parsed:
        key = override.key_or_group.lstrip("+~")
        if os.path.isdir(os.path.join(CONFIG_DIR, key)):
            groups.append(override.input_line)  # a group choice: part of the defaults
        elif not (override.is_delete() or override.is_sweep_override()):
            value = override.value()
            if value in WORDS.get(key, ()):
                continue
            if value is not None and not is_number(value) and "${" not in str(value):
                suspects.append((key, override))
    if not suspects:
        return  # the common case: no second composition
    defaults = compose_config(groups)
    for key, override in suspects:
        default = OmegaConf.select(defaults, key, default=None, throw_on_resolution_failure=False)
        value = override.value()
        if is_number(default) and not is_number(value):
            kind = "an integer" if key in INTEGERS else "a number"
            raise UserError(
                f"{override.input_line} must be {kind} (the default is {key}={default})"
            )
        if isinstance(default, bool) and not isinstance(value, bool):
            words = "".join(f" or {word}" for word in WORDS.get(key, ()))
            raise UserError(
                f"{override.input_line} must be true or false{words} (the default is "
                f"{key}={str(default).lower()})"
            )


def check_options(cfg: DictConfig, overrides: list[str], known: set[str]) -> None:
    check_number_types(overrides)
    check_integers(cfg)
    check_loss(cfg)
    check_added_keys(cfg, overrides, known)


# group -> {old option name: new name}: aliases kept for one release (their files say so)
RENAMED = {"experiment": {"fashion_resnet20": "fashion_airnet"}}


def renamed_options(overrides: list[str]) -> list[str]:
    """One warning per override that names an option by its old name."""
    notes = []
    for override in overrides:
        key, _, value = str(override).partition("=")
        new = RENAMED.get(key.lstrip("+~"), {}).get(value.strip())
        if new:
            notes.append(f"{key}={value} is the old name of {key}={new} (the same config); "
                         f"the alias goes in the next release")  # fmt: skip
    return notes
