"""The loop: ``train_one_epoch`` and ``evaluate`` over plain objects. It never sees the config.

Metrics are accumulated on the device and read once per logging interval, so the loop does not
synchronise with the host every step, except for the one check that the loss is finite, which
must happen before the optimizer step (a NaN must never reach the weights).
"""

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from camexp.errors import Diverged


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def train_one_epoch(
    model,
    objective,
    loader,
    optimizer,
    scheduler,
    regularizer,
    device: torch.device,
    *,
    epoch: int,
    teacher=None,
    amp_dtype: torch.dtype | None = None,
    log_every: int = 50,
    on_log: Callable[[int, dict], None] | None = None,
) -> dict:
    """One pass over ``loader``; returns epoch means of every loss part, acc1, lr, images/s."""
    model.train()
    objective.set_epoch(epoch)
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=device)
    seen = 0
    start = time.perf_counter()
    for step, (images, labels) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        images, targets = regularizer(images, labels)  # targets (B, K), soft
        with autocast(device, amp_dtype):
            student = model(images)
            teacher_out = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_out = teacher(images)
            total, parts = objective(student, teacher_out, targets)
        if not torch.isfinite(total):
            raise Diverged(f"training loss became {total.item()} at epoch {epoch}, step {step}")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()

        batch = labels.shape[0]
        seen += batch
        for name, value in {"loss": total.detach(), **parts}.items():
            sums[name] = sums.get(name, 0.0) + value * batch
        correct += (student.logits.detach().argmax(1) == targets.argmax(1)).sum()
        if on_log is not None and (step + 1) % log_every == 0:
            on_log(step + 1, summarize(sums, correct, seen, start))
    stats = summarize(sums, correct, seen, start)
    stats["lr"] = optimizer.param_groups[0]["lr"]
    return stats


def summarize(sums: dict, correct: torch.Tensor, seen: int, start: float) -> dict:
    """Read the device accumulators once (one host sync) into plain floats."""
    names = list(sums)
    values = torch.stack([sums[n] for n in names] + [correct]).double().cpu().tolist()
    stats = {f"train/{n}": v / max(seen, 1) for n, v in zip(names, values[:-1], strict=True)}
    stats["train/acc1"] = 100.0 * values[-1] / max(seen, 1)
    stats["train/images_per_s"] = seen / max(time.perf_counter() - start, 1e-9)
    return stats


@torch.no_grad()
def evaluate(model, loader, device: torch.device, *, amp_dtype=None, prefix="val") -> dict:
    """Top-1/top-5 accuracy (percent) and mean CE on ``loader``."""
    model.eval()
    loss = torch.zeros((), device=device, dtype=torch.float64)
    top1 = torch.zeros((), device=device)
    top5 = torch.zeros((), device=device)
    seen = 0
    start = time.perf_counter()
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images).logits.float()
        loss += F.cross_entropy(logits, labels, reduction="sum")
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices == labels[:, None]  # (B, k)
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        seen += labels.shape[0]
    values = torch.stack([loss, top1.double(), top5.double()]).cpu().tolist()
    n = max(seen, 1)
    return {
        f"{prefix}/loss": values[0] / n,
        f"{prefix}/acc1": 100.0 * values[1] / n,
        f"{prefix}/acc5": 100.0 * values[2] / n,
        f"{prefix}/images_per_s": seen / max(time.perf_counter() - start, 1e-9),
    }
