#!/usr/bin/env bash
# What SBOMs and provenance cost. (1) examples/with-deps built cold (new
# KILN_CACHE_DIR, kiln's cache volumes removed) with attestations and with
# --no-attest: the `attest` timing kiln reports (inventory from the scan's
# view, two SBOMs, provenance) and the whole wall time. (2) `kiln sbom` of
# the dev-env builder image (Debian + Rust toolchain, ~400 packages), its
# blobs already in kiln's content store so the registry is not timed; the
# peer in the same run is reading the same layers with `kiln scan`.
# Writes the "attest" section of BENCHMARKS.md.
#   scripts/bench-attest.sh        (RUNS=N for more runs; median reported)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
RUNS=${RUNS:-3}
bench_setup attest
(cd examples/with-deps && tar --exclude=./target --exclude=./kiln.lock -cf - .) | (mkdir -p "$work/p" && tar -xf - -C "$work/p")
{ printf "[build]\nbuilder = \"%s\"\n" "$KILN_TEST_BUILDER_PINNED"; cat "$work/p/kiln.toml"; } >"$work/p/t" && mv "$work/p/t" "$work/p/kiln.toml"
docker=${DOCKER:-docker}
cold() {
    "$docker" ps -aq --filter label=dev.kiln.owner --filter status=exited | xargs -r "$docker" rm -f >/dev/null
    "$docker" volume ls -q --filter label=dev.kiln.owner=cache | xargs -r "$docker" volume rm -f >/dev/null
    export KILN_CACHE_DIR=$work/cache-$(date +%s%N)
}
field() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); v=r; [v:=v[k] for k in sys.argv[2].split(".")]; print(v)' "$1" "$2"; }
for i in $(seq "$RUNS"); do
    cold
    (cd "$work/p" && SOURCE_DATE_EPOCH=1700000000 "$kiln" build --json --out "oci:$work/with:$i" >"$work/with.json")
    [ "$(field "$work/with.json" cache)" = miss ] || { echo "bench: answered from a cache" >&2; exit 1; }
    field "$work/with.json" timings.attest >>"$work/attest"
    field "$work/with.json" seconds >>"$work/with-s"
    cold
    (cd "$work/p" && SOURCE_DATE_EPOCH=1700000000 "$kiln" build --json --no-attest --out "oci:$work/without:$i" >"$work/without.json")
    field "$work/without.json" seconds >>"$work/without-s"
done
attest=$(median <"$work/attest")
with=$(median <"$work/with-s")
without=$(median <"$work/without-s")
share=$(awk -v a="$attest" -v w="$with" 'BEGIN { printf "%.3f%%", a * 100 / w }')

builder=$KILN_TEST_BUILDER_PINNED
export KILN_CACHE_DIR=$work/cache-builder
"$kiln" sbom --quiet --format spdx "$builder" >"$work/warm.spdx.json" # pulls the blobs once, untimed
pkgs=$(grep -c '"primaryPackagePurpose": "LIBRARY"' "$work/warm.spdx.json" || true)
size=$("$kiln" inspect --json "$builder" | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')
for i in $(seq "$RUNS"); do
    wall_time "$kiln" sbom --quiet --format spdx "$builder" >>"$work/sbom"; echo >>"$work/sbom"
    wall_time "$kiln" scan --quiet --all "$builder" >>"$work/scan" || true; echo >>"$work/scan"
done
sbom=$(grep -v '^$' "$work/sbom" | median)
scan=$(grep -v '^$' "$work/scan" | median)
write_section attest "<!-- attest:begin -->
## SBOMs and provenance (\`scripts/bench-attest.sh\`)

$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), RUNS=$RUNS (median).

| what | seconds | ratio |
| --- | --- | --- |
| \`kiln build\` of examples/with-deps, cold, with SBOMs + provenance (whole wall time) | $with | |
| of which \`attest\` (two SBOMs and the provenance, from the scan's view) | $(secs "$attest") | $share of the build (goal ≤ 3%) |
| the same build with \`--no-attest\` | $without | $(ratio "$with" "$without")× |
| \`kiln sbom --format spdx\` of the dev-env builder ($pkgs packages, $size compressed bytes; blobs in the content store) | $sbom | $(ratio "$sbom" "$scan")× \`kiln scan --all\` of it |
| \`kiln scan --all\` of the same image (the peer: the same single pass over every layer) | $scan | 1.00× |

The SBOM's own work (dpkg records, ownership, rendering) is small; reading a builder image means
decompressing every layer once, and that pass is what the builder row measures.
<!-- attest:end -->"
echo "bench: attest ${attest}s of ${with}s; builder sbom ${sbom}s (scan ${scan}s)" >&2
