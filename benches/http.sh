#!/usr/bin/env bash
# HTTP benchmark: idrecon against the no-storage ceiling (examples/ceiling.rs), same
# core, same load generator, alternating rounds; prints requests/s, p50/p99 and the median ratio
# target/ceiling per workload, then the checkout-mix latency figures.
#
#   benches/http.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 10 s)
#
# Environment: CONNECTIONS (256), PRELOAD (1000000 contacts), WORKLOADS ("returning checkout-mix
# new"; empty skips part 1), LATENCY (1: also run part 2), MIX_MAX_RPS (part 2's maximum
# instead of part 1's checkout-mix median), SNAPSHOT_EVERY_BUSY (1000), CARGO_TARGET_DIR,
# TARGET_BIN (another idrecon binary to measure instead of this checkout's), TARGET_ARGS (extra
# `serve` flags, e.g. "--commit-delay-us 0") and BASELINE_BIN (an A/B run: a second idrecon
# binary, e.g. a build of an older commit, measured in every round of part 1 beside the target,
# the two alternating which goes first; each workload then ends with both medians and the
# baseline's round-to-round spread, min-max of its ratios).
# With 64 connections both servers are latency-bound (closed loop: ~64 / latency) and the
# ceiling stays far below its maximum on this machine; 256 saturates it.
#
# Part 1, throughput. For each workload and round: start `idrecon serve --fsync batch` on a
# fresh copy of its start state, drive it with wrk for SECONDS at full speed, stop it; then the
# same against the ceiling; then, for the workloads that write, against the durability floor
# (`examples/ceiling.rs --durable`: the ceiling plus a durable log append for the workload's
# share of writes, 30 % for checkout-mix and 100 % for new; FLOOR=0 skips it). The floor's
# ratio to the ceiling is what durability alone costs on the shared core; target/floor is what
# the graph and the service's features cost on top. Servers run pinned to CPU 0 and wrk
# (Debian's package, installed if missing, one thread) to CPU 1, so the server under test has
# exactly one core.
# Workloads are generated deterministically into data/bench/ (not committed) by data/generate/:
#   returning     every request a known customer, nothing new (pure reads), PRELOAD preloaded
#   checkout-mix  ~70 % returning, 20 % new, 8 % new detail, 2 % links, PRELOAD preloaded
#   new           every request a brand-new customer, empty start
#
# Part 2, checkout-mix latency at half load: wrk paces every connection with a random pause
# between requests (benches/wrk-jsonl.lua PAUSE_MS: exponential, so requests arrive as a Poisson
# stream rather than in synchronized bursts) so the offered rate is about half the
# median checkout-mix target throughput of part 1, with 128 connections. Per round, three runs:
#   target, no snapshot        (--snapshot-every 0)
#   target, snapshots          (--snapshot-every SNAPSHOT_EVERY_BUSY: a snapshot of the
#                               1 000 000+ contacts starts again as soon as the previous one
#                               ends, so the run is "while a snapshot is being written"; the
#                               share of the run spent in snapshots is read from /metrics)
# Both target runs also print how many of the log's fsyncs took over 5 ms (from /metrics), the
# share of the core the server's threads used during the run and the log writer's part of it
# (/proc/PID/task/*/schedstat), and the group commit's mean batch with its share of
# one-record batches (the floor's line gives its core share too). "Half load" of part 1's
# maximum leaves less than half the core idle, because batches at half load are small: 57-80 %
# busy, depending on the host.
#   ceiling                    (the same rate, for reference)
#   durability floor           (the same rate, FLOOR=1: what a durable write alone adds)
# wrk is closed-loop (a late answer delays that connection's next request), so these p99s
# understate what an open-loop generator (wrk2) would see when the server stalls.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-10}
CONNECTIONS=${CONNECTIONS:-256}
PRELOAD=${PRELOAD:-1000000}
WORKLOADS=${WORKLOADS-returning checkout-mix new}
LATENCY=${LATENCY:-1}
SNAPSHOT_EVERY_BUSY=${SNAPSHOT_EVERY_BUSY:-1000}
FLOOR=${FLOOR:-1}
HALF_CONNECTIONS=128
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=data/bench/preload-$PRELOAD
PORT_TARGET=3101
PORT_CEILING=3102
PORT_FLOOR=3103

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; }
cargo build --release --quiet --bin idrecon --example ceiling --example generate
BIN=${TARGET_BIN:-$TARGET_DIR/release/idrecon}
CEILING=$TARGET_DIR/release/examples/ceiling
GENERATE=$TARGET_DIR/release/examples/generate
mkdir -p "$OUT"

