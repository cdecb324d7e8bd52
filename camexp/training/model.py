"""The model, the loss, the batch regularizer and the CAM-quality metrics from the config, and
the checkpoint record of what was built."""

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from camexp.data.regularizers import Regularizer
from camexp.losses import Objective, build_objective
from camexp.models.backbone import Backbone, build_backbone
from camexp.models.from_checkpoint import dataset_identity, model_spec, split_identity
from camexp.training.data import Data


def build_loss(cfg: DictConfig) -> Objective:
    terms = OmegaConf.to_container(cfg.loss, resolve=True)
    # task=kd composes loss.ce.weight from the terms' reference CE weights unless it was stated
    stated = "ce" not in cfg.loss or not OmegaConf.is_interpolation(cfg.loss.ce, "weight")
    return build_objective(terms, instantiate, ce_stated=stated)


def configured_arch(cfg: DictConfig) -> dict:
    """The architecture ``cfg.backbone`` names: what a checkpoint needs to rebuild the network."""
    b = cfg.backbone
    return {
        "backbone": str(b.name),
        "kwargs": OmegaConf.to_container(b.kwargs, resolve=True),
        "small_input_stem": bool(b.small_input_stem),
    }


def build_model(cfg: DictConfig, data: Data, needs_cam: bool, device: torch.device) -> Backbone:
    """The network of ``cfg.backbone`` for this data, placed for training."""
    b = cfg.backbone
    model = build_backbone(
        str(b.name),
        data.num_classes,
        data.channels,
        data.image_size,
        needs_cam=needs_cam,
        pretrained=bool(b.pretrained),
        small_input_stem=bool(b.small_input_stem),
        drop_rate=float(b.drop_rate),
        **OmegaConf.to_container(b.kwargs, resolve=True),
    )
    return place(cfg, model, device)


def place(cfg: DictConfig, model: Backbone, device: torch.device) -> Backbone:
    """On the device, in the run's memory format, optionally compiled."""
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        # Compile the feature extractor only: the module tree and its state_dict keys stay as
        # they are, so checkpoints are the same with and without compilation.
        model.model.forward_features = torch.compile(model.model.forward_features)
    return model


def checkpoint_meta(cfg: DictConfig, data: Data, model: Backbone, arch: dict) -> dict:
    """The checkpoint contract's record (camexp/models/from_checkpoint.py): the model spec, the
    dataset identity and its held-out split, written into every checkpoint of the run."""
    spec = model_spec(
        **arch, in_chans=data.channels, num_classes=data.num_classes,
        image_size=data.image_size, mean=data.mean, std=data.std, exact_cam=model.exact_cam,
    )  # fmt: skip
    d = cfg.dataset
    return {"model": spec, "dataset": dataset_identity(d.name, data.classes),
            "split": split_identity(d.val_size, d.split_seed, d.get("subset"))}  # fmt: skip


def build_regularizer(cfg: DictConfig, num_classes: int) -> Regularizer:
    return instantiate(cfg.regularizer, num_classes=num_classes, seed=int(cfg.seed) + 1)


def build_cam_quality(cfg: DictConfig):
    """``cfg.metrics`` -> camexp.metrics.CamQuality, or None when the group is absent."""
    return instantiate(cfg.metrics) if cfg.get("metrics") else None
