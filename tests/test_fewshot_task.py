"""task=fewshot end to end on a tiny Fashion-MNIST: stage 1, stage 2, stage 2 alone, bad input."""

import json

import pytest
from conftest import run_camexp, write_fashion_mnist

EPISODE_KEYS = [
    f"fewshot/novel/5way_{k}shot/{c}/{m}"
    for k in (1, 2)
    for c in ("logreg", "prototype")
    for m in ("acc", "ci95")
]


def camexp(run_dir, *overrides):
    return run_camexp(f"hydra.run.dir={run_dir}", "progress=false", "tensorboard=false",
                      "device=cpu", *overrides)  # fmt: skip


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    # 25 images per novel class (train + test pooled), 10 per base class in train
    return write_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=200, n_test=50)


def small(root):
    return ["task=fewshot", "debug=smoke", f"dataset.root={root}", "dataset.val_size=20",
            "batch_size=16", "fewshot.shots=[1,2]", "fewshot.q_query=3",
            "fewshot.episodes=12"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fmnist):
    run_dir = tmp_path_factory.mktemp("fewshot_run")
    proc = camexp(run_dir, *small(fmnist))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir, proc


def test_smoke_run_writes_every_setting(trained):
    run_dir, proc = trained
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["task"] == "fewshot"
    m = results["metrics"]
    for key in EPISODE_KEYS:
        assert 0.0 <= m[key] <= 100.0, key
    assert "base/test/acc1" in m  # stage 1's base-class classification is kept
    assert results["fewshot"]["episodes"] == 12 and results["fewshot"]["n_way"] == 5
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert "novel 5-way 2-shot prototype" in proc.stdout + proc.stderr


def test_given_backbone_skips_training_and_scores_the_same_episodes(trained, fmnist, tmp_path):
    run_dir, _ = trained
    ckpt = run_dir / "checkpoints" / "last.pt"
    proc = camexp(tmp_path, *small(fmnist), f"fewshot.backbone_ckpt={ckpt}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((tmp_path / "results.json").read_text())["metrics"]
    first = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert {k: again[k] for k in EPISODE_KEYS} == {k: first[k] for k in EPISODE_KEYS}
    assert not (tmp_path / "checkpoints").exists()  # no training happened


def test_more_ways_than_novel_classes_fails_before_training(fmnist, tmp_path):
    proc = camexp(tmp_path, *small(fmnist), "fewshot.n_way=6")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("camexp: error: 6-way episodes need")
    assert not (tmp_path / "checkpoints").exists()
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_too_few_images_names_the_class(fmnist, tmp_path):
    proc = camexp(tmp_path, *small(fmnist), "fewshot.q_query=30")
    assert proc.returncode == 2 and "class 'Sandal' has 25 images" in proc.stderr


def test_backbone_from_its_checkpoint_alone(trained, fmnist, tmp_path):
    """backbone=resnet32 is not restated knowledge: the embedding net is the checkpoint's."""
    run_dir, _ = trained
    ckpt = run_dir / "checkpoints" / "last.pt"
    proc = camexp(tmp_path, *small(fmnist), f"fewshot.backbone_ckpt={ckpt}", "backbone=resnet32")
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((tmp_path / "results.json").read_text())["metrics"]
    first = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert {k: again[k] for k in EPISODE_KEYS} == {k: first[k] for k in EPISODE_KEYS}


def test_incompatible_backbone_checkpoint(fmnist, tmp_path):
    """A 3-channel backbone cannot embed 1-channel episodes: one line, before any embedding."""
    from camexp.models.backbone import build_backbone
    from camexp.models.from_checkpoint import dataset_identity, model_spec
    from camexp.run.checkpoint import save_checkpoint

    model = build_backbone("resnet20", 10, 3, 32, needs_cam=False)
    spec = model_spec(backbone="resnet20", kwargs={}, small_input_stem=False, in_chans=3,
                      num_classes=10, image_size=32, mean=[0.5] * 3, std=[0.25] * 3,
                      exact_cam=True)  # fmt: skip
    meta = {"model": spec, "dataset": dataset_identity("cifar10", list("abcdefghij"))}
    save_checkpoint(str(tmp_path / "rgb.pt"), {"model": model.state_dict(), "meta": meta})
    proc = camexp(tmp_path / "r", *small(fmnist), f"fewshot.backbone_ckpt={tmp_path / 'rgb.pt'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "backbone checkpoint" in line and "has in_chans=3, this run has in_chans=1" in line


def test_dataset_without_class_split(fmnist, tmp_path):
    proc = camexp(tmp_path, "task=fewshot", "dataset=fashion_mnist", f"dataset.root={fmnist}")
    assert proc.returncode == 2 and "has no few-shot class split" in proc.stderr
