"""The in-memory data path, the batch regularizers and the learning-rate schedules.

Expectations are written out by hand or recomputed by plain code in the test.
"""

import math

import numpy as np
import pytest
import torch

from camexp.data.memory import InMemoryLoader
from camexp.data.regularizers import Regularizer
from camexp.errors import UserError
from camexp.schedules import warmup_cosine, warmup_multistep


def uint8_images(n=10, c=1, h=6, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def loader(images, labels=None, batch=4, **kwargs):
    labels = torch.arange(len(images)) if labels is None else labels
    kwargs.setdefault("mean", (0.0,) * images.shape[1])
    kwargs.setdefault("std", (1 / 255,) * images.shape[1])  # outputs in pixel units
    kwargs.setdefault("train", False)
    return InMemoryLoader(images, labels, batch, **kwargs)


# ----------------------------------------------------------------------------- InMemoryLoader
def test_batches_and_shapes():
    images = uint8_images(n=10, c=3, h=5, w=7)
    batches = list(loader(images, batch=4))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 5, 7) and y.dtype == torch.int64
    assert len(loader(images, batch=4)) == 3
    dropped = loader(images, batch=4, drop_last=True, train=True)
    assert len(dropped) == 2 and [len(y) for _, y in dropped] == [4, 4]
    # eval keeps the order; one training epoch is a permutation of all images
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))
    epoch = torch.cat([y for _, y in loader(images, batch=3, train=True, seed=1)])
    assert sorted(epoch.tolist()) == list(range(10)) and epoch.tolist() != list(range(10))


