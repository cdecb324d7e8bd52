"""Sweeps through the launcher presets (configs/hydra/launcher/): a sweep of debug=smoke under
joblib and under submitit_local completes its jobs even when one of them fails (that one leaves
results.json with status failed and the error), and runs started at the same moment get their
own folders. Each test runs the real ``camexp`` entry point on a tiny Fashion-MNIST it writes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_fashion_mnist

CAMEXP = [sys.executable, "-m", "camexp"]
pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> str:
    # debug=smoke holds out 64 val images and uses 256 train and 128 test images.
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=400, n_test=160)


def camexp(out: Path, fmnist: str, *overrides: str, check: bool = True):
    env = {
        **os.environ,
        "CAMEXP_OUTPUT_DIR": str(out),
        "OMP_NUM_THREADS": "1",  # two jobs at once on a 2-core machine
        "HYDRA_FULL_ERROR": "0",
    }
    common = ["debug=smoke", "backbone=resnet20", f"dataset.root={fmnist}", "tensorboard=false",
              "cam_pictures=0"]  # fmt: skip
    proc = subprocess.run(
        [*CAMEXP, *common, *overrides], env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def results(out: Path) -> dict:
    """{job folder name: results.json} for every run under ``out``."""
    found = {}
    for path in sorted(out.rglob("results.json")):
        found[path.parent.name] = json.loads(path.read_text())
    return found


@pytest.mark.parametrize("launcher", ["parallel", "local_submitit"])
def test_sweep_completes_and_a_failing_job_keeps_the_others(tmp_path, fmnist, launcher):
    # Job 1 fails: torch rejects momentum -1 (reported as a one-line user error).
    # Jobs 0 and 2 must still complete, in the same sweep folder, each with its results.
    proc = camexp(
        tmp_path, fmnist, "optim.momentum=0.9,-1,0.8", f"hydra/launcher={launcher}", "-m",
        check=False,
    )  # fmt: skip
    found = results(tmp_path)
    assert sorted(found) == ["0", "1", "2"], proc.stderr[-3000:]
    assert found["1"]["status"] == "failed"
    assert "momentum" in found["1"]["error"]
    for job, momentum in (("0", 0.9), ("2", 0.8)):
        assert found[job]["status"] == "completed", proc.stderr[-3000:]
        assert found[job]["config"]["optim"]["momentum"] == momentum
        assert 0 <= found[job]["metrics"]["test/acc1"] <= 100
    jobs = {p.parent for p in tmp_path.rglob("results.json")}
    assert len({job.parent for job in jobs}) == 1  # one sweep folder
    # every job ran; then the sweep exits non-zero with a summary of the failed one
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 job(s) of the sweep" in proc.stderr and "job 1: failed" in proc.stderr


def test_user_error_in_a_sweep_does_not_stop_it(tmp_path, fmnist):
    proc = camexp(tmp_path, fmnist, "batch_size=0,32", "-m", check=False)
    found = results(tmp_path)
    assert found["0"]["status"] == "failed" and "batch_size" in found["0"]["error"]
    assert found["1"]["status"] == "completed"
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = proc.stderr.strip().splitlines()[-2:]
    assert summary[0].startswith("camexp: 1 job(s) of the sweep in ")
    assert summary[1].startswith("  job 0: failed: UserError: batch_size=0 must be >= 1")


def test_runs_started_together_get_their_own_folders(tmp_path, fmnist):
    """Two runs started at the same moment never share a folder. They diverge at their first
    step (std=0 makes every input infinite), which keeps the folder and its results.json; a
    failed start (a user error such as batch_size=0) would leave no folder to count."""
    env = {**os.environ, "CAMEXP_OUTPUT_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    args = [*CAMEXP, "debug=smoke", f"dataset.root={fmnist}", "dataset.std=[0.0]",
            "skip_nonfinite=0", "checkpoint_every=0", "tensorboard=false",
            "cam_pictures=0"]  # fmt: skip
    procs = [subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL) for _ in range(3)]
    pids = {str(p.pid) for p in procs}
    assert all(p.wait(timeout=120) == 3 for p in procs)  # 3: diverged
    folders = sorted(p.parent for p in tmp_path.rglob("results.json"))
    assert len(folders) == 3
    # Each folder name ends in its process id: unique among processes alive at the same time.
    assert {f.name.rsplit("-", 1)[1] for f in folders} == pids


@pytest.mark.parametrize(
    "preset, target",
    [
        ("sequential", "BasicLauncher"),
        ("parallel", "JoblibLauncher"),
        ("slurm", "SlurmLauncher"),
        ("local_submitit", "LocalLauncher"),
    ],
)
def test_presets_compose(preset, target):
    from hydra import compose, initialize_config_dir

    from camexp.main import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={preset}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


def test_slurm_preset_is_overridable():
    from hydra import compose, initialize_config_dir

    from camexp.main import CONFIG_DIR

    overrides = [
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.timeout_min=90",
        "hydra.launcher.array_parallelism=3",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        launcher = compose("config", overrides=overrides, return_hydra_config=True).hydra.launcher
    assert (launcher.partition, launcher.gpus_per_node) == ("gpu", 4)
    assert (launcher.timeout_min, launcher.array_parallelism) == (90, 3)


def test_a_preempted_submitit_job_is_requeued_into_its_folder_and_resumes(tmp_path, fmnist):
    """submitit's preemption signal (USR2; SLURM sends it before the time limit) reaches the
    job: camexp saves last.pt and stops as "preempted", submitit requeues the job, and the new
    process resumes in the same run folder and completes with the uninterrupted run's numbers."""
    args = ["debug=smoke", "backbone=resnet20", f"dataset.root={fmnist}", "tensorboard=false",
            "cam_pictures=0",
            "metrics=none", "epochs=3", "deterministic=true", "checkpoint_every=1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CAMEXP_OUTPUT_DIR": str(tmp_path / "sweep")}
    env.pop("HYDRA_FULL_ERROR", None)
    reference = tmp_path / "reference"
    done = subprocess.run([*CAMEXP, *args, f"hydra.run.dir={reference}"], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = subprocess.Popen(
        [*CAMEXP, *args, "seed=0", "hydra/launcher=local_submitit", "-m"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 400
    while time.time() < deadline and not list((tmp_path / "sweep").rglob("checkpoints/last.pt")):
        time.sleep(0.5)  # the job is training (a step checkpoint exists)
    (last,) = list((tmp_path / "sweep").rglob("checkpoints/last.pt"))
    run = last.parent.parent
    job_pid = int((run / ".lock").read_text())
    os.kill(job_pid, signal.SIGUSR2)
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    logs = "".join(p.read_text() for p in tmp_path.rglob(".submitit/**/*_log.*"))
    assert "preempted: stopped by SIGUSR2" in logs and "Requeued job" in logs
    assert json.loads((run / "results.json").read_text())["status"] == "completed"
    assert metric_rows(run) == metric_rows(reference)
    assert (json.loads((run / "results.json").read_text())["metrics"]
            == json.loads((reference / "results.json").read_text())["metrics"])  # fmt: skip


def metric_rows(run: Path) -> list:
    timing = {"train/images_per_s", "val/images_per_s", "epoch_time_s", "train_time_s"}
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(f)]
