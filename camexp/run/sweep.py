"""A sweep reports its failed jobs: every job runs (a failure is recorded in its results.json
and the sweep goes on), then the launching process lists the jobs that did not complete and
exits non-zero. Hydra calls :class:`SweepSummary` (``hydra.callbacks`` in configs/config.yaml)
in the launching process, whichever launcher ran the jobs (basic, joblib, submitit); the entry
point prints :func:`take_summary`."""

import json
import math
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

_summary: list[str] = []  # set in the launching process when a sweep ends with failures


def take_summary() -> str | None:
    """The failure summary of the sweep that just ended in this process, once; else None."""
    text = _summary.pop() if _summary else None
    _summary.clear()
    return text


def expected_jobs(overrides: list[str]) -> int | None:
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        return math.prod(len(list(o.sweep_iterator())) for o in parsed if o.is_sweep_override())
    except (HydraException, TypeError, ValueError):
        return None


def failures(sweep_dir: Path, expected: int | None) -> list[str]:
    lines, found = [], 0
    for path in sorted(sweep_dir.rglob("results.json")):
        found += 1
        try:
            record = json.loads(path.read_text())
            status, error = record.get("status"), record.get("error", "")
        except (OSError, ValueError, AttributeError) as err:
            status, error = "unreadable", str(err)
        if status != "completed":
            job = path.parent.relative_to(sweep_dir)
            lines.append(f"  job {job}: {status}{': ' + error if error else ''}")
    if expected is not None and found < expected:
        lines.append(f"  {expected - found} of {expected} jobs left no results.json")
    return lines


class SweepSummary(Callback):
    """Hydra callback: after the last job, note which jobs failed for the entry point, which
    prints them and exits non-zero (Hydra turns an exception in a callback into a warning)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        lines = failures(sweep_dir, expected_jobs(list(config.hydra.overrides.task)))
        if lines:
            _summary.append(
                f"{len(lines)} job(s) of the sweep in {sweep_dir} did not complete:\n"
                + "\n".join(lines)
            )
