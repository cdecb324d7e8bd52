"""Precision and machine are part of a result (issue 27 item 5, issue 28 §3): results.json and
the checkpoint store the resolved precision, a resume continues in the stored one (a stated
``amp=`` may change it, with a warning), results.json names the machine, and camexp-report never
pools runs of different precision."""

import json
import logging

import torch
from conftest import run_camexp, write_fashion_mnist
from test_report import markdown_rows, run_report, write_run

from camexp.precision import resume_precision
from camexp.run.checkpoint import load_checkpoint, save_checkpoint

SMALL = ["debug=smoke", "epochs=2", "dataset.val_size=32", "batch_size=32", "progress=false",
         "device=cpu", "tensorboard=false", "metrics=none", "cam_pictures=0",
         "dataset.subset.train=64"]  # fmt: skip


def test_resume_keeps_the_stored_precision_unless_amp_is_stated(caplog):
    with caplog.at_level(logging.WARNING):
        # the run started in bf16 (amp=auto on a Zen 4); this machine's auto resolves to fp32
        assert resume_precision("bf16", "auto", "auto", None, 3) == torch.bfloat16
        assert "stored precision bf16" in caplog.text
        caplog.clear()
        assert resume_precision("bf16", "auto", "none", None, 3) is None  # stated: obeyed
        assert "changes from bf16 to fp32 at epoch 3" in caplog.text
        caplog.clear()
        assert resume_precision(None, "auto", "auto", None, 3) is None  # an older checkpoint
        assert "records no precision" in caplog.text
    assert resume_precision("fp32", "auto", "auto", None, 3) is None


def _cpu_has_native_bf16() -> bool:
    """Read here, not through camexp.precision: amp=auto is bf16 on a CPU whose flags list
    avx512_bf16 or amx_bf16 (the Zen 4, the AMX Xeons) and fp32 elsewhere (the Zen 3)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])  # fmt: skip
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def test_results_and_checkpoint_record_precision_and_machine(tmp_path):
    data = write_fashion_mnist(tmp_path / "fm", n_train=96, n_test=32)
    run = tmp_path / "run"
    done = run_camexp(*SMALL, f"dataset.root={data}", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((run / "results.json").read_text())
    expected = "bf16" if _cpu_has_native_bf16() else "fp32"  # amp=auto
    assert results["precision"] == expected
    machine = results["machine"]
    assert machine["device"] == "cpu" and machine["torch"] == torch.__version__
    assert machine["cpu"] and machine["torch_threads"] >= 1
    last = load_checkpoint(str(run / "checkpoints" / "last.pt"))
    assert last["precision"] == expected

    # a run that started in bf16 elsewhere, killed after epoch 1: fake it in the checkpoint
    state = dict(last, precision="bf16", precision_label="bf16", epoch=1,
                 history=last["history"][:1], meter=None)  # fmt: skip
    save_checkpoint(str(run / "checkpoints" / "last.pt"), state)
    results["status"] = "interrupted"
    (run / "results.json").write_text(json.dumps(results))
    stated = run_camexp(f"resume={run}", "amp=none")
    assert stated.returncode == 0, stated.stderr[-2000:]
    assert "changes from bf16 to fp32 at epoch 2" in stated.stdout  # the log: console
    resumed = json.loads((run / "results.json").read_text())
    assert resumed["precision"] == "bf16, then fp32 from epoch 2"


def test_report_separates_and_states_precision(tmp_path, capsys):
    for seed, precision in ((0, "fp32"), (1, "fp32"), (2, "bf16")):
        run = write_run(tmp_path, f"r{seed}", [f"seed={seed}"], {"test/acc1": 90.0 + seed,
                        "test_best/acc1": 90.0}, seed=seed)  # fmt: skip
        results = json.loads((run / "results.json").read_text())
        (run / "results.json").write_text(json.dumps({**results, "precision": precision}))
    code, out, _ = run_report(capsys, tmp_path, "--metrics", "test/acc1")
    assert code == 0
    rows = markdown_rows(out)
    assert rows[0] == ["precision", "test/acc1", "seeds"]
    assert rows[1:] == [["bf16", "92.00", "1"], ["fp32", "90.50 ± 0.71", "2"]]

    code, out, _ = run_report(capsys, tmp_path / "r0", tmp_path / "r1", "--metrics", "test/acc1")
    assert code == 0 and "Precision: fp32" in out


def test_an_older_run_without_a_recorded_precision_pools_only_when_amp_none_says_fp32(
    tmp_path, capsys
):
    """Runs from before results.json stored ``precision``: ``amp=none`` means fp32 on every
    machine, so they share a cell with recorded fp32 runs; ``amp=auto`` stays unknown ("-")."""
    old = write_run(tmp_path, "old", ["seed=0", "amp=none"], {"test/acc1": 90.0}, seed=0)
    new = write_run(tmp_path, "new", ["seed=1", "amp=none"], {"test/acc1": 92.0}, seed=1)
    results = json.loads((new / "results.json").read_text())
    (new / "results.json").write_text(json.dumps({**results, "precision": "fp32"}))
    code, out, _ = run_report(capsys, old, new, "--metrics", "test/acc1")
    assert code == 0 and "Precision: fp32 (every averaged run)" in out
    assert markdown_rows(out)[1] == ["all", "91.00 ± 1.41", "2"]

    auto = write_run(tmp_path, "auto", ["seed=2", "amp=auto"], {"test/acc1": 94.0}, seed=2)
    code, out, _ = run_report(capsys, old, new, auto, "--metrics", "test/acc1")
    assert code == 0
    rows = markdown_rows(out)
    assert rows[0] == ["precision", "amp", "test/acc1", "seeds"]
    assert rows[1:] == [["-", "auto", "94.00", "1"], ["fp32", "none", "91.00 ± 1.41", "2"]]
