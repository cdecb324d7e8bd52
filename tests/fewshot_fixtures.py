"""Tiny few-shot datasets in their official on-disk layouts: CIFAR-100 pickles with the real class
names (CIFAR-FS and FC100 select classes by name), and miniImageNet's csv split over image
files (CUB-200-2011: tests/transfer_fixtures.write_cub). Class k's images carry a bright patch
in a class-specific cell."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from camexp.data.fewshot_splits import CIFAR100_CLASSES

# CIFAR-100 fine label -> coarse label, as the dataset's pickles store it (an independent copy of
# the hierarchy, to check CIFAR100_SUPERCLASSES against).
CIFAR100_COARSE_OF_FINE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip


def class_images(labels, size: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 (N, C, size, size): noise plus a bright 4x4 patch at a cell given by the label."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(len(labels), channels, size, size), dtype=np.uint8)
    cells = size // 4
    for i, k in enumerate(labels):
        r, c = divmod(int(k) % (cells * cells), cells)
        images[i, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 220
    return images


def write_cifar100_named(root, per_class_train: int = 2, per_class_test: int = 1) -> str:
    """``root/cifar-100-python/{train,test,meta}`` with the real fine and coarse names/labels."""
    out = Path(root) / "cifar-100-python"
    out.mkdir(parents=True, exist_ok=True)
    for name, per_class in (("train", per_class_train), ("test", per_class_test)):
        fine = np.repeat(np.arange(100), per_class)
        batch = {
            "data": class_images(fine, seed=per_class).reshape(len(fine), 3072),
            "fine_labels": fine.tolist(),
            "coarse_labels": [CIFAR100_COARSE_OF_FINE[k] for k in fine],
            "filenames": [f"{name}_{i}.png" for i in range(len(fine))],
        }
        with open(out / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {
        "fine_label_names": CIFAR100_CLASSES,
        "coarse_label_names": [f"c{i}" for i in range(20)],
    }
    with open(out / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return str(root)


def _save_png(path: Path, label: int, size: int = 16) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = class_images([label], size=size, seed=label)[0].transpose(1, 2, 0)
    Image.fromarray(img).save(path, format="PNG")


def write_mini_imagenet(root, classes=(3, 2, 3), per_class: int = 4, layout: str = "flat") -> str:
    """``root/{train,val,test}.csv`` (filename,label) naming ``classes`` wnids per split and
    ``per_class`` images each, stored flat in ``root/images/`` or in ``root/<wnid>/``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    label = 0
    for split, n in zip(("train", "val", "test"), classes, strict=True):
        lines = ["filename,label"]
        for _ in range(n):
            wnid = f"n{label:08d}"
            for j in range(per_class):
                fname = f"{wnid}{j + 1:08d}.jpg"
                folder = root / "images" if layout == "flat" else root / wnid
                _save_png(folder / fname, label)  # PNG bytes; PIL reads by content
                lines.append(f"{fname},{wnid}")
            label += 1
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return str(root)
