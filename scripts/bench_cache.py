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


def load_cached(cache: str | None, identity: dict, valid=lambda run: True) -> dict | None:
    """The cached run of ``identity``, or None: a file that is no JSON object, whose identity
    differs (a hash collision, a hand edit) or whose run ``valid`` refuses is a cache miss with
    one warning, and the seed runs again."""
    path = cache_path(cache, identity) if cache else None
    if path is None or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as err:
        return miss(path, f"unreadable ({err})")
    if not isinstance(saved, dict) or saved.get("identity") != identity:
        return miss(path, "not this seed's record")
    if not isinstance(saved.get("run"), dict) or not valid(saved["run"]):
        return miss(path, "its run record is incomplete or of the wrong types")
    print(f"seed {identity['seed']}: reusing {path}", file=sys.stderr)
    return saved["run"]


def miss(path: str, why: str) -> None:
    print(f"warning: ignoring the cache file {path}: {why}; the seed runs again", file=sys.stderr)
    return None


def save_cached(cache: str | None, identity: dict, run: dict) -> None:
    """Written whole or not at all (camexp's atomic write), so a kill leaves no half seed."""
    if not cache:
        return
    os.makedirs(cache, exist_ok=True)
    write_json_atomic(cache_path(cache, identity), {"identity": identity, "run": run})
