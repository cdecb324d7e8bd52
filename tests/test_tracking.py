"""The tracker (#15, #16): atomic files, rank 0 only, one TensorBoard run per job with short
hparams, the learning rate per step, and the launcher-plugin hint."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from camexp.run import tracking
from camexp.run.launchers import missing_launcher, missing_launcher_hint
from camexp.run.tracking import Tracker, atomic_path, hparams_of, run_name


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(OSError, match="disk full"), atomic_path(str(path)) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]
    tracking.write_json_atomic(str(path), {"status": "completed"})
    assert '"completed"' in path.read_text() and os.listdir(tmp_path) == ["results.json"]


def test_metrics_csv_is_rewritten_whole_and_keeps_new_columns(tmp_path):
    tracker = Tracker(str(tmp_path), tensorboard=False)
    tracker.log_epoch(1, {"train/loss": 1.5, "val/acc1": 50.0}, echo=False)
    tracker.log_epoch(2, {"train/loss": 1.25, "val/acc1": 60.0, "test/x": 1.0}, echo=False)
    rows = read_csv(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["test/x"] == "1"
    assert rows[0]["test/x"] == ""  # one header for every row
    tracker.rewrite([{"train/loss": 9.0}])  # a resumed run starts over from its history
    assert read_csv(tmp_path / "metrics.csv") == [{"epoch": "1", "train/loss": "9"}]
    assert sorted(os.listdir(tmp_path)) == ["metrics.csv"]  # no temp file left


def test_ranks_other_than_0_never_write(tmp_path, monkeypatch):
    (tmp_path / "metrics.csv").write_text("epoch,train/loss\n1,0.5\n")
    monkeypatch.setenv("RANK", "1")
    tracker = Tracker(str(tmp_path), tensorboard=True)
    tracker.rewrite([{"train/loss": 9.0}])
    tracker.log_epoch(2, {"train/loss": 1.0})
    assert (tmp_path / "metrics.csv").read_text() == "epoch,train/loss\n1,0.5\n"
    assert sorted(os.listdir(tmp_path)) == ["metrics.csv"]  # no tensorboard/ either


def test_hparams_are_every_override_and_every_loss_option_in_short_values():
    knobs = {
        "backbone": "resnet20",
        "regularizer": {"_target_": "camexp.data.regularizers.Regularizer", "cutmix_alpha": 1.0},
        "loss": {"cam": {"_target_": "camexp.losses.CAMLoss", "weight": 1.0, "norm": "minmax"}},
        "note": "a\nmulti-line   value " + "x" * 80,
    }
    overrides = ["loss.cam.weight=0.5", "regularizer=cutmix", "+extra=true", "hydra/launcher=x"]
    row = hparams_of(knobs, overrides)
    assert row["loss.cam.weight"] == 0.5 and row["loss.cam.norm"] == "minmax"
    assert row["regularizer"] == "cutmix"  # the option typed, not a dict dump
    assert row["regularizer.cutmix_alpha"] == 1.0 and row["extra"] is True
    assert not any("_target_" in k or k.startswith("hydra") for k in row)
    assert row["note"].startswith("a multi-line value x") and len(row["note"]) == 60


def test_run_names_come_from_the_overrides():
    assert run_name(["loss.cam.weight=1", "seed=2"]) == "loss.cam.weight=1,seed=2"
    assert run_name([]) == "defaults"
    name = run_name(["dataset.name=x y/z", "hydra.run.dir=z", "+progress=false"])
    assert name == "dataset.name=x_y_z"
    # keys that do not change results stay out of the name
    assert run_name(["dataset.root=/d", "metrics=none", "log_every=5", "seed=1"]) == "seed=1"


def test_one_tensorboard_run_holds_scalars_lr_per_step_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    tracker = Tracker(str(tmp_path), overrides=["loss.cam.weight=0", "seed=1"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for step in range(1, 4):
        optimizer.param_groups[0]["lr"] = 0.1 / step
        tracker.log_lr(step, optimizer)
    tracker.log_epoch(1, {"train/loss": 1.0, "lr": 0.0})
    tracker.add_hparams({"loss": {"cam": {"weight": 0.0, "norm": "max"}}},
                        {"hparam/test/acc1": 91.5})  # fmt: skip
    tracker.close()
    folders = {p.parent for p in (tmp_path / "tensorboard").rglob("events.out.tfevents.*")}
    assert folders == {tmp_path / "tensorboard" / "loss.cam.weight=0,seed=1"}  # one run
    events = EventAccumulator(str(folders.pop()))
    events.Reload()
    lr = events.Scalars("lr")
    assert [e.step for e in lr] == [1, 2, 3]  # per step, not the epoch's last value
    assert [e.value for e in lr] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert events.Scalars("hparam/test/acc1")[0].value == pytest.approx(91.5)
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["loss.cam.norm"].string_value == "max"
    assert hparams["seed"].number_value == 1 and hparams["loss.cam.weight"].number_value == 0


def test_a_missing_launcher_plugin_names_the_install_command():
    hydra_says = (
        "In 'hydra/launcher/parallel': Could not load 'hydra/launcher/joblib'.\n"
        "Config search path: ..."
    )
    hint = missing_launcher_hint(hydra_says)
    assert "hydra-joblib-launcher" in hint and "pip install -e '.[launchers]'" in hint
    assert "\n" not in hint
    assert "hydra-submitit-launcher" in missing_launcher_hint(
        "Could not load 'hydra/launcher/submitit_slurm'"
    )
    assert missing_launcher_hint("Could not load 'backbone/resnet5'") is None


def test_a_launcher_whose_plugin_is_missing_is_named_before_hydra_runs(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if "joblib" in name else real(name, *a))  # fmt: skip
    line = missing_launcher(["loss.cam.weight=0,1", "hydra/launcher=parallel", "-m"])
    assert "hydra-joblib-launcher" in line and "[launchers]" in line
    assert missing_launcher(["hydra/launcher=basic"]) is None
    assert missing_launcher(["seed=1"]) is None
