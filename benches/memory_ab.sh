#!/usr/bin/env bash
# Resident memory per contact, this checkout against another build, in alternating rounds:
#
#   BASELINE_BIN=path/to/old/idrecon benches/memory_ab.sh [ROUNDS]      (default: 2 rounds)
#
# Environment: CONTACTS (1000000; two in five are secondaries sharing their primary's phone),
# CARGO_TARGET_DIR, TARGET_BIN (the binary to measure instead of a release build of this
# checkout), OUT (work directory, default data/bench/memory, not committed).
#
# Each round imports the same rows with each binary, starts `serve` on them, reads VmRSS once
# /healthz answers, and does the same with an empty data directory; prints bytes per contact,
# net of the empty service.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
CONTACTS=${CONTACTS:-1000000}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-data/bench/memory}
PORT=3113
: "${BASELINE_BIN:?set BASELINE_BIN to the build to compare with}"
if [ -z "${TARGET_BIN:-}" ]; then
  cargo build --release --quiet --bin idrecon
fi
BIN=${TARGET_BIN:-$TARGET_DIR/release/idrecon}
mkdir -p "$OUT"
awk -v n="$CONTACTS" 'BEGIN {
  print "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt"
  t = "2023-04-01 00:00:00+00"
  for (i = 1; i <= n; i++) {
    if (i % 5 == 2 || i % 5 == 4)
      printf "%d,%d,user%d@example.com,%d,secondary,%s,%s,\n", i, 600000000 + i - 1, i, i - 1, t, t
    else
      printf "%d,%d,user%d@example.com,,primary,%s,%s,\n", i, 600000000 + i, i, t, t
  }
}' > "$OUT/rows.csv"

rss_kb() { # binary data-dir -> VmRSS in kB once /healthz answers
  RUST_LOG=warn "$1" serve --data-dir "$2" --listen "127.0.0.1:$PORT" --snapshot-every 0 \
    > /dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break
    sleep 0.1
  done
  sleep 1
  awk '/VmRSS/ {print $2}' "/proc/$pid/status"
  kill "$pid"
  wait "$pid" 2> /dev/null || true
}

for round in $(seq "$ROUNDS"); do
  for name in baseline target; do
    bin=$BIN
    [ "$name" = baseline ] && bin=$BASELINE_BIN
    rm -rf "$OUT/$name" "$OUT/empty"
    "$bin" import --data-dir "$OUT/$name" "$OUT/rows.csv" > /dev/null 2>&1
    full=$(rss_kb "$bin" "$OUT/$name")
    empty=$(rss_kb "$bin" "$OUT/empty")
    awk -v r="$round" -v name="$name" -v full="$full" -v empty="$empty" -v n="$CONTACTS" \
      'BEGIN {printf "round %d %-8s %.1f B/contact (%.1f net of the empty service)\n", r, name,
        full * 1024 / n, (full - empty) * 1024 / n}'
  done
done
