"""N-way K-shot episodes: which images form each episode's support and query sets (the classifiers
fitted per episode and the scoring are camexp/metrics/fewshot.py).

The protocol of Tian et al. (ECCV 2020, "Rethinking Few-Shot Image Classification"; WangYueFt/rfs
eval/meta_eval.py): a frozen backbone embeds every image (global-pooled penultimate features,
L2-normalised); each episode draws N classes, K support and Q query images per class, fits a
simple classifier on the support set and scores it on the queries. As RFS
(``n_aug_support_samples=5``), each support image enters the classifier as A views drawn through
the training augmentation (RFS's RandomCrop with padding,
ColorJitter(0.4, 0.4, 0.4), RandomHorizontalFlip; camexp/data/support_views.py), the queries
once, unaugmented. Unlike RFS,
whose loader draws fresh views per episode, every image's A views are embedded once and reused by
the episodes it appears in (A passes over the pool instead of one per episode). Episodes depend
only on the labels and a seed, never on the model, so two backbones are compared on identical
episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camexp.errors import UserError


@dataclass
class Episodes:
    """Indices into the feature array: ``support`` (E, N, K), ``query`` (E, N, Q); the episode
    label of ``support[e, n, :]`` and ``query[e, n, :]`` is ``n``; ``classes`` (E, N) are the
    dataset labels drawn."""

    support: np.ndarray
    query: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)


def check_episode_shape(
    labels: np.ndarray, n_way: int, k_shot: int, q_query: int, class_names=None
) -> None:
    """One clear line when the pool cannot hold an episode (say which class is short)."""
    if n_way < 2 or k_shot < 1 or q_query < 1:
        raise UserError(
            f"episodes need n_way >= 2, k_shot >= 1, q_query >= 1 (got {n_way}, {k_shot}, "
            f"{q_query})"
        )
    present, counts = np.unique(labels, return_counts=True)
    if n_way > len(present):
        raise UserError(
            f"{n_way}-way episodes need {n_way} classes but the split has {len(present)}; "
            f"set fewshot.n_way <= {len(present)}"
        )
    short = counts < k_shot + q_query
    if short.any():
        c = int(present[short][0])
        name = class_names[c] if class_names is not None and c < len(class_names) else c
        raise UserError(
            f"class {name!r} has {int(counts[short][0])} images, fewer than k_shot + q_query = "
            f"{k_shot} + {q_query}; lower fewshot.q_query or fewshot.shots"
        )


def sample_episodes(
    labels, n_way: int, k_shot: int, q_query: int, episodes: int, seed: int
) -> Episodes:
    """Draw ``episodes`` episodes from a fixed seed: N distinct classes, then K + Q distinct
    images of each, the first K the support and the last Q the queries."""
    labels = np.asarray(labels, dtype=np.int64)
    check_episode_shape(labels, n_way, k_shot, q_query)
    if episodes < 1:
        raise UserError(f"fewshot.episodes must be >= 1, got {episodes}")
    present = np.unique(labels)
    by_class = {int(c): np.flatnonzero(labels == c) for c in present}
    rng = np.random.default_rng(seed)
    support = np.empty((episodes, n_way, k_shot), dtype=np.int64)
    query = np.empty((episodes, n_way, q_query), dtype=np.int64)
    classes = np.empty((episodes, n_way), dtype=np.int64)
    for e in range(episodes):
        classes[e] = rng.choice(present, size=n_way, replace=False)
        for n, c in enumerate(classes[e]):
            picked = rng.choice(by_class[int(c)], size=k_shot + q_query, replace=False)
            support[e, n], query[e, n] = picked[:k_shot], picked[k_shot:]
    return Episodes(support, query, classes)
