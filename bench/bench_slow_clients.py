#!/usr/bin/env python3
"""/health latency of a real server as it ships, alone and while 200 slow connections are open.

The slow connections are those of tests/test_slow_clients.py: 70 trickling a request head a line every half
second, 70 trickling a 1 MiB body a byte every half second, 60 downloading a 10 MiB blob without reading. Probes
of GET /health, each on a fresh connection, run back to back for --seconds in each phase (within the server's
20 s header timeout, so every slow connection stays open meanwhile). Prints p50, p99 and max per phase and the
ratio of the p99s, both measured in the same run.

    python3 bench/bench_slow_clients.py [--seconds 12]
"""
import argparse
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.server import BenchServer, percentile  # noqa: E402
from tests.slow_clients import Trickler, open_slow_connections  # noqa: E402

BLOB = "/v1/bench/big/1.0.0/x/blob"


def probe(url, seconds):
    """Latencies (ms) of back-to-back GET /health on fresh connections for ``seconds``; any failure is fatal."""
    latencies, ends = [], time.monotonic() + seconds
    while time.monotonic() < ends:
        started = time.perf_counter()
        response = requests.get(url + "/health", timeout=30)
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit("/health answered %d" % response.status_code)
    return latencies


def report(name, latencies):
    print("%-26s %5d probes  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms" % (
        name, len(latencies), percentile(latencies, 0.5), percentile(latencies, 0.99), max(latencies)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="probing time per phase (default 12)")
    args = parser.parse_args()
    with BenchServer() as server:
        assert requests.put(server.url + BLOB, data=b"z" * (10 * 1024 * 1024), headers=server.auth,
                            timeout=60).status_code == 201
        alone = probe(server.url, args.seconds)
        trickler = Trickler(int(server.url.rsplit(":", 1)[1]))
        open_slow_connections(trickler, server.auth["Authorization"].split()[1], BLOB)
        trickler.start()
        try:
            attacked = probe(server.url, args.seconds)
            still_open = sum(1 for sock in trickler.pieces if not trickler.closed_by_server(sock, wait=0.001))
        finally:
            trickler.stop.set()
    report("alone", alone)
    report("200 slow connections", attacked)
    print("slow connections still open at the end of the phase: %d of 200" % still_open)
    print("p99 ratio (attacked / alone): %.2f" % (percentile(attacked, 0.99) / percentile(alone, 0.99)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
