"""task=transfer: fine-tune or linear-probe a pretrained backbone on a target dataset.

    camexp task=transfer init.checkpoint=RUN/checkpoints/best.pt dataset=digits28 \
        transfer.mode=finetune loss.cam.weight=0      # CAM-loss during transfer: off

The source is a camexp checkpoint (``init.checkpoint``, loaded with ``weights_only=True``) or
timm's published weights (``backbone.pretrained=true``, needs the hub). The classifier is
replaced for the target's classes; everything else loads strictly. Whether CAM-loss is on during
transfer (``loss.cam.weight``) is independent of how the source was trained, and results.json
records the source (path and a summary of its config) so a report can group by pretraining.
"""

import json
import logging
import os

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from camexp.errors import UserError
from camexp.models import surgery as transfer
from camexp.run.checkpoint import load_checkpoint
from camexp.run.record import RunRecord
from camexp.tasks.classify import hparams
from camexp.training import parts as build

log = logging.getLogger(__name__)


def read_source(cfg: DictConfig) -> tuple[dict | None, dict]:
    """The source checkpoint (or None for timm weights) and its summary for results.json."""
    path = cfg.init.get("checkpoint")
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
    state = load_checkpoint(path)
    transfer.check_source_meta(
        state.get("meta", {}), str(cfg.backbone.name), bool(cfg.backbone.small_input_stem), path
    )
    results_path = os.path.join(os.path.dirname(os.path.dirname(path)), "results.json")
    results = None
    if os.path.isfile(results_path):
        with open(results_path) as f:
            results = json.load(f)
    return state, transfer.source_summary(state, path, results)


def build_optimizer(cfg: DictConfig, model):
    """The configured optimizer over backbone and head groups (head lr x transfer.head_lr_mult)."""
    spec = OmegaConf.to_container(cfg.optim, resolve=True)
    decay_norm_and_bias = spec.pop("decay_norm_and_bias", True)
    groups = transfer.transfer_param_groups(
        model,
        lr=float(spec["lr"]),
        head_lr_mult=float(cfg.transfer.head_lr_mult),
        weight_decay=float(spec.get("weight_decay", 0.0)),
        decay_norm_and_bias=decay_norm_and_bias,
    )
    return instantiate(spec)(groups)


def run(cfg: DictConfig, record: RunRecord) -> dict:
    # --- setup: the source first, so a wrong path or architecture stops before any data
    build.check_common(cfg)
    t = cfg.transfer
    if float(t.head_lr_mult) <= 0:
        raise UserError(f"transfer.head_lr_mult must be > 0, got {t.head_lr_mult}")
    state, source = read_source(cfg)
    record.base["source"] = source  # in results.json from now on, failed runs included
    device = build.resolve_device(str(cfg.device))
    build.seed_everything(int(cfg.seed), bool(cfg.deterministic))
    objective = build.build_loss(cfg).to(device)

    # --- data and model: the new head has the target's class count
    data = build.build_data(cfg, device)
    model = build.build_model(cfg, data, objective.needs_cam, device)
    if state is not None:
        meta = state.get("meta", {})
        adapt = bool(cfg.init.adapt_channels)
        transfer.check_channels(meta.get("in_chans"), data.channels, adapt, source["checkpoint"])
        line = transfer.load_source_weights(
            model,
            state["model"],
            path=source["checkpoint"],
            source_chans=meta.get("in_chans"),
            target_chans=data.channels,
        )
        log.info("%s", line)
        del state
    counts = transfer.setup_transfer(
        model, mode=str(t.mode), freeze_stages=int(t.freeze_stages), bn=str(t.bn)
    )
    cam_on = any(
        getattr(term, "needs_cam", False) and term.weight for term in objective.terms.values()
    )
    if t.mode == "linear_probe" and cam_on:
        log.warning(
            "linear_probe with a CAM term: the backbone is frozen and CAM-loss does not train "
            "the classifier (loss.cam.detach_classifier), so its weight has no effect"
        )
    log.info(
        "transfer %s from %s (%s): %d frozen tensors, %d BN layers with frozen statistics, "
        "%d trainable parameters, %d classes",
        t.mode,
        source.get("checkpoint", "timm weights"),
        source.get("loss", "?"),
        counts["frozen_tensors"],
        counts["frozen_bn_layers"],
        counts["trainable_parameters"],
        data.num_classes,
    )

    # --- optimisation
    optimizer = build_optimizer(cfg, model)

    # --- train and test
    meta = {**build.model_meta(cfg, data, model), "source": source}
    trainer = build.build_trainer(
        cfg, record, model=model, objective=objective, data=data, optimizer=optimizer,
        device=device, meta=meta,
    )  # fmt: skip
    summary = {
        "mode": str(t.mode),
        "head_lr_mult": float(t.head_lr_mult),
        "freeze_stages": int(t.freeze_stages),
        "bn": str(t.bn),
        **counts,
    }
    flat = {**hparams(cfg), "transfer.mode": str(t.mode), "source.loss": source.get("loss")}
    results = trainer.fit_and_report(flat)
    m = results["metrics"]
    log.info(
        "test acc1 %.2f (last), %.2f (best on val, epoch %s)",
        m["test/acc1"],
        m["test_best/acc1"],
        m.get("best_epoch"),
    )
    return record.write("completed", **results, transfer=summary)
