"""Build the common parts from the config, in the order a task needs them.

This module, camexp/training/wiring.py (the order) and the task modules are the only places besides
the entry point that read ``cfg``; everything they build takes plain arguments.
"""

import logging
import os
import random
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from timm.optim import Lookahead
from torch.utils.data import Subset

from camexp.data.folder import box_transform, folder_loader, folder_transform
from camexp.data.memory import InMemoryLoader
from camexp.data.regularizers import Regularizer
from camexp.data.sources import ArraySplit, split_train_val
from camexp.errors import UserError
from camexp.losses import Objective, build_objective
from camexp.metrics.boxes import folder_test_boxes
from camexp.models.backbone import Backbone, build_backbone
from camexp.models.from_checkpoint import dataset_identity, model_spec, split_identity
from camexp.models.teacher import check_teacher_terms
from camexp.precision import choose_amp, describe
from camexp.run import distributed
from camexp.run.distributed import local_batch, rank, world_size

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- run setup
def resolve_device(name: str) -> torch.device:
    if distributed.enabled():  # under torchrun: this rank's GPU, or the CPU with gloo
        return distributed.setup(name)
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
    """``amp`` -> the autocast dtype (None: fp32), logged with its reason (camexp/precision.py)."""
    dtype, reason = choose_amp(name, device)
    log.info("precision: %s (amp=%s: %s)", describe(dtype), name, reason)
    return dtype


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
    test_boxes: list | None = None  # per test image (n, 4) boxes, for CAM metrics (#9)
    box_test: object | None = None  # the images of those boxes when not `test` (folder: no crop)


def take(images: torch.Tensor, labels: torch.Tensor, count: int | None):
    return (images, labels) if count is None else (images[:count], labels[:count])


def load_source(d: DictConfig, split: str):
    """``dataset.source`` is a leaf: a reader returning an ArraySplit (in-memory path) or a torch
    Dataset with ``classes``, ``targets`` and a settable ``transform`` (folder path)."""
    return instantiate(d.source, split=split)


def build_data(cfg: DictConfig, device: torch.device) -> Data:
    d = cfg.dataset
    full = load_source(d, "train")
    if not isinstance(full, ArraySplit):
        return build_folder_data(cfg, device, full)
    test = load_source(d, "test")
    train_idx, val_idx = split_train_val(len(full.labels), int(d.val_size), int(d.split_seed))
    subset = d.get("subset") or {}
    train_idx = train_idx[: subset.get("train")]
    val_idx = val_idx[: subset.get("val")]
    test_images, test_labels = take(test.images, test.labels, subset.get("test"))
    mean, std = tuple(d.mean), tuple(d.std)
    channels, size = full.images.shape[1], full.images.shape[-1]
    if len(mean) != channels or len(std) != channels:
        raise UserError(
            f"dataset.mean/std have {len(mean)}/{len(std)} values for {channels}-channel images"
        )
    common = dict(mean=mean, std=std, device=device, channels_last=bool(cfg.channels_last))
    eval_batch = int(cfg.get("eval_batch_size") or cfg.batch_size)
    train = InMemoryLoader(
        full.images[train_idx], full.labels[train_idx], local_batch(int(cfg.batch_size)),
        train=True, crop_padding=int(d.crop_padding), hflip=d.hflip, drop_last=True,
        seed=int(cfg.seed), shard=(rank(), world_size()), **common,
    )  # fmt: skip
    if len(train) == 0:
        raise UserError(f"batch_size={cfg.batch_size} exceeds the {len(train_idx)} training images")
    val = None
    if len(val_idx):
        val = InMemoryLoader(
            full.images[val_idx], full.labels[val_idx], eval_batch, train=False, **common
        )
    test_loader = InMemoryLoader(test_images, test_labels, eval_batch, train=False, **common)
    shown = val or test_loader
    n_pic = min(int(cfg.get("cam_pictures", 8)), len(shown.labels))
    pic_loader = InMemoryLoader(
        shown.images[:n_pic], shown.labels[:n_pic], max(n_pic, 1), train=False, **common
    )
    pic_images = next(iter(pic_loader))[0] if n_pic else torch.empty(0)
    return Data(
        train, val, test_loader, len(full.classes), channels, size, mean, std,
        list(full.classes), pic_images, shown.labels[:n_pic],
        test_boxes=getattr(test, "boxes", None) or None,
    )  # fmt: skip


