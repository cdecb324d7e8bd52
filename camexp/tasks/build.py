"""Build the common parts from the config, in the order a task needs them.

This module and the task modules are the only places besides the entry point that read ``cfg``;
everything they build takes plain arguments.
"""

import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from camexp.backbone import Backbone, build_backbone
from camexp.data.folder import folder_loader, folder_transform, image_folder
from camexp.data.memory import InMemoryLoader
from camexp.data.regularizers import Regularizer
from camexp.data.sources import load_split, split_train_val
from camexp.errors import UserError
from camexp.losses import Objective, build_objective

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- run setup
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"device={name!r} is not an option; use auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


def amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    if name in ("none", None):
        return None
    if name == "bf16":
        return torch.bfloat16
    raise UserError(f"amp={name!r} is not an option; use none or bf16")


def check_common(cfg: DictConfig) -> None:
    if int(cfg.batch_size) < 1:
        raise UserError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if int(cfg.epochs) < 1:
        raise UserError(f"epochs must be >= 1, got {cfg.epochs}")


# ----------------------------------------------------------------------------- data
@dataclass
class Data:
    train: object
    val: object | None
    test: object
    num_classes: int
    channels: int
    image_size: int
    mean: tuple
    std: tuple
    classes: list
    picture_images: torch.Tensor  # a fixed batch of normalised val images for CAM pictures
    picture_labels: torch.Tensor


def take(split, count):
    if count is None or count >= len(split.labels):
        return split.images, split.labels
    return split.images[:count], split.labels[:count]


def build_data(cfg: DictConfig, device: torch.device, train_split: str = "train") -> Data:
    d = cfg.dataset
    if d.name == "imagefolder":
        return build_folder_data(cfg, device)
    full = load_split(d.name, d.root, "train", download=bool(d.download))
    test = load_split(d.name, d.root, "test", download=bool(d.download))
    train_idx, val_idx = split_train_val(len(full.labels), int(d.val_size), int(d.split_seed))
    subset = d.get("subset") or {}
    train_idx = train_idx[: subset.get("train")] if subset.get("train") else train_idx
    val_idx = val_idx[: subset.get("val")] if subset.get("val") else val_idx
    test_images, test_labels = take(test, subset.get("test"))
    mean, std = tuple(d.mean), tuple(d.std)
    channels, size = full.images.shape[1], full.images.shape[-1]
    if len(mean) != channels or len(std) != channels:
        raise UserError(
            f"dataset.mean/std have {len(mean)}/{len(std)} values for {channels}-channel images"
        )
    common = dict(mean=mean, std=std, device=device, channels_last=bool(cfg.channels_last))
    train = InMemoryLoader(
        full.images[train_idx],
        full.labels[train_idx],
        int(cfg.batch_size),
        train=True,
        crop_padding=int(d.crop_padding),
        hflip=bool(d.hflip),
        drop_last=True,
        seed=int(cfg.seed),
        **common,
    )
    eval_batch = int(cfg.get("eval_batch_size") or cfg.batch_size)
    val = None
    if len(val_idx):
        val = InMemoryLoader(
            full.images[val_idx], full.labels[val_idx], eval_batch, train=False, **common
        )
    test_loader = InMemoryLoader(test_images, test_labels, eval_batch, train=False, **common)
    pictures = val or test_loader
    n_pic = min(int(cfg.get("cam_pictures", 8)), len(pictures.labels))
    pic_images = next(
        iter(
            InMemoryLoader(
                pictures.images[:n_pic],
                pictures.labels[:n_pic],
                max(n_pic, 1),
                train=False,
                **common,
            )
        )
    )[0]
    return Data(
        train,
        val,
        test_loader,
        len(full.classes),
        channels,
        size,
        mean,
        std,
        list(full.classes),
        pic_images,
        pictures.labels[:n_pic],
    )


def build_folder_data(cfg: DictConfig, device: torch.device) -> Data:
    d = cfg.dataset
    if not d.root:
        raise UserError("dataset=imagefolder needs dataset.root=DIR holding train/ and val/")
    size, mean, std = int(d.image_size), tuple(d.mean), tuple(d.std)
    train_set = image_folder(d.root, "train")
    val_set = image_folder(d.root, "val")
    if train_set.classes != val_set.classes:
        raise UserError(f"{d.root}/train and {d.root}/val have different class folders")
    train_set.transform = folder_transform(True, size, mean, std)
    val_set.transform = folder_transform(False, size, mean, std)
    workers = int(d.workers)
    train = folder_loader(
        train_set,
        int(cfg.batch_size),
        train=True,
        workers=workers,
        device=device,
        seed=int(cfg.seed),
    )
    val = folder_loader(val_set, int(cfg.batch_size), train=False, workers=workers, device=device)
    n_pic = min(int(cfg.get("cam_pictures", 8)), len(val_set))
    pics = [val_set[i] for i in range(n_pic)]
    pic_images = torch.stack([p[0] for p in pics]).to(device)
    pic_labels = torch.tensor([p[1] for p in pics], device=device)
    # ImageNet-style folders have no labelled test split: val is both selection and report.
    return Data(
        train,
        val,
        val,
        len(train_set.classes),
        3,
        size,
        mean,
        std,
        list(train_set.classes),
        pic_images,
        pic_labels,
    )


# ----------------------------------------------------------------------------- model and loss
def build_loss(cfg: DictConfig) -> Objective:
    terms = OmegaConf.to_container(cfg.loss, resolve=True)
    return build_objective(terms, instantiate)


def build_model(cfg: DictConfig, data: Data, needs_cam: bool, device: torch.device) -> Backbone:
    b = cfg.backbone
    extra = OmegaConf.to_container(b.kwargs) if b.get("kwargs") else {}
    model = build_backbone(
        str(b.name),
        data.num_classes,
        data.channels,
        data.image_size,
        needs_cam=needs_cam,
        pretrained=bool(b.pretrained),
        small_input_stem=bool(b.small_input_stem),
        drop_rate=float(b.drop_rate),
        **extra,
    )
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def model_meta(cfg: DictConfig, data: Data, model: Backbone) -> dict:
    return {
        "backbone": str(cfg.backbone.name),
        "num_classes": data.num_classes,
        "in_chans": data.channels,
        "small_input_stem": bool(cfg.backbone.small_input_stem),
        "exact_cam": model.exact_cam,
    }


def build_regularizer(cfg: DictConfig, num_classes: int) -> Regularizer:
    return instantiate(cfg.regularizer, num_classes=num_classes, seed=int(cfg.seed) + 1)


# ----------------------------------------------------------------------------- optimisation
def param_groups(model: torch.nn.Module, weight_decay: float, decay_norm_and_bias: bool):
    """Optionally exempt norm weights and biases (every 1-d parameter) from weight decay."""
    if decay_norm_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(cfg: DictConfig, model: torch.nn.Module):
    spec = OmegaConf.to_container(cfg.optim, resolve=True)
    decay_norm_and_bias = spec.pop("decay_norm_and_bias", True)
    groups = param_groups(model, float(spec.get("weight_decay", 0.0)), decay_norm_and_bias)
    return instantiate(spec)(groups)


def build_scheduler(cfg: DictConfig, optimizer, steps_per_epoch: int):
    return instantiate(cfg.sched)(
        optimizer, epochs=int(cfg.epochs), steps_per_epoch=steps_per_epoch
    )
