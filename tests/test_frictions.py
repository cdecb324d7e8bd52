"""Issue 27's frictions: threads per job, a slowdown warning, job-numbered sweep logs, files a
group can read, a failed start that leaves no folder, one-line type and CLI errors."""

import io
import logging
import os
import sys

import pytest
import torch
from conftest import run_camexp
from hydra.types import RunMode
from omegaconf import OmegaConf

from camexp.errors import UserError
from camexp.run import jobs
from camexp.run.checkpoint import save_checkpoint
from camexp.run.hydra_errors import closest
from camexp.run.progress import slowdown
from camexp.run.tracking import write_text_atomic

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def hydra_cfg(mode=RunMode.MULTIRUN, target=JOBLIB, n_jobs=2, num=3):
    launcher = {"_target_": target, "n_jobs": n_jobs}
    cfg = OmegaConf.create({"launcher": launcher, "job": {"num": num}})
    cfg.mode = mode  # an enum, as HydraConfig holds it
    return cfg


@pytest.mark.parametrize(
    "value, hydra, omp, threads",
    [
        ("auto", hydra_cfg(n_jobs=2), None, 4),  # 8 cores / 2 jobs
        ("auto", hydra_cfg(n_jobs=-1), None, 1),  # a job per core
        ("auto", hydra_cfg(mode=RunMode.RUN), None, 8),  # a single run: every core
        ("auto", hydra_cfg(target="hydra._internal.core_plugins.basic_launcher"), None, 8),
        ("auto", hydra_cfg(n_jobs=2), "3", 3),  # the user's OMP_NUM_THREADS wins
        (2, hydra_cfg(n_jobs=2), "3", 2),  # and threads= over it
    ],
)
def test_threads_auto_divides_the_cores_among_parallel_jobs(monkeypatch, value, hydra, omp,
                                                            threads):  # fmt: skip
    monkeypatch.setattr(jobs, "cores", lambda: 8)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert jobs.threads_for(value, hydra)[0] == threads


@pytest.mark.parametrize("value", ["many", 0, True])
def test_a_bad_threads_value_is_one_line(value):
    with pytest.raises(UserError, match=f"threads={value} must be auto or a whole number"):
        jobs.threads_for(value, hydra_cfg())


def test_apply_threads_sets_torch_and_logs(monkeypatch, caplog):
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger="camexp.run.jobs"):
            assert jobs.apply_threads(1, hydra_cfg(mode=RunMode.RUN)) == 1
        assert torch.get_num_threads() == 1 and "torch threads: 1" in caplog.text
    finally:
        torch.set_num_threads(before)


def test_slowdown_warns_once_below_a_third_of_the_first_epoch():
    assert slowdown([3000.0]) is None
    assert slowdown([3000.0, 1500.0]) is None  # half: shared, not collapsed
    warning = slowdown([3000.0, 2900.0, 150.0])
    assert warning is not None and "150 img/s" in warning and "3000" in warning
    assert slowdown([3000.0, 150.0, 140.0]) is None  # said once already


def test_parallel_jobs_prefix_their_log_lines_with_the_job_number():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    logger = logging.getLogger("camexp.test_frictions")
    logger.setLevel(logging.INFO)
    prefix = None
    try:
        assert jobs.prefix_job_logs(hydra_cfg(mode=RunMode.RUN)) is None  # not shared
        prefix = jobs.prefix_job_logs(hydra_cfg(n_jobs=2, num=3))
        logger.info("epoch %d", 1)
    finally:
        for each in root.handlers:  # the filter went on every root handler (pytest's too)
            each.removeFilter(prefix)
        root.removeHandler(handler)
    assert stream.getvalue() == "[job 3] epoch 1\n"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o007, 0o660), (0o077, 0o600)])
def test_output_files_follow_the_umask(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        write_text_atomic(str(tmp_path / "results.json"), "{}")
        save_checkpoint(str(tmp_path / "last.pt"), {"model": {}})
    finally:
        os.umask(before)
    for name in ("results.json", "last.pt"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == mode, name


def test_a_swapped_pair_of_letters_suggests_the_transposition():
    losses = ["at", "cam", "catkd", "ccm", "ce", "kd"]
    assert closest("cma", losses) == "cam"  # difflib alone says ccm
    assert closest("wieght", ["weight", "warmup_epochs"]) == "weight"
    assert closest("resnet5", ["resnet50", "resnet56", "wrn_16_2"]) in ("resnet50", "resnet56")


def test_a_bad_resume_path_leaves_no_folder(tmp_path):
    """Hydra creates resume=PATH's folder before camexp runs; the failed start removes it."""
    missing = tmp_path / "no-such-run"
    done = run_camexp(f"resume={missing}", cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such folder" in lines[0], done.stderr
    assert not missing.exists()
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("argv", [["--epochs", "3"], ["epochs=3\x07"]])
def test_a_refused_command_line_leaves_the_callers_environment_as_it_was(monkeypatch, argv):
    """main() sets HYDRA_FULL_ERROR for Hydra; an early refusal must not leave it behind for an
    in-process caller's later subprocesses (they would print tracebacks and exit 1)."""
    from camexp.main import main

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["camexp", *argv])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert "HYDRA_FULL_ERROR" not in os.environ and "CAMEXP_USER_FULL_ERROR" not in os.environ
