"""CamQuality on a tiny model and data; the --cams comparison PNG of two run folders."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_camexp, write_fashion_mnist
from PIL import Image

from camexp.data.cluttered import load_cluttered
from camexp.data.memory import InMemoryLoader
from camexp.data.sources import FASHION_MNIST_CLASSES
from camexp.errors import UserError
from camexp.metrics import CamQuality
from camexp.models.backbone import build_backbone
from camexp.models.from_checkpoint import dataset_identity, model_spec
from camexp.report.cams import compare_cams
from camexp.run.checkpoint import save_checkpoint

CANVAS = 32
MEAN, STD = (0.1,), (0.3,)


@pytest.fixture(scope="module")
def fm_root(tmp_path_factory) -> str:
    return write_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=20, n_test=12)


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone("resnet20", 10, 1, CANVAS, needs_cam=True).eval()


def tiny_data(root: str, with_boxes: bool = True):
    split = load_cluttered(root, "test", canvas=CANVAS, clutter=2, clutter_size=6)
    loader = InMemoryLoader(split.images, split.labels, 5, mean=MEAN, std=STD, train=False)
    return SimpleNamespace(
        test=loader, mean=MEAN, std=STD, test_boxes=split.boxes if with_boxes else None
    )


def test_cam_quality_reports_every_metric_in_range(fm_root):
    quality = CamQuality(images=7, cam_curve_interval=0.01, deletion_step=8)
    out = quality(tiny_model(), tiny_data(fm_root), torch.device("cpu"))
    for key in ("maxboxacc_v2", "maxboxacc_iou30", "maxboxacc_iou70", "top1_loc"):
        assert 0.0 <= out[f"test/{key}"] <= 100.0
    assert out["test/maxboxacc_iou30"] >= out["test/maxboxacc_iou50"] >= out["test/maxboxacc_iou70"]
    assert 0.0 <= out["test/avg_drop"] <= 100.0 and 0.0 <= out["test/increase_conf"] <= 100.0
    assert 0.0 <= out["test/deletion_auc"] <= 1.0 and 0.0 <= out["test/insertion_auc"] <= 1.0
    assert out["test/faithfulness_images"] == 7  # stops at `images`, across batches of 5


def test_cam_quality_switches(fm_root):
    model, cpu = tiny_model(), torch.device("cpu")
    no_boxes = CamQuality(images=3, deletion_step=16)(model, tiny_data(fm_root, False), cpu)
    assert "test/maxboxacc_v2" not in no_boxes and "test/avg_drop" in no_boxes
    boxes_only = CamQuality(faithfulness=False, cam_curve_interval=0.05)(
        model, tiny_data(fm_root), cpu
    )
    assert "test/maxboxacc_v2" in boxes_only and "test/avg_drop" not in boxes_only
    assert CamQuality(localization=False, faithfulness=False)(model, tiny_data(fm_root), cpu) == {}


def test_cam_quality_bad_options():
    with pytest.raises(UserError, match="metrics.images"):
        CamQuality(images=-1)
    with pytest.raises(UserError, match="iou_thresholds"):
        CamQuality(iou_thresholds=[50, 150])


def write_run(run_dir: str, root: str, seed: int) -> None:
    model = tiny_model(seed)
    dataset = {
        "name": "cluttered_fashion_mnist",
        "mean": list(MEAN),
        "std": list(STD),
        "source": {
            "_target_": "camexp.data.cluttered.load_cluttered",
            "root": root,
            "canvas": CANVAS,
            "clutter": 2,
            "clutter_size": 6,
        },
    }
    spec = model_spec(
        backbone="resnet20",
        kwargs={},
        small_input_stem=False,
        in_chans=1,
        num_classes=10,
        image_size=CANVAS,
        mean=MEAN,
        std=STD,
        exact_cam=True,
    )
    identity = dataset_identity("cluttered_fashion_mnist", FASHION_MNIST_CLASSES)
    meta = {"model": spec, "dataset": identity}
    config = {"dataset": dataset, "backbone": {"name": "resnet20", "drop_rate": 0.0}}
    path = os.path.join(run_dir, "checkpoints", "last.pt")
    state = {"epoch": 1, "model": model.state_dict(), "config": config, "meta": meta}
    save_checkpoint(path, state)


def test_compare_cams_writes_the_grid(fm_root, tmp_path):
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    for seed, run in enumerate(runs):
        write_run(run, fm_root, seed)
    out = tmp_path / "cmp" / "cams.png"
    fig = compare_cams(runs, str(out), images=4)
    # 4 rows; columns image + 2 runs x (CAM, CAAM), titled; one colorbar (#16)
    from camexp.report.pictures import tile

    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[:5] == ["image", "A: CAM (true class)", "A: CAAM", "B: CAM (true class)",
                         "B: CAAM"]  # fmt: skip
    assert len(texts) == 5 + 4 and texts[5].startswith("true: ")  # a label per row
    # one line per run: folder, overrides that differ from the defaults, weights and epoch
    assert fig._suptitle.get_text() == ("A = a: defaults; last weights, epoch 1\n"
                                        "B = b: defaults; last weights, epoch 1")  # fmt: skip
    with Image.open(out) as png:
        assert png.size[0] >= 400
    # the image column shows the ground-truth box in pure green
    first = tile(fig, 0, 0)  # (H, W, 3) in [0, 1]
    green = (first[..., 1] == 1) & (first[..., 0] == 0) & (first[..., 2] == 0)
    assert green.any()
    # the two runs' maps differ (different weights), the image column is shared
    assert not np.array_equal(tile(fig, 0, 1), tile(fig, 0, 3))


def test_compare_cams_refuses_a_folder_without_checkpoints(tmp_path):
    with pytest.raises(UserError, match="no checkpoints"):
        compare_cams([str(tmp_path)], str(tmp_path / "x.png"))


def test_compare_cams_refuses_different_datasets(fm_root, tmp_path):
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    for seed, run in enumerate(runs):
        write_run(run, fm_root, seed)
    state = torch.load(os.path.join(runs[1], "checkpoints", "last.pt"), weights_only=True)
    state["meta"]["dataset"]["name"] = "other"  # the checkpoint contract's dataset record
    torch.save(state, os.path.join(runs[1], "checkpoints", "last.pt"))
    with pytest.raises(UserError, match="one dataset"):
        compare_cams(runs, str(tmp_path / "x.png"))


def camexp(*args, cwd):
    return run_camexp("progress=false", "tensorboard=false", *args, cwd=cwd)


def test_train_then_eval_on_cluttered_data_report_cam_quality(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm", n_train=64, n_test=16)
    common = [
        "debug=smoke",
        "dataset=cluttered_fashion_mnist",
        f"dataset.root={root}",
        "dataset.source.canvas=32",
        "dataset.val_size=16",
        "metrics.images=4",
        "metrics.deletion_step=256",
        "metrics.cam_curve_interval=0.05",
    ]
    train = camexp(*common, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]
    for key in ("maxboxacc_v2", "top1_loc", "avg_drop", "insertion_auc"):
        assert f"test/{key}" in metrics, key
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    run = tmp_path / "eval"
    done = camexp(*common, "task=eval", f"ckpt={ckpt}", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    evaluated = json.loads((run / "results.json").read_text())["metrics"]
    # same weights, same test images: the same localization numbers
    assert evaluated["test/maxboxacc_v2"] == metrics["test/maxboxacc_v2"]
    assert (run / "cams.png").is_file()
