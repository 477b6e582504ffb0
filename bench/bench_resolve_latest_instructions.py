#!/usr/bin/env python3
"""CPU instructions per request of the compiled `resolve_latest` route and of the hand-written view, counted by
valgrind's callgrind: the same numbers on every run, whatever else the machine is doing.

Each variant runs in a child process under callgrind twice, with N and 2N timed requests after the same set-up;
the difference divided by N is that variant's instructions per request, set-up and warm-up cancelled out.
Caches refreshed by wall time are held for the run (hold_periodic_refreshes says why).

    python3 bench/bench_resolve_latest_instructions.py [--requests 200]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def child(variant, requests):
    """Set up a small store, warm up, then send ``requests`` requests to one variant."""
    import bench_resolve_latest as bench

    data_dir = tempfile.mkdtemp(prefix="depot-bench-cg-")
    try:
        schema = bench.FIXTURE_SCHEMA if not bench.SHARED_SCHEMA.exists() else bench.SHARED_SCHEMA
        _, depot = bench.start_depot(data_dir, schema)
        hold_periodic_refreshes(depot.service)
        app = depot.app
        app.add_url_rule("/v1/<namespace>/<name>/latest" + bench.HAND_SUFFIX, "bench_handwritten",
                         bench.make_handwritten_view(depot.service), methods=["GET"])
        packages = [("team-a", "pkg-%03d" % i) for i in range(5)]
        bench.publish(app, depot.token(["read", "write"], "writer"), packages, bench.VERSIONS[:5])
        token = depot.token(["read"], "reader")
        suffix = bench.HAND_SUFFIX if variant == "handwritten" else ""
        environs = [bench.prepare(path + suffix, "Bearer " + token) for path in bench.request_paths(packages)]
        for _ in range(20):
            bench.run_batch(app, environs)
        batches, rest = divmod(requests, len(environs))
        for _ in range(batches):
            bench.run_batch(app, environs)
        bench.run_batch(app, environs[:rest])
        depot.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def hold_periodic_refreshes(service):
    """Under callgrind a request runs some fifty times slower, so work done once every few seconds of wall time
    (reading a token's account state again, looking at the grants' change counter) would be counted fifty times
    over, and more the busier the machine is: it would make the figure depend on the machine's load. Holding
    those caches for the run leaves the per-request work only, for both variants alike."""
    from app.identity import access

    access.SNAPSHOT_SECONDS = float("inf")
    identity = service.identity
    for cache in (identity._users, identity._revoked, identity._api, identity._signed):
        cache.ttl = float("inf")


def count(variant, requests):
    out = tempfile.mktemp(prefix="depot-callgrind-")
    env = dict(os.environ, PYTHONHASHSEED="0")
    result = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, sys.executable,
                             __file__, "--child", variant, str(requests)], capture_output=True, text=True, env=env)
    if os.path.exists(out):
        os.unlink(out)
    match = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or match is None:
        raise SystemExit("callgrind run failed:\n" + result.stderr[-2000:])
    return int(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    per_request = {}
    for variant in ("compiled", "handwritten"):
        once, twice = count(variant, args.requests), count(variant, 2 * args.requests)
        per_request[variant] = (twice - once) / args.requests
        print("%-12s %12.0f instructions per request" % (variant, per_request[variant]))
    ratio = per_request["handwritten"] / per_request["compiled"]
    print("throughput ratio by instructions, compiled/handwritten = %.3f" % ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
