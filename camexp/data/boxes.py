"""Ground-truth box readers: CUB's bounding_boxes.txt, ILSVRC's VOC XML files, and the boxes of a
folder test set in the frame the box metrics score in (camexp.metrics.boxes scores against them).

A box is ``(x0, y0, x1, y1)`` in pixels of the evaluated image (wsolevaluation's convention; see
camexp/metrics/boxes.py). An image may have several boxes: an array (n, 4).
"""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from camexp.errors import UserError


def read_cub_boxes(root: str | os.PathLike) -> dict[str, np.ndarray]:
    """CUB-200-2011's ``bounding_boxes.txt`` joined with ``images.txt``: image path -> (1, 4).

    ``bounding_boxes.txt`` lines are ``<image_id> <x> <y> <width> <height>`` (floats, pixels of
    the original image); ``images.txt`` lines are ``<image_id> <class_folder>/<file>.jpg``. The
    box becomes inclusive ``(x, y, x + width - 1, y + height - 1)``. ``root`` is the folder
    holding both files (``CUB_200_2011/``).
    """
    root = Path(root)
    boxes_path, images_path = root / "bounding_boxes.txt", root / "images.txt"
    for path in (boxes_path, images_path):
        if not path.is_file():
            raise UserError(f"{path} is missing; point dataset.root at the CUB_200_2011 folder")
    names = {}
    for number, line in enumerate(images_path.read_text().splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) != 2:
                raise UserError(f"{images_path}:{number}: expected '<id> <path>', got {line!r}")
            names[parts[0]] = parts[1]
    out = {}
    for number, line in enumerate(boxes_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            x, y, w, h = (float(v) for v in parts[1:])
            name = names[parts[0]]
        except (ValueError, KeyError):
            raise UserError(
                f"{boxes_path}:{number}: expected '<image_id> <x> <y> <width> <height>' with an "
                f"id from images.txt, got {line!r}"
            ) from None
        out[name] = np.array([[x, y, x + w - 1, y + h - 1]]).round().astype(np.int64)
    return out


def read_voc_boxes(path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, int]]:
    """One ILSVRC/PASCAL-VOC XML annotation: (boxes (n, 4), (width, height)).

    ILSVRC validation files (``ILSVRC2012_val_00000001.xml``) list ``<object><bndbox>`` with
    ``xmin ymin xmax ymax`` in pixels of the original image; they are used as they are
    (inclusive), as wsolevaluation does.
    """
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as err:
        raise UserError(f"{path} is not a readable VOC/ILSVRC XML annotation ({err})") from None
    root = tree.getroot()
    size = root.find("size")
    width = int(float(size.findtext("width"))) if size is not None else 0
    height = int(float(size.findtext("height"))) if size is not None else 0
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        try:
            boxes.append([int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")])
        except (TypeError, ValueError):
            raise UserError(f"{path}: a <bndbox> lacks numeric xmin/ymin/xmax/ymax") from None
    return np.array(boxes, dtype=np.int64).reshape(-1, 4), (width, height)


# Where ILSVRC validation XMLs usually live under an ImageNet root (Kaggle's ILSVRC layout, the
# devkit's val/ annotations, a flat folder).
IMAGENET_BOX_FOLDERS = ("Annotations/CLS-LOC/val", "ILSVRC/Annotations/CLS-LOC/val", "val_boxes")


def read_imagenet_val_boxes(root: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """Image file stem -> boxes (n, 4) from the ILSVRC val XMLs under ``root``; None if absent."""
    for folder in IMAGENET_BOX_FOLDERS:
        path = Path(root) / folder
        if path.is_dir():
            files = sorted(path.glob("*.xml"))
            if files:
                return {f.stem: read_voc_boxes(f)[0] for f in files}
    return None


def resize_box(box: np.ndarray, original: tuple[int, int], size: int) -> np.ndarray:
    """wsolevaluation's ``resize_bbox``: boxes (n, 4) of an original (width, height) image mapped
    onto the ``size x size`` image that ``Resize((size, size))`` makes, each coordinate scaled and
    truncated with ``int()`` (no clipping)."""
    width, height = original
    scale = np.array([size / width, size / height, size / width, size / height])
    return (np.asarray(box, dtype=np.float64).reshape(-1, 4) * scale).astype(np.int64)


def folder_test_boxes(
    dataset, image_size: int, root: str | None = None, convention: str = "wsol"
) -> list[np.ndarray] | None:
    """Ground-truth boxes of a folder-type test set in the frame of the box-metric transform
    (``Resize((image_size, image_size))``, no crop: camexp.data.folder.box_transform, as
    wsolevaluation), one (n, 4) array per sample; None when the dataset has none.

    Sources: a dataset with ``boxes`` (N, 4) as (x, y, w, h) and ``paths`` (camexp's CUB reader,
    from bounding_boxes.txt), read as wsolevaluation's metadata ``(x, y, x + w, y + h)``
    (``convention="wsol"``) or as the inclusive ``(x, y, x + w - 1, y + h - 1)`` (``"tight"``);
    or an ImageFolder whose files are ILSVRC validation images with XML annotations under
    ``root`` (see :data:`IMAGENET_BOX_FOLDERS`), used as they are.
    """
    from PIL import Image

    if getattr(dataset, "boxes", None) is not None and hasattr(dataset, "paths"):
        xywh = np.asarray(dataset.boxes, dtype=np.float64).reshape(-1, 4)
        end = 0 if convention == "wsol" else 1  # x + w (wsolevaluation) or x + w - 1
        pairs = [
            (path, np.array([[x, y, x + w - end, y + h - end]]))
            for path, (x, y, w, h) in zip(dataset.paths, xywh, strict=True)
        ]
    elif hasattr(dataset, "samples") and root:
        by_stem = read_imagenet_val_boxes(root)
        if by_stem is None:
            return None
        pairs = [(path, by_stem.get(Path(path).stem)) for path, _ in dataset.samples]
        missing = [path for path, boxes in pairs if boxes is None or len(boxes) == 0]
        if missing:
            raise UserError(
                f"{len(missing)} test images have no box annotation under {root} (first: "
                f"{missing[0]}); set metrics.localization=false or add the XML files"
            )
    else:
        return None
    out = []
    for path, boxes in pairs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:  # reads the header only
                    size = image.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise UserError(f"image {path} is too large to decode safely ({err}); shrink or "
                            "delete it") from None  # fmt: skip
        out.append(resize_box(boxes, size, image_size))
    return out
