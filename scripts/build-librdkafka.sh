#!/usr/bin/env bash
# Builds librdkafka >= 2.2 into <repo>/.deps/librdkafka when the machine lacks it.
#
# Debian 12's librdkafka is 2.0.2, which skips tagged protocol fields wrongly (confluentinc/librdkafka
# pull 4278) and cannot complete ApiVersions with current brokers such as Tansu. This script builds
# Debian trixie's librdkafka source package (C library only) into a local prefix:
#
#   .deps/librdkafka/{include,lib,lib/pkgconfig/rdkafka.pc}
#
# The Swift build then uses
#   PKG_CONFIG_PATH=<repo>/.deps/librdkafka/lib/pkgconfig
#   swift build -Xlinker -rpath -Xlinker <repo>/.deps/librdkafka/lib
# and Debian's kcat (installed here too) works when run with LD_LIBRARY_PATH=<repo>/.deps/librdkafka/lib.
#
# One patch is applied (patch_metadata_null_topic below): librdkafka (2.8, and still 2.16 as shipped in the
# confluent-kafka wheel) crashes (NULL strcmp in rd_kafka_metadata_update_op) when a Fetch response without
# topic ids carries KIP-951 leader-discovery tags, which Tansu sends once a consumed topic is deleted: every
# consumer of that topic would segfault. The patched build skips such entries. The system's librdkafka, even
# when new enough, is therefore not used.
#
# Idempotent: does nothing when the local build is already >= 2.2 with the current patches.
# Needs root for apt-get (uses sudo when not root). Options:
#   --no-kcat   do not install Debian's kcat
#   --force     rebuild even when a good build exists
set -euo pipefail

MIN_VERSION=2.2
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$REPO/.deps/librdkafka"
SRC_ROOT="$REPO/.deps/src"
PC_FILE="$PREFIX/lib/pkgconfig/rdkafka.pc"
# Names the patches of this build; a build without this exact stamp is rebuilt.
BUILD_ID="switchyard-librdkafka-1 patches: metadata-null-topic"
STAMP="$PREFIX/switchyard-build.txt"
SOURCES_FILE=/etc/apt/sources.list.d/switchyard-trixie-src.sources

WANT_KCAT=1
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --no-kcat) WANT_KCAT=0 ;;
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "build-librdkafka: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { echo "build-librdkafka: $*" >&2; }

# version_ge A B: true when version A >= version B.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

pc_version() { sed -n 's/^Version:[[:space:]]*//p' "$1" 2>/dev/null | head -n1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="__no_root__"; fi
fi
as_root() {
    if [ "$SUDO" = "__no_root__" ]; then
        log "needs root (or sudo) to run: $*"; exit 1
    fi
    $SUDO "$@"
}

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
}

# Installs the named Debian packages that are not installed yet.
apt_install() {
    local missing=()
    local p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_update
        log "apt-get install ${missing[*]}"
        as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

ensure_kcat() {
    [ "$WANT_KCAT" -eq 1 ] || return 0
    apt_install kcat
}

# ---------------------------------------------------------------------------------------------
# 1. Already good?
if [ "$FORCE" -eq 0 ]; then
    if [ -f "$PC_FILE" ]; then
        have="$(pc_version "$PC_FILE")"
        # The .pc names absolute paths: a tree copied or moved elsewhere must rebuild.
        if [ -n "$have" ] && version_ge "$have" "$MIN_VERSION" && [ -e "$PREFIX/lib/librdkafka.so.1" ] \
            && grep -qx "prefix=$PREFIX" "$PC_FILE" && [ "$(cat "$STAMP" 2>/dev/null)" = "$BUILD_ID" ]; then
            ensure_kcat
            log "librdkafka $have already built in $PREFIX"
            echo "$have"
            exit 0
        fi
    fi
fi

# Applied in the unpacked source tree (patch -p1).
patch_metadata_null_topic() {
    cat <<'PATCH'
--- a/src/rdkafka_metadata.c
+++ b/src/rdkafka_metadata.c
@@ -2008,6 +2008,11 @@
                             rk, mdi->topics[i].topic_id, 1);
                         topic_id = mdi->topics[i].topic_id;
                 } else {
+                        /* Leader discovery from a Fetch response without
+                         * topic ids (Fetch <= v12) names no topic: skip it
+                         * rather than look up a NULL name. */
+                        if (!md->topics[i].topic)
+                                continue;
                         rkmce = rd_kafka_metadata_cache_find(
                             rk, md->topics[i].topic, 1);
                         topic = md->topics[i].topic;
PATCH
}

