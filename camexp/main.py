"""The one entry point: ``camexp [overrides...]`` == ``python -m camexp [overrides...]``.

Composes the config, takes the run folder (a lock, ``.hydra/``, results.json), dispatches on
``task.name`` to ``camexp.tasks.<name>.run``, and turns every error a user can cause (Hydra's
included) into one line on stderr and a non-zero exit (tracebacks with HYDRA_FULL_ERROR=1).

    exit 0 done · 1 a bug or a sweep with failed jobs · 2 a user error · 3 diverged
    75 preempted (SIGTERM/SIGUSR1: resume) · 130 interrupted (Ctrl-C: resume)
"""

import importlib
import logging
import os
import shlex
import shutil
import sys

try:  # Ctrl-C while torch and Hydra load: one line, not a traceback through the importer
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException
    from hydra.types import RunMode
    from omegaconf import DictConfig, OmegaConf

    from camexp.errors import Busy, Diverged, Preempted, UserError
    from camexp.run import distributed, jobs, signals, sweep
    from camexp.run.extend import AlreadyCompleted
    from camexp.run.folder import remove_failed_start
    from camexp.run.hydra_errors import one_line, unknown_flag
    from camexp.run.launchers import missing_launcher
    from camexp.run.opening import open_run
    from camexp.run.options import check_options, renamed_options
    from camexp.run.recompose import (
        CONFIG_DIR,
        command_line,
        compose_config,
    )  # fmt: skip
    from camexp.run.record import RunRecord
except KeyboardInterrupt:
    print("camexp: interrupted while starting; nothing was written", file=sys.stderr)
    sys.exit(130)

__all__ = ["CONFIG_DIR", "main"]
log = logging.getLogger("camexp")

# configs/config.yaml's hydra.run.dir: resume=RUN_DIR runs in RUN_DIR. camexp writes .hydra/
# itself, after taking the folder's lock (Hydra would write it before any camexp code runs).
OmegaConf.register_new_resolver(
    "camexp_run_dir", lambda resume, default: resume or default, replace=True
)
OmegaConf.register_new_resolver("camexp_hydra_subdir", lambda resume: None, replace=True)
# Run and sweep folders end in the launching process's id, so runs started in the same
# microsecond (an array of single jobs) never share a folder. Cached: a sweep's jobs, resolved in
# worker processes, see the launcher's id and hence its folder.
OmegaConf.register_new_resolver("camexp_pid", os.getpid, use_cache=True, replace=True)

EXIT_BUG, EXIT_USER_ERROR, EXIT_DIVERGED, EXIT_BUSY = 1, 2, 3, 75  # 75: EX_TEMPFAIL, try again


# task.name -> the module whose run(cfg, record) runs it. classify is the shared training wiring
# itself (nothing changed), so the command line reaches loss.backward() in four files: this one,
# training/wiring.py, training/trainer.py, engine.py.
TASKS = {
    "classify": "camexp.training.wiring",
    "eval": "camexp.tasks.eval",
    "fewshot": "camexp.tasks.fewshot",
    "kd": "camexp.tasks.kd",
    "transfer": "camexp.tasks.transfer",
}


