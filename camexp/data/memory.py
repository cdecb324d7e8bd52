"""The fast path for small datasets: uint8 images on the training device, augmented per batch.

No per-sample Python and no PIL: a batch is gathered by index, random-cropped with zero padding
and flipped with one vectorised op each, then normalised. The shuffling and augmentation draw
from one ``torch.Generator`` per loader, whose state is saved in checkpoints.

``hflip="alternate"`` is airbench's alternating flip (KellerJordan/cifar10-airbench): each image
gets one random flip bit, drawn once from the seed; even epochs (the first is 0) show the images
as that bit says, odd epochs the other way round. Every image is seen both ways within any two
consecutive epochs, where independent random flips repeat an orientation a quarter of the time.
``erasing`` (camexp/data/erasing.py) erases one random box per normalised training image.
``progressive`` (camexp/data/progressive.py) shrinks the training batches early in the ``epochs``
of the run, by the fraction of its batches already taken.
"""

import logging
from collections import Counter

import torch

from camexp.data.erasing import Erasing, random_erase
from camexp.data.progressive import Progressive, resize_batch
from camexp.errors import UserError

log = logging.getLogger(__name__)

FLIP_MODES = (False, True, "alternate")


class InMemoryLoader:
    """Iterates ``(images float (B, C, H, W) normalised, labels int64 (B,))`` on ``device``."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        crop_padding: int = 0,
        hflip: bool | str = False,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        seed: int = 0,
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        erasing: Erasing | None = None,
        progressive: Progressive | None = None,
        epochs: int = 1,
    ):
        self.device = torch.device(device)
        self.images = images.to(self.device)  # uint8 (N, C, H, W)
        self.labels = labels.to(self.device)  # int64 (N,)
        self.batch_size = batch_size
        self.train = train
        self.crop_padding = crop_padding if train else 0
        if hflip not in FLIP_MODES:
            raise UserError(
                f"dataset.hflip={hflip!r} is not an option; use true, false or alternate"
            )
        self.hflip = hflip if train else False
        self.drop_last = drop_last
        self.erasing = erasing if train else None  # after normalisation, as timm
        self.progressive = progressive if train else None  # last: the batch as it is yielded
        self.epochs = max(int(epochs), 1)
        self.logged_size = None  # the progressive size last logged
        self.channels_last = channels_last
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=self.device).view(shape) * 255.0
        self.std = torch.tensor(std, device=self.device).view(shape) * 255.0
        # CPU generators: their state is device-independent, so a checkpoint resumes anywhere.
        # Under torchrun every rank draws the same order (same seed) and takes its shard
        # (rank, world) of each global batch of batch_size * world images; augmentations are
        # drawn per rank.
        self.rank, self.world = shard
        self.generator = torch.Generator().manual_seed(seed)
        self.aug_generator = self.generator
        if self.world > 1:
            self.aug_generator = torch.Generator().manual_seed(seed + 7919 * (self.rank + 1))
        self.order: torch.Tensor | None = None  # this epoch's permutation
        self.position = 0  # batches of this epoch already handed out
        self.epochs_begun = 0  # training epochs started (the alternating flip's parity)
        self.flip_bits = None
        if self.hflip == "alternate":  # one fixed random bit per image, the same on every rank
            flip_generator = torch.Generator().manual_seed(seed + 104729)
            self.flip_bits = (torch.rand(len(self.labels), generator=flip_generator) < 0.5).to(
                self.device
            )
        self.resume_pending = False  # set by load_state_dict of a mid-epoch state

    def __len__(self) -> int:
        n, per_step = len(self.labels), self.batch_size * self.world
        return n // per_step if self.drop_last else -(-n // per_step)

    def train_size(self, batch_index: int, height: int, width: int) -> tuple[int, int]:
        """The progressive size of batch ``batch_index`` of the epoch begun last."""
        size = self.size_at((self.epochs_begun - 1) * len(self) + batch_index, height, width)
        if size != self.logged_size:
            log.info("progressive resizing: training at %dx%d px from epoch %d, batch %d",
                     *size, self.epochs_begun, batch_index)  # fmt: skip
            self.logged_size = size
        return size

    def step_sizes(self) -> Counter:
        """How many training steps of the whole run see each (height, width): the cost of a run
        whose early batches are smaller (a benchmark's FLOPs)."""
        full = tuple(self.images.shape[-2:])
        total = self.epochs * len(self)
        if self.progressive is None:
            return Counter({full: total})
        return Counter(self.size_at(step, *full) for step in range(total))

    def size_at(self, step: int, height: int, width: int) -> tuple[int, int]:
        """The progressive size of training step ``step`` of the run (0-based, all epochs)."""
        return self.progressive.size(height, width, step / (self.epochs * len(self)))

    def state_dict(self) -> dict:
        """Where the epoch stands: resuming from it replays the rest of the epoch exactly."""
        mid_epoch = self.order is not None and 0 < self.position < len(self)
        return {
            "generator": self.generator.get_state(),
            "aug_generator": self.aug_generator.get_state(),
            "order": self.order.cpu() if mid_epoch else None,
            "position": self.position if mid_epoch else 0,
            "epochs_begun": self.epochs_begun,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.aug_generator.set_state(state["aug_generator"])
        order = state["order"]
        self.order = order.to(self.device) if order is not None else None
        self.position = state["position"]
        self.epochs_begun = state.get("epochs_begun", 0)  # absent in checkpoints before it
        self.resume_pending = self.order is not None

    def __iter__(self):
        n = len(self.labels)
        if self.resume_pending:  # the rest of a checkpointed epoch, once
            order, first = self.order, self.position
            self.resume_pending = False
        elif self.train:
            order, first = torch.randperm(n, generator=self.generator).to(self.device), 0
            self.epochs_begun += 1
        else:
            order, first = torch.arange(n, device=self.device), 0
        self.order = order
        for batch_index in range(first, len(self)):
            start = (batch_index * self.world + self.rank) * self.batch_size
            index = order[start : start + self.batch_size]
            self.position = batch_index + 1
            images = self.images[index].float()  # (B, C, H, W)
            if self.crop_padding:
                images = random_crop(images, self.crop_padding, self.aug_generator)
            if self.hflip == "alternate":
                odd_epoch = (self.epochs_begun - 1) % 2 == 1
                images = flip_where(images, self.flip_bits[index] ^ odd_epoch)
            elif self.hflip:
                images = random_hflip(images, self.aug_generator)
            images = (images - self.mean) / self.std
            if self.erasing is not None:
                images = random_erase(images, self.erasing, self.aug_generator)
            if self.progressive is not None:
                images = resize_batch(images, self.train_size(batch_index, *images.shape[-2:]))
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.labels[index]


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and take one random HxW window per image (Krizhevsky-style)."""
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)  # (B, C, H+2p, W+2p)
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(images.device)
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channels, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(images.shape[0], generator=generator).to(images.device) < 0.5
    return flip_where(images, flip)


def flip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """``images`` (B, C, H, W) mirrored left-right where the bool ``flip`` (B,) is set."""
    return torch.where(flip[:, None, None, None], images.flip(3), images)
