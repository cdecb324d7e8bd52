"""A stop signal at any moment leaves a resumable run (issue 15, item 2): SIGTERM or SIGUSR1
(a scheduler's preemption) or SIGINT (Ctrl-C) during start-up, in an epoch's last step, in
validation, mid-epoch, in the final test or in the CAM metrics. Each stops with one line naming
the resume command (no traceback), results.json says ``preempted`` (``interrupted`` for SIGINT),
and ``resume=`` then ends with exactly the uninterrupted run's metrics.

The uninterrupted run is test_resume.py's ``reference`` (3 epochs of 3 steps, a step checkpoint
every 2 steps).
"""

import pytest
import test_resume
from test_resume import SMALL, camexp, metrics_rows, results

reference = test_resume.reference  # the uninterrupted run, a session fixture shared with it

STOPS = [
    # (kill_driver point, exit code, status): where the signal lands
    ("term:2", 75, "preempted"),  # during step 3, the last step of epoch 1 (issue 15's bug)
    ("term:5", 75, "preempted"),  # during step 6, the last step of epoch 2
    ("usr1:3", 75, "preempted"),  # during epoch 1's validation
    ("int:4", 130, "interrupted"),  # mid-epoch, Ctrl-C
    ("term@start", 75, "preempted"),  # while the data are being built
    ("term@test", 75, "preempted"),  # in the final test
    ("term@cams", 75, "preempted"),  # in the CAM metrics
]


@pytest.mark.parametrize("point, code, status", STOPS)
def test_a_stop_signal_anywhere_resumes_into_the_uninterrupted_run(
    reference, tmp_path, point, code, status
):
    data, reference_run = reference
    run = str(tmp_path / "run")
    stopped = camexp([*SMALL, f"dataset.root={data}", f"hydra.run.dir={run}"], driver=point)
    assert stopped.returncode == code, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    last_line = stopped.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"camexp: {status}: ") and f"camexp resume={run}" in last_line
    assert results(run)["status"] == status
    camexp([f"resume={run}"], check=True)
    assert metrics_rows(run) == metrics_rows(reference_run)
    resumed, expected = results(run), results(reference_run)
    assert resumed["status"] == "completed"
    assert resumed["metrics"] == expected["metrics"]


def test_the_last_step_stop_saves_the_epoch_end_not_a_mid_epoch_state(reference, tmp_path):
    """The cause of issue 15's bug: a mid-epoch checkpoint taken after an epoch's last step made
    the resumed run train that epoch a second time. Now the stop waits for the epoch's end."""
    from camexp.run.checkpoint import load_checkpoint

    data, _ = reference
    run = tmp_path / "run"
    stopped = camexp([*SMALL, f"dataset.root={data}", f"hydra.run.dir={run}"], driver="term:2")
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    state = load_checkpoint(str(run / "checkpoints" / "last.pt"))
    assert (state["epoch"], state["step"], state["meter"]) == (1, 3, None)
    assert len(state["history"]) == 1
