#!/usr/bin/env python3
"""Memory of a real server under a long mixed load: does it stay flat?

16 clients for --seconds (default 90), in three equal phases, each client looping over a mix of requests:
`latest` and metadata reads, 1 KiB and 1 MiB downloads, 1 KiB publishes of new versions, tags, version lists and
searches. The server process's resident memory is sampled every second; printed per phase (start, end, peak),
with the requests served. Flat means the last phase grows little or nothing.

    python3 bench/bench_soak.py [--seconds 90] [--clients 16]
"""
import argparse
import itertools
import os
import random
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.server import BenchServer  # noqa: E402

PACKAGES = 20


def seed(server):
    session = requests.Session()
    session.headers.update(server.auth)
    for i in range(PACKAGES):
        for version, size in (("1.0.0", 1024), ("1.1.0", 1024 * 1024)):
            path = "/v1/soak/p%d/%s/x/blob" % (i, version)
            assert session.put(server.url + path, data=os.urandom(size), timeout=60).status_code == 201


def client(server, number, stop, served):
    session = requests.Session()
    session.headers.update(server.auth)
    rng = random.Random(number)
    versions = itertools.count()
    url = server.url + "/v1/soak/p%d"
    while not stop.is_set():
        package = url % rng.randrange(PACKAGES)
        kind = rng.random()
        if kind < 0.35:
            session.get(package + "/latest", timeout=60)
        elif kind < 0.55:
            session.get(package + "/1.0.0/x", timeout=60)
        elif kind < 0.70:
            session.get(package + "/1.0.0/x/blob", timeout=60)
        elif kind < 0.75:
            session.get(package + "/1.1.0/x/blob", timeout=60)
        elif kind < 0.85:
            version = "2.%d.%d" % (number, next(versions))
            session.put(package + "/%s/x/blob" % version, data=os.urandom(1024), timeout=60)
        elif kind < 0.90:
            session.put(package + "/tags/t%d-%d" % (number, next(versions)),
                        json={"version": "1.0.0", "variant": "x"}, timeout=60)
        elif kind < 0.95:
            session.get(package + "/versions", params={"page_size": 50}, timeout=60)
        else:
            session.get(server.url + "/v1/search", params={"q": "p1"}, timeout=60)
        served[number] += 1


def rocksdb_memory(server):
    """(bytes in use, bound) of the state store's memtables and block cache, from /health (admin detail)."""
    memory = requests.get(server.url + "/health", headers=server.auth, timeout=30).json()["stores"]["state"]["memory"]
    return memory["memtables_bytes"] + memory["block_cache_bytes"], memory["bound_bytes"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with BenchServer() as server:
        seed(server)
        stop, served = threading.Event(), [0] * args.clients
        threads = [threading.Thread(target=client, args=(server, n, stop, served), daemon=True)
                   for n in range(args.clients)]
        started_rss = server.memory_kib()[0]
        for thread in threads:
            thread.start()
        phase_seconds = args.seconds / 3
        phases = []
        for _ in range(3):
            samples, requests_before = [], sum(served)
            ends = time.monotonic() + phase_seconds
            while not stop.wait(max(0.0, min(1.0, ends - time.monotonic()))) and time.monotonic() < ends:
                samples.append(server.memory_kib()[0])
            samples.append(server.memory_kib()[0])
            phases.append((samples[0], samples[-1], max(samples), sum(served) - requests_before,
                           rocksdb_memory(server)))
        stop.set()
        for thread in threads:
            thread.join(60)
    print("%d clients, %.0f s, server RSS before the load %.1f MiB" % (args.clients, args.seconds,
                                                                       started_rss / 1024))
    for number, (first, last, peak, count, rocksdb) in enumerate(phases, 1):
        print("phase %d: RSS %.1f -> %.1f MiB (peak %.1f), %d requests (%.0f/s); RocksDB memtables + block cache "
              "%.1f MiB of their %.0f MiB bound" % (number, first / 1024, last / 1024, peak / 1024, count,
                                                    count / phase_seconds, rocksdb[0] / 2 ** 20, rocksdb[1] / 2 ** 20))
    print("growth in the last phase: %+.1f MiB" % ((phases[2][1] - phases[2][0]) / 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())
