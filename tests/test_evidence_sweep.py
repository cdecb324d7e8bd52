"""The evidence sweep's resume logic (scripts/reproduce/evidence.py), with real camexp runs.

A tiny sweep of two runs is stopped by a real SIGTERM while its second run trains (after that run
saved a checkpoint), then the same command runs again on a fresh scratch folder (another clone,
holding only what OUT committed: the parked copy of the cut-off run). No run may be kept half (a
folder without its files) or twice (trained again, or its epochs logged twice), and a third call
with every run present trains nothing and rebuilds the same tables.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "scripts", "reproduce", "evidence.py")
RUNS = ["seed-0", "seed-1"]
KEPT = ["results.json", "metrics.csv", os.path.join(".hydra", "overrides.yaml"), "machine.json"]


def _spec(tmp_path):
    spec = {
        "common": [
            "dataset=digits", "debug=smoke", "backbone=resnet20", "metrics=none", "epochs=2",
            "checkpoint_every=1", "amp=none", "progress=false", "tensorboard=false",
            "cam_pictures=0",
        ],
        "tables": [{
            "name": "tiny", "title": "Tiny", "about": "two seeds", "fixed": [],
            "sweep": {"seed": [0, 1]}, "report": ["--metrics", "test/acc1"],
        }],
    }  # fmt: skip
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _driver(tmp_path, *extra):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    cmd = [sys.executable, DRIVER, "--spec", str(_spec(tmp_path)), "--out", str(out),
           "--scratch", str(scratch), "--jobs", "1", "--threads", "1", *extra]  # fmt: skip
    env = dict(os.environ, CAMEXP_DATA_DIR=str(tmp_path / "data"))
    return cmd, env, out, scratch


def _whole(out, run):
    folder = out / "tiny" / run
    missing = [name for name in KEPT if not (folder / name).is_file()]
    assert not missing, f"{run} kept without {missing}"
    status = json.loads((folder / "results.json").read_text())["status"]
    assert status == "completed", (run, status)
    epochs = [line.split(",")[0] for line in (folder / "metrics.csv").read_text().splitlines()[1:]]
    assert sorted(epochs) == sorted(set(epochs)), f"{run}: an epoch logged twice: {epochs}"


def test_killed_sweep_continues_on_another_clone_without_counting_a_run_twice_or_half(tmp_path):
    cmd, env, out, scratch = _driver(tmp_path, "--park-every", "0.005")  # every 0.3 s
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    second_ckpt = scratch / "tiny" / RUNS[1] / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not second_ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before its second run saved a checkpoint"
    proc.send_signal(signal.SIGTERM)
    first_out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, first_out
    # Stopped mid-run: the first run is kept whole, the second is not kept at all.
    _whole(out, RUNS[0])
    assert not (out / "tiny" / RUNS[1]).exists(), first_out
    partial = out / ".partial"
    assert not partial.exists() or not any(partial.iterdir())
    tables = (out / "tables.md").read_text()
    assert "Runs: 1 of 2 finished (IN PROGRESS" in tables, tables
    first_kept = (out / "tiny" / RUNS[0] / "results.json").read_bytes()
    stopped = json.loads((scratch / "logs" / f"tiny__{RUNS[1]}.spent.json").read_text())
    assert stopped["starts"] == 1 and stopped["wall_s"] > 0, stopped
    # Parked while it trained and again when stopped; the kept run's parked copy is gone.
    assert f"parked tiny/{RUNS[0]}" in first_out and f"parked tiny/{RUNS[1]}" in first_out
    assert f"stopped tiny/{RUNS[1]} (resumable and parked)" in first_out, first_out
    parked = out / ".parked"
    assert sorted(p.name for p in parked.iterdir()) == [f"tiny__{RUNS[1]}"]
    assert (parked / f"tiny__{RUNS[1]}" / "checkpoints" / "last.pt").is_file()
    assert not (parked / f"tiny__{RUNS[1]}" / ".lock").exists()
    assert json.loads((parked / f"tiny__{RUNS[1]}" / "spent.json").read_text()) == stopped
    assert "parked" not in tables  # a parked run is in no table

    # Another clone, at another path: only OUT, as committed, is there.
    shutil.rmtree(scratch)
    scratch = tmp_path / "clone" / "scratch"
    cmd[cmd.index("--scratch") + 1] = str(scratch)
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 of 2 runs finished, 1 to train" in second.stdout, second.stdout
    assert f"started tiny/{RUNS[0]}" not in second.stdout  # never trained twice
    log = (scratch / "logs" / f"tiny__{RUNS[1]}.log").read_text()
    assert "resume=" in log and "resumed at epoch" in log, "the parked run was not resumed"
    assert not any(parked.iterdir()), "a kept run's parked copy was left behind"
    for run in RUNS:
        _whole(out, run)
    assert (out / "tiny" / RUNS[0] / "results.json").read_bytes() == first_kept
    # The resumed run's cost counts its stopped start too, not only the start that finished it.
    machine = json.loads((out / "tiny" / RUNS[1] / "machine.json").read_text())
    assert machine["starts"] == 2 and machine["wall_s"] >= round(stopped["wall_s"], 1), machine
    assert json.loads((out / "tiny" / RUNS[0] / "machine.json").read_text())["starts"] == 1
    tables = (out / "tables.md").read_text()
    assert "Runs: 2 of 2 finished (complete)" in tables, tables

    third = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "2 of 2 runs finished, 0 to train" in third.stdout
    assert "started" not in third.stdout
    assert (out / "tables.md").read_text() == tables


def test_a_kept_run_with_other_overrides_is_refused_by_name(tmp_path):
    cmd, env, out, _ = _driver(tmp_path, "--report-only")
    folder = out / "tiny" / RUNS[0]
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=0", "epochs=99"]))
    (folder / "results.json").write_text(json.dumps({"status": "completed"}))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert str(folder) in result.stderr and "other overrides" in result.stderr, result.stderr


def _chained_spec(tmp_path, ref="evidence:src/seed-{seed}/checkpoints/last.pt",
                  keep=("checkpoints/last.pt",)):  # fmt: skip
    """Table ``dst`` evaluates the weights that table ``src`` trained and kept."""
    spec = yaml.safe_load(_spec(tmp_path).read_text())
    spec["tables"] = [
        {"name": "src", "title": "Source", "fixed": [], "sweep": {"seed": [0]},
         "keep": list(keep), "report": ["--metrics", "test/acc1"]},
        {"name": "dst", "title": "Reader", "fixed": [],
         "sweep": {"seed": [0], "use": {"eval": ["task=eval", f"ckpt={ref}"]}},
         "report": ["--metrics", "test/acc1"]},
    ]  # fmt: skip
    path = tmp_path / "chained.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_table_reads_a_kept_checkpoint_of_another_and_counts_on_another_clone(tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    env = dict(os.environ, CAMEXP_DATA_DIR=str(tmp_path / "data"))

    def driver(spec, out, *extra):
        cmd = [sys.executable, DRIVER, "--spec", str(spec), "--out", str(out), "--scratch",
               str(scratch), "--jobs", "2", "--threads", "1", *extra]  # fmt: skip
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)

    spec = _chained_spec(tmp_path)
    # Asking for the reader alone plans its source too, and runs the source first.
    first = driver(spec, out, "--tables", "dst")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "0 of 2 runs finished, 2 to train" in first.stdout, first.stdout
    started = [line for line in first.stdout.splitlines() if "started" in line]
    assert started == ["evidence: started src/seed-0", "evidence: started dst/seed-0_use-eval"]
    kept_ckpt = out / "src" / "seed-0" / "checkpoints" / "last.pt"
    assert kept_ckpt.is_file(), "the source's checkpoint was not kept for the reader"
    reader = out / "dst" / "seed-0_use-eval"
    saved = yaml.safe_load((reader / ".hydra" / "overrides.yaml").read_text())
    assert f"ckpt={kept_ckpt}" in saved, saved
    assert json.loads((reader / "results.json").read_text())["status"] == "completed"
    # A sweep of one table rebuilds every table, not only its own.
    only_src = driver(spec, out, "--tables", "src", "--report-only")
    assert only_src.returncode == 0, only_src.stderr
    tables = (out / "tables.md").read_text()
    assert "## Source" in tables and "## Reader" in tables, tables
    # The kept folder, copied to another clone's path, is finished there: nothing to train.
    moved = tmp_path / "elsewhere" / "evidence"
    shutil.copytree(out, moved)
    again = driver(spec, moved)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 of 2 runs finished, 0 to train" in again.stdout, again.stdout
    # The reader recorded the bytes it read; a source retrained since makes it stale, by name.
    inputs = json.loads((reader / "machine.json").read_text())["inputs"]
    assert list(inputs) == ["src/seed-0/checkpoints/last.pt"], inputs
    assert len(inputs["src/seed-0/checkpoints/last.pt"]) == 64
    retrained = tmp_path / "retrained"
    shutil.copytree(out, retrained)
    with open(retrained / "src" / "seed-0" / "checkpoints" / "last.pt", "ab") as f:
        f.write(b"\0")
    stale = driver(spec, retrained, "--report-only")
    assert stale.returncode != 0, stale.stdout + stale.stderr
    assert "src/seed-0/checkpoints/last.pt, which is no longer the file kept" in stale.stderr
    assert str(retrained / "dst" / "seed-0_use-eval") in stale.stderr
    # A reader whose kept run named another file is stale, by name.
    # (the source keeps both files: only the reader's reference differs)
    both = ("checkpoints/last.pt", "checkpoints/best.pt")
    other = driver(_chained_spec(tmp_path, "evidence:src/seed-{seed}/checkpoints/best.pt", both),
                   moved)  # fmt: skip
    assert other.returncode != 0 and "other overrides" in other.stderr, other.stderr


def test_a_reader_whose_source_did_not_complete_fails_by_name_and_a_bad_reference_is_refused(
    tmp_path,
):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    env = dict(os.environ, CAMEXP_DATA_DIR=str(tmp_path / "data"))
    spec = yaml.safe_load(_chained_spec(tmp_path).read_text())
    spec["tables"][0]["fixed"] = ["dataset.val_size=-5"]  # the source fails on bad input
    bad_source = tmp_path / "bad_source.yaml"
    bad_source.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, DRIVER, "--spec", str(bad_source), "--out", str(out), "--scratch",
           str(scratch), "--jobs", "1"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED src/seed-0" in result.stderr, result.stderr
    assert "dst/seed-0_use-eval (needs src/seed-0/checkpoints/last.pt, not kept)" in result.stderr
    assert "started dst" not in result.stdout
    assert not (out / "dst").exists()

    for ref, message in [
        ("../../etc/passwd", "is not evidence:<table>/<run>/<file>"),
        ("srcc/seed-0/checkpoints/last.pt", "no table plans a run srcc/seed-0"),
        ("src/seed-0/checkpoints/best.pt", "table src does not keep checkpoints/best.pt"),
    ]:
        spec["tables"][1]["sweep"]["use"]["eval"][1] = f"ckpt=evidence:{ref}"
        bad_ref = tmp_path / "bad_ref.yaml"
        bad_ref.write_text(yaml.safe_dump(spec))
        cmd[3] = str(bad_ref)
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stderr, result.stderr
        assert "started" not in result.stdout


def test_epochs_to_reach_the_baselines_final_value_hand_worked(tmp_path):
    """CE finals 90 and 92: the target is their mean, 91. A run's first epoch at or above 91
    counts; a run that never gets there is 'not reaching', never a large number."""
    sys.path.insert(0, os.path.dirname(DRIVER))
    try:
        from evidence_tables import reach_markdown
    finally:
        sys.path.remove(os.path.dirname(DRIVER))
    curves = {
        "seed-0_method-ce": [88.0, 90.0],
        "seed-1_method-ce": [89.0, 92.0],  # reaches 91 at epoch 2
        "seed-0_method-kd": [85.0, 91.5, 93.0],  # epoch 2
        "seed-1_method-kd": [91.0, 95.0, 96.0],  # epoch 1 (91 >= 91)
        "seed-2_method-kd": [80.0, 90.0, 90.9],  # never
    }
    done = []
    for name, values in curves.items():
        (tmp_path / name).mkdir()
        rows = ["epoch,val/acc1,lr"] + [f"{e},{v},0.1" for e, v in enumerate(values, start=1)]
        (tmp_path / name / "metrics.csv").write_text("\n".join(rows) + "\n")
        done.append(types.SimpleNamespace(name=name))
    table = {"reach": {"metric": "val/acc1", "baseline": "method-ce"}}
    lines = reach_markdown(table, done, str(tmp_path))
    assert lines[0].startswith("Epochs to reach 91.00 % val/acc1"), lines
    assert "| method-ce | 2.0 | 2-2 | 1 of 2 |" in lines, lines
    assert "| method-kd | 1.5 | 1-2 | 2 of 3 |" in lines, lines


def _kept_runs(tmp_path, out, machines):
    """Hand-written kept runs of the tiny table, one per (run, machine.json)."""
    spec = yaml.safe_load(_spec(tmp_path).read_text())
    for seed, (run, machine) in enumerate(machines.items()):
        folder = out / "tiny" / run
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"seed={seed}", *spec["common"]])
        )
        (folder / "results.json").write_text(json.dumps(
            {"status": "completed", "task": "classify", "metrics": {"test/acc1": 90.0 + seed}}
        ))  # fmt: skip
        (folder / "metrics.csv").write_text("epoch,val/acc1\n1,50\n")
        (folder / "machine.json").write_text(json.dumps(machine))


def test_a_table_of_cpu_and_gpu_runs_says_which_run_ran_where(tmp_path):
    cmd, env, out, _ = _driver(tmp_path, "--report-only")
    cpu = {"cpu": "AMD EPYC (test)", "gpu": None, "threads": 1, "wall_s": 3600.0, "cpu_hours": 1.0}
    gpu = dict(cpu, gpu="NVIDIA H100 80GB HBM3", wall_s=1800.0)
    _kept_runs(tmp_path, out, {"seed-0": cpu, "seed-1": gpu})
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    tables = (out / "tables.md").read_text()
    assert "Runs: 2 of 2 finished (complete)" in tables, tables
    assert "CPU: AMD EPYC (test) (1 run, 1.00 CPU-hours)" in tables, tables
    assert "GPU: NVIDIA H100 80GB HBM3 (1 run, 0.50 GPU-hours)" in tables, tables
    assert "| seed-0 | AMD EPYC (test) |" in tables, tables
    assert "| seed-1 | NVIDIA H100 80GB HBM3 |" in tables, tables


def test_a_table_of_two_cpu_models_gives_each_its_hours_and_names_each_runs_cpu(tmp_path):
    # A sweep that spans sessions may continue on another CPU: its CPU-hours are another unit.
    cmd, env, out, _ = _driver(tmp_path, "--report-only")
    zen = {"cpu": "AMD EPYC (zen)", "gpu": None, "threads": 1, "wall_s": 7200.0,
           "cpu_hours": 2.0}  # fmt: skip
    xeon = dict(zen, cpu="Intel Xeon (test)", wall_s=1800.0, cpu_hours=0.5)
    _kept_runs(tmp_path, out, {"seed-0": zen, "seed-1": xeon})
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    tables = (out / "tables.md").read_text()
    assert "CPU: AMD EPYC (zen) (1 run, 2.00 CPU-hours)" in tables, tables
    assert "CPU: Intel Xeon (test) (1 run, 0.50 CPU-hours)" in tables, tables
    assert "2.50" not in tables, "hours of two CPU models summed into one number"
    assert "| seed-0 | AMD EPYC (zen) |" in tables, tables
    assert "| seed-1 | Intel Xeon (test) |" in tables, tables


def test_tables_only_plans_what_a_table_reads_in_any_order_and_transitively():
    sys.path.insert(0, os.path.dirname(DRIVER))
    try:
        from evidence_plan import plan
    finally:
        sys.path.remove(os.path.dirname(DRIVER))
    tail = "/seed-{seed}/checkpoints/last.pt"
    spec = {"tables": [  # the reader first, its source last, a chain in between
        {"name": "c", "sweep": {"seed": [0, 1]}, "fixed": ["x=evidence:b" + tail]},
        {"name": "a", "sweep": {"seed": [0, 1]}, "keep": ["checkpoints/last.pt"]},
        {"name": "b", "sweep": {"seed": [0, 1]}, "keep": ["checkpoints/last.pt"],
         "fixed": ["y=evidence:a" + tail]},
        {"name": "other", "sweep": {"seed": [0]}},
    ]}  # fmt: skip
    planned = [(r.table, r.name) for r in plan(spec, ["c"], "/out")]
    assert sorted(planned) == sorted((t, f"seed-{s}") for t in "abc" for s in (0, 1)), planned
    reader = next(r for r in plan(spec, None, "/out") if (r.table, r.name) == ("c", "seed-1"))
    assert "x=/out/b/seed-1/checkpoints/last.pt" in reader.overrides
    assert reader.needs == [("b", "seed-1")]


def test_every_planned_run_passes_camexps_command_line_checks(tmp_path):
    """Each variant of the real spec (seed 0: the seed never changes what composes) composes and
    passes the checks ``camexp`` makes before it trains. ``metrics.images=all`` once failed the
    type check, and the whole CAM-quality table exited 2 only when its turn came."""
    from camexp.main import known_top_level_keys
    from camexp.run.options import check_options
    from camexp.run.recompose import compose_config

    sys.path.insert(0, os.path.dirname(DRIVER))
    try:
        from evidence_plan import plan
    finally:
        sys.path.remove(os.path.dirname(DRIVER))
    spec = yaml.safe_load(open(os.path.join(ROOT, "scripts", "reproduce", "evidence.yaml")))
    runs = [r for r in plan(spec, None, str(tmp_path)) if not r.name.startswith("seed-1")
            and not r.name.startswith("seed-2")]  # fmt: skip
    assert {r.table for r in runs} == {t["name"] for t in spec["tables"]}
    for run in runs:
        cfg = compose_config(run.overrides)
        check_options(cfg, run.overrides, known_top_level_keys(cfg, run.overrides))


def _driver_parts(tmp_path, overrides=("seed=0",), parked_bytes=None):
    """The driver module, one run ``t/seed-0``, OUT and SCRATCH, and its parked folder (holding
    a last.pt of ``parked_bytes`` when given)."""
    sys.path.insert(0, os.path.dirname(DRIVER))
    try:
        import evidence
        from evidence_plan import Run
    finally:
        sys.path.remove(os.path.dirname(DRIVER))
    run = Run(table="t", name="seed-0", overrides=list(overrides))
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    parked = out / ".parked" / "t__seed-0"
    if parked_bytes is not None:
        (parked / "checkpoints").mkdir(parents=True)
        (parked / "checkpoints" / "last.pt").write_bytes(parked_bytes)
    return evidence, run, out, scratch, parked


def test_a_scratch_checkpoint_wins_over_a_parked_one_and_a_parked_cost_is_not_counted_twice(
    tmp_path,
):
    evidence, run, out, scratch, parked = _driver_parts(tmp_path, parked_bytes=b"parked")
    (parked / "spent.json").write_text(json.dumps({"wall_s": 100.0, "starts": 2}))

    # This clone's own, newer checkpoint is resumed as it is.
    own = scratch / "t" / "seed-0" / "checkpoints"
    own.mkdir(parents=True)
    (own / "last.pt").write_bytes(b"own")
    cmd = evidence.command(run, str(scratch), ["camexp"], str(out))
    assert cmd == ["camexp", f"resume={scratch / 't' / 'seed-0'}"]
    assert (own / "last.pt").read_bytes() == b"own"

    # A fresh clone takes the parked folder and its cost, but no spent.json into the run folder.
    shutil.rmtree(scratch)
    cmd = evidence.command(run, str(scratch), ["camexp"], str(out))
    assert cmd == ["camexp", f"resume={scratch / 't' / 'seed-0'}"]
    assert (own / "last.pt").read_bytes() == b"parked"
    assert not (scratch / "t" / "seed-0" / "spent.json").exists()
    assert evidence.spent_before(str(scratch), run) == (100.0, 2)
    # Restoring it again (its checkpoint deleted here) keeps this clone's larger count.
    evidence.write_json(evidence.spent_path(str(scratch), run), {"wall_s": 150.0, "starts": 3})
    (own / "last.pt").unlink()
    evidence.command(run, str(scratch), ["camexp"], str(out))
    assert evidence.spent_before(str(scratch), run) == (150.0, 3)

    # Nothing parked, nothing here: a fresh start in an emptied folder.
    shutil.rmtree(parked)
    shutil.rmtree(scratch / "t")
    cmd = evidence.command(run, str(scratch), ["camexp"], str(out))
    assert cmd == ["camexp", "seed=0", f"hydra.run.dir={scratch / 't' / 'seed-0'}"]


def test_a_parked_folder_with_a_symlink_is_not_restored(tmp_path, capsys):
    evidence, run, out, scratch, parked = _driver_parts(tmp_path, parked_bytes=b"parked")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for a run folder")
    (parked / "camexp.log").symlink_to(secret)
    cmd = evidence.command(run, str(scratch), ["camexp"], str(out))
    assert cmd == ["camexp", "seed=0", f"hydra.run.dir={scratch / 't' / 'seed-0'}"]
    assert "holds a symlink" in capsys.readouterr().err
    assert not (scratch / "t" / "seed-0").exists()


def test_a_cut_off_run_of_other_overrides_starts_afresh_here_or_parked(tmp_path, capsys):
    """evidence.yaml changed since the run was cut off: resuming would train the old run under
    the new name, so the scratch folder and a parked copy are both passed over."""
    evidence, run, out, scratch, parked = _driver_parts(tmp_path, ["seed=0", "epochs=4"])
    fresh = ["camexp", "seed=0", "epochs=4", f"hydra.run.dir={scratch / 't' / 'seed-0'}"]
    for folder in (scratch / "t" / "seed-0", parked):
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "last.pt").write_bytes(b"old")
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=0", "epochs=2"]))
    assert evidence.command(run, str(scratch), ["camexp"], str(out)) == fresh
    err = capsys.readouterr().err
    assert "other overrides (seed=0 epochs=2)" in err and "starts afresh" in err, err
    assert not (scratch / "t" / "seed-0").exists()  # emptied for the fresh start

    assert evidence.command(run, str(scratch), ["camexp"], str(out)) == fresh
    assert "other overrides" in capsys.readouterr().err
    (parked / ".hydra" / "overrides.yaml").write_text("[unclosed")  # not what camexp writes
    assert evidence.command(run, str(scratch), ["camexp"], str(out)) == fresh
    assert "unreadable" in capsys.readouterr().err
    # the same overrides in another order resume
    (parked / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["epochs=4", "seed=0"]))
    assert evidence.command(run, str(scratch), ["camexp"], str(out)) == [
        "camexp", f"resume={scratch / 't' / 'seed-0'}"]  # fmt: skip


def test_a_count_out_of_range_is_one_line_and_exit_2_writing_nothing(tmp_path):
    for bad in (["--jobs", "0"], ["--threads", "-1"], ["--park-every", "-5"]):
        cmd, env, out, scratch = _driver(tmp_path, *bad)
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{bad[0]} {float(bad[1]):g}" in lines[0], done.stderr
        assert not out.exists() and not scratch.exists()


def test_a_park_that_fails_while_the_run_writes_its_folder_does_not_stop_the_sweep(
    tmp_path, capsys, monkeypatch
):
    evidence, run, out, scratch, _ = _driver_parts(tmp_path)
    sweep = evidence.Sweep([], str(out), str(scratch), ["camexp"], 1, 1)
    sweep.running = {object(): (run, time.time(), None, {})}

    def vanished(*args):
        raise FileNotFoundError(2, "No such file or directory", "metrics.csv")

    monkeypatch.setattr(evidence, "park", vanished)
    sweep.park_running()  # no exception: the run goes on and is parked next time
    assert "parking t/seed-0 failed" in capsys.readouterr().err


def test_a_run_kept_elsewhere_loses_its_stale_parked_copy_and_is_not_trained(tmp_path):
    """A run finished on another clone or a GPU session while this clone had parked it: the
    next sweep trains nothing and removes the parked copy (it would never be resumed)."""
    cmd, env, out, _ = _driver(tmp_path)
    sys.path.insert(0, os.path.dirname(DRIVER))
    try:
        from evidence_plan import plan
    finally:
        sys.path.remove(os.path.dirname(DRIVER))
    for run in plan(yaml.safe_load(_spec(tmp_path).read_text()), None, str(out)):
        folder = out / "tiny" / run.name
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(run.overrides))
        (folder / "results.json").write_text(json.dumps(
            {"status": "completed", "metrics": {"test/acc1": 90.0}}))  # fmt: skip
        (folder / "metrics.csv").write_text("epoch,val/acc1\n1,90.0\n")
    stale = out / ".parked" / f"tiny__{RUNS[1]}"
    (stale / "checkpoints").mkdir(parents=True)
    (stale / "checkpoints" / "last.pt").write_bytes(b"old")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "2 of 2 runs finished, 0 to train" in done.stdout, done.stdout + done.stderr
    assert f"tiny/{RUNS[1]} is kept: its parked copy removed" in done.stdout
    assert not stale.exists() and "started" not in done.stdout
