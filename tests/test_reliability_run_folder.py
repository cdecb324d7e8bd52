"""Run folders are data, and one process owns one (issue 15, items 1, 3, 4, 5, 6):
the lock and its message, the saved overrides that may never name code, the record that is
never left "running", and the sweep's summary of failed jobs. Most cases are in-process unit
checks; two run the real entry point."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run_camexp
from omegaconf import OmegaConf

from camexp.errors import UserError
from camexp.run import record as record_module
from camexp.run.lock import RunLock
from camexp.run.recompose import compose_config, resume_overrides
from camexp.run.record import RunRecord
from camexp.run.sweep import expected_jobs, failures


# ----------------------------------------------------------------------------- the lock
def test_a_held_lock_names_its_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    first = RunLock(str(tmp_path)).acquire()
    with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):
        RunLock(str(tmp_path)).acquire()  # flock: another open file description conflicts
    first.release()
    # A process that took the lock and died (SIGKILL) leaves its PID in the file: taken over.
    code = f"import os; from camexp.run.lock import RunLock; RunLock({str(tmp_path)!r}).acquire(); os.kill(os.getpid(), 9)"  # noqa: E501
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == -9
    dead_pid = (tmp_path / ".lock").read_text().strip()
    assert dead_pid and dead_pid != str(os.getpid())
    with RunLock(str(tmp_path)):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


def test_a_second_process_on_a_locked_folder_stops_with_one_line(tmp_path, tiny_fmnist):
    run = tmp_path / "run"
    with RunLock(str(run)):
        done = run_camexp("debug=smoke", f"dataset.root={tiny_fmnist}", f"hydra.run.dir={run}",
                          cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 75, done.stderr[-2000:]  # busy: try again (EX_TEMPFAIL)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"in use by process {os.getpid()}" in lines[0]
    assert not (run / "results.json").exists() and not (run / ".hydra").exists()


# ----------------------------------------------------------------------------- recompose
def run_folder(tmp_path: Path, overrides: list[str]) -> str:
    """A run folder as camexp leaves it before its first checkpoint."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    cfg = compose_config(overrides)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return str(run)


CODE = [
    "dataset.source._target_=builtins.exec",
    "dataset.source={_target_:builtins.open,file:/tmp/x,mode:w}",
    "+loss.evil={_target_:os.system,command:id}",
    "hydra.searchpath=[file:///tmp]",
]


@pytest.mark.parametrize("saved", CODE)
def test_a_saved_override_that_names_code_is_refused(tmp_path, saved):
    run = run_folder(tmp_path, ["debug=smoke"])
    overrides = Path(run, ".hydra", "overrides.yaml")
    overrides.write_text(yaml.safe_dump(["debug=smoke", saved]))
    with pytest.raises(UserError, match="names code"):
        resume_overrides(run, [f"resume={run}"])
    # restated on the command line, it is the user's own choice
    assert saved in resume_overrides(run, [f"resume={run}", saved])


def test_resume_takes_equal_overrides_and_the_volatile_ones(tmp_path):
    run = run_folder(tmp_path, ["debug=smoke", "seed=3"])
    got = resume_overrides(run, [f"resume={run}", "seed=3", "progress=false", "debug=smoke"])
    assert got == ["debug=smoke", "seed=3", "progress=false", f"resume={run}"]
    with pytest.raises(UserError, match=r"drop seed=4 \(the run has seed=3\), optim.lr=9"):
        resume_overrides(run, [f"resume={run}", "seed=4", "optim.lr=9"])


def test_a_recomposed_run_equals_its_saved_config(tmp_path):
    from camexp.run.recompose import recompose_run

    run = run_folder(tmp_path, ["debug=smoke", "loss.cam.weight=0.5"])
    cfg = recompose_run(run, [f"resume={run}"])
    assert cfg.loss.cam.weight == 0.5 and cfg.resume == run
    config = Path(run, ".hydra", "config.yaml")
    config.write_text(config.read_text().replace("weight: 0.5", "weight: 0.25"))
    with pytest.raises(UserError, match="loss.cam.weight"):
        recompose_run(run, [f"resume={run}"])


# ----------------------------------------------------------------------------- results.json
def test_results_json_is_never_left_running_when_the_disk_fills(tmp_path, monkeypatch):
    record = RunRecord(str(tmp_path), OmegaConf.create({"task": {"name": "classify"}}), [])
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "running"

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(record_module, "write_json_atomic", disk_full)
    record.fail("failed", OSError(28, "No space left on device"), epochs_completed=2)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["status"] == "failed" and "No space left" in written["error"]
    assert written["epochs_completed"] == 2
    assert sorted(os.listdir(tmp_path)) == ["results.json"]  # no temp file left


# ----------------------------------------------------------------------------- sweeps
def test_the_sweep_summary_lists_every_job_that_did_not_complete(tmp_path):
    assert expected_jobs(["seed=0,1", "optim.lr=0.1,0.2,0.3", "debug=smoke"]) == 6
    for job, status in (("0", "completed"), ("1", "failed"), ("2", "diverged")):
        (tmp_path / job).mkdir()
        body = {"status": status, **({"error": f"E{job}"} if status != "completed" else {})}
        (tmp_path / job / "results.json").write_text(json.dumps(body))
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "results.json").write_text("[1, 2")  # truncated
    lines = failures(tmp_path, expected=5)
    assert lines[0] == "  job 1: failed: E1" and lines[1] == "  job 2: diverged: E2"
    assert lines[2].startswith("  job 3: unreadable")
    assert lines[3] == "  1 of 5 jobs left no results.json"


# ----------------------------------------------------------------------------- selection (#13)
def test_without_a_validation_split_nothing_is_selected_and_test_is_never_val(
    tmp_path, tiny_fmnist
):
    run = tmp_path / "run"
    args = ["debug=smoke", f"dataset.root={tiny_fmnist}", "dataset.val_size=0", "metrics=none",
            "tensorboard=false", f"hydra.run.dir={run}"]  # fmt: skip
    done = run_camexp(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["selection"] == "none"
    assert "test/acc1" in results["metrics"]
    assert not [k for k in results["metrics"] if k.startswith(("val/", "test_best/", "best"))]
    assert sorted(os.listdir(run / "checkpoints")) == ["last.pt"]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert not [c for c in header if c.startswith("val/")], header
