#!/usr/bin/env python3
"""Depot's npm pack against Verdaccio: packument reads of a package with 2,000 versions, and the publish of a
100 MiB tarball with the server's memory growth.

Both servers run as real processes on loopback: Verdaccio 6.8 as tests/npm pins it (tests/npm_clients.Verdaccio:
no uplink, htpasswd users, a user created through `PUT /-/user/org.couchdb.user:bench` as `npm adduser` does),
and Depot as it ships (`python -m app serve`, bench/server.py; schema.json with packs/npm.json mounted at
/npm/{namespace}, the registry at <depot>/npm/bench/, an admin API token as the npm token). Each gets the same
2,000 versions of one package, PUT over HTTP as the documents `npm publish` sends (tests/npm_clients.
publish_document: small tarballs with their sha512 integrity and sha1 shasum). Before anything is timed, each
server's packument, full and abbreviated, must list exactly those versions with their integrity (else exit 1).

- Packument reads: `GET /<package>` with `Accept: application/json` (the full document, as npm install asks) and
  with `Accept: application/vnd.npm.install-v1+json` (the abbreviated one pnpm asks for), each with the token and
  `Accept-Encoding: gzip, deflate` as npm sends them, from --connections concurrent keep-alive connections for
  --seconds per server per round: wrk when it is installed (`apt-get install wrk`), else a Python client of
  threads (--client chooses; the same client for both servers). The servers take turns round by round (which
  goes first alternates), so a slow moment of the machine slows both. Reported: requests/s (median of the
  rounds), p50 and p99 latency, the bytes of one answer on the wire.
- Publish: a 100 MiB tarball (--publish-mib; random bytes, so gzip does not shrink it) per round to each server,
  its publish document (base64 inside JSON, ~134 MiB) streamed from a file, while /proc/<pid>/status is sampled:
  the time to the answer, and the server's peak resident memory above what it was just before (VmRSS sampled
  every few ms; VmHWM's growth over the whole phase beside it).

Prints a table with the ratios depot/verdaccio (each the median of the per-round ratios) and writes every figure
to --json (default bench/results/bench_npm-<time>.json). `--only verdaccio` runs Verdaccio alone (what runs
before the pack exists); `--only depot` Depot alone.

    python3 bench/bench_npm.py                         # ~5 min
    python3 bench/bench_npm.py --only verdaccio --versions 500 --rounds 3 --publish-rounds 1
"""
import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import loadgen  # noqa: E402
from bench.server import ROOT, BenchServer, MemorySampler, memory_kib, write_results  # noqa: E402
from tests.npm_clients import (INSTALL_V1, Verdaccio, escaped_name, integrity, npm_tarball,  # noqa: E402
                               publish_document)
from tests.pypi_clients import schema_with_the_pack  # noqa: E402

PACKAGE = "bench-package"
BIG_PACKAGE = "bench-big"
NAMESPACE = "bench"
MIB = 1 << 20
ACCEPTS = {"full": "application/json", "abbreviated": INSTALL_V1}
ACCEPT_ENCODING = "gzip, deflate"  # what npm sends: a server may compress its answers


@dataclass
class Target:
    """One server as the benchmark drives it: its process, its registry URL and the token npm would send."""
    name: str
    pid: int
    registry: str
    token: str
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self):
        self.session.headers["Authorization"] = "Bearer " + self.token

    def url(self, name):
        return self.registry + escaped_name(name)

    def publish(self, name, version, tarball=b"", body_file=None):
        """PUT one version's publish document (built from ``tarball``, or read from ``body_file``)."""
        if body_file is None:
            body = json.dumps(publish_document(self.registry, name, version, tarball))
            response = self.session.put(self.url(name), data=body, timeout=600,
                                        headers={"Content-Type": "application/json"})
        else:
            with open(body_file, "rb") as handle:
                response = self.session.put(self.url(name), data=handle, timeout=600,
                                            headers={"Content-Type": "application/json"})
        if response.status_code not in (200, 201):
            raise SystemExit("%s refused %s@%s: %d %s" % (self.name, name, version, response.status_code,
                                                         response.text[:300]))


def versions_of(count):
    """``count`` distinct versions in an order that differs from string order (1.0.0 ... 1.9.99 ...)."""
    return ["1.%d.%d" % divmod(i, 100) for i in range(count)]


def load(target, tarballs, workers):
    """Publish every version of PACKAGE to ``target``; returns the seconds it took."""
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda item: target.publish(PACKAGE, item[0], item[1]), tarballs.items()))
    return time.perf_counter() - started


