"""Boxes of a thresholded map: its contour boxes (components and holes) and IoU. The ground-truth
box readers are camexp/data/boxes.py.

A box is ``(x0, y0, x1, y1)`` in pixels of the evaluated image, read with the inclusive IoU formula
of wsolevaluation (Choe et al., CVPR 2020): area ``(x1 - x0 + 1) * (y1 - y0 + 1)``. Ground-truth
boxes are kept as their annotation gives them (wsolevaluation's metadata: CUB's
``(x, y, x + w, y + h)``, ILSVRC's ``xmin ymin xmax ymax``; camexp's synthetic data: the tight
inclusive box); predicted boxes follow ``metrics.box_convention`` (camexp.metrics.localization).
An image may have several ground-truth boxes: an array (n, 4).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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
