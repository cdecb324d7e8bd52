"""End to end through the command line: tiny Fashion-MNIST files, one epoch, real run folders.

Each run is a subprocess of ``python -m camexp`` exactly as a user types it. Accuracies in the
results are checked against an evaluation written here from the checkpoint and the raw IDX files.
"""

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_camexp as camexp
from conftest import write_fashion_mnist

from camexp.models.backbone import build_backbone

N_TRAIN, N_TEST, VAL = 64, 32, 16
# debug=smoke keeps 64 val images by default; the tiny set has 64 train images in all
COMMON = ["debug=smoke", "backbone=resnet20", f"dataset.val_size={VAL}", "metrics=none"]
MEAN, STD = 0.2860, 0.3530  # configs/dataset/fashion_mnist.yaml


def train(tmp: Path, data: str, *overrides) -> Path:
    run_dir = tmp / "run"
    done = camexp(*COMMON, f"hydra.run.dir={run_dir}", f"dataset.root={data}", *overrides, cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The in-process checks evaluate 32 tiny images; threads only add OpenMP spinning."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> str:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=N_TRAIN, n_test=N_TEST)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fmnist) -> Path:
    """The default run: ResNet-20 with CE + CAM-loss (alpha 1)."""
    return train(tmp_path_factory.mktemp("classify"), fmnist)


# ----------------------------------------------------------------------------- the run folder
def test_classify_writes_every_run_folder_file(trained):
    for name in [
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "camexp.log",
        "metrics.csv",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "cams.png",
        "results.json",
    ]:
        assert (trained / name).is_file(), f"{name} is missing from the run folder"
    assert list((trained / "tensorboard").rglob("events.out.tfevents.*"))
    saved = (trained / ".hydra/config.yaml").read_text()
    assert "val_size: 16" in saved and "fmnist" in saved  # the command line's overrides
    assert "test acc1" in (trained / "camexp.log").read_text()
    png = (trained / "cams.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 500


def test_metrics_csv_has_one_row_with_every_loss_part(trained):
    rows = read_csv(trained / "metrics.csv")
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    row = rows[0]
    for column in [
        "train/loss",
        "train/ce",
        "train/cam",
        "train/acc1",
        "lr",
        "val/loss",
        "val/acc1",
        "val/acc5",
        "epoch_time_s",
    ]:
        assert column in row and row[column] != "", f"metrics.csv lacks {column}"
    value = {k: float(v) for k, v in row.items() if v not in ("", None)}
    # L = L_ce + 1.0 * L_cam, averaged over the same batches (6 significant digits in the CSV)
    assert value["train/loss"] == pytest.approx(value["train/ce"] + value["train/cam"], rel=1e-4)
    assert 0 < value["train/cam"] < 1  # an L1 distance between maps in [0, 1]
    # percentages over 16 val images: multiples of 6.25
    assert 0 <= value["val/acc1"] <= value["val/acc5"] <= 100
    assert value["val/acc1"] / 6.25 == pytest.approx(round(value["val/acc1"] / 6.25))
    assert value["epoch_time_s"] > 0


def test_tensorboard_holds_the_scalars_and_the_cam_pictures(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # one TensorBoard run per job, named by its overrides, holding the hparams too (#16)
    (run,) = {p.parent for p in (trained / "tensorboard").rglob("events.out.tfevents.*")}
    assert run.parent == trained / "tensorboard" and "val_size=16" in run.name
    main = EventAccumulator(str(run))
    main.Reload()
    scalars, images = main.Tags()["scalars"], main.Tags()["images"]
    for tag in ["train/loss", "train/ce", "train/cam", "lr", "val/acc1"]:
        assert tag in scalars, f"TensorBoard lacks the {tag} scalar"
    assert any("cam" in tag for tag in images), images
    csv_row = read_csv(trained / "metrics.csv")[0]
    event = main.Scalars("train/cam")[0]
    assert event.step == 1 and event.value == pytest.approx(float(csv_row["train/cam"]), rel=1e-4)
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = main.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["loss.cam.norm"].string_value == "minmax"  # every loss.cam.* option
    assert hparams["dataset.val_size"].number_value == 16  # every override, short


def test_checkpoints_are_plain_data_and_load(trained):
    for name in ("last", "best"):
        state = torch.load(trained / "checkpoints" / f"{name}.pt", weights_only=True)
        assert state["format"] == "camexp-checkpoint-v1"
        assert state["epoch"] == 1
        spec = state["meta"]["model"]  # the checkpoint contract (docs/design.md §5)
        assert spec["backbone"] == "resnet20" and spec["num_classes"] == 10
        model = build_backbone("resnet20", 10, 1, 28, needs_cam=True)
        model.load_state_dict(state["model"])  # strict: every key matches
        assert state["config"]["loss"]["cam"]["weight"] == 1.0


def test_results_json_schema(trained):
    res = results(trained)
    assert res["status"] == "completed" and res["task"] == "classify"
    assert res["epochs_completed"] == 1
    for key in ["train_images_per_s", "wall_time_s", "peak_rss_mb", "overrides", "config"]:
        assert key in res, f"results.json lacks {key}"
    assert set(res["versions"]) >= {"camexp", "torch", "timm", "git"}
    assert f"dataset.val_size={VAL}" in res["overrides"]
    assert res["config"]["backbone"]["name"] == "resnet20"
    m = res["metrics"]
    for key in ["test/acc1", "test/acc5", "test/loss", "val/acc1_best", "val/acc1_last"]:
        assert isinstance(m[key], int | float), f"metrics lacks {key}"
    for key in ["test/acc1", "test/acc5"]:
        assert 0 <= m[key] <= 100 and m[key] / (100 / N_TEST) == pytest.approx(
            round(m[key] / (100 / N_TEST)), abs=1e-3
        )  # percent of 32 test images
    assert m["val/acc1_best"] >= m["val/acc1_last"]
    csv_row = read_csv(trained / "metrics.csv")[0]
    assert m["val/acc1_last"] == pytest.approx(float(csv_row["val/acc1"]), abs=1e-3)


def read_idx_gz(path: Path, header: int) -> np.ndarray:
    return np.frombuffer(gzip.decompress(path.read_bytes()), dtype=np.uint8, offset=header)


def own_test_accuracy(checkpoint: Path, data: str) -> tuple[float, float]:
    """Top-1 accuracy and mean CE of a checkpoint on the raw test files, computed here."""
    root = Path(data)
    images = read_idx_gz(root / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(read_idx_gz(root / "t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    x = (torch.from_numpy(images.copy()).float() / 255.0 - MEAN) / STD
    model = build_backbone("resnet20", 10, 1, 28, needs_cam=True)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    with torch.no_grad():
        logits = model.eval()(x).logits
    acc = 100.0 * (logits.argmax(1) == labels).float().mean().item()
    return acc, torch.nn.functional.cross_entropy(logits, labels).item()


def test_reported_test_accuracy_matches_an_independent_evaluation(trained, fmnist):
    m = results(trained)["metrics"]
    acc, loss = own_test_accuracy(trained / "checkpoints" / "best.pt", fmnist)
    assert m["test_best/acc1"] == pytest.approx(acc, abs=1e-3)
    assert m["test_best/loss"] == pytest.approx(loss, abs=1e-3)
    acc_last, _ = own_test_accuracy(trained / "checkpoints" / "last.pt", fmnist)
    assert m["test/acc1"] == pytest.approx(acc_last, abs=1e-3)


def test_eval_task_on_the_best_checkpoint(trained, fmnist, tmp_path):
    ckpt = trained / "checkpoints" / "best.pt"
    run_dir = train(tmp_path, fmnist, "task=eval", f"ckpt={ckpt}")
    res = results(run_dir)
    assert res["status"] == "completed" and res["task"] == "eval"
    m = res["metrics"]
    assert "val/acc1" in m and "test/acc1" in m
    acc, _ = own_test_accuracy(ckpt, fmnist)
    assert m["test/acc1"] == pytest.approx(acc, abs=1e-3)
    assert m["val/acc1"] == pytest.approx(results(trained)["metrics"]["val/acc1_best"], abs=1e-3)
    assert (run_dir / "cams.png").is_file()
    assert not (run_dir / "checkpoints").exists()  # evaluation writes no weights


# ----------------------------------------------------------------------------- composition
def test_plain_ce_lifts_the_exact_cam_requirement(fmnist, tmp_path):
    """'loss=[ce]' drops the CAM term, so a head without an exact CAM (MobileNetV3's) trains."""
    run_dir = train(tmp_path, fmnist, "loss=[ce]", "backbone.name=mobilenetv3_small_050")
    row = read_csv(run_dir / "metrics.csv")[0]
    assert "train/ce" in row and "train/cam" not in row
    assert float(row["train/loss"]) == pytest.approx(float(row["train/ce"]), rel=1e-5)
    res = results(run_dir)
    assert res["status"] == "completed"
    assert list(res["config"]["loss"]) == ["ce"]


def test_cutmix_with_a_weighted_cam_term(fmnist, tmp_path):
    run_dir = train(
        tmp_path, fmnist, "regularizer=cutmix", "regularizer.prob=1.0", "loss.cam.weight=0.5"
    )
    row = {k: float(v) for k, v in read_csv(run_dir / "metrics.csv")[0].items() if v}
    # L = L_ce + 0.5 * L_cam, each part logged on its own
    assert row["train/loss"] == pytest.approx(row["train/ce"] + 0.5 * row["train/cam"], rel=1e-4)
    res = results(run_dir)
    assert res["status"] == "completed"
    assert res["config"]["regularizer"]["cutmix_alpha"] == 1.0
    assert res["config"]["loss"]["cam"]["weight"] == 0.5
