"""Image-folder datasets (ImageNet layout: ``root/<split>/<class>/<image>``) through DataLoader
workers, with the usual ImageNet-style augmentation, pinned memory and non-blocking copies."""

import os
import warnings
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset, default_collate
from torchvision import datasets, transforms

from camexp.errors import UserError


def image_folder(root: str | None, split: str, folders: dict | None = None):
    """``root/<folders[split]>/<class>/<image>``; by default train -> train/, test -> val/.

    The contract for every folder-type source: a torch Dataset with ``classes``, ``targets``
    and a settable ``transform``.
    """
    if not root:
        raise UserError("this dataset needs dataset.root=DIR holding train/ and val/")
    folders = folders or {"train": "train", "test": "val"}
    path = os.path.join(root, folders[split])
    if not os.path.isdir(path):
        raise UserError(
            f"image folder {path} does not exist; expected {root}/{{train,val}}/<class>/<image> "
            "(set dataset.root=DIR)"
        )
    try:
        return datasets.ImageFolder(path, loader=read_rgb, allow_empty=False)
    except (FileNotFoundError, RuntimeError) as err:
        raise UserError(f"image folder {path} holds no class folders with images ({err})") from err


def read_rgb(path: str) -> Image.Image:
    """The image at ``path`` in RGB (torchvision's ``pil_loader``), refusing a decompression bomb.

    An image over PIL's ``Image.MAX_IMAGE_PIXELS`` (PIL warns above it and raises above twice it)
    stops the run naming the file, whatever ``dataset.on_corrupt`` says: it is a file made to
    exhaust memory, or a scan far beyond any model input, not a damaged file to skip.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open(path, "rb") as f, Image.open(f) as image:
                return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UserError(
            f"image {path} is too large to decode safely ({err}); shrink or delete it"
        ) from None


def folder_transform(
    train: bool, image_size: int, mean, std, resize_ratio: float = 0.875, erasing=None
):
    """RandomResizedCrop + flip for training; resize to image_size / 0.875 + centre crop for eval
    (the 0.875 crop ratio is the ImageNet convention, e.g. 224 / 256). ``erasing`` (an Erasing):
    torchvision's RandomErasing after normalisation, filling 0 (``const``) or per-pixel normal
    noise (``pixel``); ``rand`` (one colour per box) exists on the in-memory path only."""
    normalize = transforms.Normalize(mean, std)
    if train:
        steps = [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()]
    else:
        steps = [
            transforms.Resize(int(round(image_size / resize_ratio))),
            transforms.CenterCrop(image_size),
        ]
    after = []
    if train and erasing is not None:
        if erasing.mode == "rand":
            raise UserError(
                "erasing.mode=rand is implemented for in-memory datasets only; use const or pixel"
            )
        after = [
            transforms.RandomErasing(
                p=erasing.prob, scale=erasing.scale, ratio=(erasing.ratio, 1 / erasing.ratio),
                value="random" if erasing.mode == "pixel" else 0,
            )
        ]  # fmt: skip
    return transforms.Compose([*steps, transforms.ToTensor(), normalize, *after])


def box_transform(image_size: int, mean, std):
    """The test images of the box metrics: ``Resize((image_size, image_size))``, no crop, as
    wsolevaluation's test transform, so that every ground-truth box stays whole (a centre crop
    of a 500x333 image can cut a box in half). Boxes: camexp.data.boxes.folder_test_boxes."""
    return transforms.Compose(
        [
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def folder_loader(
    dataset,
    batch_size: int,
    *,
    train: bool,
    workers: int,
    device: torch.device,
    seed: int = 0,
    on_corrupt: str = "stop",
) -> "CheckedLoader":
    if train and len(dataset) < batch_size:  # drop_last would leave no step at all
        raise UserError(
            f"the training images of {dataset_name(dataset)} ({len(dataset)}) are fewer than "
            f"batch_size={batch_size}, so an epoch has no step; set batch_size={len(dataset)} "
            "or smaller"
        )
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        CheckedImages(dataset),
        collate_fn=collate_checked,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=generator,
    )
    return CheckedLoader(loader, on_corrupt)


class CorruptImage(NamedTuple):
    """Stands in for a sample whose file could not be decoded (crosses worker processes);
    ``refused``: a file that stops the run even with on_corrupt=skip (read_rgb's bomb)."""

    path: str
    error: str
    refused: bool = False


def dataset_name(dataset) -> str:
    """The folder (ImageFolder ``root``) or name (camexp ``name``) of a dataset, through Subsets."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return str(getattr(dataset, "root", None) or getattr(dataset, "name", "the dataset"))


def image_path(dataset, index: int) -> str:
    """The file behind ``dataset[index]`` (ImageFolder ``samples``, camexp ``paths``, Subsets)."""
    if isinstance(dataset, Subset):
        return image_path(dataset.dataset, dataset.indices[index])
    if hasattr(dataset, "samples"):
        return str(dataset.samples[index][0])
    if hasattr(dataset, "paths"):
        return str(dataset.paths[index])
    return f"image #{index}"


class CheckedImages(Dataset):
    """Turns an unreadable image into a :class:`CorruptImage` instead of a worker traceback."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except UserError as err:  # one line already (read_rgb); a worker would add its traceback
            return CorruptImage(image_path(self.dataset, index), str(err), refused=True)
        except (OSError, ValueError, SyntaxError) as err:  # PIL raises all three for bad files
            return CorruptImage(image_path(self.dataset, index), f"{type(err).__name__}: {err}")


def collate_checked(batch):
    good = [sample for sample in batch if not isinstance(sample, CorruptImage)]
    bad = [sample for sample in batch if isinstance(sample, CorruptImage)]
    images, labels = default_collate(good) if good else (None, None)
    return images, labels, bad


class CheckedLoader:
    """Iterates a DataLoader over :class:`CheckedImages`; in the main process, stops with the
    path of the first unreadable image (``on_corrupt="stop"``) or skips and records it."""

    def __init__(self, loader: DataLoader, on_corrupt: str = "stop"):
        if on_corrupt not in ("stop", "skip"):
            raise UserError(f"dataset.on_corrupt={on_corrupt!r} is not an option; use stop or skip")
        self.loader = loader
        self.on_corrupt = on_corrupt
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels, bad in self.loader:
            for sample in bad:
                if sample.refused:
                    raise UserError(sample.error)
                if self.on_corrupt == "stop":
                    raise UserError(
                        f"unreadable image {sample.path} ({sample.error}); replace or delete "
                        "it, or set dataset.on_corrupt=skip"
                    )
                if sample.path not in self.skipped:
                    self.skipped.append(sample.path)
            if images is not None:
                yield images, labels
