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
# Stop it with Ctrl-C or SIGTERM: the running jobs save last.pt (and, in the final test, the CAM
# metrics' sums so far) and the same command resumes them in this checkout. Each cut-off run is
# also parked (copied, about 5 MB) into docs/measurements/evidence/.parked/ when stopped and every
# 30 minutes (--park-every): commit that folder too, and a fresh clone resumes the run there
# instead of restarting it (outputs/evidence, the scratch folder, is not committed).
# Runtime, one thread per run, in CPU-hours as each table's tables.md section states them.
# AVX2 EPYC (family 23): classification 11.3 + 6.1, transfer sources 2.4, few-shot ~0.9 per run.
# Intel Xeon with AMX (family 6 model 207), 3-4x faster per run: KD teacher 0.58, the 18 KD
# students 1.19, transfer 0.49, from-scratch 0.18, few-shot ~0.25 per run; CAM quality ~2.6 per
# run (15 epochs at ~7 min beside another job, then ~50 min of metrics on all 10,000 test
# canvases; 7.5-8.5 min per epoch on a slower day of the same machine), so a pair of
# CAM-quality runs needs about one whole session; a stop resumes it. On one GPU: minutes
# (scripts/device/gpu_session.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../setup.sh"
camexp_setup
camexp_fashion_mnist
cd "$CAMEXP_ROOT"
exec nice -n "${NICE:-19}" "$PY" scripts/reproduce/evidence.py \
  --jobs "${JOBS:-2}" --threads "${THREADS:-1}" "$@"
