"""Boxes: the contour boxes of a thresholded map (components and holes), IoU, and ground-truth
box readers.

A box is ``(x0, y0, x1, y1)`` in pixels of the evaluated image, read with the inclusive IoU formula
of wsolevaluation (Choe et al., CVPR 2020): area ``(x1 - x0 + 1) * (y1 - y0 + 1)``. Ground-truth
boxes are kept as their annotation gives them (wsolevaluation's metadata: CUB's
``(x, y, x + w, y + h)``, ILSVRC's ``xmin ymin xmax ymax``; camexp's synthetic data: the tight
inclusive box); predicted boxes follow ``metrics.box_convention`` (camexp.metrics.localization).
An image may have several ground-truth boxes: an array (n, 4).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from scipy import ndimage

from camexp.errors import UserError

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def component_boxes(mask: np.ndarray) -> np.ndarray:
    """Boxes (n, 4) of every contour of a boolean (H, W) mask; (0, 4) if empty.

    This replaces ``cv2.findContours(mask, RETR_TREE, CHAIN_APPROX_SIMPLE)`` + ``boundingRect``
    of wsolevaluation's MaxBoxAccV2 without OpenCV: the outer border of every 8-connected
    component (nested ones inside holes included) and the inner border of every hole, each
    boxed (:func:`stacked_component_boxes`). These are the tight inclusive boxes: wsolevaluation
    turns ``boundingRect``'s (x, y, w, h) into ``(x, y, x + w, y + h)`` and reads it with the
    inclusive IoU formula, one pixel wider and taller than the region; the localization metric
    widens them (``box_convention="wsol"``, the default) or not (``"tight"``).
    """
    return stacked_component_boxes(mask[None])[0]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (n, m) between inclusive boxes a (n, 4) and b (m, 4); 0 for empty unions."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None]  # (n, 1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None]  # (1, m, 4)
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


# ----------------------------------------------------------------------------- readers


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


def label_extents(labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive boxes (count, 4) of the labels 1..count of a stack (L, H, W) and the plane of
    each (a label lives in one plane). Unbuffered ufunc.at: find_objects builds a slice per label
    and is slow."""
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    label = flat[where] - 1
    plane, row, col = np.unravel_index(where, labels.shape)
    boxes = np.empty((count, 4), dtype=np.int64)
    boxes[:, :2] = np.iinfo(np.int64).max
    boxes[:, 2:] = -1
    np.minimum.at(boxes[:, 0], label, col)
    np.minimum.at(boxes[:, 1], label, row)
    np.maximum.at(boxes[:, 2], label, col)
    np.maximum.at(boxes[:, 3], label, row)
    first = np.full(count, -1, dtype=np.int64)
    first[label[::-1]] = plane[::-1]  # any pixel's plane
    return boxes, first


def stacked_component_boxes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The contour boxes of every mask of a stack (L, H, W): what OpenCV's ``findContours`` with
    ``RETR_TREE`` (Suzuki & Abe 1985) + ``boundingRect`` gives, in two labelling passes.

    * Outer borders: one box per 8-connected foreground component (OpenCV's connectivity for
      non-zero pixels), nested components inside holes included.
    * Hole borders: a hole is a 4-connected background component that does not reach the image
      edge (OpenCV pads the image with a zero frame). Its border, as Suzuki-Abe trace it, is the
      foreground pixels 4-adjacent to the hole, so its box is the hole's box grown by one pixel
      on every side (the hole's extreme pixels have foreground 4-neighbours beyond them).

    Nothing connects across the stack (the structures are 2-D within a plane). Returns boxes
    (n, 4) and the plane index of each (n,).
    """

    def planar(structure):
        out = np.zeros((3, 3, 3), dtype=bool)
        out[1] = structure
        return out

    labels, count = ndimage.label(masks, structure=planar(EIGHT_CONNECTED))
    outer, outer_plane = label_extents(labels, count)
    background = np.pad(~masks, ((0, 0), (1, 1), (1, 1)), constant_values=True)  # the zero frame
    labels, count = ndimage.label(background, structure=planar(FOUR_CONNECTED))
    holes, hole_plane = label_extents(labels, count)
    is_hole = np.ones(count, dtype=bool)
    is_hole[labels[:, 0, 0] - 1] = False  # each plane's outside: the component of the frame
    # padded coordinates are one more than the image's; the border lies one pixel further out
    holes = holes[is_hole] + np.array([-2, -2, 0, 0])
    return np.concatenate([outer, holes]), np.concatenate([outer_plane, hole_plane[is_hole]])


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
        with Image.open(path) as image:  # reads the header only
            size = image.size
        out.append(resize_box(boxes, size, image_size))
    return out
