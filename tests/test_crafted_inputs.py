"""Crafted inputs (issue 28 §3 and §5): LaTeX specials and newlines from a run folder stay text in
``camexp-report --format latex``; a decompression bomb, a checkpoint meta of the wrong types and an
image folder smaller than one batch stop with one line naming what was wrong."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from conftest import run_camexp, write_fashion_mnist, write_imagefolder
from PIL import Image
from test_checkpoint_contract import FASHION, SMOKE, spec, write
from test_report import write_run

from camexp.data.folder import folder_loader, folder_transform, image_folder
from camexp.errors import UserError
from camexp.models.from_checkpoint import dataset_identity, read_checkpoint
from camexp.report.cli import main as report_main

INJECTION = "x\n\\input{/etc/passwd}"


def live_latex(text: str) -> list[str]:
    """Each line with its ``%`` comment cut off (an unescaped ``%`` starts one)."""
    return [re.split(r"(?<!\\)%", line, maxsplit=1)[0] for line in text.splitlines()]


def test_latex_keeps_names_and_values_from_a_run_folder_as_text(tmp_path, capsys):
    root = tmp_path / "sweep"
    specials = "a\\b{c}$d&e#f^g_h%i~j"
    for seed in (0, 1):
        run = write_run(root, f"ok{seed}", [f"seed={seed}"], {"test/acc1": 90.0 + seed}, seed=seed)
        hydra = run / ".hydra"
        (hydra / "overrides.yaml").write_text(
            json.dumps([f"seed={seed}", f"name={INJECTION}", f"tag={specials}"])
        )
    write_run(root, "bad\n\\input{/etc/passwd}", ["seed=2"], status="failed", error=INJECTION)
    failed = root / "bad\n\\input{/etc/passwd}"
    (failed / ".hydra" / "overrides.yaml").write_text(json.dumps([f"note={INJECTION}"]))
    metric = "test/acc1\n\\input{/etc/passwd}"
    for seed in (0, 1):
        results = json.loads((root / f"ok{seed}" / "results.json").read_text())
        results["metrics"][metric] = 1.0
        (root / f"ok{seed}" / "results.json").write_text(json.dumps(results))

    for extra in ([], ["--cols", "tag", "--metrics", metric]):
        assert report_main([str(root), "--format", "latex", *extra]) == 0
        out = capsys.readouterr().out
        live = live_latex(out)
        assert not [line for line in live if "\\input" in line], out
        assert r"a\textbackslash{}b\{c\}\$d\&e\#f\textasciicircum{}g\_h\%i\textasciitilde{}j" in out
        assert r"x \textbackslash{}input\{/etc/passwd\}" in out  # the newline became a space


# ----------------------------------------------------------------------------- image folders
def loader(root, batch_size=4, train=False, on_corrupt="stop", workers=0):
    dataset = image_folder(root, "train")
    dataset.transform = folder_transform(False, 4, (0.5,) * 3, (0.5,) * 3)  # 5x5 under the limits
    return folder_loader(dataset, batch_size, train=train, workers=workers,
                         device=torch.device("cpu"), on_corrupt=on_corrupt)  # fmt: skip


@pytest.mark.parametrize(
    ("limit", "workers"),
    [(100, 0), (200, 0), (100, 1)],  # 16x16 = 256 pixels: PIL's error (> 2 x limit), its warning
)
def test_a_decompression_bomb_stops_naming_the_file_even_with_skip(
    tmp_path, monkeypatch, limit, workers
):
    root = write_imagefolder(tmp_path, classes=2, per_class=2, size=8)
    bomb = os.path.join(root, "train", "class_1", "bomb.png")
    Image.new("RGB", (16, 16)).save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(UserError, match=f"image {re.escape(bomb)} is too large") as err:
        list(loader(root, on_corrupt="skip", workers=workers))
    assert "\n" not in str(err.value) and "shrink or delete it" in str(err.value)
    dataset = image_folder(root, "train")
    with pytest.raises(UserError, match="too large"):  # read directly, as the CAM pictures are
        dataset[len(dataset) - 1]


def test_an_image_folder_smaller_than_one_batch_is_refused_for_training(tmp_path):
    root = write_imagefolder(tmp_path, classes=2, per_class=3, size=8)
    with pytest.raises(UserError) as err:
        loader(root, batch_size=8, train=True)
    message = str(err.value)
    assert os.path.join(root, "train") in message and "(6)" in message
    assert "batch_size=8" in message and "batch_size=6 or smaller" in message
    assert len(list(loader(root, batch_size=8, train=False))) == 1  # evaluation keeps the rest
    assert len(list(loader(root, batch_size=6, train=True))) == 1


# ----------------------------------------------------------------------------- checkpoint meta
def meta(model=None, dataset=None, **parts) -> dict:
    return {"model": {**spec(), **(model or {})},
            "dataset": {**dataset_identity("fashion_mnist", FASHION), **(dataset or {})},
            **parts}  # fmt: skip


@pytest.mark.parametrize(
    ("crafted", "named"),
    [
        (meta(model={"num_classes": "ten"}), "meta.model.num_classes is 'ten', not an int"),
        (meta(dataset={"classes": 5}), "meta.dataset.classes is 5, not a list of str"),
        (meta(model={"mean": "0.5"}), "meta.model.mean"),
        (meta(model={"in_chans": True}), "meta.model.in_chans"),
        (meta(model={"kwargs": []}), "meta.model.kwargs"),
        (meta(model={"image_size": -28}), "meta.model.image_size is -28"),
        (meta(split={"val_size": "all", "split_seed": 0, "subset": {}}), "meta.split.val_size"),
        ([1, 2], "its meta is a list, not a mapping"),
        # timm keyword arguments that load weights or files: a crafted checkpoint would make
        # timm read any path (checkpoint_path) or reach the network (pretrained)
        (meta(model={"kwargs": {"checkpoint_path": "/etc/hostname"}}), "sets 'checkpoint_path'"),
        (meta(model={"kwargs": {"pretrained": True}}), "sets 'pretrained'"),
        (meta(model={"kwargs": {"pretrained_cfg_overlay": {"file": "/x"}}}), "'pretrained_cfg"),
    ],
)
def test_a_checkpoint_meta_of_the_wrong_type_is_one_line(tmp_path, crafted, named):
    write(tmp_path / "c.pt", meta=crafted)
    with pytest.raises(UserError, match=re.escape(named)) as err:
        read_checkpoint(str(tmp_path / "c.pt"))
    assert "\n" not in str(err.value)


def test_eval_of_a_checkpoint_with_a_crafted_meta_exits_2(tmp_path):
    data = write_fashion_mnist(tmp_path / "fm", n_train=64, n_test=16)
    write(tmp_path / "c.pt", meta=meta(model={"kwargs": []}))  # was a TypeError traceback
    done = run_camexp(*SMOKE, "task=eval", f"ckpt={tmp_path / 'c.pt'}", f"dataset.root={data}",
                      f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "meta.model.kwargs is [], not a dict" in done.stderr.strip().splitlines()[-1]


def test_a_checkpoint_with_model_kwargs_that_load_nothing_is_read(tmp_path):
    """The refusal above is of loading kwargs only: an architecture kwarg still reads."""
    write(tmp_path / "c.pt", meta=meta(model={"kwargs": {"drop_path_rate": 0.0}}))
    state = read_checkpoint(str(tmp_path / "c.pt"))
    assert state["meta"]["model"]["kwargs"] == {"drop_path_rate": 0.0}


def test_eval_of_a_checkpoint_whose_kwargs_name_a_file_exits_2_without_reading_it(tmp_path):
    data = write_fashion_mnist(tmp_path / "fm", n_train=64, n_test=16)
    write(tmp_path / "c.pt", meta=meta(model={"kwargs": {"checkpoint_path": "/etc/hostname"}}))
    done = run_camexp(*SMOKE, "task=eval", f"ckpt={tmp_path / 'c.pt'}", f"dataset.root={data}",
                      f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]  # was timm's torch.load traceback, rc 1
    assert "Traceback" not in done.stderr
    assert "loads weights or files" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("saved", "loads"),
    [
        ("+backbone.kwargs.checkpoint_path=/etc/hostname", True),
        ("+backbone.kwargs.pretrained_cfg_overlay={file:/x}", True),
        ("backbone.kwargs={checkpoint_path:/x}", True),
        ("backbone.kwargs.widths=[8,16,32]", False),
        ("+backbone.kwargs.drop_path_rate=0.1", False),
    ],
)
def test_a_saved_override_that_makes_timm_load_a_file_must_be_restated(saved, loads):
    from camexp.run.recompose import names_code, parse

    assert names_code(parse([saved], "test")[0]) is loads


@pytest.mark.parametrize("dataset", ["imagefolder", "digits28"])
def test_cam_pictures_0_trains_without_pictures_on_folder_and_in_memory_data(tmp_path, dataset):
    """cam_pictures=0 (no CAM figure) was a RuntimeError from torch.stack([]) on folder data."""
    extra = []
    if dataset == "imagefolder":
        root = write_imagefolder(tmp_path / "folder", classes=2, per_class=4, size=16)
        extra = [f"dataset.root={root}", "dataset.workers=0", "dataset.image_size=16",
                 "dataset.val_size=2", "batch_size=4"]  # fmt: skip
    done = run_camexp("debug=smoke", f"dataset={dataset}", "backbone=airnet", "progress=false",
                      "tensorboard=false", "metrics=none", "cam_pictures=0", *extra,
                      f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "r" / "results.json").read_text())
    assert record["status"] == "completed" and "test/acc1" in record["metrics"]


def test_an_image_size_too_small_for_the_backbone_is_one_line_and_no_result(tmp_path):
    """AirNet's three pools need about 10 px: 8 px was a max_pool2d traceback, exit 1."""
    root = write_imagefolder(tmp_path / "folder", classes=2, per_class=4, size=8)
    done = run_camexp("debug=smoke", "dataset=imagefolder", "backbone=airnet", "progress=false",
                      f"dataset.root={root}", "dataset.workers=0", "dataset.image_size=8",
                      "dataset.val_size=2", "batch_size=4", f"hydra.run.dir={tmp_path / 'r'}",
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "airnet cannot take 8x8 px images" in last and "dataset.image_size" in last
    assert not (tmp_path / "r").exists()  # a user error leaves no run folder
