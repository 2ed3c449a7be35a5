#!/usr/bin/env bash
# CPU study, step 2 of 2: analyse the two encoders trained by train.sh (or train_tiny.sh) with the default protocol
# and, beside it, the reference study's protocol (--protocol both: OUT/paper), compare them with paired intervals,
# follow the geometry over the saved checkpoints, draw the reports, and tabulate against the reference study's
# released numbers. Analyses with embeddings stay under $RUNS (large, not committed); tables and figures land in
# $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs/cpu-study}
OUT=${OUT:-reports/cpu-study}
mkdir -p "$OUT/tables"
DATA=sample:polarity,sample:lee,sample:bbc,sample:wiki
MINILM=$(python -c "from embedgeom.samples import minilm_path; print(minilm_path())")
A=$RUNS/analyses
for objective in mlm hybrid; do
  embedgeom analyze "$RUNS/$objective" --data "$DATA" --max-texts 1000 --pooling all --protocol both \
      --name "$objective" --out "$A/$objective" --format csv > /dev/null
done
embedgeom analyze "$MINILM" --data "$DATA" --max-texts 1000 --pooling all --name MiniLM --out "$A/minilm" \
    --format csv > /dev/null
rm -rf "$RUNS/comparisons" "$RUNS/comparisons-paper"
embedgeom compare "$A/mlm" "$A/hybrid" --out "$RUNS/comparisons" --format csv > "$OUT/tables/differences.csv"
embedgeom compare "$A/mlm/paper" "$A/hybrid/paper" --out "$RUNS/comparisons-paper" --format csv \
    > "$OUT/tables/differences-paper-protocol.csv"
# geometry over the saved checkpoints (mean pooling, two tasks with positive pairs)
for objective in mlm hybrid; do
  rm -rf "$A/trajectory/$objective"
  embedgeom analyze "$RUNS/$objective" --checkpoints all --data sample:lee,sample:wiki --max-texts 500 \
      --pooling mean --no-probes --name "$objective" --out "$A/trajectory/$objective" --format csv > /dev/null
done
rm -rf "$OUT/report" "$OUT/report-paper-protocol" "$OUT/report-trajectory"
embedgeom report "$A/mlm" "$A/hybrid" "$A/minilm" "$RUNS/comparisons" --out "$OUT/report" \
    --title "CPU study: MLM vs hybrid (MLM + JEPA), default protocol, reference protocol beside it"
embedgeom report "$A/mlm/paper" "$A/hybrid/paper" "$RUNS/comparisons-paper" --out "$OUT/report-paper-protocol" \
    --title "CPU study: MLM vs hybrid, the reference study's protocol"
embedgeom report "$A/trajectory/mlm" "$A/trajectory/hybrid" --out "$OUT/report-trajectory" --no-pdf \
    --title "CPU study: geometry over training (mean pooling)"
python reports/cpu-study/make_tables.py --analyses "$A" --out "$OUT"
