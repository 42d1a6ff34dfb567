#!/usr/bin/env bash
# Builds the test builder root filesystem from Debian packages only (no public
# container registry is needed): debootstrap bookworm minbase, then the Rust
# toolchain as Debian packages. Usage: build.sh ROOTDIR
# The caller (scripts/dev-env.sh) imports ROOTDIR into the engine and pushes it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$1
mirror=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${KILN_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

rm -rf "$root"
mkdir -p "$root"
debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
    { tail -30 "$root.debootstrap.log" >&2; exit 1; }

cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF

cleanup() { umount "$root/proc" 2>/dev/null || true; }
trap cleanup EXIT
mount -t proc proc "$root/proc"
# Packages come from the recipe's list so the cache key (a hash of this folder) covers them.
mapfile -t pkgs < <(grep -v '^#' "$here/packages.txt" | grep -v '^$')
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c "dpkg --add-architecture arm64 && apt-get update -qq && apt-get install -y -qq --no-install-recommends ${pkgs[*]} && apt-get clean" \
    >"$root.apt.log" 2>&1 || { tail -30 "$root.apt.log" >&2; exit 1; }
# musl's unwinder for -Zbuild-std: libgcc_eh (from gcc, built for glibc)
# plus _dl_find_object answered through musl's dl_iterate_phdr (dlfo.c),
# as the libunwind.a that std's unwind crate links for musl targets.
cp "$here/dlfo.c" "$root/tmp/dlfo.c"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -ec '
    d=/usr/local/lib/kiln-musl; mkdir -p $d /tmp/eh; cd /tmp/eh
    ar x "$(gcc -print-file-name=libgcc_eh.a)"
    musl-gcc -O2 -fPIC -c /tmp/dlfo.c -o dlfo.o
    ar rcs $d/libunwind.a *.o
    cd / && rm -rf /tmp/eh /tmp/dlfo.c'
test -f "$root/usr/local/lib/kiln-musl/libunwind.a" || { echo "builder has no musl unwinder" >&2; exit 1; }
test -d "$root/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib" || { echo "builder has no aarch64 std" >&2; exit 1; }
cleanup
trap - EXIT
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root"/tmp/*
# rustc-web installs versioned names; give the builder the plain ones.
for tool in rustc cargo rustdoc; do
    if [ ! -e "$root/usr/bin/$tool" ]; then
        found=$(cd "$root/usr/bin" && ls "$tool"-* 2>/dev/null | head -1 || true)
        [ -n "$found" ] && ln -s "$found" "$root/usr/bin/$tool"
    fi
done
test -x "$root/usr/bin/cargo" || { echo "builder has no cargo" >&2; exit 1; }
