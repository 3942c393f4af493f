#!/usr/bin/env bash
# Real programs with libhakmem.so preloaded, each compared with the same run
# on the C library's allocator: exit status 0 in both, identical standard
# output, identical standard error (hakmem's own `hakmem:` lines aside), and a
# HAKMEM_STATS line from the expected program proving hakmem served it.
#
#   os-linux/cabi/tests/preload.sh            # builds the library if needed
#   HAKMEM_LIB=/path/libhakmem.so ...         # test another build
#   PRELOAD_SUITE=0 ...                       # skip the preloaded test suite
#   PRELOAD_SUITE_ARGS=--release ...          # cargo test arguments for it
#
# Needs: gcc, g++, python3, git, coreutils (sort, sha256sum, timeout).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PROGS=$ROOT/os-linux/cabi/tests/programs
LIB=${HAKMEM_LIB:-$ROOT/target/release/libhakmem.so}
if [ -z "${HAKMEM_LIB:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p hakmem-cabi) || exit 1
fi
[ -f "$LIB" ] || { echo "preload: no $LIB" >&2; exit 1; }
LIB=$(cd "$(dirname "$LIB")" && pwd)/$(basename "$LIB")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hakmem-preload.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failures=()
fail() {
    echo "FAIL $1: $2" >&2
    [[ " ${failures[*]} " == *" $1 "* ]] || failures+=("$1")
}

# The real interpreter behind any pyenv-style shim, so that the comparison
# runs python itself rather than a shell script around it.
PY=$(python3 -c 'import sys; print(sys.executable)')

# marker STATS PROG: the stats file has a line from PROG with a heap in use
# and no foreign frees.
marker() {
    grep -Eq "^hakmem: pid=[0-9]+ prog=$2 heaps=[1-9][0-9]* .* foreign_frees=0\$" "$1" 2>/dev/null
}

# check NAME PROG COMMAND...: run COMMAND (in a fresh directory) on glibc and
# preloaded, and compare. PROG is the program name the stats line must name.
check() {
    local name=$1 prog=$2
    shift 2
    local d=$WORK/$name start=$SECONDS
    mkdir -p "$d/glibc" "$d/hakmem"
    (cd "$d/glibc" && exec timeout 1200 "$@") >"$d/glibc.out" 2>"$d/glibc.err"
    echo $? >"$d/glibc.rc"
    # Strict: a free of a pointer hakmem never returned aborts the program.
    (cd "$d/hakmem" && exec env LD_PRELOAD="$LIB" HAKMEM_STATS="$d/stats" \
        HAKMEM_STRICT="${STRICT:-1}" timeout 1200 "$@") >"$d/hakmem.out" 2>"$d/hakmem.err"
    echo $? >"$d/hakmem.rc"
    local ok=1
    for m in glibc hakmem; do
        if [ "$(cat "$d/$m.rc")" != 0 ]; then
            fail "$name" "exit status $(cat "$d/$m.rc") on $m; stderr:"
            tail -20 "$d/$m.err" >&2
            ok=0
        fi
    done
    if [ ! -s "$d/glibc.out" ]; then
        fail "$name" "no output to compare"
        ok=0
    fi
    if ! cmp -s "$d/glibc.out" "$d/hakmem.out"; then
        fail "$name" "standard output differs"
        diff "$d/glibc.out" "$d/hakmem.out" | head -20 >&2
        ok=0
    fi
    if ! diff -q <(grep -v '^hakmem: ' "$d/glibc.err") <(grep -v '^hakmem: ' "$d/hakmem.err") >/dev/null; then
        fail "$name" "standard error differs"
        diff <(grep -v '^hakmem: ' "$d/glibc.err") <(grep -v '^hakmem: ' "$d/hakmem.err") | head -20 >&2
        ok=0
    fi
    if ! marker "$d/stats" "$prog"; then
        fail "$name" "no hakmem stats line from $prog (was hakmem in use?)"
        cat "$d/stats" >&2 2>/dev/null
        ok=0
    fi
    [ $ok = 1 ] && echo "ok   $name ($((SECONDS - start)) s, $(wc -l <"$d/stats") hakmem processes)"
}

# --- The marker check catches a silent fallback to the C library ----------
d=$WORK/fallback
mkdir -p "$d"
LD_PRELOAD=/nonexistent/libhakmem.so HAKMEM_STATS=$d/stats sort /dev/null 2>/dev/null
LD_PRELOAD=$LIB HAKMEM_STATS=$d/stats-real sort /dev/null
if marker "$d/stats" sort || ! marker "$d/stats-real" sort; then
    fail fallback "the marker check does not tell hakmem from the C library"
else
    echo "ok   fallback (a run without hakmem is detected)"
fi

# --- Scripting languages ----------------------------------------------------
export PYTHONHASHSEED=0
check python-dict "$(basename "$PY")" "$PY" "$PROGS/dict.py" 300000
check python-threads "$(basename "$PY")" "$PY" "$PROGS/threads.py" 20000

# --- sort of a few MB -------------------------------------------------------
"$PY" - >"$WORK/lines.txt" <<'EOF'
import random
r = random.Random(42)
for i in range(250000):
    print("%s %d" % ("".join(r.choice("abcdefgh") for _ in range(r.randint(1, 20))), r.randint(0, 10**9)))
EOF
check sort sort bash -c '
    export LC_ALL=C
    sort "$1" | sha256sum
    sort -k2,2n -k1,1 "$1" | sha256sum
    sort -u -S 1M --parallel=2 -T . "$1" | sha256sum' _ "$WORK/lines.txt"

# --- git on a temporary repository ------------------------------------------
check git git bash -c '
    set -e
    export HOME=$PWD/home GIT_CONFIG_NOSYSTEM=1 \
        GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.org GIT_AUTHOR_DATE=2020-01-01T00:00:00Z \
        GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.org GIT_COMMITTER_DATE=2020-01-01T00:00:00Z
    mkdir home repo && cd repo
    git init -q -b main
    git config pack.threads 1
    git config gc.autoDetach false
    for i in $(seq 1 200); do seq $i $((i * 50)) > f$i.txt; done
    git add -A && git commit -q -m first
    for i in $(seq 1 200 | sed -n "1~3p"); do echo changed >> f$i.txt; done
    git rm -q f8.txt
    git commit -qam second
    git checkout -q -b topic
    seq 1 1000 > new.txt && git add new.txt && git commit -qm topic
    git checkout -q main
    git merge -q --no-edit topic
    git log --graph --stat --format="%H %s"
    git diff HEAD~2 --stat | tail -1
    git gc -q
    git fsck --no-progress --full
    git count-objects -v | grep -E "^(count|in-pack|packs):"
    git archive HEAD | sha256sum
    git status --porcelain'

# --- gcc compiling a C file ---------------------------------------------------
"$PY" - >"$WORK/big.c" <<'EOF'
print("#include <stdio.h>")
for i in range(1500):
    print(f"static int f{i}(int x) {{ int s = 0; for (int j = 0; j < x % {i + 7}; j++) s += j * {i}; return s ^ x; }}")
print("int main(void) { long t = 0;")
for i in range(1500):
    print(f"  t += f{i}({i});")
print('  printf("%ld\\n", t); return 0; }')
EOF
check gcc cc1 bash -c 'gcc -O2 -c "$1" -o big.o && gcc big.o -o big && ./big && sha256sum big.o' _ "$WORK/big.c"

# --- cargo ----------------------------------------------------------------------
check cargo-version cargo cargo --version

# --- C and C++ programs written for these tests --------------------------------
BIN=$WORK/bin
mkdir -p "$BIN"
gcc -O2 -pthread "$PROGS/fork.c" -o "$BIN/fork" &&
    gcc -O2 -pthread "$PROGS/threads.c" -o "$BIN/threads" &&
    gcc -O2 -pthread "$PROGS/dlopen.c" -o "$BIN/dlopen" -ldl &&
    g++ -O2 -std=c++17 "$PROGS/cxx.cpp" -o "$BIN/cxx" || fail build "test programs"
check cxx cxx "$BIN/cxx"
check fork fork "$BIN/fork"
check threads threads "$BIN/threads"
# Heaps of exited threads are reused: 1000 threads, at most 4 at a time.
heaps=$(grep -o 'prog=threads heaps=[0-9]*' "$WORK/threads/stats" | grep -o '[0-9]*$')
if [ -z "$heaps" ] || [ "$heaps" -gt 8 ]; then
    fail threads-heaps "heaps of exited threads not reused ($heaps heaps for 4 threads at a time)"
else
    echo "ok   threads-heaps ($heaps heaps for 1000 threads, 4 at a time)"
fi

# Linked (-lhakmem) rather than preloaded: the C++ program, compared with
# its glibc run above.
LIBDIR=$(dirname "$LIB")
d=$WORK/linked
mkdir -p "$d"
if g++ -O2 -std=c++17 "$PROGS/cxx.cpp" -o "$BIN/cxx-linked" -L"$LIBDIR" -Wl,--no-as-needed \
    -lhakmem -Wl,--as-needed -Wl,-rpath,"$LIBDIR" &&
    HAKMEM_STATS=$d/stats HAKMEM_STRICT=1 timeout 300 "$BIN/cxx-linked" >"$d/out" &&
    cmp -s "$d/out" "$WORK/cxx/glibc.out" && marker "$d/stats" cxx-linked; then
    echo "ok   linked"
else
    fail linked "the C++ program linked with -lhakmem"
    cat "$d/out" "$d/stats" >&2
fi

# dlopen'ed late rather than preloaded (expects one foreign free, by design).
d=$WORK/dlopen-late
mkdir -p "$d"
if out=$(HAKMEM_STATS=$d/stats timeout 300 "$BIN/dlopen" "$LIB" 2>"$d/err") &&
    [ "$out" = $'glibc still allocates\ndlopen: 5 threads ok' ] &&
    grep -Eq '^hakmem: pid=[0-9]+ prog=dlopen heaps=[1-9].* foreign_frees=1$' "$d/stats"; then
    echo "ok   dlopen-late"
else
    fail dlopen-late "output: $out"
    cat "$d/err" "$d/stats" >&2
fi

# --- The project's own test suite, preloaded ------------------------------------
if [ "${PRELOAD_SUITE:-1}" != 0 ]; then
    # Not strict: the cabi crate's tests free a foreign pointer on purpose
    # (through their own copy of hakmem, which reads the same variable).
    STRICT=0 check test-suite cargo bash -c '
        cd "$1" && shift && cargo test --workspace --color never "$@" 2>&1 |
            grep -E "^test .* \.\.\. " | sort
        exit "${PIPESTATUS[0]}"' _ "$ROOT" ${PRELOAD_SUITE_ARGS:-}
fi

if [ ${#failures[@]} != 0 ]; then
    echo "preload: ${#failures[@]} failed: ${failures[*]}" >&2
    exit 1
fi
echo "preload: all passed"
