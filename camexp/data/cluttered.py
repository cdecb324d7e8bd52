"""Cluttered Fashion-MNIST: one Fashion-MNIST item at a random place on a larger black canvas,
with clutter made of random crops of other items, and the item's ground-truth box.

In the spirit of the cluttered MNIST of Mnih et al. ("Recurrent Models of Visual Attention",
NIPS 2014): classification stays easy, but a map that lights up the clutter or the whole canvas
localizes badly, which is what CAM-loss's "spatially discriminative" claim is about.

Canvas i of a split is drawn from ``numpy.random.default_rng([seed, split_id, i])``, so the same
seed gives the same images and boxes whatever subset is used. Compositing is a pixelwise maximum:
the clutter crops first, then the item. The box is the tight inclusive box of the item's
non-zero pixels, ``(x0, y0, x1, y1)`` in canvas pixels (camexp.metrics.boxes convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from camexp.data.sources import ArraySplit, load_split
from camexp.errors import UserError

SPLIT_IDS = {"train": 0, "test": 1}


@dataclass
class BoxedSplit(ArraySplit):
    """An ArraySplit with ground-truth boxes: ``boxes[i]`` is an int64 array (n_i, 4)."""

    boxes: list = field(default_factory=list)


def item_box(item: np.ndarray) -> tuple[int, int, int, int]:
    """Tight inclusive (x0, y0, x1, y1) of the non-zero pixels of an (h, w) item."""
    rows, cols = np.nonzero(item)
    if len(rows) == 0:  # an all-black item: its whole patch
        return 0, 0, item.shape[1] - 1, item.shape[0] - 1
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def clutter_canvas(
    items: np.ndarray,
    index: int,
    rng: np.random.Generator,
    canvas: int,
    clutter: int,
    clutter_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One (canvas, canvas) uint8 image for ``items[index]`` and its box (1, 4)."""
    n, h, w = items.shape
    image = np.zeros((canvas, canvas), dtype=np.uint8)
    for _ in range(clutter):
        other = int(rng.integers(n - 1))
        other += other >= index  # any item but this one
        cy, cx = rng.integers(0, h - clutter_size + 1), rng.integers(0, w - clutter_size + 1)
        y, x = rng.integers(0, canvas - clutter_size + 1, size=2)
        crop = items[other, cy : cy + clutter_size, cx : cx + clutter_size]
        view = image[y : y + clutter_size, x : x + clutter_size]
        np.maximum(view, crop, out=view)
    y, x = (int(v) for v in rng.integers(0, canvas - h + 1, size=2))
    view = image[y : y + h, x : x + w]
    np.maximum(view, items[index], out=view)
    x0, y0, x1, y1 = item_box(items[index])
    return image, np.array([[x + x0, y + y0, x + x1, y + y1]], dtype=np.int64)


def make_cluttered(
    source: ArraySplit,
    split: str,
    *,
    canvas: int = 64,
    clutter: int = 4,
    clutter_size: int = 12,
    seed: int = 0,
    count: int | None = None,
) -> BoxedSplit:
    """Place the first ``count`` items of ``source`` (all if None) on cluttered canvases."""
    items = source.images[:, 0].numpy()  # (N, h, w) uint8
    n, h, w = items.shape
    if canvas < max(h, w):
        raise UserError(f"dataset canvas={canvas} is smaller than the {h}x{w} items")
    if clutter < 0 or not 0 < clutter_size <= min(h, w):
        raise UserError(
            f"dataset clutter={clutter} must be >= 0 and clutter_size={clutter_size} in 1..{h}"
        )
    if n < 2:
        raise UserError(f"cluttered canvases need at least 2 items, the {split} split has {n}")
    count = n if count is None else min(int(count), n)
    images = np.empty((count, 1, canvas, canvas), dtype=np.uint8)
    boxes = []
    for i in range(count):
        rng = np.random.default_rng([int(seed), SPLIT_IDS[split], i])
        images[i, 0], box = clutter_canvas(items, i, rng, canvas, clutter, clutter_size)
        boxes.append(box)
    return BoxedSplit(
        images=torch.from_numpy(images),
        labels=source.labels[:count].clone(),
        classes=list(source.classes),
        boxes=boxes,
    )


def load_cluttered(
    root: str | None,
    split: str,
    download: bool = False,
    canvas: int = 64,
    clutter: int = 4,
    clutter_size: int = 12,
    seed: int = 0,
    count: dict | None = None,
) -> BoxedSplit:
    """The ``dataset.source`` reader of ``dataset=cluttered_fashion_mnist``.

    ``count`` maps a split to how many canvases to make (None: the whole split), e.g.
    ``{train: 10000, test: 2000}``: making and holding 60,000 64x64 canvases costs 245 MB.
    """
    source = load_split("fashion_mnist", root, split, download)
    wanted = (count or {}).get(split)
    return make_cluttered(
        source,
        split,
        canvas=int(canvas),
        clutter=int(clutter),
        clutter_size=int(clutter_size),
        seed=int(seed),
        count=None if wanted is None else int(wanted),
    )
