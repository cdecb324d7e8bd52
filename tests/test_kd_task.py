"""task=kd end to end: a teacher checkpoint from a debug=smoke classify run (its architecture read
from the checkpoint), distilled with every KD term; the teacher stays frozen through a step; a
teacher that does not fit the run stops before training."""

import csv
import json
import re

import pytest
import torch
from conftest import run_camexp as cli
from conftest import write_fashion_mnist
from hydra import compose, initialize_config_dir

from camexp.data.regularizers import Regularizer
from camexp.engine import train_one_epoch
from camexp.errors import UserError
from camexp.losses import ATLoss, CATKDLoss, CCMLoss, CrossEntropy, KDLoss, Objective
from camexp.main import CONFIG_DIR
from camexp.models.backbone import build_backbone
from camexp.models.teacher import FrozenTeacher
from camexp.run.record import RunRecord
from camexp.tasks import kd as kd_task

SMOKE = ["debug=smoke", "dataset.val_size=32", "batch_size=16", "progress=false", "device=cpu"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A debug=smoke classify run of resnet20 on tiny Fashion-MNIST files: (data dir, run dir)."""
    root = tmp_path_factory.mktemp("kd")
    data = write_fashion_mnist(root / "fmnist", n_train=160, n_test=48)
    run = root / "teacher"
    done = cli(
        *SMOKE, f"dataset.root={data}", "backbone=resnet20", "loss=[ce]", "tensorboard=false",
        f"hydra.run.dir={run}", cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return data, run


def test_kd_smoke_run_writes_every_file_and_logs_every_term(teacher_run, tmp_path):
    data, teacher = teacher_run
    run = tmp_path / "student"
    done = cli(
        *SMOKE, f"dataset.root={data}", "task=kd",  # no teacher architecture: the checkpoint's
        f"teacher.ckpt={teacher / 'checkpoints' / 'best.pt'}", "backbone=resnet8x4",
        "loss=[ce,cam,kd,ccm,at,catkd]", "loss.ce.weight=1.0",  # the references' CE weights differ
        "epochs=2", f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("results.json", "metrics.csv", "cams.png", "checkpoints/last.pt",
                 "checkpoints/best.pt", ".hydra/config.yaml"):  # fmt: skip
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for term in ("ce", "cam", "kd", "ccm", "at", "catkd"):
        assert f"train/{term}" in rows[0], term
        assert all(float(r[f"train/{term}"]) >= 0 for r in rows)
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed" and results["task"] == "kd"
    m = results["metrics"]
    for key in ("test/acc1", "test_best/acc1", "teacher/val/acc1"):
        assert key in m
    for p in (90, 95, 99):
        assert m[f"converge/epoch_{p}pct"] in (1, 2)
    assert results["teacher"]["name"] == "resnet20"
    assert results["teacher"]["ckpt"] == str(teacher / "checkpoints" / "best.pt")


def test_kd_without_teacher_is_one_line_and_exit_2(tmp_path):
    done = cli(*SMOKE, "task=kd", "loss=[ce,kd]", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "task=kd needs a teacher" in lines[0]


# ----------------------------------------------------------------------------- in-process errors
def compose_kd(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_kd(overrides, tmp_path):
    cfg = compose_kd(overrides)
    record = RunRecord(str(tmp_path / "run"), cfg, list(overrides))
    return kd_task.run(cfg, record)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["teacher.name=resnet32"],
         "has backbone=resnet20, this run has backbone=resnet32; set teacher.name=resnet20 or "
         "teacher.name=null"),
        (["dataset.mean=[0.5]"], "has mean=[0.286], this run has mean=[0.5]; the input normal"),
        (["dataset.subset.train=64", "dataset=digits28", "dataset.val_size=32"],
         "trained on fashion_mnist) has classes=[T-shirt/top"),
    ],
)  # fmt: skip
def test_teacher_checkpoint_mismatch_stops_before_training(teacher_run, tmp_path, extra, message):
    data, teacher = teacher_run
    base = [*SMOKE, f"dataset.root={data}", "task=kd", "loss=[ce,kd]",
            f"teacher.ckpt={teacher / 'checkpoints' / 'best.pt'}"]  # fmt: skip
    with pytest.raises(UserError, match=re.escape(message)):
        run_kd(base + extra, tmp_path)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_matching_teacher_name_is_accepted(teacher_run, tmp_path):
    data, teacher = teacher_run
    results = run_kd([*SMOKE, f"dataset.root={data}", "task=kd", "loss=[ce,kd]",
                      "teacher.name=resnet20", "tensorboard=false", "metrics=none",
                      f"teacher.ckpt={teacher / 'checkpoints' / 'best.pt'}"], tmp_path)  # fmt: skip
    assert results["status"] == "completed" and results["teacher"]["name"] == "resnet20"


def test_missing_checkpoint_and_classify_with_kd_term(tmp_path):
    with pytest.raises(UserError, match="task=kd needs a teacher: add teacher.ckpt=PATH"):
        run_kd([*SMOKE, "task=kd", "teacher.name=resnet56"], tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        run_kd([*SMOKE, "task=kd", f"teacher.ckpt={tmp_path}/no.pt"], tmp_path)
    from camexp.models.teacher import check_teacher_terms
    from camexp.training.model import build_loss

    with pytest.raises(UserError, match="kd need a teacher; use task=kd teacher.ckpt=PATH"):
        check_teacher_terms(build_loss(compose_kd(["loss=[ce,kd]"])), has_teacher=False)


# ----------------------------------------------------------------------------- frozen teacher
def test_teacher_gets_no_gradient_and_stays_in_eval_mode_through_a_step():
    torch.manual_seed(0)
    student = build_backbone("resnet8x4", 4, 1, 12, needs_cam=True)
    teacher = FrozenTeacher(build_backbone("resnet20", 4, 1, 12, needs_cam=True))
    teacher.train()  # a loop calling .train() must not flip it
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    objective = Objective(
        {"ce": CrossEntropy(), "kd": KDLoss(), "ccm": CCMLoss(), "at": ATLoss(),
         "catkd": CATKDLoss()}
    )  # fmt: skip
    batches = [(torch.randn(6, 1, 12, 12), torch.tensor([0, 1, 2, 3, 0, 1])) for _ in range(2)]
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    stats = train_one_epoch(
        student, objective, batches, optimizer, scheduler, Regularizer(4),
        torch.device("cpu"), epoch=0, teacher=teacher,
    )  # fmt: skip
    assert all(f"train/{n}" in stats for n in ("kd", "ccm", "at", "catkd"))
    assert student.training and not teacher.training
    assert not any(m.training for m in teacher.modules())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    after = teacher.state_dict()
    for key, value in before.items():  # BatchNorm running statistics included
        assert torch.equal(value, after[key]), key
    assert any(p.grad is not None for p in student.parameters())
