#!/usr/bin/env bash
# Instructions per HTTP request, counted by callgrind: the user-space cost of one request to
# `idrecon serve` and to the ceiling server, end to end (hyper, axum, the layers, parsing,
# the store, the answer), for one workload. Counts are repeatable on a shared machine where
# the timings of benches/http.sh are not; kernel time (the loopback TCP stack, about half of
# a request) is not counted and is the same for both servers.
#
# Usage: benches/callgrind_http.sh [WORKLOAD] [SECONDS]
#   WORKLOAD: returning (default), checkout-mix or new; the data files and the 1 M preload
#   come from benches/http.sh (run it once first).
# Environment: TARGET_BIN, another idrecon binary to count (an A/B against an older build, e.g.
# one built in a `git worktree`). Point it at that binary rather than CARGO_TARGET_DIR at the
# other build's directory: the script's `cargo build` runs in this checkout and would rebuild
# that directory from the current sources.
# Prints, per server: requests answered, instructions counted, instructions per request, and
# writes callgrind.out files under data/bench/callgrind/ for callgrind_annotate. For the
# workloads that write, a third server is counted: the durability floor (`examples/ceiling.rs
# --durable`, the ceiling plus a durable log append for the workload's share of writes), which
# splits the target's extra instructions into durability and the rest.
#
# Method: each server starts under valgrind with instrumentation off (loading the preload at
# near-native speed), takes 300 warm-up requests, then instrumentation goes on
# (callgrind_control -i on) for a wrk run of one connection, and the counts are dumped
# (callgrind_control -d). Per request = instructions of the dump / requests wrk completed.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKLOAD=${1:-returning}
SECONDS_PER_RUN=${2:-20}
PRELOAD=${PRELOAD:-1000000}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
DATA=data/bench/preload-$PRELOAD
OUT=data/bench/callgrind
PORT=3111

command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[ -f "$DATA/$WORKLOAD.jsonl" ] && [ -d "$DATA/preloaded" ] ||
  { echo "run benches/http.sh first: it generates $DATA" >&2; exit 1; }
cargo build --release --quiet --bin idrecon --example ceiling
BIN=${TARGET_BIN:-$TARGET_DIR/release/idrecon}
mkdir -p "$OUT"

wait_ready() {
  for _ in $(seq 1 1200); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start" >&2; exit 1
}

count() { # name command... -> "name requests instructions per_request"
  local name=$1; shift
  rm -f "$OUT/$name".*
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$name.%p" "$@" \
    > "$OUT/$name.log" 2>&1 &
  local pid=$!
  wait_ready
  wrk -t1 -c4 -d3s -s benches/wrk-jsonl.lua "http://127.0.0.1:$PORT" -- "$DATA/$WORKLOAD.jsonl" >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  local requests
  requests=$(wrk -t1 -c1 -d"${SECONDS_PER_RUN}s" -s benches/wrk-jsonl.lua "http://127.0.0.1:$PORT" \
    -- "$DATA/$WORKLOAD.jsonl" | awk '/requests in/ {print $1}')
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local instructions
  instructions=$(callgrind_annotate "$OUT/$name.$pid.1" 2>/dev/null |
    awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$name $requests $instructions $((instructions / requests))"
}

run_dir=$OUT/run
rm -rf "$run_dir"
if [ "$WORKLOAD" = new ]; then mkdir -p "$run_dir"; else cp -r "$DATA/preloaded" "$run_dir"; fi
printf "%-8s %9s %14s %14s\n" server requests instructions per_request
target=$(count target "$BIN" serve --data-dir "$run_dir" \
  --listen "127.0.0.1:$PORT" --fsync batch --snapshot-every 1000000)
ceiling=$(count ceiling "$TARGET_DIR/release/examples/ceiling" "127.0.0.1:$PORT")
printf "%-8s %9s %14s %14s\n" $target
printf "%-8s %9s %14s %14s\n" $ceiling
awk -v t="${target##* }" -v c="${ceiling##* }" \
  'BEGIN {printf "%s: target/ceiling instructions per request %.2f (%+d)\n", "'"$WORKLOAD"'", t/c, t-c}'
case $WORKLOAD in checkout-mix) percent=30 ;; new) percent=100 ;; *) percent=0 ;; esac
if [ "$percent" -gt 0 ]; then
  floor=$(count floor "$TARGET_DIR/release/examples/ceiling" "127.0.0.1:$PORT" \
    --durable "$OUT/floor-run" "$percent")
  printf "%-8s %9s %14s %14s\n" $floor
  awk -v t="${target##* }" -v f="${floor##* }" -v c="${ceiling##* }" \
    'BEGIN {printf "%s: floor/ceiling %.2f (%+d), target/floor %.2f (%+d)\n", "'"$WORKLOAD"'", f/c, f-c, t/f, t-f}'
  rm -rf "$OUT/floor-run"
fi
rm -rf "$run_dir"
