#!/usr/bin/env bash
# Issue #6: the offline paper table. CE vs CAM-loss (loss.cam.weight=0,1) x 3 seeds on a REDUCED
# Fashion-MNIST (configs/experiment/cls_fashion_offline.yaml: 1,500 train images, 3 epochs),
# then camexp-report's table, validation-accuracy curves and the CE-vs-CAM-loss CAMs of seed 0.
#   scripts/reproduce/offline_sweep.sh [OUT_DIR] [extra overrides...]
#   scripts/reproduce/offline_sweep.sh outputs/reproduce/offline_sweep_cutmix regularizer=cutmix
#   scripts/reproduce/offline_sweep.sh outputs/offline_full backbone=resnet20,wrn_16_2 regularizer=none,cutmix
# OUT_DIR (default outputs/reproduce/offline_sweep) must not exist yet: a run folder holding
# checkpoints/last.pt would be resumed, not restarted. Measured: 6.5 CPU-minutes on 2 CPU cores.
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
# CAMs of the first CE run and the first CAM-loss run with seed 0, side by side.
first() { grep -l -x -- "- loss.cam.weight=$1" "$OUT"/*/.hydra/overrides.yaml \
  | xargs grep -l -x -- "- seed=0" | head -1 | xargs dirname | xargs dirname; }
"$REPORT" --cams "$(first 0)" "$(first 1)" --cams-out "$OUT/cams_ce_vs_cam.png"
