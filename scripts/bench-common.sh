# Sourced by scripts/bench.sh and scripts/bench-peers.sh (not run on its own): the repository as the working
# folder, the Swift toolchain on PATH, the release build of the stages and switchyard-bench, and free ports.
#
#   BENCH_SKIP_BUILD=1   use the executables already built (SWITCHYARD_BIN, default .build/release)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
if [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi
BIN="${SWITCHYARD_BIN:-$REPO/.build/release}"

# Builds the stages and switchyard-bench the same way as `make build` (the local librdkafka through pkg-config and
# rpath), so nothing is built twice. $1 names the caller in its messages.
build_bench_products() {
    local who=$1 product link=()
    [ -n "${BENCH_SKIP_BUILD:-}" ] && return 0
    if [ -d "$REPO/.deps/librdkafka/lib/pkgconfig" ]; then
        export PKG_CONFIG_PATH="$REPO/.deps/librdkafka/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
        link=(-Xlinker -rpath -Xlinker "$REPO/.deps/librdkafka/lib")
    fi
    for product in ws-ingress router cache fanout switchyard-bench; do
        echo "$who: building $product (release)" >&2
        swift build -c release --product "$product" "${link[@]}" 2>&1 | grep -Ev '^(\[[0-9]+/[0-9]+\]|Building for|Compiling|Write|Planning)' >&2 || true
        [ -x "$BIN/$product" ] || { echo "$who: $BIN/$product missing after the build" >&2; exit 1; }
    done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
