"""The maths of CAM, CAM-loss and the objective (docs/design.md §1), on CPU, in seconds.

Expected values are worked by hand (the 2x2 example below) or computed by a second, plain
implementation in this file; none is copied from running the code under test.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from camexp.cam import class_activation_maps, class_agnostic_map, normalize, target_cam
from camexp.errors import UserError
from camexp.losses import (
    CAMLoss,
    CrossEntropy,
    Objective,
    build_objective,
    cam_loss,
    soft_cross_entropy,
)
from camexp.models.backbone import Output, build_backbone


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine OpenMP's spinning
    threads make a 10 ms forward take seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- CAM identity
BACKBONES = [
    # name, input channels, input size, extra build arguments
    ("resnet20", 3, 32, {}),
    ("wrn_16_2", 3, 32, {}),
    ("resnet8x4", 3, 32, {}),
    ("resnet18", 3, 32, {"small_input_stem": True}),
    ("resnet18", 3, 64, {}),
    ("densenet121", 1, 32, {"small_input_stem": True}),
    ("efficientnet_b0", 3, 64, {}),
    ("regnety_008", 3, 64, {}),
]


@pytest.mark.parametrize(
    "name,chans,size,extra", BACKBONES, ids=[f"{b[0]}-{b[2]}px" for b in BACKBONES]
)
def test_cam_identity_per_backbone(name, chans, size, extra):
    torch.manual_seed(0)
    model = build_backbone(name, 7, chans, size, needs_cam=True, **extra).eval()
    x = torch.randn(2, chans, size, size)
    with torch.no_grad():
        out = model(x)
        theirs = model.model(x)  # timm's own forward: the head we claim to reproduce
    assert out.features.dim() == 4 and min(out.features.shape[-2:]) >= 2, "no spatial map"
    assert out.fc_weight.shape == (7, out.features.shape[1])
    cams = class_activation_maps(out.features, out.fc_weight)  # (B, K, H, W)
    assert cams.shape == (2, 7, *out.features.shape[-2:])
    bias = model.classifier.bias
    torch.testing.assert_close(cams.mean((2, 3)) + bias, out.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.logits, theirs, atol=1e-5, rtol=1e-5)


def test_small_input_stem_changes_the_map_size():
    plain = build_backbone("resnet18", 10, 3, 32, needs_cam=False)
    small = build_backbone("resnet18", 10, 3, 32, needs_cam=False, small_input_stem=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        # ImageNet stem: 32 / 32 = 1x1; CIFAR stem (stride 1, no pool): 32 / 8 = 4x4
        assert plain.eval()(x).features.shape[-2:] == (1, 1)
        assert small.eval()(x).features.shape[-2:] == (4, 4)


def test_head_without_exact_cam_is_refused_only_when_needed():
    with pytest.raises(UserError, match="no exact CAM"):
        build_backbone("mobilenetv3_small_050", 10, 1, 28, needs_cam=True)
    model = build_backbone("mobilenetv3_small_050", 10, 1, 28, needs_cam=False).eval()
    out = model(torch.randn(2, 1, 28, 28))
    assert out.fc_weight is None and out.logits.shape == (2, 10)


def test_unknown_backbone_suggests_a_close_name():
    with pytest.raises(UserError, match=r"unknown backbone 'resnet5'.*resnet50"):
        build_backbone("resnet5", 10, 3, 32, needs_cam=True)


# ----------------------------------------------------------------------------- the 2x2 example
# Features F (B=1, C=2, H=2, W=2) and classifier W (K=2, C=2), small integers:
#   F[c0] = [[1, 0],      F[c1] = [[0, 1],      W[0] = [ 2, 1]
#            [0, 0]]               [2, 0]]      W[1] = [-1, 1]
# CAM_0 = 2*c0 + c1 = [[2, 1], [2, 0]]    CAM_1 = -c0 + c1 = [[-1, 1], [2, 0]]
# CAAM  =   c0 + c1 = [[1, 1], [2, 0]]
FEATURES = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [2.0, 0.0]]]])
WEIGHT = torch.tensor([[2.0, 1.0], [-1.0, 1.0]])


def test_maps_of_the_worked_example():
    cams = class_activation_maps(FEATURES, WEIGHT)[0]
    torch.testing.assert_close(cams[0], torch.tensor([[2.0, 1.0], [2.0, 0.0]]))
    torch.testing.assert_close(cams[1], torch.tensor([[-1.0, 1.0], [2.0, 0.0]]))
    torch.testing.assert_close(class_agnostic_map(FEATURES)[0], torch.tensor([[1.0, 1.0], [2, 0]]))
    # minmax of CAM_1: min -1, range 3 -> [[0, 2/3], [1, 1/3]]
    expected = torch.tensor([[0.0, 2 / 3], [1.0, 1 / 3]])
    torch.testing.assert_close(normalize(cams[1:2], eps=0.0)[0], expected)


@pytest.mark.parametrize(
    "label,expected",
    [
        # N(CAAM)  = [[.5, .5], [1, 0]]  (min 0, max 2)
        # N(CAM_0) = [[1, .5], [1, 0]]   -> |diff| = [[.5, 0], [0, 0]] -> 0.5 / 4 = 0.125
        (0, 0.125),
        # N(CAM_1) = [[0, 2/3], [1, 1/3]] -> |diff| = [[.5, 1/6], [0, 1/3]] -> 1 / 4 = 0.25
        (1, 0.25),
    ],
)
def test_cam_loss_worked_example(label, expected):
    value = cam_loss(FEATURES, WEIGHT, torch.tensor([label]))
    assert value.item() == pytest.approx(expected, abs=1e-5)


def test_cam_loss_mixed_target_worked_example():
    # T = [.5, .5]: M_T = .5*CAM_0 + .5*CAM_1 = [[.5, 1], [2, 0]] -> N = [[.25, .5], [1, 0]]
    # vs N(CAAM) [[.5, .5], [1, 0]] -> |diff| = [[.25, 0], [0, 0]] -> 0.0625. The maps mix,
    # not the losses: the mean of the two per-class losses would be 0.1875.
    value = cam_loss(FEATURES, WEIGHT, torch.tensor([[0.5, 0.5]]))
    assert value.item() == pytest.approx(0.0625, abs=1e-5)


@pytest.mark.parametrize(
    "options,label,expected",
    [
        # norm=none: |CAAM - CAM_0| = [[1, 0], [0, 0]] -> 0.25 (vs 0.125 with minmax)
        ({"norm": "none"}, 0, 0.25),
        # norm=max clips negatives (never inverts): CAM_1+ / 2 = [[0, .5], [1, 0]],
        # CAAM / 2 = [[.5, .5], [1, 0]] -> .5 / 4
        ({"norm": "max"}, 1, 0.125),
        # norm=max, class 0: CAM_0 / 2 = [[1, .5], [1, 0]] -> same as minmax here: 0.125
        ({"norm": "max"}, 0, 0.125),
        # l2, class 0: .5^2 / 4 = 0.0625 (smaller than l1's 0.125: all |d| < 1)
        ({"distance": "l2"}, 0, 0.0625),
        # l2, class 1: (.25 + 1/36 + 1/9) / 4 = (14/36) / 4 = 7/72
        ({"distance": "l2"}, 1, 7 / 72),
        # smooth_l1 (beta 1): .5 * .5^2 / 4 = 0.03125
        ({"distance": "smooth_l1"}, 0, 0.03125),
        # relu, class 1: relu(CAM_1) = [[0, 1], [2, 0]] -> N = [[0, .5], [1, 0]] -> .5 / 4
        ({"relu": True}, 1, 0.125),
        # relu, class 0: both maps are >= 0 already -> unchanged 0.125
        ({"relu": True}, 0, 0.125),
    ],
)
def test_cam_loss_options_worked_example(options, label, expected):
    value = cam_loss(FEATURES, WEIGHT, torch.tensor([label]), **options)
    assert value.item() == pytest.approx(expected, abs=1e-5)


def test_max_normalisation_never_inverts_a_negative_map():
    # dividing [-3, -1] by its max (-1) would give [3, 1]: the order of the map flipped
    got = normalize(torch.tensor([[[-3.0, -1.0]]]), "max")
    assert torch.equal(got, torch.zeros(1, 1, 2))
    mixed = normalize(torch.tensor([[[-2.0, 1.0, 4.0]]]), "max", eps=0.0)
    torch.testing.assert_close(mixed, torch.tensor([[[0.0, 0.25, 1.0]]]))


@pytest.mark.parametrize("term", ["cam", "ccm"])
def test_norm_max_without_relu_is_refused_at_build_time(term):
    from camexp.errors import UserError
    from camexp.losses import CAMLoss, CCMLoss

    cls = CAMLoss if term == "cam" else CCMLoss
    with pytest.raises(UserError, match=rf"loss.{term}.norm=minmax or loss.{term}.relu=true"):
        cls(norm="max")
    assert cls(norm="max", relu=True).options["norm"] == "max"


def test_cam_loss_target_option_worked_example():
    soft = torch.tensor([[0.3, 0.7]])
    # soft: M_T = .3*CAM_0 + .7*CAM_1 = [[-.1, 1], [2, 0]]; min -.1, range 2.1
    #   N = [[0, 1.1/2.1], [1, .1/2.1]]; |diff| vs [[.5, .5], [1, 0]]:
    #   .5 + (1.1/2.1 - .5) + 0 + .1/2.1 = .5 + .15/2.1 = 4/7 -> mean 1/7
    assert cam_loss(FEATURES, WEIGHT, soft).item() == pytest.approx(1 / 7, abs=1e-5)
    # hard: the arg-max class 1 -> 0.25
    assert cam_loss(FEATURES, WEIGHT, soft, target="hard").item() == pytest.approx(0.25, abs=1e-5)


# ----------------------------------------------------------------------------- targets
def random_case(b=4, c=6, k=5, hw=(3, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(b, c, *hw, generator=g)
    weight = torch.randn(k, c, generator=g)
    labels = torch.randint(0, k, (b,), generator=g)
    return features, weight, labels


def reference_cam_loss(features, weight, target_map):
    """A second, loop-by-loop implementation of L1 between minmax-normalised CAAM and M_T."""
    total, count = 0.0, 0
    for b in range(features.shape[0]):
        caam = features[b].sum(0)
        cam = target_map[b]
        caam = (caam - caam.min()) / (caam.max() - caam.min() + 1e-6)
        cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-6)
        total += (caam - cam).abs().sum().item()
        count += caam.numel()
    return total / count


def test_soft_one_hot_targets_equal_int_labels():
    features, weight, labels = random_case()
    one_hot = F.one_hot(labels, weight.shape[0]).float()
    hard = cam_loss(features, weight, labels)
    soft = cam_loss(features, weight, one_hot)
    torch.testing.assert_close(soft, hard)
    # and both match the reference with M_y = sum_c W[y, c] F[:, c], written out
    maps = torch.stack(
        [(weight[y][:, None, None] * features[b]).sum(0) for b, y in enumerate(labels)]
    )
    assert hard.item() == pytest.approx(reference_cam_loss(features, weight, maps), abs=1e-5)


def test_mixed_targets_give_the_lambda_weighted_cam():
    features, weight, labels = random_case(seed=1)
    partner = labels.flip(0)
    lam = 0.3
    k = weight.shape[0]
    targets = lam * F.one_hot(labels, k).float() + (1 - lam) * F.one_hot(partner, k).float()
    mixed = []
    for b in range(features.shape[0]):
        cam_a = (weight[labels[b]][:, None, None] * features[b]).sum(0)
        cam_b = (weight[partner[b]][:, None, None] * features[b]).sum(0)
        mixed.append(lam * cam_a + (1 - lam) * cam_b)
    mixed = torch.stack(mixed)
    torch.testing.assert_close(target_cam(features, weight, targets), mixed, atol=1e-5, rtol=1e-5)
    value = cam_loss(features, weight, targets).item()
    assert value == pytest.approx(reference_cam_loss(features, weight, mixed), abs=1e-5)


# ----------------------------------------------------------------------------- gradients
def test_detach_classifier_routes_gradients():
    features, weight, labels = random_case(seed=2)
    for detach, weight_gets_grad in ((True, False), (False, True)):
        f = features.clone().requires_grad_()
        w = weight.clone().requires_grad_()
        cam_loss(f, w, labels, detach_classifier=detach).backward()
        assert f.grad is not None and f.grad.abs().sum() > 0
        got = w.grad is not None and bool(w.grad.abs().sum() > 0)
        assert got == weight_gets_grad


def test_detach_cam_leaves_only_the_caam_path():
    """A = sum_c F_c, so through the CAAM alone dL/dF_c is the same map for every channel c;
    the CAM path adds W_T[c] * dL/dM_T, which differs per channel."""
    features, weight, labels = random_case(seed=3)
    grads = {}
    for detach_cam in (True, False):
        f = features.clone().requires_grad_()
        cam_loss(f, weight, labels, detach_cam=detach_cam).backward()
        grads[detach_cam] = f.grad
    only_caam = grads[True]
    assert only_caam.abs().sum() > 0
    torch.testing.assert_close(only_caam, only_caam[:, :1].expand_as(only_caam))
    both = grads[False]
    assert not torch.allclose(both, both[:, :1].expand_as(both), atol=1e-6)
    # detach_cam=True equals the loss with the CAM computed from a detached copy of F
    f = features.clone().requires_grad_()
    fixed = normalize(target_cam(f.detach(), weight, labels))
    (normalize(f.sum(1)) - fixed).abs().mean().backward()
    torch.testing.assert_close(only_caam, f.grad)


@pytest.mark.parametrize("key", ["norm", "distance", "target"])
def test_invalid_options_are_user_errors(key):
    with pytest.raises(UserError, match=f"loss.cam.{key}='bogus'"):
        CAMLoss(**{key: "bogus"})


# ----------------------------------------------------------------------------- objective
def head_output(features, weight, bias):
    """An Output whose logits come from features through GAP + linear, as in the backbone."""
    logits = F.linear(features.mean((2, 3)), weight, bias)
    return Output(logits, features, weight)


def test_objective_total_is_the_weighted_sum_of_named_parts():
    features, weight, labels = random_case(seed=4)
    targets = F.one_hot(labels, weight.shape[0]).float()
    out = head_output(features, weight, torch.zeros(weight.shape[0]))
    objective = Objective({"ce": CrossEntropy(weight=1.0), "cam": CAMLoss(weight=0.5)})
    total, parts = objective(out, None, targets)
    assert set(parts) == {"ce", "cam"}
    ce = F.cross_entropy(out.logits, labels)
    cam = torch.tensor(reference_cam_loss(features, weight, target_cam(features, weight, labels)))
    torch.testing.assert_close(parts["ce"], ce)
    torch.testing.assert_close(parts["cam"], cam, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(total, ce + 0.5 * cam, atol=1e-5, rtol=1e-5)


def test_weight_zero_term_is_logged_without_gradient():
    features, weight, labels = random_case(seed=5)
    targets = F.one_hot(labels, weight.shape[0]).float()
    bias = torch.zeros(weight.shape[0])

    def grad_of(terms):
        f = features.clone().requires_grad_()
        total, parts = Objective(terms)(head_output(f, weight, bias), None, targets)
        total.backward()
        return f.grad, parts

    ce_only, _ = grad_of({"ce": CrossEntropy()})
    with_zero, parts = grad_of({"ce": CrossEntropy(), "cam": CAMLoss(weight=0.0)})
    with_one, _ = grad_of({"ce": CrossEntropy(), "cam": CAMLoss(weight=1.0)})
    assert parts["cam"].item() > 0  # measured and logged for the baseline too
    torch.testing.assert_close(with_zero, ce_only)
    assert not torch.allclose(with_one, ce_only)
    total, parts = Objective({"cam": CAMLoss(weight=0.0)})(
        head_output(features.clone().requires_grad_(), weight, bias), None, targets
    )
    assert total.item() == 0.0 and not total.requires_grad and parts["cam"].item() > 0


def test_warmup_epochs_hold_the_weight_at_zero():
    features, weight, labels = random_case(seed=6)
    targets = F.one_hot(labels, weight.shape[0]).float()
    out = head_output(features, weight, torch.zeros(weight.shape[0]))
    objective = Objective({"ce": CrossEntropy(), "cam": CAMLoss(weight=2.0, warmup_epochs=2)})
    ce = F.cross_entropy(out.logits, labels)
    for epoch, alpha in ((0, 0.0), (1, 0.0), (2, 2.0), (5, 2.0)):
        objective.set_epoch(epoch)
        assert objective.weight_of("cam") == alpha
        total, parts = objective(out, None, targets)
        torch.testing.assert_close(total, ce + alpha * parts["cam"])


def test_negative_weight_is_refused():
    spec = {"_target_": "camexp.losses.CAMLoss", "weight": -1.0}
    with pytest.raises(UserError, match=r"loss.cam.weight must be >= 0"):
        build_objective({"cam": spec}, instantiate)
    objective = build_objective({"cam": {**spec, "weight": 0.5}}, instantiate)
    assert objective.needs_cam and objective.weight_of("cam") == 0.5


def test_empty_objective_is_refused():
    with pytest.raises(UserError, match="no terms"):
        build_objective({}, instantiate)


# ----------------------------------------------------------------------------- cross-entropy
def test_soft_cross_entropy_equals_cross_entropy():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(6, 4, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 3, 1])
    one_hot = F.one_hot(labels, 4).float()
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot), F.cross_entropy(logits, labels))
    torch.testing.assert_close(soft_cross_entropy(logits, labels), F.cross_entropy(logits, labels))
    # a soft row by hand: -sum_k T_k log softmax(z)_k
    t = torch.tensor([[0.25, 0.75, 0.0, 0.0]])
    z = torch.tensor([[1.0, 2.0, 0.0, -1.0]])
    log_z = math.log(math.e + math.e**2 + 1 + math.e**-1)
    by_hand = -(0.25 * (1 - log_z) + 0.75 * (2 - log_z))
    assert soft_cross_entropy(z, t).item() == pytest.approx(by_hand, rel=1e-6)
