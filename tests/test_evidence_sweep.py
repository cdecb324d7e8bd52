"""The evidence sweep's resume logic (scripts/reproduce/evidence.py), with real camexp runs.

A tiny sweep of two runs is stopped by a real SIGTERM while its second run trains (after that run
saved a checkpoint), then the same command runs again. No run may be kept half (a folder without
its files) or twice (trained again, or its epochs logged twice), and a third call with every run
present trains nothing and rebuilds the same tables.
"""

import json
import os
import signal
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "scripts", "reproduce", "evidence.py")
RUNS = ["seed-0", "seed-1"]
KEPT = ["results.json", "metrics.csv", os.path.join(".hydra", "overrides.yaml"), "machine.json"]


def _spec(tmp_path):
    spec = {
        "common": [
            "dataset=digits", "debug=smoke", "backbone=resnet20", "metrics=none", "epochs=2",
            "checkpoint_every=1", "amp=none", "progress=false", "tensorboard=false",
            "cam_pictures=0",
        ],
        "tables": [{
            "name": "tiny", "title": "Tiny", "about": "two seeds", "fixed": [],
            "sweep": {"seed": [0, 1]}, "report": ["--metrics", "test/acc1"],
        }],
    }  # fmt: skip
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _driver(tmp_path, *extra):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    cmd = [sys.executable, DRIVER, "--spec", str(_spec(tmp_path)), "--out", str(out),
           "--scratch", str(scratch), "--jobs", "1", "--threads", "1", *extra]  # fmt: skip
    env = dict(os.environ, CAMEXP_DATA_DIR=str(tmp_path / "data"))
    return cmd, env, out, scratch


def _whole(out, run):
    folder = out / "tiny" / run
    missing = [name for name in KEPT if not (folder / name).is_file()]
    assert not missing, f"{run} kept without {missing}"
    status = json.loads((folder / "results.json").read_text())["status"]
    assert status == "completed", (run, status)
    epochs = [line.split(",")[0] for line in (folder / "metrics.csv").read_text().splitlines()[1:]]
    assert sorted(epochs) == sorted(set(epochs)), f"{run}: an epoch logged twice: {epochs}"


def test_killed_sweep_continues_without_counting_a_run_twice_or_half(tmp_path):
    cmd, env, out, scratch = _driver(tmp_path)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    second_ckpt = scratch / "tiny" / RUNS[1] / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not second_ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before its second run saved a checkpoint"
    proc.send_signal(signal.SIGTERM)
    first_out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, first_out
    # Stopped mid-run: the first run is kept whole, the second is not kept at all.
    _whole(out, RUNS[0])
    assert not (out / "tiny" / RUNS[1]).exists(), first_out
    partial = out / ".partial"
    assert not partial.exists() or not any(partial.iterdir())
    tables = (out / "tables.md").read_text()
    assert "Runs: 1 of 2 finished (IN PROGRESS" in tables, tables
    first_kept = (out / "tiny" / RUNS[0] / "results.json").read_bytes()

    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 of 2 runs finished, 1 to train" in second.stdout, second.stdout
    assert f"started tiny/{RUNS[0]}" not in second.stdout  # never trained twice
    log = (scratch / "logs" / f"tiny__{RUNS[1]}.log").read_text()
    assert "resume=" in log, "the cut-off run was started afresh instead of resumed"
    for run in RUNS:
        _whole(out, run)
    assert (out / "tiny" / RUNS[0] / "results.json").read_bytes() == first_kept
    tables = (out / "tables.md").read_text()
    assert "Runs: 2 of 2 finished (complete)" in tables, tables

    third = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "2 of 2 runs finished, 0 to train" in third.stdout
    assert "started" not in third.stdout
    assert (out / "tables.md").read_text() == tables


def test_a_kept_run_with_other_overrides_is_refused_by_name(tmp_path):
    cmd, env, out, _ = _driver(tmp_path, "--report-only")
    folder = out / "tiny" / RUNS[0]
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=0", "epochs=99"]))
    (folder / "results.json").write_text(json.dumps({"status": "completed"}))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert str(folder) in result.stderr and "other overrides" in result.stderr, result.stderr
