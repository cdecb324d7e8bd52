"""Issue 17's recipe options: AirNet (whitened first layer), model EMA, test-time augmentation,
their wiring into a run, and the time-to-accuracy benchmark. Expected values are written by hand
or recomputed here by independent code."""

import json
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import run_camexp
from torch import nn

from camexp.engine import evaluate_variants, tta_level, tta_logits
from camexp.errors import UserError
from camexp.models.airnet import Whiten, whitening_filters
from camexp.models.backbone import Output, build_backbone
from camexp.models.ema import WeightAverage, build_weight_average

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- AirNet
def test_whitening_filters_decorrelate_patches():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 1, 12, 12, generator=g)
    images = base + 0.8 * base.roll(1, dims=3) + 2.0  # correlated neighbours, non-zero mean
    filters = whitening_filters(images, kernel=2, eps=0.0)
    assert filters.shape == (8, 1, 2, 2)
    assert torch.allclose(filters[4:], -filters[:4])  # the negated copies
    out = torch.nn.functional.conv2d(images, filters[:4])  # (B, 4, 11, 11)
    responses = out.permute(0, 2, 3, 1).reshape(-1, 4)
    second_moment = responses.T @ responses / responses.shape[0]
    assert torch.allclose(second_moment, torch.eye(4), atol=1e-3)


def test_whitening_is_fitted_once_on_the_first_training_batch():
    layer = Whiten(1, 2)
    layer.eval()
    layer(torch.randn(4, 1, 8, 8))
    assert not bool(layer.whiten_fitted) and layer.weight.abs().sum() == 0  # eval: no fitting
    layer.train()
    first = torch.randn(16, 1, 8, 8)
    layer(first)
    assert bool(layer.whiten_fitted)
    fitted = layer.weight.clone()
    assert torch.allclose(fitted, whitening_filters(first, 2))
    layer(torch.randn(16, 1, 8, 8) * 5)
    assert torch.equal(layer.weight, fitted)
    assert [n for n, _ in layer.named_parameters()] == ["bias"]  # the filters do not train
    resumed = Whiten(1, 2)
    resumed.load_state_dict(layer.state_dict())
    resumed.train()
    resumed(torch.randn(16, 1, 8, 8) * 3)  # a checkpoint's fitted filters are kept
    assert torch.equal(resumed.weight, fitted)


@pytest.mark.parametrize("kwargs", [{}, {"final_pool": False, "act": "relu", "depth": 3}])
def test_airnet_has_an_exact_cam_and_the_expected_map(kwargs):
    model = build_backbone("airnet", 10, 1, 28, needs_cam=True, **kwargs)
    assert model.exact_cam
    model.train()
    out: Output = model(torch.randn(4, 1, 28, 28))
    size = 3 if kwargs.get("final_pool", True) else 6  # 28 -> 27 (2x2 whitening) -> 13 -> 6 -> 3
    assert out.features.shape == (4, 128, size, size)
    cams = torch.einsum("kc,bchw->bkhw", out.fc_weight, out.features)
    bias = model.classifier.bias
    assert torch.allclose(cams.mean(dim=(2, 3)) + bias, out.logits, atol=1e-5)


def test_airnet_refuses_unknown_options():
    with pytest.raises(UserError, match="act='tanh'"):
        timm.create_model("airnet", act="tanh")
    with pytest.raises(UserError, match="does not support"):
        timm.create_model("airnet", stem="deep")


# ----------------------------------------------------------------------------- EMA
def linear(value: float) -> nn.Linear:
    layer = nn.Linear(1, 1, bias=False)
    nn.init.constant_(layer.weight, value)
    return layer


def test_ema_follows_the_hand_computed_average():
    model = linear(1.0)
    ema = WeightAverage(model, decay=0.5, every=1, warmup=False)
    values = []
    for w in (2.0, 4.0, 8.0):
        nn.init.constant_(model.weight, w)
        ema.step(model)
        values.append(ema.module.weight.item())
    # timm: the first update copies (decay 0), then ema = 0.5 * ema + 0.5 * w
    assert values == [2.0, 3.0, 5.5]
    assert model.weight.item() == 8.0  # the live weights are untouched


