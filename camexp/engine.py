"""The loop: ``train_one_epoch`` and ``evaluate`` over plain objects. It never sees the config.

Metrics are accumulated on the device (:class:`EpochMeter`) and read once per logging interval,
so the loop does not synchronise with the host every step, except for the one check that the
loss is finite, which must happen before the optimizer step (a NaN must never reach the weights).
"""

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from camexp.errors import Diverged, UserError
from camexp.run.distributed import sum_across_ranks


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


class EpochMeter:
    """Device-side sums of every loss part and of correct predictions over one epoch.

    Its state is part of a mid-epoch checkpoint, so a resumed epoch reports the same means.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.correct = torch.zeros((), device=device)
        self.seen = 0
        self.steps = 0  # optimizer steps taken or skipped
        self.skipped = 0  # steps skipped for a non-finite loss
        self.elapsed = 0.0  # seconds spent in earlier segments of this epoch (before a resume)
        self.start = time.perf_counter()

    def update(self, total, parts: dict, logits: torch.Tensor, targets: torch.Tensor) -> None:
        batch = logits.shape[0]
        self.seen += batch
        for name, value in {"loss": total.detach(), **parts}.items():
            previous = self.sums.get(name)
            self.sums[name] = value * batch if previous is None else previous + value * batch
        self.correct += (logits.detach().argmax(1) == targets.argmax(1)).sum()

    def summary(self, across_ranks: bool = True) -> dict:
        """Read the accumulators once (one host sync) into plain floats; under torchrun the
        sums of every rank are added first (a collective: every rank must call it)."""
        names = list(self.sums)
        seen = torch.tensor(float(self.seen), device=self.device)
        values = torch.stack([t.double() for t in [*map(self.sums.get, names), self.correct, seen]])
        if across_ranks:
            values = sum_across_ranks(values)
        values = values.cpu().tolist()
        n = max(values[-1], 1.0)
        stats = {f"train/{name}": v / n for name, v in zip(names, values[:-2], strict=True)}
        stats["train/acc1"] = 100.0 * values[-2] / n
        seconds = self.elapsed + time.perf_counter() - self.start
        stats["train/images_per_s"] = values[-1] / max(seconds, 1e-9)
        stats["train/skipped_steps"] = self.skipped
        return stats

    def state_dict(self) -> dict:
        return {
            "sums": {k: v.cpu() for k, v in self.sums.items()},
            "correct": self.correct.cpu(),
            "seen": self.seen,
            "steps": self.steps,
            "skipped": self.skipped,
            "elapsed": self.elapsed + time.perf_counter() - self.start,
        }

    def load_state_dict(self, state: dict) -> None:
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.correct = state["correct"].to(self.device)
        self.seen, self.steps = state["seen"], state["steps"]
        self.skipped, self.elapsed = state["skipped"], state["elapsed"]
        self.start = time.perf_counter()


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
    meter: EpochMeter | None = None,
    teacher=None,
    amp_dtype: torch.dtype | None = None,
    skip_nonfinite: int = 0,
    after_step: Callable[[EpochMeter], None] | None = None,
) -> dict:
    """One pass over ``loader``; returns epoch means of every loss part, acc1 and images/s.

    ``skip_nonfinite``: how many steps with a NaN/inf loss may be skipped (no optimizer update)
    before the run is declared diverged; 0 stops at the first. ``after_step`` runs after every
    step (progress, step checkpoints, preemption) and may raise to stop the epoch.
    """
    model.train()
    objective.set_epoch(epoch)
    for module in model.modules():  # per-epoch schedules inside the net (AirNet's whitening bias)
        if callable(getattr(module, "set_epoch", None)):
            module.set_epoch(epoch)
    meter = meter or EpochMeter(device)
    for images, labels in loader:
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
        optimizer.zero_grad(set_to_none=True)
        meter.steps += 1
        if not torch.isfinite(total):
            meter.skipped += 1
            if meter.skipped > skip_nonfinite:
                raise Diverged(
                    f"training loss became {total.item()} at epoch {epoch + 1}, step {meter.steps}"
                )
            scheduler.step()  # keep the schedule on the step count
        else:
            total.backward()
            optimizer.step()
            scheduler.step()
            meter.update(total, parts, student.logits, targets)
        if after_step is not None:
            after_step(meter)
    if hasattr(optimizer, "sync_lookahead"):  # as timm's train.py: slow weights at each epoch end
        optimizer.sync_lookahead()
    stats = meter.summary()
    stats["lr"] = optimizer.param_groups[0]["lr"]
    return stats


TTA_LEVELS = {"none": 0, "flip": 1, "flip_translate": 2}


def tta_level(name: str) -> int:
    if name not in TTA_LEVELS:
        raise UserError(f"tta={name!r} is not an option; use {', '.join(TTA_LEVELS)}")
    return TTA_LEVELS[name]


def tta_logits(model, images: torch.Tensor, level: int) -> torch.Tensor:
    """Test-time augmentation of airbench (KellerJordan/cifar10-airbench, ``infer``):

    level 0: ``f(x)``; level 1: ``m(x) = (f(x) + f(flip(x))) / 2``; level 2:
    ``m(x) / 2 + m(shift_-1(x)) / 4 + m(shift_+1(x)) / 4``, where ``shift_s`` translates the image
    by one pixel along both axes (reflect padding). Only meaningful for models trained with
    horizontal flips (and translations) as augmentation.
    """

    def mirror(x: torch.Tensor) -> torch.Tensor:
        logits = model(x).logits.float()
        return logits if level == 0 else 0.5 * (logits + model(x.flip(3)).logits.float())

    if level < 2:
        return mirror(images)
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")  # (B, C, H+2, W+2)
    up_left, down_right = padded[..., :h, :w], padded[..., 2:, 2:]  # one pixel each way
    return 0.5 * mirror(images) + 0.25 * (mirror(up_left) + mirror(down_right))


@torch.no_grad()
def evaluate(
    model, loader, device: torch.device, *, prefix: str, amp_dtype=None, tta: int = 0
) -> dict:
    """Top-1/top-5 accuracy (percent) and mean CE on ``loader``; ``tta``: a TTA_LEVELS value."""
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
            logits = tta_logits(model, images, tta)  # (B, K), float
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


def evaluate_variants(
    model, loader, device: torch.device, *, prefix: str, amp_dtype=None, ema_model=None, tta=0
) -> dict:
    """The optional evaluations (#17), each under keys of its own so they never mix with the
    live weights' plain numbers: the EMA weights (``{prefix}_ema/*``), test-time augmentation
    (``{prefix}_tta/*``) and both (``{prefix}_ema_tta/*``). Empty when neither is on."""
    out = {}
    for suffix, net in (("", model), ("_ema", ema_model)):
        if net is None:
            continue
        for level in ([0] if suffix else []) + ([tta] if tta else []):
            key = prefix + suffix + ("_tta" if level else "")
            stats = evaluate(net, loader, device, amp_dtype=amp_dtype, prefix=key, tta=level)
            stats.pop(f"{key}/images_per_s")
            out.update(stats)
    return out