def check_packument(target, tarballs):
    """Both forms of PACKAGE's packument list exactly the published versions with their integrity."""
    expected = {version: integrity(data) for version, data in tarballs.items()}
    for form, accept in ACCEPTS.items():
        response = target.session.get(target.url(PACKAGE), headers={"Accept": accept}, timeout=600)
        listed = {}
        if response.status_code == 200:
            listed = {v: (m.get("dist") or {}).get("integrity") for v, m in response.json()["versions"].items()}
        if listed != expected:
            raise SystemExit("%s's %s packument (%d) does not list the %d versions: %d listed, %d missing, "
                             "%d wrong" % (target.name, form, response.status_code, len(expected), len(listed),
                                           len(set(expected) - set(listed)),
                                           sum(1 for v, d in listed.items() if expected.get(v) != d)))
    last = next(reversed(tarballs))
    manifest = target.session.get(target.url(PACKAGE), timeout=600).json()["versions"][last]
    data = target.session.get(manifest["dist"]["tarball"], timeout=600).content
    if data != tarballs[last]:
        raise SystemExit("%s served other bytes for %s@%s's tarball" % (target.name, PACKAGE, last))


# ---------------------------------------------------------------------------------------------- the HTTP clients

def headers_for(target, accept):
    return {"Accept": accept, "Accept-Encoding": ACCEPT_ENCODING, "Authorization": "Bearer " + target.token}


def measure_reads(target, form, client, connections, seconds):
    """One round of one form on one server: {"rate", "p50", "p99", "requests", "bytes"} (bench/loadgen.py)."""
    url = target.url(PACKAGE)
    headers = headers_for(target, ACCEPTS[form])
    figures = loadgen.rate(client, url, headers, connections, seconds)
    size = len(requests.get(url, headers=headers, timeout=600, stream=True).raw.read())
    return {"rate": figures["rate"], "p50": figures["p50"], "p99": figures["p99"], "requests": figures["requests"],
            "bytes": size}


# ---------------------------------------------------------------------------------------------- the big publish

def write_big_body(directory, registry, version, mib):
    """The publish document of BIG_PACKAGE@version with a ``mib`` MiB tarball, written to a file (the body is
    streamed from it, so the client holds none of it while the server works)."""
    tarball = npm_tarball(BIG_PACKAGE, version, payload_size=mib * MIB)
    path = directory / ("%s-%s.json" % (BIG_PACKAGE, version))
    path.write_text(json.dumps(publish_document(registry, BIG_PACKAGE, version, tarball)), encoding="ascii")
    return path, integrity(tarball)


def time_publish(target, version, body_file):
    """(seconds, peak RSS growth in KiB) of one big publish."""
    before = memory_kib(target.pid)[0]
    sampler = MemorySampler(target.pid)
    sampler.start()
    started = time.perf_counter()
    try:
        target.publish(BIG_PACKAGE, version, body_file=body_file)
    finally:
        peak = sampler.stop()
    return time.perf_counter() - started, peak - before


# ---------------------------------------------------------------------------------------------- the servers

def start_verdaccio(stack, work):
    server = stack.enter_context(Verdaccio(work / "verdaccio"))
    answer = requests.put(server.registry + "-/user/org.couchdb.user:bench", timeout=60,
                          json={"_id": "org.couchdb.user:bench", "name": "bench", "password": "bench password",
                                "email": "bench@example.invalid", "type": "user", "roles": [], "date": "2026-01-01"})
    if answer.status_code != 201:
        raise SystemExit("Verdaccio refused the bench user: %d %s" % (answer.status_code, answer.text[:300]))
    return Target("verdaccio", server.proc.pid, server.registry, answer.json()["token"])


def start_depot(stack, work):
    server = stack.enter_context(BenchServer(["--schema", str(schema_with_the_pack(
        work, "packs/npm.json", "/npm/{namespace}"))]))
    token = requests.post(server.url + "/auth/tokens", headers=server.auth, timeout=60,
                          json={"name": "bench", "scopes": ["read", "write", "admin"]}).json()["token"]
    return Target("depot", server.proc.pid, "%s/npm/%s/" % (server.url, NAMESPACE), token)


# ---------------------------------------------------------------------------------------------- the report

def median_ratio(per_round, key):
    """The median over the rounds of depot's figure over verdaccio's (None unless both ran)."""
    if not all("depot" in r and "verdaccio" in r for r in per_round):
        return None
    return statistics.median(r["depot"][key] / r["verdaccio"][key] for r in per_round)


def summarize_reads(names, rounds):
    summary = {}
    for form in ACCEPTS:
        per_round = [r[form] for r in rounds]
        summary[form] = {name: {"rate": statistics.median(r[name]["rate"] for r in per_round),
                                "p50": statistics.median(r[name]["p50"] for r in per_round),
                                "p99": statistics.median(r[name]["p99"] for r in per_round),
                                "bytes": per_round[0][name]["bytes"]} for name in names}
        summary[form]["ratio_rate"] = median_ratio(per_round, "rate")
    return summary


def summarize_publishes(names, publishes, hwm_growth, mib):
    summary = {name: {"seconds": statistics.median(p[name][0] for p in publishes),
                      "mib_per_s": mib / statistics.median(p[name][0] for p in publishes),
                      "peak_rss_growth_mib": max(p[name][1] for p in publishes) / 1024,
                      "vmhwm_growth_mib": hwm_growth[name] / 1024} for name in names}
    summary["ratio_seconds"] = None
    if len(names) == 2:
        summary["ratio_seconds"] = statistics.median(p["depot"][0] / p["verdaccio"][0] for p in publishes)
    return summary