def test_normalisation_with_known_mean_and_std():
    images = torch.tensor([[[[0, 51]], [[102, 255]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
    x, _ = next(iter(loader(images, mean=(0.2, 0.5), std=(0.5, 0.25), batch=1)))
    # channel 0: (0/255 - .2)/.5 = -.4, (51/255 - .2)/.5 = 0; channel 1: (.4 - .5)/.25 = -.4,
    # (1 - .5)/.25 = 2
    torch.testing.assert_close(x, torch.tensor([[[[-0.4, 0.0]], [[-0.4, 2.0]]]]))


def epoch_of(seed, **kwargs):
    images = uint8_images(n=12, h=8, w=8)
    kw = dict(train=True, crop_padding=2, hflip=True, seed=seed, batch=5)
    return list(loader(images, **{**kw, **kwargs}))


def test_same_seed_same_order_and_crops():
    a, b, c = epoch_of(3), epoch_of(3), epoch_of(4)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        assert ya.tolist() == yb.tolist()
    assert any(
        ya.tolist() != yc.tolist() or not torch.equal(xa, xc)
        for (xa, ya), (xc, yc) in zip(a, c, strict=True)
    )


def shifted(image, dy, dx):
    """``image`` (C, H, W) moved by (dy, dx), zero filled: a crop of the zero-padded image."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    src = image[:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[:, max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)] = src
    return out


def test_crop_shifts_content_by_at_most_the_padding():
    images = uint8_images(n=40, h=8, w=8, seed=5)
    pad = 2
    seen_shifts = set()
    for x, y in loader(images, batch=8, train=True, crop_padding=pad, seed=0):
        for out, index in zip(x, y, strict=True):
            original = images[index].float()
            matches = [
                (dy, dx)
                for dy in range(-pad, pad + 1)
                for dx in range(-pad, pad + 1)
                if torch.equal(out, shifted(original, dy, dx))
            ]
            assert matches, "a crop is not the image shifted by at most the padding"
            seen_shifts.add(matches[0])
    assert len(seen_shifts) > 5  # the offsets really vary


def test_hflip_mirrors_some_images_and_keeps_others():
    images = uint8_images(n=64, h=4, w=5, seed=6)
    flipped = kept = 0
    for x, y in loader(images, batch=16, train=True, hflip=True, seed=0):
        for out, index in zip(x, y, strict=True):
            original = images[index].float()
            if torch.equal(out, original):
                kept += 1
            else:
                assert torch.equal(out, original.flip(-1))
                flipped += 1
    assert flipped > 10 and kept > 10
    # evaluation never augments
    x, y = next(iter(loader(images, batch=64, train=False, hflip=True, crop_padding=2)))
    assert torch.equal(x, images.float())


# ----------------------------------------------------------------------------- Regularizer
K = 6


def labels_for(b=8):
    return torch.arange(b) % K


def test_targets_rows_sum_to_one_for_every_mode():
    images = torch.rand(8, 3, 16, 16)
    modes = [
        {},
        {"label_smoothing": 0.1},
        {"mixup_alpha": 0.8},
        {"cutmix_alpha": 1.0},
        {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
        {"cutout_size": 4},
    ]
    for mode in modes:
        reg = Regularizer(K, seed=0, **mode)
        for _ in range(5):
            out, targets = reg(images, labels_for())
            assert out.shape == images.shape and targets.shape == (8, K)
            torch.testing.assert_close(targets.sum(1), torch.ones(8))
            assert (targets >= 0).all()


def test_label_smoothing_values_are_exact():
    reg = Regularizer(10, label_smoothing=0.1)
    targets = reg.soft_targets(torch.tensor([3, 0]))
    # eps / K = 0.01 off the label; 1 - eps + eps / K = 0.91 on it
    expected = torch.full((2, 10), 0.01)
    expected[0, 3] = expected[1, 0] = 0.91
    torch.testing.assert_close(targets, expected)
    plain = Regularizer(10).soft_targets(torch.tensor([7]))
    assert plain[0, 7] == 1.0 and plain.sum() == 1.0


def test_mixup_mixes_images_and_targets_with_one_lambda():
    images = torch.rand(8, 1, 5, 5)
    labels = labels_for()
    reg = Regularizer(K, mixup_alpha=1.0, seed=3)
    for _ in range(5):
        out, targets = reg(images, labels)
        lam = targets[0, labels[0]].item()  # image 0 is mixed with image 7 (another class)
        assert 0.0 < lam < 1.0
        torch.testing.assert_close(out, lam * images + (1 - lam) * images.flip(0))
        one_hot = torch.nn.functional.one_hot(labels, K).float()
        torch.testing.assert_close(targets, lam * one_hot + (1 - lam) * one_hot.flip(0))


def test_cutmix_lambda_is_the_kept_area():
    b, h, w = 8, 12, 12
    images = torch.arange(1, b + 1, dtype=torch.float32)[:, None, None, None].expand(b, 1, h, w)
    labels = labels_for(b)
    reg = Regularizer(K, cutmix_alpha=1.0, seed=0)
    pasted_some = False
    for _ in range(10):
        out, targets = reg(images, labels)
        for i in range(b):
            own = (out[i] == i + 1).float().mean().item()
            partner = (out[i] == b - i).float().mean().item()  # the reversed batch
            assert own + partner == pytest.approx(1.0)
            assert targets[i, labels[i]].item() == pytest.approx(own, abs=1e-6)
            assert targets[i, labels[b - 1 - i]].item() == pytest.approx(partner, abs=1e-6)
            pasted_some |= partner > 0
        # the pasted region is one axis-aligned box, the same for every image
        box = out[0, 0] != 1
        if box.any():
            rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
            assert box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    assert pasted_some


@pytest.mark.parametrize("size", [5, 6])
def test_cutout_zeros_one_square(size):
    b, h, w = 48, 32, 32
    images = torch.ones(b, 2, h, w)
    out, targets = Regularizer(K, cutout_size=size, seed=0)(images, labels_for(b))
    torch.testing.assert_close(targets, torch.nn.functional.one_hot(labels_for(b), K).float())
    interior = 0
    for img in out:
        zero = img[0] == 0
        assert torch.equal(zero, img[1] == 0)  # same square in every channel
        rows, cols = zero.any(1).nonzero(), zero.any(0).nonzero()
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert zero[r0:r1, c0:c1].all() and zero.sum() == (r1 - r0) * (c1 - c0)  # a box
        assert r1 - r0 <= size and c1 - c0 <= size
        if r0 > 0 and c0 > 0 and r1 < h and c1 < w:  # not clipped by the border
            interior += 1
            assert (r1 - r0, c1 - c0) == (size, size), "cutout_size is the side of the square"
    assert interior > 10


def test_prob_zero_never_mixes():
    images = torch.rand(8, 1, 4, 4)
    out, targets = Regularizer(K, mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0)(images, labels_for())
    assert torch.equal(out, images)
    assert torch.equal(targets, torch.nn.functional.one_hot(labels_for(), K).float())


# ----------------------------------------------------------------------------- schedules
def lrs(scheduler, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    out.append(optimizer.param_groups[0]["lr"])
    return out


def sgd(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_then_cosine():
    opt = sgd()
    # 3 epochs of 4 steps, 1 warm-up epoch: steps 0..3 ramp (s + 1) / 4; then cosine over 8
    got = lrs(warmup_cosine(opt, epochs=3, steps_per_epoch=4, warmup_epochs=1), opt, 12)
    expected = [0.1 * (s + 1) / 4 for s in range(4)]
    expected += [0.1 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 8)) for s in range(4, 13)]
    assert got == pytest.approx(expected, abs=1e-9)
    assert got[4] == pytest.approx(0.1) and got[-1] == pytest.approx(0.0, abs=1e-12)


def test_cosine_endpoints_with_a_floor():
    opt = sgd(lr=0.2)
    got = lrs(warmup_cosine(opt, epochs=2, steps_per_epoch=5, min_lr_ratio=0.1), opt, 10)
    assert got[0] == pytest.approx(0.2)  # no warm-up: starts at the base lr
    assert got[5] == pytest.approx(0.2 * (0.1 + 0.9 * 0.5))  # halfway: mid-point of the floor
    assert got[10] == pytest.approx(0.02)  # the end: min_lr_ratio * lr
    assert all(a >= b for a, b in zip(got, got[1:], strict=False))


def test_multistep_decays_at_the_milestones():
    opt = sgd()
    sched = warmup_multistep(opt, epochs=4, steps_per_epoch=2, milestones=[1, 3], gamma=0.1)
    got = lrs(sched, opt, 8)
    expected = [0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001]
    assert got == pytest.approx(expected)


def test_multistep_with_warmup():
    opt = sgd()
    sched = warmup_multistep(
        opt, epochs=2, steps_per_epoch=2, milestones=[1], gamma=0.5, warmup_epochs=1
    )
    assert lrs(sched, opt, 4) == pytest.approx([0.05, 0.1, 0.05, 0.05, 0.05])


def test_milestone_beyond_the_epochs_is_a_user_error():
    with pytest.raises(UserError, match=r"milestones \[5, 11\] lie beyond epochs=10"):
        warmup_multistep(sgd(), epochs=10, steps_per_epoch=3, milestones=[5, 11])


def test_numpy_rng_is_seeded():
    a = Regularizer(K, mixup_alpha=1.0, seed=9)
    b = Regularizer(K, mixup_alpha=1.0, seed=9)
    images = torch.rand(8, 1, 4, 4)
    for _ in range(3):
        assert torch.equal(a(images, labels_for())[1], b(images, labels_for())[1])
    assert isinstance(a.rng, np.random.Generator)


def test_an_abandoned_iteration_does_not_leak_into_the_next_one():
    """Breaking out of a loader (e.g. a metric over the first N images) must not make the next
    pass start mid-way: only a checkpoint's state resumes inside an epoch."""
    from camexp.data.memory import InMemoryLoader

    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).clone()
    loader = InMemoryLoader(images, torch.arange(10), 2, mean=(0.0,), std=(1.0 / 255,),
                            train=False)  # fmt: skip
    for _ in loader:
        break
    assert sum(len(labels) for _, labels in loader) == 10
