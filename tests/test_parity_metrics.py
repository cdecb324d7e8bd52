"""Parity of the CAM metrics with their references (docs/protocols.md, one test per row).

Expected numbers come from implementations written here by following the reference code's steps:
MaxBoxAccV2 and top-1 loc from clovaai/wsolevaluation (evaluation.py: ``resize_bbox``,
``compute_bboxes_from_scoremaps`` with multi_contour_eval, ``calculate_multiple_iou``,
``BoxEvaluator``; inference.py: ``normalize_scoremap``), Deletion / Insertion from eclique/RISE
(evaluation.py: ``gkern``, ``CausalMetric.single_run``, ``auc``), Average Drop / Increase in
Confidence from the Grad-CAM++ paper's equations (§5.1). OpenCV is not installed, so contours are
replaced by scipy's 8-connected labelling on maps without holes (camexp.metrics.boxes documents
the hole-contour difference).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from camexp.data.boxes import folder_test_boxes
from camexp.data.folder import box_transform
from camexp.metrics import CamQuality
from camexp.metrics.faithfulness import deletion_insertion
from camexp.metrics.localization import ious_over_thresholds, max_box_acc, scoremaps
from camexp.models.backbone import build_backbone


# ----------------------------------------------------------------------------- wsolevaluation
def wsol_resize_bbox(box, image_size, resize_size):
    x0, y0, x1, y1 = map(float, box)
    w, h = map(float, image_size)
    nw, nh = map(float, resize_size)
    return int(x0 * nw / w), int(y0 * nh / h), int(x1 * nw / w), int(y1 * nh / h)


def wsol_boxes_at(scoremap, threshold):
    """compute_bboxes_from_scoremaps' scoremap2bbox with multi_contour_eval=True."""
    height, width = scoremap.shape
    image = (scoremap * 255).astype(np.uint8)
    binary = image > int(threshold * np.max(image))  # cv2.THRESH_BINARY
    labels, count = ndimage.label(binary, structure=np.ones((3, 3)))
    if count == 0:
        return np.asarray([[0, 0, 0, 0]])
    boxes = []
    for rows, cols in ndimage.find_objects(labels):  # cv2.boundingRect of each contour
        x, y, w, h = cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start
        boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return np.asarray(boxes)


def wsol_iou(box_a, box_b):
    """calculate_multiple_iou for one box against many."""
    ious = []
    for b in box_b:
        iw = max(0, min(box_a[2], b[2]) - max(box_a[0], b[0]) + 1)
        ih = max(0, min(box_a[3], b[3]) - max(box_a[1], b[1]) + 1)
        inter = iw * ih
        union = (
            (box_a[2] - box_a[0] + 1) * (box_a[3] - box_a[1] + 1)
            + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
            - inter
        )
        ious.append(inter / union if union > 0 else 0.0)
    return max(ious)


def wsol_best_ious(scoremap, gts, thresholds):
    """BoxEvaluator.accumulate's sliced_multiple_iou: the best IoU at each CAM threshold."""
    return np.array([max(wsol_iou(b, gts) for b in wsol_boxes_at(scoremap, t)) for t in thresholds])


def wsol_max_box_acc_v2(scoremaps_, gt_boxes, correct, interval=0.01, iou_thresholds=(30, 50, 70)):
    thresholds = np.arange(0, 1, interval)
    num_correct = {t: np.zeros(len(thresholds)) for t in iou_thresholds}
    loc_hits = np.zeros(len(thresholds))
    for scoremap, gts, ok in zip(scoremaps_, gt_boxes, correct, strict=True):
        best = wsol_best_ious(scoremap, gts, thresholds)
        for t in iou_thresholds:
            num_correct[t][best >= t / 100] += 1
        if ok:
            loc_hits += best >= 0.5
    n = len(scoremaps_)
    accs = {t: num_correct[t] * 100.0 / n for t in iou_thresholds}
    at50 = int(accs[50].argmax())
    return {
        "v2": float(np.mean([a.max() for a in accs.values()])),
        **{t: float(a.max()) for t, a in accs.items()},
        "top1_loc": float(loc_hits[at50] * 100.0 / n),
    }


