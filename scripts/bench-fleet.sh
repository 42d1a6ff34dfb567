#!/usr/bin/env bash
# A CI fleet's view of the registry build cache, on a real project: ripgrep
# 14.1.1 from its crates.io package (58 packages in Cargo.lock). Per run, on
# this machine playing two runners:
#   writer   cold: no kiln volumes, empty KILN_CACHE_DIR; `kiln build --cache C`
#            writes the image entry and the compiled-dependencies layer.
#            BuildKit: builder cache pruned, `docker build` with the inline
#            cache (BUILDKIT_INLINE_CACHE=1), then `docker push` (what Engine
#            20.10 offers without buildx).
#   fresh runner, no change: kiln's volumes removed (crate sources too), another
#            empty KILN_CACHE_DIR, `--cache C --cache-mode read`. BuildKit:
#            builder cache pruned, images removed, `--cache-from` the pushed image.
#   fresh runner, one-line change in the main crate: the same, after the change.
# The peer's Dockerfile compiles the dependencies in a layer of their own
# (the cargo-chef pattern by hand, so --cache-from has something to reuse).
# The last run also checks the fresh runner's image against a --fresh cold
# build of the same source, byte for byte. Writes the "fleet" section of
# BENCHMARKS.md.
#   scripts/bench-fleet.sh        (RUNS=N, default 2; median reported)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
RUNS=${RUNS:-2}
bench_setup fleet
docker=/usr/bin/docker
export SOURCE_DATE_EPOCH=1700000000
triple=x86_64-unknown-linux-gnu

# ripgrep's crates.io package, checked against the index's checksum.
crate=$work/ripgrep-14.1.1.crate
curl -fsSL -o "$crate" https://static.crates.io/crates/ripgrep/ripgrep-14.1.1.crate
want=$(curl -fsSL https://index.crates.io/ri/pg/ripgrep | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e["vers"] == "14.1.1":
        print(e["cksum"])')
[ "$(sha256sum "$crate" | cut -d' ' -f1)" = "$want" ] || { echo "bench: ripgrep-14.1.1.crate does not match the index" >&2; exit 1; }
mkdir -p "$work/kiln" "$work/ctx"
tar -xzf "$crate" -C "$work/kiln" --strip-components=1
cp -a "$work/kiln/." "$work/ctx/"
printf '[build]\nbuilder = "%s"\n' "$KILN_TEST_BUILDER_PINNED" >"$work/kiln/kiln.toml"
cp /etc/ssl/certs/ca-certificates.crt "$work/ctx/ca.crt"
printf 'target\n' >"$work/ctx/.dockerignore"
cat >"$work/ctx/Dockerfile" <<EOF
FROM $KILN_TEST_BUILDER_PINNED AS build
WORKDIR /src
# kiln's scratch-static recipe's flags, so both build the same binary.
ENV CARGO_HOME=/cargo CARGO_HTTP_CAINFO=/ca.crt RUSTFLAGS="-C target-feature=+crt-static"
COPY ca.crt /ca.crt
# The dependencies first, in a layer of their own (a stub main crate).
COPY Cargo.toml Cargo.lock build.rs ./
COPY tests tests
RUN mkdir -p crates/core && echo 'fn main() {}' >crates/core/main.rs \\
    && cargo build --release --locked --target $triple \\
    && rm -rf crates
COPY crates crates
RUN touch crates/core/main.rs && cargo build --release --locked --target $triple \\
    && cp target/$triple/release/rg /rg
FROM scratch
COPY --from=build /rg /rg
USER 65532:65532
ENTRYPOINT ["/rg"]
EOF

field() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); v=r
for k in sys.argv[2].split("."): v=v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$1" "$2"; }
expect() { local got; got=$(field "$1" "$2"); [ "$got" = "$3" ] || { echo "bench: $4: $2 is '$got', expected '$3'" >&2; exit 1; }; }
# A runner with nothing: no kiln containers or volumes (crate sources
# included), no BuildKit cache, no bench images.
fresh_runner() {
    "$docker" ps -aq --filter label=dev.kiln.owner | xargs -r "$docker" rm -f >/dev/null
    "$docker" volume ls -q --filter label=dev.kiln.owner=cache | xargs -r "$docker" volume rm -f >/dev/null
    "$docker" builder prune -af >/dev/null 2>&1
    "$docker" images -q "$KILN_REGISTRY/kiln-bench/rg-bk-*" | sort -u | xargs -r "$docker" rmi -f >/dev/null 2>&1 || true
}
one_line_change() {
    local stamp
    stamp="$(date +%s%N)-$RANDOM"
    for d in ctx kiln; do
        printf '// bench %s\n' "$stamp" >>"$work/$d/crates/core/main.rs"
    done
}
kb() { local out=$1 dir=$2; shift 2; (cd "$work/kiln" && KILN_CACHE_DIR=$work/$dir "$kiln" build --json --no-attest --out "oci:$work/out-$dir" "$@" >"$out"); }
bk() { (cd "$work/ctx" && DOCKER_BUILDKIT=1 "$docker" build -q --build-arg BUILDKIT_INLINE_CACHE=1 "$@" .); }

