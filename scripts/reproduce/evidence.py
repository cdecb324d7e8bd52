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
- **parked**: a cut-off run's folder is also copied, with its cost so far, into
  ``OUT/.parked/<table>__<run>/`` when the driver stops it and every ``--park-every`` minutes while
  it trains (its latest last.pt, CAM-metric sums, config and log; about 5 MB). Committed, it lets
  a fresh clone resume the run where this one left it: a run longer than a session still ends.
  ``.parked`` is no table: nothing in it is reported, and keeping the run deletes it. A scratch
  folder's own last.pt is newer and wins over a parked one.
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
    comparable,
    finished,
    input_hashes,
    kept_file,
    plan,
    ready,
    saved_overrides,
    status_of,
)
from evidence_tables import write_tables

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXIT_STOPPED = 75


PARKED = ".parked"  # OUT/.parked/<table>__<run>/: outside every table, like .partial
PARK_SKIP = (".lock", "tensorboard", ".tmp-*", "*.tmp")  # a live lock, a half-written save
SPENT = "spent.json"  # the parked run's cost so far, beside its folder's files


def parked_folder(out: str, run: Run) -> str:
    return os.path.join(out, PARKED, f"{run.table}__{run.name}")


def park(run: Run, scratch: str, out: str, spent: dict) -> bool:
    """Copy a cut-off run's scratch folder and its cost so far into OUT/.parked (a temporary
    folder renamed into place): committed, it lets another clone resume the run. False when the
    run has no checkpoint to resume from yet."""
    source = os.path.join(scratch, run.table, run.name)
    if not os.path.isfile(os.path.join(source, "checkpoints", "last.pt")):
        return False
    final = parked_folder(out, run)
    tmp = final + ".tmp"
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp, symlinks=True, ignore=shutil.ignore_patterns(*PARK_SKIP))
    write_json(os.path.join(tmp, SPENT), spent)
    if os.path.lexists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    return True


def other_overrides(folder: str, run: Run) -> list | None:
    """The overrides a cut-off run in ``folder`` was started with, when they are not the ones
    evidence.yaml now asks for (resuming it would train the old run under the new name)."""
    try:
        saved = saved_overrides(folder)
    except (yaml.YAMLError, TypeError, UnicodeDecodeError):  # not what camexp writes
        return ["(an unreadable .hydra/overrides.yaml)"]
    if saved is None or comparable(saved, run.refs) == comparable(run.overrides, run.refs):
        return None
    return saved


def not_restorable(parked: str, run: Run) -> str | None:
    """Why a parked folder cannot be resumed (None: it can). It is data from the repository: a
    symlink (which camexp never writes) could copy any file in, other overrides another run."""
    links = [os.path.join(d, n) for d, dirs, files in os.walk(parked) for n in dirs + files
             if os.path.islink(os.path.join(d, n))]  # fmt: skip
    if links or os.path.islink(parked):
        return f"holds a symlink ({(links or [parked])[0]}), which camexp never writes"
    saved = other_overrides(parked, run)
    if saved is not None:
        return f"was started with other overrides than evidence.yaml asks for ({' '.join(saved)})"
    return None


def unpark(run: Run, scratch: str, out: str) -> bool:
    """Restore a parked run into an empty scratch folder (a fresh clone): True when it did."""
    parked = parked_folder(out, run)
    folder = os.path.join(scratch, run.table, run.name)
    if not os.path.isfile(os.path.join(parked, "checkpoints", "last.pt")):
        return False
    why = not_restorable(parked, run)
    if why:
        print(f"evidence: {parked} {why}: ignored, the run starts afresh", file=sys.stderr,
              flush=True)  # fmt: skip
        return False
    if os.path.lexists(folder):
        shutil.rmtree(folder)
    shutil.copytree(parked, folder, ignore=shutil.ignore_patterns(SPENT))
    try:
        with open(os.path.join(parked, SPENT)) as f:
            spent = json.load(f)
        wall, starts = float(spent["wall_s"]), int(spent["starts"])
    except (OSError, ValueError, KeyError, TypeError):
        return True  # the checkpoint resumes; the cost of the earlier starts is unknown
    if spent_before(scratch, run)[1] < starts:  # not this clone's own, larger count
        os.makedirs(os.path.dirname(spent_path(scratch, run)), exist_ok=True)
        write_json(spent_path(scratch, run), {"wall_s": wall, "starts": starts})
    return True


