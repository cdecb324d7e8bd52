"""camexp-report never pools what is not one experiment's seeds: one run reached twice counts
once, a copied run (the same seed twice in a group) stops with one line, image-folder runs on
different folders and extended runs are separate groups, and a mean over some of a group's runs
says so. Damaged results.json fields and unwritable outputs are one line, not a traceback."""

from __future__ import annotations

import json
import shutil

import pytest
from test_report import write_run

from camexp.report.cams import carried_values
from camexp.report.cli import main as report_main


def report(capsys, *args) -> tuple[int, str, str]:
    code = report_main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(markdown: str) -> list[list[str]]:
    """The table's body rows, cells stripped (header and separator left out)."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_a_run_reached_through_a_symlink_counts_once(tmp_path, capsys):
    write_run(tmp_path / "runs", "r0", ["seed=0"], {"test/acc1": 90.0}, seed=0)
    write_run(tmp_path / "runs", "r1", ["seed=1"], {"test/acc1": 80.0}, seed=1)
    (tmp_path / "runs" / "again").symlink_to(tmp_path / "runs" / "r1")
    code, out, err = report(capsys, tmp_path / "runs", tmp_path / "runs" / "r0", "--metrics",
                            "test/acc1")  # fmt: skip
    assert code == 0, err
    assert rows(out) == [["all", "85.00 ± 7.07", "2"]]  # not 3 runs, not std 5.77


def test_a_copied_run_is_refused_not_counted_as_a_second_seed(tmp_path, capsys):
    run = write_run(tmp_path / "sweep", "r0", ["seed=0"], {"test/acc1": 90.0}, seed=0)
    write_run(tmp_path / "sweep", "r1", ["seed=1"], {"test/acc1": 80.0}, seed=1)
    shutil.copytree(run, tmp_path / "sweep" / "copy_of_r0")
    code, out, err = report(capsys, tmp_path / "sweep", "--metrics", "test/acc1")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "seed 0 twice" in lines[0] and "copy_of_r0" in lines[0]


def test_runs_that_differ_only_in_an_ignored_key_are_not_pooled_as_seeds(tmp_path, capsys):
    write_run(tmp_path, "a", ["seed=0", "threads=1"], {"test/acc1": 90.0}, seed=0)
    write_run(tmp_path, "b", ["seed=0", "threads=2"], {"test/acc1": 90.1}, seed=0)
    code, _, err = report(capsys, tmp_path, "--metrics", "test/acc1")
    assert code == 2 and "seed 0 twice" in err


def test_image_folder_runs_on_different_folders_are_different_groups(tmp_path, capsys):
    choices = {"dataset": "imagefolder"}
    for seed in (0, 1):
        write_run(tmp_path, f"cats{seed}", [f"seed={seed}", "dataset=imagefolder",
                  "dataset.root=/data/cats_dogs"], {"test/acc1": 60.0 + seed}, seed=seed,
                  choices=choices)  # fmt: skip
        write_run(tmp_path, f"cars{seed}", [f"seed={seed}", "dataset=imagefolder",
                  "dataset.root=/data/cars_ships"], {"test/acc1": 90.0 + seed}, seed=seed,
                  choices=choices)  # fmt: skip
    code, out, err = report(capsys, tmp_path, "--metrics", "test/acc1")
    assert code == 0, err
    assert rows(out) == [["/data/cars_ships", "90.50 ± 0.71", "2"],
                         ["/data/cats_dogs", "60.50 ± 0.71", "2"]]  # fmt: skip


def test_fashion_mnist_runs_from_two_copies_of_its_files_still_pool(tmp_path, capsys):
    """Where the files lie is not the experiment for a named dataset."""
    for seed, root in ((0, "/a/fm"), (1, "/b/fm")):
        write_run(tmp_path, f"r{seed}", [f"seed={seed}", f"dataset.root={root}"],
                  {"test/acc1": 90.0 + seed}, seed=seed,
                  choices={"dataset": "fashion_mnist"})  # fmt: skip
    code, out, err = report(capsys, tmp_path, "--metrics", "test/acc1")
    assert code == 0, err
    assert rows(out) == [["all", "90.50 ± 0.71", "2"]]


def test_an_extended_run_is_not_pooled_with_fresh_runs(tmp_path, capsys):
    write_run(tmp_path, "fresh", ["seed=1", "epochs=2"], {"test/acc1": 30.0}, seed=1)
    extended = write_run(tmp_path, "ext", ["seed=0", "epochs=2"], {"test/acc1": 18.0}, seed=0)
    record = json.loads((extended / "results.json").read_text())
    (extended / "results.json").write_text(json.dumps({**record, "extended_from": [1]}))
    code, out, err = report(capsys, tmp_path, "--metrics", "test/acc1")
    assert code == 0, err
    assert "extended_from" in out.splitlines()[0]
    assert rows(out) == [["1", "18.00", "1"], ["-", "30.00", "1"]]


def test_a_mean_over_some_of_a_groups_runs_says_how_many(tmp_path, capsys):
    write_run(tmp_path, "r0", ["seed=0"], {"test/acc1": 90.0, "test/maxboxacc_v2": 40.0}, seed=0)
    write_run(tmp_path, "r1", ["seed=1"], {"test/acc1": 80.0}, seed=1)
    write_run(tmp_path, "r2", ["seed=2"], {"test/acc1": 70.0}, seed=2)
    code, out, err = report(capsys, tmp_path, "--metrics", "test/acc1", "test/maxboxacc_v2")
    assert code == 0, err
    assert rows(out) == [["all", "80.00 ± 10.00", "40.00 (1 of 3 runs)", "3"]]


@pytest.mark.parametrize(
    ("field", "value"),
    [("metrics", [1, 2]), ("metrics", "abc"), ("task", ["classify"]), ("error", 123),
     ("epochs_completed", "3"), ("status", {"a": 1})],
)  # fmt: skip
def test_a_results_field_of_the_wrong_type_skips_that_run_with_one_line(
    tmp_path, capsys, field, value
):
    write_run(tmp_path, "good0", ["seed=0"], {"test/acc1": 90.0}, seed=0)
    write_run(tmp_path, "good1", ["seed=1"], {"test/acc1": 80.0}, seed=1)
    bad = write_run(tmp_path, "bad", ["seed=2"], {"test/acc1": 10.0}, seed=2)
    record = json.loads((bad / "results.json").read_text())
    (bad / "results.json").write_text(json.dumps({**record, field: value}))
    code, out, err = report(capsys, tmp_path, "--metrics", "test/acc1")
    assert code == 0, err
    assert rows(out) == [["all", "85.00 ± 7.07", "2"]]
    assert "Traceback" not in err and f"its {field!r} is a JSON" in err


def test_hydra_choices_that_are_not_a_mapping_skip_the_run(tmp_path, capsys):
    write_run(tmp_path, "good", ["seed=0"], {"test/acc1": 90.0}, seed=0)
    bad = write_run(tmp_path, "bad", ["seed=1"], {"test/acc1": 10.0}, seed=1)
    (bad / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices: [a, b]\n")
    code, out, err = report(capsys, tmp_path, "--metrics", "test/acc1")
    assert code == 0, err
    assert rows(out) == [["all", "90.00", "1"]] and "not a mapping" in err


@pytest.mark.parametrize("digits", ["-1", "400", "two"])
def test_digits_out_of_range_is_an_argparse_error(tmp_path, capsys, digits):
    write_run(tmp_path, "r0", ["seed=0"], {"test/acc1": 90.0}, seed=0)
    with pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path), "--digits", digits])
    assert stop.value.code == 2
    assert "from 0 to 10" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--plot", "--cams-out"])
def test_an_output_in_a_missing_folder_is_one_line_before_any_work(tmp_path, capsys, option):
    write_run(tmp_path, "r0", ["seed=0"], {"test/acc1": 90.0}, seed=0, curve=[50.0, 60.0])
    target = tmp_path / "no_such_folder" / "out.png"
    extra = ["--cams", str(tmp_path / "r0"), str(tmp_path / "r0")] if option == "--cams-out" else []
    code, out, err = report(capsys, tmp_path, option, target, *extra)
    assert code == 2 and out == ""  # no table printed before the failure
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and str(target.parent) in lines[0]
    assert not target.parent.exists()


def test_cams_never_carries_download_from_a_checkpoint_config():
    from omegaconf import OmegaConf

    composed = OmegaConf.create({"root": "x", "download": False, "source": {"download": False}})
    saved = {"root": "/data/fm", "download": True, "source": {"download": True}}
    assert carried_values(composed, saved) == [("root", "/data/fm")]
