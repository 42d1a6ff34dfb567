#!/usr/bin/env bash
# What `kiln check` costs on examples/with-deps, against doing the same
# runtime steps by hand in a shell script with docker and curl, same run:
# load the image, an internal network, a production-like run (read-only
# root, tmpfs /tmp, no capabilities, the .env.production), a writable twin
# for `docker diff`, a run without DATABASE_URL, settle 1 s, port and
# /health from outside, SIGTERM with `docker stop`, `docker diff`, cleanup.
# The script does less than kiln (no scan, no secrets, no pinned inputs, no
# undeclared-listener check, no verdicts): kiln's extra items are inside
# its time. Both start from the image outside the engine (kiln from an OCI
# layout, the script from a docker-archive) and leave the engine as found.
# Writes the "check" section of BENCHMARKS.md.
#   scripts/bench-check.sh        (RUNS=N for more runs; median reported)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
RUNS=${RUNS:-5}
bench_setup check
(cd examples/with-deps && tar --exclude=./target --exclude=./kiln.lock -cf - .) | (mkdir -p "$work/p" && tar -xf - -C "$work/p")
export CONTAINERS_REGISTRIES_CONF
(cd "$work/p" && SOURCE_DATE_EPOCH=1700000000 "$kiln" build --quiet --out "oci:$work/layout:bench" \
    --out "docker-archive:$work/image.tar:kiln-bench/with-deps:check" >/dev/null)
# Leftovers of an interrupted run of this script.
docker ps -aq --filter ancestor=kiln-bench/with-deps:check | xargs -r docker rm -f >/dev/null
docker network ls -q --filter name=kiln-bench- | xargs -r docker network rm >/dev/null
docker rmi kiln-bench/with-deps:check >/dev/null 2>&1 || true

by_hand() {
    set -e
    local img=kiln-bench/with-deps:check net=kiln-bench-$$ main twin noenv ip code
    docker load -q -i "$work/image.tar" >/dev/null
    docker network create --internal "$net" >/dev/null
    local common=(--network "$net" --tmpfs /tmp:rw,nosuid,nodev,size=64m --cap-drop ALL --security-opt no-new-privileges)
    local envf=$work/p/.env.production
    grep -v '^DATABASE_URL=' "$envf" >"$work/noenv.env"
    main=$(docker run -d --read-only "${common[@]}" --env-file "$envf" "$img")
    twin=$(docker run -d "${common[@]}" --env-file "$envf" "$img")
    noenv=$(docker run -d --read-only "${common[@]}" --env-file "$work/noenv.env" "$img")
    sleep 1
    [ "$(docker inspect -f '{{.State.Running}}' "$main")" = true ]
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$main")
    curl -fsS -o /dev/null "http://$ip:8080/"
    curl -fsS -o /dev/null "http://$ip:8080/health"
    code=$(timeout 10 docker wait "$noenv")
    [ "$code" != 0 ] && docker logs "$noenv" 2>&1 | grep -q DATABASE_URL
    docker stop -t 10 "$main" >/dev/null
    [ "$(docker inspect -f '{{.State.ExitCode}}' "$main")" = 0 ]
    [ -z "$(docker diff "$twin")" ]
    docker rm -f "$main" "$twin" "$noenv" >/dev/null
    docker network rm "$net" >/dev/null
    docker rmi "$img" >/dev/null
}
export -f by_hand
export work
for i in $(seq "$RUNS"); do
    wall_time "$kiln" check --quiet --project "$work/p" "oci:$work/layout:bench" >>"$work/kiln"; echo >>"$work/kiln"
    wall_time bash -c by_hand >>"$work/hand"; echo >>"$work/hand"
done
k=$(grep -v '^$' "$work/kiln" | median)
h=$(grep -v '^$' "$work/hand" | median)
start=$("$kiln" check --json --project "$work/p" "oci:$work/layout:bench" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(" ".join(i["status"] for i in r["items"]))')
write_section check "<!-- check:begin -->
## kiln check (\`scripts/bench-check.sh\`)

$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), RUNS=$RUNS (median), examples/with-deps
(its [check]: health /health, required_env DATABASE_URL, .env.production; settle 1 s, the default).

| what | seconds | ratio |
| --- | --- | --- |
| \`kiln check\` (all nine items: $start), image loaded from an OCI layout and removed after | $k | $(ratio "$k" "$h")× |
| the runtime steps by hand: \`docker load\`, \`docker run\` ×3, \`sleep 1\`, \`curl\` ×2, \`docker wait\`/\`logs\`, \`docker stop\`, \`docker diff\`, cleanup | $h | 1.00× |

Goal: under 5 s plus the app's own start time (this app starts in milliseconds), met. Both wait
the same 1 s settle; kiln also scans the image, reads every layer for secrets and checks the
pins, and runs its three containers at once.
<!-- check:end -->"
echo "bench: kiln check ${k}s, by hand ${h}s" >&2
