#!/usr/bin/env bash
# Issue 17: time to accuracy in reference epochs (scripts/bench_tta.py) for the fast recipe, the
# options it is built from, and the recipe it replaces; one markdown table per entry, gathered in
# $OUT/tables_<cpu>.md (summarised in docs/results.md, "Time to accuracy").
#   scripts/reproduce/time_to_accuracy.sh [OUT_DIR] [ENTRY ...]
#   scripts/reproduce/time_to_accuracy.sh docs/measurements/time_to_accuracy fast 'ablation-*'   # only these entries
# A resumable sweep: every finished (recipe, seed) is kept in $OUT/cache, so the same command
# continues after an interruption (a seed that was cut short runs again from its start). Cached
# seeds are reused only on the same CPU model, thread count and torch version.
# Two jobs run at once with one thread each (JOBS, default 2: one per core of the 2-core machines
# this project runs on); the reference epoch is timed inside each job, under the same load.
# Runtime on the Zen 3 (2 cores, 1 thread per job, reference epoch ~220-245 s): each fast seed
# ~40 min, each ablation ~16 min, `before` ~80 min; all entries about 3 hours of wall time.
# Done at stop 13: fast seeds 1 and 2 and the six ablations (fast seed 0 and `before` are next).
# Issue 25's 3-seed rows (12 ablations x 3 seeds, ~16 min each at 2 jobs): about 5 hours of both
# cores on the Zen 3; not yet run (a cached seed counts only on the CPU model it ran on).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-docs/measurements/time_to_accuracy}   # committed, so a fresh clone resumes too
shift || true
PYTHON=${PYTHON:-.venv/bin/python}
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OPTS=(ema.decay=0.99 ema.every=5 tta=flip_translate)   # EMA and TTA are evaluated beside test/*
MAIN=(experiment=fashion_resnet20 "${OPTS[@]}")         # the 8-epoch recipe (main job to stop 36)

