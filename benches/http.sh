#!/usr/bin/env bash
# HTTP benchmark: idrecon against the no-storage ceiling (examples/ceiling.rs), same core, same
# load generator, alternating rounds; prints requests/s, p50/p99 and the median ratio
# target/ceiling per workload.
#
#   benches/http.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 10 s)
#
# The servers run pinned to CPU 0 and wrk (Debian's package, installed if missing) to CPU 1.
# Workloads are generated deterministically into data/bench/ (not committed) by data/generate.rs:
#   returning     every request a known customer, nothing new (pure reads), 1 000 000 preloaded
#   checkout-mix  ~70 % returning, 20 % new, 8 % new detail, 2 % links, 1 000 000 preloaded
#   new           every request a brand-new customer, empty start
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-10}
CONNECTIONS=${CONNECTIONS:-64}
PRELOAD=${PRELOAD:-1000000}
OUT=data/bench/preload-$PRELOAD
PORT_TARGET=3101
PORT_CEILING=3102

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; }
cargo build --release --quiet --bin idrecon --example ceiling --example generate
BIN=target/release/idrecon
CEILING=target/release/examples/ceiling
GENERATE=target/release/examples/generate
mkdir -p "$OUT"

if [ ! -f "$OUT/preload.csv" ]; then
  "$GENERATE" --workload checkout-mix --events 400000 --preload-contacts "$PRELOAD" \
    --preload-out "$OUT/preload.csv" --out "$OUT/checkout-mix.jsonl"
  "$GENERATE" --workload returning --events 400000 --preload-contacts "$PRELOAD" --out "$OUT/returning.jsonl"
  "$GENERATE" --workload new --events 3000000 --out "$OUT/new.jsonl"
fi
if [ ! -d "$OUT/preloaded" ]; then
  "$BIN" import --data-dir "$OUT/preloaded" "$OUT/preload.csv"
fi

wait_ready() { # port
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2; exit 1
}

run_wrk() { # port file -> "rps p50_ms p99_ms"
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -s benches/wrk-jsonl.lua \
    "http://127.0.0.1:$1" -- "$2" | awk '
      /Requests\/sec/ {rps=$2}
      function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
      /^ +50%/ {p50=ms($2)} /^ +99%/ {p99=ms($2)}
      END {printf "%s %.3f %.3f\n", rps, p50, p99}'
}

start_target() { # workload
  rm -rf "$OUT/run"
  if [ "$1" = new ]; then mkdir -p "$OUT/run"; else cp -r "$OUT/preloaded" "$OUT/run"; fi
  taskset -c 0 "$BIN" serve --data-dir "$OUT/run" --listen "127.0.0.1:$PORT_TARGET" --fsync batch \
    > "$OUT/target.log" 2>&1 &
  echo $!
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

printf "%-13s %5s %12s %9s %9s %12s %9s %9s %7s\n" workload round target_rps p50_ms p99_ms ceiling_rps p50_ms p99_ms ratio
for workload in returning checkout-mix new; do
  ratios=()
  for round in $(seq 1 "$ROUNDS"); do
    target_pid=$(start_target "$workload"); wait_ready $PORT_TARGET
    t=$(run_wrk $PORT_TARGET "$OUT/$workload.jsonl")
    kill "$target_pid"; wait "$target_pid" 2>/dev/null || true
    taskset -c 0 "$CEILING" "127.0.0.1:$PORT_CEILING" > "$OUT/ceiling.log" 2>&1 & ceiling_pid=$!
    wait_ready $PORT_CEILING
    c=$(run_wrk $PORT_CEILING "$OUT/$workload.jsonl")
    kill "$ceiling_pid"; wait "$ceiling_pid" 2>/dev/null || true
    read -r trps tp50 tp99 <<<"$t"; read -r crps cp50 cp99 <<<"$c"
    ratio=$(awk -v a="$trps" -v b="$crps" 'BEGIN {printf "%.3f", a/b}')
    ratios+=("$ratio")
    printf "%-13s %5s %12s %9s %9s %12s %9s %9s %7s\n" "$workload" "$round" "$trps" "$tp50" "$tp99" "$crps" "$cp50" "$cp99" "$ratio"
  done
  echo "$workload median ratio target/ceiling: $(printf '%s\n' "${ratios[@]}" | median)"
done
