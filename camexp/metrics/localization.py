"""MaxBoxAccV2 and top-1 localization (Choe et al., "Evaluating Weakly Supervised Object
Localization Methods Right", CVPR 2020; the V2 box metric of clovaai/wsolevaluation).

For every image, the CAM of the ground-truth class is upsampled to the image (bicubic), min-max
normalised to [0, 1] (a constant map becomes all zeros) and quantised to uint8 ``q``. For each CAM
threshold ``t`` of the sweep ``0, d, 2d, ... < 1`` (d = ``cam_curve_interval``, 0.001 in
wsolevaluation) the mask ``q > int(t * max(q))`` is traced into contours (components and holes),
each gives a box, and the image's IoU at ``t`` is the best IoU of any of those boxes with any
ground-truth box (an empty mask gives the box (0, 0, 0, 0)). A contour spanning columns x0..x1
and rows y0..y1 gives, with ``box_convention="wsol"`` (the default), wsolevaluation's box:
cv2.boundingRect's (x, y, w, h) read as ``(x, y, x + w, y + h)`` with the far corner clipped to
(W - 1, H - 1), i.e. ``(x0, y0, min(x1 + 1, W - 1), min(y1 + 1, H - 1))``, one pixel wider and
taller than the region; with ``"tight"`` (camexp's variant) the inclusive ``(x0, y0, x1, y1)``.
IoUs use the inclusive formula of wsolevaluation's ``calculate_multiple_iou`` either way. Then

    BoxAcc(t, delta)  = 100 * mean_images [ IoU(t) >= delta / 100 ]
    MaxBoxAcc(delta)  = max_t BoxAcc(t, delta)                  for delta in {30, 50, 70}
    MaxBoxAccV2       = mean_delta MaxBoxAcc(delta)

``top1_loc`` (ours, the usual WSOL "Top-1 Loc"): the percentage of images that are classified
correctly *and* have IoU >= 50% at the CAM threshold that maximises BoxAcc(t, 50).
Boxes come from :func:`camexp.metrics.boxes.stacked_component_boxes`: the boxes of OpenCV's
RETR_TREE contours (every component and every hole's inner border), without OpenCV.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from camexp.metrics.boxes import box_iou, stacked_component_boxes

IOU_THRESHOLDS = (30, 50, 70)
BOX_CONVENTIONS = ("wsol", "tight")


def scoremaps(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """CAMs (B, h, w) -> score maps (B, H, W) in [0, 1]: bicubic upsampling (wsolevaluation's
    cv2.INTER_CUBIC; PyTorch's bicubic uses the same a = -0.75 kernel and half-pixel centres),
    then per-map min-max; a constant map becomes zeros."""
    up = F.interpolate(cams[:, None].float(), size=size, mode="bicubic", align_corners=False)[:, 0]
    flat = up.flatten(1)  # (B, H*W)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = high - low
    out = torch.where(span > 0, (flat - low) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return out.view_as(up)


def wsol_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Tight inclusive component boxes (n, 4) -> wsolevaluation's ``(x, y, x + w, y + h)``,
    clipped at (W - 1, H - 1) as its ``compute_bboxes_from_scoremaps``."""
    out = boxes.copy()
    out[:, 2] = np.minimum(boxes[:, 2] + 1, width - 1)
    out[:, 3] = np.minimum(boxes[:, 3] + 1, height - 1)
    return out


def ious_over_thresholds(
    scoremap: np.ndarray,
    gt_boxes: np.ndarray,
    cam_thresholds: np.ndarray,
    box_convention: str = "wsol",
) -> np.ndarray:
    """Best IoU with the ground truth at each CAM threshold, for one (H, W) map in [0, 1]."""
    quantised = (scoremap * 255).astype(np.uint8)  # as wsolevaluation: floor to 0..255
    levels = (cam_thresholds * quantised.max()).astype(np.int64)  # cv2 thresh = int(t * max)
    # Masks only change at values present in the map: one mask per distinct level.
    distinct, which = np.unique(levels, return_inverse=True)
    masks = quantised[None] > distinct[:, None, None]  # (L, H, W)
    boxes, level_of_box = stacked_component_boxes(masks)
    if box_convention == "wsol":
        boxes = wsol_boxes(boxes, *scoremap.shape)
    best = np.zeros(len(distinct))  # an empty mask: box (0, 0, 0, 0), as wsolevaluation
    empty = np.ones(len(distinct), dtype=bool)
    if len(boxes):
        np.maximum.at(best, level_of_box, box_iou(boxes, gt_boxes).max(1))
        empty[level_of_box] = False
    if empty.any():
        best[empty] = box_iou(np.zeros((1, 4)), gt_boxes).max()
    return best[which.reshape(-1)]


class BoxAccumulator:
    """Accumulates per-threshold hits over batches; :meth:`compute` gives the metrics."""

    def __init__(
        self,
        cam_curve_interval: float = 0.001,
        iou_thresholds=IOU_THRESHOLDS,
        box_convention: str = "wsol",
    ):
        if not 0 < cam_curve_interval < 1:
            raise ValueError(f"cam_curve_interval must be in (0, 1), got {cam_curve_interval}")
        if box_convention not in BOX_CONVENTIONS:
            raise ValueError(f"box_convention must be wsol or tight, got {box_convention!r}")
        self.box_convention = box_convention
        self.cam_thresholds = np.arange(0, 1, cam_curve_interval)
        self.iou_thresholds = tuple(int(t) for t in iou_thresholds)
        n = len(self.cam_thresholds)
        self.hits = {t: np.zeros(n) for t in self.iou_thresholds}
        self.top1_hits = np.zeros(n)  # IoU >= 50 and correctly classified
        self.count = 0

    def add(self, maps: np.ndarray, gt_boxes: list, correct: np.ndarray | None = None) -> None:
        """maps (B, H, W) in [0, 1]; gt_boxes: B arrays (n_i, 4); correct (B,) bool or None."""
        for i, scoremap in enumerate(maps):
            gt = np.asarray(gt_boxes[i])
            ious = ious_over_thresholds(scoremap, gt, self.cam_thresholds, self.box_convention)
            for t in self.iou_thresholds:
                self.hits[t] += ious >= t / 100
            if correct is not None and correct[i]:
                self.top1_hits += ious >= 0.5
            self.count += 1

    def sums(self) -> dict:
        """The running sums as tensors and ints (what :meth:`restore` takes back)."""
        hits = torch.from_numpy(np.stack([self.hits[t] for t in self.iou_thresholds]))
        return {"hits": hits, "top1_hits": torch.from_numpy(self.top1_hits.copy()),
                "count": self.count}  # fmt: skip

    def restore(self, sums: dict) -> None:
        """Continue from :meth:`sums` of an accumulator with the same thresholds."""
        n = (len(self.iou_thresholds), len(self.cam_thresholds))
        hits, top1 = sums["hits"], sums["top1_hits"]
        if tuple(hits.shape) != n or tuple(top1.shape) != n[1:] or int(sums["count"]) < 0:
            raise ValueError(f"sums of shape {tuple(hits.shape)}, not {n}")
        self.hits = {t: hits[i].double().numpy().copy() for i, t in enumerate(self.iou_thresholds)}
        self.top1_hits = top1.double().numpy().copy()
        self.count = int(sums["count"])

    def compute(self) -> dict:
        if self.count == 0:
            return {}
        per_iou = {t: 100.0 * self.hits[t] / self.count for t in self.iou_thresholds}
        out = {f"maxboxacc_iou{t}": float(acc.max()) for t, acc in per_iou.items()}
        out["maxboxacc_v2"] = float(np.mean([acc.max() for acc in per_iou.values()]))
        at50 = per_iou.get(50, next(iter(per_iou.values())))
        best = int(at50.argmax())
        out["top1_loc"] = float(100.0 * self.top1_hits[best] / self.count)
        out["box_cam_threshold"] = float(self.cam_thresholds[best])
        return out


def max_box_acc(
    maps: np.ndarray,
    gt_boxes: list,
    correct: np.ndarray | None = None,
    cam_curve_interval: float = 0.001,
    iou_thresholds=IOU_THRESHOLDS,
    box_convention: str = "wsol",
) -> dict:
    """MaxBoxAccV2 and friends of a stack of score maps (B, H, W) in [0, 1] in one call."""
    acc = BoxAccumulator(cam_curve_interval, iou_thresholds, box_convention)
    acc.add(np.asarray(maps), gt_boxes, correct)
    return acc.compute()
