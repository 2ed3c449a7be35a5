#!/usr/bin/env bash
# CPU study at three seeds per objective: trains the `tiny` companion (train_tiny.sh) at train.seed 0, 1 and 2,
# analyses every encoder with the default protocol (probes included) and with the reference study's protocol
# (geometry only: its saga probes take minutes per fit on a CPU), and compares the two objectives as seed groups
# with `embedgeom compare --group-a ... --group-b ...` (each seed's paired difference with its text-sampling
# interval, the mean over seeds with a between-seed t-interval, and in how many seeds each direction holds).
# Resumable: complete runs are not retrained and complete analyses are reused.
# Outputs: runs/cpu-study-seeds/tiny/ (runs, analyses, comparisons; not committed) and reports/cpu-study/seeds/
# (tables/seeds.md from make_seed_tables.py, tables/*.csv, report/).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs/cpu-study-seeds/tiny}
OUT=${OUT:-reports/cpu-study/seeds}
SEEDS=${SEEDS:-0 1 2}
DATA=${DATA:-sample:polarity,sample:lee,sample:bbc,sample:wiki}
for seed in $SEEDS; do
  RUNS="$RUNS/seed$seed" SEED="$seed" ./reports/cpu-study/train_tiny.sh
done
A=$RUNS/analyses
for seed in $SEEDS; do
  for objective in mlm hybrid; do
    name=$objective-seed$seed
    [ -f "$A/default/$name/result.json" ] || embedgeom analyze "$RUNS/seed$seed/$objective" --data "$DATA" \
        --max-texts 1000 --pooling all --name "$name" --out "$A/default/$name" --format csv -q > /dev/null
    [ -f "$A/paper/$name/result.json" ] || embedgeom analyze "$RUNS/seed$seed/$objective" --data "$DATA" \
        --protocol paper --no-probes --name "$name" --out "$A/paper/$name" --format csv -q > /dev/null
  done
done
mkdir -p "$OUT/tables"
for protocol in default paper; do
  rm -rf "$RUNS/comparison-$protocol"
  group_a=$(for s in $SEEDS; do printf '%s,' "$A/$protocol/mlm-seed$s"; done)
  group_b=$(for s in $SEEDS; do printf '%s,' "$A/$protocol/hybrid-seed$s"; done)
  embedgeom compare --group-a "${group_a%,}" --group-b "${group_b%,}" --out "$RUNS/comparison-$protocol" \
      --format csv -q > "$OUT/tables/seed-differences-$protocol-protocol.csv"
done
rm -rf "$OUT/report"
first=${SEEDS%% *}
embedgeom report "$A/default/mlm-seed$first" "$A/default/hybrid-seed$first" "$RUNS"/comparison-default/* \
    --out "$OUT/report" -q \
    --title "CPU study, tiny preset: MLM vs hybrid over three seeds (models: seed $first; comparison: every seed)"
python reports/cpu-study/make_seed_tables.py --comparison "$RUNS"/comparison-default/* \
    --paper-comparison "$RUNS"/comparison-paper/* --runs "$RUNS" --out "$OUT"
