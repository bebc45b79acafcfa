#!/usr/bin/env bash
# A world recoup's simulator did not write (#20): write its merchant's history, `recoup
# train --promote` on it, `recoup serve` the model, and dunn another draw's first failures
# over gRPC against the eight fixed schedules recoup ships (see world.py's docstring).
#
#   benches/foreign/run.sh [PAYERS] [EVAL_PAYERS]
#
# PAYERS (20000) is the history's size (12 months), EVAL_PAYERS (20000) the other draw's;
# RECOUP_FOREIGN_SEED (3) and RECOUP_FOREIGN_EVAL_SEED (11) draw them; RECOUP_BIN picks
# the recoup binary (default: a release build); RECOUP_FOREIGN_LOG (random) the merchant's
# logging policy (`random`, `random-short`, `fixed` or `fixed-silent`: world.py history
# --help); RECOUP_FOREIGN_VARIANT (base) the world's dynamics (`base` or `wide`);
# RECOUP_FOREIGN_COLUMNS=required trains on the history cut to a bare export (columns.py:
# the contract's required columns and network_code; no update flags or method ids) and
# checks that the model card says the replaced method's P is a prior; RECOUP_FOREIGN_UPDATES=N
# keeps the retries after an update of only N payments (few_updates.py) and checks that the
# model card says the replaced method's P is partly a prior;
# RECOUP_FOREIGN_LOOP=1 adds one closed loop (retrain on the learned policy's own attempts;
# see the end of this script; RECOUP_FOREIGN_LOOP_MARKS=0 writes them without recoup's
# update_triggered marks); RECOUP_FOREIGN_MINIMAL=1 makes the client send only the required
# request fields (world.py evaluate --minimal); RECOUP_FOREIGN_FORMAT=pandas trains on the
# history as pandas writes it to Parquet (to_parquet.py), after checking that recoup reads
# it as the CSV. Pinned Python packages go to target/foreign-venv/, everything else to
# target/foreign/.
set -euo pipefail
cd "$(dirname "$0")/../.."
payers="${1:-20000}"
eval_payers="${2:-20000}"
seed="${RECOUP_FOREIGN_SEED:-3}"
eval_seed="${RECOUP_FOREIGN_EVAL_SEED:-11}"
log_policy="${RECOUP_FOREIGN_LOG:-random}"
variant="${RECOUP_FOREIGN_VARIANT:-base}"
out=target/foreign
if [ -z "${RECOUP_BIN:-}" ]; then
  cargo build --release --quiet
  RECOUP_BIN=./target/release/recoup
fi
if ! cmp -s benches/foreign/requirements.txt target/foreign-venv/requirements.txt; then
  [ -x target/foreign-venv/bin/python ] || python3 -m venv target/foreign-venv
  target/foreign-venv/bin/pip install --quiet -r benches/foreign/requirements.txt
  cp benches/foreign/requirements.txt target/foreign-venv/requirements.txt
fi
py=target/foreign-venv/bin/python
rm -rf "$out" && mkdir -p "$out/gen"
$py -m grpc_tools.protoc -Iproto --python_out="$out/gen" --grpc_python_out="$out/gen" proto/recoup/v1/recoup.proto
touch "$out/gen/recoup/__init__.py" "$out/gen/recoup/v1/__init__.py"
echo "== history: $payers payers, seed $seed, logging policy $log_policy, world $variant"
$py benches/foreign/world.py history "$out/history.csv" --payers "$payers" --seed "$seed" --log-policy "$log_policy" --variant "$variant"
history="$out/history.csv"
if [ "${RECOUP_FOREIGN_COLUMNS:-all}" = required ]; then
  echo "== the history cut to a bare export: the contract's required columns and network_code"
  $py benches/foreign/columns.py "$out/history.csv" "$out/history-required.csv"
  history="$out/history-required.csv"
  "$RECOUP_BIN" history check "$history" | grep "no retry follows an update" \
    || { echo "history check did not say that no retry follows an update"; exit 1; }
