"""The evidence tables: camexp-report over the kept runs of each table, with where and at what
cost they ran, the convergence table (``reach``) and the figures (``curves``, ``cams``)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess

from evidence_plan import finished

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def table_markdown(table: dict, runs: list, out: str, report: list) -> str:
    """One table: camexp-report over the kept runs, and where and at what cost they ran."""
    folder = os.path.join(out, table["name"])
    done = [r for r in runs if r.table == table["name"] and finished(r, out)]
    lines = [f"## {table['title']}", "", " ".join(table.get("about", "").split()), ""]
    planned = sum(r.table == table["name"] for r in runs)
    if not done:
        return "\n".join([*lines, f"No finished runs yet (0 of {planned} planned).", ""])
    machines = []
    for r in done:
        with open(os.path.join(folder, r.name, "machine.json")) as f:
            machines.append(json.load(f))
    state = "complete" if len(done) == planned else "IN PROGRESS: not yet a result"
    where = machines_markdown(done, machines)
    result = subprocess.run(
        [*report, *(os.path.join(folder, r.name) for r in done), *table.get("report", [])],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    body = result.stdout.strip() if result.returncode == 0 else f"camexp-report: {result.stderr}"
    lines += [
        f"Runs: {len(done)} of {planned} finished ({state}). " + "\n".join(where),
        "",
        body,
        "",
        *reach_markdown(table, done, folder),
        *figures(table, done, folder, report),
    ]
    return "\n".join(lines)


def machines_markdown(done: list, machines: list) -> list:
    """Where a table's runs ran and what they cost, per machine: CPU-hours of two CPU models are
    not one unit, so each machine gets its own total, and a table of more than one machine says
    which run ran where."""
    hours: dict = {}
    for m in machines:
        kind, cost = ("GPU", m["wall_s"] / 3600) if m.get("gpu") else ("CPU", m["cpu_hours"])
        key = (kind, m.get("gpu") or m["cpu"])
        runs, total = hours.get(key, (0, 0.0))
        hours[key] = (runs + 1, total + cost)
    threads = sorted({m["threads"] for m in machines if not m.get("gpu")})
    where = [f"{kind}: {name} ({runs} run{'s' * (runs != 1)}, {total:.2f} {kind}-hours)."
             for (kind, name), (runs, total) in sorted(hours.items())]  # fmt: skip
    if threads:
        where.append(f"CPU runs: {', '.join(map(str, threads))} thread(s) per run.")
    if len(hours) > 1:  # one table, two machines: a column says which run ran where
        where += ["", "| run | ran on |", "|---|---|"]
        pairs = zip(done, machines, strict=True)
        where += [f"| {r.name} | {m.get('gpu') or m['cpu']} |" for r, m in pairs]
        where.append("")
    return where


def read_curve(path: str, metric: str) -> list:
    """[(epoch, value)] of one metrics.csv column, epochs where it was logged as a finite number
    (a NaN never 'reaches' anything)."""
    curve = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                epoch, value = int(row["epoch"]), float(row[metric])
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(value):
                curve.append((epoch, value))
    return curve


def variant_of(name: str) -> str:
    """A run's folder name without its seed: the cell its seeds share."""
    return "_".join(part for part in name.split("_") if not part.startswith("seed-")) or "all"


def reach_markdown(table: dict, done: list, folder: str) -> list:
    """The convergence claim (``reach``): the first epoch at which each run's ``metric`` reaches
    the final value of the ``baseline`` cell (mean over its seeds), per cell: mean and range over
    the seeds that reach it, and how many never do."""
    spec = table.get("reach")
    if not spec:
        return []
    metric, baseline = spec["metric"], spec["baseline"]
    curves = {r.name: read_curve(os.path.join(folder, r.name, "metrics.csv"), metric) for r in done}
    finals = [c[-1][1] for n, c in curves.items() if variant_of(n) == baseline and c]
    if not finals:
        return [f"Epochs to reach {baseline}'s final {metric}: no finished {baseline} run yet.", ""]
    target = sum(finals) / len(finals)
    cells: dict = {}
    for name, curve in curves.items():
        first = next((epoch for epoch, value in curve if value >= target), None)
        cells.setdefault(variant_of(name), []).append(first)
    lines = [
        f"Epochs to reach {target:.2f} % {metric}, the final {metric} of {baseline} (mean of "
        f"{len(finals)} seed(s)), per run; a run that never reaches it counts as not reaching:",
        "",
        "| cell | first epoch (mean) | range | runs reaching |",
        "|---|---|---|---|",
    ]
    for cell, firsts in cells.items():
        hit = [f for f in firsts if f is not None]
        mean = f"{sum(hit) / len(hit):.1f}" if hit else "never"
        span = f"{min(hit)}-{max(hit)}" if hit else "-"
        lines.append(f"| {cell} | {mean} | {span} | {len(hit)} of {len(firsts)} |")
    return [*lines, ""]


def figures(table: dict, done: list, folder: str, report: list) -> list:
    """``curves: METRIC``: the cells' curves as one plot; ``cams: [RUN_A, RUN_B]``: their CAMs
    side by side, once both runs are kept (drawn from their kept last.pt)."""
    lines = []
    names = {r.name for r in done}
    if table.get("curves") and done:
        png = os.path.join(folder, f"curves_{table['curves'].replace('/', '_')}.png")
        subprocess.run(
            [*report, *(os.path.join(folder, n) for n in sorted(names)), *table.get("report", []),
             "--plot", png, "--plot-metric", table["curves"]],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        if os.path.isfile(png):
            lines += [f"![{table['curves']} per cell]({table['name']}/{os.path.basename(png)})", ""]
    pair = table.get("cams") or []
    if pair and set(pair) <= names:
        png = os.path.join(folder, "cams.png")
        if not os.path.isfile(png):
            subprocess.run(
                [*report, "--cams", *(os.path.join(folder, n) for n in pair), "--cams-out", png],
                cwd=ROOT, capture_output=True, text=True,
            )  # fmt: skip
        if os.path.isfile(png):
            lines += [f"![CAMs of {' and '.join(pair)}]({table['name']}/cams.png)", ""]
    return lines


def write_tables(spec: dict, runs: list, out: str, report: list) -> str:
    """tables.md: every table of the spec (a sweep of some tables rewrites all of them), from the
    runs of ``plan(spec)``."""
    tables = spec["tables"]
    text = "\n".join(
        [
            "# Evidence tables",
            "",
            "Written by `scripts/reproduce/evidence.sh` from the finished runs in this folder "
            "(each: results.json, metrics.csv, .hydra/overrides.yaml, machine.json). A table "
            "with a Δ column compares its columns with the baseline column, paired over seeds, "
            "with 95 % confidence intervals (CAM-loss minus CE in every CE-vs-CAM-loss table); "
            "a delta whose interval holds 0 is not resolved.",
            "",
            *(table_markdown(t, runs, out, report) for t in tables),
        ]
    )
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "tables.md")
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    return path
