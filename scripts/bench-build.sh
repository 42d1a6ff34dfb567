#!/usr/bin/env bash
# Benchmark of `kiln build` against the strongest Dockerfile a Rust user writes
# today: multi-stage, BuildKit (Debian's docker client, DOCKER_BUILDKIT=1),
# cache mounts for the cargo registry and the target dir, scratch runtime
# stage. Same builder image (the dev-env one, by digest), same project
# (examples/with-deps), same run. Regenerates the "kiln build" section of
# BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
RUNS=${RUNS:-3}
bench_setup build
docker=/usr/bin/docker # Debian's client: BuildKit built in
export SOURCE_DATE_EPOCH=1700000000

# Two copies of the project: one a Docker build context, one a kiln project.
(cd examples/with-deps && tar --exclude=./target --exclude=./kiln.lock -cf - .) | (mkdir -p "$work/ctx" && tar -xf - -C "$work/ctx")
cp -a "$work/ctx" "$work/kiln"
cp /etc/ssl/certs/ca-certificates.crt "$work/ctx/ca.crt" # the proxy's CA, as kiln's fetch phase gets it
printf 'target\n' >"$work/ctx/.dockerignore"
cat >"$work/ctx/Dockerfile" <<EOF
FROM $KILN_TEST_BUILDER_PINNED AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/cargo/registry --mount=type=cache,target=/src/target \\
    CARGO_HOME=/cargo CARGO_HTTP_CAINFO=/src/ca.crt RUSTFLAGS="-C target-feature=+crt-static" \\
    cargo build --release --locked --target x86_64-unknown-linux-gnu \\
    && cp target/x86_64-unknown-linux-gnu/release/with-deps /app
FROM scratch
COPY --from=build /app /app
USER 65532:65532
ENTRYPOINT ["/app"]
EOF
sed -e 's/RUN --mount=[^\\]*\\/RUN \\/' -e '/--mount=type=cache,target=\/src\/target/d' "$work/ctx/Dockerfile" >"$work/ctx/Dockerfile.legacy"
{ printf "[build]\nbuilder = \"%s\"\n" "$KILN_TEST_BUILDER_PINNED"; cat "$work/kiln/kiln.toml"; } >"$work/kiln/kiln.toml.new" && mv "$work/kiln/kiln.toml.new" "$work/kiln/kiln.toml"

bk() { (cd "$work/ctx" && DOCKER_BUILDKIT=1 "$docker" build -q -t kiln-bench/bk:latest .); }
legacy() { (cd "$work/ctx" && DOCKER_BUILDKIT=0 "$docker" build -q --no-cache -f Dockerfile.legacy -t kiln-bench/legacy:latest .); }
kb() { (cd "$work/kiln" && "$kiln" build --quiet "$@"); }
# kb_json FILE ARGS...: kiln build with its --json report written to FILE.
kb_json() { local out=$1; shift; (cd "$work/kiln" && "$kiln" build --json "$@" >"$out"); }
# expect_cache FILE WANT WHAT: the report in FILE says "cache": WANT, or the benchmark stops.
expect_cache() {
    local got
    got=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["cache"])' "$1")
    [ "$got" = "$2" ] || { echo "bench: $3: kiln build reported cache: $got, expected $2" >&2; exit 1; }
}
prune_bk() { "$docker" builder prune -af >/dev/null 2>&1; "$docker" rmi -f kiln-bench/bk:latest >/dev/null 2>&1 || true; }
# A one-line change no earlier run has seen: neither BuildKit's cache nor
# kiln's input cache can answer it.
one_line_change() {
    local stamp
    stamp="$(date +%s%N)-$RANDOM"
    for d in ctx kiln; do
        sed -i "s/message: \"hello from kiln[^\"]*\"/message: \"hello from kiln $stamp\"/" "$work/$d/src/main.rs"
        grep -q "hello from kiln $stamp" "$work/$d/src/main.rs" || { echo "bench: the one-line change did not apply to $d" >&2; exit 1; }
    done
}

