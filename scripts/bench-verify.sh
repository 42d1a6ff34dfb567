#!/usr/bin/env bash
# Benchmarks for issue 6, same run:
#  - `kiln verify --rebuilds 2` against two `kiln build --fresh` (clean caches)
#    of the same project;
#  - `kiln diff` on two ~500 MB images that differ in a few files against
#    diffoscope (diffoscope-minimal) on the same two images extracted, and
#    whether both find the same differing files.
# Regenerates the "kiln verify / diff" section of BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
bench_setup verify
command -v diffoscope >/dev/null || { echo "bench: diffoscope missing (apt-get install diffoscope-minimal)" >&2; exit 1; }
export SOURCE_DATE_EPOCH=1700000000 KILN_CACHE_DIR=$work/cache
(cd examples/with-deps && tar --exclude=./target --exclude=./kiln.lock -cf - .) | (mkdir -p "$work/p" && tar -xf - -C "$work/p")
{ printf "[build]\nbuilder = \"%s\"\n" "$KILN_TEST_BUILDER_PINNED"; cat "$work/p/kiln.toml"; } >"$work/p/kiln.toml.new" && mv "$work/p/kiln.toml.new" "$work/p/kiln.toml"
two_fresh_builds() { "$kiln" build --quiet --fresh && "$kiln" build --quiet --fresh; }
# verify exits 1 when the builds differ: a complete run all the same (the verdict below says which).
verify_run() { local rc=0; "$kiln" verify --rebuilds 2 || rc=$?; [ "$rc" -le 1 ]; }
two_builds=$(cd "$work/p" && wall_time two_fresh_builds)
verify_s=$(cd "$work/p" && wall_time verify_run)
verdict=$(cd "$work/p" && { "$kiln" verify --rebuilds 2 --json || true; } | python3 -c 'import json,sys; print("identical" if json.load(sys.stdin)["identical"] else "different")')

# Two ~500 MB images: the same 480 MB of data plus a few small files that differ.
mkdir -p "$work/a/data" "$work/b"
for i in $(seq 1 12); do head -c 40000000 /dev/urandom >"$work/a/data/blob$i"; done
printf 'version = 1\n' >"$work/a/data/config.toml"
cp -a "$work/a/." "$work/b/"
printf 'version = 2\n' >"$work/b/data/config.toml"
head -c 1000 /dev/urandom >>"$work/b/data/blob7"
"$kiln" assemble --quiet --add "$work/a/data:/data" --out "oci:$work/img:a" >/dev/null
"$kiln" assemble --quiet --add "$work/b/data:/data" --out "oci:$work/img:b" >/dev/null
# kiln diff exits 1 when the images differ, as these do.
diff_run() { local rc=0; "$kiln" diff "oci:$work/img:a" "oci:$work/img:b" || rc=$?; [ "$rc" -eq 1 ]; }
diff_s=$(wall_time diff_run)
kiln_files=$({ "$kiln" diff --json "oci:$work/img:a" "oci:$work/img:b" || true; } | python3 -c 'import json,sys; r=json.load(sys.stdin); print(" ".join(sorted(f["path"] for l in r["layers"] for f in l["files"])))')
# diffoscope on the same two images, extracted.
for x in a b; do
    mkdir -p "$work/x-$x"
    blob=$(python3 - "$work/img" "$x" <<'PY'
import json, sys, os
d, tag = sys.argv[1], sys.argv[2]
idx = json.load(open(os.path.join(d, "index.json")))
m = [m for m in idx["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag][0]
man = json.load(open(os.path.join(d, "blobs/sha256", m["digest"].split(":")[1])))
print(os.path.join(d, "blobs/sha256", man["layers"][-1]["digest"].split(":")[1]))
PY
)
    tar -xzf "$blob" -C "$work/x-$x"
done
# diffoscope exits 1 when it finds differences (0: none, 2: an error).
dscope_run() { local rc=0; diffoscope --no-progress --text "$work/diffoscope.txt" "$work/x-a" "$work/x-b" || rc=$?; [ "$rc" -eq 1 ]; }
dscope_s=$(wall_time dscope_run)
dscope_files=$(grep -oE '^│?[ ├─│]*(--- |\+\+\+ )?[^ ]*/data/[^ ]+' "$work/diffoscope.txt" | grep -oE 'data/[^ ]+' | sort -u | sed 's|^|/|' | tr '\n' ' ')
section=$(cat <<EOS
<!-- verify:begin -->
## kiln verify / kiln diff (issue 6)

Measured $(date -u +%Y-%m-%d), \`scripts/bench-verify.sh\`, same run, single runs (each case takes long).

| case | kiln (s, single run) | peer (s, single run) | ratio |
| --- | --- | --- | --- |
| \`kiln verify --rebuilds 2\` (examples/with-deps) vs two \`kiln build --fresh\` | $verify_s | $two_builds | $(ratio "$verify_s" "$two_builds")× |
| \`kiln diff\` of two ~500 MB images vs \`diffoscope\` on them extracted | $diff_s | $dscope_s | $(ratio "$diff_s" "$dscope_s")× |

verify verdict: $verdict. Differing files found — kiln: $kiln_files; diffoscope: $dscope_files
<!-- verify:end -->
EOS
)
write_section verify "$section"
