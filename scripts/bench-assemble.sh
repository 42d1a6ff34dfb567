#!/usr/bin/env bash
# Benchmark of `kiln assemble` against the shell pipelines a careful user
# would write for a deterministic layer, on the same tree in the same run:
#   tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -c DIR | gzip -n -6
#   the same with pigz -n -6 -p 2
# Reports wall-time ratios (median of $RUNS), layer sizes, and kiln's peak
# memory on trees of three sizes (it should not grow with the tree).
# Regenerates the "kiln assemble" section of BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
RUNS=${RUNS:-5}
command -v pigz >/dev/null || { echo "bench: pigz missing; run scripts/dev-env.sh up" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time missing (Debian package time)" >&2; exit 1; }

cargo build --release --locked --quiet
kiln=$PWD/target/release/kiln
work=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# A ~180 MB tree of real files: a copy of the toolchain's lib/rustlib.
sysroot=$(rustc --print sysroot)
cp -a "$sysroot/lib/rustlib" "$work/tree"
# Half and double trees for the memory check.
mkdir -p "$work/half" "$work/double"
# half: files in name order until half the bytes.
(cd "$work/tree" && find . -type f -printf '%s %p\n' | sort -k2 |
    awk -v total="$(du -sb . | cut -f1)" '{ s += $1; if (s <= total / 2) print $2 }' |
    cpio -pdm --quiet "$work/half")
cp -a "$work/tree" "$work/double/a"
cp -a "$work/tree" "$work/double/b"
tree_mb=$(du -sm "$work/tree" | cut -f1)
files=$(find "$work/tree" -type f | wc -l)

# Prints "seconds peak_kb" for one run of a shell command; fails (with its
# output on stderr) when the command fails.
measure() {
    local s e
    sync
    s=$(date +%s.%N)
    if ! /usr/bin/time -f '%M' -o "$work/t" sh -c "$1" >"$work/out.log" 2>&1; then
        echo "bench: \`$1\` failed:" >&2
        tail -n 30 "$work/out.log" >&2
        exit 1
    fi
    e=$(date +%s.%N)
    echo "$(elapsed "$s" "$e") $(tail -1 "$work/t")"
}

declare -A cmd
cmd[kiln]="rm -rf $work/out && $kiln assemble --quiet --add $work/tree:/tree --out oci:$work/out"
cmd[gzip]="tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C $work -c tree | gzip -n -6 > $work/gzip.tgz"
cmd[pigz]="tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C $work -c tree | pigz -n -6 -p 2 > $work/pigz.tgz"
declare -A secs mem
for name in kiln gzip pigz; do
    : >"$work/$name.times"
    for _ in $(seq "$RUNS"); do
        measure "${cmd[$name]}" >>"$work/$name.times"
    done
    secs[$name]=$(cut -d' ' -f1 "$work/$name.times" | median)
    mem[$name]=$(cut -d' ' -f2 "$work/$name.times" | median)
done
layer=$(find "$work/out/blobs/sha256" -type f -size +1M -printf '%s\n' | sort -n | tail -1)
gzip_size=$(stat -c %s "$work/gzip.tgz")
pigz_size=$(stat -c %s "$work/pigz.tgz")

declare -A sub_mem sub_mb
for t in half double; do
    rm -rf "$work/out-$t"
    measure "$kiln assemble --quiet --add $work/$t:/tree --out oci:$work/out-$t" >"$work/$t.times"
    read -r _ m <"$work/$t.times"
    sub_mem[$t]=$m
    sub_mb[$t]=$(du -sm "$work/$t" | cut -f1)
done

# The example binary: time and size of assembling it.
CARGO_TARGET_DIR=$PWD/target/try RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release --locked --target x86_64-unknown-linux-gnu --manifest-path examples/hello-http/Cargo.toml
bin=$PWD/target/try/x86_64-unknown-linux-gnu/release/hello-http
: >"$work/ex.times"
for _ in $(seq "$RUNS"); do
    measure "rm -rf $work/ex && $kiln assemble --quiet --add $bin:/app:0755 --entrypoint /app --out oci:$work/ex" >>"$work/ex.times"
done
ex_secs=$(cut -d' ' -f1 "$work/ex.times" | median)
ex_layer=$(find "$work/ex/blobs/sha256" -type f -printf '%s\n' | sort -n | tail -1)
ex_bin=$(stat -c %s "$bin")


section=$(cat <<EOF
<!-- assemble:begin -->
## kiln assemble (issue 2)

Measured $(date -u +%Y-%m-%d) on this machine ($(nproc) cores), \`RUNS=$RUNS scripts/bench-assemble.sh\`,
median of $RUNS runs each, all in the same run. Tree: a copy of the Rust toolchain's \`lib/rustlib\`
($tree_mb MB, $files files). Peers:
\`tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -c DIR | gzip -n -6\` and the same
with \`pigz -n -6 -p 2\`. kiln writes a complete OCI layout (layer, config, manifest, index).

| | wall (s) | kiln ÷ peer | compressed layer (bytes) | size vs gzip -6 | peak RSS |
| --- | --- | --- | --- | --- | --- |
| kiln assemble (gzip 6, all cores) | ${secs[kiln]} | | $layer | $(pct "$layer" "$gzip_size") | $((mem[kiln] / 1024)) MB |
| tar \| gzip -n -6 | ${secs[gzip]} | $(ratio "${secs[kiln]}" "${secs[gzip]}")× | $gzip_size | | $((mem[gzip] / 1024)) MB (time of sh) |
| tar \| pigz -n -6 -p 2 | ${secs[pigz]} | $(ratio "${secs[kiln]}" "${secs[pigz]}")× | $pigz_size | $(pct "$pigz_size" "$gzip_size") | $((mem[pigz] / 1024)) MB (time of sh) |

Peak memory against tree size (kiln streams; memory should not follow the tree; half and double are
single runs, full is the median above):

| tree | size | kiln peak RSS |
| --- | --- | --- |
| half (files in name order up to half the bytes) | ${sub_mb[half]} MB | $((sub_mem[half] / 1024)) MB |
| full | $tree_mb MB | $((mem[kiln] / 1024)) MB |
| double (two copies) | ${sub_mb[double]} MB | $((sub_mem[double] / 1024)) MB |

Example binary (\`examples/hello-http\`, static, $ex_bin bytes) onto scratch: ${ex_secs} s wall,
layer $ex_layer bytes.
<!-- assemble:end -->
EOF
)
write_section assemble "$section"
