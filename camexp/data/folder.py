"""Image-folder datasets (ImageNet layout: ``root/<split>/<class>/<image>``) through DataLoader
workers, with the usual ImageNet-style augmentation, pinned memory and non-blocking copies."""

import os

import torch
from torch.utils.data import DataLoader
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
        return datasets.ImageFolder(path, allow_empty=False)
    except (FileNotFoundError, RuntimeError) as err:
        raise UserError(f"image folder {path} holds no class folders with images ({err})") from err


def folder_transform(train: bool, image_size: int, mean, std, resize_ratio: float = 0.875):
    """RandomResizedCrop + flip for training; resize to image_size / 0.875 + centre crop for eval
    (the 0.875 crop ratio is the ImageNet convention, e.g. 224 / 256)."""
    normalize = transforms.Normalize(mean, std)
    if train:
        steps = [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()]
    else:
        steps = [
            transforms.Resize(int(round(image_size / resize_ratio))),
            transforms.CenterCrop(image_size),
        ]
    return transforms.Compose([*steps, transforms.ToTensor(), normalize])


def folder_loader(
    dataset, batch_size: int, *, train: bool, workers: int, device: torch.device, seed: int = 0
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=generator,
    )
