#!/usr/bin/env bash
# Runs a libFuzzer target of fuzzing/ (see docs/RELIABILITY.md).
#
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer args...]   TARGET: client-frame | envelope | ws-chain | mqtt-decoder | all
#
# Builds the fuzz package (cached in fuzzing/.build; the first build compiles SwiftNIO with the sanitizers and takes
# minutes), then fuzzes from a temporary copy of the committed seed corpus fuzzing/corpus/TARGET (which never grows)
# for SECONDS. Prints one line per target, `fuzz TARGET: N runs, 0 crashes`, and exits non-zero on a crash,
# naming the crashing input (kept under fuzzing/.build/crashes/TARGET).
# FUZZ_SKIP_BUILD=1 skips the build; FUZZ_KEEP_LOG=1 keeps libFuzzer's log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzzing"
TARGETS=(client-frame envelope ws-chain mqtt-decoder)

usage() { echo "usage: $0 {${TARGETS[*]// /|}|all} SECONDS [libFuzzer args...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
TARGET=$1; SECONDS_EACH=$2; shift 2
[[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || usage
if [ "$TARGET" = all ]; then
    selected=("${TARGETS[@]}")
else
    [[ " ${TARGETS[*]} " == *" $TARGET "* ]] || usage
    selected=("$TARGET")
fi

if [ -x /opt/swift/usr/bin/swift ]; then export PATH=/opt/swift/usr/bin:$PATH; fi
# --sanitize instruments the C targets (llhttp, the SHA-1 of the upgrade); for Swift it passes -sanitize=fuzzer and
# -sanitize=address as two flags, of which swiftc keeps only the last (no coverage): -Xswiftc, which comes after,
# gives both at once. -enable-testing lets the ws-chain target reach the ingress's internal types.
BUILD_FLAGS=(-c release --package-path "$FUZZ" --scratch-path "$FUZZ/.build"
             --sanitize fuzzer --sanitize address -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing)
if [ "${FUZZ_SKIP_BUILD:-0}" != 1 ]; then
    mkdir -p "$FUZZ/.build"; started=$(date +%s)
    if ! swift build "${BUILD_FLAGS[@]}" > "$FUZZ/.build/build-log.txt" 2>&1; then
        tail -40 "$FUZZ/.build/build-log.txt" >&2
        echo "fuzz: the build failed (log: fuzzing/.build/build-log.txt)" >&2
        exit 1
    fi
    echo "fuzz: build took $(( $(date +%s) - started )) s"
fi
BIN="$(swift build "${BUILD_FLAGS[@]}" --show-bin-path)"

failed=0
for target in "${selected[@]}"; do
    work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-fuzz-$target.XXXXXX")
    cp -r "$FUZZ/corpus/$target" "$work/corpus"
    crashes="$FUZZ/.build/crashes/$target"
    mkdir -p "$crashes"
    dict=()
    [ -f "$FUZZ/dict/$target.dict" ] && dict=("-dict=$FUZZ/dict/$target.dict")
    log="$work/libfuzzer.log"
    status=0
    # Fuzzing takes one core: -workers/-jobs stay at 1 on a shared machine.
    "$BIN/fuzz-$target" "$work/corpus" "${dict[@]}" -max_total_time="$SECONDS_EACH" \
        -artifact_prefix="$crashes/" -print_final_stats=1 "$@" > "$log" 2>&1 || status=$?
    runs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
    if [ -z "$runs" ]; then
        runs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    fi
    artifact=$(grep -oE "(crash|leak|timeout|oom|slow-unit)-[0-9a-f]+" "$log" | tail -1 || true)
    if [ "$status" -eq 0 ]; then
        echo "fuzz $target: ${runs:-0} runs, 0 crashes"
        [ "${FUZZ_KEEP_LOG:-0}" = 1 ] && echo "  log: $log" || rm -rf "$work"
    else
        failed=1
        grep -E "ERROR: |SUMMARY: |Fatal error|precondition" "$log" | head -5 >&2 || true
        echo "fuzz $target: ${runs:-?} runs, 1 crash (exit $status): input ${artifact:+$crashes/$artifact}; log: $log"
    fi
done
exit $failed
