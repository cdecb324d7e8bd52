"""Training speed of recipe variants, in one process: images/s of camexp's training step for each
set of overrides, timed in interleaved windows after a warm-up (scripts/bench.py's method), and
each variant's ratio to the first. For what changes the speed and not the result (torch.compile,
channels_last, the batch size): scripts/bench_tta.py measures what changes accuracy.

    python scripts/bench_steps.py --variant compile=false --variant compile=true \\
        -- experiment=fashion_resnet20
    python scripts/bench_steps.py --variant batch_size=128 --variant batch_size=512 \\
        -- experiment=fashion_resnet20
    python scripts/bench_steps.py --profile 12 --variant amp=none   # where the step's time goes
"""

import argparse
import os
import shutil
import sys
import tempfile

import torch

from camexp.run.machine import cpu_name
from camexp.training.setup import resolve_device

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # scripts/: bench.py, bench_tta.py
from bench import camexp_parts, camexp_step_fn, measure  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True,
                        help="a variant's overrides, space-separated (repeatable)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per variant")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile one window per variant: its N costliest ops")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="overrides every variant shares")
    args = parser.parse_args(argv)
    device = resolve_device("auto")
    variants, images = {}, {}
    scratch = tempfile.mkdtemp(prefix="camexp-bench-steps-")
    try:
        for variant in args.variant:  # each built by camexp's wiring, as `camexp` builds it
            parts = camexp_parts([*args.overrides, *variant.split()], scratch)
            steps = min(args.steps, len(parts.data.train))
            variants[variant] = camexp_step_fn(parts, steps)
            images[variant] = steps * parts.data.train.batch_size
        # measure() takes one window size; per-variant sizes are rescaled after
        speed = measure(variants, 1, args.windows)
        profiles = {v: profile_rows(w, args.profile) for v, w in variants.items() if args.profile}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    speed = {name: value * images[name] for name, value in speed.items()}
    first = speed[args.variant[0]]
    print(
        f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"device {device}; shared: {' '.join(args.overrides) or '(defaults)'}"
    )
    print("\n| variant | images/s | vs first |\n|---|---|---|")
    for name, value in speed.items():
        print(f"| `{name}` | {value:.0f} | {value / first:.2f} |")
    for name, rows in profiles.items():
        print(f"\nOne window of `{name}` under torch.profiler, the costliest ops by self CPU time:")
        print("\n| op | share of the window | calls |\n|---|---|---|\n" + "\n".join(rows))
    return speed


def profile_rows(window, top: int) -> list[str]:
    """Markdown rows of the ``top`` ops with the most self CPU time in one ``window()``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        window()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops) or 1
    return [f"| `{e.key}` | {100 * e.self_cpu_time_total / total:.1f} % | {e.count} |"
            for e in ops[:top]]  # fmt: skip


if __name__ == "__main__":
    main()
