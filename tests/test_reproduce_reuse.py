"""The reproduce scripts reuse a finished run only when it is the same recipe: a run folder of
other overrides (other epochs, subset or seeds) trains again, and a table reads only the seeds
asked for (scripts/reproduce/same_run.py, kd_fashion.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "reproduce"))
try:
    from same_run import same_run
finally:
    sys.path.pop(0)


def fake_run(folder: Path, overrides: list[str], status="completed", metrics=None) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    record = {"status": status, "task": "classify", "metrics": metrics or {}, "wall_time_s": 1.0}
    (folder / "results.json").write_text(json.dumps(record))
    return folder


@pytest.mark.parametrize(
    ("asked", "reused"),
    [
        (["epochs=4", "seed=0", "hydra.run.dir=/x"], True),  # hydra.* is not saved by Hydra
        (["epochs=6", "seed=0"], False),  # another recipe
        (["epochs=4", "seed=0", "extra=1"], False),
        (["seed=0", "epochs=4"], False),  # another order is another command line
    ],
)
def test_a_run_is_reused_only_for_the_same_overrides(tmp_path, asked, reused):
    run = fake_run(tmp_path / "r", ["epochs=4", "seed=0"])
    assert same_run(str(run), asked) is reused


def test_an_unfinished_or_damaged_run_is_never_reused(tmp_path):
    assert not same_run(str(fake_run(tmp_path / "a", ["seed=0"], status="running")), ["seed=0"])
    damaged = fake_run(tmp_path / "b", ["seed=0"])
    (damaged / "results.json").write_text("{half")
    assert not same_run(str(damaged), ["seed=0"])
    assert not same_run(str(tmp_path / "missing"), ["seed=0"])


def test_the_kd_table_reads_only_the_seeds_asked_for(tmp_path):
    keys = ["test/acc1", "test_best/acc1", "val/acc1_last", "converge/epoch_90pct",
            "converge/epoch_95pct", "converge/epoch_99pct"]  # fmt: skip
    fake_run(tmp_path / "teacher", [], metrics=dict.fromkeys(keys, 95.0))
    fake_run(tmp_path / "ce_s0", [], metrics=dict.fromkeys(keys, 80.0))
    fake_run(tmp_path / "ce_s7", [], metrics=dict.fromkeys(keys, 20.0))  # another recipe's seed
    env = {**os.environ, "OUT": str(tmp_path), "SUMMARY_ONLY": "1", "SEEDS": "0"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "reproduce" / "kd_fashion.sh")],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| CE |")]
    assert row.startswith("| CE | 1 | 80.00 ± 0.00 |"), row
