"""Does the model rely on what its CAM highlights? Average Drop / Increase in Confidence and
Deletion / Insertion AUC.

Notation: x an image (``images``: the normalised network input), s its score map in [0, 1] at image
resolution (the CAM of class c, see :mod:`camexp.metrics.quality`), p_c(x) the softmax probability
of class c, N the number of images.

* Average Drop and Increase in Confidence (Chattopadhay et al., "Grad-CAM++", WACV 2018, §5.1):
  the explanation map is ``E = x * s`` (pixelwise, in pixel units), and with ``Y = p_c(x)``,
  ``O = p_c(E)``:
      AvgDrop = 100/N sum max(0, Y - O) / Y        (lower is better)
      IncConf = 100/N sum [Y < O]                   (higher is better)
* Deletion and Insertion (Petsiuk et al., "RISE", BMVC 2018, §4.2; eclique/RISE evaluation.py,
  ``CausalMetric``): order the pixels by s, highest first; after step i (i = 0..n, n =
  ceil(HW / step)) the first ``i * step`` pixels of the start image are replaced by those of the
  finish image, and the curve is p_c of each of the n + 1 images. Deletion: start x, finish the
  substrate; insertion: start the blurred x, finish x. AUC by RISE's ``auc``: the trapezoid rule
  on [0, 1]. Deletion: lower is better; insertion: higher is better.

Two protocols (``protocol``):

* ``rise`` (default, the reference): c is the top predicted class; the deletion substrate is 0 *in
  the normalised input* (the dataset's mean colour); the insertion start is x convolved, in the
  normalised input with zero padding, with RISE's ``gkern(klen=11, nsig=5)`` (scipy's
  gaussian_filter of an 11x11 delta); ``step`` defaults to the image width (RISE: 224 pixels per
  step at 224x224, so 224 steps).
* ``camexp``: c is the label; the substrate is black (0 in pixel units); the blur is a separable
  Gaussian with 2*ceil(3 sigma)+1 taps and reflect padding, in pixel units.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

PROTOCOLS = ("rise", "camexp")


def to_pixels(images: torch.Tensor, mean, std) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(shape)
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    return images * std + mean


def to_inputs(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=pixels.dtype, device=pixels.device).view(shape)
    mean = torch.as_tensor(mean, dtype=pixels.dtype, device=pixels.device).view(shape)
    return (pixels - mean) / std


@torch.no_grad()
def class_probability(model, inputs: torch.Tensor, classes: torch.Tensor, chunk: int = 512):
    """p_c for each row of ``inputs`` (normalised) and its class; evaluated in chunks."""
    out = []
    for start in range(0, inputs.shape[0], chunk):
        logits = model(inputs[start : start + chunk]).logits.float()
        probs = logits.softmax(dim=1)
        out.append(probs.gather(1, classes[start : start + chunk, None])[:, 0])
    return torch.cat(out)


@torch.no_grad()
def drop_and_increase(model, images, classes, maps, mean, std) -> dict[str, torch.Tensor]:
    """Per-image drop ``max(0, Y - O) / Y`` and increase ``[Y < O]`` (B,) of E = x * s."""
    explained = to_inputs(to_pixels(images, mean, std) * maps[:, None], mean, std)
    full = class_probability(model, images, classes)
    masked = class_probability(model, explained, classes)
    drop = (full - masked).clamp_min(0) / full.clamp_min(1e-12)
    return {"avg_drop": drop, "increase_conf": (full < masked).float()}


def rise_kernel(taps: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's ``gkern``: scipy's gaussian_filter (reflect mode) of a taps x taps delta."""
    delta = np.zeros((taps, taps))
    delta[taps // 2, taps // 2] = 1.0
    return torch.from_numpy(ndimage.gaussian_filter(delta, sigma).astype(np.float32))


def rise_blur(images: torch.Tensor, taps: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion substrate: each channel convolved with :func:`rise_kernel`, zero padding
    ``taps // 2``, on the tensor as given (RISE blurs the normalised input)."""
    c = images.shape[1]
    kernel = rise_kernel(taps, sigma).to(images.device, images.dtype)
    return F.conv2d(images, kernel.expand(c, 1, taps, taps), padding=taps // 2, groups=c)


def gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """camexp's blur: separable Gaussian (B, C, H, W), 2*ceil(3 sigma)+1 taps, reflect padding."""
    if sigma <= 0:
        return pixels
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, pixels.shape[-1] - 1, pixels.shape[-2] - 1)
    x = torch.arange(-radius, radius + 1, dtype=pixels.dtype, device=pixels.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    c = pixels.shape[1]
    out = F.pad(pixels, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def trapezoid_auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under curves (B, n + 1) sampled at 0, 1/n, ..., 1 (RISE's ``auc``)."""
    n = curve.shape[1] - 1
    return (curve.sum(1) - 0.5 * (curve[:, 0] + curve[:, -1])) / n


@torch.no_grad()
def game_curve(model, start, finish, rank, classes, step: int, chunk: int = 512):
    """p_c of ``start`` with its ``i * step`` top-ranked pixels taken from ``finish``, for
    i = 0..ceil(HW / step). start, finish (B, C, H, W) network inputs; rank (B, H*W) the position
    of each pixel in the saliency order. Returns (B, n + 1)."""
    b, _, h, w = start.shape
    n = math.ceil(h * w / step)
    per = max(1, chunk // b)  # steps per forward batch
    parts = []
    for first in range(0, n + 1, per):
        counts = torch.arange(first, min(n + 1, first + per), device=start.device) * step
        changed = (rank[:, None, :] < counts[None, :, None]).view(b, len(counts), 1, h, w)
        stack = torch.where(changed, finish[:, None], start[:, None])  # (B, k, C, H, W)
        repeated = classes.repeat_interleave(len(counts))
        probs = class_probability(model, stack.flatten(0, 1), repeated)
        parts.append(probs.view(b, len(counts)))
    return torch.cat(parts, dim=1)


@torch.no_grad()
def deletion_insertion(
    model,
    images,
    classes,
    maps,
    mean,
    std,
    *,
    protocol: str = "rise",
    step: int | None = None,
    blur_sigma: float = 5.0,
    blur_taps: int = 11,
) -> dict[str, torch.Tensor]:
    """Per-image deletion and insertion AUC (B,) and the curves (B, n + 1).

    images (B, C, H, W) normalised; classes (B,) the class c scored (the caller picks the top
    predicted class for ``rise``); maps (B, H, W); ``step`` pixels per step (None: W).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown deletion/insertion protocol {protocol!r}; use rise or camexp")
    b, _, h, w = images.shape
    step = int(step or w)
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)  # (B, HW)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
    if protocol == "rise":  # everything in the normalised input, as RISE
        substrate = torch.zeros_like(images)
        blurred = rise_blur(images, blur_taps, blur_sigma)
    else:  # camexp: black and a reflect-padded blur, in pixel units
        pixels = to_pixels(images, mean, std)
        substrate = to_inputs(torch.zeros_like(pixels), mean, std)
        blurred = to_inputs(gaussian_blur(pixels, blur_sigma), mean, std)
    deletion = game_curve(model, images, substrate, rank, classes, step)
    insertion = game_curve(model, blurred, images, rank, classes, step)
    return {
        "deletion_auc": trapezoid_auc(deletion),
        "insertion_auc": trapezoid_auc(insertion),
        "deletion_curve": deletion,
        "insertion_curve": insertion,
    }
