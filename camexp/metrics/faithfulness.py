"""Does the model rely on what its CAM highlights? Average Drop / Increase in Confidence and
Deletion / Insertion AUC, for the CAM of the target (labelled) class.

Notation: x an image in pixel units (the normalised input mapped back with mean/std, so 0 is
black), s its score map in [0, 1] at image resolution, p_c(x) the softmax probability of the
target class c, N the number of images.

* Average Drop and Increase in Confidence (Chattopadhay et al., "Grad-CAM++", WACV 2018, §5.1):
  the explanation map is ``E = x * s`` (pixelwise), and with ``Y = p_c(x)``, ``O = p_c(E)``:
      AvgDrop = 100/N sum max(0, Y - O) / Y        (lower is better)
      IncConf = 100/N sum [Y < O]                   (higher is better)
* Deletion and Insertion (Petsiuk et al., "RISE", BMVC 2018, §4.2): order the pixels by s,
  highest first; after each of ``steps`` equal steps (HW/steps pixels, the last step partial) the
  first k pixels are replaced by the baseline 0 (deletion), or copied from x onto a blurred copy of
  x (insertion); the AUC of p_c against the fraction of pixels changed, by the trapezoid rule on
  [0, 1]. Deletion: lower is better; insertion: higher is better. RISE used a Gaussian blur with
  an 11-pixel kernel and sigma 5 at 224 px; ``blur_sigma`` defaults to that sigma.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
def class_probability(model, inputs: torch.Tensor, labels: torch.Tensor, chunk: int = 512):
    """p_c for each row of ``inputs`` (normalised) and its label; evaluated in chunks."""
    out = []
    for start in range(0, inputs.shape[0], chunk):
        logits = model(inputs[start : start + chunk]).logits.float()
        probs = logits.softmax(dim=1)
        out.append(probs.gather(1, labels[start : start + chunk, None])[:, 0])
    return torch.cat(out)


@torch.no_grad()
def drop_and_increase(model, images, labels, maps, mean, std) -> dict[str, torch.Tensor]:
    """Per-image drop ``max(0, Y - O) / Y`` and increase ``[Y < O]`` (B,) of E = x * s."""
    explained = to_inputs(to_pixels(images, mean, std) * maps[:, None], mean, std)
    full = class_probability(model, images, labels)
    masked = class_probability(model, explained, labels)
    drop = (full - masked).clamp_min(0) / full.clamp_min(1e-12)
    return {"avg_drop": drop, "increase_conf": (full < masked).float()}


def gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (B, C, H, W), kernel 2*ceil(3 sigma)+1, reflect padding."""
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
    """Area under curves (B, n + 1) sampled at 0, 1/n, ..., 1."""
    n = curve.shape[1] - 1
    return (curve.sum(1) - 0.5 * (curve[:, 0] + curve[:, -1])) / n


@torch.no_grad()
def deletion_insertion(
    model, images, labels, maps, mean, std, *, steps: int = 32, blur_sigma: float = 5.0
) -> dict[str, torch.Tensor]:
    """Per-image deletion and insertion AUC (B,) and the curves (B, steps + 1)."""
    b, c, h, w = images.shape
    pixels = to_pixels(images, mean, std)
    blurred = gaussian_blur(pixels, blur_sigma)
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)  # (B, HW)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
    per_step = math.ceil(h * w / steps)
    counts = torch.arange(steps + 1, device=images.device) * per_step  # pixels changed
    # changed[b, k, p]: pixel p of image b is changed after step k (its rank is below k * per)
    changed = rank[:, None, :] < counts[None, :, None]  # (B, steps + 1, HW)
    changed = changed.view(b, steps + 1, 1, h, w)
    px, bl = pixels[:, None], blurred[:, None]  # (B, 1, C, H, W)
    deleted = torch.where(changed, torch.zeros_like(px), px)  # (B, steps + 1, C, H, W)
    inserted = torch.where(changed, px, bl)
    repeat = labels.repeat_interleave(steps + 1)
    curves = {}
    for name, stack in (("deletion", deleted), ("insertion", inserted)):
        inputs = to_inputs(stack.flatten(0, 1), mean, std)
        curves[name] = class_probability(model, inputs, repeat).view(b, steps + 1)
    return {
        "deletion_auc": trapezoid_auc(curves["deletion"]),
        "insertion_auc": trapezoid_auc(curves["insertion"]),
        "deletion_curve": curves["deletion"],
        "insertion_curve": curves["insertion"],
    }
