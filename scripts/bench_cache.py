"""A benchmark's per-seed cache: one JSON file per seed, named by a hash of what the seed must
match to be reused (recipe, measurement, machine), written whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import sys

from camexp.run.tracking import write_json_atomic


def cache_path(cache: str, identity: dict) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache, f"seed{identity['seed']}-{digest}.json")


def load_cached(cache: str | None, identity: dict) -> dict | None:
    path = cache_path(cache, identity) if cache else None
    if path is None or not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    if saved.get("identity") != identity:  # a hash collision or a hand-edited file
        return None
    print(f"seed {identity['seed']}: reusing {path}", file=sys.stderr)
    return saved["run"]


def save_cached(cache: str | None, identity: dict, run: dict) -> None:
    """Written whole or not at all (camexp's atomic write), so a kill leaves no half seed."""
    if not cache:
        return
    os.makedirs(cache, exist_ok=True)
    write_json_atomic(cache_path(cache, identity), {"identity": identity, "run": run})
