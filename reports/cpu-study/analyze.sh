#!/usr/bin/env bash
# CPU study, step 2 of 2: analyse the two encoders trained by train.sh (default protocol and the reference
# study's protocol), compare them with paired intervals, draw the report, and tabulate against the reference
# study's released numbers. Analyses with embeddings stay under $RUNS (large, not committed); tables and figures
# land in reports/cpu-study/.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs/cpu-study}
OUT=${OUT:-reports/cpu-study}
mkdir -p "$OUT/tables"
DATA=sample:polarity,sample:lee,sample:bbc,sample:wiki
MINILM=$(python -c "from embedgeom.samples import minilm_path; print(minilm_path())")
A=$RUNS/analyses
for objective in mlm hybrid; do
  embedgeom analyze "$RUNS/$objective" --data "$DATA" --max-texts 1000 --pooling all --out "$A/$objective" \
      --format csv > /dev/null
  embedgeom analyze "$RUNS/$objective" --data "$DATA" --protocol paper --out "$A/$objective-paper" \
      --format csv > /dev/null
done
embedgeom analyze "$MINILM" --data "$DATA" --max-texts 1000 --pooling all --name MiniLM --out "$A/minilm" \
    --format csv > /dev/null
embedgeom compare "$A/mlm" "$A/hybrid" --out "$RUNS/comparisons" --format csv > "$OUT/tables/differences.csv"
embedgeom compare "$A/mlm-paper" "$A/hybrid-paper" --out "$RUNS/comparisons-paper" --format csv \
    > "$OUT/tables/differences-paper-protocol.csv"
# geometry trajectory over the saved checkpoints (mean pooling, two tasks with positive pairs)
for objective in mlm hybrid; do
  for ckpt in "$RUNS/$objective"/checkpoints/step-*; do
    embedgeom analyze "$ckpt" --data sample:lee,sample:wiki --max-texts 500 --pooling mean --no-probes \
        --out "$A/trajectory/$objective-$(basename "$ckpt")" --format csv > /dev/null
  done
done
embedgeom report "$A/mlm" "$A/hybrid" "$A/minilm" "$RUNS/comparisons"/* --out "$OUT/report" \
    --title "CPU study: paper-preset MLM vs hybrid (MLM + JEPA), default protocol"
embedgeom report "$A/mlm-paper" "$A/hybrid-paper" "$RUNS/comparisons-paper"/* --out "$OUT/report-paper-protocol" \
    --title "CPU study: paper-preset MLM vs hybrid, reference study's protocol"
python reports/cpu-study/make_tables.py --analyses "$A" --out "$OUT"
