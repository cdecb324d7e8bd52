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
from camexp.metrics.partial import PartialState, no_file, weights_key
from camexp.run.progress import track

FAITH_NAMES = ("avg_drop", "increase_conf", "deletion_auc", "insertion_auc")

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
    def __call__(self, model, data, device, prefix="test", partial: str | None = None) -> dict:
        """The metrics; with ``partial`` (a file in the run folder) the sums are kept there as
        they grow, and a call that finds the file of the same weights and options continues from
        the batch it reached (camexp.metrics.partial)."""
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
            loader = getattr(data, "box_test", None)  # folder data: boxes in box_size frame
            state = self.partial_state(model, (loader or data.test, data.test), partial)
            if do_boxes:
                frame = self.box_size if loader is not None else None
                out = self.localize(model, loader or data.test, boxes, device, frame, state)
            if do_faith and out is not None:
                faith = self.faithful(model, data, device, state)
                out = None if faith is None else {**out, **faith}
        finally:
            model.train(was_training)
        if out is None:
            log.warning("the model's head is not GAP -> linear: no exact CAM, no CAM metrics")
            return {}
        log.info("CAM quality in %.1fs: %s", time.perf_counter() - started, out)
        return {f"{prefix}/{k}": v for k, v in out.items()}

    def partial_state(self, model, loaders, path: str | None) -> PartialState:
        """The sums saved at ``path`` (nothing without a path), keyed by the weights, the options
        and the loaders' batch count and size: the batches to skip must be the same batches."""
        if not path:
            return no_file()
        shapes = [(len(d) if hasattr(d, "__len__") else None, getattr(d, "batch_size", None))
                  for d in loaders]  # fmt: skip
        return PartialState(path, weights_key(model, self.options(), shapes))

    def options(self) -> tuple:
        """Every option the sums depend on (part of the partial file's key)."""
        return (self.localization, self.faithfulness, self.images, self.box_size,
                self.cam_curve_interval, self.iou_thresholds, self.box_convention, self.protocol,
                self.deletion_step, self.insertion_blur_sigma, self.insertion_blur_taps,
                self.batch_size)  # fmt: skip

    def localize(
        self, model, loader, boxes, device, frame: int | None = None, state=None
    ) -> dict | None:
        """MaxBoxAccV2 on the CAM of the label, every image of ``loader``, scored in a ``frame`` x
        ``frame`` map (None: the image's size) where ``boxes`` lie; None without a CAM. ``state``
        (a PartialState) keeps the sums batch by batch and gives back the saved ones."""

        def accumulator(sums=None):
            acc = BoxAccumulator(self.cam_curve_interval, self.iou_thresholds, self.box_convention)
            if sums is not None:
                acc.restore(sums)  # ValueError when they do not fit these options
                if not 0 <= int(sums["batches"]) <= int(sums["seen"]) == acc.count:
                    raise ValueError("batches and images do not add up")
            return acc

        state = state or no_file()
        saved = state.phase("boxes", accumulator)
        acc = accumulator(saved)
        done, seen = (int(saved["batches"]), int(saved["seen"])) if saved else (0, 0)
        size = None
        for batch, (images, labels) in enumerate(track(loader, "CAM quality: boxes")):
            size = images.shape[-2:] if frame is None else (frame, frame)
            if batch < done:  # summed before the stop
                continue
            images, labels = images.to(device).float(), labels.to(device)
            out = model(images)
            if out.fc_weight is None:
                return None
            cams = target_cam(out.features.float(), out.fc_weight.float(), labels)  # (B, h, w)
            maps = scoremaps(cams, size)  # (B, H, W) in [0, 1], as wsolevaluation's cv2.resize
            correct = (out.logits.argmax(1) == labels).cpu().numpy()
            acc.add(maps.cpu().numpy(), boxes[seen : seen + len(labels)], correct)
            seen += len(labels)
            state.update("boxes", {**acc.sums(), "batches": batch + 1, "seen": seen})
        state.flush("boxes")
        return {**acc.compute(), "box_size": int(size[-1])} if seen else acc.compute()

    def faithful(self, model, data, device, state=None) -> dict | None:
        """Drop / increase and deletion / insertion on the first ``images`` test images (all when
        None); None without a CAM. ``state`` (a PartialState) keeps the per-image values batch
        by batch and gives back the saved ones."""
        state = state or no_file()
        saved = state.phase("faith", faith_sums_fit)
        faith: dict[str, list] = {n: [v] for n, v in saved["values"].items()} if saved else {}
        done, seen = (int(saved["batches"]), int(saved["seen"])) if saved else (0, 0)
        limit = float("inf") if self.images is None else self.images
        for batch, (images, labels) in enumerate(track(data.test, "CAM quality: faithfulness")):
            if seen >= limit:
                break
            if batch < done:  # measured before the stop
                continue
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
                    faith.setdefault(name, []).append(v.cpu())
                di = deletion_insertion(
                    *args, protocol=self.protocol, step=self.deletion_step,
                    blur_sigma=self.insertion_blur_sigma, blur_taps=self.insertion_blur_taps,
                )  # fmt: skip
                for name in ("deletion_auc", "insertion_auc"):
                    faith.setdefault(name, []).append(di[name].cpu())
            seen += k
            values = {name: torch.cat(parts) for name, parts in faith.items()}
            faith = {name: [v] for name, v in values.items()}
            state.update("faith", {"batches": batch + 1, "seen": seen, "values": values})
        state.flush("faith")
        result = {}
        for name, parts in faith.items():
            value = torch.cat(parts).float().mean().item()
            result[name] = value * (100.0 if name in ("avg_drop", "increase_conf") else 1.0)
        if faith:
            result["faithfulness_images"] = int(torch.cat(faith["avg_drop"]).numel())
        return result


def faith_sums_fit(sums: dict) -> bool:
    """Saved faithfulness values: one float per image seen for each metric, batches <= images."""
    values, seen = sums["values"], int(sums["seen"])
    return (
        0 <= int(sums["batches"]) <= seen
        and isinstance(values, dict)
        and set(values) == set(FAITH_NAMES)
        and all(torch.is_tensor(v) and v.dim() == 1 and v.numel() == seen for v in values.values())
    )
