#!/usr/bin/env bash
# Instructions per alloc+free pair, the noise-free measure of an allocator's
# fast path: runs `hakmem-bench fastpath` under `valgrind --tool=callgrind`.
#
#   benches/callgrind.sh [ALLOC...]      (default: hakmem mimalloc jemalloc system sol)
#
# For each allocator and tier (Tiny = 32 B, Mid = 4 KiB) it counts the
# instructions executed inside the harness's call shims (`shim_alloc`,
# `shim_dealloc`: the allocator's `GlobalAlloc` methods and everything they
# call; callgrind's --toggle-collect), so the benchmark loop itself is not
# counted. It does so at two pair counts and takes the difference, which
# removes the allocator's first-use set-up; it then subtracts the same
# difference for a null allocator (which hands out one static buffer), which
# removes the shims' own call overhead. What is left is the allocator's own
# work per pair.
# A third pair count checks that the count grows linearly (it must, for a fast
# path); a non-linear or implausible figure is reported and fails the script.
#
# Output: one line "alloc tier instructions_per_pair" per measurement, after
# "#" comment lines; `hakmem-bench report --callgrind FILE` reads it.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
cargo build --release -q -p hakmem-bench
BIN=target/release/hakmem-bench

ALLOCS=("$@")
[ ${#ALLOCS[@]} -gt 0 ] || ALLOCS=(hakmem mimalloc jemalloc system sol)
N1=${N1:-10000}
N2=${N2:-60000}
N3=${N3:-110000}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# instructions ALLOC TIER PAIRS: instructions (Ir) inside the shims in one run.
instructions() {
    local out="$TMP/cg.$1.$2.$3"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        --toggle-collect='hakmem_bench::workloads::shim_*' \
        "$BIN" fastpath --alloc "$1" --tier "$2" --pairs "$3" >/dev/null 2>"$out.log" \
        || { echo "callgrind.sh: run failed: $1 $2 $3" >&2; cat "$out.log" >&2; exit 1; }
    local ir
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
    [ -n "$ir" ] || { echo "callgrind.sh: no instruction total in $out" >&2; exit 1; }
    echo "$ir"
}

echo "# instructions per alloc+free pair under callgrind (valgrind $(valgrind --version | sed 's/valgrind-//'))"
echo "# inside the GlobalAlloc calls; difference of $N1 and $N3 pairs, less the same for a null allocator; linearity checked at $N2"
echo "# alloc tier per_pair"
status=0
for tier in tiny mid; do
    b1=$(instructions null "$tier" "$N1")
    b2=$(instructions null "$tier" "$N2")
    b3=$(instructions null "$tier" "$N3")
    for a in "${ALLOCS[@]}"; do
        i1=$(instructions "$a" "$tier" "$N1")
        i2=$(instructions "$a" "$tier" "$N2")
        i3=$(instructions "$a" "$tier" "$N3")
        read -r per lo hi <<<"$(awk -v i1="$i1" -v i2="$i2" -v i3="$i3" -v b1="$b1" -v b2="$b2" -v b3="$b3" \
            -v n1="$N1" -v n2="$N2" -v n3="$N3" 'BEGIN {
                per = ((i3 - i1) - (b3 - b1)) / (n3 - n1)
                lo  = ((i2 - i1) - (b2 - b1)) / (n2 - n1)
                hi  = ((i3 - i2) - (b3 - b2)) / (n3 - n2)
                printf "%.2f %.2f %.2f\n", per, lo, hi }')"
        echo "$a $tier $per"
        # Linear growth: both halves agree within 2% (or 0.5 instruction).
        if ! awk -v lo="$lo" -v hi="$hi" 'BEGIN { d = lo - hi; if (d < 0) d = -d; m = (lo > hi ? lo : hi);
                exit !(d <= 0.5 || d <= 0.02 * m) }'; then
            echo "# WARNING: $a $tier is not linear in the pair count ($lo then $hi per pair)" >&2
            status=1
        fi
        # Plausible: a pair of calls costs more than a few instructions, and a
        # fast path well under a thousand.
        if ! awk -v p="$per" 'BEGIN { exit !(p >= 4 && p <= 1000) }'; then
            echo "# WARNING: $a $tier: $per instructions per pair is implausible" >&2
            status=1
        fi
    done
    echo "# null loop: $(awk -v b1="$b1" -v b3="$b3" -v n1="$N1" -v n3="$N3" 'BEGIN { printf "%.2f", (b3 - b1) / (n3 - n1) }') instructions per pair in the shims (subtracted above)"
done
exit $status
