#!/usr/bin/env bash
# Loom models of hakmem-core's cross-thread protocols (core/tests/loom.rs;
# the table is in docs/VERIFICATION.md).
#
#   core/loom.sh                     every model, LOOM_MAX_PREEMPTIONS=2 (what CI runs)
#   core/loom.sh MODEL [N]           one model (e.g. remote_free) with N preemptions (default 3)
#   core/loom.sh --bugs [BUG...]     every injected bug (or those named) against the models
#                                    that must catch it; fails unless each is caught
#   core/loom.sh --bug BUG [MODEL]   one injected bug (e.g. relaxed-push), every model or one
#
# For example, `core/loom.sh thread_exit_adopt 4` explores that model with up
# to four preemptions; `LOOM_MAX_PREEMPTIONS=3 core/loom.sh` runs them all
# with three; `HAKMEM_LOOM_EXHAUSTIVE=1 core/loom.sh MODEL` lifts the bound
# (every interleaving: can take hours).
#
# Loom builds use their own target directory (RUSTFLAGS differ from a plain
# build, so sharing one would rebuild everything each time). Other LOOM_*
# variables pass through: LOOM_LOCATION=1 names the source lines of a
# failure, LOOM_LOG=trace narrates the failing execution, LOOM_MAX_BRANCHES
# and LOOM_MAX_DURATION bound a long run.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="--cfg hakmem_loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"

cargo_test() { # features, cargo/test args...
    local features="$1"
    shift
    ${LIMIT:+timeout "$LIMIT"} cargo test -p hakmem-core --release --features "test-util$features" --test loom "$@"
}

# The models that must fail with each injected bug (others may fail too).
declare -A CATCHES=(
    [relaxed-push]="remote_free remote_free_both_ways shared_heap"
    [racy-push]=two_remote_freers
    [skip-reflag]=remote_mask
    [drop-pending]=mid_transfer_budget
    [drop-delta]=tiny_heap_delta_flush
    [early-abandon]="thread_exit_adopt thread_exit_collect"
    [unlocked-pool]=pool_shared_segment
    [late-large-read]=large_cache
)

case "${1:-}" in
"")
    LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" cargo_test "" -- --nocapture --test-threads 1
    ;;
--bugs)
    shift
    failed=0
    bugs="${*:-$(printf '%s\n' "${!CATCHES[@]}" | sort)}"
    for bug in $bugs; do
        models="${CATCHES[$bug]:?unknown bug $bug}"
        # A build failure must not pass for a caught bug: build first.
        if ! cargo_test ",loom-bug-$bug" --no-run 2>/tmp/loom-build.$$; then
            cat /tmp/loom-build.$$
            printf 'BUILD FAILED: loom-bug-%s\n' "$bug"
            failed=1
            continue
        fi
        for model in $models; do
            printf '=== loom-bug-%s must fail %s\n' "$bug" "$model"
            start=$(date +%s.%N)
            # With a time limit: after some failures the test process hangs at
            # exit (a panic hook left locked), and the panic is all we need.
            if out=$(LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" LIMIT=300 cargo_test ",loom-bug-$bug" -- --exact "$model" --nocapture 2>&1); then
                printf 'NOT CAUGHT: loom-bug-%s passed %s\n' "$bug" "$model"
                failed=1
            elif grep -q "panicked at" <<<"$out"; then
                # The panic message says how it was caught.
                printf '    caught (%.1fs):\n' "$(echo "$(date +%s.%N) - $start" | bc)"
                grep -A1 -m1 "panicked at" <<<"$out" | sed 's/^/    /'
            else
                printf '%s\nFAILED WITHOUT A PANIC: loom-bug-%s (see above)\n' "$out" "$bug"
                failed=1
            fi
        done
    done
    rm -f /tmp/loom-build.$$
    exit "$failed"
    ;;
--bug)
    bug="${2:?usage: core/loom.sh --bug BUG [MODEL]}"
    shift 2
    LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" cargo_test ",loom-bug-$bug" -- --nocapture --test-threads 1 ${1:+--exact "$1"}
    ;;
-*)
    sed -n '2,20p' "$0"
    exit 2
    ;;
*)
    LOOM_MAX_PREEMPTIONS="${2:-3}" cargo_test "" -- --nocapture --exact "$1"
    ;;
esac
