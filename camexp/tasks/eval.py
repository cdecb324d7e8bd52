"""task=eval ckpt=PATH: accuracy of a checkpoint on val and test, plus CAM pictures.

    camexp task=eval ckpt=RUN/checkpoints/best.pt             # the dataset it was trained on
    camexp task=eval ckpt=... dataset=cluttered_fashion_mnist task.allow_other_dataset=true

The model is the checkpoint's (its ``meta.model``: no backbone to restate). The data is
``dataset``; it must be what the checkpoint was trained on (class names, input size and
normalisation), checked by the one contract check (camexp/models/from_checkpoint.py), unless
``task.allow_other_dataset=true``: then only the channel and class counts must fit.
"""

import logging
import os

from omegaconf import DictConfig

from camexp.engine import evaluate
from camexp.errors import UserError
from camexp.models.from_checkpoint import check_checkpoint, model_from_checkpoint, read_checkpoint
from camexp.report.pictures import cam_grid, save_png
from camexp.run.progress import track
from camexp.run.record import RunRecord
from camexp.training import parts as build

log = logging.getLogger(__name__)
ROLE = "checkpoint"
OTHER = "set task.allow_other_dataset=true to evaluate it on this dataset anyway"


def run(cfg: DictConfig, record: RunRecord) -> dict:
    # --- setup: the checkpoint first, so a bad path stops before any data loads
    if not cfg.ckpt:
        raise UserError("task=eval needs a checkpoint: add ckpt=PATH (a run's checkpoints/best.pt)")
    path = os.path.abspath(str(cfg.ckpt))
    state = read_checkpoint(path, ROLE)
    build.check_common(cfg)
    device = build.resolve_device(str(cfg.device))
    build.seed_everything(int(cfg.seed), bool(cfg.deterministic))

    # --- data, checked against the checkpoint; then its model
    data = build.build_data(cfg, device)
    expect = {"num_classes": data.num_classes, "in_chans": data.channels}
    if not cfg.task.allow_other_dataset:
        expect.update(classes=data.classes, image_size=data.image_size, mean=list(data.mean),
                      std=list(data.std))  # fmt: skip
    hints = {k: OTHER for k in ("classes", "image_size", "mean", "std")}
    check_checkpoint(state, path, role=ROLE, expect=expect, hints=hints)
    model = build.place(cfg, model_from_checkpoint(state, path, needs_cam=False, role=ROLE), device)

    # --- test
    amp = build.amp_dtype(str(cfg.amp), device)
    metrics = {}
    if data.val is not None:
        metrics.update(evaluate(model, track(data.val, "val"), device, amp_dtype=amp, prefix="val"))
    metrics.update(evaluate(model, track(data.test, "test"), device, amp_dtype=amp, prefix="test"))
    if len(data.picture_labels) and model.exact_cam:
        grid = cam_grid(model, data.picture_images, data.picture_labels, data.mean, data.std,
                        data.classes)  # fmt: skip
        save_png(grid, os.path.join(record.run_dir, "cams.png"))
    cam_quality = build.build_cam_quality(cfg)  # MaxBoxAccV2 on boxed data, faithfulness (#9)
    if cam_quality is not None:
        metrics.update(cam_quality(model, data, device))

    # --- report
    log.info("checkpoint %s (epoch %s): test acc1 %.2f", path, state.get("epoch"),
             metrics["test/acc1"])  # fmt: skip
    return record.write(
        "completed",
        epochs_completed=0,
        checkpoint=path,
        checkpoint_epoch=state.get("epoch"),
        checkpoint_dataset=state["meta"]["dataset"]["name"],
        metrics={k: round(v, 4) for k, v in metrics.items()},
    )
