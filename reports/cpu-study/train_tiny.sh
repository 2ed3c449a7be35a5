#!/usr/bin/env bash
# CPU study, companion run: the `tiny` preset (2 layers, d=128, 64 tokens) trained 10x longer than the demo
# (3,000 steps x 32 rows) with each objective, to see the comparison in encoders that have left the collapsed
# early-training regime the paper-preset runs are still in. Both objectives train at once, one thread each.
# Then: RUNS=runs/cpu-study-tiny OUT=reports/cpu-study/tiny ./reports/cpu-study/analyze.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# SEED (default 0) sets train.seed: seeds.sh trains seeds 0, 1 and 2 with this script.
RUNS=${RUNS:-runs/cpu-study-tiny}
STEPS=${STEPS:-3000}
SEED=${SEED:-0}
COMMON=(--preset tiny --corpus sample:all --steps "$STEPS" --device cpu --set train.seed="$SEED" --set train.eval_every=500
        --set train.ckpt_every=500 --set train.keep_last=10 --set train.log_every=50)
for objective in mlm hybrid; do
  resume=()
  [ -f "$RUNS/$objective/run.json" ] && resume=(--resume)
  OMP_NUM_THREADS=1 python -m trainer --objective "$objective" --out "$RUNS/$objective" "${COMMON[@]}" \
      "${resume[@]}" --quiet &
done
wait
