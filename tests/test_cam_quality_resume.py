"""The CAM metrics of a final test resume at the batch a stop reached (checkpoints/
cam_quality_partial.pt) and give the numbers of an uninterrupted pass; a partial file of other
weights, a damaged one or a crafted one is set aside and never runs code."""

from __future__ import annotations

import json
import os
import pickle
from types import SimpleNamespace

import pytest
import torch
from conftest import run_camexp, write_fashion_mnist

from camexp.data.cluttered import load_cluttered
from camexp.data.memory import InMemoryLoader
from camexp.metrics import CamQuality
from camexp.metrics import partial as partial_module
from camexp.models.backbone import build_backbone

CANVAS = 32
MEAN, STD = (0.1,), (0.3,)
OPTIONS = dict(images="all", cam_curve_interval=0.05, deletion_step=128)
CPU = torch.device("cpu")


class Stop(Exception):
    """Stands for the Stopped a SIGTERM raises where the program stands."""


class Counting(torch.nn.Module):
    """The net, counting its forward calls; raises Stop on the first call once ``armed``."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls, self.armed = net, 0, False

    def forward(self, x):
        if self.armed:
            self.armed = False
            raise Stop("stopped in the middle of a batch")
        self.calls += 1
        return self.net(x)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = write_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=20, n_test=12)
    split = load_cluttered(root, "test", canvas=CANVAS, clutter=2, clutter_size=6)
    loader = InMemoryLoader(split.images, split.labels, 4, mean=MEAN, std=STD, train=False)
    return SimpleNamespace(test=loader, mean=MEAN, std=STD, test_boxes=split.boxes)


def model(seed: int = 0) -> Counting:
    torch.manual_seed(seed)
    return Counting(build_backbone("resnet20", 10, 1, CANVAS, needs_cam=True).eval())


def stop_after(monkeypatch, net: Counting, phase: str, batches: int) -> None:
    """Arm ``net`` to stop inside the batch after the ``batches``-th save of ``phase``."""
    monkeypatch.setattr(partial_module, "SAVE_EVERY_S", 0.0)  # save after every batch
    original = partial_module.PartialState.update

    def update(self, name, sums, force=False):
        original(self, name, sums, force)
        if name == phase and sums["batches"] == batches and not force:
            net.armed = True

    monkeypatch.setattr(partial_module.PartialState, "update", update)


@pytest.mark.parametrize("phase", ["boxes", "faith"])
def test_a_stop_in_the_metrics_resumes_at_its_batch_with_the_uninterrupted_numbers(
    data, tmp_path, monkeypatch, phase
):
    whole = model()
    expected = CamQuality(**OPTIONS)(whole, data, CPU)
    assert expected["test/faithfulness_images"] == 12  # 3 batches of 4 in each phase

    path = str(tmp_path / "cam_quality_partial.pt")
    stopped = model()
    with monkeypatch.context() as patch:
        stop_after(patch, stopped, phase, batches=1)
        with pytest.raises(Stop):
            CamQuality(**OPTIONS)(stopped, data, CPU, partial=path)
    assert os.path.isfile(path)

    resumed = model()
    again = CamQuality(**OPTIONS)(resumed, data, CPU, partial=path)
    assert again == expected
    # the batch summed before the stop is not measured again: fewer forward passes than a
    # whole pass (a whole faithfulness batch costs many, a boxes batch one)
    assert resumed.calls < whole.calls
    assert stopped.calls + resumed.calls == whole.calls  # every batch measured once in all


def test_finished_sums_are_reused_and_a_new_call_measures_nothing(data, tmp_path):
    path = str(tmp_path / "cam_quality_partial.pt")
    first = model()
    expected = CamQuality(**OPTIONS)(first, data, CPU, partial=path)
    second = model()
    assert CamQuality(**OPTIONS)(second, data, CPU, partial=path) == expected
    assert second.calls == 0  # a run stopped after the metrics but before results.json


def test_sums_of_other_weights_or_options_are_set_aside(data, tmp_path):
    path = str(tmp_path / "cam_quality_partial.pt")
    CamQuality(**OPTIONS)(model(seed=1), data, CPU, partial=path)  # other weights' sums
    other = model(seed=0)
    expected = CamQuality(**OPTIONS)(model(seed=0), data, CPU)
    assert CamQuality(**OPTIONS)(other, data, CPU, partial=path) == expected
    assert other.calls > 0

    changed = {**OPTIONS, "deletion_step": 256}  # same weights, another option
    fresh = CamQuality(**changed)(model(seed=0), data, CPU)
    again = model(seed=0)
    assert CamQuality(**changed)(again, data, CPU, partial=path) == fresh
    assert again.calls > 0 and fresh != expected


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_damaged_or_crafted_partial_file_is_set_aside_and_runs_no_code(
    data, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    expected = CamQuality(**OPTIONS)(model(), data, CPU)
    path = tmp_path / "cam_quality_partial.pt"
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": partial_module.FORMAT, "phases": {}, "key": Boom()}, crafted)
    for content in (b"not a torch file", pickle.dumps({"format": Boom()}), crafted.read_bytes()):
        path.write_bytes(content)
        with caplog.at_level("WARNING"):
            assert CamQuality(**OPTIONS)(model(), data, CPU, partial=str(path)) == expected
        assert "start over" in caplog.text
        assert not (tmp_path / "pwned").exists()
        caplog.clear()


def test_sums_with_the_right_key_but_the_wrong_shape_are_measured_again(data, tmp_path, caplog):
    path = str(tmp_path / "cam_quality_partial.pt")
    expected = CamQuality(**OPTIONS)(model(), data, CPU, partial=path)
    state = torch.load(path, weights_only=True)
    state["phases"]["faith"]["values"]["avg_drop"] = torch.zeros(3)  # 12 images seen
    state["phases"]["boxes"]["hits"] = torch.zeros(2, 5)
    torch.save(state, path)
    again = model()
    with caplog.at_level("WARNING"):
        assert CamQuality(**OPTIONS)(again, data, CPU, partial=path) == expected
    assert "malformed" in caplog.text and again.calls > 0


def test_a_training_run_keeps_its_metric_sums_beside_its_checkpoints(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm", n_train=64, n_test=16)
    run = tmp_path / "run"
    done = run_camexp(
        "progress=false", "tensorboard=false", "debug=smoke", "dataset=cluttered_fashion_mnist",
        f"dataset.root={root}", "dataset.source.canvas=32", "dataset.val_size=16",
        "metrics.images=4", "metrics.deletion_step=256", "metrics.cam_curve_interval=0.05",
        f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    saved = torch.load(run / "checkpoints" / "cam_quality_partial.pt", weights_only=True)
    assert saved["format"] == partial_module.FORMAT
    assert saved["phases"]["faith"]["seen"] == metrics["test/faithfulness_images"] == 4
    assert saved["phases"]["boxes"]["seen"] == 16  # every test canvas is boxed
