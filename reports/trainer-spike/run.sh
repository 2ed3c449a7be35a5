#!/usr/bin/env bash
# The paper-preset MLM run of the CPU study (reports/cpu-study/train.sh: batch 32, warm-up 50, lr 5e-4 cosine over
# 500 steps, seed 0), logged at every step and evaluated every 10 steps with the collapse watch, stopped after
# step 150 (train.stop_after: the schedules still span 500 steps); then replay.py takes the loss spike at logged
# step 103 apart from the step-100 checkpoint. About 70 CPU-minutes for the run, 4 for the replay.
# Outputs: runs/trainer-spike/ (not committed) and, committed, reports/trainer-spike/{train,eval}.csv and replay.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${RUN:-runs/trainer-spike/paper-mlm}
resume=()
[ -f "$RUN/run.json" ] && resume=(--resume)
python -m trainer --objective mlm --preset paper --corpus sample:all --steps 500 --device cpu \
    --set train.batch_size=32 --set optim.warmup_steps=50 --set train.eval_every=10 --set train.ckpt_every=100 \
    --set train.keep_last=10 --set train.log_every=1 --set train.geometry_texts=256 --set train.stop_after=150 \
    --out "$RUN" "${resume[@]}" --quiet
cp "$RUN/logs/train.csv" "$RUN/logs/eval.csv" reports/trainer-spike/
python reports/trainer-spike/replay.py --run "$RUN" --from-step 100 --step 102 --out "$RUN-replay" \
    > reports/trainer-spike/replay.jsonl
