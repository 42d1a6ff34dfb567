#!/usr/bin/env bash
# A newcomer's first command: sets up what kiln needs here (engine, local
# registry, builder image made from Debian packages, published under the
# official rust image's name in a loopback mirror named by a registries.conf),
# then shows kiln's main job on examples/hello-http, whose kiln.toml names no
# builder: build it in the default builder (pinned by digest) into a scratch
# image, scan it (will it start?), verify it rebuilds byte for byte under
# varied conditions, push it to the local registry, then pull and run it from
# there and ask it for a page; roll a tag back; run the deployment checklist
# (kiln check) on examples/with-deps; share a build cache through the
# registry. Prints the image digest last.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*" >&2; }

step "setting up the environment (scripts/dev-env.sh up)"
scripts/dev-env.sh up

step "building kiln"
cargo build --release --locked --quiet
kiln=$PWD/target/release/kiln
name=kiln-try/hello-http:latest
container=kiln-try-$$
trap 'docker rm -f "$container" >/dev/null 2>&1 || true' EXIT
. "${KILN_DEV_STATE:-$HOME/.cache/kiln-dev}/env"
# The mirror setup an air-gapped user has: docker.io names come from the loopback mirror.
export CONTAINERS_REGISTRIES_CONF
cd examples/hello-http
export SOURCE_DATE_EPOCH=$(git log -1 --pretty=%ct 2>/dev/null || echo 0)

# Re-pin to what the mirror serves now (dev-env rebuilds its builder when
# its recipe changes, and a kiln.lock from an earlier run would keep the old one).
"$kiln" lock --update >/dev/null 2>&1 || true

step "kiln build: examples/hello-http, no builder configured: the official rust image via the mirror ($CONTAINERS_REGISTRIES_CONF), pinned in kiln.lock (fetch with network, compile without)"
cat kiln.toml >&2
digest=$("$kiln" build --out "docker-daemon:$name" --out oci:target/kiln/image:latest)
echo "digest: $digest" >&2
grep -A3 'role = "builder"' kiln.lock >&2

step "kiln build again: identical inputs are answered from kiln's cache, no engine needed"
time "$kiln" build --quiet --out oci:target/kiln/image:latest >/dev/null

cache="$KILN_REGISTRY/kiln-try/build-cache"
step "a build cache shared through the registry ($cache): this machine fills it; a fresh runner (empty cache, no engine at all) gets the same image from it by digest; kiln cache prune keeps the newest entries"
"$kiln" build --quiet --cache "$cache" --out oci:target/kiln/image:latest >/dev/null
fresh=$(mktemp -d)
hit=$(KILN_CACHE_DIR="$fresh/cache" DOCKER_HOST="unix://$fresh/no-engine.sock" "$kiln" build --quiet --cache "$cache" --cache-mode read --out "oci:$fresh/out:latest")
[ "$hit" = "$digest" ] || { echo "cache: the fresh runner got $hit, expected $digest" >&2; exit 1; }
echo "fresh runner, no engine: $hit" >&2
"$kiln" cache prune --keep 5 "$cache"
rm -rf "$fresh"

step "kiln scan: will it start? (libraries, interpreter, user, CA bundle)"
"$kiln" scan oci:target/kiln/image:latest

step "kiln verify: a cold rebuild elsewhere, other env/hostname/jobs/umask, must give the same bytes"
"$kiln" verify

step "kiln inspect"
"$kiln" inspect --files oci:target/kiln/image:latest

pushed="$KILN_REGISTRY/kiln-try/hello-http:latest"
step "kiln push to the local registry ($pushed), then a re-push (HEADs only)"
"$kiln" push oci:target/kiln/image:latest "$pushed"
"$kiln" push --json oci:target/kiln/image:latest "$pushed" | grep -A3 '"requests"' >&2

step "release history: every push that moves the tag is recorded in the registry (kiln rollback puts an earlier release back)"
"$kiln" history "$pushed"

step "SBOMs and provenance: attached to the image at build time (its digest unchanged), pushed along; the registry has no referrers API, so kiln keeps the referrers tag"
"$kiln" referrers "$pushed"
"$kiln" sbom --format spdx "$pushed" | grep -c '"SPDXID"' | sed 's/^/SPDX elements: /' >&2
"$kiln" sbom "$pushed" | grep -o '"purl": "[^"]*"' | head -5 >&2

