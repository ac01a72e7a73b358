#!/usr/bin/env bash
# Many held WebSocket connections and the memory they cost the stages (issue 10, item 5; docs/BENCHMARKS.md,
# "Connections").
#
#   scripts/bench-connections.sh
#
# Starts a standalone stack through the supervisor (a free loopback port, temporary RunDir and LogFolder, enough
# ws-ingress instances for at most CONN_PER_INGRESS connections each, `MaxConnections` raised to 19500 per
# instance), reads every stage process's VmRSS and RssAnon (/proc/PID/status) once the stack is up, then starts
# CONN_PROCS switchyard-bench processes (`--scenario connections`, each on its own 127.0.0.x source addresses and
# its own subjects /conn/<i>). Once every connection is subscribed and held (publishing one message per subject
# every CONN_INTERVAL seconds) it reads the stages' memory again, and reports per stage and in total the growth
# in KB per established connection. Only the stage processes (RunDir/STAGE-N.pid) are counted, never the bench
# processes (their RSS is shown apart). Then it checks that every connection received every acknowledged
# message. Exit status: 0 clean, 3 a bench process saw failed connections or lost messages, 1 an error.
#
#   CONN_TOTAL=100000      connections in all
#   CONN_PROCS             bench processes (default: one per 16,000 connections; each at most 19,000)
#   CONN_PER_INGRESS=15000 connections per ws-ingress instance at most (IngressInstances = TOTAL / this, rounded
#                          up; SO_REUSEPORT spreads connections unevenly, MaxConnections = 19500 leaves headroom)
#   CONN_RATE=2000         connections opened per second in all
#   CONN_DURATION=40       seconds the connections are held and published to
#   CONN_INTERVAL=10       seconds between two messages on one subject
#   CONN_SETTLE=15         seconds after the last connection is subscribed before the memory is read
#   CONN_NO_SUBSCRIBE=1    connections only: no subscription, no publisher (what a connection costs by itself)
#   CONN_QOS=STANDARD      the publishes' qos, CONN_RETAINED=false their retained flag: by default the cache
#                          keeps no message, so the figures are the connections' cost, not the history's
#   BENCH_SKIP_BUILD=1     use the executables already built (SWITCHYARD_BIN, default .build/release)
#   BENCH_KEEP=1           keep the temporary folder (config, logs, results)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
build_bench_products bench-connections

TOTAL=${CONN_TOTAL:-100000}
PER_PROC_MAX=19000
PROCS=${CONN_PROCS:-$(( (TOTAL + 15999) / 16000 ))}
PER_INGRESS=${CONN_PER_INGRESS:-15000}
INGRESS=$(( (TOTAL + PER_INGRESS - 1) / PER_INGRESS ))
RATE=${CONN_RATE:-2000}
DURATION=${CONN_DURATION:-40}
INTERVAL=${CONN_INTERVAL:-10}
SETTLE=${CONN_SETTLE:-15}
QOS=${CONN_QOS:-STANDARD}
RETAINED=${CONN_RETAINED:-false}
PER_PROC=$(( (TOTAL + PROCS - 1) / PROCS ))
if [ "$PER_PROC" -gt "$PER_PROC_MAX" ]; then
    echo "bench-connections: $PER_PROC connections per bench process: more than $PER_PROC_MAX (raise CONN_PROCS)" >&2
    exit 1
fi
# Each source address gives ~28,000 ephemeral ports; two per process leave room for TIME_WAIT of earlier runs.
SOURCES_PER_PROC=2
if [ $(( 10 + PROCS * SOURCES_PER_PROC )) -gt 254 ]; then echo "bench-connections: too many processes" >&2; exit 1; fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-conns.XXXXXX")
CONF="$TMP/switchyard.conf"
PORT=$(free_port)
cat > "$CONF" <<CONF
# Written by scripts/bench-connections.sh for one run.
Listen = 127.0.0.1:$PORT
ClusterEngine = none
RunDir = $TMP/run
LogFolder = $TMP/log
LogLevel = WARNING
MonitorListen = none
IngressInstances = $INGRESS
MaxConnections = 19500
CONF

BENCH_PIDS=()
cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    SWITCHYARD_GRACE=5 ./switchyard stop -c "$CONF" >/dev/null 2>&1 || true
    if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$TMP"; else echo "bench-connections: kept $TMP" >&2; fi
}
trap cleanup EXIT

echo "bench-connections: $TOTAL connections, $PROCS bench processes, $INGRESS ws-ingress instances," \
     "port $PORT ($TMP)" >&2
SWITCHYARD_BIN="$BIN" SWITCHYARD_START_TIMEOUT=60 ./switchyard start -c "$CONF" >&2
sleep 2

