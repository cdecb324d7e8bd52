"""Writers of tiny fine-grained datasets in their official on-disk layouts, and a helper that
runs the ``camexp`` command line in a subprocess. Plain functions: tests import them.

Images are small RGB JPEGs whose colour encodes the class, so a reader that mixes up labels
can be caught by looking at the pixels (see ``class_colour``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from conftest import run_camexp


def class_colour(k: int) -> tuple[int, int, int]:
    """A distinct, JPEG-robust colour per class (at most 27 classes)."""
    return (40 + 80 * (k % 3), 40 + 80 * ((k // 3) % 3), 40 + 80 * ((k // 9) % 3))


def write_jpeg(path: Path, k: int, size: tuple[int, int] = (20, 16)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    pixels = np.empty((h, w, 3), dtype=np.uint8)
    pixels[:] = class_colour(k)
    Image.fromarray(pixels).save(path, quality=95)


def write_cub(dir: str | Path, classes: int = 3, per_class: int = 4) -> dict:
    """``dir/CUB_200_2011/`` with the five index files and images/; every other image is train.

    Returns the expected values: per split, the list of (relative path, label, box).
    """
    base = Path(dir) / "CUB_200_2011"
    base.mkdir(parents=True, exist_ok=True)
    names = [f"{c + 1:03d}.Bird_{c + 1}" for c in range(classes)]
    lines = {k: [] for k in ("images", "labels", "split", "boxes")}
    expected = {"train": [], "test": []}
    image_id = 0
    for c, name in enumerate(names):
        for j in range(per_class):
            image_id += 1
            rel = f"{name}/Bird_{c + 1}_{j:04d}_{image_id}.jpg"
            write_jpeg(base / "images" / rel, c)
            train = j % 2 == 0
            box = [1.0 + c, 2.0 + j, 10.5, 8.0 + c]
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {c + 1}")
            lines["split"].append(f"{image_id} {int(train)}")
            lines["boxes"].append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box))
            expected["train" if train else "test"].append((rel, c, box))
    files = {
        "images.txt": "images",
        "image_class_labels.txt": "labels",
        "train_test_split.txt": "split",
        "bounding_boxes.txt": "boxes",
    }
    for file, key in files.items():
        (base / file).write_text("\n".join(lines[key]) + "\n")
    (base / "classes.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    expected["classes"] = names
    return expected


def _cells(strings: list[str]) -> np.ndarray:
    """A MATLAB cell array (N, 1) of strings, as scipy.io.savemat writes object arrays."""
    cells = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cells[i, 0] = np.array([s])
    return cells


def write_stanford_dogs(dir: str | Path, breeds: int = 3, per_split: int = 2) -> dict:
    """``dir/stanford_dogs/`` with Images/<wnid>-<breed>/ and {train,test,file}_list.mat."""
    from scipy.io import savemat

    base = Path(dir) / "stanford_dogs"
    folders = [f"n020{85620 + b}-Breed_{chr(ord('A') + b)}" for b in range(breeds)]
    expected = {"classes": [f.split("-", 1)[1] for f in folders]}
    all_files = []
    for split in ("train", "test"):
        files, labels = [], []
        for b, folder in enumerate(folders):
            for j in range(per_split):
                wnid = folder.split("-")[0]
                rel = f"{folder}/{wnid}_{split}{j}.jpg"
                write_jpeg(base / "Images" / rel, b)
                files.append(rel)
                labels.append(b + 1)
        savemat(
            base / f"{split}_list.mat",
            {
                "file_list": _cells(files),
                "annotation_list": _cells([f.removesuffix(".jpg") for f in files]),
                "labels": np.array(labels, dtype=np.float64)[:, None],
            },
        )
        expected[split] = list(zip(files, [lab - 1 for lab in labels], strict=True))
        all_files += files
    savemat(base / "file_list.mat", {"file_list": _cells(all_files)})
    return expected


def write_fgvc_aircraft(dir: str | Path, variants: int = 3, per_split: int = 2) -> dict:
    """``dir/fgvc-aircraft-2013b/data/`` with images/, variants.txt and images_variant_*.txt.

    Variant names contain spaces and slashes, as the real ones do ('Cessna 172', 'F-16A/B').
    """
    base = Path(dir) / "fgvc-aircraft-2013b" / "data"
    names = [f"Model {v}-{v}00/B" for v in range(variants)]
    base.mkdir(parents=True, exist_ok=True)
    (base / "variants.txt").write_text("".join(f"{n}\n" for n in names))
    expected = {"classes": names}
    image_id = 1000000
    for split in ("train", "val", "test"):
        rows = []
        for v in range(variants):
            for _ in range(per_split):
                image_id += 1
                write_jpeg(base / "images" / f"{image_id}.jpg", v)
                rows.append((str(image_id), v))
        (base / f"images_variant_{split}.txt").write_text(
            "".join(f"{i} {names[v]}\n" for i, v in rows)
        )
        expected[split] = rows
    trainval = expected["train"] + expected["val"]
    (base / "images_variant_trainval.txt").write_text(
        "".join(f"{i} {names[v]}\n" for i, v in trainval)
    )
    expected["trainval"] = trainval
    return expected


def write_flowers102(dir: str | Path, images: int = 12) -> dict:
    """``dir/flowers-102/`` with jpg/, imagelabels.mat (1-based labels) and setid.mat."""
    from scipy.io import savemat

    base = Path(dir) / "flowers-102"
    labels = np.array([(i * 7) % 5 + 1 for i in range(images)], dtype=np.uint8)  # classes 1..5
    for i, label in enumerate(labels, start=1):
        write_jpeg(base / "jpg" / f"image_{i:05d}.jpg", int(label) - 1)
    ids = np.arange(1, images + 1)
    split = {"trnid": ids[0::3], "valid": ids[1::3], "tstid": ids[2::3]}
    savemat(base / "imagelabels.mat", {"labels": labels[None, :]})
    savemat(base / "setid.mat", {k: v[None, :].astype(np.uint16) for k, v in split.items()})
    return {k: [(int(i), int(labels[i - 1]) - 1) for i in v] for k, v in split.items()}


def camexp_cli(*args: str, cwd: str | Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run ``python -m camexp ARGS`` (the entry point) with progress bars off."""
    return run_camexp("progress=false", *args, cwd=cwd, timeout=timeout)
