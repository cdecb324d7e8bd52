"""The checkpoint contract (camexp/models/from_checkpoint.py): what a training run records, the one
build-from-checkpoint path, the one check against a run; task=eval and ``--cams`` through it; the
task dispatcher's fixed list of tasks."""

import json
import shutil

import pytest
import torch
from conftest import run_camexp, write_fashion_mnist

from camexp.errors import UserError
from camexp.models.backbone import build_backbone
from camexp.models.from_checkpoint import (
    check_checkpoint,
    dataset_identity,
    model_from_checkpoint,
    model_spec,
    read_checkpoint,
)
from camexp.run.checkpoint import load_checkpoint, save_checkpoint

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]  # fmt: skip
SMOKE = ["debug=smoke", "backbone=resnet20", "dataset.val_size=32", "batch_size=16",
         "progress=false", "device=cpu",
         "tensorboard=false", "metrics=none"]  # fmt: skip
PWNED: list = []


def pwned(**kwargs):
    """A ``_target_`` planted in a run's saved config: --cams must never call it."""
    PWNED.append(kwargs)
    raise AssertionError("instantiated a _target_ read from a checkpoint")


def spec(**changes) -> dict:
    values = dict(backbone="resnet20", kwargs={}, small_input_stem=False, in_chans=1,
                  num_classes=10, image_size=28, mean=[0.286], std=[0.353],
                  exact_cam=True)  # fmt: skip
    return model_spec(**{**values, **changes})


def write(path, model=None, meta=None) -> dict:
    torch.manual_seed(0)
    model = model or build_backbone("resnet20", 10, 1, 28, needs_cam=True)
    if meta is None:
        meta = {"model": spec(), "dataset": dataset_identity("fashion_mnist", FASHION)}
    state = {"model": model.state_dict(), "meta": meta, "epoch": 1}
    save_checkpoint(str(path), state)
    return state


# ----------------------------------------------------------------------------- reading
def test_read_refuses_checkpoints_without_the_contract(tmp_path):
    write(tmp_path / "old.pt", meta={"backbone": "resnet20", "num_classes": 10, "in_chans": 1})
    with pytest.raises(UserError, match="older camexp meta without its model spec") as err:
        read_checkpoint(str(tmp_path / "old.pt"), "teacher checkpoint")
    assert "\n" not in str(err.value) and str(err.value).startswith("teacher checkpoint ")
    save_checkpoint(str(tmp_path / "nometa.pt"), {"model": {}, "epoch": 1})
    with pytest.raises(UserError, match="has no meta record"):
        read_checkpoint(str(tmp_path / "nometa.pt"))
    save_checkpoint(str(tmp_path / "noweights.pt"), {"meta": {}, "epoch": 1})
    with pytest.raises(UserError, match="no model weights"):
        read_checkpoint(str(tmp_path / "noweights.pt"))
    partial = spec()
    del partial["mean"]
    write(tmp_path / "partial.pt", meta={"model": partial, "dataset": {"name": "x"}})
    with pytest.raises(UserError, match=r"lacks model.mean, dataset.classes"):
        read_checkpoint(str(tmp_path / "partial.pt"))


# ----------------------------------------------------------------------------- building
def test_model_from_checkpoint_is_the_saved_network(tmp_path):
    torch.manual_seed(3)
    original = build_backbone("resnet8x4", 10, 1, 28, needs_cam=True).eval()
    meta = {"model": spec(backbone="resnet8x4"), "dataset": dataset_identity("f", FASHION)}
    write(tmp_path / "a.pt", original, meta)
    state = read_checkpoint(str(tmp_path / "a.pt"))
    rebuilt = model_from_checkpoint(state, "a.pt", needs_cam=True, role="checkpoint")
    x = torch.randn(3, 1, 28, 28)
    assert not rebuilt.training and rebuilt.num_classes == 10
    torch.testing.assert_close(rebuilt(x).logits, original(x).logits)


def test_weights_that_do_not_fit_the_recorded_spec_are_one_line(tmp_path):
    meta = {"model": spec(backbone="resnet32"), "dataset": dataset_identity("f", FASHION)}
    write(tmp_path / "lie.pt", meta=meta)  # resnet20 weights, resnet32 recorded
    state = read_checkpoint(str(tmp_path / "lie.pt"))
    with pytest.raises(UserError, match="do not fit the resnet32 its meta records \\(") as err:
        model_from_checkpoint(state, "lie.pt", needs_cam=False, role="checkpoint")
    assert "\n" not in str(err.value)
    state["meta"]["model"]["exact_cam"] = False
    with pytest.raises(UserError, match="without an exact CAM"):
        model_from_checkpoint(state, "lie.pt", needs_cam=True, role="checkpoint")


