"""CAM quality metrics: boxes, MaxBoxAccV2 on maps with known answers, faithfulness by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from camexp.data.boxes import read_cub_boxes, read_imagenet_val_boxes, resize_box
from camexp.metrics.boxes import box_iou, component_boxes, stacked_component_boxes
from camexp.metrics.faithfulness import (
    deletion_insertion,
    drop_and_increase,
    gaussian_blur,
    trapezoid_auc,
)
from camexp.metrics.localization import ious_over_thresholds, max_box_acc, scoremaps
from camexp.models.backbone import Output

# ----------------------------------------------------------------------------- boxes


def test_component_boxes_two_blobs_and_diagonal():
    mask = np.zeros((10, 12), dtype=bool)
    mask[1:4, 2:5] = True  # x 2..4, y 1..3
    mask[6, 8] = mask[7, 9] = True  # diagonal neighbours: one 8-connected component
    boxes = sorted(map(tuple, component_boxes(mask)))
    assert boxes == [(2, 1, 4, 3), (8, 6, 9, 7)]
    assert component_boxes(np.zeros((4, 4), bool)).shape == (0, 4)


def test_stacked_boxes_do_not_connect_planes():
    masks = np.zeros((3, 6, 6), dtype=bool)
    masks[0, 0:2, 0:2] = True
    masks[1, 0:2, 0:2] = True  # same place, next plane: a separate component
    masks[2, 5, 5] = True
    boxes, planes = stacked_component_boxes(masks)
    got = sorted(zip(planes.tolist(), map(tuple, boxes.tolist()), strict=True))
    assert got == [(0, (0, 0, 1, 1)), (1, (0, 0, 1, 1)), (2, (5, 5, 5, 5))]


def test_box_iou_inclusive_convention():
    a = np.array([[0, 0, 9, 9]])  # 100 pixels
    b = np.array([[5, 0, 14, 9], [0, 0, 9, 9], [20, 20, 21, 21]])  # overlap 50 / union 150
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 1.0, 0.0]])
    assert box_iou(np.array([[3, 3, 3, 3]]), np.array([[3, 3, 3, 3]]))[0, 0] == 1.0


# ----------------------------------------------------------------------------- MaxBoxAccV2


def square_map(size: int, box) -> np.ndarray:
    m = np.zeros((size, size))
    x0, y0, x1, y1 = box
    m[y0 : y1 + 1, x0 : x1 + 1] = 1.0
    return m


BOX = (10, 12, 29, 35)


def test_perfect_map_scores_100():
    maps = np.stack([square_map(48, BOX)] * 3)
    out = max_box_acc(maps, [np.array([BOX])] * 3, correct=np.array([True, True, False]))
    assert out["maxboxacc_v2"] == 100.0
    assert out["maxboxacc_iou70"] == 100.0
    assert out["top1_loc"] == pytest.approx(200 / 3)  # third image is misclassified


def test_empty_map_scores_0_and_an_inverted_map_boxes_its_hole():
    gt = [np.array([BOX])]
    empty = max_box_acc(np.zeros((1, 48, 48)), gt)
    assert empty["maxboxacc_v2"] == 0.0
    inverted = max_box_acc(1.0 - square_map(48, BOX)[None], gt)
    # the inverted map's boxes: the whole image (IoU 20*24/48^2 = 0.208) and, as OpenCV's
    # RETR_TREE in wsolevaluation, its hole's inner border: one pixel around BOX, one more with
    # x + w: 23 x 27, IoU 480/621 = 0.77 >= 0.7 (issue 24)
    assert inverted["maxboxacc_v2"] == 100.0
    assert inverted["box_cam_threshold"] == 0.0


def test_iou_thresholds_behave():
    # a predicted box twice as wide as the object: IoU exactly 0.5
    gt = np.array([[10, 10, 19, 19]])
    pred = square_map(40, (10, 10, 29, 19))[None]
    out = max_box_acc(pred, [gt], box_convention="tight")
    assert (out["maxboxacc_iou30"], out["maxboxacc_iou50"], out["maxboxacc_iou70"]) == (
        100.0,
        100.0,
        0.0,
    )
    assert out["maxboxacc_v2"] == pytest.approx(200 / 3)
    only50 = max_box_acc(pred, [gt], iou_thresholds=(50,), box_convention="tight")
    assert only50["maxboxacc_v2"] == 100.0


def test_all_contours_count_not_just_the_largest():
    # the object (100 px, value 1) and a larger, weaker distractor (400 px, value 0.3). Below
    # threshold 0.3 both are components; the largest-contour rule (MaxBoxAcc v1) would box the
    # distractor there, MaxBoxAccV2 boxes every component, so threshold 0 already scores.
    obj = (5, 5, 14, 14)
    m = 0.3 * square_map(48, (25, 25, 44, 44)) + square_map(48, obj)
    out = max_box_acc(m[None], [np.array([obj])])
    assert out["maxboxacc_v2"] == 100.0
    assert out["box_cam_threshold"] == 0.0


def test_threshold_sweep_separates_touching_blobs():
    # a weak blob touching the object merges with it at low thresholds; only a threshold above
    # its level (0.3) gives the exact box, so IoU 70 needs the sweep.
    m = 0.3 * square_map(48, (30, 30, 40, 40)) + square_map(48, BOX)
    ious = ious_over_thresholds(m, np.array([BOX]), np.array([0.0, 0.5]), "tight")
    merged = 20 * 24 / (31 * 29)  # the union box (10, 12, 40, 40) against the object
    np.testing.assert_allclose(ious, [merged, 1.0])
    out = max_box_acc(m[None], [np.array([BOX])], box_convention="tight")
    assert out["maxboxacc_iou70"] == 100.0 and out["box_cam_threshold"] == 0.0  # IoU 0.53 >= .5


def test_wsol_convention_widens_predicted_boxes():
    # a perfect map on a 20x24 object: wsolevaluation's box (x, y, x + w, y + h) is 21x25 under
    # the inclusive IoU, so IoU 480 / 525 = 0.914; the tight convention gives 1.
    m = square_map(48, BOX)
    wsol = ious_over_thresholds(m, np.array([BOX]), np.array([0.5]), "wsol")
    tight = ious_over_thresholds(m, np.array([BOX]), np.array([0.5]), "tight")
    assert wsol[0] == pytest.approx(480 / 525) and tight[0] == 1.0
    # the far corner is clipped at (W - 1, H - 1): an object touching the border keeps its size
    edge = (28, 30, 47, 47)
    clipped = ious_over_thresholds(square_map(48, edge), np.array([edge]), np.array([0.5]))
    assert clipped[0] == 1.0


def test_multiple_ground_truth_boxes_take_the_best():
    gts = [np.array([[0, 0, 3, 3], list(BOX)])]
    assert max_box_acc(square_map(48, BOX)[None], gts)["maxboxacc_v2"] == 100.0


def test_scoremaps_upsample_and_normalise():
    cams = torch.zeros(2, 4, 4)
    cams[0, 1, 2] = 5.0  # a peak; the second map is constant
    maps = scoremaps(cams, (16, 16))
    assert maps.shape == (2, 16, 16)
    assert maps[0].min() == 0 and maps[0].max() == pytest.approx(1.0)
    assert torch.all(maps[1] == 0)  # wsolevaluation: a constant map becomes zeros
    peak = divmod(int(maps[0].argmax()), 16)
    assert 4 <= peak[0] <= 7 and 8 <= peak[1] <= 11  # inside the upsampled peak cell


# ----------------------------------------------------------------------------- faithfulness


class PixelSum(nn.Module):
    """Two classes: logit_1 = a * (sum of raw pixels in the left half), logit_0 = 0."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x):
        left = x[..., : x.shape[-1] // 2].sum(dim=(1, 2, 3))
        logits = torch.stack([torch.zeros_like(left), self.a * left], dim=1)
        return Output(logits, x, None)


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_average_drop_and_increase_by_hand():
    # mean 0 / std 1 so inputs are pixels. Image: ones on a 2x4 canvas (left half = 4 pixels).
    images = torch.ones(2, 1, 2, 4)
    labels = torch.tensor([1, 0])
    maps = torch.zeros(2, 2, 4)
    maps[:, :, :2] = 0.5  # keeps half of each left pixel
    out = drop_and_increase(PixelSum(1.0), images, labels, maps, (0.0,), (1.0,))
    y1, o1 = sigmoid(4.0), sigmoid(2.0)  # p_1 full vs explained
    y0, o0 = 1 - y1, 1 - o1  # class 0 gains when the evidence for class 1 drops
    np.testing.assert_allclose(out["avg_drop"].numpy(), [(y1 - o1) / y1, 0.0], rtol=1e-5)
    np.testing.assert_allclose(out["increase_conf"].numpy(), [0.0, 1.0])
    assert o0 > y0


def test_deletion_insertion_by_hand():
    # 1x4 image of ones; the map ranks pixels 0 > 1 > 2 > 3, the model counts the left two.
    images = torch.ones(1, 1, 1, 4)
    maps = torch.tensor([[[4.0, 3.0, 2.0, 1.0]]])
    out = deletion_insertion(
        PixelSum(1.0), images, torch.tensor([1]), maps, (0.0,), (1.0,),
        protocol="camexp", step=1, blur_sigma=0,
    )  # fmt: skip
    # deletion removes pixels 0, 1 first: left sum 2, 1, 0, 0, 0
    expected_del = sigmoid(np.array([2.0, 1.0, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(out["deletion_curve"][0].numpy(), expected_del, rtol=1e-5)
    # insertion (no blur: starts from the image itself) stays at sigmoid(2)
    np.testing.assert_allclose(out["insertion_curve"][0].numpy(), [sigmoid(2.0)] * 5, rtol=1e-5)
    auc = (expected_del.sum() - 0.5 * (expected_del[0] + expected_del[-1])) / 4
    assert out["deletion_auc"].item() == pytest.approx(auc, rel=1e-5)


def test_trapezoid_and_blur():
    assert trapezoid_auc(torch.tensor([[0.0, 1.0, 1.0]])).item() == pytest.approx(0.75)
    flat = torch.full((1, 1, 9, 9), 0.7)
    torch.testing.assert_close(gaussian_blur(flat, 2.0), flat)
    spike = torch.zeros(1, 1, 9, 9)
    spike[0, 0, 4, 4] = 1.0
    blurred = gaussian_blur(spike, 1.0)
    assert blurred.sum().item() == pytest.approx(1.0, rel=1e-5) and blurred.max() < 0.2


# ----------------------------------------------------------------------------- box readers


def test_read_cub_boxes(tmp_path):
    (tmp_path / "images.txt").write_text("1 001.A/a.jpg\n2 002.B/b.jpg\n")
    (tmp_path / "bounding_boxes.txt").write_text("1 60.0 27.0 325.0 304.0\n2 0 0 10 5\n")
    boxes = read_cub_boxes(tmp_path)
    assert boxes["001.A/a.jpg"].tolist() == [[60, 27, 384, 330]]
    assert boxes["002.B/b.jpg"].tolist() == [[0, 0, 9, 4]]


def test_read_cub_boxes_bad_line(tmp_path):
    from camexp.errors import UserError

    (tmp_path / "images.txt").write_text("1 a.jpg\n")
    (tmp_path / "bounding_boxes.txt").write_text("1 60.0 27.0\n")
    with pytest.raises(UserError, match="bounding_boxes.txt:1"):
        read_cub_boxes(tmp_path)


def test_read_imagenet_val_boxes(tmp_path):
    folder = tmp_path / "Annotations" / "CLS-LOC" / "val"
    folder.mkdir(parents=True)
    obj = "<object><name>n01</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax>"
    obj += "<ymax>{}</ymax></bndbox></object>"
    xml = "<annotation><size><width>500</width><height>375</height></size>{}{}</annotation>"
    (folder / "ILSVRC2012_val_00000001.xml").write_text(
        xml.format(obj.format(10, 20, 110, 220), obj.format(0, 0, 5, 5))
    )
    boxes = read_imagenet_val_boxes(tmp_path)
    assert boxes["ILSVRC2012_val_00000001"].tolist() == [[10, 20, 110, 220], [0, 0, 5, 5]]
    assert read_imagenet_val_boxes(tmp_path / "nothing") is None


def test_resize_box():
    # wsolevaluation's resize_bbox: 200x100 -> 50x50 scales x by 1/4 and y by 1/2, int() each
    out = resize_box(np.array([[60, 10, 139, 89]]), (200, 100), 50)
    assert out.tolist() == [[15, 5, 34, 44]]


def test_folder_test_boxes_from_cub_style_list_and_imagenet_xml(tmp_path):
    from PIL import Image
    from torchvision.datasets import ImageFolder

    from camexp.data.boxes import folder_test_boxes
    from camexp.data.fine_grained import ImageList

    # a CUB-style list: a 200x100 image with the box (x, y, w, h) = (60, 10, 80, 80)
    path = tmp_path / "a.png"
    Image.new("RGB", (200, 100)).save(path)
    cub = ImageList([str(path)], [0], ["bird"], boxes=np.array([[60.0, 10.0, 80.0, 80.0]]))
    # box transform at image_size 50: Resize((50, 50)), scales x 1/4, y 1/2. wsol reads the box
    # as (60, 10, 140, 90) -> (15, 5, 35, 45); tight as (60, 10, 139, 89) -> (15, 5, 34, 44)
    assert folder_test_boxes(cub, 50)[0].tolist() == [[15, 5, 35, 45]]
    assert folder_test_boxes(cub, 50, convention="tight")[0].tolist() == [[15, 5, 34, 44]]
    # an ImageFolder of ILSVRC val images with XMLs under root
    root = tmp_path / "imagenet"
    (root / "val" / "n01").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(root / "val" / "n01" / "ILSVRC2012_val_00000007.png")
    xml_dir = root / "Annotations" / "CLS-LOC" / "val"
    xml_dir.mkdir(parents=True)
    (xml_dir / "ILSVRC2012_val_00000007.xml").write_text(
        "<annotation><size><width>64</width><height>64</height></size><object><bndbox>"
        "<xmin>8</xmin><ymin>8</ymin><xmax>40</xmax><ymax>40</ymax></bndbox></object></annotation>"
    )
    folder = ImageFolder(str(root / "val"))
    # Resize((32, 32)) halves a 64x64 image; the XML box is used as it is, then scaled
    out = folder_test_boxes(folder, 32, str(root))
    assert out[0].tolist() == [[4, 4, 20, 20]]
    assert folder_test_boxes(folder, 64, str(tmp_path / "none")) is None
