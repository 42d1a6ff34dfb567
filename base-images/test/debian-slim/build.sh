#!/usr/bin/env bash
# A debian:bookworm-slim stand-in from Debian packages (debootstrap minbase),
# published by scripts/dev-env.sh under the official name in the loopback
# mirror. Usage: build.sh ROOTDIR
set -euo pipefail
root=$1
mirror=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
rm -rf "$root"
mkdir -p "$root"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
    { tail -30 "$root.debootstrap.log" >&2; exit 1; }
cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${KILN_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} bookworm-security main
SRC
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root"/tmp/*
