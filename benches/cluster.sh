#!/usr/bin/env bash
# Cluster benchmark: checkout-mix through a 3-member cluster against the single-node service, on
# the same machine, with the same load generator (wrk, benches/wrk-jsonl.lua), alternating which
# goes first in each round. Both start from an empty data directory (a cluster cannot be
# preloaded by import), so the workload's "returning" customers are new at first in both.
#
#   benches/cluster.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 10 s)
#
# Environment: CONNECTIONS (64), HALF_CONNECTIONS (64), CARGO_TARGET_DIR.
#
# Part 1, maximum: wrk at full speed against the single node, then against the cluster's leader
# (followers would forward, adding a hop). Prints requests/s, p50 and p99 of each and the
# median ratio cluster/single (target: at least 0.5).
# Part 2, half load: wrk paces every connection (exponential pauses) so the offered rate is about
# half of the cluster's median maximum of part 1; prints p50 and p99 of both (target: cluster
# p99 at most 5 ms).
# No CPU pinning: the three members, their followers' fsyncs and wrk share the machine's cores,
# which is part of what the figures show.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-10}
CONNECTIONS=${CONNECTIONS:-64}
HALF_CONNECTIONS=${HALF_CONNECTIONS:-64}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=data/bench/cluster
PORTS=(3201 3202 3203)
SINGLE_PORT=3200
LIST="1=127.0.0.1:${PORTS[0]},2=127.0.0.1:${PORTS[1]},3=127.0.0.1:${PORTS[2]}"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin idrecon --example generate
BIN=$TARGET_DIR/release/idrecon
GENERATE=$TARGET_DIR/release/examples/generate
mkdir -p "$OUT"
if [ ! -f "$OUT/checkout-mix.jsonl" ]; then
  "$GENERATE" --workload checkout-mix --events 600000 --preload-contacts 100000 \
    --preload-out "$OUT/unused-preload.csv" --out "$OUT/checkout-mix.jsonl"
fi

wait_ready() { # port
  for _ in $(seq 1 1200); do
    curl -sf "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server on port $1 did not start" >&2; exit 1
}

run_wrk() { # port connections [pause_ms] -> "rps p50_ms p99_ms errors"
  wrk -t1 -c"$2" -d"${SECONDS_PER_RUN}s" --timeout 10s --latency -s benches/wrk-jsonl.lua \
    "http://127.0.0.1:$1" -- "$OUT/checkout-mix.jsonl" "${3:-0}" | tee -a "$OUT/wrk.log" | awk '
      /Requests\/sec/ {rps=$2}
      function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
      /^ +50%/ {p50=ms($2)} /^ +99%/ {p99=ms($2)}
      /Non-2xx/ {err+=$NF} /Socket errors/ {err+=1}
      END {printf "%s %.3f %.3f %d\n", rps, p50, p99, err}'
}

stop_all() { # pids...
  kill "$@" 2>/dev/null || true
  for pid in "$@"; do
    for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

PIDS=()
start_single() {
  rm -rf "$OUT/single"
  "$BIN" serve --data-dir "$OUT/single" --listen "127.0.0.1:$SINGLE_PORT" > "$OUT/single.log" 2>&1 &
  PIDS=($!)
  wait_ready $SINGLE_PORT
  PORT=$SINGLE_PORT
}

# Both starters set PORT (the port to load) and PIDS; they run in this shell, not in $(...), so
# the variables stay set.
start_cluster() {
  PIDS=()
  for id in 1 2 3; do
    rm -rf "$OUT/node$id"
    "$BIN" serve --node-id $id --cluster "$LIST" --data-dir "$OUT/node$id" > "$OUT/node$id.log" 2>&1 &
    PIDS+=($!)
  done
  for port in "${PORTS[@]}"; do wait_ready "$port"; done
  for _ in $(seq 1 200); do
    leader=$(curl -sf "http://127.0.0.1:${PORTS[0]}/healthz" | sed -n 's/.*"leader":\([0-9]*\).*/\1/p')
    [ -n "$leader" ] && { PORT=${PORTS[$((leader - 1))]}; return; }
    sleep 0.05
  done
  echo "no leader" >&2; exit 1
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "part 1: checkout-mix at full speed, $CONNECTIONS connections, $ROUNDS rounds of ${SECONDS_PER_RUN}s"
printf '%-6s %-8s %10s %8s %8s %6s\n' round server rps p50_ms p99_ms errors
: > "$OUT/single.rps"; : > "$OUT/cluster.rps"
for round in $(seq 1 "$ROUNDS"); do
  order="single cluster"; [ $((round % 2)) -eq 0 ] && order="cluster single"
  for which in $order; do
    if [ "$which" = single ]; then start_single; else start_cluster; fi
    read -r rps p50 p99 err <<<"$(run_wrk "$PORT" "$CONNECTIONS")"
    stop_all "${PIDS[@]}"
    printf '%-6s %-8s %10s %8s %8s %6s\n' "$round" "$which" "$rps" "$p50" "$p99" "$err"
    echo "$rps" >> "$OUT/$which.rps"
  done
done
single=$(median < "$OUT/single.rps"); cluster=$(median < "$OUT/cluster.rps")
echo "median rps: single $single, cluster $cluster, cluster/single $(awk -v c="$cluster" -v s="$single" 'BEGIN {printf "%.2f", c/s}')"

half=$(awk -v c="$cluster" 'BEGIN {printf "%d", c/2}')
# Closed loop: each connection sends about 1000/(pause + latency) requests per second.
pause=$(awk -v c="$cluster" -v n="$HALF_CONNECTIONS" 'BEGIN {p = n * 1000 / (c/2); printf "%d", (p < 1) ? 1 : p}')
echo "part 2: checkout-mix at about $half requests/s (half the cluster's maximum), $HALF_CONNECTIONS connections, mean pause ${pause} ms"
printf '%-6s %-8s %10s %8s %8s %6s\n' round server rps p50_ms p99_ms errors
for round in $(seq 1 "$ROUNDS"); do
  for which in single cluster; do
    if [ "$which" = single ]; then start_single; else start_cluster; fi
    read -r rps p50 p99 err <<<"$(run_wrk "$PORT" "$HALF_CONNECTIONS" "$pause")"
    stop_all "${PIDS[@]}"
    printf '%-6s %-8s %10s %8s %8s %6s\n' "$round" "$which" "$rps" "$p50" "$p99" "$err"
  done
done
