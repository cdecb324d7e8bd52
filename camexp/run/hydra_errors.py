"""Hydra's own errors (a typo'd key, an unknown group option, an override it cannot parse) as
one line with a did-you-mean, instead of Hydra's several lines and exit 1.

They happen before camexp's code runs, so the entry point runs Hydra with HYDRA_FULL_ERROR set
(Hydra then raises instead of printing) and passes what it raises to :func:`one_line`.
"""

import difflib
import os

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from camexp.run.launchers import missing_launcher_hint
from camexp.run.recompose import CONFIG_DIR


def typo_distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (optimal string alignment): an insertion, deletion,
    substitution or swap of two neighbours costs 1, so ``cma`` is 1 from ``cam``, 2 from ``ccm``."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def closest(word: str, options) -> str | None:
    """The option a typo most likely meant: the fewest edits (a swap is one), at most a third
    of the word's letters; else difflib's closest match."""
    options = [str(o) for o in options]
    budget = max(1, len(word) // 3)
    scored = sorted((typo_distance(word, o), -difflib.SequenceMatcher(None, word, o).ratio(), o)
                    for o in options)  # fmt: skip
    if scored and scored[0][0] <= budget:
        return scored[0][2]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, options) -> str:
    close = closest(word, options)
    return f"; did you mean {close}?" if close else ""


def group_options(group: str) -> list[str]:
    folder = os.path.join(CONFIG_DIR, group)
    if not os.path.isdir(folder):
        return []
    return sorted(n[: -len(".yaml")] for n in os.listdir(folder) if n.endswith(".yaml"))


def missing_option(err: MissingConfigException) -> str:
    missing = str(getattr(err, "missing_cfg_file", "") or "")
    group, _, option = missing.rpartition("/")
    options = list(getattr(err, "options", None) or group_options(group))
    if not group:
        return " ".join(str(err).split())[:300]
    listed = ", ".join(options) if len(options) <= 30 else ", ".join(options[:30]) + ", ..."
    return (
        f"{group}={option} is not an option{did_you_mean(option, options)} "
        f"(options: {listed or 'none'})"
    )


def unknown_key(err: HydraException, cause: OmegaConfBaseException) -> str:
    full_key = str(getattr(cause, "full_key", "") or "")
    parent = getattr(cause, "parent_node", None)
    known = list(parent.keys()) if hasattr(parent, "keys") else []
    leaf = full_key.rsplit(".", 1)[-1]
    prefix = full_key.rsplit(".", 1)[0] + "." if "." in full_key else ""
    hint = did_you_mean(leaf, known).replace("mean ", f"mean {prefix}")
    return (
        f"unknown key {full_key}{hint} (a new key needs a leading +, e.g. +{full_key}=...; "
        "`camexp --cfg job` prints every key)"
    )


def one_line(err: BaseException) -> str | None:
    """The user-facing line for a Hydra error, or None when ``err`` is not one of them."""
    if isinstance(err, MissingConfigException):
        return missing_launcher_hint(str(err)) or missing_option(err)  # plugin not installed
    cause = err.__cause__
    if isinstance(err, HydraException) and isinstance(cause, OmegaConfBaseException):
        if "not in struct" in str(cause) or type(cause).__name__.startswith("ConfigKey"):
            return unknown_key(err, cause)
        return f"{' '.join(str(err).split())} ({' '.join(str(cause).split())})"[:400]
    if isinstance(err, OverrideParseException):
        message = " ".join(str(err).split("See https://")[0].split())
        return f"cannot parse the override {err.override!r} ({message}); quote values with '...'"
    if isinstance(err, HydraException | OmegaConfBaseException):
        first = " ".join(str(err).split("See https://")[0].split())
        return first[:400] or type(err).__name__
    return None


def unknown_flag(argv: list[str]) -> str | None:
    """``--epochs 3`` or ``--epochs=3`` (argparse habits) -> "write epochs=3", before Hydra's
    eight lines of usage; None when every ``-`` argument is one of Hydra's own flags."""
    from hydra._internal.utils import get_args_parser

    known = set(get_args_parser()._option_string_actions)
    for i, arg in enumerate(argv):
        if not arg.startswith("-") or arg.partition("=")[0] in known or arg == "-":
            continue
        key, sep, value = arg.lstrip("-").partition("=")
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if not sep and following and not following.startswith("-") and "=" not in following:
            value = following
        example = f"{key}={value or '...'}"
        return (
            f"{arg} is not an option: camexp takes key=value overrides; write {example} "
            "(`camexp --help` lists the keys)"
        )
    return None
