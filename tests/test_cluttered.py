"""Cluttered Fashion-MNIST: boxes hold the item, same seed same data, the source contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_fashion_mnist

from camexp.data.cluttered import BoxedSplit, load_cluttered, make_cluttered
from camexp.data.sources import ArraySplit
from camexp.errors import UserError


def items(n: int = 6, seed: int = 0) -> ArraySplit:
    """n 28x28 items: a bright rectangle at a random spot on black (its extent known)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, 28, 28), dtype=np.uint8)
    for i in range(n):
        y, x = rng.integers(0, 14, size=2)
        images[i, 0, y : y + 10 + i, x : x + 8] = 200 + i
    return ArraySplit(torch.from_numpy(images), torch.arange(n) % 10, [str(k) for k in range(10)])


def test_without_clutter_the_box_is_exactly_the_item():
    src = items()
    out = make_cluttered(src, "train", canvas=64, clutter=0, seed=3)
    assert isinstance(out, BoxedSplit) and out.images.shape == (6, 1, 64, 64)
    for i in range(6):
        rows, cols = np.nonzero(out.images[i, 0].numpy())
        assert out.boxes[i].tolist() == [[cols.min(), rows.min(), cols.max(), rows.max()]]
        # the canvas holds the item's pixels, unchanged, inside the box
        x0, y0, x1, y1 = out.boxes[i][0]
        assert out.images[i, 0, y0 : y1 + 1, x0 : x1 + 1].max() == 200 + i


def test_with_clutter_the_box_contains_every_item_pixel():
    src = items()
    out = make_cluttered(src, "test", canvas=48, clutter=6, clutter_size=8, seed=1)
    for i in range(6):
        item = src.images[i, 0].numpy()
        value = item.max()  # unique per item: clutter of other items has other values
        canvas = out.images[i, 0].numpy()
        x0, y0, x1, y1 = out.boxes[i][0]
        assert (y1 - y0 + 1, x1 - x0 + 1) == (10 + i, 8)  # the item's extent
        inside = np.zeros_like(canvas, dtype=bool)
        inside[y0 : y1 + 1, x0 : x1 + 1] = True
        assert (canvas[inside] >= value).all()  # the item is there (max compositing)
        assert not (canvas[~inside] == value).any()  # and nowhere else
    assert out.labels.tolist() == src.labels.tolist()


def test_same_seed_same_data_other_seed_other_data():
    src = items()
    a = make_cluttered(src, "train", seed=7)
    b = make_cluttered(src, "train", seed=7)
    c = make_cluttered(src, "train", seed=8)
    assert torch.equal(a.images, b.images)
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes, strict=True))
    assert not torch.equal(a.images, c.images)
    # canvas i does not depend on how many are made
    part = make_cluttered(src, "train", seed=7, count=3)
    assert torch.equal(part.images, a.images[:3])
    # train and test draw differently from the same seed
    assert not torch.equal(make_cluttered(src, "test", seed=7).images, a.images)


def test_bad_sizes_are_user_errors():
    with pytest.raises(UserError, match="canvas=20 is smaller"):
        make_cluttered(items(), "train", canvas=20)
    with pytest.raises(UserError, match="clutter_size=40"):
        make_cluttered(items(), "train", clutter_size=40)


def test_load_cluttered_reads_fashion_mnist(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm", n_train=20, n_test=10)
    split = load_cluttered(root, "test", canvas=40, count={"test": 7})
    assert split.images.shape == (7, 1, 40, 40) and split.images.dtype == torch.uint8
    assert len(split.boxes) == 7 and split.boxes[0].shape == (1, 4)
    assert len(load_cluttered(root, "train").labels) == 20
