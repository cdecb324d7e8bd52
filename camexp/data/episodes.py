"""N-way K-shot episodes over cached features, and the two classifiers fitted per episode.

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
from threadpoolctl import threadpool_limits

from camexp.errors import UserError
from camexp.run.progress import track

CLASSIFIERS = ("logreg", "prototype")


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


def confidence_interval(accuracies) -> float:
    """Half-width of the 95% interval of the mean: 1.96 * std / sqrt(episodes), population std
    (ddof 0), as in Chen et al. (2019)'s and most few-shot code."""
    acc = np.asarray(accuracies, dtype=np.float64)
    return float(1.96 * acc.std() / np.sqrt(len(acc)))


# ----------------------------------------------------------------------------- classifiers


def logistic_regression(support_x, support_y, query_x, *, C: float = 1.0, max_iter: int = 1000):
    """Multinomial L2-regularised logistic regression (scikit-learn's lbfgs), as in Tian et al."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit(support_x, support_y)
    return clf.predict(query_x)


def nearest_prototype(support_x, support_y, query_x, *, metric: str = "euclidean"):
    """Each class's prototype is its mean support feature (Snell et al. 2017); a query takes the
    class of the nearest prototype: squared Euclidean distance, or cosine similarity."""
    classes = np.unique(support_y)
    protos = np.stack([support_x[support_y == c].mean(0) for c in classes])  # (N, C)
    if metric == "cosine":
        protos = protos / np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-12)
        scores = query_x @ protos.T  # (NQ, N)
    elif metric == "euclidean":
        scores = -((query_x[:, None, :] - protos[None]) ** 2).sum(-1)  # (NQ, N)
    else:
        raise UserError(f"fewshot.prototype_metric={metric!r}; use euclidean or cosine")
    return classes[scores.argmax(1)]


def classify_episode(name: str, support_x, support_y, query_x, options: dict):
    if name == "logreg":
        return logistic_regression(support_x, support_y, query_x, **options)
    if name == "prototype":
        return nearest_prototype(support_x, support_y, query_x, **options)
    raise UserError(f"unknown few-shot classifier {name!r}; valid: {', '.join(CLASSIFIERS)}")


def episode_accuracies(
    features: np.ndarray,
    episodes: Episodes,
    classifier: str,
    options=None,
    support_features: np.ndarray | None = None,
):
    """Accuracy (percent) of ``classifier`` on each episode; ``features`` (N_images, C) embed the
    queries, and the support set too unless ``support_features`` (A, N_images, C) gives A
    augmented views of every image (RFS: the support set is all A views of the K images)."""
    options = options or {}
    n_way, k_shot = episodes.support.shape[1:]
    q_query = episodes.query.shape[2]
    views = 1 if support_features is None else support_features.shape[0]
    support_y = np.tile(np.repeat(np.arange(n_way), k_shot), views)  # RFS: np.tile over views
    query_y = np.repeat(np.arange(n_way), q_query)
    accs = np.empty(len(episodes))
    # One BLAS thread: an episode is tiny (25 x 64), and thread start-up made each fit 20x
    # slower on a busy 2-core machine (measured 90 ms vs 4 ms per logistic regression).
    with threadpool_limits(limits=1):
        for e in track(range(len(episodes)), f"{classifier} episodes", unit="episodes"):
            index = episodes.support[e].reshape(-1)
            if support_features is None:
                sx = features[index]  # (N*K, C)
            else:
                sx = support_features[:, index].reshape(-1, features.shape[1])  # (A*N*K, C)
            qx = features[episodes.query[e].reshape(-1)]  # (N*Q, C)
            pred = classify_episode(classifier, sx, support_y, qx, options)
            accs[e] = 100.0 * float((pred == query_y).mean())
    return accs
