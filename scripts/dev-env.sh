#!/usr/bin/env bash
# kiln's development and test environment: a Docker engine, a local OCI
# registry on 127.0.0.1, and the test builder image made from Debian packages.
#
#   scripts/dev-env.sh up       install what is missing, start what is not running
#   scripts/dev-env.sh status   say what runs
#   scripts/dev-env.sh down     stop what this script started
#
# Idempotent: running `up` twice does nothing the second time but say so.
# Writes $KILN_DEV_STATE/env (default ~/.cache/kiln-dev/env), which tests and
# scripts source: registry address, builder reference and digest.
# This is also the air-gapped path: every image here comes from Debian packages.
set -euo pipefail
shopt -s inherit_errexit

repo=$(cd "$(dirname "$0")/.." && pwd)
state=${KILN_DEV_STATE:-$HOME/.cache/kiln-dev}
registry_addr=${KILN_REGISTRY_ADDR:-127.0.0.1:5000}
mkdir -p "$state"
say() { printf 'dev-env: %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        say "this step needs root ($1); run as root or do it by hand"
        exit 1
    fi
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v skopeo >/dev/null || missing+=(skopeo)
    command -v umoci >/dev/null || missing+=(umoci)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v lddtree >/dev/null || missing+=(pax-utils python3-pyelftools)
    command -v pigz >/dev/null || missing+=(pigz)
    command -v cpio >/dev/null || missing+=(cpio)
    command -v htpasswd >/dev/null || missing+=(apache2-utils)
    command -v openssl >/dev/null || missing+=(openssl)
    # tests/engines.rs runs its own sshd on loopback (DOCKER_HOST=ssh://) and ip(8) for a bridge.
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    command -v ssh >/dev/null || missing+=(openssh-client)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v curl >/dev/null || missing+=(curl)
    [ -x /usr/bin/time ] || missing+=(time)
    command -v file >/dev/null || missing+=(file)
    command -v diffoscope >/dev/null || missing+=(diffoscope-minimal)
    command -v docker >/dev/null || missing+=(docker.io)
    [ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
    command -v update-binfmts >/dev/null || missing+=(binfmt-support)
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    if [ ${#missing[@]} -eq 0 ]; then
        say "packages: all present"
        return
    fi
    need_root "apt-get install ${missing[*]}"
    say "packages: installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$state/apt.log" 2>&1 ||
        { tail -20 "$state/apt.log" >&2; exit 1; }
}

# arm64 binaries and images run here under QEMU user emulation: the binfmt
# handler is registered (idempotently) so the engine can run linux/arm64.
enable_arm64_emulation() {
    if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        say "binfmt: qemu-aarch64 registered"
        return
    fi
    need_root "register the qemu-aarch64 binfmt handler"
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { say "binfmt: could not register qemu-aarch64"; exit 1; }
    say "binfmt: qemu-aarch64 registered ($(grep -m1 flags /proc/sys/fs/binfmt_misc/qemu-aarch64))"
}

engine_up() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_engine() {
    if engine_up; then
        say "engine: already running (server $(docker version --format '{{.Server.Version}}'))"
        return
    fi
    if [ -n "${DOCKER_HOST:-}" ] && [[ "$DOCKER_HOST" != unix://* ]]; then
        say "engine: DOCKER_HOST=$DOCKER_HOST does not answer; start that engine, or unset DOCKER_HOST"
        exit 1
    fi
    need_root "start dockerd"
    say "engine: starting dockerd (log: $state/dockerd.log)"
    setsid nohup dockerd >"$state/dockerd.log" 2>&1 </dev/null &
    echo $! >"$state/dockerd.pid"
    for _ in $(seq 1 60); do
        engine_up && { say "engine: up"; return; }
        sleep 1
    done
    tail -20 "$state/dockerd.log" >&2
    say "engine: dockerd did not answer within 60 s"
    exit 1
}

registry_up() { curl -fsS -o /dev/null "http://$registry_addr/v2/" 2>/dev/null; }

start_registry() {
    if registry_up; then
        say "registry: already answering on $registry_addr"
        return
    fi
    mkdir -p "$state/registry/data"
    cat >"$state/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/registry/data
  delete:
    enabled: true
http:
  addr: $registry_addr
EOF
    say "registry: starting on $registry_addr (storage: $state/registry/data)"
    setsid nohup docker-registry serve "$state/registry/config.yml" >"$state/registry/log" 2>&1 </dev/null &
    echo $! >"$state/registry.pid"
    for _ in $(seq 1 30); do
        registry_up && { say "registry: up"; return; }
        sleep 0.5
    done
    tail -20 "$state/registry/log" >&2
    say "registry: did not answer on $registry_addr"
    exit 1
}

recipe_hash() { (cd "$repo/base-images/test/$1" && sha256sum $(ls | sort) | sha256sum | cut -c1-16); }
# A base also changes when the script that assembles it does.
base_hash() { (recipe_hash "$1"; sha256sum <"$repo/base-images/test/build-base.sh") | sha256sum | cut -c1-16; }

ensure_builder() {
    local key ref
    key=$(recipe_hash rust-builder)
    ref="$registry_addr/kiln-test/rust-builder:$key"
    if docker image inspect "$ref" >/dev/null 2>&1 && [ -n "$(docker image inspect --format '{{join .RepoDigests " "}}' "$ref")" ] &&
        curl -fsS -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$registry_addr/v2/kiln-test/rust-builder/manifests/$key" 2>/dev/null; then
        say "builder: $ref is current (recipe hash $key)"
    else
        if ! docker image inspect "$ref" >/dev/null 2>&1; then
            need_root "debootstrap the builder"
            say "builder: building from Debian packages (recipe hash $key; takes a few minutes)"
            local root="$state/rust-builder-root"
            "$repo/base-images/test/rust-builder/build.sh" "$root"
            tar --numeric-owner -C "$root" -c . |
                docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                    --change 'WORKDIR /' - "$ref" >/dev/null
            rm -rf "$root"
        fi
        say "builder: pushing $ref"
        docker push "$ref" >"$state/push.log" 2>&1 || { tail -20 "$state/push.log" >&2; exit 1; }
        docker tag "$ref" "$registry_addr/kiln-test/rust-builder:latest"
        docker push "$registry_addr/kiln-test/rust-builder:latest" >>"$state/push.log" 2>&1
    fi
    builder_ref=$ref
    builder_digest=$(docker image inspect --format '{{index .RepoDigests 0}}' "$ref" | sed 's/.*@//')
}

# Base images made from Debian packages by kiln itself (base-images/test/*-base).
ensure_base() {
    local name=$1 key ref
    key=$(base_hash "$name")
    ref="$registry_addr/kiln-test/$name:$key"
    if curl -fsS -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$registry_addr/v2/kiln-test/$name/manifests/$key" 2>/dev/null; then
        say "base: $ref is current"
    else
        say "base: building $name from Debian packages"
        (cd "$repo" && cargo build --release --locked --quiet)
        local tmp
        tmp=$(mktemp -d)
        "$repo/base-images/test/build-base.sh" "$repo/base-images/test/$name" "$repo/target/release/kiln" "oci:$tmp/layout:base" >/dev/null
        "$repo/target/release/kiln" push --quiet "oci:$tmp/layout:base" "$ref" --tag latest >/dev/null
        rm -rf "$tmp"
        say "base: pushed $ref"
    fi
    printf '%s' "$ref"
}

# The arm64 twin of a base (Debian's arm64 .debs, assembled by kiln for
# linux/arm64/v8) and an index over both: kiln-test/NAME-multi:RECIPE-HASH.
ensure_multi_base() {
    local name=$1 amd64_ref=$2 key ref arm_ref
    key=$(base_hash "$name")
    arm_ref="$registry_addr/kiln-test/$name-arm64:$key"
    ref="$registry_addr/kiln-test/$name-multi:$key"
    if curl -fsS -o /dev/null -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$registry_addr/v2/kiln-test/$name-multi/manifests/$key" 2>/dev/null; then
        say "base: $ref is current"
    else
        say "base: building $name for arm64 from Debian's arm64 packages"
        (cd "$repo" && cargo build --release --locked --quiet)
        local tmp
        tmp=$(mktemp -d)
        KILN_BASE_ARCH=arm64 "$repo/base-images/test/build-base.sh" "$repo/base-images/test/$name" "$repo/target/release/kiln" "oci:$tmp/layout:arm64" >/dev/null
        "$repo/target/release/kiln" push --quiet "oci:$tmp/layout:arm64" "$arm_ref" >/dev/null
        "$repo/target/release/kiln" index --quiet "$amd64_ref" "$arm_ref" --out "$ref" >/dev/null
        rm -rf "$tmp"
        say "base: pushed $ref (linux/amd64 + linux/arm64/v8)"
    fi
    printf '%s' "$ref"
}

# An image made from Debian packages by a script (docker import of a root
# filesystem), pushed as kiln-test/NAME:RECIPE-HASH.
ensure_imported() {
    local name=$1 key ref
    key=$(recipe_hash "$name")
    ref="$registry_addr/kiln-test/$name:$key"
    if curl -fsS -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$registry_addr/v2/kiln-test/$name/manifests/$key" 2>/dev/null; then
        say "image: $ref is current"
    else
        need_root "debootstrap $name"
        say "image: building $name from Debian packages"
        local root="$state/$name-root"
        "$repo/base-images/test/$name/build.sh" "$root"
        tar --numeric-owner -C "$root" -c . |
            docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                --change 'CMD ["bash"]' - "$ref" >/dev/null
        rm -rf "$root"
        docker push "$ref" >"$state/push.log" 2>&1 || { tail -20 "$state/push.log" >&2; exit 1; }
        say "image: pushed $ref"
    fi
    printf '%s' "$ref"
}

# The test mirror's cargo-chef image: the builder plus a stand-in cargo-chef.
ensure_chef() {
    local key ref
    key=$( (recipe_hash cargo-chef; echo "$builder_ref") | sha256sum | cut -c1-16)
    ref="$registry_addr/kiln-test/cargo-chef:$key"
    if ! curl -fsS -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$registry_addr/v2/kiln-test/cargo-chef/manifests/$key" 2>/dev/null; then
        say "image: building $ref (builder + cargo-chef stand-in)"
        docker build -q --build-arg "BUILDER=$builder_ref" -t "$ref" "$repo/base-images/test/cargo-chef" >/dev/null
        docker push "$ref" >"$state/push.log" 2>&1 || { tail -20 "$state/push.log" >&2; exit 1; }
    fi
    printf '%s' "$ref"
}

# The loopback mirror: the images above under their official names
# (127.0.0.1:5000/mirror/<registry>/<repository>), and a registries.conf
# (containers-registries.conf(5)) that sends docker.io and gcr.io there and
# nowhere else. This is the air-gapped setup a user makes, and the one the
# zero-config tests and scripts/try.sh use: no test needs Docker Hub.
publish_mirror() {
    local rustc default
    rustc=$(docker run --rm "$builder_ref" rustc --version | awk '{print $2}')
    default=$(sed -n 's/^pub const DEFAULT_RUST_VERSION: &str = "\(.*\)";/\1/p' "$repo/src/builder/toolchain.rs")
    local pairs=(
        "$builder_ref docker.io/library/rust:$rustc-slim-bookworm"
        "$builder_ref docker.io/library/rust:${rustc%.*}-slim-bookworm"
        "$chef_ref docker.io/lukemathwalker/cargo-chef:latest-rust-${rustc%.*}-slim-bookworm"
        "$debian_slim docker.io/library/debian:bookworm-slim"
        "$cc_multi gcr.io/distroless/cc-debian12:nonroot"
        "$cc_multi gcr.io/distroless/cc-debian12:latest"
    )
    if [ "${rustc%.*}" != "$default" ]; then
        say "mirror: WARNING the builder has rustc $rustc but kiln's default is $default; publishing it as rust:$default-slim-bookworm too so the zero-config path runs; update DEFAULT_RUST_VERSION in src/builder/toolchain.rs"
        pairs+=("$builder_ref docker.io/library/rust:$default-slim-bookworm")
    fi
    local p src name
    for p in "${pairs[@]}"; do
        src=${p%% *}
        name=${p#* }
        skopeo copy -q --all --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
            "docker://$src" "docker://$registry_addr/mirror/$name" >"$state/mirror.log" 2>&1 ||
            { tail -20 "$state/mirror.log" >&2; exit 1; }
    done
    say "mirror: ${#pairs[@]} official names under $registry_addr/mirror/ (rustc $rustc)"
    cat >"$state/registries.conf.tmp" <<EOF
# Written by scripts/dev-env.sh: docker.io and gcr.io come from the loopback
# mirror only (blocked = true: nothing goes to the internet).
[[registry]]
prefix = "docker.io"
location = "docker.io"
blocked = true
[[registry.mirror]]
location = "$registry_addr/mirror/docker.io"

[[registry]]
prefix = "gcr.io"
location = "gcr.io"
blocked = true
[[registry.mirror]]
location = "$registry_addr/mirror/gcr.io"
EOF
    mv "$state/registries.conf.tmp" "$state/registries.conf"
    mirror_rust=$rustc
}

# The engine's copies of the mirror images under their official names, for
# `docker build` of the Dockerfile fixtures (tests/fixtures/dockerfiles),
# which the tests run with no network: the engine never pulls from the
# internet. The one fixture step that needs Debian's package servers (the
# debian-slim fixture's apt-get) runs here once, so the tests' legacy
# builder finds it in its cache.
engine_official_names() {
    local name
    for name in "docker.io/library/rust:${mirror_rust%.*}-slim-bookworm" \
        "docker.io/lukemathwalker/cargo-chef:latest-rust-${mirror_rust%.*}-slim-bookworm" \
        docker.io/library/debian:bookworm-slim gcr.io/distroless/cc-debian12:nonroot gcr.io/distroless/cc-debian12:latest; do
        docker pull -q "$registry_addr/mirror/$name" >/dev/null
        docker tag "$registry_addr/mirror/$name" "$name"
    done
    local fx="$repo/tests/fixtures/dockerfiles"
    if [ -f "$fx/debian-slim/Dockerfile" ]; then
        DOCKER_BUILDKIT=0 docker build -q -t kiln-dev/fixture-cache:debian-slim -f "$fx/debian-slim/Dockerfile" "$fx/app" \
            >"$state/fixture-build.log" 2>&1 || { tail -20 "$state/fixture-build.log" >&2; exit 1; }
    fi
    say "engine: official names tagged; fixture apt step cached"
}

# The independent SBOM validators the tests run (PyPI): pyspdxtools and
# cyclonedx-python-lib's JSON validator (jsonschema comes with it), in a
# venv of their own, versions pinned.
ensure_validators() {
    local venv=$state/venv want="spdx-tools==0.8.5 cyclonedx-python-lib[json-validation]==11.12.0"
    if [ -x "$venv/bin/pyspdxtools" ] && [ "$(cat "$venv/kiln-want" 2>/dev/null)" = "$want" ]; then
        say "validators: present ($venv)"
        return
    fi
    say "validators: installing $want into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q --disable-pip-version-check $want >"$state/pip.log" 2>&1 ||
        { tail -20 "$state/pip.log" >&2; exit 1; }
    printf '%s' "$want" >"$venv/kiln-want"
}

write_env() {
    cat >"$state/env.tmp" <<EOF
# Written by scripts/dev-env.sh; sourced by tests and scripts.
KILN_REGISTRY=$registry_addr
KILN_TEST_BUILDER=$builder_ref
KILN_TEST_BUILDER_DIGEST=$builder_digest
KILN_TEST_BUILDER_PINNED=$registry_addr/kiln-test/rust-builder@$builder_digest
KILN_TEST_CC_BASE=$cc_base
KILN_TEST_BULLSEYE_BASE=$bullseye_base
KILN_TEST_NOSSL_BASE=$nossl_base
KILN_TEST_CC_MULTI=$cc_multi
KILN_TEST_DEBIAN_SLIM=$debian_slim
KILN_TEST_CHEF=$chef_ref
KILN_MIRROR_RUSTC=$mirror_rust
CONTAINERS_REGISTRIES_CONF=$state/registries.conf
KILN_TEST_PYTHON=$state/venv/bin/python
KILN_TEST_PYSPDXTOOLS=$state/venv/bin/pyspdxtools
EOF
    mv "$state/env.tmp" "$state/env"
    say "env: $state/env"
}

status() {
    local rc=0
    if engine_up; then say "engine: running"; else say "engine: not running"; rc=1; fi
    if registry_up; then say "registry: answering on $registry_addr"; else say "registry: not answering on $registry_addr"; rc=1; fi
    if [ -f "$state/env" ]; then cat "$state/env" >&2; else say "env: not written yet"; rc=1; fi
    return $rc
}

stop_pid() {
    local f=$1 name=$2
    if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
        kill "$(cat "$f")" && say "$name: stopped"
    else
        say "$name: not started by dev-env"
    fi
    rm -f "$f"
}

case "${1:-up}" in
up)
    install_packages
    enable_arm64_emulation
    start_engine
    start_registry
    ensure_builder
    cc_base=$(ensure_base cc-base)
    cc_multi=$(ensure_multi_base cc-base "$cc_base")
    bullseye_base=$(ensure_base bullseye-cc-base)
    nossl_base=$(ensure_base cc-nossl-base)
    debian_slim=$(ensure_imported debian-slim)
    chef_ref=$(ensure_chef)
    publish_mirror
    engine_official_names
    ensure_validators
    write_env
    ;;
status) status ;;
down)
    stop_pid "$state/registry.pid" registry
    stop_pid "$state/dockerd.pid" engine
    ;;
*)
    echo "usage: $0 up|status|down" >&2
    exit 2
    ;;
esac
