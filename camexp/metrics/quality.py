"""CAM quality of a trained model on the test split: localization (on datasets with boxes) and
faithfulness (on any dataset), as ``{"test/<metric>": value}`` for results.json.

Built from ``configs/metrics/default.yaml`` by the task wiring (``instantiate(cfg.metrics)``) and
called at the end of training and in ``task=eval``. Metrics are computed in float32 with the
model in eval mode; percentages for MaxBoxAcc/top-1 loc/Average Drop/Increase, AUCs in [0, 1].
"""

from __future__ import annotations

import logging
import time

import torch

from camexp.cam import target_cam
from camexp.errors import UserError
from camexp.metrics.faithfulness import deletion_insertion, drop_and_increase
from camexp.metrics.localization import IOU_THRESHOLDS, BoxAccumulator, scoremaps

log = logging.getLogger(__name__)


class CamQuality:
    """``CamQuality(...)(model, data, device) -> dict`` of test-split CAM metrics.

    localization: MaxBoxAccV2 / MaxBoxAcc@IoU / top-1 loc on every test image when the data
        carries ``test_boxes`` (skipped, with a log line, otherwise).
    faithfulness: Average Drop, Increase in Confidence, Deletion and Insertion AUC on the first
        ``images`` test images (each needs 2 * (steps + 1) + 2 forward passes).
    """

    def __init__(
        self,
        localization: bool = True,
        faithfulness: bool = True,
        images: int = 256,
        cam_curve_interval: float = 0.001,
        iou_thresholds=IOU_THRESHOLDS,
        deletion_steps: int = 16,
        insertion_blur_sigma: float = 5.0,
        batch_size: int = 64,
    ):
        if int(images) < 0:
            raise UserError(f"metrics.images must be >= 0, got {images}")
        if int(deletion_steps) < 1:
            raise UserError(f"metrics.deletion_steps must be >= 1, got {deletion_steps}")
        if not 0 < float(cam_curve_interval) < 1:
            raise UserError(
                f"metrics.cam_curve_interval must be in (0, 1), got {cam_curve_interval}"
            )
        bad = [t for t in iou_thresholds if not 0 < float(t) <= 100]
        if bad or not iou_thresholds:
            raise UserError(f"metrics.iou_thresholds must be percentages in (0, 100], got {bad}")
        self.localization = bool(localization)
        self.faithfulness = bool(faithfulness)
        self.images = int(images)
        self.cam_curve_interval = float(cam_curve_interval)
        self.iou_thresholds = tuple(int(t) for t in iou_thresholds)
        self.deletion_steps = int(deletion_steps)
        self.insertion_blur_sigma = float(insertion_blur_sigma)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def __call__(self, model, data, device, prefix: str = "test") -> dict:
        boxes = getattr(data, "test_boxes", None)
        do_boxes = self.localization and boxes is not None
        do_faith = self.faithfulness and self.images > 0
        if self.localization and boxes is None:
            log.info("no ground-truth boxes on this dataset: localization metrics skipped")
        if not (do_boxes or do_faith):
            return {}
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        try:
            out = self.measure(model, data, boxes if do_boxes else None, do_faith, device)
        finally:
            model.train(was_training)
        log.info("CAM quality in %.1fs: %s", time.perf_counter() - started, out)
        return {f"{prefix}/{k}": v for k, v in out.items()}

    def measure(self, model, data, boxes, do_faith: bool, device) -> dict:
        mean, std = data.mean, data.std
        box_acc = BoxAccumulator(self.cam_curve_interval, self.iou_thresholds)
        faith: dict[str, list] = {}
        seen = 0
        for images, labels in data.test:
            images = images.to(device).float()
            labels = labels.to(device)
            n = labels.shape[0]
            want_faith = do_faith and seen < self.images
            if boxes is None and not want_faith:
                break
            out = model(images)
            if out.fc_weight is None:
                log.warning("the model's head is not GAP -> linear: no exact CAM, no CAM metrics")
                return {}
            cams = target_cam(out.features.float(), out.fc_weight.float(), labels)  # (B, h, w)
            maps = scoremaps(cams, images.shape[-2:])  # (B, H, W) in [0, 1]
            if boxes is not None:
                correct = (out.logits.argmax(1) == labels).cpu().numpy()
                box_acc.add(maps.cpu().numpy(), boxes[seen : seen + n], correct)
            if want_faith:
                k = min(n, self.images - seen)
                for start in range(0, k, self.batch_size):
                    part = slice(start, min(k, start + self.batch_size))
                    args = (model, images[part], labels[part], maps[part], mean, std)
                    for name, v in drop_and_increase(*args).items():
                        faith.setdefault(name, []).append(v)
                    di = deletion_insertion(
                        *args, steps=self.deletion_steps, blur_sigma=self.insertion_blur_sigma
                    )
                    for name in ("deletion_auc", "insertion_auc"):
                        faith.setdefault(name, []).append(di[name])
            seen += n
        result = box_acc.compute() if boxes is not None else {}
        for name, parts in faith.items():
            value = torch.cat(parts).float().mean().item()
            result[name] = value * (100.0 if name in ("avg_drop", "increase_conf") else 1.0)
        if faith:
            result["faithfulness_images"] = int(torch.cat(faith["avg_drop"]).numel())
        return result
