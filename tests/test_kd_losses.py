"""The distillation terms (kd, ccm, at, catkd) against hand-worked examples, the teacher-less
error, and the convergence-epoch function."""

import math

import pytest
import torch

from camexp.errors import UserError
from camexp.losses import (
    ATLoss,
    CATKDLoss,
    CCMLoss,
    KDLoss,
    Objective,
    at_loss,
    caam_cam_matching_loss,
    cat_kd_loss,
    kd_loss,
    stage_at_loss,
)
from camexp.metrics.convergence import convergence_epochs
from camexp.models.backbone import Output
from camexp.models.teacher import check_teacher_terms


# ----------------------------------------------------------------------------- kd
def test_kd_of_identical_logits_is_zero_and_otherwise_positive():
    torch.manual_seed(0)
    z = torch.randn(5, 7)
    assert kd_loss(z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    for _ in range(5):
        assert kd_loss(torch.randn(5, 7), torch.randn(5, 7), 2.0).item() > 0


def test_kd_hand_worked_2x3():
    # Row 1: z_s/T = (0, 0, 0) -> p_s = 1/3 each; z_t/T = (ln 2, 0, 0) -> p_t = (1/2, 1/4, 1/4).
    # KL = 1/2 ln(3/2) + 2 * 1/4 ln(3/4). Row 2: identical logits -> 0. Mean over 2 rows, x T^2.
    T = 2.0
    student = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    teacher = torch.tensor([[2 * math.log(2), 0.0, 0.0], [1.0, 2.0, 3.0]])
    kl_row1 = 0.5 * math.log(1.5) + 0.5 * math.log(0.75)
    assert kd_loss(student, teacher, T).item() == pytest.approx(T**2 * kl_row1 / 2, rel=1e-5)


# ----------------------------------------------------------------------------- ccm
def ccm_inputs():
    # student CAAM = channel sum = [[1, 1], [0, 0]]; teacher features [[0, 1], [2, 3]] (C=1)
    student = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]]])
    teacher = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    weight = torch.tensor([[1.0], [-1.0]])  # K=2 classes: CAM_0 = F, CAM_1 = -F
    return student, teacher, weight


def test_ccm_hand_worked_labels_and_soft_targets():
    student, teacher, weight = ccm_inputs()
    # class 0: N(CAM) = [[0, 1/3], [2/3, 1]] vs N(CAAM) = [[1, 1], [0, 0]] -> (1+2/3+2/3+1)/4
    got = caam_cam_matching_loss(student, teacher, weight, torch.tensor([0]), eps=0.0)
    assert got.item() == pytest.approx(5 / 6, rel=1e-6)
    # class 1: N(-F) = [[1, 2/3], [1/3, 0]] -> (0 + 1/3 + 1/3 + 0)/4
    got = caam_cam_matching_loss(student, teacher, weight, torch.tensor([1]), eps=0.0)
    assert got.item() == pytest.approx(1 / 6, rel=1e-6)
    # soft (1/2, 1/2): the mixed CAM is 0 everywhere, N(0) = 0 -> (1 + 1 + 0 + 0)/4
    got = caam_cam_matching_loss(student, teacher, weight, torch.tensor([[0.5, 0.5]]))
    assert got.item() == pytest.approx(0.5, rel=1e-5)
    # hard target of the soft row (0.3, 0.7) is class 1
    got = caam_cam_matching_loss(
        student, teacher, weight, torch.tensor([[0.3, 0.7]]), target="hard", eps=0.0
    )
    assert got.item() == pytest.approx(1 / 6, rel=1e-6)


def test_ccm_resizes_the_teacher_map_bilinearly():
    # Teacher CAM [[0, 1], [2, 3]] = 2 r + c upsampled to 4x4 (align_corners=False): along each
    # axis (a, b) -> (a, 3a/4 + b/4, a/4 + 3b/4, b), so r, c in (0, 1/4, 3/4, 1) and
    # M = 2 r_i + c_j, N(M) = M / 3. The student's CAAM is 0, N(0) = 0. With l2:
    # mean(M^2)/9 = (4 mean r^2 + 4 mean r mean c + mean c^2)/9 = (5 * 13/32 + 1)/9 = 97/288.
    _, teacher, weight = ccm_inputs()
    student = torch.zeros(1, 3, 4, 4)
    got = caam_cam_matching_loss(student, teacher, weight, torch.tensor([0]), distance="l2")
    assert got.item() == pytest.approx(97 / 288, rel=1e-5)


def test_ccm_gradient_reaches_the_student_only():
    student, teacher, weight = ccm_inputs()
    student = (student + 0.1 * torch.rand_like(student)).requires_grad_()
    teacher, weight = teacher.requires_grad_(), weight.requires_grad_()
    caam_cam_matching_loss(student, teacher, weight, torch.tensor([0])).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None and weight.grad is None


# ----------------------------------------------------------------------------- at
def test_at_hand_worked_with_and_without_pooling():
    # student attention mean_c F^2 = (2, 0) -> (1, 0); teacher (1, 1) -> (1, 1)/sqrt 2.
    # mean of squared differences = ((1 - 1/sqrt2)^2 + 1/2) / 2 = (2 - sqrt 2) / 2
    student = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # mean_c F^2 = (4 + 0)/2 = 2
    teacher = torch.ones(1, 1, 1, 2)
    expected = (2 - math.sqrt(2)) / 2
    assert stage_at_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    bigger = torch.ones(1, 4, 2, 4)  # pooled to 1x2 -> still uniform
    assert stage_at_loss(student, bigger).item() == pytest.approx(expected, rel=1e-6)
    assert stage_at_loss(bigger, bigger).item() == pytest.approx(0.0, abs=1e-9)
    # three stages: the sum of the per-stage terms (two equal terms + a zero one)
    stages = at_loss([student, student, bigger], [teacher, bigger, bigger])
    assert stages.item() == pytest.approx(2 * expected, rel=1e-6)


