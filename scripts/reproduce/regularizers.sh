#!/usr/bin/env bash
# Issue #6: CAM-loss combined with Mixup, CutMix, label smoothing and Cutout on CIFAR-100
# (small-image ResNet-18, experiment=cls_cifar100), CE vs CAM-loss, 3 seeds, one recipe swept over
# regularizer= with each method's CIFAR setting (Mixup alpha 1.0, CutMix 1.0 on half the batches,
# label smoothing 0.1, Cutout 8x8); then the table: rows = regularizer, columns =
# loss.cam.weight, with the CAM-loss - CE delta.
#   scripts/reproduce/regularizers.sh [OUT_DIR] [overrides for the sweep...]
#   scripts/reproduce/regularizers.sh outputs/reg hydra/launcher=slurm hydra.launcher.gpus_per_node=1
# Runtime: not measured here (no GPU); 5 rows x 2 x 3 seeds = 30 runs of 200 epochs.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/reproduce/regularizers}
shift || true
CAMEXP=${CAMEXP:-.venv/bin/camexp}
REPORT=${REPORT:-.venv/bin/camexp-report}
ROWS=none,mixup_cifar,cutmix,label_smoothing,cutout_cifar100

"$CAMEXP" -m experiment=cls_cifar100 regularizer=$ROWS 'loss.cam.weight=0,1' 'seed=0,1,2' progress=false \
  hydra.sweep.dir="$OUT" "$@"
"$REPORT" "$OUT" --rows regularizer --cols loss.cam.weight | tee "$OUT/table.md"
"$REPORT" "$OUT" --plot "$OUT/val_acc1.png" > /dev/null