if [ ! -f "$OUT/new.jsonl" ]; then
  "$GENERATE" --workload checkout-mix --events 600000 --preload-contacts "$PRELOAD" \
    --preload-out "$OUT/preload.csv" --out "$OUT/checkout-mix.jsonl"
  "$GENERATE" --workload returning --events 600000 --preload-contacts "$PRELOAD" --out "$OUT/returning.jsonl"
  "$GENERATE" --workload new --events 1500000 --out "$OUT/new.jsonl"
fi
if [ ! -d "$OUT/preloaded" ]; then
  "$BIN" import --data-dir "$OUT/preloaded.tmp" "$OUT/preload.csv"
  mv "$OUT/preloaded.tmp" "$OUT/preloaded"
fi

wait_ready() { # port
  for _ in $(seq 1 1200); do
    curl -sf "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server on port $1 did not start" >&2; exit 1
}

run_wrk() { # port file connections [delay_ms] -> "rps p50_ms p99_ms errors"
  taskset -c 1 wrk -t1 -c"$3" -d"${SECONDS_PER_RUN}s" --timeout 10s --latency -s benches/wrk-jsonl.lua \
    "http://127.0.0.1:$1" -- "$2" "${4:-0}" | tee -a "$OUT/wrk.log" | awk '
      /Requests\/sec/ {rps=$2}
      function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
      /^ +50%/ {p50=ms($2)} /^ +99%/ {p99=ms($2)}
      /Non-2xx/ {err+=$NF} /Socket errors/ {err+=1}
      END {printf "%s %.3f %.3f %d\n", rps, p50, p99, err}'
}

start_target() { # workload snapshot_every [binary] -> pid
  rm -rf "$OUT/run"
  if [ "$1" = new ]; then mkdir -p "$OUT/run"; else cp -r "$OUT/preloaded" "$OUT/run"; fi
  taskset -c 0 "${3:-$BIN}" serve --data-dir "$OUT/run" --listen "127.0.0.1:$PORT_TARGET" --fsync batch \
    --snapshot-every "$2" ${TARGET_ARGS:-} > "$OUT/target.log" 2>&1 &
  echo $!
}

# SIGTERM, then wait until the server has exited: a target writes its final snapshot first
# (about a second for the 1 M preload), which must not overlap the next run on the same core,
# nor its copy of the start state. The servers are started inside $(...), so they are not this
# shell's children and `wait` cannot be used (it would return at once). After 60 s, SIGKILL.
stop() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 1200); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.05
  done
  echo "server $1 still running 60 s after SIGTERM; killing it" >&2
  kill -9 "$1" 2>/dev/null || true
}

start_ceiling() {
  taskset -c 0 "$CEILING" "127.0.0.1:$PORT_CEILING" > "$OUT/ceiling.log" 2>&1 &
  echo $!
}

start_floor() { # write_percent -> pid
  taskset -c 0 "$CEILING" "127.0.0.1:$PORT_FLOOR" --durable "$OUT/floor-run" "$1" > "$OUT/floor.log" 2>&1 &
  echo $!
}

write_percent() { # workload -> share of its requests that write (data/generate/)
  case $1 in checkout-mix) echo 30 ;; new) echo 100 ;; *) echo 0 ;; esac
}