def test_ema_every_n_steps_and_resume():
    model = linear(0.0)
    ema = WeightAverage(model, decay=0.5, every=2, warmup=False)
    seen = []
    for w in (1.0, 2.0, 3.0, 4.0):
        nn.init.constant_(model.weight, w)
        ema.step(model)
        seen.append(ema.module.weight.item())
    assert seen == [0.0, 2.0, 2.0, 3.0]  # updates at calls 2 (copy) and 4 (0.5*2 + 0.5*4)
    other = WeightAverage(linear(9.0), decay=0.5, every=2, warmup=False)
    other.load_state_dict(ema.state_dict())
    assert other.calls == 4 and other.module.weight.item() == 3.0


def test_ema_off_and_bad_decay():
    assert build_weight_average(linear(0.0), decay=0.0) is None
    with pytest.raises(UserError, match="ema.decay"):
        WeightAverage(linear(0.0), decay=1.0)


# ----------------------------------------------------------------------------- TTA
class Probe(nn.Module):
    """logits = a fixed linear read-out of the raw pixels: no symmetry to hide a mistake."""

    def __init__(self, h=4, w=5, k=3):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.weight = torch.randn(k, h * w, generator=g)

    def forward(self, x):
        logits = x.flatten(1) @ self.weight.T
        return Output(logits, x, None)


def test_tta_levels_match_hand_written_views():
    model = Probe()
    x = torch.randn(2, 1, 4, 5, generator=torch.Generator().manual_seed(2))

    def f(v):
        return v.flatten(1) @ model.weight.T

    def m(v):
        return (f(v) + f(v.flip(3))) / 2

    # translations with reflection, written with explicit index lists
    rows_up, cols_up = [1, 0, 1, 2], [1, 0, 1, 2, 3]  # pixel (i, j) <- (|i-1|, |j-1|)
    rows_dn, cols_dn = [1, 2, 3, 2], [1, 2, 3, 4, 3]  # pixel (i, j) <- (i+1 reflected)
    up = x[:, :, rows_up][:, :, :, cols_up]
    down = x[:, :, rows_dn][:, :, :, cols_dn]
    assert torch.allclose(tta_logits(model, x, 0), f(x))
    assert torch.allclose(tta_logits(model, x, 1), m(x))
    expected = 0.5 * m(x) + 0.25 * m(up) + 0.25 * m(down)
    assert torch.allclose(tta_logits(model, x, 2), expected, atol=1e-6)


def test_tta_option_names():
    assert [tta_level(n) for n in ("none", "flip", "flip_translate")] == [0, 1, 2]
    with pytest.raises(UserError, match="tta='mirror'"):
        tta_level("mirror")


class LeftRight(nn.Module):
    """logits = 4 onehot(left pixel) + onehot(right pixel) + 3 onehot(2), on a 1x2 image."""

    def forward(self, x):
        left, right = x[:, 0, 0, 0].long(), x[:, 0, 0, 1].long()
        logits = 4 * F.one_hot(left, 3) + F.one_hot(right, 3) + 3 * F.one_hot(right * 0 + 2, 3)
        return Output(logits.float(), x, None)


def test_variants_have_keys_of_their_own():
    labels = torch.tensor([0, 1, 2, 1])
    x = torch.zeros(4, 1, 1, 2)
    x[:, 0, 0, 0] = labels.float()  # the label in the left pixel, 0 in the right one
    loader, cpu = [(x, labels)], torch.device("cpu")
    assert evaluate_variants(LeftRight(), loader, cpu, prefix="test") == {}
    out = evaluate_variants(LeftRight(), loader, cpu, prefix="test", ema_model=LeftRight(), tta=1)
    assert sorted(k for k in out if k.endswith("acc1")) == [
        "test_ema/acc1", "test_ema_tta/acc1", "test_tta/acc1"]  # fmt: skip
    # plain: 4 onehot(y) + onehot(0) + 3 onehot(2) -> y for every sample
    assert out["test_ema/acc1"] == 100.0
    # flip + mirror mean for y = 1: (2.5, 2.5, 3) -> class 2, wrong; y = 0 and y = 2 stay right
    assert out["test_tta/acc1"] == 50.0 and out["test_ema_tta/acc1"] == 50.0


