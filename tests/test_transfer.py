"""task=transfer: loading under a new head, linear probe and frozen BN, the head lr multiplier,
stage freezing, the one-line errors, a debug=smoke run from a debug=smoke checkpoint (the
architecture read from the checkpoint, not restated), and the same as a 2-process gloo run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_fashion_mnist
from hydra import compose, initialize_config_dir
from transfer_fixtures import camexp_cli

from camexp.errors import UserError
from camexp.losses import CAMLoss, CrossEntropy, Objective
from camexp.models import provenance
from camexp.models import surgery as transfer
from camexp.models.backbone import Output, build_backbone
from camexp.models.from_checkpoint import dataset_identity, model_spec
from camexp.run.checkpoint import load_checkpoint, save_checkpoint
from camexp.tasks import transfer as transfer_task
from camexp.training.optim import build_optimizer

CONFIGS = str(Path(__file__).resolve().parent.parent / "configs")


def net(name="resnet20", classes=10, chans=1, size=16, **kw):
    return build_backbone(name, classes, chans, size, needs_cam=True, **kw)


def source_checkpoint(path, name="resnet20", classes=10, chans=1, **kw) -> dict:
    torch.manual_seed(1)
    model = net(name, classes, chans, **kw)
    for m in model.modules():  # non-trivial BN statistics, so "loaded" is distinguishable
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    spec = model_spec(backbone=name, kwargs={}, small_input_stem=False, in_chans=chans,
                      num_classes=classes, image_size=16, mean=[0.5] * chans, std=[0.25] * chans,
                      exact_cam=True)  # fmt: skip
    meta = {"model": spec, "dataset": dataset_identity("src", [str(i) for i in range(classes)])}
    state = {"model": model.state_dict(), "meta": meta, "epoch": 3, "config": {}}
    save_checkpoint(str(path), state)
    return state["model"]


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("config", ["task=transfer", *overrides])


# ----------------------------------------------------------------------------- loading
def test_loaded_weights_equal_the_checkpoint_except_the_new_head(tmp_path):
    saved = source_checkpoint(tmp_path / "src.pt")
    torch.manual_seed(2)
    model = net(classes=5)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("model.fc.")}
    line = transfer.load_source_weights(
        model, load_checkpoint(str(tmp_path / "src.pt"))["model"], path="src.pt"
    )
    assert "\n" not in line and "model.fc" in line
    after = model.state_dict()
    body = [k for k in saved if not k.startswith("model.fc.")]
    assert len(body) > 50
    for key in body:
        assert torch.equal(after[key], saved[key]), key
    for key, value in fresh_head.items():
        assert torch.equal(after[key], value) and after[key].shape[0] == 5


def test_missing_and_unexpected_keys_in_one_line(tmp_path):
    saved = source_checkpoint(tmp_path / "src.pt")
    saved = dict(saved)
    saved.pop("model.layer1.0.conv1.weight")
    saved["model.extra.weight"] = torch.zeros(1)
    with pytest.raises(UserError) as err:
        transfer.load_source_weights(net(classes=5), saved, path="src.pt")
    message = str(err.value)
    assert "\n" not in message
    assert "missing 1 keys (model.layer1.0.conv1.weight)" in message
    assert "unexpected 1 keys (model.extra.weight)" in message


def test_mis_shaped_tensor_is_named(tmp_path):
    source = {**net(classes=10).state_dict(), "model.conv1.weight": torch.zeros(16, 1, 5, 5)}
    with pytest.raises(UserError, match=r"shape mismatch in model.conv1.weight \(16, 1, 5, 5\)"):
        transfer.load_source_weights(net(classes=5), source, path="x")


def test_channels_need_the_adaptation_option(tmp_path):
    saved = source_checkpoint(tmp_path / "src.pt", chans=1)
    model = net(classes=5, chans=3)
    line = transfer.load_source_weights(model, saved, path="src.pt", source_chans=1, target_chans=3)
    assert "adapted model.conv1.weight to 3 channels" in line
    conv = model.state_dict()["model.conv1.weight"]  # (16, 3, 3, 3)
    # timm's adapt_input_conv for 1 -> 3: repeat the single channel and scale by 1/3, so a grey
    # image (equal channels) gives the same response as through the source conv
    expected = saved["model.conv1.weight"].repeat(1, 3, 1, 1) / 3
    assert torch.allclose(conv, expected)


# ----------------------------------------------------------------------------- modes
def one_step(model, lr=0.1):
    objective = Objective({"ce": CrossEntropy(), "cam": CAMLoss(weight=1.0)})
    groups = transfer.transfer_param_groups(
        model, lr=lr, head_lr_mult=1.0, weight_decay=5e-4, decay_norm_and_bias=False
    )
    optimizer = torch.optim.SGD(groups, momentum=0.9)
    model.train()
    images, labels = torch.randn(8, 1, 16, 16), torch.arange(8) % 5
    out: Output = model(images)
    total, _ = objective(out, None, torch.nn.functional.one_hot(labels, 5).float())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()


def test_linear_probe_keeps_backbone_and_bn_statistics_bit_identical():
    torch.manual_seed(0)
    model = net(classes=5)
    counts = transfer.setup_transfer(model, mode="linear_probe", bn="auto")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one_step(model)
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(k.startswith("model.fc.") for k in changed), changed
    assert counts["frozen_bn_layers"] == 21  # resnet20: stem + 9 blocks x 2 + 2 projections
    assert counts["trainable_parameters"] == 64 * 5 + 5


def test_finetune_bn_modes():
    torch.manual_seed(0)
    trained = net(classes=5)
    transfer.setup_transfer(trained, mode="finetune", bn="train")
    frozen = net(classes=5)
    frozen.load_state_dict(trained.state_dict())
    transfer.setup_transfer(frozen, mode="finetune", bn="frozen")
    key = "model.layer2.0.bn1.running_mean"
    start = trained.state_dict()[key].clone()
    one_step(trained)
    one_step(frozen)
    assert not torch.equal(trained.state_dict()[key], start)  # train mode updates statistics
    assert torch.equal(frozen.state_dict()[key], start)  # frozen keeps them ...
    assert not torch.equal(frozen.state_dict()["model.layer2.0.bn1.weight"], torch.ones(32))
    assert not frozen.model.layer2[0].bn1.training  # ... and model.train() cannot undo it


def test_freeze_stages_counts_and_limits():
    torch.manual_seed(0)
    model = net(classes=5)
    stages = transfer.backbone_stages(model.model, "fc.")
    assert [s[0] for s in stages] == [
        "conv1.weight",
        "layer1.0.conv1.weight",
        "layer2.0.conv1.weight",
        "layer3.0.conv1.weight",
    ]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    transfer.setup_transfer(model, mode="finetune", freeze_stages=2)
    one_step(model)
    after = model.state_dict()
    for key in before:
        same = torch.equal(before[key], after[key])
        frozen = key.startswith(("model.conv1.", "model.bn1.", "model.layer1."))
        assert same == frozen or key.endswith("num_batches_tracked"), key
    with pytest.raises(UserError, match=r"freeze_stages=5 but CifarResNet has 4 \(the stem and 3"):
        transfer.setup_transfer(net(classes=5), mode="finetune", freeze_stages=5)
    with pytest.raises(UserError, match=r"transfer.mode='probe'"):
        transfer.setup_transfer(net(classes=5), mode="probe")


def test_timm_stages_come_from_group_matcher():
    model = build_backbone("resnet18", 5, 3, 32, needs_cam=False)
    stages = transfer.backbone_stages(model.model, "fc.")
    assert len(stages) == 5 and stages[0] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert all(n.startswith("layer4.") for n in stages[4])


def test_head_lr_multiplier_reaches_the_optimizer():
    cfg = compose_cfg("optim.lr=0.02", "transfer.head_lr_mult=10", "transfer.freeze_stages=1")
    model = net(classes=5)
    transfer.setup_transfer(model, mode="finetune", freeze_stages=1)
    optimizer = build_optimizer(cfg, model, transfer_task.param_groups(cfg, model))
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == pytest.approx(
        {"backbone": 0.02, "backbone_no_decay": 0.02, "head": 0.2, "head_no_decay": 0.2}
    )
    head = model.classifier.weight
    assert any(
        head is p for g in optimizer.param_groups if g["name"] == "head" for p in g["params"]
    )
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.model.conv1.weight) not in in_optimizer  # frozen stem: not optimised
    decay = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decay["head"] == 5e-4 and decay["head_no_decay"] == 0.0


def test_source_summary_groups_by_pretraining(tmp_path):
    meta = {"model": {"backbone": "resnet20", "num_classes": 10, "in_chans": 1},
            "dataset": {"name": "fashion_mnist"}}  # fmt: skip
    state = {
        "epoch": 3,
        "meta": meta,
        "config": {
            "task": {"name": "classify"},
            "backbone": {"name": "resnet56"},  # the config may be stale; meta is the record
            "dataset": {"name": "stale"},
            "loss": {"ce": {"weight": 1.0}, "cam": {"weight": 0.5}},
            "seed": 2,
        },
    }
    summary = provenance.source_summary(state, "/x/best.pt", {"metrics": {"test/acc1": 90.0}})
    assert summary["loss"] == "ce+cam@0.5" and summary["loss_weights"]["cam"] == 0.5
    assert (summary["dataset"], summary["backbone"], summary["seed"]) == (
        "fashion_mnist",
        "resnet20",
        2,
    )
    assert summary["test_acc1"] == 90.0
    assert provenance.loss_label({"ce": 1.0, "cam": 0.0}) == "ce"


# ----------------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def smoke_source(tmp_path_factory):
    """A debug=smoke classify run on tiny Fashion-MNIST files: its folder."""
    tmp = tmp_path_factory.mktemp("source")
    data = write_fashion_mnist(tmp / "fm", n_train=160, n_test=40)
    run = camexp_cli(
        "debug=smoke", f"dataset.root={data}", "dataset.val_size=32", "dataset.subset.train=96",
        "backbone=resnet20", "cam_pictures=4", f"hydra.run.dir={tmp / 'run'}", cwd=tmp,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return tmp / "run"


def test_smoke_transfer_writes_every_run_folder_file(smoke_source, tmp_path):
    ckpt = smoke_source / "checkpoints" / "best.pt"
    run = camexp_cli(
        "task=transfer", "debug=smoke", "dataset=digits28", f"init.checkpoint={ckpt}",
        "backbone=resnet56",  # not restated knowledge: the architecture is the checkpoint's
        "transfer.head_lr_mult=10", "cam_pictures=4", f"hydra.run.dir={tmp_path / 't'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    folder = tmp_path / "t"
    for name in ("results.json", "metrics.csv", "camexp.log", "cams.png", ".hydra/config.yaml",
                 "checkpoints/last.pt", "checkpoints/best.pt"):  # fmt: skip
        assert (folder / name).is_file(), name
    assert list((folder / "tensorboard").iterdir())
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "completed" and results["task"] == "transfer"
    assert results["source"]["checkpoint"] == str(ckpt)
    assert results["source"]["loss"] == "ce+cam" and results["source"]["dataset"] == "fashion_mnist"
    assert results["transfer"]["mode"] == "finetune"
    assert 0 <= results["metrics"]["test/acc1"] <= 100
    state = load_checkpoint(str(folder / "checkpoints" / "last.pt"))
    assert state["meta"]["source"]["checkpoint"] == str(ckpt)
    assert state["meta"]["model"]["backbone"] == "resnet20"  # the source's, not backbone=resnet56
    assert state["meta"]["model"]["num_classes"] == 10
    assert state["meta"]["dataset"]["name"] == "digits28"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["init.checkpoint=/nonexistent/best.pt"],
            "checkpoint /nonexistent/best.pt does not exist",
        ),
        (["init.checkpoint=SRC", "optim.momentum=-1"], "optim: Invalid momentum value: -1"),
        (
            [
                "init.checkpoint=SRC",
                "dataset=imagefolder",
                "dataset.root=IMG",
                "dataset.val_size=0",
                "dataset.workers=0",
                "dataset.image_size=16",
                "batch_size=4",  # the folder's 4 images make one training batch
            ],
            "has in_chans=1, this run has in_chans=3; set init.adapt_channels=true",
        ),  # fmt: skip
        (["init.checkpoint=SRC", "transfer.freeze_stages=9"], "transfer.freeze_stages=9 but"),
        ([], "task=transfer needs a source"),
    ],
)
def test_bad_input_is_one_line_before_training(smoke_source, tmp_path, overrides, message):
    from conftest import write_imagefolder

    ckpt = str(smoke_source / "checkpoints" / "best.pt")
    images = write_imagefolder(tmp_path / "img", classes=2, per_class=2)
    overrides = [o.replace("SRC", ckpt).replace("IMG", images) for o in overrides]
    target = [] if any(o.startswith("dataset=") for o in overrides) else ["dataset=digits28"]
    run = camexp_cli(
        "task=transfer",
        "debug=smoke",
        *target,
        *overrides,
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr
    assert not (tmp_path / "r").exists()  # a user error leaves no run folder (issue 27 #7)


def test_two_process_gloo_transfer_completes(smoke_source, tmp_path):
    """transfer through torchrun: DDP-wrapped like every training task; rank 0 alone reports."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    ckpt = smoke_source / "checkpoints" / "best.pt"
    done = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "camexp", "task=transfer",
         "debug=smoke", "dataset=digits28", f"init.checkpoint={ckpt}", "batch_size=16",
         "dataset.subset.train=64", "tensorboard=false", "progress=false", "metrics=none",
         "transfer.freeze_stages=2", f"hydra.run.dir={tmp_path / 't'}"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "KeyError" not in done.stderr
    results = json.loads((tmp_path / "t" / "results.json").read_text())
    assert results["status"] == "completed" and results["epochs_completed"] == 1
    assert results["transfer"]["frozen_tensors"] > 0 and 0 <= results["metrics"]["test/acc1"] <= 100
    assert sorted(os.listdir(tmp_path / "t" / "checkpoints")) == ["best.pt", "last.pt"]
    state = load_checkpoint(str(tmp_path / "t" / "checkpoints" / "last.pt"))
    assert not any(k.startswith("module.") for k in state["model"])  # unwrapped from DDP


@pytest.mark.parametrize("content", ['{"status": "compl', "[1, 2]"])
def test_a_damaged_source_results_json_is_one_line(tmp_path, content):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(UserError, match="transfer source's .*results.json") as err:
        transfer_task.read_source_results(str(path))
    assert "\n" not in str(err.value)
    assert transfer_task.read_source_results(str(tmp_path / "absent.json")) is None
    path.write_text('{"status": "completed", "seed": 3}')
    assert transfer_task.read_source_results(str(path)) == {"status": "completed", "seed": 3}