def build_folder_data(cfg: DictConfig, device: torch.device, train_set) -> Data:
    """Folder datasets: DataLoader workers, ImageNet-style transforms, val held out of train."""
    d = cfg.dataset
    size, mean, std = int(d.image_size), tuple(d.mean), tuple(d.std)
    test_set = load_source(d, "test")
    if list(train_set.classes) != list(test_set.classes):
        raise UserError(f"the train and test splits of {d.name} have different classes")
    train_set.transform = folder_transform(True, size, mean, std)
    test_set.transform = folder_transform(False, size, mean, std)
    val_set = None
    if int(d.val_size):
        held_out = load_source(d, "train")  # a second view of train with eval transforms
        held_out.transform = test_set.transform
        train_idx, val_idx = split_train_val(len(train_set), int(d.val_size), int(d.split_seed))
        train_set = Subset(train_set, train_idx.tolist())
        val_set = Subset(held_out, val_idx.tolist())
    workers, batch = int(d.workers), int(cfg.batch_size)
    loader = partial(
        folder_loader, workers=workers, device=device, on_corrupt=str(d.get("on_corrupt", "stop"))
    )
    train = loader(train_set, batch, train=True, seed=int(cfg.seed))
    val = loader(val_set, batch, train=False) if val_set is not None else None
    test = loader(test_set, batch, train=False)
    shown = val_set if val_set is not None else test_set
    pics = [shown[i] for i in range(min(int(cfg.get("cam_pictures", 8)), len(shown)))]
    pic_images = torch.stack([p[0] for p in pics]).to(device)
    pic_labels = torch.tensor([p[1] for p in pics], device=device)
    classes = list(test_set.classes)
    box_set = boxes = None
    if cfg.get("metrics") and cfg.metrics.get("localization"):  # CUB / ImageNet boxes (#9, #13)
        box_set = load_source(d, "test")  # wsolevaluation's geometry: Resize((S, S)), no crop
        box_set.transform = box_transform(size, mean, std)
        frame = int(cfg.metrics.box_size or size)  # CamQuality scores the CAM in this frame
        boxes = folder_test_boxes(box_set, frame, d.get("root"), str(cfg.metrics.box_convention))
    return Data(
        train, val, test, len(classes), pic_images.shape[1], size, mean, std, classes,
        pic_images, pic_labels, test_boxes=boxes,
        box_test=loader(box_set, batch, train=False) if boxes is not None else None,
    )  # fmt: skip


# ----------------------------------------------------------------------------- model and loss
def build_loss(cfg: DictConfig) -> Objective:
    terms = OmegaConf.to_container(cfg.loss, resolve=True)
    # task=kd composes loss.ce.weight from the terms' reference CE weights unless it was stated
    stated = "ce" not in cfg.loss or not OmegaConf.is_interpolation(cfg.loss.ce, "weight")
    objective = build_objective(terms, instantiate, ce_stated=stated)
    # KD terms (needs_teacher) stop here unless task=kd supplies a teacher (models/teacher.py)
    check_teacher_terms(objective, has_teacher=str(cfg.task.name) == "kd")
    return objective


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


def configured_param_groups(cfg: DictConfig, model: torch.nn.Module) -> list[dict]:
    """task=classify's groups: every trainable parameter, norms and biases optionally undecayed."""
    return param_groups(model, float(cfg.optim.weight_decay), bool(cfg.optim.decay_norm_and_bias))


CAMEXP_OPTIM_KEYS = ("decay_norm_and_bias", "lookahead", "lr_scaling")  # not the optimizer's


def build_optimizer(cfg: DictConfig, model: torch.nn.Module, groups: list | None = None):
    """``cfg.optim`` over ``groups`` (default: :func:`configured_param_groups`), every group's lr
    scaled by :func:`lr_scale`, wrapped in timm's Lookahead when ``optim.lookahead.k > 0``."""
    spec = OmegaConf.to_container(cfg.optim, resolve=True)
    camexp_keys = {key: spec.pop(key, None) for key in CAMEXP_OPTIM_KEYS}
    groups = configured_param_groups(cfg, model) if groups is None else groups
    optimizer = call_partial("optim", instantiate(spec), groups)
    scale = lr_scale(camexp_keys["lr_scaling"], int(cfg.batch_size))
    for group in optimizer.param_groups:  # before the scheduler reads them as initial_lr
        group["lr"] *= scale
    if scale != 1.0:
        log.info("optim: lr x %.4g for batch %d (lr_scaling %s)", scale, int(cfg.batch_size),
                 camexp_keys["lr_scaling"])  # fmt: skip
    lookahead = camexp_keys["lookahead"] or {"k": 0}
    if int(lookahead["k"]) > 0:
        alpha, k = float(lookahead["alpha"]), int(lookahead["k"])
        optimizer = call_partial("optim.lookahead", Lookahead, optimizer, alpha=alpha, k=k)
    return optimizer


def lr_scale(scaling: dict | None, batch_size: int) -> float:
    """The factor on every configured lr for a global batch of ``batch_size``: 1 (``none``),
    ``batch_size / base_batch`` (``linear``, Goyal et al. 2017) or its square root (``sqrt``)."""
    rule = (scaling or {}).get("rule", "none")
    if rule == "none":
        return 1.0
    if rule not in ("linear", "sqrt"):
        raise UserError(
            f"optim.lr_scaling.rule={rule!r} is not an option; use none, linear or sqrt"
        )
    base = int(scaling["base_batch"])
    if base <= 0:
        raise UserError(f"optim.lr_scaling.base_batch={base} must be a positive batch size")
    ratio = batch_size / base
    return ratio if rule == "linear" else ratio**0.5


def build_scheduler(cfg: DictConfig, optimizer, steps_per_epoch: int):
    return call_partial(
        "sched", instantiate(cfg.sched), optimizer, epochs=int(cfg.epochs),
        steps_per_epoch=steps_per_epoch,
    )  # fmt: skip


def call_partial(group: str, factory, *args, **kwargs):
    """Call a ``_partial_`` leaf; an unknown key or a value torch rejects (``+optim.bogus=1``,
    ``optim.momentum=-1``) becomes one line naming the group, not a traceback."""
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"{group}: {err}; check the {group}.* keys (camexp --cfg job)") from err


# ----------------------------------------------------------------------------- CAM quality (#9)
def build_cam_quality(cfg: DictConfig):
    """``cfg.metrics`` -> camexp.metrics.CamQuality, or None when the group is absent."""
    return instantiate(cfg.metrics) if cfg.get("metrics") else None
