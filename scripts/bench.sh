#!/usr/bin/env bash
# Benchmark a throw-away Switchyard stack against the in-process baseline (docs/BENCHMARKS.md).
#
#   scripts/bench.sh [switchyard-bench options...]      e.g. --scenario publish, --subscribers 500, --duration 5
#
# Builds the stages and switchyard-bench (release), starts a standalone stack from a temporary config (a free
# loopback port, temporary RunDir and LogFolder), runs `switchyard-bench --baseline` against it (all traffic on
# 127.0.0.1), stops the stack and prints the results (with the cores each stage used while measured) and the
# one-line JSON summary. Exit status: switchyard-bench's (0 clean, 3 gaps/losses/failures seen, 4 timed out).
# With the defaults the whole run takes well under 2 minutes once the build is up to date.
#
#   BENCH_SKIP_BUILD=1   use the executables already built (SWITCHYARD_BIN, default .build/release)
#   BENCH_KEEP=1         keep the temporary folder (config, logs, result JSON)
#   BENCH_LOGLEVEL=INFO  the stack's LogLevel
#   BENCH_INGRESS=N      IngressInstances (default 1)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
build_bench_products bench

TMP=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-bench.XXXXXX")
CONF="$TMP/switchyard.conf"
PORT=$(free_port)
cat > "$CONF" <<CONF
# Written by scripts/bench.sh for one benchmark run.
Listen = 127.0.0.1:$PORT
ClusterEngine = none
RunDir = $TMP/run
LogFolder = $TMP/log
LogLevel = ${BENCH_LOGLEVEL:-INFO}
MonitorListen = none
IngressInstances = ${BENCH_INGRESS:-1}
CONF

cleanup() {
    SWITCHYARD_GRACE=2 ./switchyard stop -c "$CONF" >/dev/null 2>&1 || true
    if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$TMP"; else echo "bench: kept $TMP" >&2; fi
}
trap cleanup EXIT

echo "bench: starting a standalone stack on 127.0.0.1:$PORT ($TMP)" >&2
SWITCHYARD_BIN="$BIN" SWITCHYARD_START_TIMEOUT=30 ./switchyard start -c "$CONF" >&2

# The machine is shared: say so when something else keeps the cores busy (a build, a test run).
busy_note() {
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" -v c="$(nproc)" 'BEGIN { exit !(l > c * 0.5) }'; then
        echo "bench: note: 1-minute load average $load on $(nproc) cores $1: other work competes with the bench" >&2
    fi
}
busy_note "before the run"

status=0
# Three alternating rounds of 5 s by default: the pooled figures and the spread of the per-round ratios say more
# on a shared machine than one 10 s run each. Options given to the script come later and so win.
"$BIN/switchyard-bench" --target "127.0.0.1:$PORT" --baseline --watch-rundir "$TMP/run" \
    --rounds 3 --duration 5 --warmup 1 --json-out "$TMP/result.json" "$@" || status=$?

if [ "$status" -ne 0 ]; then
    echo "bench: switchyard-bench exited with status $status (3: integrity problems, 4: timed out)" >&2
    echo "bench: last log lines of the stack:" >&2
    tail -n 5 "$TMP"/log/*.log >&2 || true
fi
exit "$status"
