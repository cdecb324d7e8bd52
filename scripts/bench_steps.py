"""Training speed of recipe variants, in one process: images/s of camexp's training step for each
set of overrides, timed in interleaved windows after a warm-up (scripts/bench.py's method), and
each variant's ratio to the first. For what changes the speed and not the result (torch.compile,
channels_last, the batch size): scripts/bench_tta.py measures what changes accuracy.

    python scripts/bench_steps.py --variant compile=false --variant compile=true \\
        -- experiment=fashion_resnet20
    python scripts/bench_steps.py --variant batch_size=128 --variant batch_size=512 \\
        -- experiment=fashion_resnet20
"""

import argparse
import os
import sys

import torch

from camexp.run.machine import cpu_name
from camexp.training import parts as build

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # scripts/: bench.py, bench_tta.py
from bench import camexp_step_fn, compose_cfg, measure  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True,
                        help="a variant's overrides, space-separated (repeatable)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per variant")
    parser.add_argument("overrides", nargs="*", help="overrides every variant shares")
    args = parser.parse_args(argv)
    device = build.resolve_device("auto")
    torch.manual_seed(0)
    variants, images = {}, {}
    for variant in args.variant:
        cfg = compose_cfg([*args.overrides, *variant.split()])
        data = build.build_data(cfg, device)
        steps = min(args.steps, len(data.train))
        variants[variant], _ = camexp_step_fn(cfg, data, device, steps)
        images[variant] = steps * data.train.batch_size
    # measure() takes one window size; per-variant sizes are rescaled after
    speed = measure(variants, 1, args.windows)
    speed = {name: value * images[name] for name, value in speed.items()}
    first = speed[args.variant[0]]
    print(
        f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"device {device}; shared: {' '.join(args.overrides) or '(defaults)'}"
    )
    print("\n| variant | images/s | vs first |\n|---|---|---|")
    for name, value in speed.items():
        print(f"| `{name}` | {value:.0f} | {value / first:.2f} |")
    return speed


if __name__ == "__main__":
    main()
