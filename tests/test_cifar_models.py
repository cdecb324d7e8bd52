"""Tests for camexp.models.small_nets: timm registration, shapes, CAM identity, parameter counts."""

import importlib
import warnings

import pytest
import timm
import torch

import camexp.models.small_nets as cifar_models
from camexp.errors import UserError

NAMES = (
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "wrn_28_10",
)
SMALL = tuple(n for n in NAMES if n != "wrn_28_10")  # wrn_28_10 is never run forward here
FINAL_CHS = {n: 64 for n in NAMES[:5]} | {"resnet8x4": 256, "resnet32x4": 256}
FINAL_CHS |= {"wrn_16_2": 128, "wrn_40_1": 64, "wrn_40_2": 128, "wrn_28_10": 640}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- parameter counts from the architecture formulas, written independently of the module ------


def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout


def bn(c: int) -> int:
    return 2 * c  # weight and bias; running stats are buffers


def resnet_formula(depth: int, widths: tuple, in_chans: int, classes: int) -> int:
    n = (depth - 2) // 6
    total = conv(3, in_chans, widths[0]) + bn(widths[0])
    cin = widths[0]
    for cout in widths[1:]:
        for i in range(n):
            total += conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + bn(cout)
            if i == 0 and cin != cout:  # option B projection shortcut (every shape change here)
                total += conv(1, cin, cout) + bn(cout)
            cin = cout
    return total + widths[-1] * classes + classes


def wrn_formula(depth: int, k: int, in_chans: int, classes: int) -> int:
    n = (depth - 4) // 6
    widths = (16, 16 * k, 32 * k, 64 * k)
    total = conv(3, in_chans, 16)
    cin = 16
    for cout in widths[1:]:
        for i in range(n):
            total += bn(cin) + conv(3, cin, cout) + bn(cout) + conv(3, cout, cout)
            if i == 0 and cin != cout:
                total += conv(1, cin, cout)
            cin = cout
    return total + bn(widths[-1]) + widths[-1] * classes + classes


