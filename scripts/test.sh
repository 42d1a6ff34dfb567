#!/usr/bin/env bash
# The whole test suite on real parts: brings up the dev environment (engine,
# local registry, builder image; installing what is missing), then runs every
# test. A missing service is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/dev-env.sh up

# Toolchain gates first: formatting, lints, and the one-gzip-backend rule
# (layer digests depend on which deflate implementation runs).
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
backends=$(cargo tree --locked -e features -i flate2 | grep -oE 'flate2 feature "(zlib-rs|zlib-ng|zlib|rust_backend|miniz_oxide|zlib-ng-compat|cloudflare_zlib)"' | sort -u | wc -l)
if [ "$backends" -ne 1 ]; then
    echo "test.sh: $backends flate2 backends are enabled; exactly one (zlib-rs) may be" >&2
    exit 1
fi
if cargo tree --locked -e features -i serde_json | grep -q preserve_order; then
    echo "test.sh: serde_json preserve_order is enabled: JSON key order would not be stable" >&2
    exit 1
fi

if command -v cargo-nextest >/dev/null 2>&1; then
    # The library has no doctests (examples live in tests/), so nextest runs everything.
    cargo nextest run --locked --no-fail-fast "$@"
else
    cargo test --locked --no-fail-fast "$@"
fi
