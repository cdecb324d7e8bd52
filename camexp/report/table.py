"""Groups -> tables -> text: the long table (one row per group), the paper layout (``--rows`` x
``--cols`` with delta columns and their statistics) and their markdown and LaTeX renderings;
``--format csv`` is one long-format CSV (one row per group and metric, one header).

A cell is a string, a ``Stat`` (mean, sample standard deviation over seeds, count) or a
``Delta`` (camexp.report.stats: a difference with its 95 % interval and test).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import unicodedata
from dataclasses import dataclass

from camexp.errors import UserError
from camexp.report.runs import MISSING, sort_key
from camexp.report.stats import Delta, compare


@dataclass
class Stat:
    mean: float
    std: float | None  # sample std (n - 1); None for a single run (or a NaN among the values)
    n: int
    total: int | None = None  # the group's run count: shown when only some runs have the metric

    @classmethod
    def of(cls, values: list) -> Stat | None:
        """A NaN (or inf) value makes the mean NaN: shown as ``nan``, never silently dropped."""
        values = [float(v) for v in values if isinstance(v, int | float)]
        if not values:
            return None
        if not all(math.isfinite(v) for v in values):
            return cls(float("nan"), None, len(values))
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))


@dataclass
class Table:
    title: str
    header: list
    rows: list  # lists of str | Stat | Delta | None
    note: str = ""


DELTA_NOTE = (
    "Δ: difference of the means [95 % confidence interval], by a paired t-test over the seeds "
    "both sides of the Δ share (Welch's t-test when the seeds do not pair; no interval with one "
    "run); p two-sided."
)


def seeded_values(group, metric: str) -> list:
    """``[(seed, value), ...]`` of the group's runs that have ``metric``."""
    return [(run.seed, run.metrics[metric]) for run in group.runs if metric in run.metrics]


def metric_stat(group, metric: str) -> Stat | None:
    stat = Stat.of([v for _, v in seeded_values(group, metric)])
    if stat is not None:
        stat.total = len(group.runs)
    return stat


def long_table(groups: list, keys: list, metrics: list, baseline: str | None = None) -> Table:
    """One row per group: its key values, mean ± std of each metric, and the seed count. With
    ``baseline`` (a value of the first key: ``--rows loss --baseline '[ce]'``), one delta column
    per metric: each other row's difference from that row, with ``stats.compare``'s interval."""
    base = baseline_row(groups, keys, baseline) if baseline is not None else None
    header = (keys or ["runs"]) + metrics + ["seeds"]
    if base is not None:
        header += [f"Δ {m} (vs {keys[0]}={baseline})" for m in metrics]
    rows = []
    for group in groups:
        cells = [v for _, v in group.key] or ["all"]
        cells += [metric_stat(group, m) for m in metrics]
        cells.append(str(len(group.runs)))
        if base is not None:
            for m in metrics:  # the baseline row has no delta of its own
                same = group is base
                cells.append(
                    None if same else compare(seeded_values(group, m), seeded_values(base, m))
                )
        rows.append(cells)
    return Table("", header, rows, DELTA_NOTE if base is not None else "")


def baseline_row(groups: list, keys: list, baseline: str):
    """The one group whose first key has the value ``baseline``; anything else is one line."""
    if not keys:
        raise UserError(f"--baseline {baseline!r} needs --rows or --cols: there is one group")
    column_values(groups, keys[0], baseline)  # a value of the key, or the same one line as --cols
    found = [g for g in groups if dict(g.key)[keys[0]] == baseline]
    if len(found) > 1:
        raise UserError(f"--baseline {baseline!r} names {len(found)} rows of {keys[0]} "
                        "(use --cols for a baseline per row)")  # fmt: skip
    return found[0]


def column_values(groups: list, col_key: str, baseline: str | None) -> tuple[list, str]:
    """The ``--cols`` values in numeric/alphabetical order and the baseline (the first one
    unless ``--baseline`` names another)."""
    columns = sorted({dict(g.key)[col_key] for g in groups}, key=sort_key)
    if baseline is not None and baseline not in columns:
        raise UserError(
            f"--baseline {baseline!r} is not a value of {col_key}; found: {', '.join(columns)}"
        )
    return columns, baseline if baseline is not None else columns[0]


