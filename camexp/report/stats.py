"""The statistics behind a delta column: is ``treatment - baseline`` more than seed noise?

Two groups of runs (one per ``--cols`` value) are compared on one metric:

- **paired t-test** when both groups hold the same seeds (each seed once, at least two):
  ``d_i = a_i - b_i`` per seed, ``mean(d) ± t_{0.975, n-1} * s_d / sqrt(n)``;
- **Welch's t-test** otherwise (at least two runs in each group):
  ``mean(a) - mean(b) ± t_{0.975, df} * SE``, ``SE^2 = s_a^2 / n_a + s_b^2 / n_b``,
  ``df = SE^4 / ((s_a^2 / n_a)^2 / (n_a - 1) + (s_b^2 / n_b)^2 / (n_b - 1))`` (Welch-Satterthwaite);
- the difference of the means alone (no interval) when a group has a single run.

``p`` is two-sided. Student's t distribution comes from scipy (a scikit-learn dependency).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass
class Delta:
    value: float  # treatment mean - baseline mean (the mean of the paired differences)
    low: float | None = None  # the 95 % confidence interval of the difference
    high: float | None = None
    test: str | None = None  # "paired t" | "Welch t" | None (a group has one run)
    p: float | None = None  # two-sided
    n: int = 0  # seed pairs (paired) or runs in all (Welch)
    df: float | None = None


def t_quantile(q: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def t_two_sided_p(t_value: float, df: float) -> float:
    from scipy.stats import t

    return float(2 * t.sf(abs(t_value), df))


def _interval(diff: float, se: float, df: float, test: str, n: int) -> Delta:
    if se == 0:  # every difference identical: no spread to test against
        p = 1.0 if diff == 0 else 0.0
        return Delta(diff, diff, diff, test, p, n, df)
    half = t_quantile(0.5 + CONFIDENCE / 2, df) * se
    return Delta(diff, diff - half, diff + half, test, t_two_sided_p(diff / se, df), n, df)


def paired(a: list[float], b: list[float]) -> Delta:
    """``a[i]`` and ``b[i]`` share a seed."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    return _interval(statistics.fmean(d), statistics.stdev(d) / math.sqrt(n), n - 1, "paired t", n)


def welch(a: list[float], b: list[float]) -> Delta:
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se2 = va + vb
    denominator = va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)
    df = se2**2 / denominator if denominator > 0 else len(a) + len(b) - 2
    diff = statistics.fmean(a) - statistics.fmean(b)
    return _interval(diff, math.sqrt(se2), df, "Welch t", len(a) + len(b))


def compare(treatment: list, baseline: list) -> Delta | None:
    """``[(seed, value), ...]`` of each group -> the delta with its interval and test; None when
    a group is empty. Seeds pair when each group holds each seed once and both hold the same
    seeds. Non-finite values give a NaN delta without a test."""
    if not treatment or not baseline:
        return None
    a, b = [v for _, v in treatment], [v for _, v in baseline]
    if not all(math.isfinite(v) for v in a + b):
        return Delta(float("nan"))
    ta, tb = dict(treatment), dict(baseline)
    unique = len(ta) == len(treatment) and len(tb) == len(baseline)
    if unique and set(ta) == set(tb) and len(ta) >= 2:
        seeds = sorted(ta, key=str)
        return paired([ta[s] for s in seeds], [tb[s] for s in seeds])
    if len(a) >= 2 and len(b) >= 2:
        return welch(a, b)
    return Delta(statistics.fmean(a) - statistics.fmean(b), n=len(a) + len(b))
