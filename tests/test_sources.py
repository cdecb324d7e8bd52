"""Tests for camexp.data.sources: IDX, Fashion-MNIST search, digits, CIFAR pickles, splits."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR10_NAMES, write_cifar, write_fashion_mnist, write_idx
from omegaconf import OmegaConf

from camexp.data import sources
from camexp.data.sources import (
    find_fashion_mnist,
    load_split,
    read_idx,
    split_train_val,
)
from camexp.errors import UserError

# ----------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    path = write_idx(tmp_path / name, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, arr)
    labels = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l-idx1-ubyte", labels)), labels)


def test_idx_truncated_names_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        UserError, match=r"train-images-idx3-ubyte is truncated: header says 4x28x28"
    ):
        read_idx(path)


def test_idx_truncated_gzip_and_garbage(tmp_path):
    gz = write_idx(tmp_path / "a-idx3-ubyte.gz", np.ones((50, 28, 28), np.uint8))
    gz.write_bytes(gz.read_bytes()[:40])
    with pytest.raises(UserError, match="a-idx3-ubyte.gz"):
        read_idx(gz)
    junk = tmp_path / "b-idx1-ubyte"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(UserError, match="b-idx1-ubyte is not an IDX file"):
        read_idx(junk)


def test_fmnist_mismatched_counts(tmp_path):
    d = Path(write_fashion_mnist(tmp_path, n_train=20, n_test=10))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(UserError, match=r"t10k-images.*10 images.*t10k-labels.*9 labels"):
        load_split("fashion_mnist", str(d), "test")
    assert len(load_split("fashion_mnist", str(d), "train")) == 20


# ----------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_fmnist_explicit_root(tmp_path, gz):
    d = write_fashion_mnist(tmp_path / "fm", n_train=30, n_test=20, gz=gz)
    train = load_split("fashion_mnist", d, "train")
    test = load_split("fashion_mnist", d, "test")
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and test.labels.shape == (20,)
    assert torch.bincount(test.labels, minlength=10).tolist() == [2] * 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    # The root's conventional subfolders are searched too.
    write_fashion_mnist(tmp_path / "r2" / "FashionMNIST" / "raw", n_train=10, n_test=10)
    assert find_fashion_mnist(str(tmp_path / "r2")) == str(tmp_path / "r2/FashionMNIST/raw")


def test_tiny_fmnist_fixture(tiny_fmnist):
    split = load_split("fashion_mnist", tiny_fmnist, "train")
    assert split.images.shape == (64, 1, 28, 28)
    assert torch.bincount(split.labels, minlength=10).min() >= 6
    # Class 0 has its bar on rows 3-4, class 5 on columns 3-4.
    img0 = split.images[split.labels == 0][0, 0].float()
    img5 = split.images[split.labels == 5][0, 0].float()
    assert img0[3:5].mean() > 150 and img0[10:12].mean() < 60
    assert img5[:, 3:5].mean() > 150 and img5[:, 10:12].mean() < 60


def test_fmnist_default_search(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SYSTEM_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    write_fashion_mnist(tmp_path / "data" / "FashionMNIST" / "raw", n_train=10, n_test=10)
    assert find_fashion_mnist(None) == os.path.join("data", "FashionMNIST", "raw")
    write_fashion_mnist(tmp_path / "data" / "fashion-mnist", n_train=20, n_test=10)
    assert find_fashion_mnist(None) == os.path.join("data", "fashion-mnist")
    assert len(load_split("fashion_mnist", None, "train")) == 20


def test_fmnist_not_found_message(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SYSTEM_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        load_split("fashion_mnist", None, "train")
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("nowhere", "data/fashion-mnist", "apt-get install dataset-fashion-mnist"):
        assert part in msg
    assert "dataset.download=true" in msg and "dataset.root=" in msg
    with pytest.raises(UserError, match=str(tmp_path / "given")):
        find_fashion_mnist(str(tmp_path / "given"))


def test_fmnist_download_uses_torchvision(tmp_path, monkeypatch):
    import torchvision

    calls = []

    def fake_fashion_mnist(root, train=True, download=False):
        calls.append((root, download))
        write_fashion_mnist(Path(root) / "FashionMNIST" / "raw", n_train=10, n_test=10)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_fashion_mnist)
    split = load_split("fashion_mnist", str(tmp_path), "test", download=True)
    assert calls == [(str(tmp_path), True)] and len(split) == 10


def test_fmnist_debian_files():
    if not Path(sources.SYSTEM_FASHION_MNIST_DIR).is_dir():
        # scripts/test.sh installs the package, so under CI a missing one is a failure
        if os.environ.get("CI"):
            pytest.fail("dataset-fashion-mnist is not installed: scripts/test.sh should have")
        pytest.skip("dataset-fashion-mnist is not installed")
    assert find_fashion_mnist(None) == sources.SYSTEM_FASHION_MNIST_DIR
    for split, n in (("train", 60000), ("test", 10000)):
        s = load_split("fashion_mnist", None, split)
        assert s.images.shape == (n, 1, 28, 28) and s.images.dtype == torch.uint8
        assert torch.bincount(s.labels, minlength=10).tolist() == [n // 10] * 10
    mean = s.images.float().mean().item() / 255
    assert abs(mean - 0.2868) < 0.01  # the test set's mean; dataset_info holds the train one


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_and_determinism():
    train = load_split("digits", None, "train")
    test = load_split("digits", "/ignored", "test")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    assert torch.bincount(test.labels).min() >= 35  # stratified: ~36 per class
    again = load_split("digits", None, "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    assert train.classes == [str(i) for i in range(10)]
    mean = train.images.float().mean().item() / 255
    # the normalisation configs/dataset/digits.yaml declares
    digits_cfg = OmegaConf.load(Path(__file__).parents[1] / "configs/dataset/digits.yaml")
    assert abs(mean - digits_cfg.mean[0]) < 1e-3


# ----------------------------------------------------------------------------- CIFAR


def test_cifar10_round_trip(tiny_cifar10):
    train = load_split("cifar10", tiny_cifar10, "train")
    test = load_split("cifar10", tiny_cifar10, "test")
    assert train.images.shape == (50, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (20, 3, 32, 32) and train.classes == CIFAR10_NAMES
    # Batches are concatenated in order data_batch_1..5; compare with the raw pickles.
    raw = []
    for i in range(1, 6):
        with open(Path(tiny_cifar10) / "cifar-10-batches-py" / f"data_batch_{i}", "rb") as f:
            raw.append(pickle.load(f))
    labels = [lab for b in raw for lab in b["labels"]]
    data = np.concatenate([b["data"] for b in raw]).reshape(-1, 3, 32, 32)
    assert train.labels.tolist() == labels
    assert torch.equal(train.images, torch.from_numpy(data))
    assert torch.bincount(train.labels, minlength=10).tolist() == [5] * 10


def test_cifar100_round_trip(tiny_cifar100):
    train = load_split("cifar100", tiny_cifar100, "train")
    test = load_split("cifar100", tiny_cifar100, "test")
    assert train.images.shape == (200, 3, 32, 32) and test.labels.shape == (100,)
    assert len(train.classes) == 100 and train.classes[7] == "fine_07"
    with open(Path(tiny_cifar100) / "cifar-100-python" / "test", "rb") as f:
        raw = pickle.load(f)
    assert test.labels.tolist() == raw["fine_labels"]
    assert torch.equal(test.images, torch.from_numpy(raw["data"].reshape(-1, 3, 32, 32)))


def test_cifar_protocol_5_and_bytes_keys(tmp_path):
    root = write_cifar(tmp_path, "cifar100", n_train=100, n_test=100)
    path = tmp_path / "cifar-100-python" / "test"
    with open(path, "rb") as f:
        d = pickle.load(f)
    d = {k.encode(): v for k, v in d.items()}  # as pickle.load(encoding="bytes") would see it
    path.write_bytes(pickle.dumps(d, protocol=5))
    assert load_split("cifar100", root, "test").labels.tolist() == d[b"fine_labels"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_refuses_code(tiny_cifar10):
    path = Path(tiny_cifar10) / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({"data": _Evil(), "labels": []}, protocol=2))
    with pytest.raises(UserError, match=r"test_batch refers to (posix|nt|os)\.system"):
        load_split("cifar10", tiny_cifar10, "test")


def test_cifar_missing_and_corrupt(tmp_path, tiny_cifar10):
    with pytest.raises(UserError, match=r"cifar-10-batches-py.*dataset.download=true"):
        load_split("cifar10", str(tmp_path / "empty"), "train")
    path = Path(tiny_cifar10) / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="data_batch_3 is truncated or corrupt"):
        load_split("cifar10", tiny_cifar10, "train")
    (Path(tiny_cifar10) / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(UserError, match="test_batch is missing"):
        load_split("cifar10", tiny_cifar10, "test")
    gz = Path(write_cifar(tmp_path / "gz", "cifar100", 100, 100)) / "cifar-100-python" / "meta"
    gz.write_bytes(gzip.compress(gz.read_bytes()))
    with pytest.raises(UserError, match="meta is truncated or corrupt"):
        load_split("cifar100", str(tmp_path / "gz"), "test")


# ----------------------------------------------------------------------------- misc


def test_split_train_val():
    train, val = split_train_val(100, 20, seed=3)
    assert len(train) == 80 and len(val) == 20
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100))
    again = split_train_val(100, 20, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    assert not torch.equal(split_train_val(100, 20, seed=4)[1], val)
    train, val = split_train_val(10, 0, seed=0)
    assert len(train) == 10 and val.numel() == 0 and val.dtype == torch.int64
    with pytest.raises(UserError, match="dataset.val_size=10"):
        split_train_val(10, 10, seed=0)


def test_dataset_names():
    with pytest.raises(UserError, match="Did you mean 'fashion_mnist'"):
        load_split("fashion-mnist", None, "train")
    with pytest.raises(UserError, match="unknown split 'val'"):
        load_split("digits", None, "val")
