"""Few-shot evaluation (Tian et al., ECCV 2020; WangYueFt/rfs eval/meta_eval.py): the classifier
fitted on each episode's support features (logistic regression or nearest prototype), its accuracy
on the queries, and the 95 % interval over episodes. Episodes come from camexp/data/episodes.py.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from camexp.data.episodes import Episodes
from camexp.errors import UserError
from camexp.run.progress import track

CLASSIFIERS = ("logreg", "prototype")


def confidence_interval(accuracies) -> float:
    """Half-width of the 95% interval of the mean: 1.96 * std / sqrt(episodes), population std
    (ddof 0), as in Chen et al. (2019)'s and most few-shot code."""
    acc = np.asarray(accuracies, dtype=np.float64)
    return float(1.96 * acc.std() / np.sqrt(len(acc)))


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
        raise UserError(f"fewshot.prototype.metric={metric!r}; use euclidean or cosine")
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
