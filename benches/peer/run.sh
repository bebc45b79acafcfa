#!/usr/bin/env bash
# Peer comparison: recoup's trainer and LightGBM on the same feature tables.
#
#   benches/peer/run.sh [HISTORY] [THREADS]
#
# HISTORY defaults to data/sample/; for the 10 M-attempt figure, first run
# `cargo bench --bench train` (it simulates target/bench-data/train-961538-payers.parquet)
# or `recoup simulate --payers 961538 --months 12 --seed 3 --out big.parquet`.
# Builds release, trains with --export-features into target/peer/, installs the
# pinned Python packages into target/peer-venv/ and runs lightgbm_peer.py. Then
# `target/peer-venv/bin/python benches/peer/stacking.py target/peer`
# shows what trees add on top of recoup's own logit.
set -euo pipefail
cd "$(dirname "$0")/../.."
history="${1:-data/sample/}"
threads="${2:-2}"
out=target/peer
cargo build --release --quiet
rm -rf "$out" && mkdir -p "$out"
./target/release/recoup train --history "$history" --out "$out/models" --threads "$threads" --export-features "$out"
if [ ! -x target/peer-venv/bin/python ]; then
  python3 -m venv target/peer-venv
  target/peer-venv/bin/pip install --quiet -r benches/peer/requirements.txt
fi
target/peer-venv/bin/python benches/peer/lightgbm_peer.py "$out" --threads "$threads"
