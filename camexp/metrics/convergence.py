"""Convergence speed as numbers: the first epoch at which validation accuracy reaches a fraction
(90%, 95%, 99%) of the run's final value, so "converges faster" can be compared across runs.

The reference is the *final* (last-epoch) accuracy, as the CAM-loss paper's convergence claim is
about reaching the end result sooner; a run that peaks early and then declines still counts.
"""

FRACTIONS = (0.90, 0.95, 0.99)


def convergence_epochs(accuracies: list[float], fractions=FRACTIONS) -> dict[str, int | None]:
    """``{"converge/epoch_<p>pct": epoch}`` with 1-based epochs; empty for an empty history.

    ``accuracies`` is the validation accuracy after each epoch, in order. An epoch counts when
    its accuracy is >= fraction * final; a non-finite final value gives ``None`` for each key.
    """
    if not accuracies:
        return {}
    final = accuracies[-1]
    out = {}
    for fraction in fractions:
        threshold = fraction * final
        reached = (epoch for epoch, acc in enumerate(accuracies, start=1) if acc >= threshold)
        out[f"converge/epoch_{round(100 * fraction)}pct"] = next(reached, None)
    return out
