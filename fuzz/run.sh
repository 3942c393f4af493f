#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 60) each, one after the other,
# on a scratch copy of its committed corpus; fail if any target finds a
# crash, a leak or a timeout (libFuzzer exits non-zero and leaves the input
# in fuzz/artifacts/<target>/: add it to fuzz/corpus/<target>/ as a
# regression input once fixed; `cargo test -p hakmem-tests --test
# fuzz_corpus` then runs it on stable).
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(core region cabi)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cargo +nightly fuzz build -O
status=0
for t in "${TARGETS[@]}"; do
    cp -r "corpus/$t" "$TMP/$t"
    echo "fuzz: $t for ${SECS}s"
    if ! cargo +nightly fuzz run -O "$t" "$TMP/$t" -- -max_total_time="$SECS" -max_len=4096 -timeout=30 -detect_leaks=0 \
        >"$TMP/$t.log" 2>&1; then
        echo "fuzz: $t FAILED; last lines of its log:" >&2
        tail -40 "$TMP/$t.log" >&2
        status=1
    else
        grep -E '^Done [0-9]+ runs' "$TMP/$t.log" || tail -1 "$TMP/$t.log"
    fi
done
exit $status
