"""The evidence sweep (issue 22): train what is missing, keep what finished, rebuild the tables.

    python scripts/reproduce/evidence.py                      # every table of evidence.yaml
    python scripts/reproduce/evidence.py --tables classification --jobs 2 --threads 1
    python scripts/reproduce/evidence.py --report-only        # rebuild tables.md, train nothing

Every run goes through the real entry point (``camexp OVERRIDES hydra.run.dir=SCRATCH``), one
process per run, ``--jobs`` at a time with ``--threads`` OpenMP threads each. A run's life:

- **finished**: ``OUT/<table>/<run>/`` holds its results.json (status completed or diverged),
  metrics.csv, .hydra/overrides.yaml and machine.json. These small files are committed; the run is
  never trained again. They are written into a temporary folder and renamed into place, so a kill
  at any moment leaves either the whole run or none of it.
- **cut off**: its scratch folder (``SCRATCH/<table>/<run>/``, not committed) holds
  checkpoints/last.pt: ``camexp resume=SCRATCH/...`` continues it exactly.
- **anything else** (never started, or killed before its first checkpoint): its scratch folder is
  removed and the run starts from nothing.

A signal to the driver (SIGTERM, SIGINT, SIGHUP) is passed to the running jobs, which save and
stop as preempted; the driver then exits 75 and the same command continues. Tables
(``OUT/tables.md``) come from ``camexp-report`` over the finished runs only, with each table's
CPU, precision and CPU-hours.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FINISHED = ("completed", "diverged")  # a NaN is a result too: listed apart, never averaged
KEPT_FILES = ("results.json", "metrics.csv", os.path.join(".hydra", "overrides.yaml"))
EXIT_STOPPED = 75


@dataclass
class Run:
    table: str
    name: str  # folder name: the swept values, e.g. seed-0_regularizer-none_loss.cam.weight-0
    overrides: list  # everything camexp gets, except hydra.run.dir


def plan(spec: dict, only: list | None = None) -> list:
    """evidence.yaml -> [Run]: per table, the cartesian product of its sweep, first key slowest."""
    runs = []
    common = [str(o) for o in spec.get("common", [])]
    for table in spec["tables"]:
        if only and table["name"] not in only:
            continue
        keys = list(table["sweep"])
        for values in itertools.product(*(table["sweep"][k] for k in keys)):
            swept = [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
            name = "_".join(f"{k}-{v}" for k, v in zip(keys, values, strict=True))
            runs.append(Run(table["name"], name, [*table.get("fixed", []), *swept, *common]))
    return runs


def saved_overrides(folder: str) -> list | None:
    path = os.path.join(folder, ".hydra", "overrides.yaml")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return [str(o) for o in (yaml.safe_load(f) or [])]


def finished(run: Run, out: str) -> bool:
    """True when OUT holds this run, whole; a kept run with other overrides stops the sweep."""
    folder = os.path.join(out, run.table, run.name)
    if not os.path.isdir(folder):
        return False
    kept = saved_overrides(folder)
    if kept is not None and sorted(kept) != sorted(run.overrides):
        sys.exit(
            f"evidence: {folder} was trained with other overrides than evidence.yaml now asks "
            f"for; delete that folder to train it again (kept: {' '.join(kept)})"
        )
    return kept is not None and status_of(folder) in FINISHED


def status_of(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, "results.json")) as f:
            return json.load(f).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def command(run: Run, scratch: str, camexp: list) -> list:
    """Resume from the scratch folder's last.pt, or start the run afresh in that folder."""
    folder = os.path.join(scratch, run.table, run.name)
    if os.path.isfile(os.path.join(folder, "checkpoints", "last.pt")):
        return [*camexp, f"resume={folder}"]
    if os.path.lexists(folder):
        shutil.rmtree(folder)
    return [*camexp, *run.overrides, f"hydra.run.dir={folder}"]


def keep(run: Run, scratch: str, out: str, machine: dict) -> None:
    """Copy the run's small files into OUT as one rename: the whole run or nothing."""
    source = os.path.join(scratch, run.table, run.name)
    final = os.path.join(out, run.table, run.name)
    partial = os.path.join(out, ".partial", f"{run.table}__{run.name}")  # outside every table
    if os.path.lexists(partial):
        shutil.rmtree(partial)
    for name in KEPT_FILES:
        if os.path.isfile(os.path.join(source, name)):
            os.makedirs(os.path.dirname(os.path.join(partial, name)), exist_ok=True)
            shutil.copyfile(os.path.join(source, name), os.path.join(partial, name))
    with open(os.path.join(partial, "machine.json"), "w") as f:
        json.dump(machine, f, indent=1)
    if os.path.lexists(final):
        shutil.rmtree(final)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.rename(partial, final)


