"""Exit 0 when RUN_DIR holds a completed camexp run of exactly these overrides, else 1: the
reuse check of the reproduce scripts, so that a changed recipe (other epochs, subset, seeds or
extra overrides) trains again instead of reusing a run of another recipe.

    python scripts/reproduce/same_run.py RUN_DIR OVERRIDE ...   (hydra.* overrides are ignored:
                                                                 Hydra does not save them)
"""

import json
import sys

import yaml


def same_run(run_dir: str, overrides: list[str]) -> bool:
    wanted = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    try:
        with open(f"{run_dir}/results.json") as f:
            results = json.load(f)
        with open(f"{run_dir}/.hydra/overrides.yaml") as f:
            saved = yaml.safe_load(f)
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(results, dict) and results.get("status") == "completed" and saved == wanted


if __name__ == "__main__":
    sys.exit(0 if same_run(sys.argv[1], sys.argv[2:]) else 1)
