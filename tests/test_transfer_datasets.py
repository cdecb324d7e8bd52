"""Transfer targets: the fine-grained layout readers on tiny files written in each official
layout, the offline targets (digits28, Fashion-MNIST class splits), and their configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_fashion_mnist
from hydra import compose, initialize_config_dir
from transfer_fixtures import (
    class_colour,
    write_cub,
    write_fgvc_aircraft,
    write_flowers102,
    write_stanford_dogs,
)

from camexp.data import fine_grained, offline_targets
from camexp.errors import UserError

CONFIGS = str(Path(__file__).resolve().parent.parent / "configs")


def colour_of(image) -> int:
    """The class a fixture image encodes, recovered from its mean colour."""
    rgb = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(0)
    distances = [np.abs(rgb - np.array(class_colour(k))).sum() for k in range(27)]
    return int(np.argmin(distances))


# ----------------------------------------------------------------------------- CUB
def test_cub_reads_split_labels_boxes_and_pixels(tmp_path):
    expected = write_cub(tmp_path, classes=3, per_class=4)
    for split in ("train", "test"):
        ds = fine_grained.cub200(str(tmp_path), split)  # the parent of CUB_200_2011/
        rows = expected[split]
        assert ds.classes == expected["classes"]
        assert ds.targets == [label for _, label, _ in rows]
        assert [p.split("images/")[1] for p in ds.paths] == [rel for rel, _, _ in rows]
        assert ds.boxes.shape == (len(rows), 4)
        assert ds.boxes.tolist() == [box for _, _, box in rows]
        image, target = ds[1]
        assert colour_of(image) == target
    # root may also be the CUB_200_2011 folder itself
    assert len(fine_grained.cub200(str(tmp_path / "CUB_200_2011"), "train")) == 6


def test_cub_missing_image_and_bad_root(tmp_path):
    expected = write_cub(tmp_path)
    os.remove(tmp_path / "CUB_200_2011" / "images" / expected["test"][0][0])
    with pytest.raises(UserError, match=r"1 of 6 listed images are missing"):
        fine_grained.cub200(str(tmp_path), "test")
    with pytest.raises(UserError, match=r"CUB-200-2011 not found"):
        fine_grained.cub200(str(tmp_path / "nowhere"), "train")
    with pytest.raises(UserError, match=r"unknown split 'val'"):
        fine_grained.cub200(str(tmp_path), "val")


# ----------------------------------------------------------------------------- Stanford Dogs
def test_stanford_dogs_reads_mat_lists(tmp_path):
    expected = write_stanford_dogs(tmp_path, breeds=3, per_split=2)
    for split in ("train", "test"):
        ds = fine_grained.stanford_dogs(str(tmp_path), split)
        assert ds.classes == ["Breed_A", "Breed_B", "Breed_C"] == expected["classes"]
        assert ds.targets == [label for _, label in expected[split]]
        assert [p.split("Images/")[1] for p in ds.paths] == [f for f, _ in expected[split]]
        assert all(colour_of(ds[i][0]) == ds.targets[i] for i in range(len(ds)))


def test_stanford_dogs_label_mismatch_is_refused(tmp_path):
    from scipy.io import loadmat, savemat

    write_stanford_dogs(tmp_path)
    path = tmp_path / "stanford_dogs" / "test_list.mat"
    mat = loadmat(path)
    mat["labels"] = mat["labels"][::-1]
    savemat(path, {k: v for k, v in mat.items() if not k.startswith("__")})
    with pytest.raises(UserError, match=r"labels disagree with the breed folders"):
        fine_grained.stanford_dogs(str(tmp_path), "test")


# ----------------------------------------------------------------------------- FGVC-Aircraft
def test_fgvc_aircraft_splits_and_names_with_spaces(tmp_path):
    expected = write_fgvc_aircraft(tmp_path, variants=3, per_split=2)
    train = fine_grained.fgvc_aircraft(str(tmp_path), "train")  # trainval by default
    assert (
        train.classes == expected["classes"] == ["Model 0-000/B", "Model 1-100/B", "Model 2-200/B"]
    )
    assert [os.path.basename(p) for p in train.paths] == [
        f"{i}.jpg" for i, _ in expected["trainval"]
    ]
    assert train.targets == [v for _, v in expected["trainval"]]
    test = fine_grained.fgvc_aircraft(str(tmp_path), "test")
    assert test.targets == [v for _, v in expected["test"]]
    assert all(colour_of(test[i][0]) == test.targets[i] for i in range(len(test)))
    only_train = fine_grained.fgvc_aircraft(
        str(tmp_path), "train", splits={"train": "train", "test": "val"}
    )
    assert len(only_train) == len(expected["train"])
    with pytest.raises(UserError, match=r"annotation_level='model'"):
        fine_grained.fgvc_aircraft(str(tmp_path), "train", annotation_level="model")


# ----------------------------------------------------------------------------- Flowers-102
def test_flowers102_trainval_and_test(tmp_path):
    expected = write_flowers102(tmp_path, images=12)
    train = fine_grained.flowers102(str(tmp_path), "train")
    trainval = sorted(expected["trnid"] + expected["valid"])
    assert [int(p[-9:-4]) for p in train.paths] == [i for i, _ in trainval]
    assert train.targets == [label for _, label in trainval]
    test = fine_grained.flowers102(str(tmp_path), "test")
    assert test.targets == [label for _, label in expected["tstid"]]
    assert all(colour_of(test[i][0]) == test.targets[i] for i in range(len(test)))
    assert len(test.classes) == 102 and test.classes[0] == "pink primrose"


def test_folder_transform_is_applied(tmp_path):
    from camexp.data.folder import folder_transform

    write_flowers102(tmp_path)
    ds = fine_grained.flowers102(str(tmp_path), "test")
    ds.transform = folder_transform(False, 8, (0.5,) * 3, (0.25,) * 3)
    image, _ = ds[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32


# ----------------------------------------------------------------------------- offline targets
def test_digits28_is_digits_upsampled():
    from camexp.data.sources import load_split

    small = load_split("digits", None, "test")
    big = offline_targets.digits28("test")
    assert big.images.shape == (len(small), 1, 28, 28) and big.images.dtype == torch.uint8
    assert torch.equal(big.labels, small.labels) and big.classes == small.classes
    # nearest-neighbour upsampling to 16 = 2 x 8 repeats each source pixel in a 2x2 block
    nearest = offline_targets.digits28("test", size=16, mode="nearest")
    assert torch.equal(nearest.images[:, :, ::2, ::2], small.images)


def test_fashion_mnist_class_split_relabels(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm", n_train=100, n_test=20)
    from camexp.data.sources import load_split

    full = load_split("fashion_mnist", root, "train")
    part = offline_targets.fashion_mnist_classes("train", [7, 2], root=root)
    keep = (full.labels == 7) | (full.labels == 2)
    assert len(part) == int(keep.sum())
    assert torch.equal(part.labels, (full.labels[keep] == 2).long())  # 7 -> 0, 2 -> 1
    assert torch.equal(part.images, full.images[keep])
    assert part.classes == ["Sneaker", "Pullover"]
    with pytest.raises(UserError, match=r"distinct Fashion-MNIST classes"):
        offline_targets.fashion_mnist_classes("train", [1, 1], root=root)


def test_fashion_mnist_halves_are_disjoint():
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        a = compose("config", ["dataset=fashion_mnist_a"]).dataset.source.classes
        b = compose("config", ["dataset=fashion_mnist_b"]).dataset.source.classes
    assert sorted(list(a) + list(b)) == list(range(10))


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "name, writer",
    [
        ("cub200", write_cub),
        ("stanford_dogs", write_stanford_dogs),
        ("fgvc_aircraft", write_fgvc_aircraft),
        ("flowers102", write_flowers102),
    ],
)
def test_dataset_configs_instantiate_their_reader(tmp_path, name, writer):
    from hydra.utils import instantiate

    writer(tmp_path)
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("config", [f"dataset={name}", f"dataset.root={tmp_path}"])
    ds = instantiate(cfg.dataset.source, split="train")
    assert cfg.dataset.name == name
    assert len(ds) > 0 and len(ds.classes) > 1 and hasattr(ds, "transform")


@pytest.mark.parametrize(
    "experiment",
    sorted(p.stem for p in (Path(CONFIGS) / "experiment").glob("transfer_*.yaml")),
)
def test_transfer_experiments_compose(experiment):
    text = (Path(CONFIGS) / "experiment" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert "Command:" in text and "Expected:" in text
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("config", [f"experiment={experiment}"])
    if experiment != "transfer_fashion_pretrain":  # the sources are trained by task=classify
        assert cfg.task.name == "transfer" and cfg.transfer.mode in ("finetune", "linear_probe")