# name | seeds | eval every N epochs | overrides
# Issue 25: every ablation has 3 seeds (one seed resolved nothing at stop 13), and the options it
# lists each have a row: random erasing, label smoothing 0.2, a wider AirNet, shorter and longer
# cosine schedules, the cheaper flip-only TTA (evaluated beside test/*, as flip_translate is).
ENTRIES=(
  "fast|1 2 0|4|experiment=fashion_fast"
  "ablation-base|0 1 2|8|${MAIN[*]}"
  "ablation-lookahead|0 1 2|8|${MAIN[*]} optim.lookahead.k=5"
  "ablation-altflip|0 1 2|8|${MAIN[*]} dataset.hflip=alternate"
  "ablation-batch512|0 1 2|8|${MAIN[*]} batch_size=512 optim.lr_scaling.rule=linear"
  "ablation-no-whitening|0 1 2|8|${MAIN[*]} backbone.kwargs.whiten=false"
  "ablation-no-label-smoothing|0 1 2|8|${MAIN[*]} regularizer=none"
  "ablation-label-smoothing-0.2|0 1 2|8|${MAIN[*]} regularizer.label_smoothing=0.2"
  "ablation-erasing|0 1 2|8|${MAIN[*]} erasing.prob=0.5"
  "ablation-wide|0 1 2|8|${MAIN[*]} backbone.kwargs.widths=[48,96,192]"
  "ablation-tta-flip|0 1 2|8|experiment=fashion_resnet20 ema.decay=0.99 ema.every=5 tta=flip"
  "ablation-6-epochs|0 1 2|6|${MAIN[*]} epochs=6"
  "ablation-12-epochs|0 1 2|4|${MAIN[*]} epochs=12"
  "before|0|19|experiment=fashion_fast backbone=resnet20 epochs=19 ema.decay=0 tta=none"
  # Issue 25's target candidates, declared before their runs. main-15: the main job's recipe for
  # 15 epochs (about 5 reference epochs: within 10 minutes of training on the Zen 3 at 2 threads)
  # with flip + translate TTA of the last weights; target 94.0 % (test_tta). target95-*: 95.0 %
  # in at most 18 reference epochs (test_ema_tta), longer or wider than fashion_fast, with erasing.
  "main-15|0 1 2|5|${MAIN[*]} epochs=15"
  "target95-long|0 1 2|8|experiment=fashion_fast epochs=48 erasing.prob=0.5"
  "target95-wide|0 1 2|6|experiment=fashion_fast epochs=24 backbone.kwargs.widths=[48,96,192] erasing.prob=0.5"
  # Declared at stop 34, before its runs: neither candidate above reached 95 % (target95-long 94.79,
  # target95-wide seed 0 94.72) inside half the budget on the AMX Xeon (bf16): wide and long
  # together, about 13 reference epochs there; on a CPU without native bf16 it exceeds 18.
  # (Stop 40: its 3 seeds gave 95.11 % in 16.37 on the Zen 4; the recipe is now
  # experiment=fashion_wide_long, and tests/test_recipes_as_measured.py keeps the two equal.)
  "target95-wide-long|0 1 2|8|experiment=fashion_fast epochs=40 backbone.kwargs.widths=[48,96,192] erasing.prob=0.5"
  # Declared at stop 36, before its runs: main-15 meets 94.0 % with TTA but may take over 10
  # minutes on the Zen 3 (15 x ~49 s); progressive resizing (20 px for the first half, a ramp to
  # 28 px by 80 %: ~0.7x the FLOPs) may bring it under. Target 94.0 % test_tta, last weights.
  "main-15-progressive|0 1 2|5|${MAIN[*]} epochs=15 progressive.initial_scale=0.7"
  # Declared at stop 36 after main-15-progressive seed 0 (93.43 % test_tta: 20 px cost 0.75
  # points) and ablation-12-epochs seeds 0-1 (94.09, 94.11 test_tta): 12 epochs, the first 65 %
  # of the batches at 24 px (~0.83x the fp32 FLOPs), so that 12 epochs fit 10 minutes on the
  # Zen 3 with a margin. Target 94.0 % test_tta, last weights.
  "main-12-progressive|0 1 2|4|${MAIN[*]} epochs=12 progressive.initial_scale=0.86"
  # Declared at stop 37 (Zen 4, AMD EPYC family 25 model 17, bf16), before its runs: on this CPU
  # target95-wide-long costs 0.65 reference epochs per epoch (seed 0, 8 epochs in 5.2), so its 40
  # epochs (~26) exceed 18 here and it was stopped; an AirNet epoch of fashion_fast costs ~0.3.
  # (Stop 39: that 0.65 was inflated by two evidence runs on the machine; without them the wide
  # net took 0.41 per epoch here, so target95-wide-long was restarted: docs/results.md.)
  # For 94.5 % in at most 6: fashion_fast's recipe on a cosine of 18 epochs (~5.4 reference
  # epochs here). Target 94.5 % test_ema_tta, last epoch, mean of 3 seeds.
  "target94.5-short|0 1 2|6|experiment=fashion_fast epochs=18"
  # Declared at stop 37, before its runs: on the Zen 4 and the AMX Xeon an epoch of fashion_fast's
  # AirNet costs ~0.18 reference epochs (bf16), so 96 epochs fit 18; target95-long's doubling
  # (24 -> 48 epochs, with erasing) gave ~0.1 point, so this is the next doubling. Target 95.0 %
  # test_ema_tta, last epoch, mean of 3 seeds, at most 18 reference epochs.
  "target95-96-epochs|0 1 2|16|experiment=fashion_fast epochs=96 erasing.prob=0.5"
  # Declared at stop 39, before its runs, on cost alone: the 96-epoch entry above assumed ~0.18
  # reference epochs per epoch, but stop 37's fashion_fast seeds on this Zen 4 took 0.21 (4.96 and
  # 5.16 for 24 epochs) and erasing adds to that, so 96 epochs would take ~20-21, over the 18
  # allowed, and it was stopped in its first minute (no epoch trained). Three times
  # fashion_fast's cosine, ~15.5-16 here. Target 95.0 % test_ema_tta, last epoch, mean of 3
  # seeds, at most 18 reference epochs.
  "target95-72-epochs|0 1 2|12|experiment=fashion_fast epochs=72 erasing.prob=0.5"
  # Declared at stop 40, before its runs: progressive resizing is the one option of issue 25 with
  # a single seed per setting (main-15-progressive, main-12-progressive on the AMX Xeon, stop 36).
  # The 3-seed ablation on the 8-epoch recipe, paired with ablation-base of the same CPU: 24 px for
  # the first ~65 % of the batches, a ramp to 28 px by 80 % (main-12-progressive's schedule).
  "ablation-progressive|0 1 2|8|${MAIN[*]} progressive.initial_scale=0.86"
  # Declared at stop 41 (Zen 4, AMD EPYC family 25 model 17), before their runs: the main job
  # (12 epochs) trained 346 s in the Zen 3's code path emulated on the Zen 4, about 610 s on a
  # Zen 3 (docs/measurements/main_job/avx2-fp32-emulated-on-zen4/): over the 10 minutes. 11 and 10
  # epochs would take about 560 s and 510 s there. 8 epochs give 93.69 % test_tta, 12 give
  # 94.05-94.13 %. Target 94.0 % test_tta (last weights, flip + translate TTA), mean of 3 seeds;
  # the main job becomes the longer of the two that meets it, or stays at 12 if neither does.
  "main-11|0 1 2|11|${MAIN[*]} epochs=11"
  "main-10|0 1 2|10|${MAIN[*]} epochs=10"
  # Declared at stop 41, before its runs, after main-11/main-10 missed 94.0 % (93.95 / 93.86):
  # airbench94's whiten_bias_epochs: 3 (the whitening bias trains for 3 epochs, then is a
  # constant), new as backbone.kwargs.whiten_bias_epochs. scripts/bench_steps.py on the Zen 4
  # (2 threads, 8 windows of 40 steps): 1.09x the images/s with the bias frozen in bf16, 1.03x in
  # the Zen 3's code path (AVX2 fp32). The 3-seed ablation on the 8-epoch recipe, paired with
  # ablation-base of this CPU; airbench reports no change in accuracy (94.03 % in n=500).
  "ablation-whiten-bias-3|0 1 2|8|${MAIN[*]} backbone.kwargs.whiten_bias_epochs=3"
)

