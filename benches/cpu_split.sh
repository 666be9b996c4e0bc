#!/usr/bin/env bash
# CPU per HTTP request at full load, split by mode and thread (issue 3, BENCHMARKS.md "tenth
# pass"): where benches/http.sh says how many requests a second each server answers, this says
# what each request cost the core: user and system time, the log writer's share, context
# switches and fsyncs. It answers "more instructions, or more waiting and waking?", which the
# instruction counts of benches/callgrind_http.sh cannot (they see user space only).
#
#   benches/cpu_split.sh [ROUNDS] [SECONDS]      (defaults: 2 rounds of 10 s)
#
# Environment: WORKLOADS ("returning checkout-mix"; also "new"), CONNECTIONS (256), PRELOAD
# (1000000), TARGET_BIN and TARGET_ARGS as in benches/http.sh, CARGO_TARGET_DIR. Needs the data
# benches/http.sh generates (run it once first).
#
# Per workload and round: the target (`idrecon serve --fsync batch`) on a fresh copy of the
# start state, then the ceiling, each pinned to CPU 0 and driven by wrk on CPU 1 as in
# benches/http.sh. Clock ticks (/proc/PID/stat, and the `idrecon-wal` thread's
# /proc/PID/task/TID/stat) and context switches (summed over the threads' status files) are
# read just before and after wrk. Printed per request, in microseconds: user, system and total
# CPU, the log writer's part of the total; per 10 s: voluntary and involuntary switches, and
# fsyncs (from /metrics). A tick is 10 ms, so a 10 s run measures CPU to about 1 %.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
SECONDS_PER_RUN=${2:-10}
CONNECTIONS=${CONNECTIONS:-256}
PRELOAD=${PRELOAD:-1000000}
WORKLOADS=${WORKLOADS:-returning checkout-mix}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
DATA=data/bench/preload-$PRELOAD
PORT=3121

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[ -f "$DATA/new.jsonl" ] && [ -d "$DATA/preloaded" ] ||
  { echo "run benches/http.sh first: it generates $DATA" >&2; exit 1; }
cargo build --release --quiet --bin idrecon --example ceiling
BIN=${TARGET_BIN:-$TARGET_DIR/release/idrecon}
CEILING=$TARGET_DIR/release/examples/ceiling
HZ=$(getconf CLK_TCK)

wait_ready() {
  for _ in $(seq 1 1200); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server did not start" >&2; exit 1
}

counters() { # pid -> "user_ticks system_ticks writer_ticks voluntary involuntary"
  local pid=$1 writer=0 t
  for t in /proc/"$pid"/task/*; do
    if grep -q '^idrecon-wal' "$t/comm" 2>/dev/null; then
      writer=$(awk '{print $14 + $15}' "$t/stat")
    fi
  done
  printf '%s %s %s\n' "$(awk '{print $14, $15}' /proc/"$pid"/stat)" "$writer" \
    "$(cat /proc/"$pid"/task/*/status | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v, n}')"
}

measure() { # name workload command... -> one line of figures
  local name=$1 workload=$2; shift 2
  taskset -c 0 "$@" > "$DATA/cpu-split-server.log" 2>&1 &
  local pid=$!
  wait_ready
  local before after rps fsyncs
  before=$(counters "$pid")
  rps=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --timeout 10s \
    -s benches/wrk-jsonl.lua "http://127.0.0.1:$PORT" -- "$DATA/$workload.jsonl" |
    awk '/Requests\/sec/ {print $2}')
  after=$(counters "$pid")
  fsyncs=$(curl -sf "http://127.0.0.1:$PORT/metrics" |
    awk '/^idrecon_wal_fsync_duration_seconds_count/ {print $2}' || true)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk -v name="$name" -v w="$workload" -v rps="$rps" -v s="$SECONDS_PER_RUN" -v hz="$HZ" \
    -v b="$before" -v a="$after" -v f="${fsyncs:-0}" 'BEGIN {
      split(b, x, " "); split(a, y, " ")
      us = 1e6 / hz / (rps * s)
      printf "%-13s %-8s %9.0f %8.1f %8.1f %8.1f %8.1f %9.0f %9.0f %7.0f\n", w, name, rps,
        (y[1]-x[1])*us, (y[2]-x[2])*us, (y[1]+y[2]-x[1]-x[2])*us, (y[3]-x[3])*us,
        (y[4]-x[4])*10/s, (y[5]-x[5])*10/s, f*10/s }'
}

printf "%-13s %-8s %9s %8s %8s %8s %8s %9s %9s %7s\n" workload server req/s user_us sys_us \
  total_us wal_us vol/10s invol/10s fsyncs
for round in $(seq 1 "$ROUNDS"); do
  for workload in $WORKLOADS; do
    rm -rf "$DATA/cpu-split-run"
    if [ "$workload" = new ]; then mkdir -p "$DATA/cpu-split-run"
    else cp -r "$DATA/preloaded" "$DATA/cpu-split-run"; fi
    # shellcheck disable=SC2086 # TARGET_ARGS is a list of flags
    measure target "$workload" "$BIN" serve --data-dir "$DATA/cpu-split-run" \
      --listen "127.0.0.1:$PORT" --fsync batch --snapshot-every 1000000 ${TARGET_ARGS:-}
    measure ceiling "$workload" "$CEILING" "127.0.0.1:$PORT"
  done
done
rm -rf "$DATA/cpu-split-run"
