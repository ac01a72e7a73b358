#!/usr/bin/env bash
# Peers side by side (docs/BENCHMARKS.md): the same fan-out workload against Switchyard (protocol v1 and MQTT over
# WebSocket), mosquitto (MQTT over WebSocket), nats-server (NATS over WebSocket) and a floor program, in one run.
#
#   scripts/bench-peers.sh                   1,000 subscribers, 10 subjects, 600 publishes/s of 100 bytes, 10 s
#                                            per target, then a rate ramp per target; about 4 minutes
#
# Installs Debian's mosquitto and nats-server when they are missing, compiles scripts/bench-floor.c with cc,
# builds the stages and switchyard-bench (release, like scripts/bench.sh), starts every server on 127.0.0.1 on
# free ports (a standalone Switchyard stack through the real supervisor), runs `switchyard-bench` once per target,
# then prints one table (server CPU-seconds per million deliveries from /proc of every server process, deliveries
# received vs expected, latency p50/p99, the highest sustained delivery rate, and each as a ratio to the one-write
# floor and to each peer) and stops everything it started.
#
# Environment (defaults in brackets):
#   PEERS_SUBSCRIBERS [1000]  PEERS_SUBJECTS [10]  PEERS_RATE [600] publishes/s  PEERS_PAYLOAD [100] bytes
#   PEERS_BURST [1] publishes sent back to back to one subject (4: four messages per subscriber reach each server
#                   together; the floor still writes once per delivery, floor-x4 once per four)
#   PEERS_DURATION [10] s measured after PEERS_WARMUP [2] s; PEERS_DRAIN [5] s at most for the last deliveries
#   PEERS_RAMP ["900 1200 1800 2400 3600 4800"] publishes/s, each for PEERS_RAMP_DURATION [3] s after 1 s of warm-up; "" skips
#   PEERS_TARGETS ["floor floor-x4 switchyard switchyard-mqtt mosquitto nats"] (a subset runs only those)
#   BENCH_SKIP_BUILD=1 use the executables already built (SWITCHYARD_BIN, default .build/release)
#   BENCH_KEEP=1 keep the temporary folder (configs, logs, each run's JSON and output)
# Exit status: 0 when every target delivered everything at the fixed rate, 3 when one lost or failed, 1 on errors.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

SUBSCRIBERS=${PEERS_SUBSCRIBERS:-1000}
SUBJECTS=${PEERS_SUBJECTS:-10}
RATE=${PEERS_RATE:-600}
PAYLOAD=${PEERS_PAYLOAD:-100}
BURST=${PEERS_BURST:-1}
DURATION=${PEERS_DURATION:-10}
WARMUP=${PEERS_WARMUP:-2}
DRAIN=${PEERS_DRAIN:-5}
RAMP=${PEERS_RAMP-900 1200 1800 2400 3600 4800}
RAMP_DURATION=${PEERS_RAMP_DURATION:-3}
TARGETS=${PEERS_TARGETS:-floor floor-x4 switchyard switchyard-mqtt mosquitto nats}

say() { echo "bench-peers: $*" >&2; }
# Every server and the bench hold one descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- the peers: Debian's mosquitto and nats-server, installed when missing (as scripts/setup.sh does) -----------
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { say "missing ${missing[*]} and not root (no sudo)"; exit 1; }
        SUDO=sudo
    fi
    say "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
NATS=$(command -v nats-server)

# --- Switchyard and the bench (scripts/bench-common.sh) -----------------------------------------------------------
build_bench_products bench-peers

TMP=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-peers.XXXXXX")
PIDS=()
CONF="$TMP/switchyard.conf"
cleanup() {
    SWITCHYARD_GRACE=2 ./switchyard stop -c "$CONF" >/dev/null 2>&1 || true
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$TMP"; else say "kept $TMP"; fi
}
trap cleanup EXIT

wait_port() {  # PORT NAME: until something accepts on 127.0.0.1:PORT (10 s at most)
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    say "$2 does not accept on 127.0.0.1:$1"
    exit 1
}

# --- start every server -------------------------------------------------------------------------------------------
declare -A PORT PROTOCOL WATCH
wanted() { [[ " $TARGETS " == *" $1 "* ]]; }

if wanted floor || wanted floor-x4; then
    cc -O2 -o "$TMP/bench-floor" scripts/bench-floor.c
    for mode in floor:1 floor-x4:4; do
        name=${mode%%:*}
        wanted "$name" || continue
        "$TMP/bench-floor" 0 "${mode##*:}" > "$TMP/$name.out" &
        PIDS+=($!)
        WATCH[$name]="--watch-pid $name=$!"
        for _ in $(seq 50); do grep -q listening "$TMP/$name.out" 2>/dev/null && break; sleep 0.1; done
        PORT[$name]=$(awk '/listening/ { print $2 }' "$TMP/$name.out")
        PROTOCOL[$name]=raw
        wait_port "${PORT[$name]}" "$name"
    done
