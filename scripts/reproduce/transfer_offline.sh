#!/usr/bin/env bash
# Offline transfer-learning reproduction (issue #4), reduced to run on a shared 2-core CPU:
#   1. pretrain ResNet-20 on Fashion-MNIST (4,000-image subset, 2 epochs) with CE and with
#      CAM-loss, seeds 0 1 2                                  experiment=transfer_fashion_pretrain
#   2. transfer each of the 6 sources to scikit-learn digits at 28x28 (transfer seed 0):
#      fine-tune with and without CAM-loss                     experiment=transfer_digits28_finetune
#      linear probe                                           experiment=transfer_digits28_linear_probe
#   3. train from scratch on digits28 with the fine-tuning schedule (seeds 0 1 2): no transfer
#   4. print a markdown table of test acc1 (last weights), mean ± std over the 3 source seeds.
# Usage: scripts/reproduce/transfer_offline.sh [OUT]   (default outputs/transfer_offline)
#   SEEDS=0 EXTRA=debug=smoke scripts/reproduce/transfer_offline.sh /tmp/x   checks the plumbing
#   in a few minutes (EXTRA: overrides appended to every run; SEEDS: comma-separated).
# Runtime: about 15 CPU-minutes on an idle 2-core machine (estimate from ResNet-20 at ~900
# images/s: 24k pretraining + ~150k transfer images); a step whose .done marker holds the same
# overrides (SEEDS and EXTRA included) is skipped; any other step, and every later one, reruns.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/outputs/transfer_offline}"
SEEDS="${SEEDS:-0,1,2}"
EXTRA="${EXTRA:-}"
CAMEXP="${CAMEXP:-$ROOT/.venv/bin/camexp}"
# step NAME OVERRIDES...: one multirun into $OUT/NAME, skipped when $OUT/NAME/.done records these
# overrides and no earlier step of this invocation ran (a new source retrains what reads it)
RAN=""
step() {
  local name="$1"; shift
  local recipe="$* $EXTRA"
  if [[ -z $RAN && -f "$OUT/$name/.done" && "$(cat "$OUT/$name/.done")" == "$recipe" ]]; then
    return 0
  fi
  RAN=1
  rm -rf "${OUT:?}/$name"
  # shellcheck disable=SC2086  # EXTRA is a list of overrides
  nice -n 10 "$CAMEXP" -m "$@" progress=false tensorboard=false $EXTRA \
    hydra.sweep.dir="$OUT/$name" >"$OUT/$name.log" 2>&1 \
    || { echo "step $name failed; see $OUT/$name.log" >&2; exit 1; }
  printf '%s' "$recipe" >"$OUT/$name/.done"
}
mkdir -p "$OUT"

# 1. sources: one process, folders cam<weight>-seed<seed>
step pretrain experiment=transfer_fashion_pretrain "seed=$SEEDS" 'loss.cam.weight=0,1' \
  'hydra.sweep.subdir=cam${loss.cam.weight}-seed${seed}'
sources=$(ls -d "$OUT"/pretrain/*/checkpoints/last.pt | paste -sd, -)

# 2. transfer: every source x {CE, CAM-loss} fine-tuning, and every source linear-probed
step finetune experiment=transfer_digits28_finetune "init.checkpoint=$sources" 'loss.cam.weight=0,1'
step probe experiment=transfer_digits28_linear_probe "init.checkpoint=$sources"

# 3. no transfer: the fine-tuning schedule from random weights at the from-scratch lr
step scratch dataset=digits28 epochs=6 optim.lr=0.1 "seed=$SEEDS" 'loss.cam.weight=0,1'

# 4. the table
"$ROOT/.venv/bin/python" - "$OUT" <<'PY'
import glob, json, statistics, sys

cells = {}
for path in sorted(glob.glob(f"{sys.argv[1]}/**/results.json", recursive=True)):
    r = json.load(open(path))
    if r["status"] != "completed":
        print(f"skipping {path}: {r['status']}", file=sys.stderr)
        continue
    during = "CAM-loss" if r["config"]["loss"]["cam"]["weight"] else "CE"
    acc = r["metrics"]["test/acc1"]
    if r["task"] == "classify" and r["config"]["dataset"]["name"] == "fashion_mnist":
        key = ("Fashion-MNIST (source; 2,000 test images)", "-", during)
    elif r["task"] == "classify":
        key = ("digits28, from scratch", "none", during)
    else:
        source = {"ce": "CE", "ce+cam": "CAM-loss"}.get(r["source"]["loss"], r["source"]["loss"])
        key = (f"digits28, {r['transfer']['mode'].replace('_', ' ')}", source, during)
    cells.setdefault(key, []).append(acc)

print("| target, protocol | pretrained with | loss during training | test acc1 (%) | runs |")
print("|---|---|---|---|---|")
for key in sorted(cells):
    v = cells[key]
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    print(f"| {key[0]} | {key[1]} | {key[2]} | {statistics.mean(v):.2f} ± {sd:.2f} | {len(v)} |")
PY