def load_task(name: str):
    if name not in TASKS:  # only a listed module is importable as a task (task.name=build: no)
        raise UserError(f"unknown task {name!r}; use one of {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name])


def user_error_of(err: BaseException) -> BaseException | None:
    """The UserError, Diverged or Preempted behind ``err``: hydra's ``instantiate`` wraps
    whatever a ``_target_`` raises (a dataset reader, a loss's option check, a signal) in
    InstantiationException."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err if isinstance(err, UserError | Diverged | Preempted) else None


def known_top_level_keys(cfg: DictConfig, overrides: list[str]) -> set[str]:
    """The top-level keys of the config without the ``+key=`` overrides."""
    plain = [o for o in overrides if not o.startswith("+") or o.startswith("++")]
    if len(plain) == len(overrides):
        return set(cfg.keys())
    return set(compose_config(plain).keys())


def log_to_file(level: int, message: str) -> None:
    """Record ``message`` in camexp.log only: the console already gets it once on stderr (through
    Hydra's console handler it would be printed a second time, on stdout)."""
    record = log.makeRecord(log.name, level, __file__, 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def resume_command(run_dir: str) -> str:
    """The command that continues the run, as a shell reads it back: ``scripts/run.sh`` when
    launched through it, ``camexp`` when that is on PATH, else the venv's camexp by its path."""
    launcher = os.environ.get("CAMEXP_LAUNCHER")
    if not launcher:
        own = os.path.join(os.path.dirname(sys.executable), "camexp")
        on_path = shutil.which("camexp")
        same = on_path is not None and os.path.realpath(on_path) == os.path.realpath(own)
        launcher = "camexp" if same or not os.path.exists(own) else own
    return f"{shlex.quote(launcher)} resume={shlex.quote(os.path.abspath(run_dir))}"


def stop(record: RunRecord, err: Preempted, multirun: bool):
    signals.hold()  # a second signal must not interrupt the writing of this one's status
    status = signals.status_of(err)
    if record.status == "completed":  # the signal came after the end: the run is done
        sys.exit(0)
    record.fail(status, err)
    if distributed.is_main():
        command = resume_command(record.run_dir)
        log_to_file(logging.WARNING, f"{err}; continue with: {command}")
        print(f"camexp: {status}: {err}; continue with: {command}", file=sys.stderr)
    signals.requeue(err)  # under submitit, its handler requeues the job into this folder
    sys.exit(signals.EXIT_CODES[status])  # the signal was for the process: a sweep stops too


def refuse_start(err: BaseException, run_dir: str, output_dir, multirun: bool, full_error: bool):
    """A start that failed before the run folder was ours: one line, nothing written, and the
    folder this start created removed (a resume= typo's too); busy exits 75, anything else 2."""
    print(f"camexp: {'busy' if isinstance(err, Busy) else 'error'}: {err}", file=sys.stderr)
    if not multirun:
        remove_failed_start(run_dir, output_dir)
    if full_error:
        raise err
    if multirun:
        return None
    sys.exit(EXIT_BUSY if isinstance(err, Busy) else EXIT_USER_ERROR)


def run_task(cfg: DictConfig) -> dict | None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    full_error = os.environ.get("CAMEXP_USER_FULL_ERROR") == "1"
    overrides = list(hydra_cfg.overrides.task)
    run_dir = hydra_cfg.runtime.output_dir
    output_dir = OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False)
    record, lock = None, None
    # a launcher's job process (joblib, submitit) runs this without main(): install here too
    handlers = {} if signals.installed() else signals.install()
    prefix = jobs.prefix_job_logs(hydra_cfg)  # parallel jobs share the console
    try:
        with signals.deferred():  # a stop signal now waits until results.json exists
            try:
                cfg, record, lock = open_run(cfg, run_dir, overrides)
            except AlreadyCompleted as done:  # nothing to train, test or log again
                print(f"camexp: {done}", file=sys.stderr)
                return None
            except UserError as err:  # not our folder (locked, another run's): write nothing
                return refuse_start(err, run_dir, output_dir, multirun, full_error)
        check_options(cfg, overrides, known_top_level_keys(cfg, overrides))
        for note in renamed_options(overrides):
            log.warning("%s", note)
        jobs.apply_threads(cfg.threads, hydra_cfg)  # once, before the task builds anything
        result = load_task(str(cfg.task.name)).run(cfg, record)
        if not multirun:  # done: a signal from now on leaves the finished run as it is
            signals.hold()
        return result
    except Preempted as err:
        if record is None:
            raise
        stop(record, err, multirun)
    except (UserError, Diverged, InstantiationException) as raised:
        signals.hold()  # the run is ending: a signal must not cut its final status short
        err = user_error_of(raised)
        if record is None:  # the folder was never ours (an error wrapped by Hydra on the way)
            if isinstance(err, UserError):
                return refuse_start(err, run_dir, output_dir, multirun, full_error)
            if err is None:  # a bug stays a bug
                raise
            raise err from raised  # a stop before the folder was ours reaches main() as one
        if isinstance(err, Preempted):
            stop(record, err, multirun)
        if err is None:
            record.fail("failed", raised)
            raise
        diverged = isinstance(err, Diverged)
        record.fail("diverged" if diverged else "failed", err)
        log_to_file(logging.ERROR, str(err))
        print(f"camexp: {'diverged' if diverged else 'error'}: {err}", file=sys.stderr)
        if not multirun and not diverged:  # the user's input: the run leaves no folder
            remove_failed_start(run_dir, output_dir)
        if full_error:
            raise
        if not multirun:  # in a sweep the other jobs go on; results.json holds the error
            sys.exit(EXIT_DIVERGED if diverged else EXIT_USER_ERROR)
        return None
    except BaseException as err:  # a bug, Ctrl-C without our handler, SystemExit, a full disk
        signals.hold()
        if record is not None and not (isinstance(err, SystemExit) and err.code in (0, None)):
            record.fail("interrupted" if isinstance(err, KeyboardInterrupt) else "failed", err)
        raise
    finally:
        if lock is not None:
            lock.release()
        signals.restore(handlers)
        distributed.remove_side_run_dir(run_dir)
        if prefix is not None:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(prefix)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> dict | None:
    return run_task(cfg)


def main() -> None:
    """The console script: Hydra runs with HYDRA_FULL_ERROR=1 so that its own errors reach
    this function, which prints them as one line (the user's HYDRA_FULL_ERROR=1 keeps them)."""
    previous_handlers = signals.install()
    user_full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["CAMEXP_USER_FULL_ERROR"] = "1" if user_full else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        try:  # resume=PATH quoted for Hydra's lexer; a control character in an override refused
            arguments = command_line(sys.argv[1:])
        except UserError as err:
            print(f"camexp: error: {err}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        sys.argv = [sys.argv[0], *distributed.side_run_overrides(arguments)]
        # a launcher preset whose plugin is not installed; `--epochs 3` written for `epochs=3`
        missing = missing_launcher(sys.argv[1:]) or unknown_flag(sys.argv[1:])
        if missing is not None:
            print(f"camexp: error: {missing}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        hydra_main()
        summary = sweep.take_summary()
        if summary is not None:  # a sweep whose jobs all ran, some failing
            print(f"camexp: {summary}", file=sys.stderr)
            sys.exit(EXIT_BUG)
    except Preempted as err:  # before the run folder was taken: nothing to resume
        status = signals.status_of(err)
        print(f"camexp: {status}: {err} before the run started; run the command again",
              file=sys.stderr)  # fmt: skip
        sys.exit(signals.EXIT_CODES[status])
    except Exception as err:
        line = one_line(err)
        if isinstance(user_error_of(err), UserError):
            line = str(user_error_of(err))
        if line is None or user_full:
            raise
        print(f"camexp: error: {line}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    finally:
        signals.restore(previous_handlers)
        os.environ.pop("CAMEXP_USER_FULL_ERROR", None)  # an in-process caller's next run decides
        if user_full:
            os.environ["HYDRA_FULL_ERROR"] = "1"
        else:
            os.environ.pop("HYDRA_FULL_ERROR", None)


if __name__ == "__main__":
    main()