# ----------------------------------------------------------------------------- wiring and runs
def test_a_run_reports_ema_and_tta_under_their_own_keys(tmp_path):
    run_dir = tmp_path / "r"
    proc = run_camexp("debug=smoke", "backbone=airnet", "metrics=none", "ema.decay=0.9",
                      "tta=flip", f"hydra.run.dir={run_dir}", "progress=false",
                      "tensorboard=false")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "r" / "results.json").read_text())["metrics"]
    for key in ("test/acc1", "test_ema/acc1", "test_tta/acc1", "test_ema_tta/acc1"):
        assert 0.0 <= metrics[key] <= 100.0, key
    header = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0]
    assert "val_ema/acc1" in header


def test_the_benchmark_writes_a_table(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_tta
    finally:
        sys.path.pop(0)
    out = tmp_path / "table.md"
    text = bench_tta.main(["--seeds", "0", "--ref-steps", "1", "--out", str(out), "debug=smoke",
                           "backbone=airnet", "ema.decay=0.9", "metrics=none"])  # fmt: skip
    assert out.read_text().strip() == text.strip()
    assert "| test_ema | 0 |" in text and "ref-epochs to 94.5 %" in text
    assert "CPU:" in text and "native bf16" in text


def test_the_step_benchmark_profiles_a_window_of_each_variant(capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_steps
    finally:
        sys.path.pop(0)
    bench_steps.main(["--steps", "1", "--windows", "1", "--profile", "3", "--variant", "amp=none",
                      "debug=smoke", "backbone=airnet", "metrics=none"])  # fmt: skip
    out = capsys.readouterr().out
    assert "One window of `amp=none` under torch.profiler" in out
    table = out.split("| op | share of the window | calls |\n|---|---|---|\n")[1]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == 3 and "convolution" in rows[0], out  # convolutions cost the most
    shares = [float(row.split("|")[2].strip(" %")) for row in rows]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100


def test_the_benchmark_resumes_from_its_cache(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_tta
    finally:
        sys.path.pop(0)
    args = ["--seeds", "0", "1", "--ref-steps", "1", "--cache", str(tmp_path / "cache"),
            "debug=smoke", "backbone=airnet", "metrics=none", "optim.lookahead.k=3",
            "dataset.hflip=alternate", "optim.lr_scaling.rule=linear"]  # fmt: skip
    first = bench_tta.main(args)
    saved = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(saved) == 2 and all(name.endswith(".json") for name in saved)
    capsys.readouterr()
    again = bench_tta.main(args)  # nothing left to train: both seeds come from the cache
    assert again == first
    assert capsys.readouterr().err.count("reusing") == 2
    other = bench_tta.main([*args[:1], "0", *args[3:], "optim.lookahead.k=2"])
    assert "reusing" not in capsys.readouterr().err  # another recipe is another run
    assert "optim.lookahead.k=2" in other
    assert bench_tta.main(["--cached-only", *args, "optim.lookahead.k=4"]) == ""  # trains nothing
    assert len(list((tmp_path / "cache").iterdir())) == 3


@pytest.mark.parametrize(
    "damage",
    ["not json {", "[1, 2]", '{"identity": "IDENTITY", "run": {"curves": {}}}',
     '{"identity": "IDENTITY", "run": {"curves": {"seconds": [1.0], "test": [50.0]}, '
     '"flops": 1.0, "ref_speeds": [-5.0]}}'],
)  # fmt: skip
def test_a_damaged_or_crafted_cache_file_is_a_miss_not_a_traceback(tmp_path, capsys, damage):
    """A cache file that is no JSON, no object, or a run record missing what the table reads
    (or with a negative reference speed: negative reference epochs in every cell) is ignored
    with one warning; the seed counts as not cached."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_cache
        import bench_tta
    finally:
        sys.path.pop(0)
    identity = {"seed": 0, "recipe": ["debug=smoke"], "cpu": "test"}
    path = bench_cache.cache_path(str(tmp_path), identity)
    with open(path, "w") as f:
        f.write(damage.replace('"IDENTITY"', json.dumps(identity)))
    assert bench_cache.load_cached(str(tmp_path), identity, valid=bench_tta.valid_run) is None
    assert "ignoring the cache file" in capsys.readouterr().err
    good = {"curves": {"seconds": [1.0], "test": [50.0]}, "flops": 1.0, "ref_speeds": [9.0]}
    bench_cache.save_cached(str(tmp_path), identity, good)
    assert bench_cache.load_cached(str(tmp_path), identity, valid=bench_tta.valid_run) == good


@pytest.mark.parametrize("option", [["--eval-every", "0"], ["--ref-steps", "-3"]])
def test_the_benchmark_refuses_counts_below_their_least_value(option, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_tta
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit) as stop:
        bench_tta.main([*option, "debug=smoke"])
    assert stop.value.code == 2 and "is not a whole number >=" in capsys.readouterr().err


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from camexp.main import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def test_recipes_choose_precision_from_the_hardware():
    assert compose().amp == "auto"
    bare = compose("~experiment")  # config.yaml's own defaults: the options are off
    assert bare.ema.decay == 0.0 and bare.tta == "none"
    # the main job evaluates TTA beside test/* (issue 25); it trains nothing differently
    assert compose().ema.decay == 0.0 and compose().tta == "flip_translate"
    assert compose("experiment=fashion_fast").amp == "auto"  # no 4-7x bf16 slowdown on AVX2
    main = compose("experiment=fashion_resnet20")
    assert main.amp == "auto" and main.backbone.name == "airnet" and main.loss.cam.weight == 1.0


def test_ema_copy_does_not_call_the_live_models_compiled_forward():
    model = build_backbone("airnet", 10, 1, 28, needs_cam=False)
    live = model.model.forward_features
    model.model.forward_features = lambda x: live(x)  # stands in for torch.compile's wrapper
    ema = WeightAverage(model, decay=0.5, warmup=False)
    assert "forward_features" not in ema.module.model.__dict__
    model.eval()
    ema.module.eval()
    with torch.no_grad():
        torch.nn.init.zeros_(ema.module.model.fc.weight)
        torch.nn.init.ones_(ema.module.model.fc.bias)
        x = torch.randn(2, 1, 28, 28)
        assert torch.equal(ema.module(x).logits, torch.ones(2, 10))


def test_the_table_counts_reference_epochs_to_each_threshold():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_tta
    finally:
        sys.path.pop(0)
    runs = {
        0: {"curves": {"seconds": [10.0, 20.0, 30.0], "test": [92.0, 93.5, 94.6]}, "flops": 3e12},
        1: {"curves": {"seconds": [12.0, 24.0, 36.0], "test": [93.0, 93.9, 94.2]}, "flops": 3e12},
    }
    rows = bench_tta.table(runs, 10.0, ["# h"]).splitlines()
    # seed 0: 93 % at 20 s, 94 and 94.5 % at 30 s; with a 10 s reference epoch
    assert "| test | 0 | 2.00 | 3.00 | 3.00 | 94.60 | 3.00 | 3.00 |" in rows
    assert "| test | 1 | 1.20 | 3.60 | not reached | 94.20 | 3.60 | 3.00 |" in rows
    # the mean curve (92.5, 93.7, 94.4) at mean times (11, 22, 33) s
    assert "| test | **mean** | 2.20 | 3.30 | not reached | 94.40 | 3.30 | 3.00 |" in rows


def test_the_benchmark_trains_what_camexp_trains(tmp_path):
    """bench_tta measures camexp's own training (issue 23): one seed through the benchmark and
    ``camexp`` with the same overrides end with identical weights and test metrics."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_tta
    finally:
        sys.path.pop(0)
    recipe = ["debug=smoke", "backbone=airnet", "ema.decay=0.9", "metrics=none", "epochs=2",
              "deterministic=true", "regularizer=mixup"]  # fmt: skip
    threads = torch.get_num_threads()  # one thread on both sides: sums in the same order
    torch.set_num_threads(1)
    try:
        bench_tta.main(["--seeds", "0", "--ref-steps", "0", "--run-dir", str(tmp_path / "bench"),
                        *recipe])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    (bench_run,) = (tmp_path / "bench").iterdir()
    plain = run_camexp(*recipe, "seed=0", "progress=false", "tensorboard=false", "threads=1",
                       f"hydra.run.dir={tmp_path / 'plain'}")  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    ours = json.loads((bench_run / "results.json").read_text())["metrics"]
    theirs = json.loads((tmp_path / "plain" / "results.json").read_text())["metrics"]
    for key in ("test/acc1", "test/loss", "test_ema/acc1", "val/acc1_last"):
        assert ours[key] == theirs[key], key
    a = torch.load(bench_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "plain" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