for k in cold.kiln store.kiln hit.kiln edit.kiln cold.bk push.bk hit.bk edit.bk; do : >"$work/$k"; done
for i in $(seq "$RUNS"); do
    cache="$KILN_REGISTRY/kiln-bench/rg-cache-$$-$i"
    bkref="$KILN_REGISTRY/kiln-bench/rg-bk-$$-$i:cache"
    fresh_runner
    wall_time bk -t "$bkref" >>"$work/cold.bk"; echo >>"$work/cold.bk"
    wall_time "$docker" push -q "$bkref" >>"$work/push.bk"; echo >>"$work/push.bk"
    fresh_runner
    kb "$work/a.json" a-$i --cache "$cache"
    expect "$work/a.json" cache miss "cold run $i"
    expect "$work/a.json" deps_cache stored "cold run $i"
    field "$work/a.json" seconds >>"$work/cold.kiln"
    python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["timings"]; print(t["compile.deps-export"] + t["compile.deps-store"] + t.get("cache-store", 0))' "$work/a.json" >>"$work/store.kiln"

    fresh_runner
    wall_time bk --cache-from "$bkref" -t "${bkref}-hit" >>"$work/hit.bk"; echo >>"$work/hit.bk"
    fresh_runner
    kb "$work/b.json" b-$i --cache "$cache" --cache-mode read
    expect "$work/b.json" cache_source registry "fresh no-change run $i"
    field "$work/b.json" seconds >>"$work/hit.kiln"

    one_line_change
    fresh_runner
    wall_time bk --cache-from "$bkref" -t "${bkref}-edit" >>"$work/edit.bk"; echo >>"$work/edit.bk"
    fresh_runner
    kb "$work/c.json" c-$i --cache "$cache" --cache-mode read --verbose 2>"$work/c.log"
    expect "$work/c.json" cache miss "fresh one-line run $i"
    expect "$work/c.json" deps_cache restored "fresh one-line run $i"
    field "$work/c.json" seconds >>"$work/edit.kiln"
