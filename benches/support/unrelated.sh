# Shared by benches/big_identity.sh and benches/split.sh (sourced, not run): the tools, the
# binary under test, and the unrelated load whose p99 both benchmarks compare across phases.
# Expects TARGET_DIR, PORT, OUT, CONNECTIONS, PAUSE_MS and SECONDS_PER_RUN to be set.

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; }
if [ -z "${TARGET_BIN:-}" ]; then
  cargo build --release --quiet --bin idrecon
fi
BIN=${TARGET_BIN:-$TARGET_DIR/release/idrecon}

wait_ready() { # waits up to 60 s for /healthz on PORT
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "the server did not become ready" >&2
  return 1
}

unrelated_p99() { # -> "rps p99_ms errors" of the unrelated load over SECONDS_PER_RUN
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --timeout 10s --latency \
    -s benches/wrk-jsonl.lua "http://127.0.0.1:$PORT" -- "$OUT/unrelated.jsonl" "$PAUSE_MS" |
    tee -a "$OUT/wrk.log" | awk '
      function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
      /Requests\/sec/ {rps=$2} /^ +99%/ {p99=ms($2)}
      /Non-2xx/ {err+=$NF} /Socket errors/ {err+=1}
      END {printf "%s %.3f %d\n", rps, p99, err}'
}
