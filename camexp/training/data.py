"""Data assembly from ``cfg.dataset``: the train, val (held out of train, seeded) and test
loaders, the fixed picture batch and, for boxed test sets, the ground-truth boxes."""

from dataclasses import dataclass
from functools import partial

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import Subset

from camexp.data.boxes import folder_test_boxes
from camexp.data.erasing import erasing_of
from camexp.data.folder import box_transform, folder_loader, folder_transform
from camexp.data.memory import InMemoryLoader
from camexp.data.progressive import progressive_of
from camexp.data.sources import ArraySplit, split_train_val
from camexp.errors import UserError
from camexp.run.distributed import local_batch, rank, world_size


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
        seed=int(cfg.seed), shard=(rank(), world_size()), erasing=erasing_of(cfg.get("erasing")),
        progressive=progressive_of(cfg.get("progressive")), epochs=int(cfg.epochs), **common,
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
    if progressive_of(cfg.get("progressive")) is not None:
        raise UserError(
            f"progressive resizing is implemented for in-memory datasets only, not {d.name}'s "
            "image folders; leave progressive.initial_scale at 1"
        )
    test_set = load_source(d, "test")
    if list(train_set.classes) != list(test_set.classes):
        raise UserError(f"the train and test splits of {d.name} have different classes")
    train_set.transform = folder_transform(
        True, size, mean, std, erasing=erasing_of(cfg.get("erasing"))
    )
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
    first = shown[0][0]  # the channel count, whatever cam_pictures asks (0: no pictures)
    pics = [shown[i] for i in range(min(int(cfg.get("cam_pictures", 8)), len(shown)))]
    pic_images = torch.stack([p[0] for p in pics]) if pics else first.new_empty((0, *first.shape))
    pic_images = pic_images.to(device)
    pic_labels = torch.tensor([p[1] for p in pics], dtype=torch.long, device=device)
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
