#!/usr/bin/env bash
# CPU study, step 1 of 2: train the `paper` preset encoder (6 layers, d=512, 8 heads, 128 tokens) with the MLM and the
# hybrid (MLM + JEPA) objective on the offline sample suite, on a 2-core CPU. Same data, seed and schedule for both.
# The batch and step budget are cut to what the CPU allows (see README.md); everything else is the preset.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs/cpu-study}
STEPS=${STEPS:-500}
COMMON=(--preset paper --corpus sample:all --steps "$STEPS" --device cpu
        --set train.batch_size=32 --set optim.warmup_steps=50 --set train.eval_every=100
        --set train.ckpt_every=100 --set train.keep_last=10 --set train.log_every=10)
for objective in mlm hybrid; do
  resume=()
  [ -f "$RUNS/$objective/run.json" ] && resume=(--resume)
  python -m trainer --objective "$objective" --out "$RUNS/$objective" "${COMMON[@]}" "${resume[@]}" --quiet
done
