"""Progressive resizing: Composer's schedule, the loader's sizes, resume, bad settings."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from camexp.data.memory import InMemoryLoader
from camexp.data.progressive import Progressive, progressive_of
from camexp.errors import UserError
from camexp.run.checkpoint import config_difference

COMPOSER = Progressive(initial_scale=0.5, delay_fraction=0.5, finetune_fraction=0.2)


@pytest.mark.parametrize(
    ("elapsed", "side"),
    # Composer's rule worked by hand at 28 px, increment 4: scale 0.5 until t = 0.5, then
    # 0.5 + 0.5 (t - 0.5) / 0.3 until t = 0.8; side round(28 scale / 4) * 4 (Python's round)
    [(0.0, 16),    # 28 * 0.5 / 4 = 3.5 -> 4 (half to even) -> 16
     (0.49, 16),
     (0.5, 16),    # the ramp starts at 0
     (0.6, 20),    # scale 0.6667: 4.667 -> 5 -> 20
     (0.7, 24),    # scale 0.8333: 5.833 -> 6 -> 24
     (0.79, 28),   # scale 0.9833: 6.883 -> 7 -> 28, the full size
     (0.8, 28), (1.0, 28)],
)  # fmt: skip
def test_the_schedule_is_composers(elapsed, side):
    assert COMPOSER.size(28, 28, elapsed) == (side, side)


def test_non_square_images_keep_their_aspect_and_a_larger_rounding_is_the_full_size():
    # width 32 at scale 0.5: 16; the height by the same factor 16 / 32
    assert COMPOSER.size(24, 32, 0.0) == (12, 16)
    # 31 px at 0.99, increment 4: round(30.69 / 4) * 4 = 32 > 31: the full size (Composer: none)
    assert Progressive(initial_scale=0.99).size(31, 31, 0.0) == (31, 31)
    # no ramp (delay + finetune = 1): initial scale, then the full size at once
    jump = Progressive(initial_scale=0.5, delay_fraction=0.6, finetune_fraction=0.4)
    assert jump.size(28, 28, 0.59) == (16, 16) and jump.size(28, 28, 0.6) == (28, 28)


def _loader(progressive, *, train=True, seed=0, epochs=2):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.arange(64) % 10
    return InMemoryLoader(images, labels, 16, mean=(0.5,), std=(0.25,), train=train,
                          crop_padding=2, hflip=True, drop_last=True, seed=seed,
                          progressive=progressive, epochs=epochs)  # fmt: skip


def test_the_loader_shrinks_training_batches_by_the_batches_taken_over_all_epochs():
    loader = _loader(COMPOSER)  # 4 batches per epoch, 2 epochs: t = i / 8 for batch i
    sides = [images.shape[-1] for _ in range(2) for images, _ in loader]
    # t = 0 .. 0.5: 16; t = 0.625: scale 0.7083 -> 4.958 -> 20; t = 0.75: 0.9167 -> 6.417 -> 24
    assert sides == [16, 16, 16, 16, 16, 20, 24, 28]
    # what a benchmark counts the run's FLOPs from: the same sizes, without training
    assert _loader(COMPOSER).step_sizes() == {(16, 16): 5, (20, 20): 1, (24, 24): 1, (28, 28): 1}
    assert _loader(None).step_sizes() == {(28, 28): 8}
    assert all(images.shape[-1] == 28 for images, _ in _loader(COMPOSER, train=False))


def test_a_shrunk_batch_is_the_plain_batch_resized_and_resume_gives_the_same_batches():
    plain = [images for images, _ in _loader(None)]
    shrunk = [images for images, _ in _loader(COMPOSER)]
    expected = F.interpolate(plain[0], size=(16, 16), mode="bilinear", antialias=True)
    assert torch.allclose(shrunk[0], expected, atol=1e-6)

    loader = _loader(COMPOSER, epochs=1)  # t = i / 4: sides 16, 16, 16 (t = 0.5), 24
    first = iter(loader)
    next(first)
    state = loader.state_dict()  # mid-epoch
    rest = [images for images, _ in first]
    again = _loader(COMPOSER, seed=99, epochs=1)  # only the saved state can make it match
    again.load_state_dict(state)
    resumed = [images for images, _ in again]
    assert [r.shape[-1] for r in rest] == [16, 16, 24]
    assert all(torch.equal(a, b) for a, b in zip(rest, resumed, strict=True))


@pytest.mark.parametrize(
    ("block", "message"),
    [({"initial_scale": 0.0}, "progressive.initial_scale=0.0"),
     ({"initial_scale": 1.5}, "progressive.initial_scale=1.5"),
     ({"initial_scale": 0.5, "delay_fraction": 0.9}, "exceeds 1"),
     ({"initial_scale": 0.5, "finetune_fraction": -0.1}, "progressive.finetune_fraction=-0.1"),
     ({"initial_scale": 0.5, "size_increment": 0}, "progressive.size_increment=0"),
     ({"initial_scale": "abc"}, "take a number"),
     ({"initial_scale": 0.5, "size_increment": 4.5}, "a whole number of px")],
)  # fmt: skip
def test_bad_settings_are_one_line(block, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("+", r"\+")):
        progressive_of(block)


def test_off_is_none_and_an_old_run_without_the_block_resumes_only_while_it_is_off():
    assert progressive_of(None) is None and progressive_of({"initial_scale": 1.0}) is None
    off = {"progressive": {"initial_scale": 1.0, "delay_fraction": 0.5}}
    on = {"progressive": {"initial_scale": 0.7, "delay_fraction": 0.5}}
    assert config_difference({}, off) == []  # a checkpoint from before the block
    assert config_difference({}, on) == ["progressive"]


def _camexp(tmp_path, *overrides, dataset="digits28"):
    env = {**os.environ, "CAMEXP_OUTPUT_DIR": str(tmp_path / "out"), "HYDRA_FULL_ERROR": ""}
    return subprocess.run(
        [sys.executable, "-m", "camexp", "debug=smoke", f"dataset={dataset}", "backbone=airnet",
         "progress=false", "tensorboard=false", "metrics=none", *overrides],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def test_bad_settings_on_the_command_line_exit_2_with_one_line(tmp_path):
    done = _camexp(tmp_path, "progressive.initial_scale=2")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "progressive.initial_scale=2.0" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    left = list((tmp_path / "out").rglob("results.json")) if (tmp_path / "out").exists() else []
    assert not left  # nothing a report would list


def test_a_first_size_too_small_for_the_net_is_one_line_before_any_step(tmp_path):
    # 28 * 0.3 = 8.4 -> 8 px: AirNet's maps go 7 -> 3 -> 1 -> 0 (its third pool fails)
    done = _camexp(tmp_path, "progressive.initial_scale=0.3")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "8x8 px" in errors[0] and "raise progressive.initial_scale" in errors[0], errors[0]
    assert "Traceback" not in done.stderr
    left = list((tmp_path / "out").rglob("results.json")) if (tmp_path / "out").exists() else []
    assert not left


def test_the_smallest_size_check_leaves_the_model_as_it_was():
    from camexp.data.progressive import check_smallest_size
    from camexp.models.airnet import AirNet

    loader = _loader(COMPOSER)
    model = AirNet(num_classes=10, in_chans=1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_smallest_size(model, loader, torch.device("cpu"))  # 16 px: it fits
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no BN stats, no whitening
    small = _loader(Progressive(initial_scale=0.25))
    with pytest.raises(UserError, match="at 8x8 px"):
        check_smallest_size(model.eval(), small, torch.device("cpu"))
    assert not model.training  # restored to eval, as it was given


def test_an_image_folder_dataset_refuses_the_option_with_one_line(tmp_path):
    from conftest import write_imagefolder

    root = write_imagefolder(tmp_path / "folder", classes=2, per_class=4, size=8)
    done = _camexp(tmp_path, f"dataset.root={root}", "dataset.workers=0", "dataset.image_size=8",
                   "progressive.initial_scale=0.5", dataset="imagefolder")  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "in-memory datasets only" in done.stderr and "Traceback" not in done.stderr
    assert not list((tmp_path / "out").rglob("results.json"))


def test_a_camexp_run_with_progressive_resizing_trains_and_tests(tmp_path):
    done = _camexp(tmp_path, "epochs=2", "progressive.initial_scale=0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    (results,) = list((tmp_path / "out").rglob("results.json"))
    found = json.loads(results.read_text())
    assert "test/acc1" in found.get("metrics", found), found
    # the training batches went 16 -> 28 px (Composer's rule at 28 px: 16, 20, 24, 28)
    (log,) = list((tmp_path / "out").rglob("camexp.log"))
    sizes = [line.split("training at ")[1].split(" px")[0] for line in log.read_text().splitlines()
             if "progressive resizing: training at" in line]  # fmt: skip
    assert sizes[0] == "16x16" and sizes[-1] == "28x28", sizes


def test_a_benchmark_seed_cached_before_the_block_keeps_its_identity_while_it_is_off():
    from argparse import Namespace
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import bench_tta
    finally:
        sys.path.pop(0)

    def identity(*overrides):
        args = Namespace(overrides=["debug=smoke", *overrides], eval_every=1, ref_steps=1)
        found = bench_tta.run_identity(args, 0, torch.device("cpu"))
        return {**found, "overrides": None}  # the recipe, not the words that composed it

    assert "progressive" not in identity()["recipe"] and "erasing" not in identity()["recipe"]
    assert identity("progressive.initial_scale=1.0") == identity()
    assert identity("progressive.delay_fraction=0.3") == identity()  # off: the rest is moot
    assert "initial_scale: 0.7" in identity("progressive.initial_scale=0.7")["recipe"]
