#!/usr/bin/env bash
# The registry build cache on a "fresh runner": examples/with-deps built
# cold (empty KILN_CACHE_DIR, kiln's cache volumes removed) writing the
# cache (--cache), then on a fresh runner (another empty KILN_CACHE_DIR,
# no engine reachable at all) with a warm registry cache: the hit. Also the
# bytes one entry adds to the registry, and the fleet simulation
# (scripts/fleet-sim.py) over these numbers. Writes the "cache" section of
# BENCHMARKS.md. The dependency layer and BuildKit --cache-from are
# measured on ripgrep by scripts/bench-fleet.sh.
#   scripts/bench-cache.sh        (RUNS=N for more runs; median reported)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
RUNS=${RUNS:-3}
bench_setup cache
(cd examples/with-deps && tar --exclude=./target --exclude=./kiln.lock -cf - .) | (mkdir -p "$work/p" && tar -xf - -C "$work/p")
{ printf "[build]\nbuilder = \"%s\"\n" "$KILN_TEST_BUILDER_PINNED"; cat "$work/p/kiln.toml"; } >"$work/p/t" && mv "$work/p/t" "$work/p/kiln.toml"
field() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); v=r; [v:=v[k] for k in sys.argv[2].split(".")]; print(v)' "$1" "$2"; }
cold() {
    docker ps -aq --filter label=dev.kiln.owner --filter status=exited | xargs -r docker rm -f >/dev/null
    docker volume ls -q --filter label=dev.kiln.owner=cache | xargs -r docker volume rm -f >/dev/null
}
for i in $(seq "$RUNS"); do
    cache="$KILN_REGISTRY/kiln-bench/cache-$$-$i"
    cold
    (cd "$work/p" && KILN_CACHE_DIR=$work/a-$i SOURCE_DATE_EPOCH=1700000000 "$kiln" build --json --cache "$cache" --out "oci:$work/a-out-$i" >"$work/a.json")
    [ "$(field "$work/a.json" cache)" = miss ] || { echo "bench: the cold build was answered from a cache" >&2; exit 1; }
    field "$work/a.json" seconds >>"$work/cold"
    field "$work/a.json" timings.cache-store >>"$work/store"
    (cd "$work/p" && KILN_CACHE_DIR=$work/b-$i DOCKER_HOST=unix://$work/no-engine.sock SOURCE_DATE_EPOCH=1700000000 \
        "$kiln" build --json --cache "$cache" --cache-mode read --out "oci:$work/b-out-$i" >"$work/b.json")
    [ "$(field "$work/b.json" cache_source)" = registry ] || { echo "bench: the fresh runner did not hit the registry" >&2; exit 1; }
    field "$work/b.json" seconds >>"$work/hit"
done
cold_s=$(median <"$work/cold")
hit_s=$(median <"$work/hit")
store_s=$(median <"$work/store")
# One entry's bytes in the registry: the image's blobs and manifest, the
# entry manifest and its crate list (the empty config blob is shared).
entry=$(skopeo inspect --tls-verify=false --raw "docker://$cache:$(skopeo list-tags --tls-verify=false "docker://$cache" | python3 -c 'import json,sys; print([t for t in json.load(sys.stdin)["Tags"] if t.startswith("kiln-cache-")][0])')" | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(m["subject"]["size"] + sum(l["size"] for l in m["layers"]))')
image=$("$kiln" inspect --json "oci:$work/a-out-$RUNS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["size"])')
entry_bytes=$((entry + image))
entry_mb=$(awk -v b="$entry_bytes" 'BEGIN { printf "%.2f", b / 1048576 }')
sim=$(python3 scripts/fleet-sim.py --cold "$cold_s" --hit "$hit_s" --entry-mb "$entry_mb")
write_section cache "<!-- cache:begin -->
## Registry build cache (\`scripts/bench-cache.sh\`)

$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), RUNS=$RUNS (median), examples/with-deps (22 crates).

| what | seconds | ratio |
| --- | --- | --- |
| cold \`kiln build --cache REF\` (empty local cache, no cache volumes), writing the entry | $(secs "$cold_s") | 1.00× |
| of which writing the entry (image by digest, crate list, tag) | $(secs "$store_s") | |
| fresh runner, warm registry cache: \`kiln build --cache REF --cache-mode read\`, empty local cache, **no engine reachable** | $(secs "$hit_s") | $(awk -v a="$hit_s" -v b="$cold_s" 'BEGIN { printf "%.4f", a / b }')× (goal ≤ 0.05×) |

One entry adds $entry_bytes bytes to the registry (the image's blobs and manifest, the entry manifest,
the crate list). A one-line change is a new key; on a fresh runner the compiled-dependencies layer
makes it a build of the package alone: that row, with the BuildKit \`--cache-from\` peer, is measured on
ripgrep in the fleet section (\`scripts/bench-fleet.sh\`).

### A fleet on paper (\`scripts/fleet-sim.py\`, over the figures above)

$sim

Keys are the input keys of kiln's local cache (kiln version, format, plan inputs, source tree), so
every job of a pipeline after the first, on any runner, hits; per-runner caches rarely do when
runners are recycled daily. Storage grows with one entry per built commit; a GC that deletes
\`kiln-cache-*\` tags beyond the last K per service (then the registry's own garbage collection)
bounds it at services × K × entry: \`kiln cache prune REPO --keep K\` (a scheduled job), then the
registry's blob GC.
<!-- cache:end -->"
echo "bench: cold ${cold_s}s, fresh-runner hit ${hit_s}s, entry ${entry_bytes} bytes" >&2
