#!/usr/bin/env python3
"""The same routes on the embedded stack (one process) and on the shared one (PostgreSQL state, S3 blobs, Redis
caches) with 1, 2 and 4 worker processes (`serve --workers N`), measured in one run, interleaved round by round.

Every server is a real `python -m app serve` on loopback with its own repository: the embedded one in its data
dir; each shared one in a table of its own of a new PostgreSQL database (127.0.0.1:5432, dropped at the end), a
prefix of its own in a SeaweedFS S3 server started here (tests/s3_server.py) and in the machine's Redis. Each is
loaded with ten 1 KiB versions over HTTP, then every round measures requests/s of `latest`, a metadata read
and the 1 KiB download on each server (wrk -t2 -c16 when installed, else Python threads), in an order reversed
every other round. Figures are medians over the rounds; ratios are of the embedded one-process server measured in
the same round. Results go to bench/results/stacks-<time>.json.

    python3 bench/bench_stacks.py [--rounds 3] [--seconds 5] [--workers 1,2,4]
"""
import argparse
import os
import statistics
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import loadgen  # noqa: E402
from bench.server import BenchServer, write_results  # noqa: E402
from tests.s3_server import SeaweedS3, weed_binary  # noqa: E402

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"
CONNECTIONS = 16
APP = "/v1/bench/app"
ROUTES = {"latest": APP + "/latest", "metadata": APP + "/1.0.9/linux-amd64",
          "download_1k": APP + "/1.0.9/linux-amd64/blob"}


class Database:
    """A new PostgreSQL database, dropped on leaving."""

    def __enter__(self):
        import psycopg
        self.name = "depot_bench_" + uuid.uuid4().hex[:10]
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute('CREATE DATABASE "%s"' % self.name)
        self.url = POSTGRES.rsplit("/", 1)[0] + "/" + self.name
        return self

    def __exit__(self, *exc):
        import psycopg
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % self.name)


def shared_env(database, s3, name):
    """One repository's place on the shared stack."""
    return {"DEPOT_STATE_URL": "%s?table=%s" % (database.url, name),
            "DEPOT_BLOB_URL": "s3://%s/%s?endpoint_url=%s&region=us-east-1" % (s3.bucket, name, s3.endpoint_url),
            "DEPOT_CACHE_URL": "%s?prefix=bench-%s-%s" % (REDIS, name, uuid.uuid4().hex[:8]),
            **s3.credentials}


def load(server):
    """Ten 1 KiB versions, each read back."""
    session = requests.Session()
    session.headers.update(server.auth)
    for patch in range(10):
        answer = session.put(server.url + APP + "/1.0.%d/linux-amd64/blob" % patch, data=os.urandom(1024),
                             timeout=60)
        if answer.status_code != 201:
            raise SystemExit("publish: %d %s" % (answer.status_code, answer.text[:200]))
    latest = session.get(server.url + ROUTES["latest"], timeout=60).json()
    if latest.get("version") != "1.0.9":
        raise SystemExit("latest answered %s" % latest)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", default="1,2,4", help="worker counts of the shared stack (default 1,2,4)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    client = ("wrk" if loadgen.wrk_installed() else "python") if args.client == "auto" else args.client
    counts = [int(n) for n in args.workers.split(",")]
    with ExitStack() as stack:
        database = stack.enter_context(Database())
        s3 = SeaweedS3(weed_binary(), tempfile.mkdtemp(prefix="depot-bench-s3-"))
        stack.callback(s3.stop)
        servers = {"embedded_1": stack.enter_context(BenchServer())}
        for count in counts:
            env = shared_env(database, s3, "w%d" % count)
            servers["shared_%d" % count] = stack.enter_context(BenchServer(["--workers", str(count)], env=env))
        for server in servers.values():
            load(server)
        rounds = []
        for number in range(args.rounds):
            order = list(servers) if number % 2 == 0 else list(reversed(servers))
            rounds.append({name: {route: loadgen.rate(client, servers[name].url + path, servers[name].auth,
                                                      CONNECTIONS, args.seconds)
                                  for route, path in ROUTES.items()} for name in order})
            print("round %d done" % (number + 1), flush=True)
    summary = summarize(rounds)
    write_results({"settings": vars(args), "client": client, "rounds": rounds, "summary": summary}, "stacks")
    print_table(summary, client, args)


def summarize(rounds):
    """name -> route -> {rps: median req/s, ratio: median of each round's ratio to embedded_1}."""
    summary = {}
    for name in rounds[0]:
        summary[name] = {}
        for route in ROUTES:
            rates = [r[name][route]["rate"] for r in rounds]
            ratios = [r[name][route]["rate"] / r["embedded_1"][route]["rate"] for r in rounds]
            summary[name][route] = {"rps": statistics.median(rates), "ratio": statistics.median(ratios)}
    return summary


def print_table(summary, client, args):
    print("\n%s, %d rounds of %.0f s per URL, %d connections; ratio: of embedded_1 in the same round\n"
          % (client, args.rounds, args.seconds, CONNECTIONS))
    print("| stack | " + " | ".join("%s req/s (ratio)" % route for route in ROUTES) + " |")
    print("|---|" + "---|" * len(ROUTES))
    for name, routes in summary.items():
        print("| %s | " % name + " | ".join("%.0f (%.2f)" % (routes[r]["rps"], routes[r]["ratio"]) for r in ROUTES)
              + " |")


if __name__ == "__main__":
    main()
