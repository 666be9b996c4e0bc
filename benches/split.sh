#!/usr/bin/env bash
# Split benchmark (docs/behaviour.md §10): how long does splitting a junk-phone identity hold
# the store's write lock, and what does it do to unrelated requests' p99 meanwhile?
#
#   benches/split.sh [SECONDS]               (default: 10 s per phase)
#
# Environment: SIZE (100000: contacts of each junk identity), IDENTITIES (5: junk identities,
# one split per second in phase B), UNRELATED (100000 one-contact customers preloaded),
# CONNECTIONS (32), PAUSE_MS (10: mean exponential pause of each unrelated connection, so the
# unrelated rate is fixed and the same in both phases), CARGO_TARGET_DIR, TARGET_BIN (the binary
# to measure instead of a release build of this checkout), OUT (work directory, default
# data/bench/split, not committed).
#
# The rows are imported with the identity size cap lifted: IDENTITIES identities of SIZE
# contacts, each contact with its own email and the identity's junk phone, then UNRELATED
# customers. Phase A: unrelated returning customers alone (POST /identify, pure reads). Phase
# B: the same load while one junk identity per second is split by its phone
# (POST /identities/{id}/split). Prints each split's answer time and lock hold (from the
# server's `identity split` log line), the unrelated p99 of both phases and their ratio. The
# server runs pinned to CPU 0, wrk and curl to CPU 1 (as benches/big_identity.sh). wrk is
# closed-loop, so its p99s understate stalls.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
SIZE=${SIZE:-100000}
IDENTITIES=${IDENTITIES:-5}
UNRELATED=${UNRELATED:-100000}
CONNECTIONS=${CONNECTIONS:-32}
PAUSE_MS=${PAUSE_MS:-10}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-data/bench/split}
PORT=3112

# shellcheck source=benches/support/unrelated.sh
. benches/support/unrelated.sh
rm -rf "$OUT"
mkdir -p "$OUT"

awk -v size="$SIZE" -v k="$IDENTITIES" -v n="$UNRELATED" -v rows="$OUT/rows.csv" \
  -v reads="$OUT/unrelated.jsonl" 'BEGIN {
  print "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt" > rows
  t = "2023-04-01 00:00:00+00"
  id = 0
  for (j = 1; j <= k; j++) {
    first = id + 1
    for (i = 1; i <= size; i++) {
      id++
      printf "%d,55501%02d,junk%d-%d@example.com,%s,%s,%s,%s,\n", id, j, j, i,
        (i == 1 ? "" : first), (i == 1 ? "primary" : "secondary"), t, t > rows
    }
  }
  for (j = 1; j <= n; j++) {
    id++
    printf "%d,%d,c%d@example.com,,primary,%s,%s,\n", id, 700000000 + j, j, t, t > rows
    printf "{\"email\":\"c%d@example.com\",\"phoneNumber\":\"%d\"}\n", j, 700000000 + j > reads
  }
}'
"$BIN" import --data-dir "$OUT/data" "$OUT/rows.csv" > "$OUT/import.log" 2>&1

RUST_LOG=warn,idrecon::store=info taskset -c 0 "$BIN" serve --data-dir "$OUT/data" \
  --listen "127.0.0.1:$PORT" --snapshot-every 0 --max-identity-size 0 > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
wait_ready
echo "$IDENTITIES junk identities of $SIZE contacts; $UNRELATED unrelated customers"

read -r a_rps a_p99 a_err < <(unrelated_p99)
echo "phase A (unrelated alone): ${a_rps} req/s, p99 ${a_p99} ms, errors ${a_err}"
unrelated_p99 > "$OUT/phase-b" &
LOAD=$!
sleep 1
for j in $(seq "$IDENTITIES"); do
  primary=$(( (j - 1) * SIZE + 1 ))
  taskset -c 1 curl -s -o "$OUT/split-$j.json" -w "%{time_total}\n" \
    -H 'Content-Type: application/json' -d "{\"phoneNumbers\":[\"55501$(printf %02d "$j")\"]}" \
    "http://127.0.0.1:$PORT/identities/$primary/split" >> "$OUT/split-times"
  sleep 1
done
wait $LOAD
read -r b_rps b_p99 b_err < "$OUT/phase-b"
awk '{printf "split answered in %.1f ms\n", $1 * 1000}' "$OUT/split-times"
grep -o 'removed_links=[0-9]* lock_held_us=[0-9]*' "$OUT/serve.log" |
  awk -F'[= ]' '{printf "split: %d links removed, write lock held %.1f ms\n", $2, $4 / 1000}'
ratio=$(awk -v a="$a_p99" -v b="$b_p99" 'BEGIN {printf "%.2f", (a > 0 ? b/a : 0)}')
echo "phase B (one split per second): ${b_rps} req/s, p99 ${b_p99} ms, errors ${b_err}; p99 ratio B/A ${ratio}"
