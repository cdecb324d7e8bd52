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
# Runtime, one thread per run (CPU-hours measured on the AVX2 EPYC, family 23, unless estimated):
# classification 11.3 + 6.1 (done); few-shot 0.9 per run; a transfer source 0.24; KD teacher
# (40 AirNet epochs) ~2.4 and a KD student ~0.15 (estimates); CAM quality ~13 (estimate): about
# 28 CPU-hours left at stop 32, ~14 hours of wall time at two jobs. On one GPU: minutes
# (scripts/device/gpu_session.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"
camexp_setup
camexp_fashion_mnist
cd "$CAMEXP_ROOT"
exec nice -n "${NICE:-19}" "$PY" scripts/reproduce/evidence.py \
  --jobs "${JOBS:-2}" --threads "${THREADS:-1}" "$@"