fi

if wanted switchyard || wanted switchyard-mqtt; then
    SY_PORT=$(free_port)
    cat > "$CONF" <<CONF
# Written by scripts/bench-peers.sh for one benchmark run.
Listen = 127.0.0.1:$SY_PORT
ClusterEngine = none
RunDir = $TMP/run
LogFolder = $TMP/log
LogLevel = INFO
MonitorListen = none
CONF
    say "starting a standalone Switchyard stack on 127.0.0.1:$SY_PORT"
    SWITCHYARD_BIN="$BIN" SWITCHYARD_START_TIMEOUT=30 ./switchyard start -c "$CONF" >&2
    for name in switchyard switchyard-mqtt; do
        PORT[$name]=$SY_PORT
        WATCH[$name]="--watch-rundir $TMP/run"
    done
    PROTOCOL[switchyard]=switchyard
    PROTOCOL[switchyard-mqtt]=mqtt
fi

if wanted mosquitto; then
    MQ_TCP=$(free_port)
    MQ_WS=$(free_port)
    # mosquitto 2.0 starts the websockets listener only with a plain listener beside it.
    cat > "$TMP/mosquitto.conf" <<CONF
listener $MQ_TCP 127.0.0.1
listener $MQ_WS 127.0.0.1
protocol websockets
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
CONF
    "$MOSQUITTO" -c "$TMP/mosquitto.conf" 2> "$TMP/mosquitto.log" &
    PIDS+=($!)
    WATCH[mosquitto]="--watch-pid mosquitto=$!"
    PORT[mosquitto]=$MQ_WS
    PROTOCOL[mosquitto]=mqtt
    wait_port "$MQ_WS" mosquitto
fi

if wanted nats; then
    NATS_TCP=$(free_port)
    NATS_WS=$(free_port)
    cat > "$TMP/nats.conf" <<CONF
listen: 127.0.0.1:$NATS_TCP
websocket {
    host: 127.0.0.1
    port: $NATS_WS
    no_tls: true
}
CONF
    "$NATS" -c "$TMP/nats.conf" 2> "$TMP/nats.log" &
    PIDS+=($!)
    WATCH[nats]="--watch-pid nats-server=$!"
    PORT[nats]=$NATS_WS
    PROTOCOL[nats]=nats
    wait_port "$NATS_WS" nats-server
fi

# --- the runs -------------------------------------------------------------------------------------------------------
run_bench() {  # NAME RATE DURATION WARMUP DRAIN OUT: one switchyard-bench run against target NAME
    local name=$1
    cut -d' ' -f1-3 /proc/loadavg > "$6.load"
    # shellcheck disable=SC2086  # WATCH holds an option and its value
    "$BIN/switchyard-bench" --protocol "${PROTOCOL[$name]}" --name "$name" --target "127.0.0.1:${PORT[$name]}" \
        --subscribers "$SUBSCRIBERS" --subjects "$SUBJECTS" --publishers 1 --rate "$2" --payload "$PAYLOAD" \
        --burst "$BURST" --duration "$3" --warmup "$4" --drain "$5" --quiet --json-out "$6" ${WATCH[$name]} > "$6.txt" 2>&1 || true
    [ -s "$6" ] || { say "$name: no result (see below)"; tail -n 5 "$6.txt" >&2; }
}

say "machine load (1, 5, 15 min) before the runs: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
for name in $TARGETS; do
    [ -n "${PORT[$name]:-}" ] || { say "unknown target '$name'"; exit 1; }
    say "$name: $RATE publishes/s for ${DURATION}s (load $(cut -d' ' -f1 /proc/loadavg))"
    run_bench "$name" "$RATE" "$DURATION" "$WARMUP" "$DRAIN" "$TMP/fixed-$name.json"
done
for name in $TARGETS; do
    for rate in $RAMP; do
        say "$name: ramp step $rate publishes/s for ${RAMP_DURATION}s"
        run_bench "$name" "$rate" "$RAMP_DURATION" 1 2 "$TMP/ramp-$name-$rate.json"
        python3 scripts/bench_peers_report.py --sustained "$TMP/ramp-$name-$rate.json" || break
    done
done
say "machine load (1, 5, 15 min) after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"

status=0
python3 scripts/bench_peers_report.py --dir "$TMP" --targets "$TARGETS" --ramp "$RAMP" || status=$?
exit "$status"