step "sign it (cosign's key format and signature layout) and check the signatures"
keys=$(mktemp -d)
COSIGN_PASSWORD=try "$kiln" generate-key-pair --output-prefix "$keys/cosign"
COSIGN_PASSWORD=try "$kiln" sign --key "$keys/cosign.key" "$pushed"
"$kiln" verify-signature --attached --key "$keys/cosign.pub" "$pushed"
rm -rf "$keys"

step "docker pull $pushed and run it, then curl it"
docker pull -q "$pushed" >/dev/null
docker run -d --rm --name "$container" -p 127.0.0.1::8080 "$pushed" >/dev/null
port=$(docker port "$container" 8080/tcp | head -1 | sed 's/.*://')
reply=
for _ in $(seq 1 50); do
    if reply=$(curl -fsS "http://127.0.0.1:$port/" 2>/dev/null); then break; fi
    sleep 0.1
done
echo "GET / -> ${reply:-no answer}" >&2
[ "${reply:-}" = "hello from kiln" ] || { docker logs "$container" >&2; exit 1; }
echo "runs as user $(docker inspect --format '{{.Config.User}}' "$pushed"); image size $(docker image inspect --format '{{.Size}}' "$pushed") bytes" >&2

step "rollback, rehearsed: push release 1 and release 2 to :prod, then kiln rollback puts release 1's manifest back byte for byte (no blob upload)"
prod="$KILN_REGISTRY/kiln-try/hello-http:prod"
"$kiln" assemble --quiet --from oci:target/kiln/image:latest --label release=2 --out oci:target/kiln/image:release2
"$kiln" push --quiet oci:target/kiln/image:latest "$prod" >/dev/null
"$kiln" push --quiet oci:target/kiln/image:release2 "$prod" >/dev/null
"$kiln" rollback --steps 1 "$prod"
"$kiln" history "$prod" | head -4 >&2
now=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$prod")
[ "$now" = "$digest" ] || { echo "rollback: :prod is $now, expected $digest" >&2; exit 1; }
echo ":prod is release 1 again: $now" >&2

step "kiln check on examples/with-deps (a service with /health, DATABASE_URL required, SIGTERM handled): started as production would (its .env.production, internal network, read-only root, no capabilities), probed from outside"
(
    cd ../with-deps
    "$kiln" lock --update >/dev/null 2>&1 || true
    grep -A4 '^\[check\]' kiln.toml >&2
    "$kiln" build --quiet --out oci:target/kiln/image:latest >/dev/null
    "$kiln" check oci:target/kiln/image:latest
)

step "kiln build --platform linux/amd64 --platform linux/arm64: one index, cross-compiled in the same builder; the arm64 image runs under QEMU"
"$kiln" build --quiet --platform linux/amd64 --platform linux/arm64 --out "oci:target/kiln/multi:latest" >/dev/null
"$kiln" inspect oci:target/kiln/multi:latest | sed -n 1,4p >&2
"$kiln" push --quiet oci:target/kiln/multi:latest "$KILN_REGISTRY/kiln-try/hello-http:multi" >/dev/null
docker pull -q --platform linux/arm64 "$KILN_REGISTRY/kiln-try/hello-http:multi" >/dev/null
echo "arm64: $(docker run --rm --platform linux/arm64 "$KILN_REGISTRY/kiln-try/hello-http:multi" /usr/local/bin/hello-http --once)" >&2

step "kiln init --from-dockerfile: a multi-stage Dockerfile (static binary on scratch) carried over to kiln.toml"
fx=$(mktemp -d)
cp -r ../../tests/fixtures/dockerfiles/app/. "$fx/"
cp ../../tests/fixtures/dockerfiles/static-scratch/Dockerfile "$fx/"
"$kiln" init --path "$fx" --from-dockerfile "$fx/Dockerfile" >/dev/null
grep -v '^#' "$fx/kiln.toml" | grep -v '^$' >&2
rm -rf "$fx"

step "done: image digest"
echo "$digest"
