"""Run camexp and die with SIGKILL at a chosen point (used by tests/test_resume.py).

python tests/kill_driver.py step:N  camexp-overrides...   SIGKILL after training step N
python tests/kill_driver.py term:N  camexp-overrides...   SIGTERM to itself after step N
python tests/kill_driver.py save:N  camexp-overrides...   SIGKILL inside the N-th checkpoint
                                                          save, after the temporary file is
                                                          written and before it is renamed
"""

import os
import signal
import sys

import camexp.run.checkpoint
import camexp.training.trainer
from camexp.main import main

kind, _, count = sys.argv[1].partition(":")
limit = int(count)
calls = {"n": 0}


def signal_after_step(after_step, signum):
    def wrapper(*args, **kwargs):
        after_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == limit:
            os.kill(os.getpid(), signum)

    return wrapper


def kill_inside_save(replace):
    def wrapper(src, dst):
        if os.path.basename(src).startswith(".tmp-") and str(dst).endswith(".pt"):
            calls["n"] += 1
            if calls["n"] == limit:
                os.kill(os.getpid(), signal.SIGKILL)
        return replace(src, dst)

    return wrapper


if kind in ("step", "term"):
    camexp.training.trainer.Trainer.after_step = signal_after_step(
        camexp.training.trainer.Trainer.after_step,
        signal.SIGKILL if kind == "step" else signal.SIGTERM,
    )
elif kind == "save":
    camexp.run.checkpoint.os.replace = kill_inside_save(os.replace)
else:
    raise SystemExit(f"unknown kill point {sys.argv[1]!r}; use step:N, term:N or save:N")

sys.argv = [sys.argv[0], *sys.argv[2:]]
main()
