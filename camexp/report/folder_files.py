"""A run folder's files read as plain data: YAML without aliases, at most 16 MiB, with every
``${...}`` interpolation escaped so that nothing read from a folder is ever resolved."""

from __future__ import annotations

import os

import yaml
from omegaconf import OmegaConf


class SkippedRun(Exception):
    """A run folder whose files cannot be read: the report warns and goes on without it."""


MAX_YAML_BYTES = 16 * 2**20  # camexp's own .hydra files are a few KiB


class PlainLoader(yaml.SafeLoader):
    """YAML without aliases: a run folder's files are plain data (an alias bomb would hang)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("it holds a YAML alias; camexp's files never do")
        return super().compose_node(parent, index)


def literal(value):
    """``value`` with every ``${...}`` escaped: a run folder's interpolations are shown as
    written, never resolved (``${oc.env:...}`` would put the environment into a table)."""
    if isinstance(value, dict):
        return {k: literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [literal(v) for v in value]
    return value.replace("${", "\\${") if isinstance(value, str) else value


def load_yaml(path: str):
    """The YAML file at ``path`` as plain data (None when absent); SkippedRun when unreadable."""
    if not os.path.isfile(path):
        return None
    try:
        if os.path.getsize(path) > MAX_YAML_BYTES:
            raise yaml.YAMLError(f"larger than {MAX_YAML_BYTES // 2**20} MiB")
        with open(path) as f:
            return OmegaConf.create(literal(yaml.load(f, Loader=PlainLoader)))
    except Exception as err:  # a half-written or hand-edited file: skip the run, say which
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SkippedRun(f"{path} is not readable YAML ({first[:120]})") from err
