# shellcheck shell=bash
# Shared helpers for the benchmark scripts (sourced, not run).

# median < numbers
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# ratio A B -> A/B with two decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# pct A B -> relative difference of A against B
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.2f%%", (a - b) * 100 / b }'; }

# secs S -> S seconds for a table: three decimals below one second, two above
secs() { awk -v d="$1" 'BEGIN { printf (d < 1 ? "%.3f" : "%.2f"), d }'; }

# elapsed START END -> seconds between two `date +%s.%N` stamps, as secs prints them
elapsed() { secs "$(awk -v s="$1" -v e="$2" 'BEGIN { printf "%.6f", e - s }')"; }

# wall_time CMD... -> seconds of one run (as secs prints them); the command's
# output is discarded. When the command fails, prints its status and the end
# of its output on stderr and fails: a failed run is never timed.
wall_time() {
    local s e rc=0 log
    log=$(mktemp)
    s=$(date +%s.%N)
    "$@" >"$log" 2>&1 || rc=$?
    e=$(date +%s.%N)
    if [ "$rc" -ne 0 ]; then
        printf 'bench: "%s" failed (exit %d); its last output:\n' "$*" "$rc" >&2
        tail -n 30 "$log" >&2
        rm -f "$log"
        return "$rc"
    fi
    rm -f "$log"
    elapsed "$s" "$e"
}

# write_section NAME TEXT: replaces <!-- NAME:begin -->…<!-- NAME:end --> in
# BENCHMARKS.md, or appends it.
write_section() {
    local name=$1 text=$2
    if [ -f BENCHMARKS.md ] && grep -q "<!-- $name:begin -->" BENCHMARKS.md; then
        python3 - "$name" "$text" <<'PY'
import re, sys
name, text = sys.argv[1], sys.argv[2]
doc = open("BENCHMARKS.md").read()
doc = re.sub(r"<!-- %s:begin -->.*?<!-- %s:end -->" % (name, name), lambda m: text, doc, flags=re.S)
open("BENCHMARKS.md", "w").write(doc)
PY
    else
        [ -f BENCHMARKS.md ] || printf '# Benchmarks\n\nEach section is written by the script it names; ratios matter more than seconds on this noisy machine.\n\n' >BENCHMARKS.md
        printf '\n%s\n' "$text" >>BENCHMARKS.md
    fi
    printf '%s\n' "$text"
}

# bench_setup NAME: brings the dev environment up, sources its env file,
# builds kiln in release; sets $kiln and a scratch $work removed on exit.
bench_setup() {
    # One benchmark at a time: two would share the CPU, and each one's
    # cleanup removes the other's containers and volumes.
    exec 8>/var/tmp/kiln-bench.lock
    flock -n 8 || { echo "bench: another benchmark is running (/var/tmp/kiln-bench.lock)" >&2; exit 1; }
    scripts/dev-env.sh up >/dev/null 2>&1 || scripts/dev-env.sh up
    . "${KILN_DEV_STATE:-$HOME/.cache/kiln-dev}/env"
    cargo build --release --locked --quiet
    kiln=$PWD/target/release/kiln
    work=$(mktemp -d "/var/tmp/kiln-bench-$1.XXXXXX")
    trap 'rm -rf "$work"' EXIT
}