def blob_maps(seed=0, n=6, size=40):
    """Smooth random maps in [0, 1] (sums of Gaussian bumps: no holes), each with a box around
    its first bump, jittered, and one random box."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    maps, boxes = [], []
    for _ in range(n):
        m = np.zeros((size, size))
        centres = rng.uniform(8, size - 8, (3, 2))
        for cy, cx in centres:
            width = rng.uniform(8, 40)
            m += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / width)
        maps.append((m - m.min()) / (m.max() - m.min()))
        cy, cx = centres[0]
        r = rng.integers(3, 7, 4)
        near = [cx - r[0], cy - r[1], cx + r[2], cy + r[3]]
        x0, y0 = rng.integers(0, size // 2, 2)
        far = [x0, y0, x0 + rng.integers(6, size // 2), y0 + rng.integers(6, size // 2)]
        boxes.append(np.array([near, far]).clip(0, size - 1).astype(np.int64))
    return np.stack(maps), boxes


def test_best_iou_per_threshold_matches_wsolevaluation():
    maps, boxes = blob_maps(seed=1)
    thresholds = np.arange(0, 1, 0.01)
    for scoremap, gts in zip(maps, boxes, strict=True):
        expected = wsol_best_ious(scoremap, gts, thresholds)
        np.testing.assert_allclose(ious_over_thresholds(scoremap, gts, thresholds), expected)


def test_max_box_acc_v2_matches_wsolevaluation():
    maps, boxes = blob_maps()
    correct = np.array([True, False, True, True, False, True])
    expected = wsol_max_box_acc_v2(maps, boxes, correct)
    got = max_box_acc(maps, boxes, correct, cam_curve_interval=0.01)  # default: wsol boxes
    assert got["maxboxacc_v2"] == pytest.approx(expected["v2"])
    for t in (30, 50, 70):
        assert got[f"maxboxacc_iou{t}"] == pytest.approx(expected[t])
    assert got["top1_loc"] == pytest.approx(expected["top1_loc"])


def test_normalize_scoremap_as_wsolevaluation():
    # inference.py normalize_scoremap: (cam - min) / max after the shift; constant -> zeros
    cams = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[2.0, 2.0], [2.0, 2.0]]])
    got = scoremaps(cams, (2, 2))  # same size: the bicubic resize is the identity
    torch.testing.assert_close(got[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.all(got[1] == 0)


def test_folder_geometry_is_wsolevaluation_resize_without_crop(tmp_path):
    from camexp.data.fine_grained import ImageList

    # a 500x333 image with a CUB box (x, y, w, h) = (40, 100, 420, 200): wsolevaluation's
    # metadata holds (x, y, x + w, y + h), resized to 224x224 with int()
    path = tmp_path / "bird.png"
    Image.new("RGB", (500, 333), (200, 10, 10)).save(path)
    cub = ImageList([str(path)], [0], ["bird"], boxes=np.array([[40.0, 100.0, 420.0, 200.0]]))
    expected = wsol_resize_bbox((40, 100, 460, 300), (500, 333), (224, 224))
    assert folder_test_boxes(cub, 224)[0].tolist() == [list(expected)]
    cub.transform = box_transform(224, (0.5,) * 3, (0.5,) * 3)
    image, _ = cub[0]
    assert tuple(image.shape) == (3, 224, 224)  # the whole image, no crop
    red = (200 / 255 - 0.5) / 0.5
    assert image[0].min().item() == pytest.approx(red, abs=1e-6)  # no border padding either


# ----------------------------------------------------------------------------- RISE
def rise_gkern(klen, nsig):
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = ndimage.gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    for i in range(3):
        kern[i, i] = k
    return torch.from_numpy(kern.astype("float32"))


def rise_single_run(softmax_model, img, explanation, mode, step, klen=11, nsig=5):
    """CausalMetric.single_run (verbose 0) for one normalised image (1, 3, H, W)."""
    hw = img.shape[-1] * img.shape[-2]
    pred = softmax_model(img)
    c = int(pred.argmax(1)[0])
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start, finish = img.clone(), torch.zeros_like(img)
    else:
        start = F.conv2d(img, rise_gkern(klen, nsig), padding=klen // 2)
        finish = img.clone()
    scores = np.empty(n_steps + 1)
    salient_order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1), axis=-1)
    for i in range(n_steps + 1):
        scores[i] = softmax_model(start)[0, c].item()
        coords = salient_order[:, step * i : step * (i + 1)]
        flat_start, flat_finish = start.numpy().reshape(1, 3, hw), finish.numpy().reshape(1, 3, hw)
        flat_start[0, :, coords] = flat_finish[0, :, coords]
    return scores


def rise_auc(arr):
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_backbone("resnet20", 5, 3, 16, needs_cam=True).eval()
    images = torch.randn(3, 3, 16, 16)
    return model, images


def softmax_of(model):
    return lambda x: model(x).logits.softmax(1)


@pytest.mark.parametrize("step", [16, 40])
def test_deletion_insertion_match_rise(tiny, step):
    model, images = tiny
    rng = np.random.default_rng(step)
    maps = torch.from_numpy(rng.permutation(256).reshape(1, 16, 16).repeat(3, 0) / 255.0).float()
    maps = maps + torch.arange(3).view(3, 1, 1) * 0  # distinct values: no ties to break
    with torch.no_grad():
        top = model(images).logits.argmax(1)
        got = deletion_insertion(model, images, top, maps, (0.5,) * 3, (0.25,) * 3, step=step)
        for i in range(3):
            expl = maps[i].numpy()
            dele = rise_single_run(softmax_of(model), images[i : i + 1].clone(), expl, "del", step)
            ins = rise_single_run(softmax_of(model), images[i : i + 1].clone(), expl, "ins", step)
            np.testing.assert_allclose(got["deletion_curve"][i].numpy(), dele, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(got["insertion_curve"][i].numpy(), ins, rtol=1e-4, atol=1e-6)
            assert got["deletion_auc"][i].item() == pytest.approx(rise_auc(dele), rel=1e-4)
            assert got["insertion_auc"][i].item() == pytest.approx(rise_auc(ins), rel=1e-4)


# ----------------------------------------------------------------------------- CamQuality
class Loader:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __iter__(self):
        yield self.images, self.labels


def reference_cam_maps(model, images, classes):
    """CAM of ``classes`` by a 1x1 convolution with the fc weight, bicubic to the image, min-max."""
    out = model(images)
    w = out.fc_weight[classes]  # (B, C)
    cams = (out.features * w[:, :, None, None]).sum(1, keepdim=True)
    up = F.interpolate(cams, size=images.shape[-2:], mode="bicubic", align_corners=False)[:, 0]
    lo = up.flatten(1).min(1).values.view(-1, 1, 1)
    hi = up.flatten(1).max(1).values.view(-1, 1, 1)
    return (up - lo) / (hi - lo)


def test_cam_quality_faithfulness_follows_rise_and_grad_cam_plus_plus(tiny):
    model, images = tiny
    labels = torch.tensor([0, 1, 2])
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    data = type("D", (), {"test": Loader(images, labels), "mean": mean, "std": std,
                          "test_boxes": None})()  # fmt: skip
    got = CamQuality(localization=False, images=3)(model, data, torch.device("cpu"))
    with torch.no_grad():
        probs = model(images).logits.softmax(1)
        top = probs.argmax(1)  # the explained and scored class: the top prediction (RISE)
        maps = reference_cam_maps(model, images, top)
        m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        explained = ((images * s + m) * maps[:, None] - m) / s  # E = x * s in pixel units
        y = probs[torch.arange(3), top]
        o = model(explained).logits.softmax(1)[torch.arange(3), top]
        drop = 100 * ((y - o).clamp_min(0) / y).mean().item()
        increase = 100 * (y < o).float().mean().item()
        dele, ins = [], []
        for i in range(3):
            one, expl = images[i : i + 1], maps[i].numpy()
            dele.append(rise_auc(rise_single_run(softmax_of(model), one.clone(), expl, "del", 16)))
            ins.append(rise_auc(rise_single_run(softmax_of(model), one.clone(), expl, "ins", 16)))
    assert got["test/avg_drop"] == pytest.approx(drop, rel=1e-4, abs=1e-6)
    assert got["test/increase_conf"] == pytest.approx(increase)
    assert got["test/deletion_auc"] == pytest.approx(np.mean(dele), rel=1e-4)
    assert got["test/insertion_auc"] == pytest.approx(np.mean(ins), rel=1e-4)
