"""The evidence sweep (issue 22): train what is missing, keep what finished, rebuild the tables.

    python scripts/reproduce/evidence.py                      # every table of evidence.yaml
    python scripts/reproduce/evidence.py --tables classification --jobs 2 --threads 1
    python scripts/reproduce/evidence.py --report-only        # rebuild tables.md, train nothing

Every run goes through the real entry point (``camexp OVERRIDES hydra.run.dir=SCRATCH``), one
process per run, ``--jobs`` at a time with ``--threads`` OpenMP threads each. A run's life:

- **finished**: ``OUT/<table>/<run>/`` holds its results.json (status completed or diverged),
  metrics.csv, .hydra/overrides.yaml and machine.json, plus the files its table lists under
  ``keep`` (a checkpoint another table reads). These files are committed; the run is never
  trained again. A run that reads another's kept file (``evidence:`` values, evidence_plan.py)
  starts once that file is kept; ``--tables`` plans the runs it reads too. Kept files are
  written into a temporary folder and renamed into place, so a kill at any moment leaves either
  the whole run or none of it.
- **cut off**: its scratch folder (``SCRATCH/<table>/<run>/``, not committed) holds
  checkpoints/last.pt: ``camexp resume=SCRATCH/...`` continues it exactly (a run stopped in its
  final test's CAM metrics also continues those at the batch its
  checkpoints/cam_quality_partial.pt reached).
- **anything else** (never started, or killed before its first checkpoint): its scratch folder is
  removed and the run starts from nothing.

A signal to the driver (SIGTERM, SIGINT, SIGHUP) is passed to the running jobs, which save and
stop as preempted; the driver then exits 75 and the same command continues. Tables
(``OUT/tables.md``) come from ``camexp-report`` over the finished runs only, with each table's
CPU, precision and CPU-hours. A run's cost (machine.json ``wall_s``, ``cpu_hours``, ``starts``)
counts every start of it in this scratch folder, the stopped ones too; the threads and CPU are
those of the start that finished it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import yaml
from evidence_plan import (
    FINISHED,
    KEPT_FILES,
    Run,
    finished,
    input_hashes,
    kept_file,
    plan,
    ready,
    status_of,
)
from evidence_tables import write_tables

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXIT_STOPPED = 75


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
    for name in (*KEPT_FILES, *run.keep):
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

    gpu = None  # camexp's device=auto trains on the GPU when one is visible
    if torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES") != "":
        gpu = torch.cuda.get_device_name(0)
    return {
        "cpu": cpu_name(),
        "gpu": gpu,
        "threads": threads,
        "wall_s": round(wall_s, 1),
        "cpu_hours": round(wall_s * threads / 3600, 3),
        "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def spent_path(scratch: str, run: Run) -> str:
    return os.path.join(scratch, "logs", f"{run.table}__{run.name}.spent.json")


def spent_before(scratch: str, run: Run) -> tuple:
    """(wall seconds, starts) of a run's earlier starts that were stopped: a resumed run's cost
    counts every start, not just the last."""
    try:
        with open(spent_path(scratch, run)) as f:
            spent = json.load(f)
        return float(spent["wall_s"]), int(spent["starts"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0, 0


def write_json(path: str, value: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


class Sweep:
    """Up to ``jobs`` camexp processes at a time; a signal stops them all, resumably."""

    def __init__(self, runs, out, scratch, camexp, jobs, threads):
        self.pending = list(runs)
        self.out, self.scratch, self.camexp = out, scratch, camexp
        self.jobs, self.threads = jobs, threads
        self.running = {}  # Popen -> (Run, start time, log file, input sha256s)
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
        inputs = input_hashes(run, self.out)  # the files it reads, as they are at its start
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.running[proc] = (run, time.time(), log, inputs)
        print(f"evidence: started {run.table}/{run.name}", flush=True)

    def reap(self, proc) -> None:
        run, started, log, inputs = self.running.pop(proc)
        log.close()
        rc = proc.returncode
        folder = os.path.join(self.scratch, run.table, run.name)
        status = status_of(folder)
        spent = time.time() - started
        if status in FINISHED and rc in (0, 3):
            earlier, starts = spent_before(self.scratch, run)
            machine = {**machine_of(self.threads, earlier + spent), "starts": starts + 1}
            keep(run, self.scratch, self.out, {**machine, "inputs": inputs} if inputs else machine)
            print(f"evidence: kept {run.table}/{run.name} ({status})", flush=True)
        elif rc in (75, 130) or self.stopping:
            earlier, starts = spent_before(self.scratch, run)  # a resume adds to it
            spent = {"wall_s": earlier + spent, "starts": starts + 1}
            write_json(spent_path(self.scratch, run), spent)
            print(f"evidence: stopped {run.table}/{run.name} (resumable)", flush=True)
        else:
            self.failed.append(f"{run.table}/{run.name} (exit {rc}, see {log.name})")
            print(f"evidence: FAILED {self.failed[-1]}", file=sys.stderr, flush=True)

    def blocked(self) -> None:
        """Nothing runs and no pending run can start: what they read never completed."""
        for run in self.pending:
            missing = [t for t in run.refs.values() if not kept_file(self.out, t)]
            self.failed.append(f"{run.table}/{run.name} (needs {', '.join(missing)}, not kept)")
            print(f"evidence: FAILED {self.failed[-1]}", file=sys.stderr, flush=True)
        self.pending = []

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.stop)
        while self.running or (self.pending and not self.stopping):
            while not self.stopping and len(self.running) < self.jobs:
                run = next((r for r in self.pending if ready(r, self.out)), None)
                if run is None:
                    break
                self.pending.remove(run)
                self.start(run)
            if self.pending and not self.running and not self.stopping:
                self.blocked()
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
    try:
        runs = plan(spec, args.tables, args.out)
    except ValueError as err:
        print(f"evidence: {err}", file=sys.stderr)
        return 2
    todo = [r for r in runs if not finished(r, args.out)]
    print(f"evidence: {len(runs) - len(todo)} of {len(runs)} runs finished, {len(todo)} to train",
          flush=True)  # fmt: skip
    rc = 0
    if todo and not args.report_only:
        rc = Sweep(todo, args.out, args.scratch, args.camexp.split(), args.jobs, args.threads).run()
    path = write_tables(spec, plan(spec, None, args.out), args.out, args.report.split())
    print(f"evidence: tables in {path}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