# "stage-N pid VmRSS_KB RssAnon_KB" for every stage process of the stack.
stage_memory() {
    local file name pid
    for file in "$TMP"/run/*.pid; do
        name=$(basename "$file" .pid)
        [ "$name" = supervisor ] && continue
        pid=$(cat "$file")
        [ -r "/proc/$pid/status" ] || continue
        awk -v n="$name" -v p="$pid" '/^VmRSS:/ { rss = $2 } /^RssAnon:/ { anon = $2 } END { print n, p, rss, anon }' \
            "/proc/$pid/status"
    done
}

echo "bench-connections: load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
stage_memory > "$TMP/memory-before"

for ((p = 0; p < PROCS; p++)); do
    first=$(( p * PER_PROC ))
    count=$(( TOTAL - first < PER_PROC ? TOTAL - first : PER_PROC ))
    [ "$count" -le 0 ] && break
    "$BIN/switchyard-bench" --scenario connections --target "127.0.0.1:$PORT" --subscribers "$count" \
        --first-subject "$first" --source-first $(( 10 + p * SOURCES_PER_PROC )) --sources "$SOURCES_PER_PROC" \
        --connect-rate $(( RATE / PROCS > 0 ? RATE / PROCS : 1 )) --interval "$INTERVAL" --duration "$DURATION" \
        --drain 10 --timeout $(( 3 * count * PROCS / RATE + DURATION + 200 )) --qos "$QOS" --retained "$RETAINED" --ready-file "$TMP/ready-$p" \
        --json-out "$TMP/result-$p.json" ${CONN_QUIET:+--quiet} ${CONN_NO_SUBSCRIBE:+--no-subscribe} > "$TMP/bench-$p.out" 2> "$TMP/bench-$p.log" &
    BENCH_PIDS+=("$!")
done

# Held: every bench process is subscribed (or gone), then SETTLE seconds of messages.
while :; do
    ready=0 running=0
    for ((p = 0; p < ${#BENCH_PIDS[@]}; p++)); do
        [ -f "$TMP/ready-$p" ] && ready=$((ready + 1))
        kill -0 "${BENCH_PIDS[$p]}" 2>/dev/null && running=$((running + 1))
    done
    [ "$ready" -eq "${#BENCH_PIDS[@]}" ] && break
    if [ "$running" -lt "${#BENCH_PIDS[@]}" ]; then
        echo "bench-connections: a bench process ended before its connections were held:" >&2
        tail -n 5 "$TMP"/bench-*.log >&2
        exit 1
    fi
    sleep 1
done
echo "bench-connections: all connections subscribed; holding $SETTLE s before reading the memory" >&2
sleep "$SETTLE"
stage_memory > "$TMP/memory-held"
bench_rss=0
for pid in "${BENCH_PIDS[@]}"; do
    kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    bench_rss=$((bench_rss + ${kb:-0}))
done
load_held=$(cut -d' ' -f1-3 /proc/loadavg)

status=0
for pid in "${BENCH_PIDS[@]}"; do
    code=0
    wait "$pid" || code=$?
    if [ "$code" -ne 0 ]; then status=$code; fi
done
BENCH_PIDS=()

# The bench processes' results, added up.
jq -s '{requested: (map(.requested) | add), established: (map(.established) | add),
        subscribed: (map(.subscribed) | add), subscribeRefused: (map(.subscribeRefused) | add),
        expected: (map(.expected) | add), received: (map(.received) | add),
        receivedNone: (map(.receivedNone) | add), receivedShort: (map(.receivedShort) | add),
        lost: (map(.lost) | add), disconnects: (map(.disconnects) | add),
        publishFailed: (map(.publishFailed) | add), connectSeconds: (map(.connectSeconds) | max),
        failures: (map(.failures) | add)}' "$TMP"/result-*.json > "$TMP/result.json"
established=$(jq .established "$TMP/result.json")

echo
echo "connections: $(jq -c . "$TMP/result.json")"
echo "load average while held: $load_held; bench processes' RSS (not counted): $((bench_rss / 1024)) MiB"
echo
# Per stage instance, per stage and in total: KB before, held, and growth per established connection.
join <(sort "$TMP/memory-before") <(sort "$TMP/memory-held") | awk -v conns="$established" '
    function stage(name) { sub(/-[0-9]+$/, "", name); return name }
    {
        s = stage($1); rss0[s] += $3; anon0[s] += $4; rss1[s] += $6; anon1[s] += $7; n[s]++
        t0 += $3; a0 += $4; t1 += $6; a1 += $7
    }
    END {
        printf "%-12s %4s %12s %12s %12s %12s %10s %10s\n", "stage", "inst", "VmRSS0 KB", "VmRSS KB", "RssAnon0 KB",
               "RssAnon KB", "RSS KB/c", "anon KB/c"
        for (s in n) {
            printf "%-12s %4d %12d %12d %12d %12d %10.3f %10.3f\n", s, n[s], rss0[s], rss1[s], anon0[s], anon1[s],
                   (rss1[s] - rss0[s]) / conns, (anon1[s] - anon0[s]) / conns
        }
        printf "%-12s %4s %12d %12d %12d %12d %10.3f %10.3f\n", "total", "", t0, t1, a0, a1, (t1 - t0) / conns,
               (a1 - a0) / conns
    }'
if [ "$status" -ne 0 ]; then
    echo "bench-connections: a bench process exited with status $status (3: failed connections or lost messages)" >&2
    tail -n 3 "$TMP"/bench-*.log >&2 || true
fi
exit "$status"
