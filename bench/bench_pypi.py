#!/usr/bin/env python3
"""Depot's PyPI pack against pypiserver over the same files: the simple page of a project of 2,000 files, and the
upload of a 100 MiB wheel with the server's memory growth.

Both servers run as real processes: Depot as it ships (`python -m app serve`, bench/server.py; schema.json with the
pack mounted at /pypi/{namespace}) with the files uploaded through the pack's legacy API (/pypi/bench/legacy/, as
twine sends them), pypiserver with the same files written into its package directory. Before anything is timed,
each server's page must list exactly those files with their sha256 (else exit 1).

- Simple page: `GET` of the project's page with pip's Accept header (pip gets JSON where it is offered, HTML from
  pypiserver), back to back on one keep-alive connection per server, for --seconds per round; the servers take
  turns round by round (which goes first alternates), so a slow moment of the machine slows both. Depot is asked
  with an API token (Basic, `__token__`), as pip asks a private index; pypiserver with none.
- Upload: a 100 MiB wheel (--upload-mib) per round to each server, streamed from disk as a multipart form (twine's
  legacy API), while /proc/<pid>/status is sampled: time to the answer, and the peak of resident memory above
  what it was just before (VmRSS sampled every few ms, and VmHWM's growth over the whole phase).

Prints medians over the rounds and the ratios depot/pypiserver. `--only pypiserver` runs pypiserver alone (what
runs before the pack exists); `--only depot` Depot alone.

    python3 bench/bench_pypi.py                         # ~2 min
    python3 bench/bench_pypi.py --only pypiserver --files 500 --rounds 3
"""
import argparse
import contextlib
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
from bench.server import ROOT, BenchServer, MemorySampler, memory_kib, percentile  # noqa: E402
from tests.pypi_clients import (PIP_ACCEPT, SIMPLE_JSON, TOKEN_USER, PypiServer, build_wheel,  # noqa: E402
                                legacy_upload, schema_with_the_pack, simple_anchors)

PROJECT = "bench-project"
NAMESPACE = "bench"
MIB = 1 << 20


@dataclass
class Target:
    """One server as the benchmark drives it."""
    name: str
    pid: int
    upload_url: str
    page_url: str
    auth: tuple | None = None
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self):
        self.session.auth = self.auth
        self.session.headers["Accept"] = PIP_ACCEPT

    def upload(self, dist):
        response = legacy_upload(self.upload_url, dist, password=self.auth[1] if self.auth else "unused")
        if response.status_code not in (200, 201):
            raise SystemExit("%s refused %s: %d %s" % (self.name, dist.filename, response.status_code,
                                                       response.text[:300]))


def build_files(directory, count):
    """``count`` small wheels of PROJECT, each its own version (and so its own bytes)."""
    return [build_wheel(directory, PROJECT, "1.%d.%d" % divmod(i, 1000), requires=["requests>=2"],
                        requires_python=">=3.8") for i in range(count)]


def listed(response):
    """{filename: sha256} of a simple page, JSON or HTML."""
    if response.headers.get("Content-Type", "").startswith(SIMPLE_JSON):
        return {f["filename"]: f["hashes"].get("sha256") for f in response.json()["files"]}
    return {a["text"]: (a["href"] or "").partition("#sha256=")[2] for a in simple_anchors(response.text).anchors}


def check_listing(target, dists):
    response = target.session.get(target.page_url, timeout=600)
    found = listed(response) if response.status_code == 200 else {}
    expected = {d.filename: d.sha256 for d in dists}
    if found != expected:
        raise SystemExit("%s's page (%d) does not list the %d files: %d listed, %d missing, %d wrong" % (
            target.name, response.status_code, len(expected), len(found), len(set(expected) - set(found)),
            sum(1 for name, digest in found.items() if expected.get(name) != digest)))
    return len(response.content), response.headers.get("Content-Type", "").split(";")[0]


def time_page(target, seconds):
    """Latencies (s) of back-to-back GETs of the page for ``seconds``; any failure is fatal."""
    latencies, ends = [], time.monotonic() + seconds
    while time.monotonic() < ends:
        started = time.perf_counter()
        response = target.session.get(target.page_url, timeout=600)
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit("%s answered %d" % (target.name, response.status_code))
    return latencies


def time_upload(target, dist):
    """(seconds, peak RSS growth in KiB) of one upload."""
    before = memory_kib(target.pid)[0]
    sampler = MemorySampler(target.pid)
    sampler.start()
    started = time.perf_counter()
    try:
        target.upload(dist)
    finally:
        peak = sampler.stop()
    return time.perf_counter() - started, peak - before


