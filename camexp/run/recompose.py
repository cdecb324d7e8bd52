"""Run folders are data: a run's config is recomposed from the project's config tree and the
run's saved overrides (``RUN_DIR/.hydra/overrides.yaml``), never taken from a file.

A run folder may come from someone else (a shared drive, a colleague's sweep). Its checkpoint's
config and its ``.hydra/config.yaml`` are compared with, never used as, the config: only the
project's own YAML files name the ``_target_`` classes that get instantiated. A saved override
that would name one (``dataset.source._target_=...``, a dict value holding ``_target_``, any
``hydra.*`` key such as a search path) is refused unless the command line restates it.

    cfg = recompose_run(run_dir)                     # what `resume=RUN_DIR` runs
    cfg = recompose_run(run_dir, ["device=cpu"])     # with volatile changes
"""

import os
import re
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from camexp.errors import UserError
from camexp.run.checkpoint import VOLATILE_KEYS, config_difference, load_checkpoint
from camexp.run.keys import loads_files, neutral

# The top-level configs/ folder of the checkout, as an absolute path: a relative config_path
# is read as a Python package when camexp runs as a console script.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent.parent / "configs")
PLAIN_PATH = re.compile(r"^[A-Za-z0-9_/.+-]+$", re.ASCII)
BACKBONE_KWARGS = "backbone.kwargs"  # passed to timm.create_model as they are
SPECIAL_KEY = re.compile(r"^_\w+_$")  # _target_, _args_, _partial_, _recursive_, _convert_


def resume_override(path: str) -> str:
    """``resume=PATH`` as Hydra's override lexer reads it back as PATH: quoted unless PATH is
    plain ASCII (a space, a trailing space, ``ü ✓`` or a comma would not survive unquoted)."""
    if PLAIN_PATH.match(path):
        return f"resume={path}"
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", path)  # \ before a quote
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)  # \ before the closing one
    return f"resume='{escaped}'"


def command_line(args: list[str]) -> list[str]:
    """The command line's overrides with ``resume=PATH`` quoted for Hydra's lexer (any path the
    file system allows resumes); an override with a control character is refused."""
    out = []
    for arg in args:
        check_text(arg, "the command line")
        if arg.startswith("resume=") and not arg[len("resume=") :].startswith(("'", '"')):
            arg = resume_override(arg[len("resume=") :])
        out.append(arg)
    return out


def parse(overrides: list[str], where: str) -> list:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise UserError(f"{where}: {' '.join(str(err).split())}") from err


def key_of(override) -> str:
    return override.key_or_group.lstrip("+~")


def names_code(override) -> bool:
    """True for an override that could name a class or function to instantiate, or a file or
    URL for timm to load weights from (``backbone.kwargs.checkpoint_path``, ...)."""
    key = key_of(override)
    if key.split(".")[0].split("/")[0] == "hydra" or any(
        SPECIAL_KEY.match(part) for part in re.split(r"[./@]", key)
    ):
        return True
    if key.startswith(BACKBONE_KWARGS + ".") and loads_files(key.split(".")[2]):
        return True
    if override.is_delete() or override.value_type is None or override.is_sweep_override():
        return False
    value = override.value()
    if key == BACKBONE_KWARGS and isinstance(value, dict) and any(map(loads_files, value)):
        return True
    return holds_special_key(value)


CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a newline in a value could end a line in a log file
GROUP_NAME = re.compile(r"^\w[\w.-]*$")  # a file name in a configs/ group: no '/', no '..'


def check_text(line: str, where: str) -> None:
    """An override with a control character (newline, tab, escape) is refused."""
    if CONTROL.search(line):
        raise UserError(
            f"{where}: the override {line!r} holds a control character (a newline, tab, ...); "
            "remove it"
        )


def group_of(override) -> str | None:
    """The config group an override chooses from (``dataset``, ``hydra/launcher``), or None."""
    group = key_of(override)
    return group if os.path.isdir(os.path.join(CONFIG_DIR, group)) else None


def check_saved_override(override, where: str) -> None:
    """A saved override is data: a group value is the name of one of the project's own files
    (``dataset=../../elsewhere/evil`` would compose an outside YAML), and no value holds an
    interpolation (``${oc.decode:...}`` could build a ``_target_`` after any check of the
    text). Restating the override on the command line is the user's own choice."""
    line = override.input_line
    check_text(line, where)
    if "${" in line:
        raise UserError(
            f"{where}: its saved override {line!r} holds an interpolation; a run folder's "
            "files are data and are never resolved: restate it on the command line if you "
            "trust it"
        )
    group = group_of(override)
    if group is None or override.is_delete():
        return
    value = override.value()
    names = value if isinstance(value, list) else [value]
    for name in names:
        if not (isinstance(name, str) and GROUP_NAME.match(name) and ".." not in name
                and os.path.isfile(os.path.join(CONFIG_DIR, group, f"{name}.yaml"))):  # fmt: skip
            raise UserError(
                f"{where}: its saved override {line!r} is not one of this checkout's "
                f"{group} options (configs/{group}/*.yaml); a run folder names, never "
                "supplies, a config"
            )


