"""Progressive resizing (fast.ai; the schedule of MosaicML Composer's ``ProgressiveResizing``):
the first part of training sees smaller images, which cost fewer FLOPs per step, and the last
part the full size the model is evaluated at.

The schedule, per training batch, from the fraction ``t`` of all training batches already taken
(as Composer's elapsed duration): the scale is ``initial_scale`` until ``t = delay_fraction``,
rises linearly to 1 until ``t = 1 - finetune_fraction`` and stays 1 for the rest; the side is
``round(W * scale / size_increment) * size_increment`` (Composer's rounding; the full size when
that is not smaller), the height scaled by the same factor. The batch is resized last, after the
crop, flip, normalisation and erasing (Composer resizes the batch the loader yields).
Evaluation always sees the full size.

camexp resizes with bilinear interpolation and antialiasing where Composer's ``resize`` mode uses
nearest neighbours (its docstring says bilinear): at 28 px, nearest neighbours drop whole rows and
columns of a garment. docs/protocols.md has the row. AirNet's whitened stem is fitted on the
first training batch, so with ``initial_scale < 1`` it is fitted on the smaller images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from camexp.errors import UserError


@dataclass(frozen=True)
class Progressive:
    initial_scale: float = 1.0  # 1: off (Composer's default is 0.5)
    delay_fraction: float = 0.5  # the first fraction of training at initial_scale
    finetune_fraction: float = 0.2  # the last fraction at the full size
    size_increment: int = 4  # sides are multiples of this (px)

    def __post_init__(self):
        if not 0.0 < self.initial_scale <= 1.0:
            raise UserError(
                f"progressive.initial_scale={self.initial_scale} must lie in (0, 1]; 1 is off"
            )
        for name in ("delay_fraction", "finetune_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"progressive.{name}={getattr(self, name)} must lie in [0, 1]")
        if self.delay_fraction + self.finetune_fraction > 1.0:
            raise UserError(
                f"progressive.delay_fraction + finetune_fraction = "
                f"{self.delay_fraction + self.finetune_fraction:g} exceeds 1 (the whole run)"
            )
        if self.size_increment < 1:
            raise UserError(f"progressive.size_increment={self.size_increment} must be >= 1 (px)")

    def scale(self, elapsed: float) -> float:
        """The scale after ``elapsed`` (0-1) of the training batches."""
        ramp = 1.0 - self.finetune_fraction - self.delay_fraction
        if elapsed < self.delay_fraction:
            done = 0.0
        elif ramp <= 0.0:
            done = 1.0
        else:
            done = min((elapsed - self.delay_fraction) / ramp, 1.0)
        return self.initial_scale + (1.0 - self.initial_scale) * done

    def size(self, height: int, width: int, elapsed: float) -> tuple[int, int]:
        """(height, width) of a training batch of ``height`` x ``width`` images at ``elapsed``."""
        step = self.size_increment
        side = max(step, round(width * self.scale(elapsed) / step) * step)
        if side >= width:
            return height, width
        return max(1, height * side // width), side


def progressive_of(config) -> Progressive | None:
    """The ``progressive`` config block (None, or initial_scale 1: off) as a Progressive."""
    if not config:
        return None
    off = Progressive()  # the defaults live in one place
    try:
        increment = float(config.get("size_increment", off.size_increment))
        if not increment.is_integer():
            raise ValueError(increment)
        found = Progressive(
            initial_scale=float(config.get("initial_scale", off.initial_scale)),
            delay_fraction=float(config.get("delay_fraction", off.delay_fraction)),
            finetune_fraction=float(config.get("finetune_fraction", off.finetune_fraction)),
            size_increment=int(increment),
        )
    except (TypeError, ValueError, OverflowError):
        raise UserError(
            "progressive.initial_scale, .delay_fraction and .finetune_fraction take a number and "
            ".size_increment a whole number of px, e.g. progressive.initial_scale=0.7"
        ) from None
    return None if found.initial_scale == 1.0 else found


def resize_batch(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``images`` (B, C, H, W) resized to ``size`` (bilinear, antialiased when shrinking)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def check_smallest_size(model: torch.nn.Module, loader, device: torch.device) -> None:
    """Stop a run whose first, smallest progressive batches the model cannot take (AirNet's
    three pools need about 10 px), in one line before any step: a forward of two blank images
    at that size in eval mode (no statistics or whitening fitted, the mode restored)."""
    if getattr(loader, "progressive", None) is None:
        return
    channels, *full = loader.images.shape[-3:]
    size = loader.size_at(0, *full)  # the scale only grows: the first step is the smallest
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, channels, *size, device=device))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"progressive.initial_scale={loader.progressive.initial_scale:g} trains the first "
            f"batches at {size[0]}x{size[1]} px, which the model cannot take ({first}); raise "
            "progressive.initial_scale"
        ) from None
    finally:
        model.train(was_training)