def command(run: Run, scratch: str, camexp: list, out: str | None = None) -> list:
    """Resume from the scratch folder's last.pt, else from OUT's parked copy of it, or start the
    run afresh in that folder (also when the cut-off run had other overrides)."""
    folder = os.path.join(scratch, run.table, run.name)
    last = os.path.join(folder, "checkpoints", "last.pt")
    saved = other_overrides(folder, run) if os.path.isfile(last) else None
    if saved is not None:
        print(f"evidence: {folder} holds a cut-off run of other overrides ({' '.join(saved)}): "
              "it starts afresh", file=sys.stderr, flush=True)  # fmt: skip
    elif os.path.isfile(last) or (out is not None and unpark(run, scratch, out)):
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
    if os.path.lexists(parked_folder(out, run)):  # kept whole: the parked copy is history
        shutil.rmtree(parked_folder(out, run))


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

    def __init__(self, runs, out, scratch, camexp, jobs, threads, park_every_s=1800.0):
        self.pending = list(runs)
        self.out, self.scratch, self.camexp = out, scratch, camexp
        self.jobs, self.threads = jobs, threads
        self.park_every_s, self.parked_at = park_every_s, time.time()
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
        cmd = command(run, self.scratch, self.camexp, self.out)
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
            where = " and parked" if park(run, self.scratch, self.out, spent) else ""
            print(f"evidence: stopped {run.table}/{run.name} (resumable{where})", flush=True)
        else:
            self.failed.append(f"{run.table}/{run.name} (exit {rc}, see {log.name})")
            print(f"evidence: FAILED {self.failed[-1]}", file=sys.stderr, flush=True)

    def park_running(self) -> None:
        """Park every running run's latest checkpoint, counting this start as spent so far."""
        self.parked_at = time.time()
        for run, started, _, _ in self.running.values():
            earlier, starts = spent_before(self.scratch, run)
            spent = {"wall_s": earlier + time.time() - started, "starts": starts + 1}
            try:  # the run writes its folder meanwhile: a file may go between list and copy
                if park(run, self.scratch, self.out, spent):
                    print(f"evidence: parked {run.table}/{run.name}", flush=True)
            except (OSError, shutil.Error) as err:
                print(f"evidence: parking {run.table}/{run.name} failed ({err}); next time again",
                      file=sys.stderr, flush=True)  # fmt: skip

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
            if self.park_every_s > 0 and time.time() - self.parked_at >= self.park_every_s:
                self.park_running()
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
    p.add_argument("--park-every", type=float, default=30.0, metavar="MIN",
                   help="copy running runs' checkpoints into OUT/.parked every MIN minutes "
                   "(default: 30; 0: only when stopped)")  # fmt: skip
    p.add_argument("--camexp", default=f"{sys.executable} -m camexp", help="the entry point")
    p.add_argument("--report", default=f"{sys.executable} -m camexp.report.cli")
    args = p.parse_args(argv)
    limits = (("jobs", args.jobs, 1), ("threads", args.threads, 1),
              ("park-every", args.park_every, 0))  # fmt: skip
    bad = [f"--{name} {value:g}" for name, value, least in limits if not value >= least]
    if bad:
        print(f"evidence: {', '.join(bad)} is out of range: --jobs and --threads take 1 or more, "
              "--park-every 0 (only when stopped) or more minutes", file=sys.stderr)  # fmt: skip
        return 2
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
    if not args.report_only:
        for run in runs:  # kept elsewhere (another clone, a GPU session): its parked copy is stale
            if run not in todo and os.path.lexists(parked_folder(args.out, run)):
                shutil.rmtree(parked_folder(args.out, run))
                print(f"evidence: {run.table}/{run.name} is kept: its parked copy removed",
                      flush=True)  # fmt: skip
    if todo and not args.report_only:
        sweep = Sweep(todo, args.out, args.scratch, args.camexp.split(), args.jobs, args.threads,
                      park_every_s=args.park_every * 60)  # fmt: skip
        rc = sweep.run()
    path = write_tables(spec, plan(spec, None, args.out), args.out, args.report.split())
    print(f"evidence: tables in {path}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