fi
if [ -n "${RECOUP_FOREIGN_UPDATES:-}" ]; then
  echo "== the retries after an update of only $RECOUP_FOREIGN_UPDATES payments kept"
  $py benches/foreign/few_updates.py "$history" "$out/history-few-updates.csv" "$RECOUP_FOREIGN_UPDATES"
  history="$out/history-few-updates.csv"
fi
if [ "${RECOUP_FOREIGN_FORMAT:-csv}" = pandas ]; then
  echo "== the history as pandas writes it to Parquet"
  $py benches/foreign/to_parquet.py "$history" "$out/history.parquet"
  "$RECOUP_BIN" history check --json --quiet "$history" > "$out/summary-csv.json"
  "$RECOUP_BIN" history check --json --quiet "$out/history.parquet" > "$out/summary-parquet.json"
  $py benches/foreign/to_parquet.py compare "$out/summary-csv.json" "$out/summary-parquet.json"
  history="$out/history.parquet"
fi
echo "== recoup train --promote"
"$RECOUP_BIN" train --history "$history" --out "$out/models" --promote --quiet
"$RECOUP_BIN" models list --models "$out/models"
if [ "${RECOUP_FOREIGN_COLUMNS:-all}" = required ]; then
  grep -h "Not learned from this log" "$out"/models/*/MODEL_CARD.md \
    || { echo "the model card does not say that a replaced method's P is a prior"; exit 1; }
fi
if [ -n "${RECOUP_FOREIGN_UPDATES:-}" ]; then
  grep -h "Partly a prior" "$out"/models/*/MODEL_CARD.md \
    || { echo "the model card does not say that a replaced method's P is partly a prior"; exit 1; }
fi
port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server=
trap 'kill $server 2>/dev/null || true' EXIT
serve() {
  "$RECOUP_BIN" serve --models "$out/models" --addr "127.0.0.1:$port" --metrics-addr off --quiet &
  server=$!
  for _ in $(seq 1 100); do
    if $py -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then break; fi
    sleep 0.2
  done
}
evaluate() { # SEED [more world.py evaluate arguments]
  local s="$1"
  shift
  echo "== evaluate: the first failures of $eval_payers payers of draw $s"
  $py benches/foreign/world.py evaluate --payers "$eval_payers" --seed "$s" --addr "127.0.0.1:$port" --gen "$out/gen" --variant "$variant" ${RECOUP_FOREIGN_DETAIL:+--detail} ${RECOUP_FOREIGN_MINIMAL:+--minimal} "$@"
}
serve
if [ -z "${RECOUP_FOREIGN_LOOP:-}" ]; then
  evaluate "$eval_seed"
  exit 0
fi
# The closed loop (RECOUP_FOREIGN_LOOP=1): the learned policy's own attempts on draw
# $eval_seed join the history, recoup retrains on both, and the model before and after
# are evaluated on a third draw (RECOUP_FOREIGN_LOOP_SEED, 13).
loop_seed="${RECOUP_FOREIGN_LOOP_SEED:-13}"
marks=()
if [ "${RECOUP_FOREIGN_LOOP_MARKS:-1}" = 0 ]; then marks=(--no-loop-marks); fi
evaluate "$eval_seed" --loop-out "$out/loop.csv" ${marks[@]+"${marks[@]}"}
echo "== before the loop, on draw $loop_seed"
evaluate "$loop_seed"
# Two files in one directory: the loop's carries recoup's column update_triggered
# (RECOUP_FOREIGN_LOOP_MARKS=0 leaves it false, as a history without it would read).
rm -rf "$out/history-loop" && mkdir -p "$out/history-loop"
cp "$out/history.csv" "$out/loop.csv" "$out/history-loop/"
echo "== recoup train --promote on the history and the learned policy's own attempts"
"$RECOUP_BIN" train --history "$out/history-loop" --out "$out/models" --promote --quiet
"$RECOUP_BIN" models list --models "$out/models"
kill $server
wait $server 2>/dev/null || true
serve
echo "== after the loop, on draw $loop_seed"
evaluate "$loop_seed"
