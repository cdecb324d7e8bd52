"""Shared fixtures that write tiny datasets in the official on-disk formats, and ``run_camexp``.

Images are class-dependent patterns plus noise, so a small network can learn them in a few steps
and its CAMs have a place to look: class k gets a bright bar or patch at a class-specific spot.
The writers are plain functions (import them from ``conftest``) with fixtures wrapping them.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def run_camexp(*args, cwd=None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m camexp ARGS`` as a user runs it: one-line errors (HYDRA_FULL_ERROR unset), and
    one OpenMP thread (the tensors are tiny and a loaded 2-core machine makes OpenMP spin)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "camexp", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def pytest_configure(config):
    """Under pytest-xdist each worker shares the cores with the others: one torch thread each."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def write_idx(path: str | Path, array: np.ndarray, gz: bool | None = None) -> Path:
    """Write ``array`` (uint8) as an IDX file; gzip it when ``gz`` (default: name ends in .gz)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.tobytes()
    if gz if gz is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def _balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % num_classes)


def _fmnist_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 noise with a 2-pixel bar: rows 3+5k for classes 0..4, columns 3+5(k-5) for 5..9."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        pos = 3 + 5 * (int(k) % 5)
        if k < 5:
            images[i, pos : pos + 2, 2:26] = rng.integers(200, 256, size=(2, 24))
        else:
            images[i, 2:26, pos : pos + 2] = rng.integers(200, 256, size=(24, 2))
    return images


def write_fashion_mnist(
    dir: str | Path, n_train: int = 64, n_test: int = 32, gz: bool = True, seed: int = 0
) -> str:
    """Write the four Fashion-MNIST IDX files (``{train,t10k}-...-ubyte[.gz]``) into ``dir``."""
    dir = Path(dir)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = _balanced_labels(n, 10, rng)
        write_idx(dir / f"{prefix}-images-idx3-ubyte{suffix}", _fmnist_images(labels, rng), gz)
        write_idx(dir / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return str(dir)


def _patch_images(labels: np.ndarray, num_classes: int, size: int, channels: int, rng):
    """Noise images with a bright patch in grid cell k (a ceil(sqrt(K)) grid) for class k."""
    g = math.ceil(math.sqrt(num_classes))
    cell = size // g
    images = rng.integers(0, 60, size=(len(labels), channels, size, size), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), g)
        images[i, :, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = 230
    return images


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(
    dir: str | Path, which: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0
) -> str:
    """Write tiny CIFAR pickles in the official layout under ``dir``; returns ``dir`` (the root).

    cifar10: ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` with keys
    data/labels and label_names. cifar100: ``cifar-100-python/{train,test,meta}`` with keys
    data/fine_labels/coarse_labels and fine_label_names/coarse_label_names.
    """
    if which not in ("cifar10", "cifar100"):
        raise ValueError(f"which must be cifar10 or cifar100, not {which!r}")
    rng = np.random.default_rng(seed)
    k = 10 if which == "cifar10" else 100

    def batch(n: int, name: str) -> dict:
        labels = _balanced_labels(n, k, rng)
        data = _patch_images(labels, k, 32, 3, rng).reshape(n, 3072)
        d = {"batch_label": name, "data": data, "filenames": [f"img_{i}.png" for i in range(n)]}
        if which == "cifar10":
            d["labels"] = labels.tolist()
        else:
            d["fine_labels"] = labels.tolist()
            d["coarse_labels"] = (labels // 5).tolist()
        return d

    root = Path(dir)
    if which == "cifar10":
        out = root / "cifar-10-batches-py"
        out.mkdir(parents=True, exist_ok=True)
        train = batch(n_train, "training batch")
        parts = np.array_split(np.arange(n_train), 5)
        for i, idx in enumerate(parts, start=1):
            _dump(
                out / f"data_batch_{i}",
                {
                    "batch_label": f"training batch {i} of 5",
                    "data": train["data"][idx],
                    "labels": [train["labels"][j] for j in idx],
                    "filenames": [train["filenames"][j] for j in idx],
                },
            )
        _dump(out / "test_batch", batch(n_test, "testing batch 1 of 1"))
        _dump(
            out / "batches.meta",
            {
                "num_cases_per_batch": -(-n_train // 5),
                "label_names": CIFAR10_NAMES,
                "num_vis": 3072,
            },
        )
    else:
        out = root / "cifar-100-python"
        out.mkdir(parents=True, exist_ok=True)
        _dump(out / "train", batch(n_train, "training batch 1 of 1"))
        _dump(out / "test", batch(n_test, "testing batch 1 of 1"))
        _dump(
            out / "meta",
            {
                "fine_label_names": [f"fine_{i:02d}" for i in range(100)],
                "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)],
            },
        )
    return str(root)


def write_imagefolder(dir: str | Path, classes: int = 3, per_class: int = 4, size: int = 16) -> str:
    """Write ``dir/{train,val}/class_<i>/<j>.png`` RGB images (patch in a class-specific cell)."""
    from PIL import Image

    root = Path(dir)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            labels = np.full(per_class, c)
            for j, img in enumerate(_patch_images(labels, classes, size, 3, rng)):
                Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{j}.png")
    return str(root)


@pytest.fixture
def tiny_fmnist(tmp_path) -> str:
    """Directory with gzipped Fashion-MNIST IDX files: 64 train, 32 test images."""
    return write_fashion_mnist(tmp_path / "fmnist")


@pytest.fixture
def tiny_cifar10(tmp_path) -> str:
    """Root directory holding a tiny ``cifar-10-batches-py/``."""
    return write_cifar(tmp_path / "cifar", "cifar10")


@pytest.fixture
def tiny_cifar100(tmp_path) -> str:
    """Root directory holding a tiny ``cifar-100-python/`` (200 train, 100 test images)."""
    return write_cifar(tmp_path / "cifar", "cifar100", n_train=200, n_test=100)


@pytest.fixture
def tiny_imagefolder(tmp_path) -> str:
    """Root directory with ``train/`` and ``val/`` image folders: 3 classes, 4 images each."""
    return write_imagefolder(tmp_path / "imagefolder")
