"""``camexp-report``: run and sweep folders -> the tables (and curves) of a paper.

    camexp-report outputs/multirun/2026-05-01/12-00-00-000000
    camexp-report outputs/multirun --rows backbone --cols loss.cam.weight --format latex
    camexp-report outputs/multirun --plot curves.png --metrics test/acc1 val/acc1_best

Runs are grouped by the overrides whose values differ between them, except ``seed`` (and keys
that do not change results, e.g. ``progress``, ``metrics``); each metric is shown as mean ± sample
std over the completed runs of a group, with their count. With ``--cols`` each non-baseline column
gets a delta column, and with ``--rows K --baseline V`` each row but V's: the difference with its
95 % confidence interval, from a paired t-test over the seeds both sides share (Welch's t-test
when they do not pair). Failed, diverged, preempted
and incomplete runs are listed under the table and never averaged in. The precision the runs
trained in (bf16 or fp32, results.json) is stated under the table, and is a grouping column when
it varies: runs of different precision never share a cell. ``--task NAME`` and ``--where
key=value`` (repeatable; a dotted config key, compared as the run's value) select the runs.
``--format csv`` is one long-format CSV: one row per group and metric.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from camexp.errors import UserError
from camexp.report.runs import (
    MISSING,
    NOT_GROUPED,
    PRECISION,
    default_ignored,
    find_runs,
    group_runs,
    grouping_keys,
)
from camexp.report.table import latex_comment, long_csv, long_table, pivot_table, render

# Per task, the metrics shown without --metrics (those that some completed run has).
DEFAULT_METRICS = {
    "classify": ("test/acc1", "test_best/acc1"),  # last weights, best-on-val weights
    "kd": ("test/acc1", "test_best/acc1"),
    "transfer": ("test/acc1", "test_best/acc1"),
    "eval": ("test/acc1", "test/acc5"),
    "fewshot": (),  # every fewshot/<split>/<N>way_<K>shot/<classifier>/acc
}
EXIT_USER_ERROR = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="camexp-report",
        description="Tables of mean ± std over seeds from camexp run and sweep folders.",
    )
    p.add_argument("paths", nargs="*", help="run folders or folders above them (sweeps)")
    p.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="results.json metrics to show (default per task: test/acc1 and test_best/acc1 for "
        "training tasks, test/acc1 and test/acc5 for eval, the episode accuracies for fewshot)",
    )
    p.add_argument("--task", default=None, help="only runs of this task (classify, kd, ...)")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only runs whose config has this value (dotted key, e.g. loss.cam.weight=1); repeat",
    )
    p.add_argument("--rows", action="append", default=[], help="row key(s), e.g. backbone")
    p.add_argument("--cols", default=None, help="column key, e.g. loss.cam.weight (adds deltas)")
    p.add_argument(
        "--baseline",
        default=None,
        help="--cols value the deltas subtract; without --cols, the --rows value "
        "(of the first row key) whose row every other row is compared with",
    )
    p.add_argument("--format", choices=("markdown", "csv", "latex"), default="markdown")
    p.add_argument("--digits", type=digits, default=2, help="decimals in markdown and LaTeX (0-10)")
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        help=f"keys never grouped on besides {', '.join(NOT_GROUPED)}",
    )
    p.add_argument("--plot", metavar="PNG", help="write curves per group (mean, ± std band)")
    p.add_argument("--plot-metric", default="val/acc1", help="metrics.csv column to plot")
    p.add_argument("--cams", nargs=2, metavar=("RUN_A", "RUN_B"), help="compare two runs' CAMs")
    p.add_argument(
        "--cams-out", default=None, help="PNG written by --cams (default: RUN_A/cams_compare.png)"
    )
    return p


def digits(text: str) -> int:
    """``--digits``: a whole number of decimals from 0 to 10 (argparse: one line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of decimals from 0 to 10")
    return value


def check_output(path: str, option: str) -> None:
    """An output file's folder must exist and be writable, before any work is done for it."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{option} {path} is a folder; give a file name such as {option} out.png")
    if not os.path.isdir(folder):
        raise UserError(f"{option} {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{option} {path}: the folder {folder} is not writable")


def split_keys(values: list) -> list:
    return [k.strip() for v in values for k in v.split(",") if k.strip()]


def check_metrics(completed: list, metrics: list) -> None:
    found = sorted({m for run in completed for m in run.metrics})
    unknown = [m for m in metrics if m not in found]
    if unknown:
        raise UserError(
            f"no completed run has the metric(s) {', '.join(unknown)}; "
            f"metrics found: {', '.join(found) or 'none'}"
        )


def default_metrics(completed: list) -> list:
    """The task's default metrics that some completed run has; fewshot: every episode
    accuracy; unknown tasks: every ``*acc1`` metric."""
    found = list(dict.fromkeys(m for run in completed for m in run.metrics))
    task = completed[0].task
    if task == "fewshot":
        wanted = [m for m in found if m.startswith("fewshot/") and m.endswith("/acc")]
    elif task in DEFAULT_METRICS:
        wanted = [m for m in DEFAULT_METRICS[task] if m in found]
    else:
        wanted = [m for m in found if m.endswith("acc1")]
    if not wanted:
        raise UserError(
            f"none of the default metrics of task {task} is in the results; choose with "
            f"--metrics from: {', '.join(sorted(found)) or 'none'}"
        )
    return wanted


def check_keys(runs: list, keys: list) -> None:
    for key in keys:
        if all(run.value(key) == MISSING for run in runs):
            raise UserError(
                f"no run has a value for {key!r}; use an override key (e.g. loss.cam.weight) "
                "or a config group (e.g. backbone)"
            )


def failure_lines(runs: list) -> list:
    """One line per run that is not averaged in: status, folder, overrides, error."""
    lines = []
    for run in runs:
        if run.status == "completed":
            continue
        folder = os.path.relpath(run.path)
        folder = run.path if folder.startswith("..") else folder
        overrides = ", ".join(f"{k}={v}" for k, v in run.overrides.items())
        error = (run.error or "").splitlines()[0] if run.error else ""
        line = f"- {run.status}: {folder} ({overrides or 'no overrides'})"
        lines.append(line + (f": {error}" if error else ""))
    return lines


def report(args: argparse.Namespace) -> str:
    runs = find_runs(args.paths, args.task, tuple(args.where))
    completed = [r for r in runs if r.status == "completed"]
    failures = failure_lines(runs)
    if not completed:
        print("\n".join(failures), file=sys.stderr)
        statuses = sorted({r.status for r in runs})
        raise UserError(
            f"no completed run among the {len(runs)} found ({', '.join(statuses)}; listed above)"
        )
    metrics = args.metrics or default_metrics(completed)
    check_metrics(completed, metrics)
    rows, cols = split_keys(args.rows), args.cols
    check_keys(runs, rows + ([cols] if cols else []))
    ignore = default_ignored(runs) + tuple(split_keys(args.ignore))
    keys = grouping_keys(runs, ignore=ignore, keep=rows + ([cols] if cols else []))
    groups = group_runs(runs, keys)

    if args.baseline is not None and not cols and args.format == "csv":
        raise UserError("--baseline without --cols is for the markdown and LaTeX tables; "
                        "with --format csv add --cols KEY")  # fmt: skip
    if args.format == "csv":
        ordered = [k for k in keys if k != cols] + ([cols] if cols else [])
        out = long_csv(groups, ordered, metrics, cols, args.baseline)
    elif cols:
        table = pivot_table(groups, [k for k in keys if k != cols], cols, metrics, args.baseline)
        out = render(table, args.format, args.digits, show_n=True)
    else:
        table = long_table(groups, keys, metrics, args.baseline)
        out = render(table, args.format, args.digits)
    precisions = sorted({run.value(PRECISION) for run in completed})
    if len(precisions) == 1:  # else a grouping column (runs.grouping_keys)
        line = f"Precision: {precisions[0]} (every averaged run)"
        out += {"markdown": "\n\n" + line, "latex": "\n" + latex_comment(line)}.get(args.format, "")
        if args.format == "csv":
            print(line, file=sys.stderr)
    if failures:
        note = f"Not averaged ({len(failures)} of {len(runs)} runs):"
        if args.format == "markdown":
            out += "\n\n" + note + "\n\n" + "\n".join(failures)
        elif args.format == "latex":
            out += "\n".join(["", latex_comment(note)] + [latex_comment(line) for line in failures])
        else:  # CSV stays machine-readable: the list goes to stderr
            print(note + "\n" + "\n".join(failures), file=sys.stderr)

    if args.plot:
        from camexp.report.plot import plot_curves

        plot_curves(groups, args.plot, column=args.plot_metric)
        print(f"camexp-report: wrote {args.plot}", file=sys.stderr)
    return out


def compare_cams(run_a: str, run_b: str, out_png: str) -> None:
    """Hand two run folders to camexp.report.cams (issue #9), imported only when asked for."""
    try:
        module = importlib.import_module("camexp.report.cams")
    except ModuleNotFoundError as err:
        if err.name != "camexp.report.cams":
            raise
        raise UserError("--cams needs camexp.report.cams, which this install lacks") from err
    for run in (run_a, run_b):
        if not os.path.isdir(run):
            raise UserError(f"--cams: {run} is not a run folder")
    module.compare_cams([run_a, run_b], out_png)
    print(f"camexp-report: wrote {out_png}", file=sys.stderr)


def main(argv: list | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.paths and not args.cams:
        parser().error("give run or sweep folders (or --cams RUN_A RUN_B)")
    try:
        for path, option in ((args.plot, "--plot"), (args.cams_out, "--cams-out")):
            if path:
                check_output(path, option)
        if args.paths:
            print(report(args))
        if args.cams:
            out = args.cams_out or os.path.join(args.cams[0], "cams_compare.png")
            compare_cams(*args.cams, out)
    except OSError as err:  # an output that could not be written after all (a full disk, ...)
        print(f"camexp-report: error: could not write {err.filename or ''}: {err.strerror or err}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USER_ERROR
    except UserError as err:
        print(f"camexp-report: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
