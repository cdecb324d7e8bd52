"""Parity of the few-shot protocol with RFS (WangYueFt/rfs; docs/protocols.md).

The expected accuracies come from RFS's ``meta_test`` written out here (eval/meta_eval.py: L2
``normalize``, LogisticRegression(penalty='l2', random_state=0, C=1.0, solver='lbfgs',
max_iter=1000), support images tiled ``n_aug_support_samples`` times as in dataset/cifar.py's
``MetaCIFAR100.__getitem__``, query once), and its ``Proto`` (mean support feature, squared
Euclidean distance) for the unaugmented prototype classifier. The colour jitter is checked
against torchvision's functional ops, which RFS's ColorJitter calls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from sklearn.linear_model import LogisticRegression

from camexp.data.arrays import ArraySplit
from camexp.data.episodes import sample_episodes
from camexp.data.support_views import apply_color_jitter, support_view_loaders
from camexp.metrics.fewshot import episode_accuracies

N_IMAGES, DIM, VIEWS = 60, 12, 5


def rfs_normalize(x):
    return x / np.sqrt((x**2).sum(1, keepdims=True))


def fixed_features(seed=0):
    """Six classes of ten images: class means plus noise; views are noisier copies."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(6), 10)
    means = rng.normal(size=(6, DIM))
    plain = means[labels] + 0.8 * rng.normal(size=(N_IMAGES, DIM))
    views = plain[None] + 0.5 * rng.normal(size=(VIEWS, N_IMAGES, DIM))
    return labels, rfs_normalize(plain), np.stack([rfs_normalize(v) for v in views])


def rfs_episode_lr(support_views, query_x, n_way, k_shot, query_y):
    """One episode of RFS meta_test, classifier 'LR', with n_aug_support_samples views."""
    support_ys = np.repeat(np.arange(n_way), k_shot)
    support_ys = np.tile(support_ys.reshape((-1,)), len(support_views))  # as MetaCIFAR100
    support_xs = np.concatenate(support_views)  # np.tile order: all images, then again
    # penalty="l2" in RFS is the default (scikit-learn 1.8 deprecates passing it)
    clf = LogisticRegression(random_state=0, C=1.0, solver="lbfgs", max_iter=1000)
    clf.fit(support_xs, support_ys)
    return 100.0 * float((clf.predict(query_x) == query_y).mean())


@pytest.mark.parametrize("shot", [1, 3])
def test_logreg_with_five_support_views_matches_rfs(shot):
    labels, plain, views = fixed_features()
    episodes = sample_episodes(labels, n_way=5, k_shot=shot, q_query=4, episodes=6, seed=1)
    got = episode_accuracies(plain, episodes, "logreg", {"C": 1.0, "max_iter": 1000}, views)
    query_y = np.repeat(np.arange(5), 4)
    expected = [
        rfs_episode_lr(
            [v[episodes.support[e].reshape(-1)] for v in views],
            plain[episodes.query[e].reshape(-1)],
            5,
            shot,
            query_y,
        )  # fmt: skip
        for e in range(len(episodes))
    ]
    np.testing.assert_allclose(got, expected)
    # without views the support set is the plain embeddings (support_augmentations=0)
    plain_expected = [
        rfs_episode_lr(
            [plain[episodes.support[e].reshape(-1)]],
            plain[episodes.query[e].reshape(-1)],
            5,
            shot,
            query_y,
        )  # fmt: skip
        for e in range(len(episodes))
    ]
    np.testing.assert_allclose(episode_accuracies(plain, episodes, "logreg"), plain_expected)


def test_prototype_matches_rfs_proto():
    labels, plain, _ = fixed_features(seed=2)
    episodes = sample_episodes(labels, n_way=5, k_shot=3, q_query=4, episodes=5, seed=3)
    got = episode_accuracies(plain, episodes, "prototype", {"metric": "euclidean"})
    query_y = np.repeat(np.arange(5), 4)
    for e in range(len(episodes)):
        support = plain[episodes.support[e].reshape(-1)].reshape(1, 1, 5, 3, DIM).mean(axis=3)
        query = plain[episodes.query[e].reshape(-1)].reshape(1, -1, 1, DIM)
        pred = np.argmax(-((query - support) ** 2).sum(-1), axis=-1).reshape(-1)
        assert got[e] == pytest.approx(100.0 * float((pred == query_y).mean()))


def test_color_jitter_is_torchvisions_in_the_drawn_order():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 6, 5), generator=g).float()
    factors = torch.tensor([[0.7, 1.3, 1.1, 0.6], [1.2, 0.8, 0.6, 1.4], [0.9, 1.4, 0.65, 1.0]])
    order = torch.tensor([[0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1]])
    got = apply_color_jitter(images, factors, order)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for b in range(4):
        x = images[b] / 255.0
        for op in order[b].tolist():
            x = ops[op](x, float(factors[op, b]))
        torch.testing.assert_close(got[b], x * 255.0, atol=1e-3, rtol=1e-5)


def test_array_views_are_seeded_augmentations_of_the_pool():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (7, 3, 8, 8), generator=g, dtype=torch.uint8)
    split = ArraySplit(images, torch.arange(7), [str(i) for i in range(7)])
    common = dict(batch_size=3, mean=(0.5,) * 3, std=(0.5,) * 3, image_size=8, crop_padding=2,
                  hflip=True, device="cpu", seed=4)  # fmt: skip
    views = support_view_loaders(split, VIEWS, **common)
    assert len(views) == VIEWS
    first = torch.cat([x for x, _ in views[0]])
    again = torch.cat([x for x, _ in support_view_loaders(split, 1, **common)[0]])
    second = torch.cat([x for x, _ in views[1]])
    assert first.shape == (7, 3, 8, 8) and torch.equal(first, again)  # the seed fixes a view
    assert not torch.equal(first, second)  # views differ
    plain = (images.float() / 255 - 0.5) / 0.5
    assert not torch.allclose(first, plain)
    assert torch.equal(torch.cat([y for _, y in views[0]]), torch.arange(7))  # pool order
    assert support_view_loaders(split, 0, **common) == []


def test_folder_views_augment_a_copy_of_the_source(tmp_path):
    from PIL import Image

    from camexp.data.fine_grained import ImageList

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    source = ImageList(paths, [0, 1, 1], ["a", "b"])
    common = dict(batch_size=2, mean=(0.5,) * 3, std=(0.5,) * 3, image_size=20,
                  crop_padding=None, hflip=True, device="cpu", seed=0)  # fmt: skip
    views = support_view_loaders(source, 2, **common)
    first = torch.cat([x for x, _ in views[0]])
    assert first.shape == (3, 3, 20, 20)
    assert torch.equal(first, torch.cat([x for x, _ in views[0]]))  # seeded per view
    assert not torch.equal(first, torch.cat([x for x, _ in views[1]]))
    assert source.transform is None  # the caller's dataset keeps its own transform
