"""Progress a person can read: one compact line per logging interval, at any terminal width.

On a terminal the line is rewritten in place and cut to the terminal's width by dropping the
least useful fields first (the bar, then the single loss parts, the step count, the loss): at 80
columns ``acc1``, ``img/s`` and the ETA always remain. Elsewhere (a log file, a sweep, CI) the
same line is a plain log record every ``log_every`` steps, and at an epoch's last step whatever
``log_every`` is, so every epoch shows its loss at least once.

Loops without steps of their own (validation, the CAM metrics, few-shot embedding and episodes)
go through :func:`track`, which says where it is at most every ``PHASE_EVERY_S`` seconds: no
phase is silent for longer than that plus one batch.

    for images, labels in track(loader, "validate"):
        ...
"""

from __future__ import annotations

import logging
import shutil
import sys
import time

from camexp.run.distributed import is_main

log = logging.getLogger("camexp.progress")

PHASE_EVERY_S = 5.0  # a phase reports at most this often, and not at all when it is faster
BAR_WIDTH = 10
_mode = {"value": None}  # "live" | "log" | "off"; None: decided on first use


def set_mode(enabled: bool | None) -> str:
    """``None`` (auto) and ``True``: a live line on a terminal, log records elsewhere; ``False``:
    nothing but the epoch lines. Ranks other than 0 of a torchrun job stay silent."""
    if enabled is False or not is_main():
        mode = "off"
    else:
        mode = "live" if sys.stderr.isatty() else "log"
    _mode["value"] = mode
    return mode


def mode() -> str:
    return _mode["value"] or set_mode(None)


