"""Episodes, the confidence interval and the two per-episode classifiers."""

import numpy as np
import pytest

from camexp.data.episodes import sample_episodes
from camexp.errors import UserError
from camexp.metrics.fewshot import confidence_interval, episode_accuracies, nearest_prototype

LABELS = np.repeat(np.arange(8), 30)  # 8 classes, 30 images each


def test_episode_shape_classes_and_disjoint_support_query():
    ep = sample_episodes(LABELS, n_way=5, k_shot=3, q_query=4, episodes=20, seed=0)
    assert ep.support.shape == (20, 5, 3) and ep.query.shape == (20, 5, 4)
    for e in range(20):
        assert len(set(ep.classes[e])) == 5  # N distinct classes
        for n in range(5):
            s, q = set(ep.support[e, n]), set(ep.query[e, n])
            assert len(s) == 3 and len(q) == 4 and not s & q  # K + Q distinct images
            assert set(LABELS[list(s | q)]) == {ep.classes[e, n]}  # all of class n


def test_episodes_repeat_for_a_seed_and_change_with_another():
    a = sample_episodes(LABELS, 5, 1, 15, 10, seed=3)
    b = sample_episodes(LABELS, 5, 1, 15, 10, seed=3)
    c = sample_episodes(LABELS, 5, 1, 15, 10, seed=4)
    assert np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)
    assert not np.array_equal(a.query, c.query)


def test_too_many_ways_and_too_few_images_are_one_line_errors():
    with pytest.raises(UserError, match="5-way episodes need 5 classes but the split has 3"):
        sample_episodes(np.repeat(np.arange(3), 30), 5, 1, 15, 10, seed=0)
    labels = np.concatenate([np.repeat(np.arange(5), 30), [5] * 10])  # class 5 has 10 images
    with pytest.raises(UserError, match="class 5 has 10 images"):
        sample_episodes(labels, 5, 5, 15, 10, seed=0)


def test_confidence_interval_on_a_fixed_vector():
    # mean 65, population std sqrt(125) = 11.1803; 1.96 * 11.1803 / sqrt(4) = 10.9567
    assert confidence_interval([50.0, 60.0, 70.0, 80.0]) == pytest.approx(10.95673, abs=1e-4)
    assert confidence_interval([40.0] * 600) == 0.0


def test_nearest_prototype_hand_example():
    support = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0]])  # protos (0,1), (10,1)
    labels = np.array([0, 0, 1, 1])
    query = np.array([[4.9, 5.0], [5.1, -3.0], [9.0, 9.0]])
    assert nearest_prototype(support, labels, query).tolist() == [0, 1, 1]


@pytest.mark.parametrize("classifier", ["logreg", "prototype"])
def test_separable_features_score_100(classifier):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 25)
    centres = np.eye(16)[:6] * 10.0  # far-apart class centres
    feats = centres[labels] + rng.normal(scale=0.1, size=(len(labels), 16))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    for shot in (1, 5):
        ep = sample_episodes(labels, 5, shot, 15, 30, seed=0)
        accs = episode_accuracies(feats, ep, classifier)
        assert accs.shape == (30,) and (accs == 100.0).all()


def test_random_features_score_near_chance():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(5), 40)
    feats = rng.normal(size=(len(labels), 32))
    ep = sample_episodes(labels, 5, 1, 15, 200, seed=0)
    assert 12.0 < episode_accuracies(feats, ep, "prototype").mean() < 28.0  # chance: 20%
