"""task=eval ckpt=PATH: accuracy of a checkpoint on val and test, plus CAM pictures.

    camexp task=eval ckpt=RUN/checkpoints/best.pt             # the dataset it was trained on
    camexp task=eval ckpt=... dataset=cluttered_fashion_mnist task.allow_other_dataset=true

The model is the checkpoint's (its ``meta.model``: no backbone to restate). The data is
``dataset``; it must be what the checkpoint was trained on (class names, input size and
normalisation), checked by the one contract check (camexp/models/from_checkpoint.py), unless
``task.allow_other_dataset=true``: then only the channel and class counts must fit.

On the checkpoint's own dataset, val is the checkpoint's held-out split (its ``meta.split``:
val_size, split_seed, subset), whatever the config says, so val never holds training images; a
``dataset.val_size=`` or ``dataset.split_seed=`` stated on the command line that differs from it is
refused. A checkpoint from before ``meta.split`` existed: a warning, and the config's split.
"""

import logging
import os

from omegaconf import DictConfig, open_dict

from camexp.engine import evaluate
from camexp.errors import UserError
from camexp.models.from_checkpoint import (
    HELD_OUT,
    check_checkpoint,
    check_split,
    model_from_checkpoint,
    read_checkpoint,
    saved_split,
)
from camexp.precision import precision_name
from camexp.report.pictures import cam_grid, run_title, save_png, weights_title
from camexp.run.progress import track
from camexp.run.record import RunRecord
from camexp.training.data import build_data
from camexp.training.model import build_cam_quality, place
from camexp.training.setup import amp_dtype, resolve_device, seed_everything

log = logging.getLogger(__name__)
ROLE = "checkpoint"
OTHER = "set task.allow_other_dataset=true to evaluate it on this dataset anyway"


def use_checkpoint_split(cfg: DictConfig, state: dict, path: str, stated: list) -> dict | None:
    """Set ``cfg.dataset``'s split to the checkpoint's (the keys not ``stated`` on the command
    line; stated ones must equal it). Returns the split used, None for an older checkpoint."""
    saved = saved_split(state, path, ROLE)
    if saved is None:
        return None
    keys = {o.split("=", 1)[0].lstrip("+~") for o in stated}
    with open_dict(cfg.dataset):
        for key in (*HELD_OUT, "subset"):
            if key in saved and not any(k.startswith(f"dataset.{key}") for k in keys):
                cfg.dataset[key] = saved[key]
    d = cfg.dataset
    check_split(state, path, role=ROLE, split={k: int(d[k]) for k in HELD_OUT},
                hint=", or leave it unset")  # fmt: skip
    return {"val_size": int(d.val_size), "split_seed": int(d.split_seed),
            "subset": dict(d.get("subset") or {})}  # fmt: skip


def run(cfg: DictConfig, record: RunRecord) -> dict:
    # --- setup: the checkpoint first, so a bad path stops before any data loads
    if not cfg.ckpt:
        raise UserError("task=eval needs a checkpoint: add ckpt=PATH (a run's checkpoints/best.pt)")
    path = os.path.abspath(str(cfg.ckpt))
    state = read_checkpoint(path, ROLE)
    device = resolve_device(str(cfg.device))
    record.note(device=device)
    seed_everything(int(cfg.seed), bool(cfg.deterministic))

    # --- data (the checkpoint's held-out split on its own dataset), checked; then its model
    same = state["meta"]["dataset"]["name"] == str(cfg.dataset.name)
    split = use_checkpoint_split(cfg, state, path, record.base["overrides"]) if same else None
    data = build_data(cfg, device)
    expect = {"num_classes": data.num_classes, "in_chans": data.channels}
    if not cfg.task.allow_other_dataset:
        expect.update(classes=data.classes, image_size=data.image_size, mean=list(data.mean),
                      std=list(data.std))  # fmt: skip
    hints = {k: OTHER for k in ("classes", "image_size", "mean", "std")}
    check_checkpoint(state, path, role=ROLE, expect=expect, hints=hints)
    model = place(cfg, model_from_checkpoint(state, path, needs_cam=False, role=ROLE), device)

    # --- test
    amp = amp_dtype(str(cfg.amp), device)
    record.note(precision=precision_name(amp))
    metrics = {}
    if data.val is not None:
        metrics.update(evaluate(model, track(data.val, "val"), device, amp_dtype=amp, prefix="val"))
    metrics.update(evaluate(model, track(data.test, "test"), device, amp_dtype=amp, prefix="test"))
    if len(data.picture_labels) and model.exact_cam:
        weights = os.path.splitext(os.path.basename(path))[0]  # last | best | another file
        title = weights_title(run_title(record.run_dir, record.base["overrides"]), weights,
                              state.get("epoch"))  # fmt: skip
        grid = cam_grid(model, data.picture_images, data.picture_labels, data.mean, data.std,
                        data.classes, title=title)  # fmt: skip
        save_png(grid, os.path.join(record.run_dir, "cams.png"))
    cam_quality = build_cam_quality(cfg)  # MaxBoxAccV2 on boxed data, faithfulness (#9)
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
        checkpoint_precision=state.get("precision_label") or state.get("precision"),
        split=split,
        metrics={k: round(v, 4) for k, v in metrics.items()},
    )
