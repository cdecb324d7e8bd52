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
from camexp.metrics.faithfulness import PROTOCOLS, deletion_insertion, drop_and_increase
from camexp.metrics.localization import (
    BOX_CONVENTIONS,
    IOU_THRESHOLDS,
    BoxAccumulator,
    scoremaps,
)
from camexp.run.progress import track

log = logging.getLogger(__name__)


class CamQuality:
    """``CamQuality(...)(model, data, device) -> dict`` of test-split CAM metrics.

    localization: MaxBoxAccV2 / MaxBoxAcc@IoU / top-1 loc on every test image when the data
        carries ``test_boxes`` (skipped, with a log line, otherwise), on ``data.box_test`` when
        the boxes belong to other images than ``data.test`` (folder data: resized, not cropped);
        the CAM of the label, predicted boxes in ``box_convention`` (wsol | tight). On folder
        data the CAM (computed at the evaluated image size) is resized to ``box_size`` x
        ``box_size``, the frame of the ground-truth boxes (wsolevaluation's 224; None: the image
        size); array data are boxed at their own size.
    faithfulness: Average Drop, Increase in Confidence, Deletion and Insertion AUC on the first
        ``images`` test images (``"all"``: every one; 0: off), by ``faithfulness_protocol``:
        ``rise`` (the CAM and probability of the top predicted class, RISE's substrates) or
        ``camexp`` (the label's; see camexp.metrics.faithfulness). ``deletion_step`` pixels per
        step (None: the image width).
    """

    def __init__(
        self,
        localization: bool = True,
        faithfulness: bool = True,
        images: int | str = 256,
        box_size: int | None = 224,
        cam_curve_interval: float = 0.001,
        iou_thresholds=IOU_THRESHOLDS,
        box_convention: str = "wsol",
        faithfulness_protocol: str = "rise",
        deletion_step: int | None = None,
        insertion_blur_sigma: float = 5.0,
        insertion_blur_taps: int = 11,
        batch_size: int = 64,
    ):
        if images != "all" and not (isinstance(images, int) and images >= 0):
            raise UserError(f"metrics.images must be a count >= 0 (0: off) or all, got {images!r}")
        if box_size is not None and not (isinstance(box_size, int) and box_size >= 1):
            raise UserError(f"metrics.box_size must be a size in pixels or null, got {box_size!r}")
        if deletion_step is not None and int(deletion_step) < 1:
            raise UserError(f"metrics.deletion_step must be >= 1 or null, got {deletion_step}")
        if not 0 < float(cam_curve_interval) < 1:
            raise UserError(
                f"metrics.cam_curve_interval must be in (0, 1), got {cam_curve_interval}"
            )
        bad = [t for t in iou_thresholds if not 0 < float(t) <= 100]
        if bad or not iou_thresholds:
            raise UserError(f"metrics.iou_thresholds must be percentages in (0, 100], got {bad}")
        if box_convention not in BOX_CONVENTIONS:
            raise UserError(f"metrics.box_convention={box_convention!r}; use wsol or tight")
        if faithfulness_protocol not in PROTOCOLS:
            raise UserError(
                f"metrics.faithfulness_protocol={faithfulness_protocol!r}; use rise or camexp"
            )
        if int(insertion_blur_taps) < 1 or int(insertion_blur_taps) % 2 == 0:
            raise UserError(
                f"metrics.insertion_blur_taps must be odd and >= 1, got {insertion_blur_taps}"
            )
        self.localization = bool(localization)
        self.faithfulness = bool(faithfulness)
        self.images = None if images == "all" else images  # None: the whole test split
        self.box_size = box_size
        self.cam_curve_interval = float(cam_curve_interval)
        self.iou_thresholds = tuple(int(t) for t in iou_thresholds)
        self.box_convention = box_convention
        self.protocol = faithfulness_protocol
        self.deletion_step = None if deletion_step is None else int(deletion_step)
        self.insertion_blur_sigma = float(insertion_blur_sigma)
        self.insertion_blur_taps = int(insertion_blur_taps)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def __call__(self, model, data, device, prefix: str = "test") -> dict:
        boxes = getattr(data, "test_boxes", None)
        do_boxes = self.localization and boxes is not None
        do_faith = self.faithfulness and self.images != 0
        if self.localization and boxes is None:
            log.info("no ground-truth boxes on this dataset: localization metrics skipped")
        if not (do_boxes or do_faith):
            return {}
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        try:
            out = {}
            if do_boxes:
                loader = getattr(data, "box_test", None)  # folder data: boxes in box_size frame
                frame = self.box_size if loader is not None else None
                out = self.localize(model, loader or data.test, boxes, device, frame)
            if do_faith and out is not None:
                faith = self.faithful(model, data, device)
                out = None if faith is None else {**out, **faith}
        finally:
            model.train(was_training)
        if out is None:
            log.warning("the model's head is not GAP -> linear: no exact CAM, no CAM metrics")
            return {}
        log.info("CAM quality in %.1fs: %s", time.perf_counter() - started, out)
        return {f"{prefix}/{k}": v for k, v in out.items()}

    def localize(self, model, loader, boxes, device, frame: int | None = None) -> dict | None:
        """MaxBoxAccV2 on the CAM of the label, every image of ``loader``, scored in a ``frame`` x
        ``frame`` map (None: the image's size) where ``boxes`` lie; None without a CAM."""
        acc = BoxAccumulator(self.cam_curve_interval, self.iou_thresholds, self.box_convention)
        seen = 0
        for images, labels in track(loader, "CAM quality: boxes"):
            images, labels = images.to(device).float(), labels.to(device)
            out = model(images)
            if out.fc_weight is None:
                return None
            cams = target_cam(out.features.float(), out.fc_weight.float(), labels)  # (B, h, w)
            size = images.shape[-2:] if frame is None else (frame, frame)
            maps = scoremaps(cams, size)  # (B, H, W) in [0, 1], as wsolevaluation's cv2.resize
            correct = (out.logits.argmax(1) == labels).cpu().numpy()
            acc.add(maps.cpu().numpy(), boxes[seen : seen + len(labels)], correct)
            seen += len(labels)
        return {**acc.compute(), "box_size": int(size[-1])} if seen else acc.compute()

    def faithful(self, model, data, device) -> dict | None:
        """Drop / increase and deletion / insertion on the first ``images`` test images (all when
        None); None without a CAM."""
        faith: dict[str, list] = {}
        seen, limit = 0, float("inf") if self.images is None else self.images
        for images, labels in track(data.test, "CAM quality: faithfulness"):
            if seen >= limit:
                break
            k = int(min(len(labels), limit - seen))
            images, labels = images[:k].to(device).float(), labels[:k].to(device)
            out = model(images)
            if out.fc_weight is None:
                return None
            # RISE explains and scores the top predicted class; camexp's variant the label
            classes = out.logits.argmax(1) if self.protocol == "rise" else labels
            cams = target_cam(out.features.float(), out.fc_weight.float(), classes)
            maps = scoremaps(cams, images.shape[-2:])  # (B, H, W) in [0, 1]
            for start in range(0, k, self.batch_size):
                part = slice(start, min(k, start + self.batch_size))
                args = (model, images[part], classes[part], maps[part], data.mean, data.std)
                for name, v in drop_and_increase(*args).items():
                    faith.setdefault(name, []).append(v)
                di = deletion_insertion(
                    *args, protocol=self.protocol, step=self.deletion_step,
                    blur_sigma=self.insertion_blur_sigma, blur_taps=self.insertion_blur_taps,
                )  # fmt: skip
                for name in ("deletion_auc", "insertion_auc"):
                    faith.setdefault(name, []).append(di[name])
            seen += k
        result = {}
        for name, parts in faith.items():
            value = torch.cat(parts).float().mean().item()
            result[name] = value * (100.0 if name in ("avg_drop", "increase_conf") else 1.0)
        if faith:
            result["faithfulness_images"] = int(torch.cat(faith["avg_drop"]).numel())
        return result
