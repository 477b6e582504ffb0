#!/usr/bin/env python3
"""Latency of `latest` for a package with 10,000 versions against one with 10, on the project schema.

The first row of a package's `latest_release` index key is its highest release, found with one seek whatever
the number of versions, so the two medians should be close. Goal: ratio of medians below 1.5.

    python3 bench/bench_latest_scaling.py [--many 10000] [--few 10] [--requests 3000]
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def versions(count):
    """Distinct semver versions whose string order differs from their precedence."""
    return ["%d.%d.%d" % (i // 1000, (i // 10) % 100, i % 10) for i in range(count)]


def publish_all(client, headers, name, count):
    for version in versions(count):
        response = client.put("/v1/bench/%s/%s/any/blob" % (name, version), data=version.encode(), headers=headers)
        assert response.status_code == 201, response.get_json()


def timed(client, url, headers):
    start = time.perf_counter_ns()
    response = client.get(url, headers=headers)
    elapsed = time.perf_counter_ns() - start
    assert response.status_code == 200, response.get_json()
    return elapsed, response.get_json()["version"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--many", type=int, default=10000)
    parser.add_argument("--few", type=int, default=10)
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per package")
    args = parser.parse_args()
    os.environ.setdefault("DEPOT_ADMIN_PASSWORD", "bench-admin-password")
    os.environ["DEPOT_BCRYPT_ROUNDS"] = "4"
    from app.tools.testing import LocalDepot

    data_dir = tempfile.mkdtemp(prefix="depot-bench-latest-")
    try:
        # sync=False only speeds up filling the store; the timed part only reads
        depot = LocalDepot(data_dir, sync=False)
        client = depot.client
        headers = {"Authorization": "Bearer " + depot.token(["read", "write"], "bench")}
        started = time.perf_counter()
        publish_all(client, headers, "few", args.few)
        publish_all(client, headers, "many", args.many)
        print("published %d + %d versions in %.1f s" % (args.few, args.many, time.perf_counter() - started))
        samples = {"few": [], "many": []}
        expected = {"few": versions(args.few)[-1], "many": versions(args.many)[-1]}
        for _ in range(200):  # warm-up
            timed(client, "/v1/bench/few/latest", headers)
            timed(client, "/v1/bench/many/latest", headers)
        for _ in range(args.requests):  # interleaved, so machine noise hits both alike
            for name in ("few", "many"):
                elapsed, version = timed(client, "/v1/bench/%s/latest" % name, headers)
                assert version == expected[name], (version, expected[name])
                samples[name].append(elapsed)
        few, many = (statistics.median(samples[n]) / 1000 for n in ("few", "many"))
        print("median latency of latest: %d versions %.1f us, %d versions %.1f us" % (args.few, few, args.many, many))
        ratio = many / few
        print("ratio %d/%d versions = %.3f (goal < 1.5: %s)" % (args.many, args.few, ratio,
                                                               "met" if ratio < 1.5 else "NOT met"))
        depot.close()
        return 0 if ratio < 1.5 else 1
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
