"""Augmented views of the few-shot support images (Tian et al., ECCV 2020; WangYueFt/rfs).

RFS's meta-test loader (dataset/cifar.py, dataset/mini_imagenet.py: ``MetaCIFAR100``,
``MetaImageNet``) passes each support image ``n_aug_support_samples = 5`` times through its training
transform: RandomCrop(size, padding) (4 at 32 px, 8 at 84 px), ColorJitter(brightness=0.4,
contrast=0.4, saturation=0.4), RandomHorizontalFlip; the queries go through the test transform
once. Here each view is an iterable over the whole episode pool, in its order, so the caller
embeds it exactly like the unaugmented pool and the episodes pick rows
(camexp.data.episodes.episode_accuracies). The in-memory path reimplements the transform on
tensors (same maths as torchvision's tensor ops; RFS runs it on PIL images, which round to uint8
after each op); folder splits use torchvision's transforms after camexp's evaluation resize.
"""

from __future__ import annotations

import copy

import torch
from torchvision import transforms

from camexp.data.arrays import ArraySplit
from camexp.data.folder import folder_loader
from camexp.data.memory import random_crop, random_hflip
from camexp.errors import UserError

JITTER = 0.4  # RFS: ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)


def jitter_params(batch: int, strength: float, generator: torch.Generator):
    """torchvision ColorJitter's draws per image: factors (3, B) for brightness, contrast and
    saturation, uniform in [1 - strength, 1 + strength], and the order (B, 3) of the three ops."""
    factors = 1 + strength * (2 * torch.rand(3, batch, generator=generator) - 1)
    order = torch.argsort(torch.rand(batch, 3, generator=generator), dim=1)
    return factors, order


def apply_color_jitter(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor):
    """torchvision's adjust_brightness / adjust_contrast / adjust_saturation (tensor versions)
    on pixel values (B, C, H, W) in [0, 255], image b's ops in ``order[b]`` with ``factors[:, b]``:
    each blends the image with black, its mean grey level, or its grey image, clamped."""
    b, c = images.shape[:2]
    f = factors.to(images.device).view(3, b, 1, 1, 1)
    order = order.to(images.device)
    weights = torch.tensor([0.2989, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)

    def gray(x):  # torchvision's rgb_to_grayscale; one channel is its own grey
        return (x * weights).sum(1, keepdim=True) if c == 3 else x

    def blend(x, other, factor):
        return (factor * x + (1 - factor) * other).clamp(0, 255)

    ops = (
        lambda x: blend(x, torch.zeros_like(x), f[0]),  # brightness
        lambda x: blend(x, gray(x).mean(dim=(1, 2, 3), keepdim=True), f[1]),  # contrast
        lambda x: blend(x, gray(x), f[2]) if c == 3 else x,  # saturation (no-op on grey)
    )
    for slot in range(3):
        which = order[:, slot].view(b, 1, 1, 1)
        images = torch.where(which == 0, ops[0](images),
                             torch.where(which == 1, ops[1](images), ops[2](images)))  # fmt: skip
    return images


class ArrayViews:
    """One augmented view of every image of an in-memory split, in order: random crop with zero
    padding, colour jitter, flip (RFS's CIFAR-FS transform), then normalised."""

    def __init__(self, split, batch_size, mean, std, padding, hflip, device, seed, channels_last):
        self.split, self.batch_size, self.padding, self.hflip = split, batch_size, padding, hflip
        self.device, self.seed, self.channels_last = torch.device(device), seed, channels_last
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255.0

    def __len__(self) -> int:
        return -(-len(self.split.labels) // self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        for start in range(0, len(self.split.labels), self.batch_size):
            images = self.split.images[start : start + self.batch_size].to(self.device).float()
            if self.padding:
                images = random_crop(images, self.padding, generator)
            images = apply_color_jitter(images, *jitter_params(len(images), JITTER, generator))
            if self.hflip:
                images = random_hflip(images, generator)
            images = (images - self.mean) / self.std
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.split.labels[start : start + self.batch_size]


class FolderViews:
    """One augmented view of every image of a folder split, in order: camexp's evaluation resize
    and centre crop, then RFS's miniImageNet transform (RandomCrop(S, padding), ColorJitter,
    RandomHorizontalFlip). Seeds torch's global generator when iterated (the workers' seeds
    derive from it)."""

    def __init__(self, source, batch_size, mean, std, size, padding, device, workers, seed):
        self.source = copy.copy(source)  # its own transform; the caller's stays as it was
        self.source.transform = transforms.Compose([
            transforms.Resize(int(round(size / 0.875))), transforms.CenterCrop(size),
            transforms.RandomCrop(size, padding=padding),
            transforms.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(mean, std),
        ])  # fmt: skip
        self.loader = folder_loader(
            self.source, batch_size, train=False, workers=workers, device=torch.device(device)
        )
        self.seed = seed

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        torch.manual_seed(self.seed)
        return iter(self.loader)


def support_view_loaders(
    source,
    views: int,
    *,
    batch_size: int,
    mean,
    std,
    image_size: int,
    crop_padding: int | None,
    hflip: bool,
    device,
    workers: int = 0,
    seed: int = 0,
    channels_last: bool = False,
) -> list:
    """``views`` iterables of ``(normalised images, labels)``, each one augmented view of every
    image of ``source`` in its order (embed each like the unaugmented pool). In-memory splits use
    the dataset's ``crop_padding`` and ``hflip`` (CIFAR-FS: 4 and true, as RFS); folder splits pad
    ``image_size // 10`` (RFS: 8 at 84 px) and always flip."""
    if views < 0:
        raise UserError(f"fewshot.support_augmentations must be >= 0, got {views}")
    if isinstance(source, ArraySplit):
        return [
            ArrayViews(
                source,
                batch_size,
                mean,
                std,
                int(crop_padding or 0),
                hflip,
                device,
                seed + view,
                channels_last,
            )  # fmt: skip
            for view in range(views)
        ]
    padding = image_size // 10 if crop_padding is None else int(crop_padding)
    return [
        FolderViews(source, batch_size, mean, std, image_size, padding, device, workers, seed + v)
        for v in range(views)
    ]