FORMULA = {
    "resnet20": lambda c, k: resnet_formula(20, (16, 16, 32, 64), c, k),
    "resnet32": lambda c, k: resnet_formula(32, (16, 16, 32, 64), c, k),
    "resnet44": lambda c, k: resnet_formula(44, (16, 16, 32, 64), c, k),
    "resnet56": lambda c, k: resnet_formula(56, (16, 16, 32, 64), c, k),
    "resnet110": lambda c, k: resnet_formula(110, (16, 16, 32, 64), c, k),
    "resnet8x4": lambda c, k: resnet_formula(8, (32, 64, 128, 256), c, k),
    "resnet32x4": lambda c, k: resnet_formula(32, (32, 64, 128, 256), c, k),
    "wrn_16_2": lambda c, k: wrn_formula(16, 2, c, k),
    "wrn_40_1": lambda c, k: wrn_formula(40, 1, c, k),
    "wrn_40_2": lambda c, k: wrn_formula(40, 2, c, k),
    "wrn_28_10": lambda c, k: wrn_formula(28, 10, c, k),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_registered_in_timm():
    assert "resnet20" in timm.list_models("resnet2*")
    assert set(NAMES) <= set(timm.list_models())
    assert timm.models.get_pretrained_cfg("wrn_40_2").input_size == (3, 32, 32)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_formula(name):
    for in_chans, classes in ((3, 10), (1, 7)):
        model = timm.create_model(name, num_classes=classes, in_chans=in_chans)
        assert n_params(model) == FORMULA[name](in_chans, classes)


@pytest.mark.parametrize(
    ("name", "expected", "cifar100"),
    [
        # He et al. Table 6 report 0.27M / 0.85M / 1.7M (option A). Option B adds 2,752 parameters
        # (two 1x1 conv + BN projections), e.g. 269,722 -> 272,474 for resnet20.
        ("resnet20", 272_474, None),
        ("resnet56", 855_770, None),
        ("resnet110", 1_730_714, None),
        # CRD (Tian et al., ICLR 2020) Table 1, CIFAR-100: 1.23M, 7.43M, 0.70M, 2.26M.
        ("resnet8x4", None, 1.23e6),
        ("resnet32x4", None, 7.43e6),
        ("wrn_16_2", None, 0.70e6),
        ("wrn_40_2", 2_243_546, 2.26e6),  # Zagoruyko & Komodakis: 2.2M
        ("wrn_28_10", 36_479_194, None),  # Zagoruyko & Komodakis: 36.5M
    ],
)
def test_published_parameter_counts(name, expected, cifar100):
    if expected is not None:
        assert n_params(timm.create_model(name, num_classes=10)) == expected
    if cifar100 is not None:
        count = n_params(timm.create_model(name, num_classes=100))
        assert abs(count - cifar100) < 0.005e6, count


def calibrate_bn(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Set BN running stats from one batch, then eval. Untrained post-activation ResNets with
    unit BN stats blow activations up with depth (logits ~1e7 for resnet110), which would turn a
    float32 atol check into a check of rounding rather than of the identity."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(x)
    return model.eval()


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_shapes_and_cam_identity(name, in_chans):
    model = timm.create_model(name, num_classes=7, in_chans=in_chans, drop_rate=0.5)
    calibrate_bn(model, torch.randn(8, in_chans, 32, 32))
    c = FINAL_CHS[name]
    assert model.num_features == c and model.num_classes == 7 and model.drop_rate == 0.5
    assert model.get_classifier() is model.fc
    assert model.fc.weight.shape == (7, c)
    for size in (28, 32):
        x = torch.randn(2, in_chans, size, size)
        with torch.no_grad():
            feats = model.forward_features(x)
            logits = model(x)
        side = 7 if size == 28 else 8
        assert feats.shape == (2, c, side, side)
        assert logits.shape == (2, 7)
        assert (feats >= 0).all()  # taken after the final ReLU
        cams = torch.einsum("bchw,kc->bkhw", feats, model.fc.weight)
        torch.testing.assert_close(cams.mean(dim=(2, 3)) + model.fc.bias, logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.forward_head(feats), logits)
        assert model.forward_head(feats, pre_logits=True).shape == (2, c)


def test_wrn_28_10_created_with_both_channel_counts():
    for in_chans in (1, 3):
        model = timm.create_model("wrn_28_10", num_classes=7, in_chans=in_chans)
        assert model.conv1.in_channels == in_chans
        assert model.fc.out_features == 7 and model.num_features == 640


@pytest.mark.parametrize("name", ["resnet20", "wrn_16_2"])
def test_cfg_stages_and_feature_info(name):
    model = timm.create_model(name, num_classes=7, in_chans=1)
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    assert cfg["input_size"] == (1, 32, 32) and cfg["num_classes"] == 7
    assert cfg["classifier"] == "fc" and cfg["first_conv"] == "conv1"
    assert len(cfg["mean"]) == len(cfg["std"]) == 1
    assert cfg["architecture"] == name
    assert model.get_submodule(cfg["first_conv"]) is model.conv1
    assert model.stage_names == ("layer1", "layer2", "layer3")

    outputs = []
    hooks = [
        model.get_submodule(s).register_forward_hook(lambda m, i, o: outputs.append(o.shape))
        for s in model.stage_names
    ]
    model(torch.randn(2, 1, 32, 32))
    for h in hooks:
        h.remove()
    expected = [
        (2, f["num_chs"], 32 // f["reduction"], 32 // f["reduction"]) for f in model.feature_info
    ]
    assert outputs == expected
    assert [f["module"] for f in model.feature_info] == list(model.stage_names)


def test_reset_classifier_and_headless():
    model = timm.create_model("resnet20", num_classes=7)
    model.reset_classifier(3)
    assert model.fc.weight.shape == (3, 64) and model.num_classes == 3
    assert model.pretrained_cfg["num_classes"] == 3
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    headless = timm.create_model("resnet20", num_classes=0)
    assert headless(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_block_dropout_only_in_training():
    model = timm.create_model("wrn_16_2", num_classes=7, block_drop_rate=0.3)
    assert model.block_drop_rate == 0.3
    assert all(b.drop_rate == 0.3 for s in model.stage_names for b in model.get_submodule(s))
    x = torch.randn(2, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_pretrained_raises_user_error():
    with pytest.raises(UserError, match="no pretrained weights exist for resnet20"):
        timm.create_model("resnet20", pretrained=True)


def test_unknown_option_raises_but_timm_defaults_pass():
    with pytest.raises(UserError, match="features_only"):
        timm.create_model("resnet20", features_only=True)
    with pytest.raises(UserError, match="block_drop_rate"):
        timm.create_model("resnet20", block_drop_rate=0.1)  # a WRN-only option
    model = timm.create_model(
        "resnet20", drop_path_rate=0.0, global_pool="avg", pretrained_cfg_overlay={"crop_pct": 0.9}
    )
    assert model.pretrained_cfg["crop_pct"] == 0.9


def test_reimport_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(cifar_models)
    assert timm.models.model_entrypoint("resnet20") is cifar_models.resnet20