def duration(seconds: float) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05``."""
    seconds = max(int(round(seconds)), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def number(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def fit(fields: list[tuple[int, str]], width: int) -> str:
    """Join ``(rank, text)`` fields with spaces, in order, dropping the highest rank (least
    useful) first until the line fits ``width`` characters; rank 0 is never dropped."""
    kept = list(fields)
    while len(" ".join(t for _, t in kept)) > width:
        worst = max(r for r, _ in kept)
        if worst == 0:
            break
        # drop the last field of the worst rank: the first ones of a group say the most
        index = max(i for i, (r, _) in enumerate(kept) if r == worst)
        del kept[index]
    return " ".join(t for _, t in kept)


def bar(done: int, total: int) -> str:
    filled = int(BAR_WIDTH * done / max(total, 1))
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"


class Line:
    """The progress of one loop: ``due(steps, every)`` says whether to show, ``show`` shows."""

    def __init__(self, desc: str, total: int | None, how: str, stream=None, width=None):
        self.desc, self.total, self.how = desc, total, how
        self.stream = stream or sys.stderr
        self.width = width  # None: the terminal's, read at every show (it may be resized)
        self.start = time.perf_counter()
        self.done = 0  # items handed out by this Line (a resumed epoch starts mid-way)
        self.steps = 0  # position within the whole loop, as the caller counts it
        self.shown = False

    def wrap(self, iterable):
        for item in iterable:
            self.done += 1
            yield item

    def due(self, steps: int, every: int) -> bool:
        """Every ``every`` steps and at the loop's last step (a large ``every`` still shows
        each epoch once)."""
        self.steps = steps
        last = self.total is not None and steps >= self.total
        return last or (every > 0 and steps % every == 0)

    def eta(self) -> str | None:
        if self.total is None or self.done == 0:
            return None
        per_item = (time.perf_counter() - self.start) / self.done
        return duration(per_item * max(self.total - self.steps, 0))

    def fields(self, stats: dict) -> list[tuple[int, str]]:
        """Train statistics (``train/loss``, ``train/<part>``, ``train/acc1``,
        ``train/images_per_s``) -> ranked fields; rank 0 stays at any width."""
        out = [(0, self.desc)]
        if self.total:
            if self.how == "live":
                out.append((9, bar(self.steps, self.total)))
            out.append((4, f"{self.steps}/{self.total}"))
        if "train/loss" in stats:
            out.append((3, f"loss {number(stats['train/loss'])}"))
        skip = {"train/loss", "train/acc1", "train/images_per_s", "train/skipped_steps"}
        parts = [k for k in stats if k.startswith("train/") and k not in skip]
        out += [(5, f"{k.removeprefix('train/')} {number(stats[k])}") for k in parts]
        if "train/acc1" in stats:
            out.append((0, f"acc1 {stats['train/acc1']:.2f}"))
        if "train/images_per_s" in stats:
            out.append((0, f"{stats['train/images_per_s']:.0f} img/s"))
        if stats.get("train/skipped_steps"):
            out.append((2, f"skipped {stats['train/skipped_steps']}"))
        eta = self.eta()
        if eta is not None:
            out.append((1, f"eta {eta}"))
        return out

    def render(self, stats: dict) -> str:
        fields = self.fields(stats)
        if self.how != "live":
            return " ".join(t for _, t in fields if not t.startswith("["))
        width = self.width or shutil.get_terminal_size((100, 24)).columns
        return fit(fields, max(width - 1, 20))  # the last column would wrap on some terminals

    def show(self, stats: dict) -> None:
        if self.how == "off":
            return
        text = self.render(stats)
        if self.how == "live":
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
        else:
            log.info("%s", text)
        self.shown = True

    def close(self) -> None:
        """Clear the live line (the caller's summary line follows)."""
        if self.how == "live" and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def track(iterable, desc: str, total: int | None = None, unit: str = "batches"):
    """Yield from ``iterable``; say ``desc i/total, rate, eta`` at most every PHASE_EVERY_S
    seconds, and how long it took when it took that long. Costs one clock read per item."""
    how = mode()
    if how == "off":
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    line = Line(desc, total, how)
    next_at = line.start + PHASE_EVERY_S
    try:
        for item in iterable:
            yield item
            line.done += 1
            now = time.perf_counter()
            if now >= next_at:
                next_at = now + PHASE_EVERY_S
                line.steps = line.done
                rate = line.done / (now - line.start)
                where = f"{line.done}/{total}" if total else str(line.done)
                fields = [(0, desc), (0, where), (1, f"{rate:.3g} {unit}/s")]
                eta = line.eta()
                if eta is not None:
                    fields.append((0, f"eta {eta}"))
                emit(line, fields)
    finally:
        line.close()
    if line.shown and how == "log":
        took = duration(time.perf_counter() - line.start)
        log.info("%s: %d %s in %s", desc, line.done, unit, took)


def emit(line: Line, fields: list[tuple[int, str]]) -> None:
    if line.how == "live":
        width = line.width or shutil.get_terminal_size((100, 24)).columns
        line.stream.write("\r" + fit(fields, max(width - 1, 20)) + "\x1b[K")
        line.stream.flush()
    else:
        log.info("%s", " ".join(t for _, t in fields))
    line.shown = True


class Progress:
    """The trainer's progress: ``wrap(loader, desc)`` -> ``(loader, line)``; ``line`` is None
    when progress is off (``progress=false``), so the trainer can skip the host sync."""

    def __init__(self, enabled: bool | None = None):
        self.how = set_mode(enabled)
        self.enabled = self.how != "off"

    def wrap(self, loader, desc: str):
        if not self.enabled:
            return loader, None
        total = len(loader) if hasattr(loader, "__len__") else None
        line = Line(desc, total, self.how)
        return line.wrap(loader), line

    @staticmethod
    def show(line, stats: dict) -> None:
        if line is not None:
            line.show(stats)


SLOW_FRACTION = 1 / 3  # measured: 3,000 -> ~150 img/s with two jobs contending for 2 cores


def slowdown(rates: list[float]) -> str | None:
    """Per-epoch training images/s -> a warning when the last epoch ran below a third of the
    first's, and no epoch between them did (the warning comes once a run, resumed or not)."""
    if len(rates) < 2 or not rates[0] > 0:
        return None
    floor = rates[0] * SLOW_FRACTION
    if rates[-1] >= floor or any(rate < floor for rate in rates[1:-1]):
        return None
    return (
        f"training runs at {rates[-1]:.0f} img/s, under a third of its first epoch's "
        f"{rates[0]:.0f}: other jobs share these cores? run fewer at once, or set threads= "
        "(the log's 'torch threads' line says how many this run uses)"
    )
