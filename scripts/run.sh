#!/usr/bin/env bash
# The main job: set up (idempotent) and run camexp with the given overrides, passed on unchanged:
# plain `camexp` is the main job (configs/experiment/fashion_main.yaml), so an override changes
# that recipe in what it names and nothing else.
#   scripts/run.sh                        AirNet + CAM-loss on Fashion-MNIST (the main job)
#   scripts/run.sh loss.cam.weight=0      the CE baseline: the main job without CAM-loss
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
camexp_setup launchers  # hydra/launcher=parallel|slurm|local_submitit need the plugins
camexp_fashion_mnist
cd "$CAMEXP_ROOT"
# the printed resume command says scripts/run.sh: camexp need not be on PATH (camexp/main.py)
export CAMEXP_LAUNCHER="$CAMEXP_ROOT/scripts/run.sh"
exec "$VENV/bin/camexp" "$@"
