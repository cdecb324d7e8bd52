"""The progress line (#16): compact at any width, once per epoch at least, plain when logged,
and the phases without steps of their own (validation, CAM metrics, few-shot) not silent."""

from __future__ import annotations

import io
import logging

import pytest

from camexp.run import progress
from camexp.run.progress import Line, Progress, duration, fit, track

STATS = {  # what EpochMeter.summary() returns
    "train/loss": 0.51234,
    "train/ce": 0.40121,
    "train/cam": 0.11113,
    "train/acc1": 85.234,
    "train/images_per_s": 1620.4,
    "train/skipped_steps": 0,
}


def live_line(width: int) -> str:
    stream = io.StringIO()
    line = Line("epoch 12/200", 4680, "live", stream=stream, width=width)
    line.done, line.steps = 100, 1200  # 100 steps taken since the start of this Line
    line.show(STATS)
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\x1b[K")  # rewritten in place
    return text[1 : -len("\x1b[K")]


def test_an_80_column_terminal_still_shows_acc1_speed_and_eta():
    text = live_line(80)
    assert len(text) <= 79
    assert "acc1 85.23" in text and "1620 img/s" in text and "eta " in text
    assert "[" not in text  # the bar is the first thing to go


def test_a_wide_terminal_shows_the_bar_and_every_loss_part():
    text = live_line(200)
    assert text.startswith("epoch 12/200 [##........] 1200/4680 loss 0.5123 ce 0.4012 cam 0.1111")
    assert "acc1 85.23" in text and "img/s" in text


def test_a_very_narrow_terminal_keeps_acc1_and_speed():
    text = live_line(40)
    assert text == "epoch 12/200 acc1 85.23 1620 img/s"


def test_fit_drops_the_least_useful_fields_first():
    fields = [(0, "a"), (2, "bb"), (1, "cc"), (2, "dd")]
    assert fit(fields, 100) == "a bb cc dd"
    assert fit(fields, 7) == "a bb cc"  # the last field of the worst rank goes first
    assert fit(fields, 4) == "a cc"
    assert fit(fields, 1) == "a"  # rank 0 always stays


@pytest.mark.parametrize(
    "every, total, expected",
    [(50, 7, [7]), (2, 7, [2, 4, 6, 7]), (3, 6, [3, 6]), (0, 5, [5])],
)
def test_log_every_larger_than_an_epoch_still_shows_its_last_step(every, total, expected):
    line = Line("epoch 1/1", total, "log")
    assert [s for s in range(1, total + 1) if line.due(s, every)] == expected


def test_off_a_terminal_it_is_a_plain_log_line(caplog):
    line = Line("epoch 1/3", 10, "log")
    line.done = line.steps = 5
    with caplog.at_level(logging.INFO, logger="camexp.progress"):
        line.show(STATS)
    (record,) = caplog.records
    text = record.getMessage()
    assert text.startswith("epoch 1/3 5/10 loss 0.5123 ce 0.4012 cam 0.1111 acc1 85.23")
    assert "\x1b" not in text and "[" not in text


def test_the_trainer_wrapper_counts_steps_and_progress_false_is_off(monkeypatch):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    loader = [1, 2, 3]
    wrapped, line = Progress(True).wrap(loader, "epoch 1/1")
    assert list(wrapped) == loader and line.done == 3 and line.total == 3 and line.how == "log"
    same, none = Progress(False).wrap(loader, "epoch 1/1")
    assert same is loader and none is None
    Progress.show(None, STATS)  # no line: nothing happens


def test_a_slow_phase_reports_where_it_is(monkeypatch, caplog):
    monkeypatch.setattr(progress, "PHASE_EVERY_S", 0.0)  # every item is "slow"
    monkeypatch.setitem(progress._mode, "value", "log")
    with caplog.at_level(logging.INFO, logger="camexp.progress"):
        assert list(track(range(4), "validate")) == [0, 1, 2, 3]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("validate 1/4 ") and "batches/s" in messages[0]
    assert messages[3].startswith("validate 4/4 ")
    assert messages[-1].startswith("validate: 4 batches in ")


def test_a_fast_phase_and_progress_false_stay_quiet(monkeypatch, caplog):
    monkeypatch.setitem(progress._mode, "value", "log")
    with caplog.at_level(logging.INFO, logger="camexp.progress"):
        assert list(track(range(3), "validate")) == [0, 1, 2]  # under PHASE_EVERY_S
        monkeypatch.setattr(progress, "PHASE_EVERY_S", 0.0)
        monkeypatch.setitem(progress._mode, "value", "off")
        assert list(track(range(3), "validate")) == [0, 1, 2]
    assert caplog.records == []


def test_durations():
    assert duration(75) == "1:15" and duration(3725) == "1:02:05" and duration(-3) == "0:00"
