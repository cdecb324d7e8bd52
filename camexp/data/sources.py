"""Readers that return a whole dataset split as in-memory uint8 tensors.

Supported datasets and where their bytes come from:

- ``fashion_mnist``: Zalando's IDX files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``),
  from the Debian package ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), a
  ``data/`` folder, or torchvision's download layout ``FashionMNIST/raw``.
- ``digits``: scikit-learn's bundled 8x8 UCI handwritten digits (always offline).
- ``cifar10`` / ``cifar100``: the official "python version" pickles as torchvision unpacks them
  (``cifar-10-batches-py/``, ``cifar-100-python/``), read through a restricted unpickler.

Every failure a user can fix (missing, truncated or foreign files) raises ``UserError`` with one
line saying what was wrong and what to do.
"""

from __future__ import annotations

import difflib
import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from camexp.data.arrays import ArraySplit
from camexp.data.cifar import load_cifar
from camexp.errors import UserError

DATASETS = ("fashion_mnist", "digits", "cifar10", "cifar100")
SPLITS = ("train", "test")

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# Where the Debian package dataset-fashion-mnist installs the four gzipped IDX files.
SYSTEM_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FMNIST_PREFIX = {"train": "train", "test": "t10k"}


def _check_name(name: str) -> None:
    if name in DATASETS:
        return
    close = difflib.get_close_matches(str(name), DATASETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}.{hint}")


def load_split(name: str, root: str | None, split: str, download: bool = False) -> ArraySplit:
    """Read the whole ``split`` ("train" or "test") of dataset ``name`` into memory.

    ``root`` is the directory to look in (None: the defaults of each reader; ignored by
    ``digits``). ``download=True`` fetches a missing dataset with torchvision where a network
    exists.
    """
    _check_name(name)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} for {name}; valid splits: train, test")
    if name == "fashion_mnist":
        return _load_fashion_mnist(root, split, download)
    if name == "digits":
        return _load_digits(split)

    return load_cifar(name, root, split, download)


def split_train_val(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices ``0..n-1`` into disjoint (train, val) index tensors by a seeded permutation.

    The same ``(n, val_size, seed)`` always gives the same split; ``val_size=0`` gives an empty
    validation set.
    """
    if val_size < 0 or val_size >= n:
        raise UserError(
            f"dataset.val_size={val_size} must be >= 0 and smaller than the {n} training images"
        )
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    return perm[val_size:], perm[:val_size]


# ----------------------------------------------------------------------------- IDX / Fashion-MNIST

# IDX type codes (http://yann.lecun.com/exdb/mnist/): all multi-byte values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # not gzip, whatever the name says
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise UserError(
            f"{path} is a damaged gzip file ({e}); delete it and reinstall/redownload"
        ) from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (idx1 labels, idx3 images; gzipped or not) into a numpy array.

    Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
    dimension, then the values in C order.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(
            f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'none'}); "
            "delete it and reinstall/redownload"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise UserError(f"{path} has unknown IDX type code 0x{code:02x}; is it an IDX file?")
    if ndim == 0:
        raise UserError(f"{path} declares 0 dimensions; delete it and reinstall/redownload")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path} is truncated inside its header; delete it and reinstall")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    held = len(data) - header
    if held != expected:
        what = "is truncated" if held < expected else "has trailing bytes"
        raise UserError(
            f"{path} {what}: header says {'x'.join(map(str, dims))} but holds {held} bytes "
            f"(expected {expected}); delete it and reinstall/redownload"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _fmnist_stems() -> list[str]:
    return [
        f"{p}-{kind}-ubyte" for p in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")
    ]


def _fmnist_candidates(root: str | None) -> list[Path]:
    if root is None:
        return [
            Path(SYSTEM_FASHION_MNIST_DIR),
            Path("data/fashion-mnist"),
            Path("data/FashionMNIST/raw"),
        ]
    r = Path(root).expanduser()
    return [r, r / "fashion-mnist", r / "FashionMNIST" / "raw"]


def _search_fashion_mnist(root: str | None) -> Path | None:
    for d in _fmnist_candidates(root):
        if all(_idx_file(d, s) is not None for s in _fmnist_stems()):
            return d
    return None


def find_fashion_mnist(root: str | None) -> str:
    """Return the directory holding the four Fashion-MNIST IDX files, or raise UserError.

    root None searches /usr/share/datasets/fashion-mnist (Debian ``dataset-fashion-mnist``),
    ./data/fashion-mnist and ./data/FashionMNIST/raw; a given root searches root,
    root/fashion-mnist and root/FashionMNIST/raw.
    """
    found = _search_fashion_mnist(root)
    if found is not None:
        return str(found)
    searched = ", ".join(str(d) for d in _fmnist_candidates(root))
    raise UserError(
        f"Fashion-MNIST not found (searched {searched}); install it with "
        "`apt-get install dataset-fashion-mnist` (as root), set dataset.download=true where a "
        "network exists, or point dataset.root=DIR at a directory holding "
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
    )


def _download_fashion_mnist(root: str | None) -> None:
    import torchvision

    try:
        torchvision.datasets.FashionMNIST(root or "data", train=True, download=True)
    except (OSError, RuntimeError) as e:
        raise UserError(f"downloading Fashion-MNIST into {root or 'data'} failed: {e}") from None


def _load_fashion_mnist(root: str | None, split: str, download: bool) -> ArraySplit:
    if download and _search_fashion_mnist(root) is None:
        _download_fashion_mnist(root)
        root = root or "data"
    directory = Path(find_fashion_mnist(root))
    prefix = _FMNIST_PREFIX[split]
    img_path = _idx_file(directory, f"{prefix}-images-idx3-ubyte")
    lbl_path = _idx_file(directory, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(f"{img_path} holds {images.dtype} {images.shape}, not uint8 NxHxW images")
    if labels.ndim != 1:
        raise UserError(f"{lbl_path} holds shape {labels.shape}, not a 1-d label vector")
    if len(images) != len(labels):
        raise UserError(
            f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels; "
            "the files belong to different downloads"
        )
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise UserError(f"{lbl_path} has labels outside 0..9")
    return ArraySplit(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels),
        classes=list(FASHION_MNIST_CLASSES),
    )


# ----------------------------------------------------------------------------- digits


def _load_digits(split: str) -> ArraySplit:
    """sklearn's 1797 8x8 digits, pixels 0..16 scaled to 0..255; fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    labels = d.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0
    )
    idx = np.sort(train_idx if split == "train" else test_idx)
    return ArraySplit(
        images=torch.from_numpy(images[idx]).unsqueeze(1),
        labels=torch.from_numpy(labels[idx]),
        classes=[str(i) for i in range(10)],
    )
