"""Time to accuracy in machine-independent units: reference epochs.

A **reference epoch** is the time one epoch of a bare hand-written loop takes to train the
small-image ResNet-20 in fp32 (channels_last, SGD + Nesterov) on Fashion-MNIST at batch 128: 60,000
images, timed in this same process. Reference windows (``--ref-steps`` steps) run before the
recipe and after each of its epochs, so machine drift and neighbours hit both sides alike; the
unit is the median window's images/s.

The recipe is a camexp composition (``experiment=... key=value ...``) trained once per seed by
camexp's own training, ``camexp.training.wiring.train`` (what ``camexp`` runs: the same parts, the
same trainer, validation and checkpoints included), in a run folder (``--run-dir``; default a
temporary one). Its clock is the sum of the trainer's ``train_time_s``: the training steps and EMA
updates only. An epoch hook of the trainer evaluates the **test set** after every epoch with the
last weights (and the EMA weights, and with TTA where the recipe turns them on), off the clock: a
measurement only, never used to select anything.

The table gives, per evaluation and per seed and for the mean over seeds, the reference epochs
until test acc1 first reaches 93 / 94 / 94.5 %, the last-epoch accuracy, and the training FLOPs
(torch.utils.flop_counter on one step, times the steps; forward + backward).

    python scripts/bench_tta.py --seeds 0 1 2 --cache outputs/bench --out docs/bench_tta.md \
        experiment=fashion_fast
    python scripts/bench_tta.py --seeds 0 experiment=fashion_resnet20 epochs=4
"""

import argparse
import copy
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

import timm
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from camexp.data.memory import random_crop, random_hflip
from camexp.data.progressive import resize_batch
from camexp.engine import autocast, evaluate
from camexp.precision import cpu_flags, cpu_native_bf16
from camexp.run.checkpoint import without_added_defaults
from camexp.run.machine import cpu_name
from camexp.run.record import RunRecord
from camexp.training.data import build_data
from camexp.training.setup import resolve_device
from camexp.training.wiring import TaskParts, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # scripts/: bench.py
from bench import compose_cfg  # noqa: E402
from bench_cache import load_cached, save_cached  # noqa: E402

NEUTRAL = ["progress=false", "tensorboard=false"]  # change nothing a run computes

THRESHOLDS = (93.0, 94.0, 94.5)
REF_IMAGES = 60_000  # Fashion-MNIST's training set: one reference epoch
REF_BATCH = 128


class Reference:
    """The bare ResNet-20 fp32 loop on the recipe's training images; ``window()`` times it."""

    def __init__(self, train_loader, steps: int):
        torch.manual_seed(0)
        self.model = timm.create_model("resnet20", num_classes=10, in_chans=1)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9,
                                         nesterov=True, weight_decay=5e-4)  # fmt: skip
        self.images, self.labels = train_loader.images.cpu(), train_loader.labels.cpu()
        self.mean, self.std = train_loader.mean.cpu(), train_loader.std.cpu()
        self.generator = torch.Generator().manual_seed(0)
        self.steps = steps
        self.speeds: list[float] = []  # images/s of each timed window
        self.step()  # warm-up: allocator, kernels

    def step(self) -> None:
        index = torch.randint(0, len(self.labels), (REF_BATCH,), generator=self.generator)
        images = self.images[index].float()  # (B, 1, 28, 28)
        images = random_hflip(random_crop(images, 2, self.generator), self.generator)
        images = ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(self.model(images), self.labels[index])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def window(self) -> None:
        self.model.train()
        start = time.perf_counter()
        for _ in range(self.steps):
            self.step()
        self.speeds.append(self.steps * REF_BATCH / (time.perf_counter() - start))


