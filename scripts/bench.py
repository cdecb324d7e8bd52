"""Benchmark: camexp's training step against a minimal hand-written PyTorch loop, CAM-loss and
the KD terms against their baselines, evaluation against the training forward pass.

Every comparison runs in ONE process, in interleaved timed windows after a warm-up, so that the
machine's drift hits both sides alike; the table reports median images/s and their ratios.

    python scripts/bench.py                         # ResNet-20, Fashion-MNIST, batch 128
    python scripts/bench.py --steps 5 --windows 2   # quicker
    python scripts/bench.py --tiny --out bench.json # what the tests run
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from camexp.data.memory import random_crop, random_hflip
from camexp.engine import EpochMeter, autocast, evaluate, train_one_epoch
from camexp.main import CONFIG_DIR
from camexp.models.teacher import FrozenTeacher
from camexp.run.record import RunRecord
from camexp.run.tracking import peak_rss_mb
from camexp.training.model import build_model
from camexp.training.setup import amp_dtype, resolve_device
from camexp.training.wiring import Parts, TaskParts, build_parts


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def random_teacher(cfg, data, objective, device) -> FrozenTeacher:
    """A frozen teacher of the student's architecture with fresh weights: its cost, not its
    knowledge, is what a KD step benchmark needs."""
    return FrozenTeacher(build_model(cfg, data, True, device))


def camexp_parts(overrides: list[str], scratch: str, task: TaskParts | None = None) -> Parts:
    """What ``camexp OVERRIDES`` trains, built by camexp's own wiring (training/wiring.py) in a
    scratch run folder: the benchmarks time the real parts, never a re-listed build order."""
    cfg = compose_cfg(overrides)
    run_dir = tempfile.mkdtemp(prefix="run-", dir=scratch)
    return build_parts(cfg, RunRecord(run_dir, cfg, overrides), task or TaskParts())


class Steps:
    """The first ``n`` batches of a loader, re-iterable (one timed window)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.n:
                return
            yield batch


def camexp_step_fn(parts: Parts, steps: int):
    """A window of camexp's own training step (engine.train_one_epoch) over the built parts, with
    the trainer's teacher and precision."""
    t = parts.trainer

    def window():
        train_one_epoch(t.model, t.objective, Steps(t.data.train, steps), t.optimizer, t.scheduler,
                        t.regularizer, t.device, epoch=0, meter=EpochMeter(t.device),
                        teacher=t.teacher, amp_dtype=t.amp_dtype)  # fmt: skip

    return window


