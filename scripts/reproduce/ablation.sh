#!/usr/bin/env bash
# Issue #6: ablation of CAM-loss's reconstructed options on CIFAR-100 ResNet-56
# (experiment=ablation_cifar100), one factor at a time around the defaults, 3 seeds each; one
# table per factor (mean ± std over seeds, failed/diverged runs listed).
#   scripts/reproduce/ablation.sh [OUT_DIR] [overrides for every sweep...]
#   EXPERIMENT=cls_fashion_offline scripts/reproduce/ablation.sh outputs/abl_cpu   (a CPU-sized grid)
# Runtime: not measured here (no GPU); 21 settings x 3 seeds = 63 runs of 200 epochs.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/reproduce/ablation}
shift || true
CAMEXP=${CAMEXP:-.venv/bin/camexp}
REPORT=${REPORT:-.venv/bin/camexp-report}
EXPERIMENT=${EXPERIMENT:-ablation_cifar100}

declare -A FACTORS=(
  [weight]="loss.cam.weight=0,0.1,0.5,1,2"
  [norm]="loss.cam.norm=minmax,max,none"
  [distance]="loss.cam.distance=l1,l2,smooth_l1"
  [detach]="loss.cam.detach_classifier=true,false loss.cam.detach_cam=false,true"
  [relu]="loss.cam.relu=false,true"
  [target]="loss.cam.target=soft,hard regularizer=cutmix"   # soft vs hard differ only for mixed labels
  [warmup]="loss.cam.warmup_epochs=0,10,50"
)
for factor in weight norm distance detach relu target warmup; do
  # shellcheck disable=SC2086  # each factor is several overrides
  "$CAMEXP" -m experiment="$EXPERIMENT" ${FACTORS[$factor]} 'seed=0,1,2' progress=false \
    hydra.sweep.dir="$OUT/$factor" "$@"
done
for factor in weight norm distance detach relu target warmup; do
  echo "## loss.cam: $factor"
  "$REPORT" "$OUT/$factor" | tee "$OUT/$factor/table.md"
done
