"""Fine-grained transfer targets, read from their official on-disk layouts (no downloads).

Each reader returns an :class:`ImageList`, a folder-type source for ``build_folder_data``: a torch
Dataset with ``classes``, ``targets`` and a settable ``transform``. ``root`` may be the dataset's
own folder or its parent (the folder name the official archive extracts to).

- CUB-200-2011 (Wah et al. 2011), ``CUB_200_2011/``: images.txt, image_class_labels.txt,
  train_test_split.txt, bounding_boxes.txt, classes.txt, images/. 5,994 train / 5,794 test.
  ``dataset.boxes`` holds each image's bird box (x, y, w, h) in pixels of the original image.
- Stanford Dogs (Khosla et al. 2011): Images/<wnid>-<breed>/*.jpg (images.tar) and
  train_list.mat, test_list.mat (lists.tar). 12,000 train / 8,580 test, 120 breeds.
- FGVC-Aircraft 2013b (Maji et al. 2013), ``fgvc-aircraft-2013b/data/``: images/<id>.jpg,
  images_<level>_<split>.txt, variants.txt / families.txt / manufacturers.txt.
- Oxford Flowers-102 (Nilsback & Zisserman 2008), ``flowers-102/`` (torchvision's layout):
  jpg/image_<05d>.jpg, imagelabels.mat, setid.mat (trnid, valid, tstid); class names are
  torchvision's ``Flowers102.classes`` where that exists.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from camexp.data.folder import read_rgb
from camexp.errors import UserError


class ImageList(Dataset):
    """Images named by path with integer targets; ``boxes`` (N, 4) where the dataset has them."""

    def __init__(self, paths, targets, classes, transform=None, boxes=None, name="dataset"):
        self.paths = list(paths)
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.transform = transform
        self.boxes = boxes  # float (N, 4) as (x, y, w, h) in pixels of the original image, or None
        self.name = name
        missing = [p for p in self.paths if not os.path.isfile(p)]
        if missing:
            raise UserError(
                f"{name}: {len(missing)} of {len(self.paths)} listed images are missing "
                f"(first: {missing[0]}); is the archive fully extracted under dataset.root?"
            )
        if not self.paths:
            raise UserError(f"{name}: the split lists no images")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = read_rgb(self.paths[index])  # a decompression bomb stops with its path
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


# ----------------------------------------------------------------------------- helpers
def find_root(root: str | None, folder: str, marker: str, what: str) -> str:
    """``root`` itself or ``root/folder``, whichever holds ``marker``."""
    if not root:
        raise UserError(f"{what} needs dataset.root=DIR (the folder holding {folder}/)")
    for candidate in (os.path.join(root, folder), root):
        if os.path.exists(os.path.join(candidate, marker)):
            return candidate
    raise UserError(
        f"{what} not found: neither {root}/{folder}/{marker} nor {root}/{marker} exists; "
        f"set dataset.root to the folder the official archive was extracted into"
    )


def read_rows(path: str, fields: int, what: str) -> list[list[str]]:
    """Whitespace-separated rows; the last field keeps any spaces (names like 'Cessna 172')."""
    if not os.path.isfile(path):
        raise UserError(f"{what}: {path} is missing")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            row = line.split(maxsplit=fields - 1)
            if len(row) != fields:
                raise UserError(f"{what}: {path} line {number} has {len(row)} fields, not {fields}")
            rows.append(row)
    return rows


def check_split(split: str, choices: tuple[str, ...], what: str) -> None:
    if split not in choices:
        raise UserError(f"{what}: unknown split {split!r}; use one of {', '.join(choices)}")


def load_mat(path: str, what: str) -> dict:
    from scipy.io import loadmat

    if not os.path.isfile(path):
        raise UserError(f"{what}: {path} is missing")
    try:
        return loadmat(path)
    except (ValueError, TypeError, OSError) as err:
        raise UserError(f"{what}: {path} is not a readable MATLAB file ({err})") from err


def mat_strings(cells) -> list[str]:
    """A MATLAB cell array of strings (N, 1) as loadmat returns it -> list of str."""
    return [str(c.ravel()[0]) if hasattr(c, "ravel") else str(c) for c in cells.ravel()]


def pick(split: str, splits: dict | None, default: dict) -> str:
    """Map camexp's split (train/test) to the dataset's official split name."""
    mapping = dict(default, **(splits or {}))
    if split not in mapping:
        raise UserError(f"no official split configured for {split!r} (dataset.source.splits)")
    return str(mapping[split])


# ----------------------------------------------------------------------------- CUB-200-2011
def cub200(root: str | None, split: str) -> ImageList:
    """CUB-200-2011; ``boxes`` from bounding_boxes.txt (x, y, width, height in pixels)."""
    what = "CUB-200-2011"
    check_split(split, ("train", "test"), what)
    base = find_root(root, "CUB_200_2011", "images.txt", what)
    images = dict(read_rows(os.path.join(base, "images.txt"), 2, what))
    labels = dict(read_rows(os.path.join(base, "image_class_labels.txt"), 2, what))
    is_train = dict(read_rows(os.path.join(base, "train_test_split.txt"), 2, what))
    boxes = {
        r[0]: [float(v) for v in r[1].split()]
        for r in read_rows(os.path.join(base, "bounding_boxes.txt"), 2, what)
    }
    class_rows = read_rows(os.path.join(base, "classes.txt"), 2, what)
    classes = [name for _, name in sorted(class_rows, key=lambda r: int(r[0]))]
    wanted = "1" if split == "train" else "0"
    ids = sorted((i for i in images if is_train.get(i) == wanted), key=int)
    for table, name in ((labels, "image_class_labels.txt"), (boxes, "bounding_boxes.txt")):
        lost = [i for i in ids if i not in table]
        if lost:
            raise UserError(
                f"{what}: {name} has no row for image id {lost[0]} ({len(lost)} in all)"
            )
    targets = [int(labels[i]) - 1 for i in ids]  # the files count classes from 1
    if any(not 0 <= t < len(classes) for t in targets):
        raise UserError(f"{what}: image_class_labels.txt has labels outside 1..{len(classes)}")
    return ImageList(
        [os.path.join(base, "images", images[i]) for i in ids],
        targets,
        classes,
        boxes=torch.tensor([boxes[i] for i in ids], dtype=torch.float32).reshape(-1, 4),
        name=what,
    )


# ----------------------------------------------------------------------------- Stanford Dogs
def stanford_dogs(root: str | None, split: str) -> ImageList:
    """Stanford Dogs from Images/ and {train,test}_list.mat; classes are the breed folders."""
    what = "Stanford Dogs"
    check_split(split, ("train", "test"), what)
    base = find_root(root, "stanford_dogs", "train_list.mat", what)
    mats = {s: load_mat(os.path.join(base, f"{s}_list.mat"), what) for s in ("train", "test")}
    folders = sorted({f.split("/")[0] for m in mats.values() for f in mat_strings(m["file_list"])})
    mat = mats[split]
    files = mat_strings(mat["file_list"])
    targets = [folders.index(f.split("/")[0]) for f in files]
    listed = [int(v) - 1 for v in mat["labels"].ravel()]  # 1-based breed index in the .mat
    if listed != targets:
        raise UserError(
            f"{what}: {split}_list.mat labels disagree with the breed folders of its file_list"
        )
    classes = [f.split("-", 1)[1] if "-" in f else f for f in folders]  # n02085620-Chihuahua
    return ImageList([os.path.join(base, "Images", f) for f in files], targets, classes, name=what)


# ----------------------------------------------------------------------------- FGVC-Aircraft
AIRCRAFT_LEVELS = {"variant": "variants.txt", "family": "families.txt",
                   "manufacturer": "manufacturers.txt"}  # fmt: skip


def fgvc_aircraft(
    root: str | None, split: str, annotation_level: str = "variant", splits: dict | None = None
) -> ImageList:
    """FGVC-Aircraft 2013b; by default train on ``trainval`` and test on ``test`` (the usual
    protocol); ``annotation_level`` variant (100), family (70) or manufacturer (30)."""
    what = "FGVC-Aircraft"
    if annotation_level not in AIRCRAFT_LEVELS:
        raise UserError(
            f"{what}: annotation_level={annotation_level!r}; use {', '.join(AIRCRAFT_LEVELS)}"
        )
    official = pick(split, splits, {"train": "trainval", "test": "test"})
    check_split(official, ("train", "val", "trainval", "test"), what)
    base = find_root(root, os.path.join("fgvc-aircraft-2013b", "data"), "images", what)
    with open(os.path.join(base, AIRCRAFT_LEVELS[annotation_level]), encoding="utf-8") as f:
        classes = [line.strip() for line in f if line.strip()]
    rows = read_rows(os.path.join(base, f"images_{annotation_level}_{official}.txt"), 2, what)
    index = {name: i for i, name in enumerate(classes)}
    unknown = [name for _, name in rows if name not in index]
    if unknown:
        raise UserError(
            f"{what}: class {unknown[0]!r} is not in {AIRCRAFT_LEVELS[annotation_level]}"
        )
    return ImageList(
        [os.path.join(base, "images", f"{image_id}.jpg") for image_id, _ in rows],
        [index[name] for _, name in rows],
        classes,
        name=what,
    )


# ----------------------------------------------------------------------------- Flowers-102
def flowers_classes() -> list[str]:
    try:
        from torchvision.datasets import Flowers102

        names = list(getattr(Flowers102, "classes", []))
    except ImportError:
        names = []
    return names if len(names) == 102 else [f"class_{i:03d}" for i in range(1, 103)]


def flowers102(root: str | None, split: str, splits: dict | None = None) -> ImageList:
    """Oxford Flowers-102; by default train on train+val (2,040) and test on test (6,149)."""
    what = "Flowers-102"
    official = pick(split, splits, {"train": "trainval", "test": "test"})
    keys = {"train": ["trnid"], "val": ["valid"], "trainval": ["trnid", "valid"], "test": ["tstid"]}
    check_split(official, tuple(keys), what)
    base = find_root(root, "flowers-102", "setid.mat", what)
    setid = load_mat(os.path.join(base, "setid.mat"), what)
    labels = load_mat(os.path.join(base, "imagelabels.mat"), what)["labels"].ravel()
    ids = sorted(int(i) for key in keys[official] for i in setid[key].ravel())
    if ids and (ids[0] < 1 or ids[-1] > len(labels)):
        raise UserError(f"{what}: setid.mat names images outside 1..{len(labels)}")
    targets = [int(labels[i - 1]) - 1 for i in ids]  # ids and labels are 1-based
    classes = flowers_classes()
    if any(not 0 <= t < len(classes) for t in targets):
        raise UserError(f"{what}: imagelabels.mat has labels outside 1..{len(classes)}")
    paths = [os.path.join(base, "jpg", f"image_{i:05d}.jpg") for i in ids]
    return ImageList(paths, targets, classes, name=what)