slow_fsyncs() { # /metrics text -> "N/M": the log's fsyncs over 5 ms, of all
  echo "$1" | awk '/^idrecon_wal_fsync_duration_seconds_bucket\{le="0.005"\}/ {fast=$2}
    /^idrecon_wal_fsync_duration_seconds_count/ {all=$2} END {printf "%d/%d", all-fast, all}'
}

# CPU time of a server's threads so far, in ms (schedstat's first field: ns on a CPU): all of
# them, and the log writer's. Part 2 reads it before and after a target run.
cpu_ms() { # pid -> "all_ms writer_ms"
  local all=0 writer=0 t run
  for t in /proc/"$1"/task/*; do
    read -r run _ < "$t/schedstat" 2>/dev/null || continue
    all=$((all + run))
    [ "$(cat "$t/comm" 2>/dev/null)" = idrecon-wal ] && writer=$((writer + run))
  done
  echo "$((all / 1000000)) $((writer / 1000000))"
}

# One half-load run of checkout-mix against server `pid` on `port`, with the CPU time its
# threads (and its log writer) used meanwhile: "rps p50_ms p99_ms errors cpu_ms writer_ms".
run_half() { # pid port
  local a w a2 w2 result
  read -r a w <<<"$(cpu_ms "$1")"
  result=$(run_wrk "$2" "$OUT/checkout-mix.jsonl" $HALF_CONNECTIONS "$delay")
  read -r a2 w2 <<<"$(cpu_ms "$1")"
  echo "$result $((a2 - a)) $((w2 - w))"
}

# "core% (writer%) batch": the share of its core a run used, the log writer's part of it, and
# (with /metrics text) the group commit's mean batch with the share of one-record batches.
load_of() { # cpu_ms writer_ms [/metrics-text]
  echo "${3:-}" | awk -v a="$1" -v w="$2" -v ms="$((SECONDS_PER_RUN * 1000))" '
    /^idrecon_wal_batch_records_bucket\{le="1"\}/ {one=$2}
    /^idrecon_wal_batch_records_sum/ {sum=$2} /^idrecon_wal_batch_records_count/ {n=$2}
    END {printf "%d%% (%d%%)", 100*a/ms, 100*w/ms; if (n > 0) printf " %.1f/%d%%", sum/n, 100*one/n}'
}

# One line of part 2's table: run round rps p50 p99 errors [snapshots fsyncs load].
half_row() {
  printf "%-24s %5s %10s %9s %9s %6s %-28s %-24s %s\n" "$@"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

: > "$OUT/wrk.log"
[ -n "$WORKLOADS" ] && echo "# part 1: throughput, $ROUNDS rounds of ${SECONDS_PER_RUN}s, $CONNECTIONS connections, $PRELOAD preloaded"
[ -n "$WORKLOADS" ] && printf "%-13s %5s %12s %9s %9s %12s %9s %9s %7s %12s %7s %7s %6s\n" workload round target_rps p50_ms p99_ms ceiling_rps p50_ms p99_ms ratio floor_rps floor/c t/floor errors
mix_rps=()
for workload in $WORKLOADS; do
  ratios=(); floor_ratios=(); target_floor=(); base_ratios=()
  percent=$(write_percent "$workload")
  for round in $(seq 1 "$ROUNDS"); do
    b=
    if [ -n "${BASELINE_BIN:-}" ] && [ $((round % 2)) = 0 ]; then
      base_pid=$(start_target "$workload" 1000000 "$BASELINE_BIN"); wait_ready $PORT_TARGET
      b=$(run_wrk $PORT_TARGET "$OUT/$workload.jsonl" "$CONNECTIONS")
      stop "$base_pid"
    fi
    target_pid=$(start_target "$workload" 1000000); wait_ready $PORT_TARGET
    t=$(run_wrk $PORT_TARGET "$OUT/$workload.jsonl" "$CONNECTIONS")
    stop "$target_pid"
    if [ -n "${BASELINE_BIN:-}" ] && [ -z "$b" ]; then
      base_pid=$(start_target "$workload" 1000000 "$BASELINE_BIN"); wait_ready $PORT_TARGET
      b=$(run_wrk $PORT_TARGET "$OUT/$workload.jsonl" "$CONNECTIONS")
      stop "$base_pid"
    fi
    ceiling_pid=$(start_ceiling); wait_ready $PORT_CEILING
    c=$(run_wrk $PORT_CEILING "$OUT/$workload.jsonl" "$CONNECTIONS")
    stop "$ceiling_pid"
    read -r trps tp50 tp99 terr <<<"$t"; read -r crps cp50 cp99 cerr <<<"$c"
    ratio=$(awk -v a="$trps" -v b="$crps" 'BEGIN {printf "%.3f", a/b}')
    ratios+=("$ratio")
    frps=- fratio=- tfratio=- ferr=0
    if [ "$FLOOR" = 1 ] && [ "$percent" -gt 0 ]; then
      floor_pid=$(start_floor "$percent"); wait_ready $PORT_FLOOR
      read -r frps _ _ ferr <<<"$(run_wrk $PORT_FLOOR "$OUT/$workload.jsonl" "$CONNECTIONS")"
      stop "$floor_pid"
      fratio=$(awk -v a="$frps" -v b="$crps" 'BEGIN {printf "%.3f", a/b}')
      tfratio=$(awk -v a="$trps" -v b="$frps" 'BEGIN {printf "%.3f", a/b}')
      floor_ratios+=("$fratio"); target_floor+=("$tfratio")
    fi
    [ "$workload" = checkout-mix ] && mix_rps+=("$trps")
    printf "%-13s %5s %12s %9s %9s %12s %9s %9s %7s %12s %7s %7s %6s\n" "$workload" "$round" "$trps" "$tp50" "$tp99" "$crps" "$cp50" "$cp99" "$ratio" "$frps" "$fratio" "$tfratio" "$((terr + cerr + ferr))"
    if [ -n "$b" ]; then
      read -r brps bp50 bp99 berr <<<"$b"
      bratio=$(awk -v a="$brps" -v b="$crps" 'BEGIN {printf "%.3f", a/b}')
      base_ratios+=("$bratio")
      printf "%-13s %5s %12s %9s %9s %12s %9s %9s %7s %s\n" "  baseline" "$round" "$brps" "$bp50" "$bp99" "" "" "" "$bratio" "errors $berr"
    fi
  done
  echo "$workload median ratio target/ceiling: $(printf '%s\n' "${ratios[@]}" | median)"
  if [ ${#base_ratios[@]} -gt 0 ]; then
    echo "$workload median ratio baseline/ceiling: $(printf '%s\n' "${base_ratios[@]}" | median), round-to-round spread $(printf '%s\n' "${base_ratios[@]}" | sort -g | head -1)-$(printf '%s\n' "${base_ratios[@]}" | sort -g | tail -1)"
  fi
  if [ ${#floor_ratios[@]} -gt 0 ]; then
    echo "$workload median ratio floor/ceiling ($percent % durable writes): $(printf '%s\n' "${floor_ratios[@]}" | median), target/floor: $(printf '%s\n' "${target_floor[@]}" | median)"
  fi
done

[ "$LATENCY" = 1 ] || exit 0
if [ -n "${MIX_MAX_RPS:-}" ]; then
  max=$MIX_MAX_RPS
elif [ ${#mix_rps[@]} -gt 0 ]; then
  max=$(printf '%s\n' "${mix_rps[@]}" | median)
else
  echo "part 2 needs checkout-mix in WORKLOADS, or MIX_MAX_RPS" >&2; exit 1
fi
half=$(awk -v m="$max" 'BEGIN {printf "%.0f", m/2}')
delay=$(awk -v r="$half" -v c="$HALF_CONNECTIONS" 'BEGIN {d=c*1000/r; printf "%.2f", (d<1?1:d)}')
echo
echo "# part 2: checkout-mix at half load: median max $max req/s -> offered ~$half req/s ($HALF_CONNECTIONS connections, mean pause ${delay} ms each)"
half_row run round rps p50_ms p99_ms errors snapshots "log fsyncs >5 ms / all" "core% (writer%) batch/1-rec"
p99_plain=(); p99_snap=(); p99_ceil=(); p99_floor=()
for round in $(seq 1 "$ROUNDS"); do
  pid=$(start_target checkout-mix 0); wait_ready $PORT_TARGET
  read -r rps p50 p99 err cpu wcpu <<<"$(run_half "$pid" $PORT_TARGET)"
  metrics=$(curl -sf "http://127.0.0.1:$PORT_TARGET/metrics" || true)
  stop "$pid"; p99_plain+=("$p99")
  half_row "target, no snapshot" "$round" "$rps" "$p50" "$p99" "$err" 0 "$(slow_fsyncs "$metrics")" \
    "$(load_of "$cpu" "$wcpu" "$metrics")"

  pid=$(start_target checkout-mix "$SNAPSHOT_EVERY_BUSY"); wait_ready $PORT_TARGET
  started=$(date +%s.%N)
  read -r rps p50 p99 err cpu wcpu <<<"$(run_half "$pid" $PORT_TARGET)"
  elapsed=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {print e-s}')
  metrics=$(curl -sf "http://127.0.0.1:$PORT_TARGET/metrics" || true)
  stop "$pid"; p99_snap+=("$p99")
  snaps=$(echo "$metrics" | awk '/^idrecon_snapshot_duration_seconds_count/ {print $2}')
  busy=$(echo "$metrics" | awk -v e="$elapsed" '/^idrecon_snapshot_duration_seconds_sum/ {printf "%.0f%%", 100*$2/e}')
  half_row "target, snapshots" "$round" "$rps" "$p50" "$p99" "$err" "${snaps:-0} (${busy:-0%} of the run)" \
    "$(slow_fsyncs "$metrics")" "$(load_of "$cpu" "$wcpu" "$metrics")"

  pid=$(start_ceiling); wait_ready $PORT_CEILING
  read -r rps p50 p99 err <<<"$(run_wrk $PORT_CEILING "$OUT/checkout-mix.jsonl" $HALF_CONNECTIONS "$delay")"
  stop "$pid"; p99_ceil+=("$p99")
  half_row "ceiling" "$round" "$rps" "$p50" "$p99" "$err" -

  if [ "$FLOOR" = 1 ]; then
    pid=$(start_floor "$(write_percent checkout-mix)"); wait_ready $PORT_FLOOR
    read -r rps p50 p99 err cpu wcpu <<<"$(run_half "$pid" $PORT_FLOOR)"
    stop "$pid"; p99_floor+=("$p99")
    half_row "durability floor" "$round" "$rps" "$p50" "$p99" "$err" - - "$(load_of "$cpu" "$wcpu")"
  fi
done
plain=$(printf '%s\n' "${p99_plain[@]}" | median)
snap=$(printf '%s\n' "${p99_snap[@]}" | median)
ceil=$(printf '%s\n' "${p99_ceil[@]}" | median)
floor_p99=-
[ ${#p99_floor[@]} -gt 0 ] && floor_p99="$(printf '%s\n' "${p99_floor[@]}" | median) ms"
echo "checkout-mix half-load median p99: target $plain ms (target <= 2 ms), ceiling $ceil ms, durability floor $floor_p99"
echo "checkout-mix half-load median p99 during snapshots: $snap ms = $(awk -v a="$snap" -v b="$plain" 'BEGIN {printf "%.2f", a/b}') x without (target <= 2x)"