# ---------------------------------------------------------------------------------------------
# 2. Build dependencies and the trixie deb-src entry.
apt_install build-essential pkg-config dpkg-dev patch ca-certificates debian-archive-keyring \
    libssl-dev zlib1g-dev libzstd-dev

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
if [ ! -f "$SOURCES_FILE" ]; then
    log "adding deb-src for Debian trixie: $SOURCES_FILE"
    as_root tee "$SOURCES_FILE" >/dev/null <<EOF
# Added by switchyard scripts/build-librdkafka.sh: source packages only, to build librdkafka >= 2.2.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: $KEYRING
EOF
    APT_UPDATED=0
fi
# The source index must be present: update when apt knows no trixie source of librdkafka yet.
if ! apt-cache showsrc librdkafka 2>/dev/null | grep -q '^Version: 2\.\([2-9]\|[1-9][0-9]\)'; then
    APT_UPDATED=0
    apt_update
fi

# ---------------------------------------------------------------------------------------------
# 3. Fetch, configure, build, install (C library only).
mkdir -p "$SRC_ROOT"
WORK="$(mktemp -d "$SRC_ROOT/librdkafka.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

log "apt-get source librdkafka/trixie into $WORK"
(cd "$WORK" && apt-get source -qq librdkafka/trixie >/dev/null 2>"$WORK/apt-source.log") || {
    cat "$WORK/apt-source.log" >&2; log "apt-get source failed"; exit 1; }
SRC_DIR="$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'librdkafka-*' | head -n1)"
[ -n "$SRC_DIR" ] || { log "no unpacked source directory in $WORK"; exit 1; }
log "building $(basename "$SRC_DIR") (C library only)"

cd "$SRC_DIR"
if ! patch_metadata_null_topic | patch -p1 --forward --quiet >"$WORK/patch.log" 2>&1; then
    cat "$WORK/patch.log" >&2
    log "the metadata-null-topic patch does not apply to $(basename "$SRC_DIR"): update it in $0"
    exit 1
fi
# lz4 is bundled with librdkafka; zstd, zlib and OpenSSL come from the -dev packages above.
./configure --prefix="$PREFIX" \
    --disable-sasl --disable-gssapi --disable-curl \
    --enable-ssl --enable-zlib --enable-zstd \
    --disable-lz4-ext \
    >"$WORK/configure.log" 2>&1 || { tail -n 40 "$WORK/configure.log" >&2; log "configure failed"; exit 1; }

JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
make -j"$JOBS" -C src >"$WORK/make.log" 2>&1 || { tail -n 40 "$WORK/make.log" >&2; log "make failed"; exit 1; }

# Install into a staging tree, then swap it in: a build running meanwhile never sees a half-installed prefix.
STAGE="$WORK/stage"
make -C src install DESTDIR="$STAGE" >"$WORK/install.log" 2>&1 || {
    tail -n 40 "$WORK/install.log" >&2; log "make install failed"; exit 1; }
[ -f "$STAGE$PC_FILE" ] || { log "make install put no rdkafka.pc under $STAGE$PREFIX"; exit 1; }
echo "$BUILD_ID" >"$STAGE$STAMP"
mkdir -p "$(dirname "$PREFIX")"
rm -rf "$PREFIX.old"
if [ -e "$PREFIX" ]; then mv "$PREFIX" "$PREFIX.old"; fi
mv "$STAGE$PREFIX" "$PREFIX"
rm -rf "$PREFIX.old"

have="$(pc_version "$PC_FILE")"
if [ -z "$have" ] || ! version_ge "$have" "$MIN_VERSION"; then
    log "built librdkafka but $PC_FILE reports version '${have}'"; exit 1
fi

ensure_kcat
log "librdkafka $have installed in $PREFIX"
echo "$have"
