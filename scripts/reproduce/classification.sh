#!/usr/bin/env bash
# Issue #6: classification across backbones, CE vs CAM-loss (loss.cam.weight=0,1), 3 seeds, on
# CIFAR-10 and CIFAR-100 (experiment=cls_cifar10 / cls_cifar100) and, when IMAGENET_DIR is set,
# ImageNet ResNet-50 (experiment=cls_imagenet_resnet50); then one table per dataset:
# rows = backbone, columns = loss.cam.weight, with the CAM-loss - CE delta.
#   scripts/reproduce/classification.sh [OUT_DIR] [overrides for every sweep...]
#   scripts/reproduce/classification.sh outputs/cls hydra/launcher=slurm hydra.launcher.partition=gpu
# CIFAR files: paths.data_dir (env CAMEXP_DATA_DIR, default data/) holding cifar-10-batches-py/
# and cifar-100-python/. Runtime: not measured here (no GPU); 2 x 10 backbones x 2 x 3 = 120 CIFAR
# runs of 200 epochs plus 2 ImageNet runs: use a cluster launcher.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/reproduce/classification}
shift || true
CAMEXP=${CAMEXP:-.venv/bin/camexp}
REPORT=${REPORT:-.venv/bin/camexp-report}
SWEEP=('loss.cam.weight=0,1' 'seed=0,1,2' progress=false)
CIFAR_NETS=resnet20,resnet56,resnet110,wrn_16_2,wrn_40_2,wrn_28_10,resnet18_small
TIMM_NETS=resnet50,resnext50_32x4d,densenet121   # ImageNet stems: swapped for the 3x3 CIFAR stem

for data in cifar10 cifar100; do
  "$CAMEXP" -m experiment=cls_$data backbone=$CIFAR_NETS "${SWEEP[@]}" \
    hydra.sweep.dir="$OUT/$data/small_nets" "$@"
  "$CAMEXP" -m experiment=cls_$data backbone=$TIMM_NETS backbone.small_input_stem=true \
    "${SWEEP[@]}" hydra.sweep.dir="$OUT/$data/timm_nets" "$@"
done
if [ -n "${IMAGENET_DIR:-}" ]; then
  "$CAMEXP" -m experiment=cls_imagenet_resnet50 dataset.root="$IMAGENET_DIR" \
    'loss.cam.weight=0,1' progress=false hydra.sweep.dir="$OUT/imagenet" "$@"
else
  echo "classification.sh: IMAGENET_DIR not set; skipping ImageNet ResNet-50" >&2
fi

for data in cifar10 cifar100 imagenet; do
  [ -d "$OUT/$data" ] || continue
  echo "## $data"
  "$REPORT" "$OUT/$data" --rows backbone --cols loss.cam.weight | tee "$OUT/$data/table.md"
done