def bare_step_fn(cfg, data, device, steps: int):
    """The physical limit: the same model, data, augmentation and optimizer in a bare loop."""
    import timm

    model = timm.create_model(str(cfg.backbone.name), num_classes=data.num_classes,
                              in_chans=data.channels).to(device)  # fmt: skip
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    o = cfg.optim
    optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum,
                                nesterov=o.nesterov, weight_decay=o.weight_decay)  # fmt: skip
    loader = data.train
    mean, std = loader.mean, loader.std
    amp = amp_dtype(str(cfg.amp), device)
    generator = torch.Generator().manual_seed(0)

    def window():
        model.train()
        for _ in range(steps):
            index = torch.randint(0, len(loader.labels), (loader.batch_size,), generator=generator)
            images = loader.images[index].float()
            images = random_hflip(random_crop(images, loader.crop_padding, generator), generator)
            images = (images - mean) / std
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                loss = F.cross_entropy(model(images), loader.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return window


def forward_fn(model, data, steps: int, amp):
    """Training-mode forward passes only (with autograd), the yardstick for evaluation."""

    def window():
        model.train()
        for images, _ in Steps(data.train, steps):
            with autocast(images.device, amp):
                model(images).logits.sum()

    return window


def eval_fn(model, data, device, steps: int, amp):
    def window():
        evaluate(model, Steps(data.train, steps), device, prefix="train", amp_dtype=amp)

    return window


def measure(variants: dict, images_per_window: int, windows: int) -> dict:
    """Interleave the variants window by window; median images/s of each."""
    for fn in variants.values():  # warm-up: allocator, kernels, caches
        fn()
    times = {name: [] for name in variants}
    for _ in range(windows):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: images_per_window / statistics.median(t) for name, t in times.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per variant")
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    parser.add_argument("--tiny", action="store_true", help="2 steps, 1 window, small data")
    parser.add_argument("overrides", nargs="*", help="extra camexp overrides (e.g. amp=bf16)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.steps, args.windows = 2, 1
    base = [f"backbone={args.backbone}", f"batch_size={args.batch_size}", "device=auto",
            *args.overrides]  # fmt: skip
    if args.tiny:
        base += ["debug=smoke", f"batch_size={min(args.batch_size, 32)}"]
    device = resolve_device("auto")
    scratch = tempfile.mkdtemp(prefix="camexp-bench-")
    try:
        return run_variants(args, base, device, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_variants(args, base: list[str], device, scratch: str) -> dict:
    parts = {name: camexp_parts([*base, *extra], scratch, task) for name, extra, task in [
        ("ce", ["loss=[ce]"], None),
        ("cam0", ["loss.cam.weight=0"], None),
        ("cam1", ["loss.cam.weight=1"], None),
        ("kd", ["task=kd", "loss=[ce,kd]"], TaskParts(teacher=random_teacher)),
        ("kd_ccm", ["task=kd", "loss=[ce,kd,ccm]"], TaskParts(teacher=random_teacher)),
    ]}  # fmt: skip
    cfg, data, model = compose_cfg(base), parts["ce"].data, parts["ce"].model
    steps = min(args.steps, len(data.train))
    amp = parts["ce"].trainer.amp_dtype
    per_window = steps * data.train.batch_size
    ce_only, cam_off, cam_on, kd, kd_ccm = (camexp_step_fn(parts[name], steps) for name in parts)
    variants = {
        "bare loop (CE)": bare_step_fn(cfg, data, device, steps),
        "camexp loss=[ce]": ce_only,
        "camexp loss.cam.weight=0": cam_off,
        "camexp loss.cam.weight=1": cam_on,
        "camexp loss=[ce,kd]": kd,
        "camexp loss=[ce,kd,ccm]": kd_ccm,
        "training forward only": forward_fn(model, data, steps, amp),
        "camexp evaluate()": eval_fn(model, data, device, steps, amp),
    }
    speed = measure(variants, per_window, args.windows)
    ratios = {
        "camexp / bare loop": speed["camexp loss=[ce]"] / speed["bare loop (CE)"],
        "step time cam=1 / cam=0": speed["camexp loss.cam.weight=0"]
        / speed["camexp loss.cam.weight=1"],
        "step time cam=1 / loss=[ce]": speed["camexp loss=[ce]"]
        / speed["camexp loss.cam.weight=1"],
        "step time kd+ccm / kd": speed["camexp loss=[ce,kd]"] / speed["camexp loss=[ce,kd,ccm]"],
        "evaluate / training forward": speed["camexp evaluate()"] / speed["training forward only"],
    }
    table = {
        "setting": {
            "backbone": args.backbone,
            "batch_size": data.train.batch_size,
            "steps_per_window": steps,
            "windows": args.windows,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "overrides": args.overrides,
        },  # fmt: skip
        "images_per_s": {k: round(v, 1) for k, v in speed.items()},
        "ratios": {k: round(v, 4) for k, v in ratios.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print(f"{'variant':<32}{'images/s':>12}")
    for name, value in table["images_per_s"].items():
        print(f"{name:<32}{value:>12.1f}")
    print(f"\n{'ratio':<32}{'value':>12}")
    for name, value in table["ratios"].items():
        print(f"{name:<32}{value:>12.3f}")
    print(f"\npeak RSS of this process: {table['peak_rss_mb']:.0f} MB")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(table, f, indent=2)
    return table


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
