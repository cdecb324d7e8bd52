#!/usr/bin/env bash
# Offline few-shot reproduction (issue #5), reduced to run on a 2-core CPU:
#   ResNet-20 trained on Fashion-MNIST's 5 base classes (labels 0-4) with CE (loss.cam.weight=0)
#   and with CE + CAM-loss (weight 1), seeds 0 1 2: 3,000 base training images, 3 epochs
#   (experiment=fewshot_fashion_resnet20); then 600 5-way 1-shot and 5-shot episodes (15 queries)
#   on the 5 novel classes (first 600 images of each), logistic regression and nearest
#   prototype, identical episodes for every backbone (fewshot.episode_seed=0).
# Prints a markdown table: per setting, the mean over seeds ± the std over seeds of the episode
# mean accuracy, and the mean 95% CI half-width of a single run (1.96 * std / sqrt(600)).
# Usage: scripts/reproduce/fewshot_offline.sh [OUT]   (default outputs/fewshot_offline)
#        SEEDS="0" scripts/reproduce/fewshot_offline.sh   for a quicker single-seed pass
# Runtime: see docs/results.md "Few-shot learning" (measured there).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/outputs/fewshot_offline}"
SEEDS="${SEEDS:-0 1 2}"
CAMEXP="${CAMEXP:-$ROOT/.venv/bin/camexp}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

for s in $SEEDS; do
  for w in 0 1; do
    dir="$OUT/cam$w-seed$s"
    args=(experiment=fewshot_fashion_resnet20 "loss.cam.weight=$w" "seed=$s" progress=false
          tensorboard=false)
    if ! "$PYTHON" "$ROOT/scripts/reproduce/same_run.py" "$dir" "${args[@]}"; then
      rm -rf "$dir"  # a run of another recipe, or cut off: trained again from the start
      nice -n 10 "$CAMEXP" "${args[@]}" hydra.run.dir="$dir" >/dev/null
    fi
  done
done

"$PYTHON" - "$OUT" $SEEDS <<'PY'
import json, sys
import numpy as np

out, seeds = sys.argv[1], sys.argv[2:]
runs = {w: [json.load(open(f"{out}/cam{w}-seed{s}/results.json")) for s in seeds] for w in (0, 1)}
print(f"seeds {' '.join(seeds)}; mean ± std over seeds (mean CI95 of one run)\n")
print("| pretraining | classifier | 5-way 1-shot | 5-way 5-shot | base test acc1 | wall s |")
print("|---|---|---|---|---|---|")
for w, label in ((0, "CE"), (1, "CE + CAM-loss")):
    for clf in ("logreg", "prototype"):
        cells = []
        for shot in (1, 5):
            key = f"fewshot/novel/5way_{shot}shot/{clf}"
            acc = np.array([r["metrics"][f"{key}/acc"] for r in runs[w]])
            ci = np.mean([r["metrics"][f"{key}/ci95"] for r in runs[w]])
            cells.append(f"{acc.mean():.2f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.2f} ({ci:.2f})")
        base = np.array([r["metrics"]["base/test/acc1"] for r in runs[w]])
        wall = np.mean([r["wall_time_s"] for r in runs[w]])
        print(f"| {label} | {clf} | {cells[0]} | {cells[1]} | {base.mean():.2f} | {wall:.0f} |")
PY
