"""No silent leaks (issue 27, items 2 and 3): a few-shot backbone that saw the novel classes is
refused, and whatever re-creates a checkpoint's validation split (task=eval, a transfer on the
same dataset, the KD teacher's val accuracy) uses the split the checkpoint held out."""

import json

import pytest
import torch
from conftest import run_camexp, write_fashion_mnist

from camexp.data.fewshot_splits import CLASS_SPLITS, seen_classes
from camexp.models.backbone import build_backbone
from camexp.models.from_checkpoint import dataset_identity, model_spec, split_identity
from camexp.run.checkpoint import save_checkpoint

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]  # fmt: skip
QUICK = ["progress=false", "device=cpu", "tensorboard=false", "metrics=none", "debug=smoke",
         "batch_size=16"]  # fmt: skip


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=200, n_test=50)


def checkpoint(path, classes=FASHION, split=None, dataset="fashion_mnist") -> str:
    """A resnet20 checkpoint (fresh weights) whose meta says it was trained on ``classes`` of
    ``dataset``, holding out ``split`` (None: an older checkpoint without meta.split)."""
    torch.manual_seed(0)
    model = build_backbone("resnet20", len(classes), 1, 28, needs_cam=True)
    spec = model_spec(backbone="resnet20", kwargs={}, small_input_stem=False, in_chans=1,
                      num_classes=len(classes), image_size=28, mean=[0.286], std=[0.353],
                      exact_cam=True)  # fmt: skip
    meta = {"model": spec, "dataset": dataset_identity(dataset, classes)}
    if split is not None:
        meta["split"] = split
    save_checkpoint(str(path), {"model": model.state_dict(), "meta": meta, "epoch": 3})
    return str(path)


def one_line_error(done) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [x for x in done.stderr.strip().splitlines() if x.startswith("camexp:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


# ----------------------------------------------------------------------------- few-shot (item 2)
def test_seen_classes_names_the_overlap_per_split():
    fm = CLASS_SPLITS["fashion_mnist"]
    assert seen_classes(FASHION, {"novel": fm["novel"]}) == {"novel": fm["novel"]}
    assert seen_classes(fm["base"], {"novel": fm["novel"], "val": fm["val"]}) == {}


FEWSHOT = ["task=fewshot", "dataset.val_size=20", "fewshot.shots=[1]", "fewshot.q_query=3",
           "fewshot.episodes=4", "fewshot.support_augmentations=0"]  # fmt: skip


def test_fewshot_refuses_a_backbone_trained_on_the_novel_classes(fmnist, tmp_path):
    ckpt = checkpoint(tmp_path / "all10.pt")
    done = run_camexp(*QUICK, *FEWSHOT, f"dataset.root={fmnist}", f"fewshot.backbone_ckpt={ckpt}",
                      f"hydra.run.dir={tmp_path / 'r'}")  # fmt: skip
    line = one_line_error(done)
    assert "was trained on 5 of the novel classes (Sandal, Shirt" in line, line
    assert "fewshot.allow_class_overlap=true" in line

    allowed = run_camexp(*QUICK, *FEWSHOT, f"dataset.root={fmnist}",
                         f"fewshot.backbone_ckpt={ckpt}", "fewshot.allow_class_overlap=true",
                         f"hydra.run.dir={tmp_path / 'a'}")  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "scored anyway" in allowed.stdout  # a warning in the log


# ----------------------------------------------------------------------------- splits (item 3)
def test_training_records_its_held_out_split(fmnist, tmp_path):
    done = run_camexp(*QUICK, f"dataset.root={fmnist}", "dataset.val_size=24",
                      "dataset.split_seed=5", f"hydra.run.dir={tmp_path / 'r'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    meta = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)["meta"]
    assert meta["split"] == {"val_size": 24, "split_seed": 5,
                             "subset": {"train": 256, "val": None, "test": 128}}  # fmt: skip


def test_eval_uses_the_checkpoints_split_and_refuses_a_stated_other(fmnist, tmp_path):
    split = split_identity(24, 5, {"train": None, "val": None, "test": 40})
    ckpt = checkpoint(tmp_path / "c.pt", split=split)
    done = run_camexp(*QUICK, "task=eval", f"ckpt={ckpt}", f"dataset.root={fmnist}",
                      f"hydra.run.dir={tmp_path / 'e'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["split"] == split  # not debug=smoke's val_size or subset

    stated = run_camexp(*QUICK, "task=eval", f"ckpt={ckpt}", f"dataset.root={fmnist}",
                        "dataset.val_size=30", f"hydra.run.dir={tmp_path / 's'}")  # fmt: skip
    line = one_line_error(stated)
    assert "has val_size=24, this run has val_size=30" in line and "dataset.val_size=24" in line


def test_eval_of_an_older_checkpoint_warns_and_uses_the_configs_split(fmnist, tmp_path):
    ckpt = checkpoint(tmp_path / "old.pt")
    done = run_camexp(*QUICK, "task=eval", f"ckpt={ckpt}", f"dataset.root={fmnist}",
                      "dataset.val_size=30", f"hydra.run.dir={tmp_path / 'e'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "records no validation split" in done.stdout  # a warning in the log
    assert json.loads((tmp_path / "e" / "results.json").read_text())["split"] is None


def test_transfer_on_the_sources_dataset_needs_its_split(fmnist, tmp_path):
    ckpt = checkpoint(tmp_path / "src.pt", split=split_identity(24, 5, {}))
    done = run_camexp(*QUICK, "task=transfer", f"init.checkpoint={ckpt}",
                      f"dataset.root={fmnist}", "dataset.val_size=30", "dataset.split_seed=5",
                      f"hydra.run.dir={tmp_path / 't'}")  # fmt: skip
    line = one_line_error(done)
    assert "source checkpoint" in line and "val_size=24, this run has val_size=30" in line


def test_kd_teacher_val_accuracy_needs_the_teachers_split(fmnist, tmp_path):
    ckpt = checkpoint(tmp_path / "teacher.pt", split=split_identity(24, 5, {}))
    base = [*QUICK, "task=kd", f"teacher.ckpt={ckpt}", f"dataset.root={fmnist}", "loss=[ce,kd]",
            "dataset.val_size=24"]  # fmt: skip
    done = run_camexp(*base, "dataset.split_seed=0", f"hydra.run.dir={tmp_path / 'k'}")
    line = one_line_error(done)
    assert "teacher checkpoint" in line and "split_seed=5, this run has split_seed=0" in line
    assert "task.eval_teacher=false" in line
