#!/usr/bin/env bash
# Token-level geometry of the three-seed `tiny` runs (trained by seeds.sh): for each seed and objective, every layer's
# intra- and self-similarity, MEV, the anisotropy baseline and the adjusted forms, rogue dimensions, token uniformity
# and effective rank (raw, and after per-dimension standardisation), with jackknife intervals over texts; per seed the
# paired difference hybrid − MLM on the same texts; the seed-0 report (layer curves, rogue dimensions); and
# tables/tokens.md (make_token_tables.py: per layer, each seed's difference and the mean over seeds with its
# between-seed interval, beside the pooled-vector differences of the same runs from seeds.sh).
# Resumable: complete token results are reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-runs/cpu-study-seeds/tiny}
OUT=${OUT:-reports/cpu-study/seeds}
SEEDS=${SEEDS:-0 1 2}
DATA=${DATA:-sample:lee,sample:wiki}
MAX_TEXTS=${MAX_TEXTS:-500}
# the pooled-vector seed-group differences of the same runs (seeds.sh writes them; a retraining needs its own)
POOLED=${POOLED:-$OUT/tables/seed-differences-default-protocol.csv}
T=$RUNS/tokens
mkdir -p "$OUT/tables" "$T"
for seed in $SEEDS; do
  for objective in mlm hybrid; do
    name=$objective-seed$seed
    [ -f "$T/$name/tokens.json" ] || embedgeom tokens "$RUNS/seed$seed/$objective" --data "$DATA" \
        --max-texts "$MAX_TEXTS" --layer all --postprocess standardize --device cpu --name "$name" \
        --out "$T/$name" --format csv -q > /dev/null
  done
  embedgeom tokens "$T/mlm-seed$seed" "$T/hybrid-seed$seed" --out "$T/compare-seed$seed" --format csv -q \
      > "$OUT/tables/token-differences-seed$seed.csv"
done
first=${SEEDS%% *}
embedgeom tokens "$T/mlm-seed$first" "$T/hybrid-seed$first" --report "$OUT/report-tokens" -q > /dev/null
python reports/cpu-study/make_token_tables.py --differences "$OUT"/tables/token-differences-seed*.csv \
    --pooled "$POOLED" --out "$OUT/tables/tokens.md"
