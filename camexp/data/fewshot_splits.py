"""Few-shot class splits and their readers: base classes for stage 1, novel (and val) for episodes.

Every reader here is a dataset ``source`` (configs/dataset/*.yaml, built by
``camexp.training.data.load_source``) that understands four splits:

- ``train`` / ``test``: images of the **base** classes, labels remapped to 0..n_base-1, for the
  classification stage (``task=classify`` wiring, unchanged);
- ``val`` / ``novel``: every image of the few-shot validation / test classes, labels remapped to
  0..n-1 in the order of the split's class list, for episodes.

Standard splits (class lists checked by tests/test_fewshot_splits.py):

- CIFAR-FS (Bertinetto et al., ICLR 2019, "Meta-learning with differentiable closed-form
  solvers"): 64 / 16 / 20 CIFAR-100 classes, by name; 600 images per class (train + test pooled).
- FC100 (Oreshkin et al., NeurIPS 2018, TADAM): 12 / 4 / 4 CIFAR-100 superclasses, i.e. 60 / 20 /
  20 classes; superclasses by CIFAR-100 coarse index.
- miniImageNet (Ravi & Larochelle, ICLR 2017): ``train.csv`` / ``val.csv`` / ``test.csv``
  (``filename,label``), 64 / 16 / 20 classes of 600 images.
- CUB-200 few-shot (Chen et al., ICLR 2019, "A Closer Look at Few-shot Classification", after
  Hilliard et al. 2018): over the 200 classes in id order, index i (0-based) is base when
  i % 2 == 0, val when i % 4 == 1, novel when i % 4 == 3: 100 / 50 / 50.
- Fashion-MNIST (ours, offline): base = labels 0-4, novel = labels 5-9, no val classes.

Where a dataset has no test split of its own (miniImageNet, CUB), stage 1's ``test`` is a fixed,
seeded ``holdout`` fraction of each base class's images, removed from ``train``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from camexp.data.cifar100_classes import (
    CIFAR100_CLASSES,
    CIFAR100_SUPERCLASSES,
    CIFAR_FS_TEST,
    CIFAR_FS_VAL,
)
from camexp.data.fine_grained import ImageList, cub200
from camexp.data.sources import ArraySplit, load_split
from camexp.errors import UserError

FEWSHOT_SPLITS = ("train", "test", "val", "novel")

# FC100: Oreshkin et al.'s superclass split, by CIFAR-100 coarse index.
FC100_SUPERCLASSES = {
    "base": [1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19],
    "val": [8, 11, 13, 16],
    "novel": [0, 7, 12, 14],
}


def _fc100(part: str) -> list[str]:
    return [name for s in FC100_SUPERCLASSES[part] for name in CIFAR100_SUPERCLASSES[s][1]]


def _cifar_fs_base() -> list[str]:
    held = set(CIFAR_FS_VAL) | set(CIFAR_FS_TEST)
    return [c for c in CIFAR100_CLASSES if c not in held]


# Named class splits over an in-memory dataset: {part: class names}.
CLASS_SPLITS = {
    "cifar_fs": {"base": _cifar_fs_base(), "val": CIFAR_FS_VAL, "novel": CIFAR_FS_TEST},
    "fc100": {part: _fc100(part) for part in ("base", "val", "novel")},
    # Ours, so that the task runs offline: the first five labels are base, the last five novel.
    "fashion_mnist": {
        "base": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"],
        "val": [],
        "novel": ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    },
}


def _part(split: str) -> str:
    if split not in FEWSHOT_SPLITS:
        raise UserError(f"unknown few-shot split {split!r}; valid: {', '.join(FEWSHOT_SPLITS)}")
    return "base" if split in ("train", "test") else split


def resolve_class_split(class_split, classes: list[str]) -> dict[str, list[str]]:
    """A split name from CLASS_SPLITS or a mapping {base, val, novel} of class names or label
    indices, checked against the dataset's ``classes`` (every name on disk, parts disjoint)."""
    if isinstance(class_split, str):
        if class_split not in CLASS_SPLITS:
            raise UserError(
                f"unknown class split {class_split!r}; valid: {', '.join(CLASS_SPLITS)}, or a "
                "mapping {base: [...], val: [...], novel: [...]} of class names"
            )
        spec = CLASS_SPLITS[class_split]
    else:
        spec = dict(class_split)
    out = {}
    for part in ("base", "val", "novel"):
        names = [classes[c] if isinstance(c, int) else str(c) for c in spec.get(part) or []]
        missing = [n for n in names if n not in classes]
        if missing:
            raise UserError(
                f"the {part} classes of the few-shot split name {len(missing)} classes that are "
                f"not in the dataset on disk (e.g. {missing[:3]}); the dataset has "
                f"{len(classes)} classes ({', '.join(classes[:4])}, ...)"
            )
        out[part] = names
    seen = {}
    for part, names in out.items():
        for n in names:
            if n in seen and seen[n] != part:
                raise UserError(f"class {n!r} is in both the {seen[n]} and {part} classes")
            seen[n] = part
    if not out["base"] or not out["novel"]:
        raise UserError("a few-shot split needs at least one base and one novel class")
    return out