def start_depot(stack, dists, workers, work):
    server = stack.enter_context(BenchServer(["--schema", str(schema_with_the_pack(work))]))
    token = requests.post(server.url + "/auth/tokens", headers=server.auth, timeout=60,
                          json={"name": "bench", "scopes": ["read", "write", "admin"]}).json()["token"]
    prefix = "%s/pypi/%s/" % (server.url, NAMESPACE)
    target = Target("depot", server.proc.pid, prefix + "legacy/", prefix + "simple/%s/" % PROJECT,
                    (TOKEN_USER, token))
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(target.upload, dists))
    print("depot: %d files uploaded through the legacy API in %.1f s" % (len(dists), time.perf_counter() - started))
    return target


def start_pypiserver(stack, dists, work):
    packages = work / "pypiserver" / "packages"
    packages.mkdir(parents=True)
    for dist in dists:
        shutil.copyfile(dist.path, packages / dist.filename)
    server = stack.enter_context(PypiServer(packages))
    return Target("pypiserver", server.proc.pid, server.url, server.simple + PROJECT + "/")


def report_pages(targets, rounds):
    print("\nsimple page of %s, pip's Accept header, %d rounds" % (PROJECT, len(rounds)))
    print("%-11s %9s %10s %8s %8s" % ("", "req/s", "median ms", "p90 ms", "requests"))
    rates = {t.name: [len(r[t.name]) / sum(r[t.name]) for r in rounds] for t in targets}
    for target in targets:
        every = [s for r in rounds for s in r[target.name]]
        print("%-11s %9.1f %10.2f %8.2f %8d" % (target.name, statistics.median(rates[target.name]),
                                                 statistics.median(every) * 1000, percentile(every, 0.9) * 1000,
                                                 len(every)))
    if len(targets) == 2:
        ratios = [rates["depot"][i] / rates["pypiserver"][i] for i in range(len(rounds))]
        print("ratio depot/pypiserver req/s: %.2f (median of the rounds; %.2f to %.2f)" % (
            statistics.median(ratios), min(ratios), max(ratios)))


def report_uploads(targets, uploads, mib, hwm_growth):
    print("\nupload of a %d MiB wheel, %d rounds" % (mib, len(uploads)))
    print("%-11s %9s %10s %16s %18s" % ("", "MiB/s", "median s", "peak RSS +MiB", "VmHWM +MiB (phase)"))
    for target in targets:
        times = [u[target.name][0] for u in uploads]
        growth = max(u[target.name][1] for u in uploads) / 1024
        print("%-11s %9.1f %10.2f %16.1f %18.1f" % (target.name, mib / statistics.median(times),
                                                     statistics.median(times), growth, hwm_growth[target.name] / 1024))
    if len(targets) == 2:
        ratios = [u["depot"][0] / u["pypiserver"][0] for u in uploads]
        print("ratio depot/pypiserver upload time: %.2f (median of the rounds)" % statistics.median(ratios))


def run(args, work, stack):
    started = time.perf_counter()
    dists = build_files(work / "dist", args.files)
    print("%d wheels of %s built in %.1f s" % (len(dists), PROJECT, time.perf_counter() - started))
    targets = []
    if args.only != "depot":
        targets.append(start_pypiserver(stack, dists, work))
    if args.only != "pypiserver":
        targets.append(start_depot(stack, dists, args.workers, work))
    for target in targets:
        size, kind = check_listing(target, dists)
        print("%s: the page lists the %d files (%s, %d bytes)" % (target.name, len(dists), kind, size))

    rounds = []
    for number in range(args.rounds):
        order = targets if number % 2 == 0 else targets[::-1]
        rounds.append({t.name: time_page(t, args.seconds) for t in order})
    report_pages(targets, rounds)

    big = [build_wheel(work / "big", PROJECT + "-big", "%d.0" % (i + 1), payload_size=args.upload_mib * MIB)
           for i in range(args.upload_rounds)]
    hwm_before = {t.name: memory_kib(t.pid)[1] for t in targets}
    uploads = []
    for number, dist in enumerate(big):
        order = targets if number % 2 == 0 else targets[::-1]
        uploads.append({t.name: time_upload(t, dist) for t in order})
    report_uploads(targets, uploads, args.upload_mib,
                   {t.name: memory_kib(t.pid)[1] - hwm_before[t.name] for t in targets})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="files of the project (default 2000)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds of the page (default 7)")
    parser.add_argument("--seconds", type=float, default=3, help="seconds per server per round (default 3)")
    parser.add_argument("--upload-mib", type=int, default=100, help="size of the uploaded wheel (default 100)")
    parser.add_argument("--upload-rounds", type=int, default=3, help="uploads per server (default 3)")
    parser.add_argument("--only", choices=("depot", "pypiserver"), help="run one server alone")
    parser.add_argument("--workers", type=int, default=4, help="parallel uploads filling Depot (default 4)")
    args = parser.parse_args()
    if args.only != "pypiserver" and not (ROOT / "packs" / "pypi.json").exists():
        raise SystemExit("Depot has no PyPI pack yet (packs/pypi.json): run with --only pypiserver")

    work = Path(tempfile.mkdtemp(prefix="bench-pypi-"))
    try:
        with contextlib.ExitStack() as stack:
            run(args, work, stack)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
