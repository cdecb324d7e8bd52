"""Reliability: a run killed anywhere and resumed equals an uninterrupted run; SIGTERM saves and
stops; a NaN loss stops before the weights are touched; checkpoints are data, never code.
The stop signals at every other moment are in test_reliability_signals.py, which shares the
``reference`` run of this module."""

import csv
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

from camexp.errors import UserError
from camexp.run.checkpoint import load_checkpoint, save_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "kill_driver.py")
TIMING = {"train/images_per_s", "val/images_per_s", "epoch_time_s", "train_time_s"}  # wall clock
# 3 epochs of 3 steps, a step checkpoint every 2 steps: kills land mid-epoch and at epoch ends.
SMALL = [
    "debug=smoke", "epochs=3", "deterministic=true", "checkpoint_every=2", "tensorboard=false",
    "progress=false", "batch_size=32", "dataset.subset.train=96", "dataset.subset.test=64",
    "dataset.val_size=32", "cam_pictures=2", "metrics.images=4",
]  # fmt: skip


def camexp(args, driver=None, check=False):
    cmd = [sys.executable, DRIVER, driver] if driver else [sys.executable, "-m", "camexp"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


def metrics_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def results(run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """One uninterrupted run that every interrupted run must reproduce."""
    from conftest import write_fashion_mnist

    root = tmp_path_factory.mktemp("data")
    data = write_fashion_mnist(str(root), n_train=160, n_test=64)
    run = str(tmp_path_factory.mktemp("reference") / "run")
    camexp([*SMALL, f"dataset.root={data}", f"hydra.run.dir={run}"], check=True)
    return data, run


@pytest.mark.parametrize("kill", ["step:1", "step:4", "step:6", "save:1", "save:3", "save:5"])
def test_killed_and_resumed_run_equals_uninterrupted_run(reference, tmp_path, kill):
    data, reference_run = reference
    run = str(tmp_path / "run")
    killed = camexp([*SMALL, f"dataset.root={data}", f"hydra.run.dir={run}"], driver=kill)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert results(run)["status"] == "running"
    camexp([f"resume={run}"], check=True)
    assert metrics_rows(run) == metrics_rows(reference_run)
    resumed, expected = results(run), results(reference_run)
    assert resumed["status"] == "completed" and expected["selection"] == "val"
    assert resumed["metrics"] == expected["metrics"]
    assert not [n for n in os.listdir(os.path.join(run, "checkpoints")) if n.startswith(".tmp")]


def test_rerunning_the_same_command_in_the_same_folder_resumes(reference, tmp_path):
    data, reference_run = reference
    args = [*SMALL, f"dataset.root={data}", f"hydra.run.dir={tmp_path / 'run'}"]
    assert camexp(args, driver="step:5").returncode == -9
    camexp(args, check=True)  # what a requeued SLURM job does
    assert metrics_rows(tmp_path / "run") == metrics_rows(reference_run)


def test_sigterm_saves_and_stops_then_resume_completes(reference, tmp_path):
    data, reference_run = reference
    run = str(tmp_path / "run")
    stopped = camexp([*SMALL, f"dataset.root={data}", f"hydra.run.dir={run}"], driver="term:4")
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    assert "preempted" in stopped.stderr
    assert results(run)["status"] == "preempted"
    state = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))
    assert state["step"] == 5  # finished the step in flight (4 + 1), then saved
    camexp([f"resume={run}"], check=True)
    assert metrics_rows(run) == metrics_rows(reference_run)


def test_resume_refuses_other_overrides_and_names_them(reference, tmp_path):
    data, reference_run = reference
    done = camexp([f"resume={reference_run}", "loss.cam.weight=0", "batch_size=16"])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "drop loss.cam.weight=0, batch_size=16 (the run has batch_size=32)" in done.stderr


def test_resume_accepts_the_runs_own_overrides(reference, tmp_path):
    """What a user naturally types: the original command plus resume=. The copy of a completed
    run is already completed: nothing is trained, tested or written again."""
    data, reference_run = reference
    run = str(tmp_path / "run")
    shutil.copytree(reference_run, run)
    camexp([*SMALL, f"dataset.root={data}", f"resume={run}", "progress=false"], check=True)
    assert results(run)["metrics"] == results(reference_run)["metrics"]


def test_same_folder_with_another_config_is_refused(reference, tmp_path):
    data, _ = reference
    run = tmp_path / "run"
    args = [*SMALL, f"dataset.root={data}", f"hydra.run.dir={run}"]
    assert camexp(args, driver="step:2").returncode == -9
    done = camexp([*args, "loss.cam.weight=0.5"])
    assert done.returncode == 2
    assert "another config" in done.stderr and "loss.cam.weight" in done.stderr


def test_exploding_learning_rate_stops_as_diverged_without_checkpoints(reference, tmp_path):
    data, _ = reference
    run = tmp_path / "run"
    done = camexp([*SMALL, f"dataset.root={data}", f"hydra.run.dir={run}", "optim.lr=1e30"])
    assert done.returncode == 3, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    outcome = results(run)
    assert outcome["status"] == "diverged"
    assert "epoch 1" in outcome["error"] and "step" in outcome["error"]
    checkpoints = run / "checkpoints"
    for name in ("last.pt", "best.pt"):
        path = checkpoints / name
        if path.exists():  # a step checkpoint taken before the blow-up must be finite
            state = load_checkpoint(str(path))
            assert all(torch.isfinite(v).all() for v in state["model"].values()
                       if v.is_floating_point())  # fmt: skip


