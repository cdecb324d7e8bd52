"""Round 3 of reliability (issue 28): a run folder is data and never runs code, camexp never
writes through a symlink, every signal at any moment leaves a correctly labelled state, a NaN is a
failed run, and any path the file system allows resumes. Real processes, real signals, real
symlinks, real crafted folders; the training processes share one tiny run (``stopped``)."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_fashion_mnist
from test_reliability_run_folder import run_folder
from test_resume import DRIVER, results

from camexp.errors import Busy, UserError
from camexp.run.lock import RunLock, refuse_symlinks
from camexp.run.recompose import CONFIG_DIR, command_line, parse, recompose_run, resume_override

TINY = ["debug=smoke", "dataset.val_size=16", "dataset.subset.train=48", "dataset.subset.test=16",
        "metrics.images=2", "cam_pictures=2", "tensorboard=false", "progress=false",
        "batch_size=16", "checkpoint_every=1"]  # fmt: skip


def python(args, cwd=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def one_line(done) -> str:
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else ""


# ----------------------------------------------------------------------------- §1 no code
def evil_yaml(tmp_path: Path, marker: Path) -> Path:
    evil = tmp_path / "elsewhere" / "evil.yaml"
    evil.parent.mkdir()
    evil.write_text(yaml.safe_dump({"source": {"_target_": "os.mkdir", "path": str(marker)}}))
    return evil


def resume_then_build(run: str) -> None:
    """What ``resume=RUN`` does: recompose, then build the dataset (a UserError stops it)."""
    from hydra.utils import instantiate

    try:
        cfg = recompose_run(run, [f"resume={run}"])
    except UserError:
        return
    instantiate(cfg.dataset.source)


def test_a_saved_group_value_that_walks_out_of_configs_never_runs(tmp_path):
    marker = tmp_path / "marker"
    evil = evil_yaml(tmp_path, marker)
    walk = os.path.relpath(evil.with_suffix(""), Path(CONFIG_DIR, "dataset"))
    run = run_folder(tmp_path, ["debug=smoke", f"dataset={walk}"])
    with pytest.raises(UserError, match="not one of this checkout's dataset options"):
        recompose_run(run, [f"resume={run}"])
    resume_then_build(run)
    assert not marker.exists()


def test_a_saved_interpolation_is_never_resolved(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("EVIL", f"{{_target_: os.mkdir, path: '{marker}'}}")
    run = run_folder(tmp_path, ["debug=smoke", "dataset.source='${oc.decode:${oc.env:EVIL}}'"])
    with pytest.raises(UserError, match="holds an interpolation"):
        recompose_run(run, [f"resume={run}"])
    resume_then_build(run)
    assert not marker.exists()


def test_a_control_character_in_an_override_is_refused(tmp_path):
    run = run_folder(tmp_path, ["debug=smoke"])
    Path(run, ".hydra", "overrides.yaml").write_text(
        yaml.safe_dump(["debug=smoke", "dataset.name='x\nimport os'"]))  # fmt: skip
    with pytest.raises(UserError, match="control character"):
        recompose_run(run, [f"resume={run}"])
    with pytest.raises(UserError, match="control character"):
        command_line(["seed=1\nimport os; os.mkdir('x')"])


def test_cams_takes_a_dataset_name_never_a_path(tmp_path):
    from camexp.report.cams import test_images

    marker = tmp_path / "marker"
    evil = evil_yaml(tmp_path, marker)
    walk = os.path.relpath(evil.with_suffix(""), Path(CONFIG_DIR, "dataset"))
    with pytest.raises(UserError, match="not one of this camexp's datasets"):
        test_images(walk, {}, 1)
    assert not marker.exists()


# ----------------------------------------------------------------------------- §2 symlinks
def test_a_symlinked_lock_or_checkpoints_folder_is_refused_and_its_target_kept(tmp_path):
    target = tmp_path / "target.pth"
    target.write_text("kept\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    with pytest.raises(UserError, match="symlink"):
        RunLock(str(run)).acquire()
    assert target.read_text() == "kept\n"
    (run / ".lock").unlink()
    (run / "checkpoints").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UserError, match="checkpoints is a symlink"):
        refuse_symlinks(str(run))


def test_a_run_folder_with_a_symlinked_log_is_refused_before_any_write(tmp_path):
    target = tmp_path / "site.pth"
    target.write_text("kept\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "camexp.log").symlink_to(target)
    done = python(["-m", "camexp", "debug=smoke", f"dataset.root={tmp_path}",
                   f"hydra.run.dir={run}"], cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "camexp.log is a symlink" in one_line(done)
    assert target.read_text() == "kept\n"
    assert sorted(os.listdir(run)) == ["camexp.log"]


# ----------------------------------------------------------------------------- §5 the lock
def test_the_lock_is_not_held_by_children_left_behind(tmp_path):
    """DataLoader workers are forked: after a kill -9 of the run, they must not keep its folder."""
    code = ("import os, sys, time; from camexp.run.lock import RunLock\n"
            f"RunLock({str(tmp_path)!r}).acquire()\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.dup2(os.open(os.devnull, os.O_RDWR), 1); os.dup2(1, 2)\n"
            "    time.sleep(60); os._exit(0)\n"
            "print(pid, flush=True); os.kill(os.getpid(), 9)\n")  # fmt: skip
    done = python(["-c", code])
    child = int(done.stdout.split()[0])
    try:
        assert done.returncode == -9
        os.kill(child, 0)  # the worker lives on
        with RunLock(str(tmp_path)):
            pass
    finally:
        os.kill(child, 9)
    with RunLock(str(tmp_path)), pytest.raises(Busy):
        RunLock(str(tmp_path)).acquire()


# ----------------------------------------------------------------------------- §5 paths
@pytest.mark.parametrize("path", ["/r/run 1 ", "/r/dir ü ✓/run", "/r/a'b,c\\"])
def test_any_path_survives_hydras_lexer_and_the_shell(path):
    from camexp.main import resume_command

    assert parse(command_line([f"resume={path}"]), "t")[0].value() == path
    assert parse([resume_override(path)], "t")[0].value() == path
    assert shlex.split(resume_command(path))[1] == f"resume={path}"


# ----------------------------------------------------------------------------- §4 signals
def test_sigterm_in_hydras_start_up_stops_with_one_line(tmp_path):
    done = python([DRIVER, "term@hydra", "debug=smoke", f"paths.output_dir={tmp_path}/out"],
                  cwd=tmp_path)  # fmt: skip
    assert done.returncode == 75, done.stderr[-2000:]
    assert "preempted" in one_line(done) and not (tmp_path / "out").exists()


def test_ctrl_c_while_torch_imports_is_one_line(tmp_path):
    code = ("import builtins, os, signal, sys, runpy\n"
            # a shell's background job starts with SIGINT ignored: give it Python's default back
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "real = builtins.__import__\n"
            "def hook(name, *a, **k):\n"
            "    if name == 'torch' and 'torch' not in sys.modules:\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = hook\n"
            "sys.argv = ['camexp', 'debug=smoke']\n"
            "runpy.run_module('camexp', run_name='__main__')\n")  # fmt: skip
    done = python(["-c", code], cwd=tmp_path)
    assert done.returncode == 130, done.stderr[-2000:]
    assert one_line(done) == "camexp: interrupted while starting; nothing was written"


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A tiny run in ``dir ü ✓/run 1 `` (a trailing space) stopped by SIGHUP after its first
    step, with a SIGTERM arriving while the stop writes results.json."""
    root = tmp_path_factory.mktemp("round3")
    data = write_fashion_mnist(root / "data", n_train=64, n_test=16)
    run = root / "dir ü ✓" / "run 1 "
    done = python([DRIVER, "twice:1", *TINY, f"dataset.root={data}",
                   f"hydra.run.dir='{run}'"], cwd=root)  # fmt: skip
    return run, done