def pivot_table(
    groups: list, row_keys: list, col_key: str, metrics: list, baseline: str | None
) -> Table:
    """Rows = values of ``row_keys`` (and the metric, when there are several), columns = values
    of ``col_key``; each cell mean ± std (n). One delta column per non-baseline column value:
    its difference from the baseline column, with the interval and test of ``stats.compare``."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    columns, base = column_values(groups, col_key, baseline)
    others = [c for c in columns if c != base]
    by_cell: dict = {}
    for group in groups:
        values = dict(group.key)
        row = tuple(values[k] for k in row_keys)
        by_cell.setdefault(row, {})[values[col_key]] = group
    several = len(metrics) > 1
    header = list(row_keys) + (["metric"] if several or not row_keys else [])
    header += [f"{col_key}={c}" for c in columns] + [f"Δ ({c} - {base})" for c in others]
    rows = []
    for row in sorted(by_cell, key=lambda r: tuple(sort_key(v) for v in r)):
        cells = by_cell[row]
        for metric in metrics:
            line = list(row) + ([metric] if several or not row_keys else [])
            line += [metric_stat(cells[c], metric) if c in cells else None for c in columns]
            for c in others:
                a, b = cells.get(c), cells.get(base)
                line.append(
                    compare(seeded_values(a, metric), seeded_values(b, metric)) if a and b else None
                )
            rows.append(line)
    title = "" if several else metrics[0]
    return Table(title, header, rows, DELTA_NOTE if others else "")


# ---------------------------------------------------------------------------- CSV
def long_csv(groups: list, keys: list, metrics: list, col_key=None, baseline=None) -> str:
    """One long-format CSV (loads in one ``csv.DictReader`` / ``pandas.read_csv``): one row per
    group and metric with ``mean, std, n``; with ``--cols`` also the delta from the baseline
    column's group of the same row keys, its 95 % interval, the test and p."""
    header = list(keys) + ["metric", "mean", "std", "n"]
    base_of = {}
    if col_key:
        _, base = column_values(groups, col_key, baseline)
        header += ["baseline", "delta", "ci95_low", "ci95_high", "test", "p"]
        for group in groups:
            values = dict(group.key)
            if values[col_key] == base:
                base_of[tuple((k, v) for k, v in group.key if k != col_key)] = group
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for group in groups:
        for metric in metrics:
            stat = metric_stat(group, metric)
            line = [dict(group.key)[k] for k in keys] + [metric]
            line += [num(stat.mean), num(stat.std), stat.n] if stat else ["", "", 0]
            if col_key:
                values = dict(group.key)
                base_group = base_of.get(tuple((k, v) for k, v in group.key if k != col_key))
                delta = None
                if base_group is not None and values[col_key] != base:
                    delta = compare(seeded_values(group, metric), seeded_values(base_group, metric))
                line += [f"{col_key}={base}"] if delta else [""]
                line += [num(delta.value), num(delta.low), num(delta.high), delta.test or "",
                         num(delta.p)] if delta else [""] * 5  # fmt: skip
            writer.writerow(line)
    return out.getvalue().rstrip("\n")


def num(value, digits: int = 6):
    return "" if value is None else round(value, digits) if math.isfinite(value) else "nan"


# ---------------------------------------------------------------------------- rendering
def p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _text(cell, digits: int, pm: str, show_n: bool) -> str:
    if cell is None:
        return MISSING
    if isinstance(cell, Delta):
        text = f"{cell.value:+.{digits}f}"
        if cell.low is not None:
            interval = f"[{cell.low:+.{digits}f}, {cell.high:+.{digits}f}]"
            text += f" {interval} {cell.test}, {p_text(cell.p)}"
        return text
    if isinstance(cell, Stat):
        text = f"{cell.mean:.{digits}f}"
        if cell.std is not None:
            text += f"{pm}{cell.std:.{digits}f}"
        if show_n:
            return text + f" ({cell.n})"
        partial = cell.total is not None and cell.n != cell.total  # a mean over some runs only
        return text + (f" ({cell.n} of {cell.total} runs)" if partial else "")
    return str(cell)


def to_markdown(table: Table, digits: int = 2, show_n: bool = False) -> str:
    def esc(text: str) -> str:  # one cell on one line, whatever a run folder's file says
        text = "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)
        return text.replace("|", "\\|")

    lines = [f"**{table.title}**", ""] if table.title else []
    lines.append("| " + " | ".join(esc(h) for h in table.header) + " |")
    lines.append("|" + "|".join("---" for _ in table.header) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(esc(_text(c, digits, " ± ", show_n)) for c in row) + " |")
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)


# TeX's specials, each as text: after this no name or value from a run folder is a command.
LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
    "^": r"\textasciicircum{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}",
    "<": r"$<$", ">": r"$>$", "Δ": r"$\Delta$",
}  # fmt: skip


def one_line(text: str) -> str:
    """Every line break and control character as a space: a field never starts a new line."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def latex_text(text: str) -> str:
    """``text`` as literal LaTeX: specials escaped, on one line."""
    return "".join(LATEX_SPECIALS.get(c, c) for c in one_line(text))


def latex_comment(text: str) -> str:
    """``% text``: a newline inside ``text`` cannot end the comment and start live LaTeX."""
    return "% " + one_line(text)


def to_latex(table: Table, digits: int = 2, show_n: bool = False) -> str:
    def cell(c) -> str:  # a Stat or Delta is our own digits, signs and words
        text = _text(c, digits, r" $\pm$ ", show_n)
        return text.replace("<", "$<$") if isinstance(c, Stat | Delta) else latex_text(text)

    lines = [latex_comment(table.title)] if table.title else []
    lines += [
        r"\begin{tabular}{" + "l" * (len(table.header) - 1) + "r}",
        r"\toprule",
        " & ".join(latex_text(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.note:
        lines.append(latex_comment(table.note))
    return "\n".join(lines)


def render(table: Table, fmt: str, digits: int = 2, show_n: bool = False) -> str:
    if fmt == "latex":
        return to_latex(table, digits, show_n)
    return to_markdown(table, digits, show_n)
