#!/usr/bin/env bash
# Installs what Switchyard needs to build and test, and nothing that is already there.
#
#   - Debian packages (apt-get update + install only when one is missing)
#   - the Python venv for the tests at <repo>/.venv (re-installed only when requirements-dev.txt changes)
#   - librdkafka >= 2.2 into <repo>/.deps/librdkafka via scripts/build-librdkafka.sh (when that script exists)
#
# Idempotent and quiet: a second run on a ready machine takes about a second and prints one line.
# Works as root on a fresh Debian 12 with Swift at /opt/swift (or swift on PATH).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# --- Swift -------------------------------------------------------------------------------------------
if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        export PATH="/opt/swift/usr/bin:$PATH"
    else
        die "swift not found on PATH nor at /opt/swift/usr/bin/swift; install Swift 6.x first"
    fi
fi

# --- Debian packages ---------------------------------------------------------------------------------
# libssl-dev, libnanomsg-dev: linked by the stages; pkg-config: SwiftPM finds them through it.
# python3, python3-venv: the test venv. librdkafka >= 2.2 is not in Debian 12: scripts/build-librdkafka.sh
# (below) builds it and installs what that build needs. chromium, chromium-driver: the browser tests of the
# JavaScript client and the demo page (tests/e2e/test_client_browser.py, headless). mosquitto-clients:
# mosquitto_pub / mosquitto_sub of the MQTT tests (tests/e2e/test_mqtt.py). mosquitto, nats-server: the peers
# of scripts/bench-peers.sh and its smoke test (tests/e2e/test_bench_peers_smoke.py).
APT_PACKAGES=(
    libssl-dev libnanomsg-dev pkg-config openssl
    python3 python3-venv python3-pip ca-certificates
    chromium chromium-driver
    mosquitto-clients
    mosquitto nats-server
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "missing Debian packages (${missing[*]}) and not root (no sudo)"
        SUDO="sudo"
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    log="$(mktemp)"
    if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "apt-get failed installing: ${missing[*]}"
    fi
    rm -f "$log"
fi

# --- Python venv for the tests -----------------------------------------------------------------------
VENV="$ROOT/.venv"
REQ="$ROOT/requirements-dev.txt"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON="$(command -v python3 || true)"; fi
fi
[ -n "$PYTHON" ] || die "python3 not found"
[ -f "$REQ" ] || die "missing $REQ"

want="$( { sha256sum "$REQ" | cut -d' ' -f1; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ] || ! "$VENV/bin/python" -c 'import pytest, websockets' >/dev/null 2>&1; then
    log="$(mktemp)"
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        say "creating Python venv at .venv"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; die "python3 -m venv failed"; }
    fi
    say "installing Python packages from requirements-dev.txt"
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "pip install -r requirements-dev.txt failed"
    fi
    rm -f "$log"
    printf '%s\n' "$want" >"$STAMP"
fi

# --- librdkafka >= 2.2 (built locally when the system's is older) ------------------------------------
if [ -f "$ROOT/scripts/build-librdkafka.sh" ]; then
    bash "$ROOT/scripts/build-librdkafka.sh" || die "scripts/build-librdkafka.sh failed"
fi

say "ok"