@pytest.mark.parametrize("budget, reason", [(2, "step 3"), (1000, "nan")])
def test_skip_budget_then_divergence_and_no_poisoned_checkpoint(reference, tmp_path, budget,
                                                                 reason):  # fmt: skip
    data, _ = reference
    run = tmp_path / "run"
    # Infinite inputs make every loss NaN. A budget of 2 diverges at the third step; a large
    # budget skips every step, but the BatchNorm statistics are poisoned by the forward pass:
    # the epoch's validation loss is NaN and nothing is saved.
    args = [*SMALL, f"dataset.root={data}", f"hydra.run.dir={run}", "dataset.std=[0.0]",
            f"skip_nonfinite={budget}", "checkpoint_every=0"]  # fmt: skip
    done = camexp(args)
    assert done.returncode == 3, done.stderr[-2000:]
    outcome = results(run)
    assert outcome["status"] == "diverged" and reason in outcome["error"]
    assert not (run / "checkpoints" / "last.pt").exists()


class Boom:
    def __reduce__(self):
        return (open, (MARKER, "w"))


MARKER = ""


def test_malicious_checkpoint_is_refused_and_runs_no_code(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "camexp-checkpoint-v1", "model": Boom()}, f)
    with pytest.raises(UserError, match="unpickling code"):
        load_checkpoint(str(path))
    assert not os.path.exists(MARKER)
    torch.save({"format": "camexp-checkpoint-v1", "x": Boom()}, tmp_path / "evil2.pt")
    with pytest.raises(UserError, match="unpickling code"):
        load_checkpoint(str(tmp_path / "evil2.pt"))
    assert not os.path.exists(MARKER)


def test_atomic_save_leaves_the_previous_checkpoint_when_the_write_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    save_checkpoint(path, {"epoch": 1, "model": {}})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"epoch": 2, "model": {}})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


def folder_state(run):
    """Every file of a run folder but its lock and log, with its bytes."""
    found = {}
    for folder, _, names in os.walk(run):
        for name in names:
            if name not in (".lock", "camexp.log"):
                with open(os.path.join(folder, name), "rb") as f:
                    found[os.path.relpath(os.path.join(folder, name), run)] = f.read()
    return found


def test_a_completed_run_resumes_as_done_and_extends_with_more_epochs(reference, tmp_path):
    """resume=R of a completed run: "already completed", exit 0, no file changes (no second
    test, no TensorBoard entries); resume=R epochs=4 trains one more epoch on the recomputed
    schedule; fewer epochs than done is refused."""
    _, reference_run = reference
    run = str(tmp_path / "run")
    shutil.copytree(reference_run, run)
    before = folder_state(run)
    done = camexp([f"resume={run}"], check=True)
    assert "already completed (3 epochs)" in done.stderr
    assert folder_state(run) == before
    extended = camexp([f"resume={run}", "epochs=4"], check=True)
    assert "extended from 3 to 4 epochs" in extended.stdout + extended.stderr
    record = results(run)
    assert record["status"] == "completed" and record["epochs_completed"] == 4
    assert metrics_rows(run)[:3] == metrics_rows(reference_run) and len(metrics_rows(run)) == 4
    with open(os.path.join(run, ".hydra", "overrides.yaml")) as f:
        assert "- epochs=4" in f.read()  # the report and the next resume see 4 epochs
    assert record["extended_from"] == [3]  # camexp-report never pools it with fresh runs
    assert "extended_from" not in results(reference_run)
    shorter = camexp([f"resume={run}", "epochs=2"])
    assert shorter.returncode == 2 and "cannot shorten" in shorter.stderr
    camexp([f"resume={run}", "epochs=5"], check=True)  # a second extension adds to the record
    assert results(run)["extended_from"] == [3, 4] and results(run)["epochs_completed"] == 5


def test_a_run_from_before_the_erasing_block_resumes_and_a_changed_block_is_refused(
    reference, tmp_path
):
    """A run cut off under the code before ``erasing`` existed (its .hydra/config.yaml and
    checkpoint config lack the block) resumes to the uninterrupted result: the block's default
    (prob 0) is what that code did. Any other value of it is a changed setting."""
    import yaml

    from camexp.run.checkpoint import config_difference

    data, reference_run = reference
    run = str(tmp_path / "run")
    assert camexp([*SMALL, f"dataset.root={data}", f"hydra.run.dir={run}"],
                  driver="step:4").returncode == -9  # fmt: skip
    config_path = os.path.join(run, ".hydra", "config.yaml")
    with open(config_path) as f:
        config = yaml.safe_load(f)
    del config["erasing"]
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    last = os.path.join(run, "checkpoints", "last.pt")
    state = load_checkpoint(last)
    del state["config"]["erasing"]
    save_checkpoint(last, state)
    camexp([f"resume={run}"], check=True)
    assert metrics_rows(run) == metrics_rows(reference_run)
    assert results(run)["metrics"] == results(reference_run)["metrics"]

    on = {"erasing": {"prob": 0.5, "mode": "const"}, "seed": 0}
    assert config_difference({"seed": 0}, on) == ["erasing"]
    assert config_difference({"seed": 0}, {**on, "erasing": {"prob": 0.0}}) == []
    assert config_difference({"seed": 0}, {"seed": 0, "cutout": {"prob": 0.0}}) == ["cutout"]
