#!/usr/bin/env bash
# Numbers before and after a change of the pipeline: run from a checkout of each version (e.g. two git worktrees),
#   (cd OLD && bash reports/pipeline-redesign/run_checks.sh ../check/before)
#   (cd NEW && bash reports/pipeline-redesign/run_checks.sh ../check/after)
#   python reports/pipeline-redesign/compare_results.py ../check/before/minilm ../check/after/minilm
# It runs the demo and the CPU study's MiniLM analysis (4 sample tasks, 1,000 texts each, every pooling) with the
# code of the current directory and a fresh cache under OUT.
set -euo pipefail
OUT=$1
mkdir -p "$OUT"
export PYTHONPATH=$PWD EMBEDGEOM_CACHE=$OUT/cache
python -m embedgeom.cli demo --out "$OUT/demo" -q > "$OUT/demo.txt" 2>&1
MINILM=$(python -c "from embedgeom.samples import minilm_path; print(minilm_path())")
python -m embedgeom.cli analyze "$MINILM" --data sample:polarity,sample:lee,sample:bbc,sample:wiki --max-texts 1000 \
    --pooling all --name MiniLM --out "$OUT/minilm" --format csv -q > "$OUT/minilm.csv"