selected() {  # NAME [PATTERN ...] -> 0 if a pattern matches NAME (no patterns: all)
  [ $# -eq 1 ] && return 0
  local name=$1 asked
  shift
  for asked in "$@"; do [[ $name == $asked ]] && return 0; done  # a glob: 'ablation-*'
  return 1
}

mkdir -p "$OUT/cache"
jobs=()
for entry in "${ENTRIES[@]}"; do
  IFS='|' read -r name seeds every overrides <<<"$entry"
  selected "$name" "$@" || continue
  for seed in $seeds; do  # one job per seed; a cached seed returns at once
    jobs+=("--seeds $seed --eval-every $every --cache $OUT/cache $overrides")
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} sh -c \
  "$PYTHON scripts/bench_tta.py {} >/dev/null 2>>'$OUT/log.txt' || echo 'failed: {}' >&2"

# Every entry's cached seeds of THIS CPU model, selected or not, rebuilt whole into this CPU's
# file (a cached seed counts only on the CPU it ran on, so one CPU's rebuild never drops another's
# tables). tables.md holds stop 13's tables from the Zen 3 (AMD EPYC, family 25 model 1).
CPU_ID=$("$PYTHON" -c 'import re; from camexp.run.machine import cpu_name; print(re.sub(r"[^A-Za-z0-9]+", "-", cpu_name()).strip("-"))')
TABLES="$OUT/tables_${CPU_ID}.md"
: >"$TABLES"
for entry in "${ENTRIES[@]}"; do
  IFS='|' read -r name seeds every overrides <<<"$entry"
  # shellcheck disable=SC2086
  "$PYTHON" scripts/bench_tta.py --seeds $seeds --eval-every "$every" --cache "$OUT/cache" \
    --cached-only --out "$TABLES" $overrides >/dev/null 2>>"$OUT/log.txt" || true
done
cat "$TABLES"