done
compiled=$(grep -c '^ *Compiling ' "$work/c.log" || true)
edit_digest=$(field "$work/c.json" digest)
fresh_runner
kb "$work/d.json" d --fresh
cold_digest=$(field "$work/d.json" digest)
same=no
[ "$edit_digest" = "$cold_digest" ] && same=yes
deps_tag=$(skopeo list-tags --tls-verify=false "docker://$cache" | python3 -c 'import json,sys; print([t for t in json.load(sys.stdin)["Tags"] if t.startswith("kiln-deps-")][0])')
deps_bytes=$(skopeo inspect --tls-verify=false --raw "docker://$cache:$deps_tag" | python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))')
bk_bytes=$(skopeo inspect --tls-verify=false --raw "docker://$bkref" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["config"]["size"] + sum(l["size"] for l in m["layers"]))')
image_bytes=$("$kiln" inspect --json "oci:$work/out-a-$RUNS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')
fresh_runner

declare -A t
for k in cold.kiln store.kiln hit.kiln edit.kiln cold.bk push.bk hit.bk edit.bk; do
    t[$k]=$(grep -v '^$' "$work/$k" | median)
done
r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
runs() { grep -v '^$' "$work/$1" | awk '{ printf "%s%.2f", (NR > 1 ? ", " : ""), $1 }'; }
per_run() { paste <(grep -v '^$' "$work/$1") <(grep -v '^$' "$work/$2") | awk '{ printf "%s%.3f×", (NR > 1 ? ", " : ""), $1 / $2 }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
sim=$(python3 scripts/fleet-sim.py --cold "${t[cold.kiln]}" --hit "${t[hit.kiln]}" --edit "${t[edit.kiln]}" \
    --entry-mb "$(mb "$image_bytes")" --deps-mb "$(mb "$deps_bytes")")
write_section fleet "<!-- fleet:begin -->
## A fleet's runners: registry build cache on ripgrep (\`scripts/bench-fleet.sh\`)

$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), RUNS=$RUNS (median), ripgrep 14.1.1 from its
crates.io package (58 packages; the one path crate is ripgrep itself), the dev-env builder by digest,
\`--no-attest\`. Every \"fresh runner\" starts with no kiln containers or volumes (crate sources
included), an empty \`KILN_CACHE_DIR\`, no BuildKit cache and no bench images. The peer is BuildKit
(Engine $("$docker" version --format '{{.Server.Version}}'), no buildx) with \`BUILDKIT_INLINE_CACHE=1\`, pushed,
then \`--cache-from\` on the fresh runner; its Dockerfile compiles the dependencies in a layer of
their own (the cargo-chef pattern by hand, in the script) so that \`--cache-from\` has something to reuse.

| case | BuildKit (s) | kiln (s) | kiln ÷ BuildKit | kiln ÷ kiln cold |
| --- | --- | --- | --- | --- |
| writer, cold (kiln: \`--cache C\`, writing the image entry and the dependency layer) | $(secs "${t[cold.bk]}") (+ $(secs "${t[push.bk]}") push) | $(secs "${t[cold.kiln]}") (of which $(secs "${t[store.kiln]}") export and push) | $(ratio "${t[cold.kiln]}" "${t[cold.bk]}")× | 1.00× |
| fresh runner, no change (\`--cache C --cache-mode read\` / \`--cache-from\`) | $(secs "${t[hit.bk]}") | $(secs "${t[hit.kiln]}") | $(r "${t[hit.kiln]}" "${t[hit.bk]}")× | $(r "${t[hit.kiln]}" "${t[cold.kiln]}")× (goal ≤ 0.05×) |
| fresh runner, one-line change in the main crate | $(secs "${t[edit.bk]}") | $(secs "${t[edit.kiln]}") | $(r "${t[edit.kiln]}" "${t[edit.bk]}")× | $(r "${t[edit.kiln]}" "${t[cold.kiln]}")× (goal ≤ 0.3×) |

Every run (seconds, in order): kiln cold $(runs cold.kiln), one-line $(runs edit.kiln), no-change
$(runs hit.kiln); BuildKit cold $(runs cold.bk), one-line $(runs edit.bk), no-change $(runs hit.bk).
Per run, kiln's one-line ÷ its own cold: $(per_run edit.kiln cold.kiln); ÷ BuildKit's one-line: $(per_run edit.kiln edit.bk).
(The median of two runs is the lower.)

Pushed to the registry: kiln's dependency layer $deps_bytes bytes (gzip; once per Cargo.lock, builder,
target and flags), BuildKit's inline-cache image $bk_bytes bytes. The fresh runner's one-line build
compiled $compiled crate(s) (\`--verbose\`), and its image is **$( [ "$same" = yes ] && echo "byte-identical" || echo "NOT identical")** to a \`--fresh\` cold build
of the same source ($edit_digest$( [ "$same" = yes ] || echo " vs $cold_digest")).

### The fleet on paper, over these figures (\`scripts/fleet-sim.py\`)

40 runners recycled daily, 25 services like this one, 30 days, 6 commits per service per day, 4
jobs per commit, 5% of commits changing Cargo.lock; an image entry of $(mb "$image_bytes") MB (the image),
a dependency layer of $(mb "$deps_bytes") MB. Model and flags in the script.

$sim
<!-- fleet:end -->"
echo "bench: cold ${t[cold.kiln]}s vs ${t[cold.bk]}s, hit ${t[hit.kiln]}s vs ${t[hit.bk]}s, edit ${t[edit.kiln]}s vs ${t[edit.bk]}s" >&2
