#!/usr/bin/env bash
# Benchmark of `kiln scan --all` on the dev-env builder image (≈1 GB, ~900
# of ELF files) against extracting it (tar) and running lddtree on every ELF
# file, in the same run. Also kiln's peak memory. Regenerates the "kiln scan"
# section of BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
RUNS=${RUNS:-3}
bench_setup scan
"$kiln" pull --quiet "$KILN_TEST_BUILDER" --out "oci:$work/layout:b" >/dev/null
blob=$(ls -S "$work"/layout/blobs/sha256/* | head -1)
size_mb=$(( $(stat -c %s "$blob") / 1000000 ))

# Each step must succeed (wall_time runs this with `set -e` off); lddtree's
# own exit status is ignored: it fails on files it cannot resolve.
peer() {
    rm -rf "$work/root" && mkdir "$work/root" &&
        tar -xzf "$blob" -C "$work/root" &&
        (cd "$work/root" && find . -type f -size +0 -print0 | xargs -0 -r file -N --mime-type |
            awk -F': ' '$2 ~ /application\/x-(pie-)?(executable|sharedlib)|application\/x-object/ {print substr($1,2)}' >"$work/elves") &&
        (cd "$work/root" && xargs -a "$work/elves" /usr/bin/python3 /usr/bin/lddtree --root "$work/root" --skip-non-elfs >/dev/null 2>&1 || true)
}
: >"$work/k"; : >"$work/p"; : >"$work/m"
for _ in $(seq "$RUNS"); do
    # kiln scan exits 1 on findings (the builder has no entrypoint): a complete run; 2 is a failure.
    s=$(date +%s.%N)
    /usr/bin/time -f '%x %M' -o "$work/t" "$kiln" scan --all --json "oci:$work/layout:b" >"$work/report.json" 2>"$work/scan.err" || true
    e=$(date +%s.%N)
    read -r rc m < <(tail -1 "$work/t")
    if [ "$rc" -gt 1 ]; then
        echo "bench: kiln scan failed (exit $rc):" >&2
        cat "$work/scan.err" >&2
        exit 1
    fi
    elapsed "$s" "$e" >>"$work/k"; echo >>"$work/k"
    echo "$m" >>"$work/m"
    wall_time peer >>"$work/p"; echo >>"$work/p"
done
k=$(median <"$work/k"); p=$(median <"$work/p"); m=$(median <"$work/m")
objects=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["objects"]))' "$work/report.json")
elves=$(wc -l <"$work/elves")
section=$(cat <<EOS
<!-- scan:begin -->
## kiln scan (issue 5)

Measured $(date -u +%Y-%m-%d), \`RUNS=$RUNS scripts/bench-scan.sh\`, median of $RUNS runs, same run. Image: the dev-env
builder (one ${size_mb} MB gzip layer; kiln checked $objects ELF objects, \`file\` found $elves ELF files).
Peer: \`tar -xzf\` of the layer + \`file\` to find ELF files + \`lddtree --root\` on all of them.

| | wall (s) | kiln ÷ peer | peak RSS |
| --- | --- | --- | --- |
| kiln scan --all (streamed, nothing extracted) | $k | $(ratio "$k" "$p")× | $((m / 1024)) MB |
| extract + lddtree on every ELF | $p | | |
<!-- scan:end -->
EOS
)
write_section scan "$section"
