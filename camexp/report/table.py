"""Groups -> tables -> text: the long table (one row per group), the paper layout (``--rows`` x
``--cols`` with a delta column) and their markdown, CSV and LaTeX renderings.

A cell is a string or a ``Stat`` (mean, sample standard deviation over seeds, count) or a
``Delta`` (difference of two means). Renderers decide how each looks.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass

from camexp.report.runs import MISSING, sort_key


@dataclass
class Stat:
    mean: float
    std: float | None  # sample std (n - 1); None for a single run
    n: int

    @classmethod
    def of(cls, values: list) -> Stat | None:
        values = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))


@dataclass
class Delta:
    value: float


@dataclass
class Table:
    title: str
    header: list
    rows: list  # lists of str | Stat | Delta | None


def metric_stat(group, metric: str) -> Stat | None:
    return Stat.of([run.metrics[metric] for run in group.runs if metric in run.metrics])


def long_table(groups: list, keys: list, metrics: list) -> Table:
    """One row per group: its key values, mean ± std of each metric, and the seed count."""
    header = (keys or ["runs"]) + metrics + ["seeds"]
    rows = []
    for group in groups:
        cells = [v for _, v in group.key] or ["all"]
        cells += [metric_stat(group, m) for m in metrics]
        cells.append(str(len(group.runs)))
        rows.append(cells)
    return Table("", header, rows)


def pivot_table(
    groups: list, row_keys: list, col_key: str, metric: str, baseline: str | None
) -> Table:
    """Rows = values of ``row_keys``, columns = values of ``col_key``; each cell mean ± std (n).

    One delta column per non-baseline column value: its mean minus the baseline column's mean
    (baseline: ``baseline`` if given, else the first column in numeric/alphabetical order).
    """
    columns = sorted({dict(g.key)[col_key] for g in groups}, key=sort_key)
    if baseline is not None and baseline not in columns:
        from camexp.errors import UserError

        raise UserError(
            f"--baseline {baseline!r} is not a value of {col_key}; found: {', '.join(columns)}"
        )
    base = baseline if baseline is not None else columns[0]
    others = [c for c in columns if c != base]
    cells: dict = {}
    for group in groups:
        values = dict(group.key)
        row = tuple(values[k] for k in row_keys) or (metric,)
        cells.setdefault(row, {})[values[col_key]] = metric_stat(group, metric)
    header = (list(row_keys) or ["metric"]) + [f"{col_key}={c}" for c in columns]
    header += [f"Δ ({c} - {base})" for c in others] if len(columns) > 1 else []
    rows = []
    for row in sorted(cells, key=lambda r: tuple(sort_key(v) for v in r)):
        stats = cells[row]
        line = list(row) + [stats.get(c) for c in columns]
        if len(columns) > 1:
            for c in others:
                a, b = stats.get(c), stats.get(base)
                line.append(Delta(a.mean - b.mean) if a and b else None)
        rows.append(line)
    return Table(metric, header, rows)


# ---------------------------------------------------------------------------- rendering
def _text(cell, digits: int, pm: str, show_n: bool) -> str:
    if cell is None:
        return MISSING
    if isinstance(cell, Delta):
        return f"{cell.value:+.{digits}f}"
    if isinstance(cell, Stat):
        text = f"{cell.mean:.{digits}f}"
        if cell.std is not None:
            text += f"{pm}{cell.std:.{digits}f}"
        return text + (f" ({cell.n})" if show_n else "")
    return str(cell)


def to_markdown(table: Table, digits: int = 2, show_n: bool = False) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"**{table.title}**", ""] if table.title else []
    lines.append("| " + " | ".join(esc(h) for h in table.header) + " |")
    lines.append("|" + "|".join("---" for _ in table.header) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(esc(_text(c, digits, " ± ", show_n)) for c in row) + " |")
    return "\n".join(lines)


def to_latex(table: Table, digits: int = 2, show_n: bool = False) -> str:
    def esc(text: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                     ("#", r"\#"), ("Δ", r"$\Delta$")):  # fmt: skip
            text = text.replace(a, b)
        return text

    def cell(c) -> str:
        text = _text(c, digits, r" $\pm$ ", show_n)
        return text if isinstance(c, Stat | Delta) else esc(text)

    lines = [f"% {table.title}"] if table.title else []
    lines += [
        r"\begin{tabular}{" + "l" * (len(table.header) - 1) + "r}",
        r"\toprule",
        " & ".join(esc(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def to_csv(table: Table, digits: int = 4) -> str:
    """Machine-readable: a column of Stats becomes three columns (name, name_std, name_n)."""
    stat_cols = [any(isinstance(r[i], Stat) for r in table.rows) for i in range(len(table.header))]
    header = []
    for name, is_stat in zip(table.header, stat_cols, strict=True):
        header += [name, f"{name}_std", f"{name}_n"] if is_stat else [name]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if table.title:
        writer.writerow([f"# {table.title}"])
    writer.writerow(header)
    for row in table.rows:
        line = []
        for c, is_stat in zip(row, stat_cols, strict=True):
            if isinstance(c, Stat):
                line += [round(c.mean, digits), "" if c.std is None else round(c.std, digits), c.n]
            elif is_stat:  # a group without this metric
                line += ["", "", 0]
            elif isinstance(c, Delta):
                line.append(round(c.value, digits))
            else:
                line.append("" if c is None else c)
        writer.writerow(line)
    return out.getvalue().rstrip("\n")


def render(table: Table, fmt: str, digits: int = 2, show_n: bool = False) -> str:
    if fmt == "markdown":
        return to_markdown(table, digits, show_n)
    if fmt == "latex":
        return to_latex(table, digits, show_n)
    return to_csv(table)
