#!/usr/bin/env python3
"""A fleet on paper: N CI runners, M services, one registry as kiln's build
cache. Simulates 30 days of pipelines with this machine's measured numbers
(pass them as flags) and prints a markdown table: hit rates with only each
runner's local cache vs the registry cache, build time spent, and the
registry storage the cache takes with and without garbage collection.

Model (deliberately simple, stated so it can be argued with):
- every working day each service gets C commits (Poisson); each commit is
  built by P pipeline jobs that need its image (PR build, merge build,
  check, deploy, re-runs), each on a runner picked at random;
- a commit's inputs are new: its first build anywhere is a miss; later
  builds hit the registry cache, and hit a local cache only on a runner
  that built that key before (runners are recycled: a local cache lives
  R days);
- each entry stores one image (its layers differ from the previous
  commit's: the binary changed) plus the crate list;
- with --edit (seconds of a fresh runner's build that restores the
  compiled-dependencies layer): a miss costs --edit instead of --cold when
  the service's dependency layer is in the registry; a commit changes
  Cargo.lock with probability --lock-change (a new dependency key: its
  first build is cold and writes a layer of --deps-mb);
- GC keeps the entries of the last K commits of each service (and the
  last --keep-deps dependency layers) and deletes older `kiln-cache-*`
  and `kiln-deps-*` tags (and the blobs only they reference).

  scripts/fleet-sim.py --runners 40 --services 25 --cold 44.0 --hit 0.6 --entry-mb 0.9 \
      [--edit 7.0 --deps-mb 23]
"""
import argparse
import math
import random


def poisson(rng, lam):
    # Knuth: fine for the small means used here.
    l, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= l:
            return k
        k += 1


def simulate(a, registry, deps=False):
    rng = random.Random(a.seed)
    local = [dict() for _ in range(a.runners)]  # runner -> key -> day built
    stored = []  # (day, service, key, size) of registry entries
    layers = []  # (service, size) of dependency layers
    lock = {}  # service -> its Cargo.lock's generation
    has_layer = set()  # (service, generation) with a layer in the registry
    builds = hits = 0
    seconds = 0.0
    for day in range(a.days):
        if a.runner_life and day % a.runner_life == 0:
            local = [dict() for _ in range(a.runners)]
        for s in range(a.services):
            for c in range(poisson(rng, a.commits)):
                key = (s, day, c)
                if rng.random() < a.lock_change:
                    lock[s] = lock.get(s, 0) + 1
                gen = (s, lock.get(s, 0))
                in_registry = False
                for _ in range(a.jobs):
                    r = rng.randrange(a.runners)
                    builds += 1
                    if key in local[r] or (registry and in_registry):
                        hits += 1
                        seconds += a.hit
                    else:
                        if deps and gen in has_layer:
                            seconds += a.edit
                        else:
                            seconds += a.cold
                            if deps:
                                has_layer.add(gen)
                                layers.append((s, a.deps_mb))
                        if registry:
                            in_registry = True
                            stored.append((day, s, key, a.entry_mb))
                    local[r][key] = day
    return builds, hits, seconds, stored, layers


def storage(stored, keep):
    total = sum(e[3] for e in stored)
    if keep is None:
        return total
    by_service = {}
    for e in stored:
        by_service.setdefault(e[1], []).append(e)
    return sum(sum(e[3] for e in es[-keep:]) for es in by_service.values())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runners", type=int, default=40)
    p.add_argument("--services", type=int, default=25)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--commits", type=float, default=6.0, help="commits per service per day (mean)")
    p.add_argument("--jobs", type=int, default=4, help="pipeline jobs per commit that need the image")
    p.add_argument("--runner-life", type=int, default=1, help="days a runner's local cache lives (0: forever)")
    p.add_argument("--cold", type=float, required=True, help="seconds of a cold build (measured)")
    p.add_argument("--hit", type=float, required=True, help="seconds of a registry hit (measured)")
    p.add_argument("--entry-mb", type=float, required=True, help="MB one cache entry adds (measured)")
    p.add_argument("--edit", type=float, help="seconds of a miss that restores the dependency layer (measured)")
    p.add_argument("--deps-mb", type=float, default=0.0, help="MB of one dependency layer (measured)")
    p.add_argument("--lock-change", type=float, default=0.05, help="share of commits that change Cargo.lock")
    p.add_argument("--keep", type=int, default=20, help="GC: entries kept per service")
    p.add_argument("--keep-deps", type=int, default=2, help="GC: dependency layers kept per service")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    lb, lh, ls, _, _ = simulate(a, registry=False)
    rb, rh, rs, stored, _ = simulate(a, registry=True)
    cols = ["local caches only", "registry cache"]
    if a.edit is not None:
        db, dh, ds, dstored, layers = simulate(a, registry=True, deps=True)
        cols.append("registry cache + dependency layer")
    print(f"| {a.runners} runners, {a.services} services, {a.days} days, {a.commits:g} commits/service/day, "
          f"{a.jobs} jobs/commit | " + " | ".join(cols) + " |")
    print("| --- |" + " --- |" * len(cols))
    gb = lambda mb: mb / 1024
    rows = [
        ("builds that needed the image", [f"{lb}", f"{rb}"], f"{db}" if a.edit is not None else None),
        ("hit rate", [f"{100 * lh / lb:.1f}%", f"{100 * rh / rb:.1f}%"], f"{100 * dh / db:.1f}%" if a.edit is not None else None),
        ("build time spent (runner-hours)", [f"{ls / 3600:.1f}", f"{rs / 3600:.1f} ({rs / ls:.2f}×)"],
         f"{ds / 3600:.1f} ({ds / ls:.2f}×)" if a.edit is not None else None),
        ("cache entries written", ["–", f"{len(stored)}"], f"{len(dstored)} + {len(layers)} dependency layers" if a.edit is not None else None),
        (f"registry storage after {a.days} days, no GC", ["–", f"{gb(storage(stored, None)):.2f} GB"],
         f"{gb(storage(dstored, None) + sum(l[1] for l in layers)):.2f} GB" if a.edit is not None else None),
    ]
    if a.edit is not None:
        kept_layers = 0.0
        by = {}
        for l in layers:
            by.setdefault(l[0], []).append(l[1])
        kept_layers = sum(sum(v[-a.keep_deps:]) for v in by.values())
    kept = f"{a.keep} entries" + (f" (and {a.keep_deps} dependency layers)" if a.edit is not None else "")
    rows.append((f"… with GC keeping {kept} per service",
                 ["–", f"{gb(storage(stored, a.keep)):.3f} GB"],
                 f"{gb(storage(dstored, a.keep) + kept_layers):.3f} GB" if a.edit is not None else None))
    for name, vals, extra in rows:
        print(f"| {name} | " + " | ".join(vals + ([extra] if extra is not None else [])) + " |")


if __name__ == "__main__":
    main()