# ----------------------------------------------------------------------------- catkd
def test_catkd_hand_worked():
    # one class; student CAM [[1, 2], [3, 4]] (already 2x2); teacher CAM 4x4 with a top-left
    # block of 1s (times weight 2) -> pooled [[2, 0], [0, 0]].
    student = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    w_s = torch.tensor([[1.0]])
    teacher = torch.zeros(1, 1, 4, 4)
    teacher[..., :2, :2] = 1.0
    w_t = torch.tensor([[2.0]])
    # normalised: s = (1, 2, 3, 4)/sqrt 30, t = (1, 0, 0, 0): mean sq = (1 - 1/sqrt 30)/2
    got = cat_kd_loss(student, w_s, teacher, w_t, grid=2, normalize=True)
    assert got.item() == pytest.approx((1 - 1 / math.sqrt(30)) / 2, rel=1e-6)
    # raw: ((1-2)^2 + 4 + 9 + 16)/4
    got = cat_kd_loss(student, w_s, teacher, w_t, grid=2, normalize=False)
    assert got.item() == pytest.approx(7.5, rel=1e-6)


def test_catkd_pooling_equals_pooled_full_cams():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(2, 3, 6, 6), torch.randn(2, 5, 4, 4)
    w_s, w_t = torch.randn(4, 3), torch.randn(4, 5)
    cams_s = torch.nn.functional.adaptive_avg_pool2d(torch.einsum("bchw,kc->bkhw", f_s, w_s), 2)
    cams_t = torch.nn.functional.adaptive_avg_pool2d(torch.einsum("bchw,kc->bkhw", f_t, w_t), 2)
    expected = ((cams_s - cams_t) ** 2).mean()
    got = cat_kd_loss(f_s, w_s, f_t, w_t, grid=2, normalize=False)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


# ----------------------------------------------------------------------------- terms
def outputs(batch=2, classes=3):
    torch.manual_seed(1)
    f_s, f_t = torch.rand(batch, 4, 3, 3), torch.rand(batch, 6, 2, 2)
    s_stages = (torch.rand(batch, 2, 6, 6), f_s)
    t_stages = (torch.rand(batch, 3, 4, 4), f_t)
    s = Output(torch.randn(batch, classes), f_s, torch.randn(classes, 4), s_stages)
    t = Output(torch.randn(batch, classes), f_t, torch.randn(classes, 6), t_stages)
    return s, t


@pytest.mark.parametrize("term", [KDLoss(), CCMLoss(), ATLoss(), CATKDLoss()])
def test_every_kd_term_needs_a_teacher(term):
    student, teacher = outputs()
    targets = torch.eye(3)[[0, 2]]
    assert term.needs_teacher
    assert torch.isfinite(term(student, teacher, targets))
    with pytest.raises(UserError, match="needs a teacher"):
        term(student, None, targets)
    objective = Objective({"t": term})
    with pytest.raises(UserError, match="need a teacher"):
        check_teacher_terms(objective, has_teacher=False)
    check_teacher_terms(objective, has_teacher=True)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="loss.ccm.norm"):
        CCMLoss(norm="zscore")
    with pytest.raises(UserError, match="temperature"):
        KDLoss(temperature=0)
    with pytest.raises(UserError, match="grid"):
        CATKDLoss(grid=0)
    with pytest.raises(UserError, match="stages"):
        ATLoss(stages="first")


def test_at_without_stage_outputs_says_what_to_use():
    student, teacher = outputs()
    bare_s, bare_t = student._replace(stages=()), teacher._replace(stages=())
    with pytest.raises(UserError, match="loss.at.stages=last"):
        ATLoss()(bare_s, bare_t, torch.eye(3)[[0, 2]])
    last = ATLoss(stages="last")(bare_s, bare_t, torch.eye(3)[[0, 2]])
    assert last.item() == pytest.approx(stage_at_loss(student.features, teacher.features).item())


def test_catkd_grid_larger_than_the_map_stops_with_one_line():
    student, teacher = outputs()  # teacher map 2x2
    with pytest.raises(UserError, match=r"grid=3 is larger than a 2x2 feature map.*grid <= 2"):
        CATKDLoss(grid=3)(student, teacher, torch.eye(3)[[0, 2]])


# ----------------------------------------------------------------------------- convergence
def test_convergence_epochs():
    accs = [50.0, 80.0, 88.0, 91.0, 90.0]  # final 90: thresholds 81, 85.5, 89.1
    assert convergence_epochs(accs) == {
        "converge/epoch_90pct": 3,
        "converge/epoch_95pct": 3,
        "converge/epoch_99pct": 4,
    }
    assert convergence_epochs([70.0]) == {
        "converge/epoch_90pct": 1,
        "converge/epoch_95pct": 1,
        "converge/epoch_99pct": 1,
    }
    assert convergence_epochs([]) == {}
    assert convergence_epochs([10.0, float("nan")])["converge/epoch_99pct"] is None
