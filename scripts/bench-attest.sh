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
    [ "$(field "$work/without.json" cache)" = miss ] || { echo "bench: answered from a cache" >&2; exit 1; }
    field "$work/without.json" seconds >>"$work/without-s"
done
# cargo metadata runs in the builder after every build (also with
# --no-attest); its cost, estimated with the host's cargo on the same project.
(cd "$work/p" && cargo fetch --locked -q)
for i in $(seq "$RUNS"); do
    wall_time sh -c "cd '$work/p' && cargo metadata --format-version 1 --locked --offline --filter-platform x86_64-unknown-linux-gnu" >>"$work/md"; echo >>"$work/md"
done
md=$(grep -v '^$' "$work/md" | median)
attest=$(median <"$work/attest")
with=$(median <"$work/with-s")
without=$(median <"$work/without-s")
share=$(awk -v a="$attest" -v w="$with" 'BEGIN { printf "%.3f%%", a * 100 / w }')

builder=$KILN_TEST_BUILDER_PINNED
export KILN_CACHE_DIR=$work/cache-builder
"$kiln" sbom --quiet --format spdx "$builder" >"$work/warm.spdx.json" # pulls the blobs once, untimed
pkgs=$(grep -c '"primaryPackagePurpose": "LIBRARY"' "$work/warm.spdx.json" || true)
size=$("$kiln" inspect --json "$builder" | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')
# scan exits 1 when it reports errors (a builder image has some): still a full pass.
scan_all() { "$kiln" scan --quiet --all "$builder" >/dev/null 2>&1 || [ $? -eq 1 ]; }
# The floor: decompressing the builder's layers once with gzip (the blobs
# from kiln's content store).
layers=$("$kiln" inspect --json "$builder" | python3 -c 'import json,sys; print(" ".join(l["digest"].split(":")[1] for l in json.load(sys.stdin)["layers"]))')
gunzip_all() { for l in $layers; do gzip -dc "$KILN_CACHE_DIR/blobs/sha256/$l" >/dev/null; done; }
for i in $(seq "$RUNS"); do
    wall_time "$kiln" sbom --quiet --format spdx "$builder" >>"$work/sbom"; echo >>"$work/sbom"
    wall_time scan_all >>"$work/scan"; echo >>"$work/scan"
    wall_time gunzip_all >>"$work/gz"; echo >>"$work/gz"
done
gz=$(grep -v '^$' "$work/gz" | median)
sbom=$(grep -v '^$' "$work/sbom" | median)
scan=$(grep -v '^$' "$work/scan" | median)
write_section attest "<!-- attest:begin -->
## SBOMs and provenance (\`scripts/bench-attest.sh\`)

$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), RUNS=$RUNS (median).

| what | seconds | ratio |
| --- | --- | --- |
| \`kiln build\` of examples/with-deps, cold, with SBOMs + provenance (whole wall time) | $(secs "$with") | |
| of which \`attest\` (two SBOMs and the provenance, from the scan's view) | $(secs "$attest") | $share of the build (goal ≤ 3%) |
| \`cargo metadata\` for the crate list (runs in the builder in every build; host cargo, same project) | $md | $(awk -v a="$md" -v w="$with" 'BEGIN { printf "%.2f%%", a * 100 / w }') of the build |
| the same build with \`--no-attest\` (cold builds vary by a few seconds run to run) | $(secs "$without") | $(ratio "$with" "$without")× |
| \`kiln sbom --format spdx\` of the dev-env builder ($pkgs packages, $size compressed bytes; blobs in the content store) | $sbom | $(ratio "$sbom" "$scan")× \`kiln scan --all\`, $(ratio "$sbom" "$gz")× \`gzip -dc\` |
| \`kiln scan --all\` of the same image (the same single pass over every layer) | $scan | 1.00× |
| \`gzip -dc\` of its layers to /dev/null (decompression alone, GNU gzip) | $gz | 1.00× |

The SBOM's own work (dpkg records, ownership, rendering) is small; reading an image means
decompressing every layer once, and that pass is what the builder rows measure. The goal of ≤ 1 s
for the builder's SBOM is not met and cannot be on this machine by reading the image: the builder
is one gzip layer of 649 MB (2 GB of tar), which gzip itself takes longer than that to decompress,
and a single gzip stream cannot be split across cores.
<!-- attest:end -->"
echo "bench: attest ${attest}s of ${with}s; builder sbom ${sbom}s (scan ${scan}s)" >&2
