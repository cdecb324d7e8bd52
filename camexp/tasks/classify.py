"""task=classify: train a classifier (CE, optionally with CAM-loss) and evaluate it."""

import logging

from omegaconf import DictConfig, OmegaConf

from camexp.run import distributed
from camexp.run.record import RunRecord
from camexp.training import parts as build

log = logging.getLogger(__name__)


def hparams(cfg: DictConfig) -> dict:
    """The knobs a sweep turns, flattened for TensorBoard's HParams dashboard."""
    flat = {
        "backbone": cfg.backbone.name,
        "dataset": cfg.dataset.name,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.optim.lr,
        "regularizer": OmegaConf.to_yaml(cfg.regularizer).replace("\n", " ").strip(),
    }
    flat.update({f"loss.{name}.weight": term.weight for name, term in cfg.loss.items()})
    return flat


def run(cfg: DictConfig, record: RunRecord) -> dict:
    # --- setup: seed, device, the objective (its terms decide whether CAMs are needed)
    build.check_common(cfg)
    device = build.resolve_device(str(cfg.device))
    build.seed_everything(int(cfg.seed), bool(cfg.deterministic))
    objective = build.build_loss(cfg).to(device)

    # --- data, model, optimisation
    data = build.build_data(cfg, device)
    model = build.build_model(cfg, data, objective.needs_cam, device)
    meta = build.model_meta(cfg, data, model)
    model = distributed.wrap(model, device)  # DistributedDataParallel under torchrun
    optimizer = build.build_optimizer(cfg, model)
    log.info(
        "%s on %s: %d classes, %d train batches of %d, device %s",
        cfg.backbone.name,
        cfg.dataset.name,
        data.num_classes,
        len(data.train),
        cfg.batch_size,
        device,
    )

    # --- train and test
    trainer = build.build_trainer(
        cfg, record, model=model, objective=objective, data=data, optimizer=optimizer,
        device=device, meta=meta,
    )  # fmt: skip
    results = trainer.fit_and_report(hparams(cfg))
    if not distributed.is_main():  # rank 0 tests and writes the results
        return results
    m = results["metrics"]
    log.info(
        "test acc1 %.2f (last), %.2f (best on val, epoch %s); %.0f train images/s",
        m["test/acc1"],
        m["test_best/acc1"],
        m.get("best_epoch"),
        results["train_images_per_s"],
    )
    return record.write("completed", **results)