def print_report(names, reads, publish, args, client):
    print("\npackument of %s (%d versions), %s client, %d connections, %d rounds of %.0f s" % (
        PACKAGE, args.versions, client, args.connections, args.rounds, args.seconds))
    print("%-12s %-10s %9s %9s %9s %12s" % ("form", "server", "req/s", "p50 ms", "p99 ms", "bytes"))
    for form in ACCEPTS:
        for name in names:
            figures = reads[form][name]
            print("%-12s %-10s %9.1f %9.1f %9.1f %12d" % (form, name, figures["rate"], figures["p50"] * 1000,
                                                          figures["p99"] * 1000, figures["bytes"]))
        if reads[form]["ratio_rate"] is not None:
            print("%-12s ratio depot/verdaccio req/s: %.2f (median of the rounds)" % (form,
                                                                                      reads[form]["ratio_rate"]))
    print("\npublish of a %d MiB tarball, %d rounds" % (args.publish_mib, args.publish_rounds))
    print("%-10s %9s %9s %16s %18s" % ("server", "median s", "MiB/s", "peak RSS +MiB", "VmHWM +MiB (phase)"))
    for name in names:
        figures = publish[name]
        print("%-10s %9.2f %9.1f %16.1f %18.1f" % (name, figures["seconds"], figures["mib_per_s"],
                                                    figures["peak_rss_growth_mib"], figures["vmhwm_growth_mib"]))
    if publish["ratio_seconds"] is not None:
        print("ratio depot/verdaccio publish time: %.2f (median of the rounds)" % publish["ratio_seconds"])


def run(args, work, stack):
    client = args.client if args.client != "auto" else ("wrk" if loadgen.wrk_installed() else "python")
    tarballs = {version: npm_tarball(PACKAGE, version) for version in versions_of(args.versions)}
    targets = []
    if args.only != "depot":
        targets.append(start_verdaccio(stack, work))
    if args.only != "verdaccio":
        targets.append(start_depot(stack, work))
    names = [t.name for t in targets]
    loading = {}
    for target in targets:
        workers = args.workers if target.name == "depot" else 1  # Verdaccio rewrites the whole package per PUT
        loading[target.name] = load(target, tarballs, workers)
        check_packument(target, tarballs)
        print("%s: %d versions published in %.1f s (%d at a time); both packuments list them" % (
            target.name, len(tarballs), loading[target.name], workers))

    rounds = []
    for number in range(args.rounds):
        order = targets if number % 2 == 0 else targets[::-1]
        rounds.append({form: {t.name: measure_reads(t, form, client, args.connections, args.seconds)
                              for t in order} for form in ACCEPTS})
    reads = summarize_reads(names, rounds)

    hwm_before = {t.name: memory_kib(t.pid)[1] for t in targets}
    publishes = []
    for number in range(args.publish_rounds):
        version = "%d.0.0" % (number + 1)
        order = targets if number % 2 == 0 else targets[::-1]
        result = {}
        for target in order:
            body, digest = write_big_body(work, target.registry, version, args.publish_mib)
            result[target.name] = time_publish(target, version, body)
            body.unlink()
            served = target.session.get(target.url(BIG_PACKAGE), headers={"Accept": INSTALL_V1}, timeout=600)
            if served.json()["versions"][version]["dist"]["integrity"] != digest:
                raise SystemExit("%s lists another integrity for %s@%s" % (target.name, BIG_PACKAGE, version))
        publishes.append(result)
    publish = summarize_publishes(names, publishes, {t.name: memory_kib(t.pid)[1] - hwm_before[t.name]
                                                     for t in targets}, args.publish_mib)
    print_report(names, reads, publish, args, client)
    return {"measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "client": client, "arguments": vars(args),
            "loading_seconds": loading, "reads": reads, "read_rounds": rounds, "publish": publish,
            "publish_rounds": publishes}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=2000, help="versions of the package (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of reads (default 5)")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per server per form per round (5)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent connections (default 4)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="the HTTP load client (default: wrk if installed, else python)")
    parser.add_argument("--publish-mib", type=int, default=100, help="size of the big tarball (default 100)")
    parser.add_argument("--publish-rounds", type=int, default=3, help="big publishes per server (default 3)")
    parser.add_argument("--only", choices=("depot", "verdaccio"), help="run one server alone")
    parser.add_argument("--workers", type=int, default=4, help="parallel publishes filling Depot (default 4)")
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/...)")
    args = parser.parse_args()
    if args.only != "verdaccio" and not (ROOT / "packs" / "npm.json").exists():
        raise SystemExit("Depot has no npm pack yet (packs/npm.json): run with --only verdaccio")
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --client python")

    work = Path(tempfile.mkdtemp(prefix="bench-npm-"))
    try:
        with contextlib.ExitStack() as stack:
            results = run(args, work, stack)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results(results, "bench_npm", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
