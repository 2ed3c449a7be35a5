#!/usr/bin/env bash
# The same study at GPU scale, on one H100/H200 (not run yet: no GPU numbers are published).
# The largest real corpus that travels offline is the sample suite (~1.34M words, ~1.8M tokens), so the budget is
# set in epochs rather than the preset's 50k steps: 1,500 steps x 256 x 128 tokens ~ 49M tokens ~ 27 epochs,
# a few minutes per objective on one H100 (bf16, SDPA, fused AdamW). Then analyse exactly as on the CPU:
#   RUNS=runs/gpu-study ./reports/cpu-study/analyze.sh   (and move the outputs to reports/gpu-study/)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs/gpu-study}
COMMON=(--preset paper --corpus sample:all --steps 1500 --device cuda
        --set optim.warmup_steps=150 --set train.eval_every=250 --set train.ckpt_every=300 --set train.keep_last=10
        --set train.log_every=50)
for objective in mlm hybrid; do
  python -m trainer --objective "$objective" --out "$RUNS/$objective" "${COMMON[@]}" --quiet
done
