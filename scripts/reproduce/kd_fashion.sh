#!/usr/bin/env bash
# Offline reproduction of CAAM-CAM matching distillation (issue #3) on Fashion-MNIST, sized for a
# 2-core CPU: a resnet20 teacher (0.27M parameters, cross-entropy) distilled into a quarter-width
# resnet20 student (widths 8/8/16/32, 0.07M parameters) with CE, KD, CCM and KD+CCM, 3 seeds each.
#
# Reductions against a full run (all overridable through the environment):
#   TRAIN=1000 training images (of 55,000), VAL=500 (of 5,000 held out), TEST=1000 (of 10,000),
#   TEACHER_EPOCHS=6, EPOCHS=4 student epochs, batch 50, SEEDS="0 1 2".
# Every other value is the camexp default (SGD lr 0.1 nesterov, cosine, wd 5e-4, crop+flip).
# Usage: scripts/reproduce/kd_fashion.sh           (runs, then prints the markdown table)
#        SUMMARY_ONLY=1 scripts/reproduce/kd_fashion.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CAMEXP="${CAMEXP:-.venv/bin/camexp}"
OUT="${OUT:-outputs/kd_fashion}"
TRAIN="${TRAIN:-1000}" VAL="${VAL:-500}" TEST="${TEST:-1000}"
TEACHER_EPOCHS="${TEACHER_EPOCHS:-6}" EPOCHS="${EPOCHS:-4}" SEEDS="${SEEDS:-0 1 2}"
JOBS="${JOBS:-2}"  # parallel student runs, one thread each
COMMON=(dataset=fashion_mnist "dataset.subset={train:$TRAIN,val:$VAL,test:$TEST}" batch_size=50
        progress=false device=cpu)
STUDENT=(backbone=resnet20 "+backbone.kwargs.widths=[8,8,16,32]" epochs="$EPOCHS")

run() {  # run NAME OVERRIDES...: skip a run that completed with these same overrides, after
  local name=$1; shift  # the teacher it reads (a retrained teacher retrains every student)
  if .venv/bin/python scripts/reproduce/same_run.py "$OUT/$name" "${COMMON[@]}" "$@" &&
     { [[ $name == teacher ]] || [[ "$OUT/$name/results.json" -nt "$OUT/teacher/results.json" ]]; }; then
    return 0
  fi
  rm -rf "${OUT:?}/$name"
  echo "== $name: $*"
  OMP_NUM_THREADS="${THREADS:-1}" nice -n 10 "$CAMEXP" "${COMMON[@]}" "$@" "hydra.run.dir=$OUT/$name" \
    > "$OUT/$name.out" 2>&1 || { echo "$name failed: see $OUT/$name.out"; return 1; }
}
export -f run; export CAMEXP OUT
export COMMON_STR="${COMMON[*]}"

if [[ -z "${SUMMARY_ONLY:-}" ]]; then
  mkdir -p "$OUT"
  # 1. the teacher (cross-entropy only)
  THREADS=2 run teacher backbone=resnet20 "loss=[ce]" epochs="$TEACHER_EPOCHS" seed=0
  CKPT="$OUT/teacher/checkpoints/best.pt"
  # 2. the students: CE (no teacher), KD (CRD weights 0.1/0.9, T=4), CCM (beta 1), KD+CCM
  jobs=()
  for seed in $SEEDS; do
    KD=(task=kd teacher.name=resnet20 "teacher.ckpt=$CKPT" task.eval_teacher=false)
    jobs+=("ce_s$seed ${STUDENT[*]} loss=[ce] seed=$seed")
    jobs+=("kd_s$seed ${STUDENT[*]} ${KD[*]} loss=[ce,kd] loss.ce.weight=0.1 loss.kd.weight=0.9 seed=$seed")
    jobs+=("ccm_s$seed ${STUDENT[*]} ${KD[*]} loss=[ce,ccm] loss.ccm.weight=1.0 seed=$seed")
    jobs+=("kd_ccm_s$seed ${STUDENT[*]} ${KD[*]} loss=[ce,kd,ccm] loss.ce.weight=0.1 loss.kd.weight=0.9 loss.ccm.weight=1.0 seed=$seed")
  done
  printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} bash -c 'set -f; COMMON=($COMMON_STR); run {}'
fi

# 3. the table: mean ± std over seeds of the student's test accuracy (last and best-on-val
#    weights) and of the convergence epochs; the teacher's own numbers first.
OUT="$OUT" SEEDS="$SEEDS" .venv/bin/python - <<'PY'
import json, os, statistics as st
out, seeds = os.environ["OUT"], os.environ["SEEDS"].split()  # this recipe's seeds only
def load(name):
    with open(os.path.join(out, name, "results.json")) as f:
        return json.load(f)
t = load("teacher")["metrics"]
print(f"teacher resnet20: test acc1 {t['test/acc1']:.2f} (last), {t['test_best/acc1']:.2f} (best on val)\n")
keys = [("test/acc1", "test acc1 last"), ("test_best/acc1", "test acc1 best-on-val"),
        ("val/acc1_last", "val acc1 last"), ("converge/epoch_90pct", "epoch 90%"),
        ("converge/epoch_95pct", "epoch 95%"), ("converge/epoch_99pct", "epoch 99%")]
print("| method | runs | " + " | ".join(k[1] for k in keys) + " | s/run |")
print("|---" * (len(keys) + 3) + "|")
for method in ("ce", "kd", "ccm", "kd_ccm"):
    runs = [load(f"{method}_s{seed}") for seed in seeds
            if os.path.isfile(os.path.join(out, f"{method}_s{seed}", "results.json"))]
    runs = [r for r in runs if r["status"] == "completed"]
    if not runs:
        continue
    cells = []
    for key, _ in keys:
        vals = [r["metrics"][key] for r in runs]
        sd = st.stdev(vals) if len(vals) > 1 else 0.0
        cells.append(f"{st.mean(vals):.2f} ± {sd:.2f}")
    secs = st.mean(r["wall_time_s"] for r in runs)
    print(f"| {method.upper().replace('_', '+')} | {len(runs)} | " + " | ".join(cells) + f" | {secs:.0f} |")
PY