# ----------------------------------------------------------------------------- checking
def test_check_passes_equal_facts_and_names_the_first_mismatch(tmp_path):
    state = write(tmp_path / "a.pt")
    same = {"classes": list(FASHION), "in_chans": 1, "num_classes": 10, "image_size": 28,
            "mean": [0.2860000001], "std": [0.353], "backbone": "resnet20"}  # fmt: skip
    check_checkpoint(state, "a.pt", role="checkpoint", expect=same)  # no error
    cases = [
        ({"mean": [0.5]}, "has mean=[0.286], this run has mean=[0.5]; the input normalisation"),
        ({"classes": [str(i) for i in range(10)]}, "has classes=[T-shirt/top, Trouser, Pullover, "
         "... (10 in all)], this run has classes=[0, 1, 2, ... (10 in all)]"),
        ({"backbone": "resnet56"}, "has backbone=resnet20, this run has backbone=resnet56"),
        ({"image_size": 32}, "has image_size=28, this run has image_size=32"),
        ({"dataset": "digits"}, "has dataset=fashion_mnist, this run has dataset=digits"),
    ]  # fmt: skip
    for expect, message in cases:
        with pytest.raises(UserError) as err:
            check_checkpoint(state, "a.pt", role="teacher checkpoint", expect=expect)
        text = str(err.value)
        assert message in text and "\n" not in text, text
        assert text.startswith("teacher checkpoint a.pt (resnet20 trained on fashion_mnist)")
    with pytest.raises(UserError, match="in_chans=1, this run has in_chans=3; adapt it"):
        check_checkpoint(state, "a.pt", role="c", expect={"in_chans": 3},
                         hints={"in_chans": "adapt it"})  # fmt: skip


# ----------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A debug=smoke classify run of resnet20 on tiny Fashion-MNIST files: (data, run dir)."""
    root = tmp_path_factory.mktemp("contract")
    data = write_fashion_mnist(root / "fm", n_train=160, n_test=48)
    done = run_camexp(*SMOKE, f"dataset.root={data}", f"hydra.run.dir={root / 'run'}", cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    return data, root / "run"


def test_training_writes_the_model_spec_and_dataset_identity(trained):
    _, run = trained
    meta = load_checkpoint(str(run / "checkpoints" / "last.pt"))["meta"]
    assert meta["model"] == {
        "backbone": "resnet20", "kwargs": {}, "small_input_stem": False, "in_chans": 1,
        "num_classes": 10, "image_size": 28, "mean": [pytest.approx(0.2860)],
        "std": [pytest.approx(0.3530)], "exact_cam": True,
    }  # fmt: skip
    assert meta["dataset"] == {"name": "fashion_mnist", "classes": FASHION}


def test_eval_needs_no_backbone_and_refuses_another_dataset(trained, tmp_path):
    data, run = trained
    ckpt = run / "checkpoints" / "best.pt"
    # backbone=resnet32 is not restated knowledge: the model is the checkpoint's resnet20
    done = run_camexp(*SMOKE, "task=eval", f"ckpt={ckpt}", f"dataset.root={data}",
                      "backbone=resnet32", f"hydra.run.dir={tmp_path / 'e'}",
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    trained_results = json.loads((run / "results.json").read_text())
    assert results["checkpoint_dataset"] == "fashion_mnist"
    # the same weights on the same test images: the training run's test_best accuracy
    assert results["metrics"]["test/acc1"] == trained_results["metrics"]["test_best/acc1"]

    other = run_camexp(*SMOKE, "task=eval", f"ckpt={ckpt}", "dataset=digits",
                       f"hydra.run.dir={tmp_path / 'd'}", cwd=tmp_path)  # fmt: skip
    assert other.returncode == 2
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and "trained on fashion_mnist" in lines[0], other.stderr
    assert "classes=[T-shirt/top" in lines[0] and "task.allow_other_dataset=true" in lines[0]

    allowed = run_camexp(*SMOKE, "task=eval", f"ckpt={ckpt}", "dataset=digits",
                         "task.allow_other_dataset=true", f"hydra.run.dir={tmp_path / 'a'}",
                         cwd=tmp_path)  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["status"] == "completed" and 0 <= results["metrics"]["test/acc1"] <= 100


def test_cams_builds_from_the_contract_and_never_instantiates_a_saved_target(trained, tmp_path):
    from camexp.report.cams import compare_cams

    _, run = trained
    runs = [tmp_path / "a", tmp_path / "b"]
    for copy in runs:
        shutil.copytree(run, copy)
        path = copy / "checkpoints" / "last.pt"
        state = torch.load(path, weights_only=True)
        # the attack: a run folder whose saved config names code to run
        state["config"]["dataset"]["source"]["_target_"] = "test_checkpoint_contract.pwned"
        state["config"]["backbone"] = {"name": "resnet56"}  # and a false architecture
        torch.save(state, path)
    fig = compare_cams([str(r) for r in runs], str(tmp_path / "cams.png"), images=3)
    assert PWNED == [] and (tmp_path / "cams.png").is_file() and fig is not None


def test_only_task_modules_are_tasks(tmp_path):
    done = run_camexp("task.name=wiring", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "unknown task 'wiring'; use one of classify, eval, fewshot, kd, transfer" in lines[0]
