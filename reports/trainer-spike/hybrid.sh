#!/usr/bin/env bash
# The CPU study's paper-preset hybrid run (reports/cpu-study/train.sh settings: batch 32, warm-up 50, lr 5e-4 cosine
# over 500 steps, seed 0, default EMA and balance), evaluated every 25 steps with the collapse watch and stopped after
# step 150 (train.stop_after), to set its watch numbers beside the MLM run of run.sh at the same steps.
# About 50 CPU-minutes on a 2-core machine. Outputs: runs/trainer-spike/paper-hybrid/ (not committed) and, committed,
# reports/trainer-spike/hybrid-{train,eval}.csv.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${RUN:-runs/trainer-spike/paper-hybrid}
resume=()
[ -f "$RUN/run.json" ] && resume=(--resume)
python -m trainer --objective hybrid --preset paper --corpus sample:all --steps 500 --device cpu \
    --set train.batch_size=32 --set optim.warmup_steps=50 --set train.eval_every=25 --set train.ckpt_every=50 \
    --set train.keep_last=10 --set train.log_every=1 --set train.geometry_texts=256 --set train.stop_after=150 \
    --out "$RUN" "${resume[@]}" --quiet
cp "$RUN/logs/train.csv" reports/trainer-spike/hybrid-train.csv
cp "$RUN/logs/eval.csv" reports/trainer-spike/hybrid-eval.csv
