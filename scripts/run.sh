#!/usr/bin/env bash
# The main job: set up (idempotent) and run camexp with the given overrides.
#   scripts/run.sh                        ResNet-20 + CAM-loss on Fashion-MNIST (the default)
#   scripts/run.sh loss.cam.weight=0      the CE baseline; any camexp override works
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
camexp_setup launchers  # hydra/launcher=parallel|slurm|local_submitit need the plugins
camexp_fashion_mnist
cd "$CAMEXP_ROOT"
if [ "$#" -eq 0 ]; then set -- experiment=fashion_resnet20; fi
# the printed resume command says scripts/run.sh: camexp need not be on PATH (camexp/main.py)
export CAMEXP_LAUNCHER="$CAMEXP_ROOT/scripts/run.sh"
exec "$VENV/bin/camexp" "$@"
