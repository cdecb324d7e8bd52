"""task=transfer: fine-tune or linear-probe a pretrained backbone on a target dataset.

    camexp task=transfer init.checkpoint=RUN/checkpoints/best.pt dataset=digits28 \
        transfer.mode=finetune loss.cam.weight=0      # CAM-loss during transfer: off

The source is a camexp checkpoint (``init.checkpoint``; its architecture is the checkpoint's
``meta.model``, so ``backbone`` need not be restated) or timm's published weights
(``backbone.pretrained=true``, needs the hub). The classifier is replaced for the target's
classes; everything else loads strictly. Whether CAM-loss is on during transfer
(``loss.cam.weight``) is independent of how the source was trained, and results.json records the
source (path and a summary of its config) so a report can group by pretraining. A source trained
on this very dataset must have held out the same val images (``dataset.val_size`` and
``dataset.split_seed`` equal to its ``meta.split``), or val would hold images it trained on. The
rest is the shared wiring (camexp/training/wiring.py), DDP included.
"""

import json
import logging
import os

from omegaconf import DictConfig, OmegaConf

from camexp.errors import UserError
from camexp.models import surgery
from camexp.models.from_checkpoint import (
    HELD_OUT,
    build_from_spec,
    check_checkpoint,
    check_split,
    read_checkpoint,
)
from camexp.models.provenance import source_summary
from camexp.run.record import RunRecord
from camexp.training.data import Data
from camexp.training.model import build_model, configured_arch, place
from camexp.training.wiring import TaskParts, train

log = logging.getLogger(__name__)
ROLE = "source checkpoint"


def read_source(cfg: DictConfig) -> tuple[dict | None, dict]:
    """The source checkpoint (or None for timm weights) and its summary for results.json."""
    path = cfg.init.checkpoint
    pretrained = bool(cfg.backbone.pretrained)
    if path and pretrained:
        raise UserError(
            "init.checkpoint and backbone.pretrained=true both name a source; choose one"
        )
    if not path and not pretrained:
        raise UserError(
            "task=transfer needs a source: init.checkpoint=PATH (a camexp run's "
            "checkpoints/best.pt) or backbone.pretrained=true (timm's weights, needs the hub)"
        )
    if pretrained:
        return None, {"kind": "timm", "backbone": str(cfg.backbone.name), "pretrained": True}
    path = os.path.abspath(str(path))
    state = read_checkpoint(path, ROLE)
    results_path = os.path.join(os.path.dirname(os.path.dirname(path)), "results.json")
    return state, source_summary(state, path, read_source_results(results_path))


def read_source_results(path: str) -> dict | None:
    """The source run's results.json (provenance for grouping), or None when it has none."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(
            f"the transfer source's {path} is not readable JSON ({err}); repair or delete it "
            "(it only records where the source came from)"
        ) from err
    if not isinstance(results, dict):
        raise UserError(
            f"the transfer source's {path} holds a JSON {type(results).__name__}, not a camexp "
            "results object; repair or delete it"
        )
    return results


def source_model(state: dict | None, source: dict):
    """The model step of the wiring: the source's architecture under a new head, its weights,
    then the mode's freezing and BN handling."""

    def transferred(cfg: DictConfig, data: Data, needs_cam: bool, device):
        t = cfg.transfer
        if state is None:  # timm's weights: the architecture is cfg.backbone
            model = build_model(cfg, data, needs_cam, device)
            arch = configured_arch(cfg)
        else:
            spec = state["meta"]["model"]
            if not cfg.init.adapt_channels:
                check_checkpoint(state, source["checkpoint"], role=ROLE,
                                 expect={"in_chans": data.channels}, hints={"in_chans": (
                    "set init.adapt_channels=true to adapt the first conv (timm's rule: sum of "
                    "the channels for 3 -> 1, repeat and rescale for 1 -> 3)")})  # fmt: skip
            model = build_from_spec(
                spec, needs_cam=needs_cam, num_classes=data.num_classes, in_chans=data.channels,
                image_size=data.image_size, drop_rate=float(cfg.backbone.drop_rate),
            )  # fmt: skip
            arch = {k: spec[k] for k in ("backbone", "kwargs", "small_input_stem")}
            line = surgery.load_source_weights(
                model, state["model"], path=source["checkpoint"],
                source_chans=spec["in_chans"], target_chans=data.channels,
            )  # fmt: skip
            log.info("%s", line)
            model = place(cfg, model, device)
        counts = surgery.setup_transfer(
            model, mode=str(t.mode), freeze_stages=int(t.freeze_stages), bn=str(t.bn)
        )
        if t.mode == "linear_probe" and needs_cam:
            log.warning(
                "linear_probe with a CAM term: the backbone is frozen and CAM-loss does not train "
                "the classifier (loss.cam.detach_classifier), so its weight has no effect"
            )
        log.info(
            "transfer %s from %s (%s): %d frozen tensors, %d BN layers with frozen statistics, "
            "%d trainable parameters, %d classes",
            t.mode, source.get("checkpoint", "timm weights"), source.get("loss", "?"),
            counts["frozen_tensors"], counts["frozen_bn_layers"],
            counts["trainable_parameters"], data.num_classes,
        )  # fmt: skip
        summary = {"mode": str(t.mode), "head_lr_mult": float(t.head_lr_mult),
                   "freeze_stages": int(t.freeze_stages), "bn": str(t.bn), **counts}  # fmt: skip
        record_fields["transfer"] = summary  # results.json's "transfer" entry, once the run ends
        return model, arch

    record_fields: dict = {}
    return transferred, record_fields


def param_groups(cfg: DictConfig, model) -> list[dict]:
    """Backbone and head groups; the head's lr is ``optim.lr * transfer.head_lr_mult``."""
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    return surgery.transfer_param_groups(
        model,
        lr=float(optim["lr"]),
        head_lr_mult=float(cfg.transfer.head_lr_mult),
        weight_decay=float(optim["weight_decay"]),
        decay_norm_and_bias=bool(optim["decay_norm_and_bias"]),
    )


def run(cfg: DictConfig, record: RunRecord) -> dict:
    if float(cfg.transfer.head_lr_mult) <= 0:
        raise UserError(f"transfer.head_lr_mult must be > 0, got {cfg.transfer.head_lr_mult}")
    state, source = read_source(cfg)  # a wrong path stops before any data loads
    if state is not None and state["meta"]["dataset"]["name"] == str(cfg.dataset.name):
        check_split(state, source["checkpoint"], role=ROLE, hint=" (the source's split)",
                    split={k: int(cfg.dataset[k]) for k in HELD_OUT})  # fmt: skip
    record.base["source"] = source  # in results.json from now on, failed runs included
    model, fields = source_model(state, source)
    parts = TaskParts(
        model=model,
        param_groups=param_groups,
        hparams={"transfer.mode": str(cfg.transfer.mode), "source.loss": source.get("loss")},
        meta={"source": source},
        fields=fields,
    )
    return train(cfg, record, parts)
