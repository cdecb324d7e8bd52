"""Data-parallel training: a 2-process gloo run on the CPU through torchrun matches a 1-process
run with the same global batch (tolerance: BatchNorm sees per-rank batches, 8 instead of 16
images, and each rank draws its own augmentations), and only rank 0 writes the run folder."""

import csv
import json
import os
import subprocess
import sys

import pytest

SMALL = [
    "debug=smoke", "backbone=resnet20", "tensorboard=false", "progress=false", "batch_size=16",
    "epochs=2",
    "dataset.val_size=16",
    "cam_pictures=2", "metrics=none", "optim.lr=0.02",
    "amp=none",  # fp32 on every CPU: under bf16 (amp=auto on AMX/AVX512-BF16) the ranks' rounding
                 # alone moves train/cam by more than the tolerance
]  # fmt: skip


def last_row(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))[-1]


def test_two_process_gloo_run_matches_one_process(tiny_fmnist, tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    args = [*SMALL, f"dataset.root={tiny_fmnist}"]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    two = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "camexp", *args,
         f"hydra.run.dir={tmp_path / 'two'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "camexp", *args, f"hydra.run.dir={tmp_path / 'one'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = last_row(tmp_path / "one"), last_row(tmp_path / "two")
    for key in ("train/loss", "train/ce", "train/cam"):
        assert float(b[key]) == pytest.approx(float(a[key]), rel=0.05), key
    # training accuracy counts every image of both ranks once
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["status"] == "completed" and results["epochs_completed"] == 2
    assert abs(float(b["train/acc1"]) - float(a["train/acc1"])) <= 15.0
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["best.pt", "last.pt"]


TIMING = {"train/images_per_s", "val/images_per_s", "epoch_time_s", "train_time_s"}


def torchrun(args, driver=None):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    launcher = os.path.join(os.path.dirname(sys.executable), "torchrun")
    program = [os.path.join(os.path.dirname(__file__), "kill_driver.py"), driver] if driver else [
        "-m", "camexp"]  # fmt: skip
    return subprocess.run(
        [launcher, "--standalone", "--nproc_per_node", "2", *program, *args],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def test_two_process_run_killed_and_resumed_equals_the_uninterrupted_one(tiny_fmnist, tmp_path):
    """Each rank's generators (its augmentation shard, its epoch sums) are in last.pt, and rank 0
    hands them to the others on resume: the killed and resumed run equals the uninterrupted one.
    Rank 1 writes nothing into the run folder, not even under an explicit hydra.run.dir."""
    # 48 training images in global batches of 16: 3 steps per epoch, 2 epochs
    args = [*SMALL, f"dataset.root={tiny_fmnist}", "deterministic=true", "checkpoint_every=1"]
    reference = tmp_path / "reference"
    done = torchrun([*args, f"hydra.run.dir={reference}"])
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    killed = torchrun([*args, f"hydra.run.dir={run}"], driver="step:5")  # epoch 2, step 2
    assert killed.returncode != 0
    assert json.loads((run / "results.json").read_text())["status"] == "running"
    done = torchrun([f"resume={run}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert rows(run) == rows(reference)
    got = json.loads((run / "results.json").read_text())
    assert got["metrics"] == json.loads((reference / "results.json").read_text())["metrics"]
    log = (reference / "camexp.log").read_text()
    assert log.count("epoch 1 ") == 1, log  # rank 1 logged into its own scratch folder
    assert sorted(os.listdir(reference)) == [
        ".hydra",
        ".lock",
        "camexp.log",
        "cams.png",
        "checkpoints",
        "metrics.csv",
        "results.json",
    ]
