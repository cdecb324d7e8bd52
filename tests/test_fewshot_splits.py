"""The standard few-shot class splits and their readers, on tiny files in each official layout."""

import numpy as np
import pytest
import torch
from fewshot_fixtures import (
    CIFAR100_COARSE_OF_FINE,
    class_images,
    write_cifar100_named,
    write_mini_imagenet,
)
from transfer_fixtures import write_cub

from camexp.data.fewshot_splits import (
    CIFAR100_CLASSES,
    CIFAR100_SUPERCLASSES,
    CLASS_SPLITS,
    array_class_split,
    cub_fewshot,
    limit_per_class,
    mini_imagenet,
    resolve_class_split,
)
from camexp.errors import UserError


def test_superclass_table_matches_cifar100_coarse_labels():
    for coarse, (_, members) in enumerate(CIFAR100_SUPERCLASSES):
        fine = [k for k, c in enumerate(CIFAR100_COARSE_OF_FINE) if c == coarse]
        assert sorted(members) == [CIFAR100_CLASSES[k] for k in fine]


@pytest.mark.parametrize(
    "name, sizes",
    [("cifar_fs", (64, 16, 20)), ("fc100", (60, 20, 20)), ("fashion_mnist", (5, 0, 5))],
)
def test_split_sizes_and_disjoint(name, sizes):
    split = CLASS_SPLITS[name]
    parts = [split[p] for p in ("base", "val", "novel")]
    assert tuple(len(p) for p in parts) == sizes
    assert len(set().union(*parts)) == sum(sizes)


def test_cifar_fs_and_fc100_members():
    fs = CLASS_SPLITS["cifar_fs"]
    assert {"baby", "worm", "whale", "poppy"} <= set(fs["novel"])
    assert {"otter", "sea", "cattle"} <= set(fs["val"])
    assert {"apple", "tulip", "cloud"} <= set(fs["base"])
    fc = CLASS_SPLITS["fc100"]
    # test superclasses 0, 7, 12, 14: aquatic mammals, insects, medium mammals, people
    assert {"beaver", "bee", "fox", "baby"} <= set(fc["novel"])
    # val superclasses 8, 11, 13, 16: carnivores, omnivores, invertebrates, small mammals
    assert {"bear", "camel", "crab", "hamster"} <= set(fc["val"])
    assert "aquarium_fish" in fc["base"] and "tractor" in fc["base"]


def test_split_naming_missing_class_is_a_user_error():
    with pytest.raises(UserError, match="not in the dataset on disk"):
        resolve_class_split({"base": ["apple"], "novel": ["unicorn"]}, CIFAR100_CLASSES)
    with pytest.raises(UserError, match="both the base and novel"):
        resolve_class_split({"base": ["apple"], "novel": ["apple"]}, CIFAR100_CLASSES)


def test_cifar_fs_reader_remaps_and_pools(tmp_path):
    root = write_cifar100_named(tmp_path, per_class_train=2, per_class_test=1)
    train = array_class_split("cifar100", root, "train", "cifar_fs")
    assert train.classes == CLASS_SPLITS["cifar_fs"]["base"]
    assert len(train) == 64 * 2 and set(train.labels.tolist()) == set(range(64))
    test = array_class_split("cifar100", root, "test", "cifar_fs")
    assert len(test) == 64
    novel = array_class_split("cifar100", root, "novel", "cifar_fs")
    assert len(novel) == 20 * 3  # train + test pooled
    # each remapped label still points at the right original class (its patch position)
    for new, name in enumerate(novel.classes[:3]):
        k = CIFAR100_CLASSES.index(name)
        img = novel.images[novel.labels == new][0]
        expected = torch.from_numpy(class_images([k])[0])
        assert torch.equal(img[:, expected[0] == 220], expected[:, expected[0] == 220])


def test_fc100_reader(tmp_path):
    root = write_cifar100_named(tmp_path, per_class_train=1, per_class_test=1)
    val = array_class_split("cifar100", root, "val", "fc100")
    assert len(val.classes) == 20 and len(val) == 40


def test_mini_imagenet_both_layouts_and_holdout(tmp_path):
    for layout in ("flat", "folders"):
        root = write_mini_imagenet(tmp_path / layout, (3, 2, 3), per_class=10, layout=layout)
        train = mini_imagenet(root, "train", holdout=0.2)
        test = mini_imagenet(root, "test", holdout=0.2)
        assert train.classes == test.classes == ["n00000000", "n00000001", "n00000002"]
        assert len(train) == 24 and len(test) == 6
        assert not set(train.paths) & set(test.paths)
        novel = mini_imagenet(root, "novel")
        assert novel.classes == ["n00000005", "n00000006", "n00000007"] and len(novel) == 30
        image, label = novel[0]
        assert image.size == (16, 16) and label == 0


def test_mini_imagenet_missing_class_names_it(tmp_path):
    root = write_mini_imagenet(tmp_path, (2, 1, 2), per_class=2, layout="folders")
    (tmp_path / "test.csv").write_text("filename,label\nn0000009900000001.jpg,n00000099\n")
    with pytest.raises(UserError, match="class n00000099 named in novel split file is not on disk"):
        mini_imagenet(root, "novel")


def test_cub_split_by_class_index(tmp_path):
    write_cub(tmp_path, classes=8, per_class=4)  # the official train/test lists, pooled here
    root = str(tmp_path)
    novel = cub_fewshot(root, "novel")
    val = cub_fewshot(root + "/CUB_200_2011", "val")
    train = cub_fewshot(root, "train", holdout=0.25)
    # 0-based index i: base i % 2 == 0, val i % 4 == 1, novel i % 4 == 3
    assert novel.classes == ["004.Bird_4", "008.Bird_8"]
    assert val.classes == ["002.Bird_2", "006.Bird_6"]
    assert train.classes == ["001.Bird_1", "003.Bird_3", "005.Bird_5", "007.Bird_7"]
    assert len(novel) == 8 and len(train) == 4 * 3
    assert all(
        ("Bird_4_" in p) == (y == 0) for p, y in zip(novel.paths, novel.targets, strict=True)
    )


def test_cub_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="CUB-200-2011 not found"):  # the shared reader's message
        cub_fewshot(str(tmp_path), "novel")


def test_limit_per_class_keeps_the_first_images(tmp_path):
    root = write_cifar100_named(tmp_path, per_class_train=2, per_class_test=1)
    novel = array_class_split("cifar100", root, "novel", "cifar_fs")
    small = limit_per_class(novel, 2)
    assert np.bincount(small.labels.numpy()).tolist() == [2] * 20