def select_classes(images, labels: torch.Tensor, classes: list[str], wanted: list[str]):
    """Keep the images of ``wanted`` classes, labels remapped to their position in ``wanted``."""
    remap = torch.full((len(classes),), -1, dtype=torch.long)
    for new, name in enumerate(wanted):
        remap[classes.index(name)] = new
    new_labels = remap[labels]
    keep = torch.nonzero(new_labels >= 0).flatten()
    return keep, new_labels[keep]


def array_class_split(
    name: str,
    root: str | None,
    split: str,
    class_split,
    download: bool = False,
) -> ArraySplit:
    """An in-memory dataset (camexp.data.sources) cut by class. ``train``/``test`` are the base
    classes of the dataset's own train/test splits; ``val``/``novel`` pool both splits (every
    image of a held-out class is usable: CIFAR-FS and FC100 have 600 per class)."""
    part = _part(split)
    halves = ["train", "test"] if part != "base" else [split]
    loaded = [load_split(name, root, h, download) for h in halves]
    classes = list(loaded[0].classes)
    wanted = resolve_class_split(class_split, classes)[part]
    if not wanted:
        raise UserError(f"the few-shot split of {name} has no {part} classes")
    images, labels = [], []
    for half in loaded:
        keep, new_labels = select_classes(half.images, half.labels, classes, wanted)
        images.append(half.images[keep])
        labels.append(new_labels)
    return ArraySplit(torch.cat(images), torch.cat(labels), list(wanted))


# ----------------------------------------------------------------------------- image lists
def holdout_split(paths: list[str], targets: list[int], split: str, holdout: float, seed: int):
    """Stage 1 of a dataset without a test split: a seeded ``holdout`` fraction of each base
    class (at least one image) is ``test``, the rest ``train``. Returns (paths, targets)."""
    if not 0.0 < holdout < 1.0:
        raise UserError(f"dataset.source.holdout must be in (0, 1), got {holdout}")
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(targets):
        by_class.setdefault(label, []).append(i)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted(by_class):
        idx = rng.permutation(by_class[label])
        n_test = max(1, int(round(holdout * len(idx))))
        if n_test >= len(idx):
            raise UserError(f"base class {label} has {len(idx)} images, too few to hold out")
        chosen.extend(idx[:n_test] if split == "test" else idx[n_test:])
    chosen.sort()
    return [paths[i] for i in chosen], [targets[i] for i in chosen]