def holds_special_key(value) -> bool:
    if isinstance(value, dict):
        return any(SPECIAL_KEY.match(str(k)) or holds_special_key(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_special_key(v) for v in value)
    return isinstance(value, str) and "_target_" in value


def saved_overrides(run_dir: str) -> list[str]:
    path = os.path.join(run_dir, ".hydra", "overrides.yaml")
    if not os.path.isfile(path):
        raise UserError(
            f"resume={run_dir}: no .hydra/overrides.yaml there; pass a camexp run folder (a "
            "run stopped before it started has nothing to resume: run its command again)"
        )
    try:
        with open(path) as f:
            saved = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{path} is not readable YAML ({' '.join(str(err).split())})") from err
    if not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        raise UserError(f"{path} is not a list of overrides; pass a camexp run folder")
    for line in saved:
        check_text(line, path)
    return saved


def same_value(cli_cfg: DictConfig, resumed: DictConfig, key: str) -> bool:
    try:
        a, b = OmegaConf.select(cli_cfg, key), OmegaConf.select(resumed, key)
    except OmegaConfBaseException:
        return False
    if isinstance(a, DictConfig | type(None)) or a is None:
        return False  # a group choice or a missing key: only the same text counts
    return OmegaConf.to_container(OmegaConf.create({"v": a}), resolve=True) == (
        OmegaConf.to_container(OmegaConf.create({"v": b}), resolve=True)
    )


def resume_overrides(
    run_dir: str, command_line: list[str], cli_cfg: DictConfig | None = None
) -> list[str]:
    """The overrides that recompose ``run_dir``: its saved ones, then the volatile ones of the
    command line (``progress``, ``device``, ...). A command-line override equal to a saved one is
    accepted; any other is named in the error."""
    saved = saved_overrides(run_dir)
    saved_parsed = parse(saved, f"{run_dir}/.hydra/overrides.yaml")
    cli = [o for o in command_line if key_of(parse([o], "the command line")[0]) != "resume"]
    cli_parsed = parse(cli, "the command line")
    saved_text = {o.input_line.strip() for o in saved_parsed}
    volatile, differing = [], []
    for override in cli_parsed:
        key = key_of(override)
        if neutral(key, VOLATILE_KEYS):
            volatile.append(override)
        elif override.input_line.strip() not in saved_text:
            differing.append(override)
    restated = {o.input_line.strip() for o in cli_parsed}
    for override in saved_parsed:
        if names_code(override) and override.input_line.strip() not in restated:
            raise UserError(
                f"resume={run_dir}: its saved override {override.input_line} names code to run "
                "or weights to load; camexp only takes such values from the command line: "
                "restate it there if you trust it"
            )
        if override.input_line.strip() not in restated:
            check_saved_override(override, f"resume={run_dir}")
    replaced = {key_of(o) for o in volatile}
    kept = [o.input_line for o in saved_parsed if key_of(o) not in replaced]
    overrides = [*kept, *(o.input_line for o in volatile), resume_override(run_dir)]
    if differing:
        resumed = compose_config(overrides) if cli_cfg is not None else None
        really = [
            o for o in differing
            if resumed is None or not same_value(cli_cfg, resumed, key_of(o))
        ]  # fmt: skip
        if really:
            named = ", ".join(describe(o, saved_parsed) for o in really)
            raise UserError(
                f"resume={run_dir} continues that run with its own config; drop {named}, or "
                "start a new run"
            )
    return overrides


def describe(override, saved_parsed: list) -> str:
    key = key_of(override)
    before = [o.input_line for o in saved_parsed if key_of(o) == key]
    return f"{override.input_line} (the run has {before[0]})" if before else override.input_line


def compose_config(overrides: list[str]) -> DictConfig:
    """The project's config with ``overrides``, inside or outside a running Hydra app."""
    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name="config", overrides=list(overrides))
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(
            f"the saved overrides no longer compose with this checkout's configs "
            f"({' '.join(str(err).split())[:300]})"
        ) from err


def check_against_run(cfg: DictConfig, run_dir: str) -> None:
    """The recomposed config must be the config the run's checkpoint (or, before its first
    checkpoint, its ``.hydra/config.yaml``) was made with."""
    composed = os.path.join(run_dir, ".hydra", "config.yaml")
    recorded = None
    try:
        if os.path.exists(composed):
            with open(composed) as f:
                recorded = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise UserError(
            f"{composed} is damaged ({' '.join(str(err).split())[:200]}); the run folder is "
            "not resumable as it is"
        ) from err
    checks = [(recorded, ".hydra/config.yaml", False)]
    last = os.path.join(run_dir, "checkpoints", "last.pt")
    if os.path.exists(last):
        checks.append((load_checkpoint(last).get("config"), "checkpoints/last.pt", True))
    for saved, source, resolved in checks:
        if not isinstance(saved, dict):
            raise UserError(f"resume={run_dir}: its {source} holds no config; it is damaged")
        differing = config_difference(saved, OmegaConf.to_container(cfg, resolve=resolved))
        if differing:
            raise UserError(
                f"resume={run_dir}: this checkout's configs with the run's overrides differ "
                f"from its {source} in {', '.join(differing[:5])} (a damaged file, or configs "
                "changed since the run started); start a new run"
            )


def recompose_run(run_dir: str, command_line: list[str] = (), cli_cfg=None) -> DictConfig:
    """The config of the run in ``run_dir``, recomposed and checked (see the module doc)."""
    if not os.path.isdir(run_dir):
        raise UserError(f"resume={run_dir}: no such folder; pass a camexp run folder")
    cfg = compose_config(resume_overrides(run_dir, list(command_line), cli_cfg))
    check_against_run(cfg, run_dir)
    return cfg
