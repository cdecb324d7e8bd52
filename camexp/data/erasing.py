"""Random erasing (Zhong et al., AAAI 2020) for the in-memory training batches, drawn as timm's
``RandomErasing`` draws it, from the loader's generator (so a resumed run erases the same boxes).

Per image, as timm's ``_erase`` with one box: with probability ``prob`` (erase when a uniform
draw is at most ``prob``), up to 10 attempts draw a target area ``uniform(scale) * H * W`` and an
aspect ratio ``exp(uniform(log ratio, log 1/ratio))``, round ``h = sqrt(area * aspect)`` and
``w = sqrt(area / aspect)`` (half to even, as Python's ``round``), and take the first attempt with
``h < H`` and ``w < W``; its corner is ``randint(0, H - h)``, ``randint(0, W - w)``. The box is
filled, after normalisation, with 0 (``const``: the dataset mean), one normal draw per channel
(``rand``) or per pixel (``pixel``). timm draws from Python's global ``random``; here every
uniform comes from ``torch.Generator`` in one tensor per batch, which tests/test_erasing.py
replays through timm's own code to check the boxes are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from camexp.errors import UserError

ATTEMPTS = 10  # timm's and the paper's
MODES = ("const", "rand", "pixel")


@dataclass(frozen=True)
class Erasing:
    prob: float = 0.0  # 0: off
    scale: tuple[float, float] = (0.02, 1 / 3)  # erased fraction of the image area (timm)
    ratio: float = 0.3  # aspect ratios from ratio to 1 / ratio (log-uniform)
    mode: str = "const"

    def __post_init__(self):
        low, high = self.scale
        if not 0.0 <= self.prob <= 1.0:
            raise UserError(f"erasing.prob={self.prob} is not a probability; use 0 (off) to 1")
        if not 0.0 < low <= high <= 1.0:
            raise UserError(f"erasing.scale={list(self.scale)} must be 0 < low <= high <= 1")
        if not 0.0 < self.ratio <= 1.0:
            raise UserError(f"erasing.ratio={self.ratio} must lie in (0, 1] (the smaller aspect)")
        if self.mode not in MODES:
            raise UserError(f"erasing.mode={self.mode!r} is not one of {', '.join(MODES)}")


def erasing_of(config) -> Erasing | None:
    """The ``erasing`` config block (None or prob 0: off) as an Erasing."""
    if not config:
        return None
    off = Erasing()  # the defaults live in one place
    try:
        prob = float(config.get("prob", off.prob))
        scale = tuple(float(v) for v in config.get("scale", off.scale))
        ratio = float(config.get("ratio", off.ratio))
    except (TypeError, ValueError):
        raise UserError(
            "erasing.prob and erasing.ratio take a number and erasing.scale two, e.g. "
            "erasing.prob=0.5 erasing.scale=[0.02,0.333] erasing.ratio=0.3"
        ) from None
    if len(scale) != 2:
        raise UserError(f"erasing.scale={list(scale)} needs two numbers, e.g. [0.02,0.333]")
    if prob == 0.0:
        return None
    return Erasing(prob=prob, scale=scale, ratio=ratio, mode=str(config.get("mode", off.mode)))


def draw_uniforms(batch: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 1 + 4 * ATTEMPTS) uniforms: the erase draw, then per attempt area, aspect, top, left."""
    return torch.rand(batch, 1 + 4 * ATTEMPTS, generator=generator, dtype=torch.float64)


def boxes_from(uniforms: torch.Tensor, height: int, width: int, erasing: Erasing) -> torch.Tensor:
    """(B, 4) int64 boxes (top, left, h, w); h = 0 where the image is not erased."""
    u = uniforms[:, 1:].view(-1, ATTEMPTS, 4)
    low, high = erasing.scale
    log_low, log_high = math.log(erasing.ratio), math.log(1 / erasing.ratio)
    area = (low + (high - low) * u[..., 0]) * (height * width)
    aspect = torch.exp(log_low + (log_high - log_low) * u[..., 1])
    h = torch.round(torch.sqrt(area * aspect)).long()
    w = torch.round(torch.sqrt(area / aspect)).long()
    fits = (w < width) & (h < height)  # (B, ATTEMPTS)
    first = torch.where(fits.any(1), fits.float().argmax(1), -1)  # the first attempt that fits
    erase = (uniforms[:, 0] <= erasing.prob) & (first >= 0)
    pick = first.clamp(min=0)[:, None]
    h, w = h.gather(1, pick)[:, 0], w.gather(1, pick)[:, 0]
    # randint(0, n) = floor(u * (n + 1)): every corner equally likely
    top = (u[..., 2].gather(1, pick)[:, 0] * (height - h + 1)).floor().long()
    left = (u[..., 3].gather(1, pick)[:, 0] * (width - w + 1)).floor().long()
    h, w = torch.where(erase, h, 0), torch.where(erase, w, 0)
    return torch.stack([top, left, h, w], dim=1)


def erase_boxes(
    images: torch.Tensor, boxes: torch.Tensor, mode: str, generator: torch.Generator
) -> torch.Tensor:
    """Fill each image's box (normalised images, (B, C, H, W)); a box of height 0 erases nothing."""
    b, c, height, width = images.shape
    boxes = boxes.to(images.device)
    rows = torch.arange(height, device=images.device)[None, :]
    cols = torch.arange(width, device=images.device)[None, :]
    top, left, h, w = boxes.unbind(1)
    inside_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (B, H)
    inside_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (B, W)
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]  # (B, 1, H, W)
    if mode == "const":
        fill = torch.zeros((), dtype=images.dtype, device=images.device)
    elif mode == "rand":
        fill = torch.randn(b, c, 1, 1, generator=generator).to(images)
    else:
        fill = torch.randn(b, c, height, width, generator=generator).to(images)
    return torch.where(mask, fill, images)


def random_erase(images: torch.Tensor, erasing: Erasing, generator: torch.Generator):
    """One timm-style random erasing per image of a normalised batch."""
    boxes = boxes_from(draw_uniforms(len(images), generator), *images.shape[-2:], erasing)
    return erase_boxes(images, boxes, erasing.mode, generator)