def _read_csv(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise UserError(
            f"{path} is missing; miniImageNet needs Ravi & Larochelle's train.csv, val.csv and "
            "test.csv (filename,label) in dataset.root"
        )
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise UserError(f"{path} does not start with the header 'filename,label'")
    bad = [i + 2 for i, r in enumerate(rows[1:]) if len(r) != 2]
    if bad:
        raise UserError(f"{path} line {bad[0]} does not hold two fields (filename,label)")
    return [(r[0].strip(), r[1].strip()) for r in rows[1:]]


def mini_imagenet(root: str | None, split: str, holdout: float = 0.1, seed: int = 0) -> ImageList:
    """miniImageNet from Ravi & Larochelle's csv split: ``root/{train,val,test}.csv`` naming files
    either in ``root/images/<filename>`` (their flat layout) or in ImageNet-style class folders
    ``root/<label>/<filename>``. train.csv is base, val.csv val, test.csv novel."""
    if not root:
        raise UserError("miniImageNet needs dataset.root=DIR holding train.csv, val.csv, test.csv")
    part = _part(split)
    base = Path(root).expanduser()
    rows = _read_csv(base / {"base": "train.csv", "val": "val.csv", "novel": "test.csv"}[part])
    classes = list(dict.fromkeys(label for _, label in rows))  # csv order
    flat = base / "images"
    paths, targets = [], []
    for filename, label in rows:
        candidates = (flat / filename, base / label / filename)
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            if not (base / label).is_dir() and not flat.is_dir():
                raise UserError(
                    f"class {label} named in {part} split file is not on disk: neither "
                    f"{flat}/ nor {base / label}/ exists"
                )
            raise UserError(f"{filename} (class {label}) is not in {flat}/ or {base / label}/")
        paths.append(str(path))
        targets.append(classes.index(label))
    if part == "base":
        paths, targets = holdout_split(paths, targets, split, holdout, seed)
    return ImageList(paths, targets, classes, name="miniImageNet")


# ----------------------------------------------------------------------------- CUB-200-2011
def cub_part(class_index: int) -> str:
    """Chen et al. (2019)'s CUB split by 0-based class index (classes in id order)."""
    if class_index % 2 == 0:
        return "base"
    return "val" if class_index % 4 == 1 else "novel"


def cub_fewshot(root: str | None, split: str, holdout: float = 0.1, seed: int = 0) -> ImageList:
    """CUB-200-2011 cut into the 100 / 50 / 50 few-shot classes: every image of a class (the
    official train and test lists of camexp.data.fine_grained.cub200 pooled), in path order."""
    part = _part(split)
    halves = [cub200(root, "train"), cub200(root, "test")]
    pooled = sorted(
        (path, target) for h in halves for path, target in zip(h.paths, h.targets, strict=True)
    )
    classes = halves[0].classes
    wanted = [c for c in range(len(classes)) if cub_part(c) == part]
    remap = {c: i for i, c in enumerate(wanted)}
    paths = [p for p, t in pooled if t in remap]
    targets = [remap[t] for p, t in pooled if t in remap]
    if part == "base":
        paths, targets = holdout_split(paths, targets, split, holdout, seed)
    return ImageList(paths, targets, [classes[c] for c in wanted], name="CUB-200 few-shot")


def limit_per_class(source, count: int | None):
    """The first ``count`` images of each class (file/array order), for cheaper episode pools;
    None keeps everything. Returns a source of the same kind."""
    if count is None:
        return source
    if count < 1:
        raise UserError(f"fewshot.images_per_class must be >= 1 or null, got {count}")
    labels = source.labels.numpy() if isinstance(source, ArraySplit) else np.asarray(source.targets)
    keep = np.concatenate(
        [np.flatnonzero(labels == c)[:count] for c in np.unique(labels)] or [np.empty(0, int)]
    )
    keep.sort()
    if isinstance(source, ArraySplit):
        index = torch.from_numpy(keep)
        return ArraySplit(source.images[index], source.labels[index], list(source.classes))
    return ImageList(
        [source.paths[i] for i in keep],
        [source.targets[i] for i in keep],
        source.classes,
        name=source.name,
    )


def seen_classes(trained_on: list, episode_classes: dict) -> dict[str, list[str]]:
    """Per episode split, the classes a backbone's checkpoint was trained on (its
    ``meta.dataset.classes``): any at all means its few-shot numbers are not few-shot."""
    seen = {str(c) for c in trained_on}
    overlap = {name: [str(c) for c in classes if str(c) in seen]
               for name, classes in episode_classes.items()}  # fmt: skip
    return {name: found for name, found in overlap.items() if found}
