"""Transfer targets that exist offline, as in-memory sources (``ArraySplit``).

- ``digits28``: scikit-learn's 8x8 digits (the same fixed stratified 80/20 split as
  ``dataset=digits``) upsampled to 28x28, the size of Fashion-MNIST, so a Fashion-MNIST
  backbone transfers to another domain (handwriting) with the same input geometry.
- ``fashion_mnist_classes``: a class subset of Fashion-MNIST, relabelled 0..k-1 in the order
  given, for a disjoint source/target class split (pretrain on some classes, transfer to the rest).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from camexp.data.sources import FASHION_MNIST_CLASSES, ArraySplit, load_split
from camexp.errors import UserError

# Bilinear upsampling (align_corners=False): a smooth 28x28 stroke from the 8x8 intensity grid,
# rather than nearest-neighbour blocks that no Fashion-MNIST filter has seen.
RESIZE_MODE = "bilinear"


def resize_uint8(images: torch.Tensor, size: int, mode: str = RESIZE_MODE) -> torch.Tensor:
    """uint8 (N, C, h, w) -> uint8 (N, C, size, size), rounded and clamped to 0..255."""
    corners = None if mode == "nearest" else False
    out = F.interpolate(images.float(), size=(size, size), mode=mode, align_corners=corners)
    return out.round().clamp(0, 255).to(torch.uint8)


def digits28(split: str, size: int = 28, mode: str = RESIZE_MODE) -> ArraySplit:
    """scikit-learn digits resized to ``size`` x ``size`` (1 channel, 10 classes)."""
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise UserError(f"dataset.source.mode={mode!r}; use bilinear, nearest or bicubic")
    small = load_split("digits", None, split)
    return ArraySplit(resize_uint8(small.images, int(size), mode), small.labels, small.classes)


def fashion_mnist_classes(
    split: str, classes: list[int], root: str | None = None, download: bool = False
) -> ArraySplit:
    """Fashion-MNIST restricted to ``classes`` (indices 0..9), relabelled 0..len(classes)-1."""
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < 10 for c in classes):
        raise UserError(
            f"dataset.source.classes={classes} must be distinct Fashion-MNIST classes in 0..9"
        )
    full = load_split("fashion_mnist", root, split, download)
    keep = torch.isin(full.labels, torch.tensor(classes))
    remap = torch.full((10,), -1, dtype=torch.int64)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    return ArraySplit(
        images=full.images[keep],
        labels=remap[full.labels[keep]],
        classes=[FASHION_MNIST_CLASSES[c] for c in classes],
    )
