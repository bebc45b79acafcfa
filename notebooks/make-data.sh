#!/usr/bin/env bash
# Write the files the notebooks read into notebooks/data/, with the CLI:
# a backtest (--json), the current model's metrics and card, and an export of
# the bundled sample history (per payment and per segment).
# RECOUP overrides the command (default: cargo run -q --).
set -euo pipefail
cd "$(dirname "$0")/.."
RECOUP=${RECOUP:-"cargo run -q --"}
out=notebooks/data
mkdir -p "$out"
current=$(cat models/CURRENT)
$RECOUP backtest --payers 3000 --resamples 100 --json -q > "$out/backtest.json"
cp "models/$current/metrics.json" "$out/model-metrics.json"
cp "models/$current/MODEL_CARD.md" "$out/MODEL_CARD.md"
$RECOUP export -q --history data/sample/ --as-of 2025-10-15 --out "$out/open.parquet" > /dev/null
$RECOUP export -q --history data/sample/ --as-of 2025-10-15 --out "$out/by-segment.parquet" --by decline-class,country,payment-method,month > /dev/null
echo "notebook data written to $out/"
