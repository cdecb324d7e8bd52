#!/usr/bin/env bash
# Issue #9: CE vs CAM-loss on cluttered Fashion-MNIST, 3 seeds each, then the comparison picture.
# Usage: scripts/reproduce/cam_quality.sh [OUT_DIR]   (default outputs/cam_quality)
# One thread per run (OMP_NUM_THREADS=1): on a busy 2-core machine OpenMP spinning costs more than
# it gains. Runtime: about 6 minutes per run on the shared 2-core machine, 36 minutes in all.
# Prints one line per run and the mean ± std table; writes OUT_DIR/cams_ce_vs_cam.png.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/cam_quality}
CAMEXP=${CAMEXP:-.venv/bin/camexp}
PY=${PY:-.venv/bin/python}
# SKIP_TRAIN=1: only tabulate and draw existing runs in OUT_DIR.
if [ -z "${SKIP_TRAIN:-}" ]; then
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} nice -n 10 "$CAMEXP" -m experiment=cam_quality_cluttered \
    'seed=0,1,2' 'loss.cam.weight=0,1' progress=false \
    hydra.sweep.dir="$OUT" hydra.sweep.subdir='w${loss.cam.weight}_s${seed}'
fi
"$PY" - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path

out = Path(sys.argv[1])
keys = ["test/acc1", "test/maxboxacc_v2", "test/maxboxacc_iou50", "test/top1_loc",
        "test/avg_drop", "test/increase_conf", "test/deletion_auc", "test/insertion_auc"]
rows = {}
for path in sorted(out.glob("w*_s*/results.json")):
    r = json.loads(path.read_text())
    weight = path.parent.name.split("_")[0][1:]
    print(path.parent.name, r["status"], {k: r["metrics"].get(k) for k in keys})
    rows.setdefault(weight, []).append(r["metrics"])
print("| loss.cam.weight | runs | " + " | ".join(k.removeprefix("test/") for k in keys) + " |")
print("|---|---|" + "---|" * len(keys))
for weight, runs in sorted(rows.items()):
    cells = []
    for k in keys:
        vals = [m[k] for m in runs if k in m]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        cells.append(f"{statistics.mean(vals):.3g} ± {sd:.2g}" if vals else "-")
    print(f"| {weight} | {len(runs)} | " + " | ".join(cells) + " |")
PY
"$PY" -c "from camexp.report.cams import compare_cams; import sys; \
compare_cams(sys.argv[1:3], sys.argv[3])" "$OUT/w0_s0" "$OUT/w1_s0" "$OUT/cams_ce_vs_cam.png"
echo "picture: $OUT/cams_ce_vs_cam.png"
