#!/usr/bin/env bash
# Builds a base image from Debian packages without a container engine or a
# public registry: downloads the .debs of RECIPE/packages.txt from the suite
# in RECIPE/suite, unpacks their data (dpkg-deb -x, no maintainer scripts),
# adds what the scripts would have made (the CA bundle, passwd/group with
# nonroot 65532, /tmp), then lets kiln assemble it deterministically.
#   build-base.sh RECIPE_DIR KILN OUT_REF
# KILN_BASE_ARCH=arm64 builds the arm64 image (Debian's arm64 .debs) instead
# of amd64; dev-env puts the two under one index.
set -euo pipefail
recipe=$(cd "$1" && pwd)
kiln=$2
out=$3
suite=$(cat "$recipe/suite")
mirror=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/debs" "$work/root"
echo "deb $mirror $suite main" >"$work/sources.list"
: >"$work/status" # an empty dpkg status: the host's installed versions must not matter
arch=${KILN_BASE_ARCH:-amd64}
case "$arch" in
amd64) platform=linux/amd64 ;;
arm64) platform=linux/arm64/v8 ;;
*) echo "build-base.sh: KILN_BASE_ARCH must be amd64 or arm64" >&2; exit 2 ;;
esac
aptopts=(-o "APT::Architecture=$arch" -o "APT::Architectures=$arch" -o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null" -o "Dir::State::status=$work/status"
    -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache" -o "Debug::NoLocking=1"
    -o "APT::Get::AllowUnauthenticated=false")
apt-get "${aptopts[@]}" update -qq >"$work/update.log" 2>&1 || { cat "$work/update.log" >&2; exit 1; }
mapfile -t pkgs < <(grep -v '^#' "$recipe/packages.txt" | grep -v '^$')
(cd "$work/debs" && apt-get "${aptopts[@]}" download -qq "${pkgs[@]}" >"$work/download.log" 2>&1) ||
    { cat "$work/download.log" >&2; exit 1; }
if grep -q '^E:' "$work/download.log"; then
    cat "$work/download.log" >&2
    exit 1
fi
# dpkg's record of each package as distroless keeps it (no maintainer
# scripts, so no /var/lib/dpkg/status): status.d/NAME holds the control
# fields, status.d/NAME.md5sums the files. SBOM tools (and kiln's) read it.
mkdir -p "$work/root/var/lib/dpkg/status.d"
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
    name=$(dpkg-deb -f "$deb" Package)
    dpkg-deb -f "$deb" >"$work/root/var/lib/dpkg/status.d/$name"
    rm -rf "$work/control"
    dpkg-deb -e "$deb" "$work/control"
    if [ -f "$work/control/md5sums" ]; then
        cp "$work/control/md5sums" "$work/root/var/lib/dpkg/status.d/$name.md5sums"
    fi
done
# What maintainer scripts would have generated.
root=$work/root
rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian" "$root/usr/share/info"
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
if [ -d "$root/usr/share/ca-certificates" ]; then
    find "$root/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | xargs cat >"$root/etc/ssl/certs/ca-certificates.crt"
fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
# Files only kiln's tree walk can represent: drop device nodes and the like.
find "$root" ! -type f ! -type d ! -type l -delete
SOURCE_DATE_EPOCH=0 "$kiln" assemble --quiet --platform "$platform" --add "$root:/" --user 65532:65532 \
    --label "org.opencontainers.image.description=kiln test base ($(basename "$recipe"), Debian $suite)" \
    --out "$out"
