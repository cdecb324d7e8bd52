"""CIFAR-10/100 in their official "python version" layout, as torchvision unpacks them
(``cifar-10-batches-py/``, ``cifar-100-python/``): pickles of numpy arrays, read through a
restricted unpickler that refuses any global but numpy's array reconstructors (a data file is
data, never code)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from camexp.data.arrays import ArraySplit
from camexp.errors import UserError


def _np_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _np_frombuffer():
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.numeric import _frombuffer
    return _frombuffer


# The only globals a CIFAR pickle may name: numpy's array/dtype reconstructors. _frombuffer is
# what numpy writes under pickle protocol 5, _codecs.encode what Python 3 writes for bytes under
# protocol 2 (the same allowance torch.load(weights_only=True) makes).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: __import__("codecs").encode,
}


class _DataUnpickler(pickle.Unpickler):
    """Unpickler that builds dicts, lists, strings and numpy arrays, and refuses any other code."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        getter = _ALLOWED_GLOBALS.get((module, name))
        if getter is None:
            raise UserError(
                f"{self.path} refers to {module}.{name}, which is not numpy array data; "
                "refusing to load it (a data file is data, never code)"
            )
        return getter()


def _load_pickle(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} is missing; delete its folder and set dataset.download=true")
    try:
        with open(path, "rb") as f:
            obj = _DataUnpickler(f, path).load()
    except UserError:
        raise
    except Exception as e:  # any unpickling failure means a damaged file
        raise UserError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}); "
            "delete it and redownload (dataset.download=true)"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a CIFAR dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_layout(name: str) -> tuple[str, dict[str, list[str]], str, str, str]:
    """(folder, files per split, meta file, labels key, names key) of the official layout."""
    if name == "cifar10":
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        return "cifar-10-batches-py", files, "batches.meta", "labels", "label_names"
    files = {"train": ["train"], "test": ["test"]}
    return "cifar-100-python", files, "meta", "fine_labels", "fine_label_names"


def _download_cifar(name: str, root: str, split: str) -> None:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        cls(root, train=split == "train", download=True)
    except (OSError, RuntimeError) as e:
        raise UserError(f"downloading {name} into {root} failed: {e}") from None


def load_cifar(name: str, root: str | None, split: str, download: bool) -> ArraySplit:
    """CIFAR-10/100 python pickles: dicts with ``data`` uint8 (N, 3072) and a label list."""
    root = root or "data"
    folder, files, meta_name, label_key, names_key = _cifar_layout(name)
    directory = Path(root).expanduser() / folder
    if download and not directory.is_dir():
        _download_cifar(name, root, split)
    if not directory.is_dir():
        wanted = ", ".join(files["train"] + files["test"] + [meta_name])
        raise UserError(
            f"{name} not found: expected {directory}/ holding {wanted} (torchvision's layout); "
            "set dataset.root=DIR to its parent, or dataset.download=true where a network exists"
        )
    meta_path = directory / meta_name
    meta = _load_pickle(meta_path)
    if names_key not in meta:
        raise UserError(f"{meta_path} has no {names_key!r} entry")
    classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta[names_key]]

    images, labels = [], []
    for fname in files[split]:
        path = directory / fname
        batch = _load_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise UserError(f"{path} lacks the 'data' or {label_key!r} entry")
        data = np.asarray(batch["data"])
        lab = np.asarray(batch[label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise UserError(f"{path} holds {data.dtype} {data.shape}, not uint8 (N, 3072) images")
        if lab.shape != (data.shape[0],):
            raise UserError(f"{path} holds {data.shape[0]} images but {lab.size} labels")
        if lab.size and (lab.min() < 0 or lab.max() >= len(classes)):
            raise UserError(f"{path} has labels outside 0..{len(classes) - 1}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return ArraySplit(
        images=torch.from_numpy(np.ascontiguousarray(np.concatenate(images))),
        labels=torch.from_numpy(np.concatenate(labels)),
        classes=classes,
    )
