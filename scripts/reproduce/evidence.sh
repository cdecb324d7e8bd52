#!/usr/bin/env bash
# Issue 22: the evidence sweep. Trains, through camexp itself, every run of
# scripts/reproduce/evidence.yaml that docs/measurements/evidence/ does not hold yet (resuming a
# run that was cut off), keeps each finished run's small files there (commit them), and rebuilds
# docs/measurements/evidence/tables.md with camexp-report. With every run present it trains
# nothing and rebuilds the same tables.
#   scripts/reproduce/evidence.sh                          # everything, 2 jobs x 1 thread, nice 19
#   scripts/reproduce/evidence.sh --tables classification  # one table
#   scripts/reproduce/evidence.sh --report-only            # the tables only
#   JOBS=1 THREADS=2 scripts/reproduce/evidence.sh         # one job on both cores
# Stop it with Ctrl-C or SIGTERM: the running jobs save last.pt and the same command resumes them.
# Runtime on the Zen 3 (2 cores, one thread per job, two jobs): an AirNet run ~10-15 min, a
# ResNet-20 run ~35 min; the classification tables ~4 hours. On one GPU: minutes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"
camexp_setup
camexp_fashion_mnist
cd "$CAMEXP_ROOT"
exec nice -n "${NICE:-19}" "$PY" scripts/reproduce/evidence.py \
  --jobs "${JOBS:-2}" --threads "${THREADS:-1}" "$@"