def training_flops(model, objective, regularizer, loader, amp, size=None) -> int:
    """FLOPs of one training step (forward, loss, backward) on a copy of the model, on a batch
    of ``loader`` resized to ``size`` (None: as the loader gives it)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).train()
    images, labels = next(iter(loader))
    if size is not None:
        images = resize_batch(images, size)
    images, targets = regularizer(images, labels)
    with FlopCounterMode(display=False) as counter:
        with autocast(images.device, amp):
            total, _ = objective(model(images), None, targets)
        total.backward()
    return counter.get_total_flops()


class Measure:
    """The trainer's epoch hook: the training clock, the test accuracy after every
    ``eval_every`` epochs (and the last), a reference window after each, and the FLOPs of one
    training step once training is over (so the loader and regularizer draw nothing extra)."""

    def __init__(self, seed: int, reference: Reference, eval_every: int):
        self.seed, self.reference, self.eval_every = seed, reference, eval_every
        self.clock, self.curves, self.flops = 0.0, {}, 0

    def __call__(self, trainer, row: dict) -> None:
        self.clock += row["train_time_s"]
        epoch, last = trainer.epoch, trainer.epoch == trainer.epochs
        if epoch % self.eval_every and not last:
            return
        # measurement only (never selection): the test set with the last weights of this epoch
        out = {"seconds": self.clock}
        ema = {"test_ema": trainer.ema.module} if trainer.ema is not None else {}
        for name, net in {"test": trainer.model, **ema}.items():
            for level in sorted({0, trainer.tta}):
                key = name + ("_tta" if level else "")
                stats = evaluate(net, trainer.data.test, trainer.device, prefix="test",
                                 amp_dtype=trainer.amp_dtype, tta=level)  # fmt: skip
                out[key] = stats["test/acc1"]
        for key, value in out.items():
            self.curves.setdefault(key, []).append(value)
        if self.reference.steps:
            self.reference.window()
            out["ref_epoch_s"] = REF_IMAGES / self.reference.speeds[-1]  # this window's: the log
        shown = "  ".join(f"{k}={v:.2f}" for k, v in out.items())
        print(f"seed {self.seed} epoch {epoch}: {shown}", file=sys.stderr, flush=True)
        if last:
            self.flops = run_flops(trainer)


def run_flops(trainer) -> int:
    """The training FLOPs of the whole run: one step's at each batch size the run trains at
    (progressive resizing: smaller early), times its steps at that size."""
    loader = trainer.data.train
    parts = (trainer.model, trainer.objective, trainer.regularizer, loader, trainer.amp_dtype)
    if not hasattr(loader, "step_sizes"):  # a folder loader: one size throughout
        return len(loader) * trainer.epochs * training_flops(*parts)
    return sum(steps * training_flops(*parts, size=size)
               for size, steps in loader.step_sizes().items())  # fmt: skip


def run_seed(overrides: list[str], seed: int, reference: Reference, run_dir: str,
             eval_every: int = 1) -> dict:  # fmt: skip
    """One seed of the recipe through camexp's own training (training/wiring.py: train), in
    ``run_dir``, with :class:`Measure` as the trainer's epoch hook."""
    run_overrides = [*NEUTRAL, *overrides, f"seed={seed}"]
    cfg = compose_cfg(run_overrides)
    measure = Measure(seed, reference, eval_every)
    train(cfg, RunRecord(run_dir, cfg, run_overrides), TaskParts(epoch_hooks=[measure]))
    return {"curves": measure.curves, "flops": measure.flops, "epochs": int(cfg.epochs)}


def run_seed_in_folder(args, seed: int, reference: Reference) -> dict:
    """A fresh run folder for the seed: under ``--run-dir`` (kept), or a temporary one."""
    if args.run_dir:
        os.makedirs(args.run_dir, exist_ok=True)
        folder = tempfile.mkdtemp(prefix=f"seed{seed}-", dir=args.run_dir)
        return run_seed(args.overrides, seed, reference, folder, args.eval_every)
    folder = tempfile.mkdtemp(prefix=f"bench-tta-seed{seed}-")
    try:
        return run_seed(args.overrides, seed, reference, folder, args.eval_every)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def first_crossing(accuracies: list[float], seconds: list[float], threshold: float):
    for acc, t in zip(accuracies, seconds, strict=True):
        if acc >= threshold:
            return t
    return None


def mean_curve(curves: list[list[float]]) -> list[float]:
    return [statistics.mean(values) for values in zip(*curves, strict=True)]