def machine_of(threads: int, wall_s: float) -> dict:
    import torch  # late: --report-only should not pay for it

    from camexp.run.machine import cpu_name

    return {
        "cpu": cpu_name(),
        "threads": threads,
        "wall_s": round(wall_s, 1),
        "cpu_hours": round(wall_s * threads / 3600, 3),
        "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


class Sweep:
    """Up to ``jobs`` camexp processes at a time; a signal stops them all, resumably."""

    def __init__(self, runs, out, scratch, camexp, jobs, threads):
        self.pending = list(runs)
        self.out, self.scratch, self.camexp = out, scratch, camexp
        self.jobs, self.threads = jobs, threads
        self.running = {}  # Popen -> (Run, start time, log file)
        self.stopping = False
        self.failed = []

    def stop(self, signum, frame) -> None:
        if not self.stopping:
            print(f"evidence: signal {signum}: stopping the running jobs (they save last.pt)",
                  file=sys.stderr, flush=True)  # fmt: skip
        self.stopping = True
        for proc in self.running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def start(self, run: Run) -> None:
        cmd = command(run, self.scratch, self.camexp)
        logs = os.path.join(self.scratch, "logs")
        os.makedirs(logs, exist_ok=True)
        log = open(os.path.join(logs, f"{run.table}__{run.name}.log"), "a")
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        env.pop("HYDRA_FULL_ERROR", None)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.running[proc] = (run, time.time(), log)
        print(f"evidence: started {run.table}/{run.name}", flush=True)

    def reap(self, proc) -> None:
        run, started, log = self.running.pop(proc)
        log.close()
        rc = proc.returncode
        folder = os.path.join(self.scratch, run.table, run.name)
        status = status_of(folder)
        if status in FINISHED and rc in (0, 3):
            keep(run, self.scratch, self.out, machine_of(self.threads, time.time() - started))
            print(f"evidence: kept {run.table}/{run.name} ({status})", flush=True)
        elif rc in (75, 130) or self.stopping:
            print(f"evidence: stopped {run.table}/{run.name} (resumable)", flush=True)
        else:
            self.failed.append(f"{run.table}/{run.name} (exit {rc}, see {log.name})")
            print(f"evidence: FAILED {self.failed[-1]}", file=sys.stderr, flush=True)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.stop)
        while self.running or (self.pending and not self.stopping):
            while self.pending and not self.stopping and len(self.running) < self.jobs:
                self.start(self.pending.pop(0))
            for proc in list(self.running):
                if proc.poll() is not None:
                    self.reap(proc)
            time.sleep(0.2)
        if self.stopping:
            return EXIT_STOPPED
        if self.failed:
            print("evidence: failed runs:\n  " + "\n  ".join(self.failed), file=sys.stderr)
            return 1
        return 0


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
    cpus = sorted({m["cpu"] for m in machines})
    hours = sum(m["cpu_hours"] for m in machines)
    result = subprocess.run(
        [*report, *(os.path.join(folder, r.name) for r in done), *table.get("report", [])],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    body = result.stdout.strip() if result.returncode == 0 else f"camexp-report: {result.stderr}"
    lines += [
        f"Runs: {len(done)} of {planned} finished ({state}). CPU: {'; '.join(cpus)}; "
        f"{machines[0]['threads']} thread(s) per run. "
        f"CPU-hours: {hours:.2f}.",
        "",
        body,
        "",
    ]
    return "\n".join(lines)


def write_tables(spec: dict, runs: list, out: str, report: list, only) -> str:
    tables = [t for t in spec["tables"] if not only or t["name"] in only]
    text = "\n".join(
        [
            "# Evidence tables",
            "",
            "Written by `scripts/reproduce/evidence.sh` from the finished runs in this folder "
            "(each: results.json, metrics.csv, .hydra/overrides.yaml, machine.json). Deltas are "
            "CAM-loss minus CE, paired over seeds, with 95 % confidence intervals; a delta whose "
            "interval holds 0 is not resolved.",
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=os.path.join(HERE, "evidence.yaml"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "measurements", "evidence"))
    p.add_argument("--scratch", default=os.path.join(ROOT, "outputs", "evidence"))
    p.add_argument("--tables", nargs="+", default=None, help="only these tables (default: all)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default: 2)")
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads per run (default: 1)")
    p.add_argument("--report-only", action="store_true", help="rebuild tables.md, train nothing")
    p.add_argument("--camexp", default=f"{sys.executable} -m camexp", help="the entry point")
    p.add_argument("--report", default=f"{sys.executable} -m camexp.report.cli")
    args = p.parse_args(argv)
    with open(args.spec) as f:
        spec = yaml.safe_load(f)
    known = [t["name"] for t in spec["tables"]]
    unknown = [t for t in args.tables or [] if t not in known]
    if unknown:
        print(f"evidence: unknown table(s) {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)  # fmt: skip
        return 2
    runs = plan(spec, args.tables)
    todo = [r for r in runs if not finished(r, args.out)]
    print(f"evidence: {len(runs) - len(todo)} of {len(runs)} runs finished, {len(todo)} to train",
          flush=True)  # fmt: skip
    rc = 0
    if todo and not args.report_only:
        rc = Sweep(todo, args.out, args.scratch, args.camexp.split(), args.jobs, args.threads).run()
    path = write_tables(spec, runs, args.out, args.report.split(), args.tables)
    print(f"evidence: tables in {path}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
