#!/usr/bin/env bash
# Benchmark of kiln's registry client against skopeo on the dev-env registry,
# same run: push of a ~200 MB image, re-push of the unchanged image (time and
# number of requests), push to a second repository (mount vs upload), pull.
# Both tools push the same gzip blobs (kiln assemble's default compression,
# which skopeo copies as they are); the script checks that both repositories
# hold the same layer digests. Regenerates the "kiln push / pull" section of
# BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
RUNS=${RUNS:-3}
bench_setup reg
reg=$KILN_REGISTRY
# ~200 MB of incompressible data in one gzip layer; a new image for every
# run, so neither tool can mount blobs the other (or an earlier run) already pushed.
make_image() {
    rm -rf "$work/data" && mkdir -p "$work/data"
    for p in 1 2 3 4; do head -c 50000000 /dev/urandom >"$work/data/part$p"; done
    rm -rf "$work/layout"
    "$kiln" assemble --quiet --add "$work/data:/data" --out "oci:$work/layout:big" >/dev/null
}
# layer_digests REF (a skopeo transport:reference) -> the manifest's layer digests, one a line
layer_digests() {
    skopeo inspect --raw --tls-verify=false "$1" |
        python3 -c 'import json, sys; print("\n".join(l["digest"] for l in json.load(sys.stdin)["layers"]))'
}
# same_layers A B: both registry repositories hold the layout's layers, or the benchmark stops.
same_layers() {
    local want a b
    want=$(layer_digests "oci:$work/layout:big")
    a=$(layer_digests "docker://$1")
    b=$(layer_digests "docker://$2")
    if [ -z "$want" ] || [ "$a" != "$want" ] || [ "$b" != "$want" ]; then
        printf 'bench: the two tools did not push the same layers\n  layout: %s\n  %s: %s\n  %s: %s\n' \
            "$want" "$1" "$a" "$2" "$b" >&2
        exit 1
    fi
}
make_image
size_mb=$(du -sm "$work/layout/blobs" | cut -f1)
run=$(date +%s)
sk() { skopeo "$@"; }
declare -A t
for k in push repush second pull; do : >"$work/kiln.$k"; : >"$work/skopeo.$k"; done
for i in $(seq "$RUNS"); do
    make_image
    export KILN_CACHE_DIR=$work/cache-$i
    a="$reg/kiln-bench/kiln-$run-$i"; b="$reg/kiln-bench/skopeo-$run-$i"
    # skopeo first this time, then kiln: both upload the new blobs.
    wall_time sk copy --dest-tls-verify=false "oci:$work/layout:big" "docker://$b:v1" >>"$work/skopeo.push"; echo >>"$work/skopeo.push"
    wall_time "$kiln" push "oci:$work/layout:big" "$a:v1" >>"$work/kiln.push"; echo >>"$work/kiln.push"
    wall_time "$kiln" push "oci:$work/layout:big" "$a:v1" >>"$work/kiln.repush"; echo >>"$work/kiln.repush"
    wall_time sk copy --dest-tls-verify=false "oci:$work/layout:big" "docker://$b:v1" >>"$work/skopeo.repush"; echo >>"$work/skopeo.repush"
    wall_time "$kiln" push "oci:$work/layout:big" "$a-second:v1" >>"$work/kiln.second"; echo >>"$work/kiln.second"
    wall_time sk copy --dest-tls-verify=false "oci:$work/layout:big" "docker://$b-second:v1" >>"$work/skopeo.second"; echo >>"$work/skopeo.second"
    rm -rf "$work/pull-k" "$work/pull-s" "$work/cache-pull"
    KILN_CACHE_DIR=$work/cache-pull wall_time "$kiln" pull "$a:v1" --out "oci:$work/pull-k:x" >>"$work/kiln.pull"; echo >>"$work/kiln.pull"
    wall_time sk copy --src-tls-verify=false "docker://$b:v1" "oci:$work/pull-s:x" >>"$work/skopeo.pull"; echo >>"$work/skopeo.pull"
    same_layers "$a:v1" "$b:v1"
    same_layers "$a-second:v1" "$b-second:v1"
done
for k in push repush second pull; do
    t[kiln.$k]=$(grep -v '^$' "$work/kiln.$k" | median)
    t[skopeo.$k]=$(grep -v '^$' "$work/skopeo.$k" | median)
done
repush_json=$(KILN_CACHE_DIR=$work/cache-$RUNS "$kiln" push --json "oci:$work/layout:big" "$a:v1")
requests=$(printf '%s' "$repush_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
second_json=$(KILN_CACHE_DIR=$work/cache-$RUNS "$kiln" push --json "oci:$work/layout:big" "$a-third:v1")
mounted=$(printf '%s' "$second_json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%d mounted, %d uploaded" % (d["mounted"], d["uploaded"]))')
section=$(cat <<EOS
<!-- registry:begin -->
## kiln push / pull (issue 4)

Measured $(date -u +%Y-%m-%d), \`RUNS=$RUNS scripts/bench-registry.sh\`, median of $RUNS runs, same run, against the
dev-env distribution registry on 127.0.0.1 (plain HTTP). Image: ${size_mb} MB of incompressible data in one
gzip layer (kiln assemble's default), a new one for every run (so nothing can be mounted from an earlier push);
both tools push the same blobs (the script checks that both repositories hold the same layer digests).
Peer: \`skopeo copy\` (Debian's skopeo $(skopeo --version | awk '{print $3}')).

| case | kiln (s) | skopeo (s) | kiln ÷ skopeo |
| --- | --- | --- | --- |
| push to a new repository | ${t[kiln.push]} | ${t[skopeo.push]} | $(ratio "${t[kiln.push]}" "${t[skopeo.push]}")× |
| re-push, nothing changed | ${t[kiln.repush]} | ${t[skopeo.repush]} | $(ratio "${t[kiln.repush]}" "${t[skopeo.repush]}")× |
| push to a second repository, same registry | ${t[kiln.second]} | ${t[skopeo.second]} | $(ratio "${t[kiln.second]}" "${t[skopeo.second]}")× |
| pull into an OCI layout (empty content store) | ${t[kiln.pull]} | ${t[skopeo.pull]} | $(ratio "${t[kiln.pull]}" "${t[skopeo.pull]}")× |

Requests of a kiln re-push: $requests (blob HEADs and one manifest HEAD; no upload, no manifest PUT).
Second repository: $mounted (cross-repository mount from the repository kiln pushed before).
<!-- registry:end -->
EOS
)
write_section registry "$section"