declare -A t
: >"$work/cold.bk"; : >"$work/cold.kiln"; : >"$work/warm.bk"; : >"$work/warm.kiln"; : >"$work/edit.bk"; : >"$work/edit.kiln"
for i in $(seq "$RUNS"); do
    # kiln's input cache starts empty in every run.
    export KILN_CACHE_DIR=$work/kiln-cache-$i
    prune_bk
    wall_time bk >>"$work/cold.bk"; echo >>"$work/cold.bk"
    wall_time bk >>"$work/warm.bk"; echo >>"$work/warm.bk"
    wall_time kb_json "$work/r.json" --fresh >>"$work/cold.kiln"; echo >>"$work/cold.kiln"
    expect_cache "$work/r.json" miss "cold run $i"
    kb >/dev/null # fill kiln's caches (volumes and input cache) for the warm case
    wall_time kb_json "$work/r.json" >>"$work/warm.kiln"; echo >>"$work/warm.kiln"
    expect_cache "$work/r.json" hit "warm run $i"
    one_line_change
    wall_time bk >>"$work/edit.bk"; echo >>"$work/edit.bk"
    wall_time kb_json "$work/r.json" >>"$work/edit.kiln"; echo >>"$work/edit.kiln"
    expect_cache "$work/r.json" miss "edit run $i"
done
for k in cold.bk cold.kiln warm.bk warm.kiln edit.bk edit.kiln; do
    t[$k]=$(grep -v '^$' "$work/$k" | median)
done
legacy_s=$(wall_time legacy)
# Reproducibility: two cold builds of the same source, each tool.
bk_ids=()
kiln_digests=()
for _ in 1 2; do
    prune_bk
    bk >/dev/null
    bk_ids+=("$("$docker" image inspect --format '{{.Id}}' kiln-bench/bk:latest)")
    kiln_digests+=("$(kb --fresh)")
done

# Sizes as the engine counts them.
kb --out docker-daemon:kiln-bench/kiln:latest >/dev/null
size_bk=$("$docker" image inspect --format '{{.Size}}' kiln-bench/bk:latest)
size_legacy=$("$docker" image inspect --format '{{.Size}}' kiln-bench/legacy:latest)
size_kiln=$("$docker" image inspect --format '{{.Size}}' kiln-bench/kiln:latest)
same() { local first=$1; shift; for x in "$@"; do [ "$x" = "$first" ] || { echo "no"; return; }; done; echo "yes"; }
bk_same=$(same "${bk_ids[@]}")
kiln_same=$(same "${kiln_digests[@]}")

section=$(cat <<EOF
<!-- build:begin -->
## kiln build (issue 3)

Measured $(date -u +%Y-%m-%d), \`RUNS=$RUNS scripts/bench-build.sh\`, median of $RUNS runs, same run, same
builder image by digest, project \`examples/with-deps\` (tokio, serde, serde_json: 22 crates).
Every run starts kiln with an empty input cache (\`KILN_CACHE_DIR\`) and makes a one-line change no
earlier run made; kiln's \`--json\` report said \`cache: miss\` for every cold and edit run and
\`cache: hit\` for every warm run (the script checks).
Peer: a multi-stage Dockerfile built by BuildKit (Engine $("$docker" version --format '{{.Server.Version}}'), \`DOCKER_BUILDKIT=1\`) with
cache mounts for the cargo registry and the target dir, scratch runtime stage (in the script).

| case | BuildKit (s) | kiln (s) | kiln ÷ BuildKit |
| --- | --- | --- | --- |
| cold: BuildKit cache pruned; kiln \`--fresh\` (empty volumes, no input cache) | ${t[cold.bk]} | ${t[cold.kiln]} | $(ratio "${t[cold.kiln]}" "${t[cold.bk]}")× |
| warm, no change | ${t[warm.bk]} | ${t[warm.kiln]} | $(ratio "${t[warm.kiln]}" "${t[warm.bk]}")× |
| after a one-line source change | ${t[edit.bk]} | ${t[edit.kiln]} | $(ratio "${t[edit.kiln]}" "${t[edit.bk]}")× |
| legacy builder (\`DOCKER_BUILDKIT=0\`, no cache mounts), cold, single run | $legacy_s | | |

Final image size (engine's count): kiln $size_kiln bytes (static binary, passwd/group, CA bundle, /tmp);
BuildKit $size_bk bytes and legacy $size_legacy bytes (static binary only; same RUSTFLAGS).
Same image from two cold builds of the same source: BuildKit **$bk_same** (image IDs: $(printf '%s ' "${bk_ids[@]}" | cut -c1-200)); kiln **$kiln_same**
($(printf '%s ' "${kiln_digests[@]}" | cut -c1-200)).
<!-- build:end -->
EOF
)
write_section build "$section"