def test_sighup_then_a_second_signal_leaves_a_preempted_resumable_run(stopped):
    run, done = stopped
    assert done.returncode == 75, done.stderr[-2000:]
    assert results(run)["status"] == "preempted"
    assert (run / "checkpoints" / "last.pt").exists()
    printed = one_line(done).split("continue with: ", 1)[1]
    assert shlex.split(printed)[1:] == [f"resume={run}"]


def test_the_printed_command_resumes_and_a_signal_after_completed_keeps_it(stopped):
    """The printed resume command, as the shell splits it (the launcher swapped for the driver
    that sends SIGTERM right after "completed" is written): exit 0, status completed."""
    run, done = stopped
    printed = shlex.split(one_line(done).split("continue with: ", 1)[1])
    resumed = python([DRIVER, "term@done", *printed[1:]], cwd=run.parent)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert results(run)["status"] == "completed"


# ----------------------------------------------------------------------------- §3 NaN
def test_eval_of_nan_weights_is_a_diverged_run(stopped, tmp_path):
    from camexp.run.checkpoint import load_checkpoint, save_checkpoint

    run, _ = stopped
    state = load_checkpoint(str(run / "checkpoints" / "last.pt"))
    state["model"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v
                      for k, v in state["model"].items()}  # fmt: skip
    ckpt = tmp_path / "nan.pt"
    save_checkpoint(str(ckpt), {k: v for k, v in state.items() if k != "format"})
    data = results(run)["config"]["dataset"]["root"]
    done = python(["-m", "camexp", "task=eval", f"ckpt={ckpt}", f"dataset.root={data}",
                   *TINY[:1], "tensorboard=false", "progress=false", "cam_pictures=0",
                   "metrics=none", f"hydra.run.dir={tmp_path / 'eval'}"], cwd=tmp_path)  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    assert one_line(done).startswith("camexp: diverged: ")
    assert results(tmp_path / "eval")["status"] == "diverged"
    assert torch.isnan(torch.tensor(float("nan")))


# ----------------------------------------------------------------------------- §5 the report
def test_the_report_reads_a_run_folder_as_plain_data(tmp_path, monkeypatch):
    import json

    from camexp.report.runs import SkippedRun, load_run

    monkeypatch.setenv("SECRET", "leaked")
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("name: ${oc.env:SECRET}\n")
    (run / "results.json").write_text(
        '{"status": "completed", "task": "classify", "metrics": {"test/acc1": NaN}}'
    )
    loaded = load_run(str(run))
    assert loaded.value("name") == "${oc.env:SECRET}"
    assert loaded.status == "diverged"  # listed apart, never averaged
    for value in ("1e400", str(10**400)):
        (run / "results.json").write_text(
            json.dumps({"status": "completed"})[:-1] + f', "metrics": {{"test/acc1": {value}}}}}'
        )
        assert load_run(str(run)).status == "diverged"
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    (run / ".hydra" / "config.yaml").write_text(bomb)
    with pytest.raises(SkippedRun, match="alias"):
        load_run(str(run))
