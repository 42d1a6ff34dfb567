#!/usr/bin/env bash
# A newcomer's first command: sets up what kiln needs here (engine, local
# registry, builder image), then shows kiln's main job on the example app.
# Today: build examples/hello-http as a static binary, `kiln assemble` it onto
# scratch (no daemon involved), inspect it, load it into the engine, run it
# and ask it for a page. Prints the image digest.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*" >&2; }

step "setting up the environment (scripts/dev-env.sh up)"
scripts/dev-env.sh up

step "building kiln"
cargo build --release --locked --quiet
kiln=$PWD/target/release/kiln
work=$(mktemp -d)
name=kiln-try/hello-http:latest
container=kiln-try-$$
cleanup() {
    docker rm -f "$container" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step "building examples/hello-http as a static binary (host toolchain)"
CARGO_TARGET_DIR=$PWD/target/try RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release --locked --target x86_64-unknown-linux-gnu --manifest-path examples/hello-http/Cargo.toml
bin=$PWD/target/try/x86_64-unknown-linux-gnu/release/hello-http

step "kiln assemble: the binary on scratch, non-root, reproducible"
export SOURCE_DATE_EPOCH=$(git log -1 --pretty=%ct 2>/dev/null || echo 0)
digest=$("$kiln" assemble \
    --add "$bin:/usr/local/bin/hello-http:0755" \
    --entrypoint /usr/local/bin/hello-http \
    --env PORT=8080 --expose 8080 \
    --label org.opencontainers.image.source=examples/hello-http \
    --out "oci:$work/layout:latest" \
    --out "docker-daemon:$name")

step "again, from a copy of the binary elsewhere: same digest"
cp "$bin" "$work/copy"
again=$("$kiln" assemble --quiet \
    --add "$work/copy:/usr/local/bin/hello-http:0755" \
    --entrypoint /usr/local/bin/hello-http \
    --env PORT=8080 --expose 8080 \
    --label org.opencontainers.image.source=examples/hello-http \
    --out "oci:$work/layout2")
if [ "$digest" != "$again" ]; then
    echo "try.sh: digests differ: $digest vs $again" >&2
    exit 1
fi
echo "both builds: $digest" >&2

step "kiln inspect"
"$kiln" inspect --files "oci:$work/layout:latest"

step "docker run $name, then curl it"
docker run -d --rm --name "$container" -p 127.0.0.1::8080 "$name" >/dev/null
port=$(docker port "$container" 8080/tcp | head -1 | sed 's/.*://')
for _ in $(seq 1 50); do
    if reply=$(curl -fsS "http://127.0.0.1:$port/" 2>/dev/null); then break; fi
    sleep 0.1
done
echo "GET / -> ${reply:-no answer}" >&2
[ "${reply:-}" = "hello from kiln" ] || { docker logs "$container" >&2; exit 1; }
echo "runs as: $(docker inspect --format '{{.Config.User}}' "$name")" >&2

step "done: image digest"
echo "$digest"
