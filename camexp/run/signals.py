"""Stop requests: SIGTERM and SIGUSR1 (a scheduler's preemption), SIGHUP (a closed terminal) and
SIGINT (Ctrl-C).

The entry point installs :func:`install` before Hydra composes anything. From then on a stop
signal raises :class:`Stopped` where the program stands (start-up, the final test, the CAM
metrics), so the entry point records the run as ``preempted`` (``interrupted`` for SIGINT) and
prints the resume command instead of a traceback. Inside :func:`deferred` (an epoch: its steps,
its validation and its checkpoint) the signal is only noted; the trainer asks :func:`pending`
after each step and at the epoch's end, saves ``last.pt`` and raises :class:`Stopped` itself, so
no step is half done. A second SIGINT inside a deferred block raises at once (an impatient user).

Under submitit (``hydra/launcher=slurm|local_submitit``) its preemption signal (SIGUSR2 unless
SUBMITIT_PREEMPT_SIGNAL says otherwise; SLURM sends it ``signal_delay_s`` before the time limit)
is a stop too: camexp saves first, then :func:`requeue` hands over to submitit's own handler,
which requeues the job into the same run folder (it resumes from ``last.pt``).
"""

import contextlib
import os
import signal

from camexp.errors import Preempted

# SIGHUP: a closed terminal or ssh session stops the run like a scheduler would
STOP_SIGNALS = {"SIGTERM": "preempted", "SIGUSR1": "preempted", "SIGHUP": "preempted",
                "SIGINT": "interrupted"}  # fmt: skip
EXIT_CODES = {"preempted": 75, "interrupted": 130}  # EX_TEMPFAIL (try again); 128 + SIGINT

_state = {"pending": None, "deferred": 0, "requeue": None, "held": False}


class Stopped(Preempted):
    """A stop signal arrived; ``status`` is ``preempted`` or ``interrupted``."""

    def __init__(self, message: str, signal_name: str = "SIGTERM"):
        super().__init__(message)
        self.signal_name = signal_name
        self.status = STOP_SIGNALS.get(signal_name, "preempted")


def status_of(err: Preempted) -> str:
    return getattr(err, "status", "preempted")


def _handle(signum, frame) -> None:
    name = signal.Signals(signum).name
    if _state["held"]:  # the run's final state is being written, or is written: keep it
        return
    again = _state["pending"] == name == "SIGINT"
    _state["pending"] = name
    if _state["deferred"] == 0 or again:
        _state["pending"] = None
        raise Stopped(f"stopped by {name}", name)


def submitit_signal() -> str | None:
    """The name of submitit's preemption signal when its handler is installed, else None."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    number = getattr(signal, name, None)
    handler = signal.getsignal(number) if number is not None else None
    return name if getattr(handler, "__module__", "").startswith("submitit") else None


def installed() -> bool:
    return signal.getsignal(signal.SIGTERM) is _handle


def install() -> dict:
    """Route the stop signals to :func:`_handle` (main thread only; a no-op elsewhere);
    returns the previous handlers for :func:`restore`."""
    previous = {}
    _state["held"] = False
    chained = submitit_signal()
    if chained is not None:
        number = getattr(signal, chained)
        _state["requeue"] = (chained, signal.getsignal(number))
        previous[chained] = signal.signal(number, _handle)
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            try:
                previous[name] = signal.signal(getattr(signal, name), _handle)
            except ValueError:  # not the main thread: leave signals to the caller
                break
    return previous


def hold() -> None:
    """From now on a stop signal is ignored: the run is ending (its final status is being
    written, or was written) and a second signal must not leave it half-labelled."""
    _state["held"] = True


def restore(previous: dict) -> None:
    for name, handler in previous.items():
        signal.signal(getattr(signal, name), handler)
    clear()


def requeue(err: Preempted) -> None:
    """After a stop by submitit's signal (and the save): submitit requeues the job and exits."""
    chained = _state["requeue"]
    if chained is not None and getattr(err, "signal_name", None) == chained[0]:
        chained[1](getattr(signal, chained[0]), None)


def pending() -> str | None:
    """The name of the stop signal received inside :func:`deferred`, or None."""
    return _state["pending"]


def clear() -> None:
    _state["pending"] = None


@contextlib.contextmanager
def deferred():
    """Signals arriving inside only set :func:`pending`; the caller stops at a safe point.
    A signal still pending when the block ends raises there."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1
    name = _state["pending"]
    if name is not None and _state["deferred"] == 0:
        _state["pending"] = None
        raise Stopped(f"stopped by {name}", name)
