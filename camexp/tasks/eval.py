"""task=eval ckpt=PATH: accuracy of a checkpoint on val and test, plus CAM pictures.

The model is built from the current config (backbone, dataset) and checked against the
checkpoint's recorded architecture and class count before any weight is loaded.
"""

import logging
import os

from omegaconf import DictConfig

from camexp.engine import evaluate
from camexp.errors import UserError
from camexp.report.pictures import cam_grid, save_png
from camexp.run.checkpoint import load_checkpoint
from camexp.run.record import RunRecord
from camexp.training import parts as build

log = logging.getLogger(__name__)


def check_compatible(meta: dict, expected: dict, path: str) -> None:
    for key in ("backbone", "num_classes", "in_chans", "small_input_stem"):
        if key in meta and meta[key] != expected[key]:
            raise UserError(
                f"checkpoint {path} was trained with {key}={meta[key]}, this run has "
                f"{key}={expected[key]}; pass the matching backbone/dataset (e.g. "
                f"backbone.name={meta.get('backbone')})"
            )


def run(cfg: DictConfig, record: RunRecord) -> dict:
    if not cfg.get("ckpt"):
        raise UserError("task=eval needs a checkpoint: add ckpt=PATH (a run's checkpoints/best.pt)")
    state = load_checkpoint(str(cfg.ckpt))
    build.check_common(cfg)
    device = build.resolve_device(str(cfg.device))
    build.seed_everything(int(cfg.seed), bool(cfg.deterministic))
    data = build.build_data(cfg, device)
    model = build.build_model(cfg, data, needs_cam=False, device=device)
    check_compatible(state.get("meta", {}), build.model_meta(cfg, data, model), str(cfg.ckpt))
    model.load_state_dict(state["model"])

    amp = build.amp_dtype(str(cfg.amp), device)
    metrics = {}
    if data.val is not None:
        metrics.update(evaluate(model, data.val, device, amp_dtype=amp, prefix="val"))
    metrics.update(evaluate(model, data.test, device, amp_dtype=amp, prefix="test"))
    if len(data.picture_labels):
        grid = cam_grid(model, data.picture_images, data.picture_labels, data.mean, data.std)
        save_png(grid, os.path.join(record.run_dir, "cams.png"))
    cam_quality = build.build_cam_quality(cfg)  # MaxBoxAccV2 on boxed data, faithfulness (#9)
    if cam_quality is not None:
        metrics.update(cam_quality(model, data, device))
    log.info(
        "checkpoint %s (epoch %s): test acc1 %.2f",
        cfg.ckpt,
        state.get("epoch"),
        metrics["test/acc1"],
    )
    return record.write(
        "completed",
        epochs_completed=0,
        checkpoint=os.path.abspath(cfg.ckpt),
        checkpoint_epoch=state.get("epoch"),
        metrics={k: round(v, 4) for k, v in metrics.items()},
    )
