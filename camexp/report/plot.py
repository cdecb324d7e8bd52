"""``camexp-report --plot``: validation-accuracy curves per group from each run's metrics.csv,
the mean over seeds as a line and mean ± std as a band (matplotlib's Agg backend, no display)."""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from camexp.errors import UserError


def read_curve(run_dir: str, column: str) -> dict:
    """{epoch: value} for ``column`` of ``run_dir/metrics.csv``; {} when absent."""
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(path):
        return {}
    curve = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                epoch, value = int(row["epoch"]), float(row.get(column, ""))
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(value):
                curve[epoch] = value
    return curve


def group_curve(runs: list, column: str):
    """Epochs, mean and std over the runs that logged each epoch (an epoch needs >= 1 run)."""
    curves = [c for c in (read_curve(r.path, column) for r in runs) if c]
    if not curves:
        return None
    epochs = sorted(set().union(*curves))
    values = [[c[e] for c in curves if e in c] for e in epochs]
    mean = np.array([np.mean(v) for v in values])
    std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values])
    return np.array(epochs), mean, std, len(curves)


def plot_curves(groups: list, out_png: str, column: str = "val/acc1", title: str = "") -> int:
    """Draw one line (mean) and band (± std over seeds) per group; returns the curves drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from camexp.report.pictures import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    drawn = 0
    for group in groups:
        curve = group_curve(group.runs, column)
        if curve is None:
            continue
        epochs, mean, std, n = curve
        (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=f"{group.label()} (n={n})")
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        drawn += 1
    if drawn == 0:
        plt.close(fig)
        raise UserError(f"--plot: no completed run has a {column!r} column in its metrics.csv")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(axis_label(column))
    ax.set_title(title or f"{column}: mean over seeds, band = ± 1 std")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_png)  # atomic: never a half-written PNG under the final name
    return drawn


def axis_label(column: str) -> str:
    """Accuracies (``val/acc1``, ``test/MaxBoxAccV2``) are percentages; losses and the rest
    (``train/cam``, ``lr``, ``epoch_time_s``) are not."""
    return f"{column} (%)" if "acc" in column.split("/")[-1].lower() else column
