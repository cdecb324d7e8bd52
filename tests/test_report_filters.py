"""camexp-report selects runs (issue 27 item 9): ``--task NAME`` and ``--where key=value``
(repeatable), one line for a malformed or unmatched filter; runs that did not complete are
listed apart and never averaged. Figures carry their provenance (item 10)."""

import json
import sys
import types

import pytest
import torch
from test_report import markdown_rows, run_report, write_run


@pytest.fixture
def mixed(tmp_path):
    """classify runs at loss.cam.weight 0 and 1 (one failed), and an eval run."""
    for seed in (0, 1):
        for weight in (0, 1):
            write_run(tmp_path, f"c{weight}{seed}", [f"loss.cam.weight={weight}", f"seed={seed}"],
                      {"test/acc1": 80.0 + 10 * weight + seed, "test_best/acc1": 80.0},
                      seed=seed)  # fmt: skip
    write_run(tmp_path, "failed", ["loss.cam.weight=1", "seed=2"], {"test/acc1": 0.0},
              status="failed", error="UserError: bad", seed=2)  # fmt: skip
    write_run(tmp_path, "e", ["ckpt=x.pt"], {"test/acc1": 70.0, "test/acc5": 99.0}, task="eval")
    return tmp_path


def test_task_and_where_select_runs(mixed, capsys):
    code, out, err = run_report(capsys, mixed)
    assert code == 2 and "--task NAME" in err  # mixed tasks: the error names the option

    code, out, _ = run_report(capsys, mixed, "--task", "classify", "--where",
                              "loss.cam.weight=1.0", "--metrics", "test/acc1")  # fmt: skip
    assert code == 0, out
    assert markdown_rows(out)[1] == ["all", "90.50 ± 0.71", "2"]
    assert "- failed: " in out and "Not averaged (1 of 3 runs)" in out  # listed apart

    code, out, _ = run_report(capsys, mixed, "--task", "classify", "--where", "loss.cam.weight=0",
                              "--where", "seed=1", "--metrics", "test/acc1")  # fmt: skip
    assert code == 0 and markdown_rows(out)[1] == ["all", "81.00", "1"]

    code, out, _ = run_report(capsys, mixed, "--task", "eval")
    assert code == 0 and markdown_rows(out)[1][:2] == ["all", "70.00"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "kd"], "no runs of task 'kd' among the 6 found (tasks: classify, eval)"),
        (["--task", "classify", "--where", "loss.cam.weight"], "write key=value"),
        (["--task", "classify", "--where", "=1"], "write key=value"),
        (["--task", "classify", "--where", "loss.cam.weight=7"],
         "--where loss.cam.weight=7 matches no run; its values: 0, 1"),
    ],
)  # fmt: skip
def test_bad_filters_are_one_line(mixed, capsys, args, message):
    code, _, err = run_report(capsys, mixed, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


# ----------------------------------------------------------------------------- figures (item 10)
def test_cams_without_cams_out_writes_into_the_first_run(tmp_path, capsys, monkeypatch):
    calls = []
    fake = types.ModuleType("camexp.report.cams")
    fake.compare_cams = lambda run_dirs, out_png: calls.append(out_png)
    monkeypatch.setitem(sys.modules, "camexp.report.cams", fake)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    code, _, _ = run_report(capsys, "--cams", a, b)
    assert code == 0 and calls == [str(a / "cams_compare.png")]


def test_training_picture_title_names_run_overrides_weights_and_epoch(monkeypatch):
    from camexp.models.backbone import build_backbone
    from camexp.report import pictures

    title = pictures.weights_title(
        pictures.run_title("outputs/2026/run-7", ["loss.cam.weight=0", "progress=false"]), "best", 4
    )
    assert title == "run-7: loss.cam.weight=0\nbest weights, epoch 4"
    assert pictures.run_title("x/run", ["tensorboard=false"]) == "run: defaults"
    seen = {}

    def keep(fig):
        seen["title"] = fig._suptitle.get_text()
        seen["bar"] = fig.axes[1].get_ylabel()
        return torch.zeros(3, 2, 2)

    monkeypatch.setattr(pictures, "figure_array", keep)
    model = build_backbone("resnet20", 10, 1, 28, needs_cam=True)
    pictures.cam_grid(model, torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), (0.286,), (0.353,),
                      title=title)  # fmt: skip
    assert seen["title"] == title
    assert "gamma 2" in seen["bar"]


def test_cams_compare_title_names_each_runs_weights_and_epoch(tmp_path):
    from conftest import write_fashion_mnist
    from test_leaks import checkpoint

    from camexp.report.cams import compare_cams

    data = write_fashion_mnist(tmp_path / "fm", n_train=20, n_test=8)
    runs = []
    for name, weight in (("runA", 0), ("runB", 1)):
        run = tmp_path / name
        (run / "checkpoints").mkdir(parents=True)
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(f"- loss.cam.weight={weight}\n")
        path = checkpoint(run / "checkpoints" / "last.pt")
        state = torch.load(path, weights_only=True)
        state["config"] = {"dataset": {"root": data}}
        torch.save(state, path)
        runs.append(str(run))
    fig = compare_cams(runs, str(tmp_path / "c.png"), images=2)
    lines = fig._suptitle.get_text().splitlines()
    assert lines == ["A = runA: loss.cam.weight=0; last weights, epoch 3",
                     "B = runB: loss.cam.weight=1; last weights, epoch 3"]  # fmt: skip
    assert json.dumps(lines)  # plain text


def test_a_kd_table_holds_its_student_alone_row_but_eval_never_pools_with_it(tmp_path, capsys):
    """classify and kd runs write the same training metrics: the KD table's CE row is a classify
    run, and the task is a row key. An eval run beside them is still refused."""
    for seed in (0, 1):
        write_run(tmp_path, f"ce{seed}", ["task=classify", "loss=[ce]", f"seed={seed}"],
                  {"test/acc1": 90.0 + seed}, seed=seed)  # fmt: skip
        write_run(tmp_path, f"kd{seed}", ["task=kd", "loss=[ce,kd]", f"seed={seed}"],
                  {"test/acc1": 92.0 + seed}, task="kd", seed=seed)  # fmt: skip
    code, out, err = run_report(capsys, tmp_path, "--rows", "loss", "--metrics", "test/acc1")
    assert code == 0, err
    rows = markdown_rows(out)
    assert rows[0] == ["loss", "task", "test/acc1", "seeds"], rows
    assert rows[1:] == [["[ce,kd]", "kd", "92.50 ± 0.71", "2"],
                        ["[ce]", "classify", "90.50 ± 0.71", "2"]]  # fmt: skip
    write_run(tmp_path, "e", ["ckpt=x.pt"], {"test/acc1": 70.0}, task="eval")
    code, _, err = run_report(capsys, tmp_path, "--metrics", "test/acc1")
    assert code == 2 and "--task NAME" in err, err
