#!/usr/bin/env bash
# Issue #6: the offline paper table. CE vs CAM-loss (loss.cam.weight=0,1) x 3 seeds on a REDUCED
# Fashion-MNIST (configs/experiment/cls_fashion_offline.yaml: 1,500 train images, 3 epochs),
# then camexp-report's table and validation-accuracy curves.
#   scripts/reproduce/offline_sweep.sh [OUT_DIR] [extra overrides...]
#   scripts/reproduce/offline_sweep.sh outputs/offline_full backbone=resnet20,wrn_16_2 regularizer=none,cutmix
# OUT_DIR (default outputs/reproduce/offline_sweep) must not exist yet: a run folder holding
# checkpoints/last.pt would be resumed, not restarted. Budget: about 10-15 CPU-minutes here.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/reproduce/offline_sweep}
shift || true
CAMEXP=${CAMEXP:-.venv/bin/camexp}
REPORT=${REPORT:-.venv/bin/camexp-report}
if [ -e "$OUT" ]; then
  echo "offline_sweep.sh: $OUT exists; remove it or pass another folder" >&2
  exit 2
fi
nice -n 10 "$CAMEXP" -m experiment=cls_fashion_offline 'loss.cam.weight=0,1' 'seed=0,1,2' \
  progress=false hydra.sweep.dir="$OUT" "$@"
"$REPORT" "$OUT" --rows backbone --cols loss.cam.weight | tee "$OUT/table.md"
"$REPORT" "$OUT" --plot "$OUT/val_acc1.png" | tee "$OUT/table_long.md"
