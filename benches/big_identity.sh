#!/usr/bin/env bash
# Big-identity isolation benchmark: do clients hammering the largest identity the default cap
# allows (docs/behaviour.md §3.6: 1 000 contacts) slow down everyone else's requests?
#
#   benches/big_identity.sh [SECONDS]        (default: 10 s per phase)
#
# Environment: UNRELATED (100000 single-contact customers preloaded), SIZE (1000: contacts of the
# big identity), CONNECTIONS (32: connections of the unrelated load), PAUSE_MS (10: mean
# exponential pause of each unrelated connection between requests, so their rate is fixed, about
# CONNECTIONS * 1000 / PAUSE_MS requests/s, and the same in every phase), HOT ("4 32": the
# numbers of connections asking for the big identity in phase B, one run each, at full speed),
# CARGO_TARGET_DIR, TARGET_BIN (the idrecon binary to measure instead of a release build of this
# checkout), OUT (work directory, default data/bench/big-identity, not committed).
#
# Phase A: the unrelated load alone: returning customers (pure reads of one-contact identities)
# through POST /identify. Phase B, per HOT value: the same load while HOT more connections send
# POST /identify with the big identity's phone number (a pure read answered with all SIZE
# contacts, about 25 kB at 1 000) as fast as the server answers. Prints each phase's p99 of the
# unrelated requests and the ratio B/A; the goal is a ratio of at most 2. The server runs pinned
# to CPU 0 and both wrk processes to CPU 1 (single-core server, as benches/http.sh).
# wrk is closed-loop: a late answer delays that connection's next request, so these p99s
# understate what an open-loop generator would see when the server stalls.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
UNRELATED=${UNRELATED:-100000}
SIZE=${SIZE:-1000}
CONNECTIONS=${CONNECTIONS:-32}
PAUSE_MS=${PAUSE_MS:-10}
HOT=${HOT:-4 32}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-data/bench/big-identity}
PORT=3111

# shellcheck source=benches/support/unrelated.sh
. benches/support/unrelated.sh
rm -rf "$OUT"
mkdir -p "$OUT"

# The rows: contact 1 is the big identity's primary, 2..SIZE its secondaries (one phone number,
# one email each); then UNRELATED customers of one contact each.
awk -v size="$SIZE" -v n="$UNRELATED" -v rows="$OUT/rows.csv" -v reads="$OUT/unrelated.jsonl" \
  -v hot="$OUT/hot.jsonl" 'BEGIN {
  print "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt" > rows
  t = "2023-04-01 00:00:00+00"
  for (i = 1; i <= size; i++)
    printf "%d,900000000,big%d@example.com,%s,%s,%s,%s,\n", i, i, (i == 1 ? "" : "1"),
      (i == 1 ? "primary" : "secondary"), t, t > rows
  for (j = 1; j <= n; j++) {
    printf "%d,%d,c%d@example.com,,primary,%s,%s,\n", size + j, 700000000 + j, j, t, t > rows
    printf "{\"email\":\"c%d@example.com\",\"phoneNumber\":\"%d\"}\n", j, 700000000 + j > reads
  }
  print "{\"phoneNumber\":\"900000000\"}" > hot
}'
"$BIN" import --data-dir "$OUT/data" "$OUT/rows.csv"

RUST_LOG=warn taskset -c 0 "$BIN" serve --data-dir "$OUT/data" --listen "127.0.0.1:$PORT" \
  --snapshot-every 0 > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
wait_ready
answer_bytes=$(curl -s -X POST -H 'Content-Type: application/json' \
  --data @"$OUT/hot.jsonl" "http://127.0.0.1:$PORT/identify" | wc -c)
echo "big identity: $SIZE contacts, answer $answer_bytes bytes; $UNRELATED unrelated customers"

read -r a_rps a_p99 a_err < <(unrelated_p99)
echo "phase A (unrelated alone):        ${a_rps} req/s, p99 ${a_p99} ms, errors ${a_err}"
for hot in $HOT; do
  # Started first and given longer than the measured run, so it covers all of it.
  taskset -c 1 wrk -t1 -c"$hot" -d"$((SECONDS_PER_RUN + 2))s" --timeout 10s \
    -s benches/wrk-jsonl.lua "http://127.0.0.1:$PORT" -- "$OUT/hot.jsonl" > "$OUT/hot-$hot.log" &
  HOT_WRK=$!
  sleep 1
  read -r b_rps b_p99 b_err < <(unrelated_p99)
  wait $HOT_WRK
  hot_rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/hot-$hot.log")
  ratio=$(awk -v a="$a_p99" -v b="$b_p99" 'BEGIN {printf "%.2f", (a > 0 ? b/a : 0)}')
  echo "phase B ($hot clients on the big identity at ${hot_rps} req/s): ${b_rps} req/s, p99 ${b_p99} ms, errors ${b_err}; p99 ratio B/A ${ratio} (goal <= 2)"
done