def table(runs: dict, ref_s: float, header: list[str]) -> str:
    """Markdown: one row per (evaluation, seed) and per evaluation for the mean over seeds."""

    def cell(t):
        return "not reached" if t is None else f"{t / ref_s:.2f}"

    keys = [k for k in next(iter(runs.values()))["curves"] if k.startswith("test")]
    cols = [f"ref-epochs to {t:g} %" for t in THRESHOLDS]
    lines = [*header, "", f"| weights | seed | {' | '.join(cols)} | last-epoch acc1 | "
             "train time (ref epochs) | train TFLOPs |",
             "|" + "---|" * (len(cols) + 5)]  # fmt: skip
    for key in keys:
        for seed, run in runs.items():
            c = run["curves"]
            lines.append(f"| {key} | {seed} | "
                         + " | ".join(cell(first_crossing(c[key], c["seconds"], t))
                                      for t in THRESHOLDS)
                         + f" | {c[key][-1]:.2f} | {c['seconds'][-1] / ref_s:.2f}"
                         f" | {run['flops'] / 1e12:.2f} |")  # fmt: skip
        if len(runs) > 1:
            mean_acc = mean_curve([r["curves"][key] for r in runs.values()])
            mean_s = mean_curve([r["curves"]["seconds"] for r in runs.values()])
            flops = statistics.mean(r["flops"] for r in runs.values())
            lines.append(f"| {key} | **mean** | "
                         + " | ".join(cell(first_crossing(mean_acc, mean_s, t))
                                      for t in THRESHOLDS)
                         + f" | {mean_acc[-1]:.2f} | {mean_s[-1] / ref_s:.2f}"
                         f" | {flops / 1e12:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run_identity(args, seed: int, device) -> dict:
    """What a cached seed must match to be reused: the recipe, the measurement and the machine."""
    # yaml edits count too; a config block added later, while it is off, does not (the cached
    # seeds before it were trained as it does nothing)
    composed = OmegaConf.to_container(compose_cfg([*args.overrides, f"seed={seed}"]))
    recipe = OmegaConf.to_yaml(OmegaConf.create(without_added_defaults(composed)))
    return {"overrides": list(args.overrides), "recipe": recipe, "seed": seed,
            "trained_by": "camexp.training.wiring.train",  # not the former copy of the loop
            "eval_every": args.eval_every,
            "ref_steps": args.ref_steps, "cpu": cpu_name(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(device)}  # fmt: skip


def numbers(values) -> bool:
    return isinstance(values, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


def valid_run(run: dict) -> bool:
    """A cached seed's record has what the table reads: per-key curves of numbers (with the
    seconds), its FLOPs and its positive reference speeds."""
    curves, speeds, flops = run.get("curves"), run.get("ref_speeds"), run.get("flops")
    return (
        isinstance(curves, dict) and "seconds" in curves and all(map(numbers, curves.values()))
        and numbers(speeds) and all(v > 0 for v in speeds)
        and isinstance(flops, int | float) and not isinstance(flops, bool)
    )  # fmt: skip


def at_least(least: int):
    """An argparse type: a whole number >= ``least`` (anything else: one line, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {least}")
        return value

    return parse


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ref-steps", type=at_least(0), default=40,
                        help="reference steps per timed window (one window before the recipe, "
                             "one after each epoch)")  # fmt: skip
    parser.add_argument("--eval-every", type=at_least(1), default=1,
                        help="evaluate the test set every N epochs and after the last (time to "
                             "accuracy is then resolved to N epochs)")  # fmt: skip
    parser.add_argument("--out", default=None, help="write the markdown table here")
    parser.add_argument("--cache", default=None,
                        help="keep each finished seed here (JSON) and reuse it: the same command "
                             "continues an interrupted sweep on the same machine")  # fmt: skip
    parser.add_argument("--run-dir", default=None,
                        help="keep each seed's camexp run folder under this folder (default: a "
                             "temporary folder, removed)")  # fmt: skip
    parser.add_argument("--cached-only", action="store_true",
                        help="train nothing: tabulate the seeds found in --cache")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="camexp overrides, e.g. experiment=X")
    args = parser.parse_args(argv)
    device = resolve_device("auto")
    runs, speeds, reference = {}, [], None
    for seed in args.seeds:
        identity = run_identity(args, seed, device)
        cached = load_cached(args.cache, identity, valid=valid_run)
        if cached is None and args.cached_only:
            continue
        if cached is None:
            if reference is None:  # built only when a seed has to run
                first = compose_cfg([*args.overrides, f"seed={seed}"])
                reference = Reference(build_data(first, device).train, args.ref_steps)
            done = len(reference.speeds)
            if args.ref_steps:
                reference.window()  # one window before each seed's recipe
            cached = run_seed_in_folder(args, seed, reference)
            cached["ref_speeds"] = reference.speeds[done:]
            save_cached(args.cache, identity, cached)
        runs[seed] = cached
        speeds += cached["ref_speeds"]
    if not runs:
        print(f"bench_tta: no cached seed of {args.seeds} for these overrides", file=sys.stderr)
        return ""
    ref_s = REF_IMAGES / statistics.median(speeds) if speeds else float("nan")
    flags = cpu_flags()
    native = cpu_native_bf16(flags)
    header = [
        f"### `{' '.join(args.overrides) or '(defaults)'}`, seeds {list(runs)}",
        "",
        f"CPU: {cpu_name()} ({torch.backends.cpu.get_cpu_capability()}, native bf16: "
        f"{', '.join(native) or 'no'}), {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, device {device}. Reference epoch: {ref_s:.1f} s (bare ResNet-20 "
        f"fp32 loop, batch {REF_BATCH}, {REF_IMAGES} images; median of "
        f"{len(speeds)} windows of {args.ref_steps} steps). Test accuracy is measured every "
        f"{args.eval_every} epoch(s) and after the last, with that epoch's weights, never used "
        "for selection.",
    ]
    text = table(runs, ref_s, header)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
