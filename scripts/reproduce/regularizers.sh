#!/usr/bin/env bash
# Issue #6: CAM-loss combined with Mixup, CutMix, label smoothing and Cutout on CIFAR-100
# (small-image ResNet-18, experiment=reg_cifar100_*), CE vs CAM-loss, 3 seeds; then the table:
# rows = regularizer row, columns = loss.cam.weight, with the CAM-loss - CE delta.
#   scripts/reproduce/regularizers.sh [OUT_DIR] [overrides for the sweep...]
#   scripts/reproduce/regularizers.sh outputs/reg hydra/launcher=slurm hydra.launcher.gpus_per_node=1
# Runtime: not measured here (no GPU); 5 rows x 2 x 3 seeds = 30 runs of 200 epochs.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/reproduce/regularizers}
shift || true
CAMEXP=${CAMEXP:-.venv/bin/camexp}
REPORT=${REPORT:-.venv/bin/camexp-report}
ROWS=reg_cifar100_none,reg_cifar100_mixup,reg_cifar100_cutmix,reg_cifar100_label_smoothing,reg_cifar100_cutout

"$CAMEXP" -m experiment=$ROWS 'loss.cam.weight=0,1' 'seed=0,1,2' progress=false \
  hydra.sweep.dir="$OUT" "$@"
"$REPORT" "$OUT" --rows experiment --cols loss.cam.weight | tee "$OUT/table.md"
"$REPORT" "$OUT" --plot "$OUT/val_acc1.png" > /dev/null
