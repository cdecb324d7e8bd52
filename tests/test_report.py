"""camexp-report on run folders this file fabricates: grouping, mean ± std, seed counts, the
paper layout, the three formats, the failure list, the plot and the bad-input messages."""

from __future__ import annotations

import csv
import io
import json
import sys
import types
from pathlib import Path

import pytest

from camexp.report.cli import main as report_main


def write_run(
    root: Path,
    name: str,
    overrides: list[str],
    metrics: dict | None = None,
    status: str = "completed",
    task: str = "classify",
    curve: list[float] | None = None,
    choices: dict | None = None,
    error: str | None = None,
    seed: int = 0,
) -> Path:
    """A run folder as camexp leaves it: results.json, .hydra/{overrides,config,hydra}.yaml,
    metrics.csv. ``choices`` are the config-group choices (hydra.runtime.choices)."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    results = {"status": status, "task": task, "metrics": metrics or {}, "overrides": overrides}
    if error:
        results["error"] = error
    (run / "results.json").write_text(json.dumps(results))
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / ".hydra" / "config.yaml").write_text(
        f"seed: {seed}\nepochs: 3\nloss:\n  cam:\n    weight: 1.0\ntask:\n  name: {task}\n"
    )
    choices = {"backbone": "resnet20", "hydra/launcher": "basic", **(choices or {})}
    (run / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices:\n"
        + "".join(f"      {k}: {v}\n" for k, v in choices.items())
    )
    if curve:
        with open(run / "metrics.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "train/loss", "val/acc1"])
            for epoch, acc in enumerate(curve, start=1):
                w.writerow([epoch, 1.0 / epoch, acc])
    return run


@pytest.fixture
def sweep(tmp_path) -> Path:
    """2 backbones x loss.cam.weight 0/1 x seeds 0,1,2, plus a failed, a diverged and a
    still-running run whose (absurd) metrics must not be averaged in."""
    root = tmp_path / "sweep"
    acc = {  # (backbone, weight) -> test/acc1 per seed; test_best/acc1 = acc + 1
        ("resnet20", "0"): [90.0, 92.0, 94.0],
        ("resnet20", "1"): [91.0, 93.0, 95.0],
        ("wrn_16_2", "0"): [80.0, 80.0, 83.0],
        ("wrn_16_2", "1"): [85.0, 86.0, 87.0],
    }
    i = 0
    for (backbone, weight), values in acc.items():
        for seed, a in enumerate(values):
            write_run(
                root,
                str(i),
                [f"backbone={backbone}", f"loss.cam.weight={weight}", f"seed={seed}"],
                {"test/acc1": a, "test_best/acc1": a + 1, "val/acc1_best": a},
                curve=[a - 20, a - 10, a],
                choices={"backbone": backbone},
                seed=seed,
            )
            i += 1
    bad = {"test/acc1": 0.0, "test_best/acc1": 0.0}
    write_run(root, "f", ["backbone=resnet20", "loss.cam.weight=1", "seed=3"], bad, "failed",
              error="UserError: something\ntraceback line")  # fmt: skip
    write_run(root, "d", ["backbone=resnet20", "loss.cam.weight=1", "seed=4"], bad, "diverged")
    write_run(root, "r", ["backbone=wrn_16_2", "loss.cam.weight=0", "seed=5"], bad, "running")
    return root


def run_report(capsys, *args) -> tuple[int, str, str]:
    code = report_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def markdown_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows if not r.startswith("|---")]


def test_long_table_means_stds_seed_counts_and_failures(sweep, capsys):
    code, out, _ = run_report(capsys, sweep)
    assert code == 0
    rows = markdown_rows(out)
    assert rows[0] == ["backbone", "loss.cam.weight", "test/acc1", "test_best/acc1", "seeds"]
    # mean and sample std of (90, 92, 94) are 92 and 2; of (80, 80, 83): 81 and sqrt(3)
    assert rows[1] == ["resnet20", "0", "92.00 ± 2.00", "93.00 ± 2.00", "3"]
    assert rows[2] == ["resnet20", "1", "93.00 ± 2.00", "94.00 ± 2.00", "3"]
    assert rows[3] == ["wrn_16_2", "0", "81.00 ± 1.73", "82.00 ± 1.73", "3"]
    assert rows[4] == ["wrn_16_2", "1", "86.00 ± 1.00", "87.00 ± 1.00", "3"]
    assert len(rows) == 5
    assert "Not averaged (3 of 15 runs)" in out
    failed = [line for line in out.splitlines() if line.startswith("- ")]
    assert sorted(line.split(":")[0] for line in failed) == ["- diverged", "- failed", "- running"]
    assert any("UserError: something" in line and "traceback" not in line for line in failed)


def test_pivot_rows_cols_with_delta(sweep, capsys):
    code, out, _ = run_report(
        capsys, sweep, "--rows", "backbone", "--cols", "loss.cam.weight", "--metrics", "test/acc1"
    )
    assert code == 0
    rows = markdown_rows(out)
    assert rows[0] == ["backbone", "loss.cam.weight=0", "loss.cam.weight=1", "Δ (1 - 0)"]
    # resnet20: per-seed differences (1, 1, 1): no spread, the interval is the point
    assert rows[1] == ["resnet20", "92.00 ± 2.00 (3)", "93.00 ± 2.00 (3)",
                       "+1.00 [+1.00, +1.00] paired t, p<0.001"]  # fmt: skip
    # wrn_16_2: differences (5, 6, 4) by seed: mean 5, s_d 1, t_{0.975, 2} = 4.3027 (t table):
    # 5 ± 4.3027 / sqrt(3) = [2.516, 7.484]; t = 5 sqrt(3) = 8.66, p = 1 - t / sqrt(2 + t^2)
    assert rows[2] == ["wrn_16_2", "81.00 ± 1.73 (3)", "86.00 ± 1.00 (3)",
                       "+5.00 [+2.52, +7.48] paired t, p=0.013"]  # fmt: skip
    assert "**test/acc1**" in out and "paired t-test" in out


def test_pivot_baseline_and_transposed(sweep, capsys):
    code, out, _ = run_report(
        capsys, sweep, "--rows", "loss.cam.weight", "--cols", "backbone", "--baseline",
        "wrn_16_2", "--metrics", "test_best/acc1",
    )  # fmt: skip
    assert code == 0
    rows = markdown_rows(out)
    assert rows[0] == ["loss.cam.weight", "backbone=resnet20", "backbone=wrn_16_2",
                       "Δ (resnet20 - wrn_16_2)"]  # fmt: skip
    # test_best: resnet20 - wrn_16_2 per seed (10, 12, 11) and (6, 7, 8): s_d = 1 both
    assert rows[1][-1].startswith("+11.00 [+8.52, +13.48] paired t, p=0.003")
    assert rows[2][-1].startswith("+7.00 [+4.52, +9.48] paired t, p=0.007")


def test_csv_is_one_long_table_in_one_read(sweep, capsys):
    code, out, err = run_report(capsys, sweep, "--format", "csv", "--cols", "loss.cam.weight")
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))  # one header, one read
    header = ["backbone", "loss.cam.weight", "metric", "mean", "std", "n"]
    header += ["baseline", "delta", "ci95_low", "ci95_high", "test", "p"]
    assert list(table[0]) == header
    assert len(table) == 4 * 2  # 4 groups x the 2 default metrics
    row = next(r for r in table if r["backbone"] == "wrn_16_2" and r["loss.cam.weight"] == "1"
               and r["metric"] == "test/acc1")  # fmt: skip
    assert float(row["mean"]) == pytest.approx(86.0) and float(row["std"]) == pytest.approx(1.0)
    assert row["n"] == "3" and row["baseline"] == "loss.cam.weight=0" and row["test"] == "paired t"
    assert float(row["delta"]) == pytest.approx(5.0)
    half = 4.302653 / 3**0.5  # t_{0.975, 2} * s_d / sqrt(n), s_d = 1
    assert float(row["ci95_low"]) == pytest.approx(5 - half, abs=1e-5)
    assert float(row["ci95_high"]) == pytest.approx(5 + half, abs=1e-5)
    t = 5 * 3**0.5
    assert float(row["p"]) == pytest.approx(1 - t / (2 + t * t) ** 0.5, abs=1e-6)  # df = 2
    base = next(r for r in table if r["loss.cam.weight"] == "0")
    assert base["delta"] == "" and base["test"] == ""
    assert "Not averaged (3 of 15 runs)" in err  # the list goes to stderr, not into the CSV


def test_several_metrics_in_one_table(sweep, capsys):
    code, out, _ = run_report(capsys, sweep, "--rows", "backbone", "--cols", "loss.cam.weight",
                              "--metrics", "test/acc1", "val/acc1_best")  # fmt: skip
    assert code == 0
    rows = markdown_rows(out)
    assert rows[0][:2] == ["backbone", "metric"] and len(rows) == 1 + 2 * 2
    assert [r[:2] for r in rows[1:]] == [
        ["resnet20", "test/acc1"],
        ["resnet20", "val/acc1_best"],
        ["wrn_16_2", "test/acc1"],
        ["wrn_16_2", "val/acc1_best"],
    ]
    assert out.count("| backbone") == 1  # one table


def test_latex(sweep, capsys):
    code, out, _ = run_report(
        capsys, sweep, "--rows", "backbone", "--cols", "loss.cam.weight", "--format", "latex",
        "--metrics", "test/acc1",
    )  # fmt: skip
    assert code == 0
    assert r"\begin{tabular}" in out and r"\end{tabular}" in out
    assert (r"resnet20 & 92.00 $\pm$ 2.00 (3) & 93.00 $\pm$ 2.00 (3) & "
            r"+1.00 [+1.00, +1.00] paired t, p$<$0.001 \\") in out  # fmt: skip
    assert r"+5.00 [+2.52, +7.48] paired t, p=0.013 \\" in out
    assert r"loss.cam.weight=0" in out and r"$\Delta$" in out
    assert "% - failed:" in out


def test_numbers_group_across_spellings_and_defaults(tmp_path, capsys):
    """'1.0' on one command line, '1' on another and the config default 1.0 are one group."""
    write_run(tmp_path, "a", ["loss.cam.weight=1.0", "seed=0"], {"test/acc1": 50.0}, seed=0)
    write_run(tmp_path, "b", ["loss.cam.weight=1", "seed=1"], {"test/acc1": 60.0}, seed=1)
    write_run(tmp_path, "c", ["seed=2"], {"test/acc1": 70.0}, seed=2)  # default weight 1.0
    write_run(tmp_path, "d", ["loss.cam.weight=0", "seed=0"], {"test/acc1": 10.0}, seed=0)
    code, out, _ = run_report(capsys, tmp_path, "--metrics", "test/acc1")
    assert code == 0
    assert markdown_rows(out)[1:] == [["0", "10.00", "1"], ["1", "60.00 ± 10.00", "3"]]


def test_plot_writes_png(sweep, tmp_path, capsys):
    png = tmp_path / "curves.png"
    code, _, err = run_report(capsys, sweep, "--plot", png)
    assert code == 0 and "wrote" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from camexp.report.plot import group_curve
    from camexp.report.runs import find_runs, group_runs

    runs = find_runs([str(sweep)])
    groups = group_runs(runs, ["backbone", "loss.cam.weight"])
    epochs, mean, std, n = group_curve(groups[0].runs, "val/acc1")
    assert list(epochs) == [1, 2, 3] and n == 3
    assert mean.tolist() == pytest.approx([72.0, 82.0, 92.0])
    assert std.tolist() == pytest.approx([2.0, 2.0, 2.0])


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("empty", [], "no runs under"),
        ("mixed", [], "runs of different tasks are mixed: classify (1 runs), fewshot (1 runs)"),
        ("sweep", ["--metrics", "test/acc9"], "no completed run has the metric(s) test/acc9"),
        ("sweep", ["--rows", "nonsense.key"], "no run has a value for 'nonsense.key'"),
        ("sweep", ["--cols", "backbone", "--baseline", "vit"], "--baseline 'vit' is not a value"),
        ("failed", [], "no completed run among the 1 found (failed"),
        ("sweep", ["--cams", "a", "b"], "--cams"),
    ],
)
def test_bad_input_is_one_line(tmp_path, sweep, capsys, monkeypatch, setup, args, message):
    folder = tmp_path / setup
    if setup == "sweep":
        folder = sweep
    elif setup == "empty":
        folder.mkdir()
    elif setup == "mixed":
        write_run(folder, "a", ["seed=0"], {"test/acc1": 1.0})
        write_run(folder, "b", ["seed=0"], {"test/acc1": 1.0}, task="fewshot")
    elif setup == "failed":
        write_run(folder, "a", ["seed=0"], {}, status="failed", error="UserError: x")
    monkeypatch.setitem(sys.modules, "camexp.report.cams", None)  # as if not installed
    code, out, err = run_report(capsys, folder, *args)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("camexp-report: error: ") and message in last


def test_cams_calls_cam_compare(tmp_path, capsys, monkeypatch):
    calls = []
    fake = types.ModuleType("camexp.report.cams")
    fake.compare_cams = lambda run_dirs, out_png: calls.append((run_dirs, out_png))
    monkeypatch.setitem(sys.modules, "camexp.report.cams", fake)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    code, _, _ = run_report(capsys, "--cams", a, b, "--cams-out", tmp_path / "c.png")
    assert code == 0
    assert calls == [([str(a), str(b)], str(tmp_path / "c.png"))]


def test_a_run_without_results_json_is_listed_as_incomplete(tmp_path, capsys):
    write_run(tmp_path, "done", ["seed=0"], {"test/acc1": 50.0, "test_best/acc1": 51.0})
    killed = write_run(tmp_path, "killed", ["seed=1"])
    (killed / "results.json").unlink()  # killed before it wrote anything
    code, out, _ = run_report(capsys, tmp_path)
    assert code == 0
    assert markdown_rows(out)[1] == ["all", "50.00", "51.00", "1"]
    assert "- incomplete: " in out and "killed (seed=1)" in out


# ----------------------------------------------------------------------------- statistics (#16)
def test_paired_t_against_hand_worked_numbers():
    from camexp.report.stats import compare

    # differences by seed (5, 6, 4): mean 5, s_d = 1, SE = 1 / sqrt(3); t_{0.975, 2} = 4.302653
    delta = compare([(0, 85.0), (1, 86.0), (2, 87.0)], [(0, 80.0), (1, 80.0), (2, 83.0)])
    assert delta.test == "paired t" and delta.n == 3 and delta.df == 2
    assert delta.value == pytest.approx(5.0)
    assert (delta.low, delta.high) == pytest.approx((2.515862, 7.484138), abs=1e-5)
    # df = 2: P(|T| > t) = 1 - t / sqrt(2 + t^2), t = 5 sqrt(3)
    assert delta.p == pytest.approx(1 - 75**0.5 / 77**0.5, abs=1e-7)


def test_welch_t_when_seeds_do_not_pair():
    from camexp.report.stats import compare

    # (1, 2, 3) vs (3, 4, 5), seeds 0-2 vs 3-5: variances 1 and 1, SE^2 = 1/3 + 1/3,
    # Welch df = (2/3)^2 / ((1/3)^2 / 2 + (1/3)^2 / 2) = 4; t_{0.975, 4} = 2.776445 (t table)
    delta = compare([(0, 1.0), (1, 2.0), (2, 3.0)], [(3, 3.0), (4, 4.0), (5, 5.0)])
    assert delta.test == "Welch t" and delta.df == pytest.approx(4.0)
    half = 2.776445 * (2 / 3) ** 0.5
    assert (delta.low, delta.high) == pytest.approx((-2 - half, -2 + half), abs=1e-5)
    # df = 4: P(|T| > t) = 1 - (3/2) x + (1/2) x^3 with x = t / sqrt(4 + t^2), here |t| = sqrt(6)
    x = 6**0.5 / 10**0.5
    assert delta.p == pytest.approx(1 - 1.5 * x + 0.5 * x**3, abs=1e-7)


def test_delta_without_interval_for_a_single_run_and_nan():
    from camexp.report.stats import compare

    single = compare([(0, 3.0)], [(0, 1.0), (1, 2.0)])
    assert single.value == pytest.approx(1.5) and single.low is None and single.test is None
    assert compare([(0, float("nan")), (1, 1.0)], [(0, 1.0), (1, 1.0)]).test is None
    assert compare([], [(0, 1.0)]) is None


def test_report_uses_welch_when_the_seeds_differ(tmp_path, capsys):
    for seed, acc in zip((0, 1, 2), (1.0, 2.0, 3.0), strict=True):
        write_run(tmp_path, f"a{seed}", ["loss.cam.weight=0", f"seed={seed}"], {"test/acc1": acc},
                  seed=seed)  # fmt: skip
    for seed, acc in zip((3, 4, 5), (3.0, 4.0, 5.0), strict=True):
        write_run(tmp_path, f"b{seed}", ["loss.cam.weight=1", f"seed={seed}"], {"test/acc1": acc},
                  seed=seed)  # fmt: skip
    code, out, _ = run_report(capsys, tmp_path, "--cols", "loss.cam.weight", "--metrics",
                              "test/acc1")  # fmt: skip
    assert code == 0
    # +2 ± 2.776445 * sqrt(2/3) = [-0.27, +4.27]
    assert markdown_rows(out)[1][-1].startswith("+2.00 [-0.27, +4.27] Welch t, p=0.070")


# ----------------------------------------------------------------------------- defaults (#16)
def test_eval_and_fewshot_runs_need_no_metrics_option(tmp_path, capsys):
    write_run(tmp_path / "e", "a", ["ckpt=x"], {"test/acc1": 70.0, "test/acc5": 90.0},
              task="eval")  # fmt: skip
    code, out, _ = run_report(capsys, tmp_path / "e")
    assert code == 0 and markdown_rows(out)[0] == ["runs", "test/acc1", "test/acc5", "seeds"]
    shots = {"fewshot/test/5way_1shot/logreg/acc": 50.0, "fewshot/test/5way_1shot/logreg/ci95": 1.0,
             "fewshot/test/5way_5shot/logreg/acc": 70.0, "base/test/acc1": 60.0}  # fmt: skip
    write_run(tmp_path / "f", "a", ["seed=0"], shots, task="fewshot")
    code, out, _ = run_report(capsys, tmp_path / "f")
    assert code == 0
    assert markdown_rows(out)[0] == ["runs", "fewshot/test/5way_1shot/logreg/acc",
                                     "fewshot/test/5way_5shot/logreg/acc", "seeds"]  # fmt: skip


def test_keys_that_do_not_change_results_are_not_grouping_columns(tmp_path, capsys):
    write_run(tmp_path, "a", ["metrics=none", "seed=0"], {"test/acc1": 1.0, "test_best/acc1": 1.0})
    write_run(tmp_path, "b", ["seed=1", "dataset.root=/x"], {"test/acc1": 3.0,
                                                             "test_best/acc1": 3.0})  # fmt: skip
    code, out, _ = run_report(capsys, tmp_path)
    assert code == 0
    assert markdown_rows(out)[0] == ["runs", "test/acc1", "test_best/acc1", "seeds"]
    assert markdown_rows(out)[1][1] == "2.00 ± 1.41"


# ----------------------------------------------------------------------------- bad input (#15)
def test_a_results_json_list_is_skipped_with_one_warning(tmp_path, capsys):
    write_run(tmp_path, "good", ["seed=0"], {"test/acc1": 50.0, "test_best/acc1": 51.0})
    bad = write_run(tmp_path, "bad", ["seed=1"], {"test/acc1": 1.0})
    (bad / "results.json").write_text("[1, 2]")
    code, out, err = run_report(capsys, tmp_path)
    assert code == 0 and markdown_rows(out)[1] == ["all", "50.00", "51.00", "1"]
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "JSON list" in warnings[0] and "bad" in warnings[0]
    # the only input: exit 2 with one line
    code, _, err = run_report(capsys, bad)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("camexp-report: error: no readable run")


def test_a_truncated_config_yaml_skips_that_run_only(tmp_path, capsys):
    write_run(tmp_path, "good", ["seed=0"], {"test/acc1": 50.0, "test_best/acc1": 51.0})
    bad = write_run(tmp_path, "bad", ["seed=1"], {"test/acc1": 1.0, "test_best/acc1": 1.0})
    (bad / ".hydra" / "config.yaml").write_text("seed: 1\nloss:\n  cam: {weight: [1,\n")
    code, out, err = run_report(capsys, tmp_path)
    assert code == 0 and markdown_rows(out)[1] == ["all", "50.00", "51.00", "1"]
    assert "warning: skipped a run" in err and "config.yaml" in err


def test_a_nan_metric_is_a_diverged_run_listed_apart_never_averaged(tmp_path, capsys):
    write_run(tmp_path, "a", ["seed=0"], {"test/acc1": 50.0, "test_best/acc1": float("nan")})
    write_run(tmp_path, "b", ["seed=1"], {"test/acc1": 52.0, "test_best/acc1": 51.0})
    code, out, _ = run_report(capsys, tmp_path)
    assert code == 0 and markdown_rows(out)[1] == ["all", "52.00", "51.00", "1"]
    assert "- diverged: " in out  # issue 28: a NaN is a failed run


def test_plot_axis_is_percent_only_for_accuracies():
    from camexp.report.plot import axis_label

    assert axis_label("val/acc1") == "val/acc1 (%)"
    assert axis_label("train/cam") == "train/cam" and axis_label("lr") == "lr"


def test_python_dash_m_camexp_report_is_the_same_command(tmp_path):
    """``python -m camexp.report`` runs camexp-report (the package had no __main__)."""
    import subprocess

    result = subprocess.run([sys.executable, "-m", "camexp.report", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("camexp-report: error:"), result.stderr


def test_transfer_runs_group_by_their_sources_pretraining(tmp_path, capsys):
    """Each transfer run names its own source checkpoint (init.checkpoint differs per run); the
    source's loss is read from results.json's ``source`` summary, so CE- and CAM-loss-pretrained
    sources form the two columns, paired by seed."""
    root = tmp_path / "transfer"
    acc = {"ce": [90.0, 91.0, 92.0], "ce+cam": [91.0, 93.0, 92.0]}
    for loss, values in acc.items():
        for seed, a in enumerate(values):
            run = write_run(
                root, f"{loss}-{seed}",
                ["task=transfer", f"init.checkpoint=/src/{loss}-{seed}/last.pt", f"seed={seed}"],
                {"test/acc1": a}, task="transfer", seed=seed,
            )  # fmt: skip
            results = json.loads((run / "results.json").read_text())
            results["source"] = {"loss": loss, "seed": seed, "loss_weights": {"ce": 1.0}}
            (run / "results.json").write_text(json.dumps(results))
    code, out, _ = run_report(capsys, root, "--cols", "source.loss", "--baseline", "ce",
                              "--ignore", "init.checkpoint", "--metrics", "test/acc1")  # fmt: skip
    assert code == 0, out
    rows = markdown_rows(out)
    assert rows[0] == ["metric", "source.loss=ce", "source.loss=ce+cam", "Δ (ce+cam - ce)"], rows
    # differences by seed (1, 2, 0): mean 1, s_d 1, t_{0.975, 2} = 4.3027: 1 ± 2.484
    assert rows[1][1:3] == ["91.00 ± 1.00 (3)", "92.00 ± 1.00 (3)"], rows
    assert rows[1][3].startswith("+1.00 [-1.48, +3.48] paired t"), rows
    # without the ignore, every run names its own checkpoint: no group pools two runs
    code, out, _ = run_report(capsys, root, "--cols", "source.loss", "--metrics", "test/acc1")
    assert code == 0 and "(1)" in out and "(3)" not in out, out


def test_a_crafted_source_value_stays_in_its_markdown_cell(tmp_path, capsys):
    """results.json is data written by whoever made the folder: a newline or a pipe in a value
    that becomes a row label must not start a new table row or column."""
    for seed in (0, 1):
        run = write_run(tmp_path, f"t{seed}", ["task=transfer", f"seed={seed}"],
                        {"test/acc1": 90.0 + seed}, task="transfer", seed=seed)  # fmt: skip
        results = json.loads((run / "results.json").read_text())
        results["source"] = {"loss": "ce\n| 99.99 | injected |\r"}
        (run / "results.json").write_text(json.dumps(results))
    code, out, _ = run_report(capsys, tmp_path, "--rows", "source.loss", "--metrics", "test/acc1")
    assert code == 0, out
    rows = [line for line in out.splitlines() if line.startswith("|")]
    assert len(rows) == 3, out  # header, rule, one row
    assert "injected" in rows[2] and rows[2].count(" | ") == 2, rows[2]


def test_baseline_row_without_cols_adds_paired_deltas(sweep, capsys):
    """``--rows K --baseline V`` (the KD table's layout: one row per method, deltas against the
    CE student's row); before, --baseline without --cols was silently ignored."""
    code, out, _ = run_report(capsys, sweep, "--where", "loss.cam.weight=0", "--rows", "backbone",
                              "--baseline", "resnet20", "--metrics", "test/acc1")  # fmt: skip
    assert code == 0
    rows = markdown_rows(out)
    assert rows[0][-1] == "Δ test/acc1 (vs backbone=resnet20)"
    assert rows[1][0] == "resnet20" and rows[1][-1] == "-"  # the baseline row itself
    # wrn_16_2 (80, 80, 83) - resnet20 (90, 92, 94) by seed: (-10, -12, -11), mean -11, s_d 1;
    # -11 ± 4.3027 / sqrt(3) = [-13.48, -8.52]; t = -11 sqrt(3), p = 0.0027
    assert rows[2][0] == "wrn_16_2"
    assert rows[2][-1] == "-11.00 [-13.48, -8.52] paired t, p=0.003"
    assert "paired t-test" in out


@pytest.mark.parametrize(
    ("args", "phrase"),
    [(["--rows", "backbone", "--baseline", "vit"], "--baseline 'vit' is not a value of backbone"),
     (["--rows", "backbone", "--baseline", "resnet20"], "names 2 rows of backbone"),
     (["--where", "backbone=resnet20", "--where", "loss.cam.weight=0", "--baseline", "x"],
      "needs --rows or --cols"),
     (["--rows", "backbone", "--baseline", "resnet20", "--format", "csv"],
      "with --format csv add --cols")],
)  # fmt: skip
def test_a_baseline_row_that_is_not_one_row_is_one_line(sweep, capsys, args, phrase):
    code, out, err = run_report(capsys, sweep, *args)
    assert code == 2 and phrase in err and out == "", (code, out, err)
