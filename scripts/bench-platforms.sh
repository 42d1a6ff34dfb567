#!/usr/bin/env bash
# Two-platform build of examples/with-deps (linux/amd64 + linux/arm64, one
# index) against two single-platform kiln builds, every run from cold
# caches: a new KILN_CACHE_DIR (no input cache, no fetch marker) and no kiln
# cache volumes on the engine. Same pinned builder (the dev-env one, by
# digest). Writes the "platforms" section of BENCHMARKS.md.
#   scripts/bench-platforms.sh        (RUNS=N for more runs; median reported)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
RUNS=${RUNS:-1}
bench_setup platforms
copy() { (cd examples/with-deps && tar --exclude=./target --exclude=./kiln.lock -cf - .) | (mkdir -p "$1" && tar -xf - -C "$1"); }
copy "$work/kiln"
{ printf "[build]\nbuilder = \"%s\"\n" "$KILN_TEST_BUILDER_PINNED"; cat "$work/kiln/kiln.toml"; } >"$work/kiln/kiln.toml.new" && mv "$work/kiln/kiln.toml.new" "$work/kiln/kiln.toml"
docker=${DOCKER:-docker}
# cold: nothing of kiln's left to answer from.
cold() {
    # Stopped build containers of kiln's (from an interrupted run) hold volumes.
    "$docker" ps -aq --filter label=dev.kiln.owner --filter status=exited | xargs -r "$docker" rm -f >/dev/null
    "$docker" volume ls -q --filter label=dev.kiln.owner=cache | xargs -r "$docker" volume rm -f >/dev/null
    export KILN_CACHE_DIR=$work/cache-$(date +%s%N)
}
kb_json() { local out=$1; shift; (cd "$work/kiln" && "$kiln" build --json "$@" >"$out"); }
expect_miss() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["cache"]=="miss" else 1)' "$1" ||
        { echo "bench: $2 was answered from a cache" >&2; exit 1; }
}
: >"$work/two"; : >"$work/sum"
for i in $(seq "$RUNS"); do
    cold
    wall_time kb_json "$work/r.json" --platform linux/amd64 --platform linux/arm64 >>"$work/two"; echo >>"$work/two"
    expect_miss "$work/r.json" "the two-platform build (run $i)"
    cold
    a=$(wall_time kb_json "$work/a.json" --platform linux/amd64)
    expect_miss "$work/a.json" "the amd64 build (run $i)"
    cold
    b=$(wall_time kb_json "$work/b.json" --platform linux/arm64)
    expect_miss "$work/b.json" "the arm64 build (run $i)"
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f\n", a + b }' >>"$work/sum"
    echo "$a" >>"$work/amd64"; echo "$b" >>"$work/arm64"
done
two=$(grep -v '^$' "$work/two" | median)
sum=$(median <"$work/sum")
amd=$(median <"$work/amd64")
arm=$(median <"$work/arm64")
write_section platforms "<!-- platforms:begin -->
## Two platforms in one build (\`scripts/bench-platforms.sh\`)

$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), RUNS=$RUNS (median), examples/with-deps (tokio, serde, serde_json),
every build from cold caches (new KILN_CACHE_DIR, kiln's cache volumes removed), builder by digest.

| build | seconds | ratio |
| --- | --- | --- |
| \`kiln build --platform linux/amd64 --platform linux/arm64\` (one index) | $two | $(ratio "$two" "$sum")× the sum |
| \`kiln build --platform linux/amd64\` | $amd | |
| \`kiln build --platform linux/arm64\` (cross-compiled) | $arm | |
| sum of the two single-platform builds | $sum | 1.00× |

The two-platform build fetches once and shares the target volume, so build scripts and proc macros
compile once. BuildKit was not measured: the engine here (Docker 20.10 from Debian) is driven by a
docker CLI without the buildx component, so \`docker build\` falls back to the legacy builder, which
cannot build for two platforms in one build.
<!-- platforms:end -->"
