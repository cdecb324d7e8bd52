#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool), prepared by scripts/device/prepare.sh:
#   run(command="bash scripts/device/gpu_session.sh 420", carry=[".device"], timeout_s=600)
# 1. installs the carried wheels and Fashion-MNIST (the machine has no network);
# 2. runs the evidence sweep (scripts/reproduce/evidence.py, every table, 4 jobs x 2 threads on
#    the one GPU) for BUDGET seconds (default 420), then stops it with SIGTERM: runs that finished
#    are kept, a cut-off run is lost with the machine and restarts next time; a run parked by a
#    CPU session (docs/measurements/evidence/.parked) is not resumed here, where it would end half
#    CPU, half GPU: the GPU trains it from its first epoch, and the local sweep, once that run is
#    kept, removes the stale parked copy;
# 3. returns $OUT/evidence_new.tgz (only the run folders kept in this call) and $OUT/gpu.txt.
# Here, afterwards: stop the local sweeps first (a run trained on both would be kept twice), then
#   tar xzf /work/.device/.../evidence_new.tgz -C .   and rebuild the tables with
#   scripts/reproduce/evidence.sh --report-only   (a GPU run's machine.json names the GPU; a
#   table of CPU and GPU runs lists which ran where). amp=none on a GPU is fp32 storage with
#   cuDNN's default TF32 convolutions (torch.backends.cudnn.allow_tf32), not bit-for-bit fp32.
set -uo pipefail
BUDGET=${1:-420}
OUT=${OUT:-/tmp/gpu_session_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .device/whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  mkdir -p /usr/share/datasets/fashion-mnist && cp .device/data/*.gz /usr/share/datasets/fashion-mnist/
fi
{ nvidia-smi -L; python3 -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__)'; } \
  >"$OUT/gpu.txt" 2>&1
EV=docs/measurements/evidence
rm -rf "$EV/.parked"  # this machine's copy only: a CPU-parked run starts afresh on the GPU
find "$EV" -path "$EV/.parked" -prune -o -name results.json -print | sort >/tmp/kept_before
timeout -s TERM -k 90 "$BUDGET" python3 scripts/reproduce/evidence.py --jobs 4 --threads 2 \
  --scratch /tmp/evidence >"$OUT/sweep.log" 2>&1
echo "evidence.py exit $?" >>"$OUT/sweep.log"
find "$EV" -path "$EV/.parked" -prune -o -name results.json -print | sort >/tmp/kept_after
comm -13 /tmp/kept_before /tmp/kept_after | xargs -r -n1 dirname >/tmp/kept_new
if [ -s /tmp/kept_new ]; then tar czf "$OUT/evidence_new.tgz" -T /tmp/kept_new; fi
cat /tmp/kept_new >>"$OUT/sweep.log"
tail -n 20 "$OUT/sweep.log"
