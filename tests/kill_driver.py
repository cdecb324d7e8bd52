"""Run camexp and stop it with a signal at a chosen point (used by the resume tests).

python tests/kill_driver.py step:N   overrides...   SIGKILL after training step N
python tests/kill_driver.py term:N   overrides...   SIGTERM to itself after step N
python tests/kill_driver.py int:N    overrides...   SIGINT (Ctrl-C) after step N
python tests/kill_driver.py usr1:N   overrides...   SIGUSR1 after step N
python tests/kill_driver.py save:N   overrides...   SIGKILL inside the N-th checkpoint save, after
                                                    the temporary file is written, before the rename
python tests/kill_driver.py hup:N     overrides...   SIGHUP (a closed terminal) after step N
python tests/kill_driver.py twice:N   overrides...   SIGHUP after step N, then SIGTERM while the
                                                    stop writes results.json (a second signal)
python tests/kill_driver.py term@PHASE overrides... SIGTERM inside a phase: hydra (Hydra's start-
                                                    up, in a resolver), start (building the
                                                    data), val (the first validation), test (the
                                                    final test), cams (the CAM metrics), done
                                                    (right after "completed" is written)
Under torchrun every rank counts its own steps, so ``step:N`` kills every rank after step N.
"""

import os
import signal
import sys

import camexp.metrics.quality
import camexp.run.checkpoint
import camexp.run.record
import camexp.training.final_test
import camexp.training.trainer
import camexp.training.wiring
from camexp.main import main

SIGNALS = {"step": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT,
           "usr1": signal.SIGUSR1, "hup": signal.SIGHUP, "twice": signal.SIGHUP}  # fmt: skip
point = sys.argv[1]
calls = {"n": 0, "fired": False}


def fire(signum) -> None:
    calls["fired"] = True
    os.kill(os.getpid(), signum)


def signal_after_step(after_step, signum, limit):
    def wrapper(*args, **kwargs):
        after_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == limit:
            fire(signum)

    return wrapper


def kill_inside_save(replace, limit):
    def wrapper(src, dst):
        if os.path.basename(src).startswith(".tmp-") and str(dst).endswith(".pt"):
            calls["n"] += 1
            if calls["n"] == limit:
                fire(signal.SIGKILL)
        return replace(src, dst)

    return wrapper


def signal_inside(function, signum, when=lambda *a, **k: True):
    """Call ``function``; the first time ``when`` holds, the signal arrives inside it."""

    def wrapper(*args, **kwargs):
        if not calls["fired"] and when(*args, **kwargs):
            fire(signum)
        return function(*args, **kwargs)

    return wrapper


if "@" in point:
    kind, phase = point.split("@")
    signum = SIGNALS[kind]
    trainer = camexp.training.trainer
    if phase == "hydra":
        from omegaconf import OmegaConf

        pid = signal_inside(os.getpid, signum)
        OmegaConf.register_new_resolver("camexp_pid", pid, use_cache=True, replace=True)
    elif phase == "done":
        record = camexp.run.record.RunRecord
        write = record.write

        def write_then_signal(self, status, **fields):
            written = write(self, status, **fields)
            if status == "completed":
                fire(signum)
            return written

        record.write = write_then_signal
    elif phase == "start":
        wiring = camexp.training.wiring  # build_parts calls its build_data
        wiring.build_data = signal_inside(wiring.build_data, signum)
    elif phase in ("val", "test"):  # validation in the trainer, the final test in final_test
        module = trainer if phase == "val" else camexp.training.final_test
        module.evaluate = signal_inside(
            module.evaluate, signum, lambda *a, prefix="val", **k: prefix == phase
        )
    elif phase == "cams":
        quality = camexp.metrics.quality.CamQuality
        quality.__call__ = signal_inside(quality.__call__, signum)
    else:
        raise SystemExit(f"unknown phase {phase!r}; use start, val, test or cams")
else:
    kind, _, count = point.partition(":")
    if kind == "save":
        checkpoint = camexp.run.checkpoint
        checkpoint.os.replace = kill_inside_save(os.replace, int(count))
    elif kind in SIGNALS:
        if kind == "twice":
            record = camexp.run.record.RunRecord
            fail = record.fail

            def fail_under_a_second_signal(self, *args, **kwargs):
                os.kill(os.getpid(), signal.SIGTERM)
                return fail(self, *args, **kwargs)

            record.fail = fail_under_a_second_signal
        trainer = camexp.training.trainer.Trainer
        trainer.after_step = signal_after_step(trainer.after_step, SIGNALS[kind], int(count))
    else:
        raise SystemExit(f"unknown kill point {point!r}; see the module docstring")

sys.argv = [sys.argv[0], *sys.argv[2:]]
main()
