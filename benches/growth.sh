#!/usr/bin/env bash
# Growth benchmark: how idrecon's costs change from 10 thousand to 10 million contacts.
# For each N it
#   1. generates a preload of N contacts and a `returning` workload for it (data/generate/),
#   2. runs `idrecon import` under /usr/bin/time -v (wall time, peak RSS of the import),
#   3. starts `idrecon serve` on the imported data directory (a snapshot, no log) and measures
#      start-up time (spawn to the first 200 from /healthz, and the "recovery finished" line)
#      twice: on both cores (recovery runs before any request, so nothing competes with it),
#      then pinned to CPU 0; VmRSS once ready (first run) -> bytes per contact = VmRSS / N,
#      and net of the empty service's VmRSS (measured first) = (VmRSS - empty) / N,
#   4. times pure-read identifies over the returning workload (examples/growth.rs read-latency),
#   5. writes a log of N ContactInserted events without a snapshot (examples/growth.rs wal-log)
#      and starts `serve` on it, on both cores then on CPU 0: events replayed / replay time
#      from its "recovery finished" line,
# then writes docs/growth.csv and plots docs/growth.svg (examples/plot_growth.rs, plotters).
#
#   benches/growth.sh [N ...]          (default: 10000 100000 1000000 10000000)
#
# 10 M needs about 6 GB of RAM at peak and several minutes. Everything generated goes to
# data/bench/growth/ (gitignored). The timing program runs pinned to CPU 0 (taskset), like
# the servers of benches/http.sh; recovery is measured both ways (see 3 and 5). Not part of
# .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 100000 1000000 10000000)
ROOT=data/bench/growth
PORT=3111
TARGET_DIR=${CARGO_TARGET_DIR:-target}
CSV=docs/growth.csv

cargo build --release --quiet --bin idrecon --example generate --example growth --example plot_growth
BIN=$TARGET_DIR/release/idrecon
GENERATE=$TARGET_DIR/release/examples/generate
GROWTH=$TARGET_DIR/release/examples/growth
mkdir -p "$ROOT" docs

now() { date +%s.%N; }

wait_ready() { # pid -> 0 when /healthz answers 200
  for _ in $(seq 1 6000); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$1" 2>/dev/null || { echo "serve exited early" >&2; return 1; }
    sleep 0.02
  done
  echo "serve did not become ready" >&2; return 1
}

field() { # log key -> value of key=... on the "recovery finished" line
  grep 'recovery finished' "$1" | grep -o "\"$2\":[0-9]*" | head -n1 | cut -d: -f2
}

# VmRSS of the service with no contacts: subtracted for the net bytes per contact.
rm -rf "$ROOT/empty"
taskset -c 0 "$BIN" --log-format json serve --data-dir "$ROOT/empty" --listen "127.0.0.1:$PORT" \
  --snapshot-every 0 > "$ROOT/empty.log" 2>&1 &
pid=$!
wait_ready $pid
sleep 1
empty_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
kill -9 $pid; wait $pid 2>/dev/null || true
echo "empty service VmRSS: $empty_kb kB"

echo "contacts,import_s,import_peak_rss_kb,startup_s,startup_logged_ms,startup_1core_s,startup_1core_logged_ms,rss_kb,bytes_per_contact,net_bytes_per_contact,read_ns,replay_events,replay_ms,replay_events_per_s,replay_1core_ms,replay_1core_events_per_s" > "$CSV.tmp"
for n in "${SIZES[@]}"; do
  d=$ROOT/$n
  mkdir -p "$d"
  if [ ! -f "$d/preload.csv" ]; then
    "$GENERATE" --workload returning --events 200000 --preload-contacts "$n" \
      --preload-out "$d/preload.csv" --out "$d/returning.jsonl"
  fi

  rm -rf "$d/imported"
  /usr/bin/time -v -o "$d/import.time" "$BIN" import --data-dir "$d/imported" "$d/preload.csv" 2> "$d/import.log"
  import_s=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$d/import.time")
  import_rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$d/import.time")

  # Start-up from the import's snapshot: on the whole machine (nothing else runs during
  # recovery, so it may use both cores), then pinned to CPU 0 like the servers of http.sh.
  start_up() { # log cpu_list -> sets $up_s (spawn to the first 200) and $pid
    local t0 t1
    t0=$(now)
    taskset -c "$2" "$BIN" --log-format json serve --data-dir "$d/imported" --listen "127.0.0.1:$PORT" \
      --snapshot-every 0 > "$1" 2>&1 &
    pid=$!
    wait_ready $pid
    t1=$(now)
    up_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b-a}')
  }
  start_up "$d/serve.log" 0,1
  startup_s=$up_s
  sleep 1
  rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  kill -9 $pid; wait $pid 2>/dev/null || true
  startup_ms=$(field "$d/serve.log" elapsed_ms)
  start_up "$d/serve-1core.log" 0
  startup_1core_s=$up_s
  kill -9 $pid; wait $pid 2>/dev/null || true
  startup_1core_ms=$(field "$d/serve-1core.log" elapsed_ms)
  bpc=$(awk -v r="$rss_kb" -v n="$n" 'BEGIN {printf "%.1f", r*1024/n}')
  net=$(awk -v r="$rss_kb" -v e="$empty_kb" -v n="$n" 'BEGIN {printf "%.1f", (r-e)*1024/n}')

  read_line=$(taskset -c 0 "$GROWTH" read-latency "$d/preload.csv" "$d/returning.jsonl")
  echo "$read_line"
  read_ns=$(echo "$read_line" | grep -o 'read_ns=[0-9.]*' | cut -d= -f2)

  # Recovery: a log of N events and no snapshot; both cores, then CPU 0 only.
  rm -rf "$d/walonly"
  "$GROWTH" wal-log "$d/preload.csv" "$d/walonly"
  replay() { # log cpu_list -> "events ms events_per_s"
    taskset -c "$2" "$BIN" --log-format json serve --data-dir "$d/walonly" --listen "127.0.0.1:$PORT" \
      --snapshot-every 0 > "$1" 2>&1 &
    pid=$!
    wait_ready $pid
    kill -9 $pid; wait $pid 2>/dev/null || true
    rm -f "$d/walonly/LOCK"
    local events ms
    events=$(field "$1" events_replayed)
    ms=$(field "$1" elapsed_ms)
    echo "$events $ms $(awk -v e="$events" -v ms="$ms" 'BEGIN {printf "%.0f", e/(ms>0?ms:1)*1000}')"
  }
  read -r replay_events replay_ms replay_rate <<<"$(replay "$d/replay.log" 0,1)"
  read -r _ replay_1core_ms replay_1core_rate <<<"$(replay "$d/replay-1core.log" 0)"
  rm -rf "$d/walonly"

  echo "$n,$import_s,$import_rss,$startup_s,$startup_ms,$startup_1core_s,$startup_1core_ms,$rss_kb,$bpc,$net,$read_ns,$replay_events,$replay_ms,$replay_rate,$replay_1core_ms,$replay_1core_rate" | tee -a "$CSV.tmp"
done
mv "$CSV.tmp" "$CSV"
column -s, -t < "$CSV"

cargo run --release --quiet --example plot_growth -- "$CSV" docs/growth.svg
