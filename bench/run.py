#!/usr/bin/env python3
"""Depot against its ceilings, in one run: requests/s of its routes beside a minimal Flask app and nginx,
publishes, a 1 GiB publish beside hashing and copying the file, and searches and listings at two sizes.

Every server is a real process on loopback, started here and stopped at the end:

- Depot as it ships (bench/server.py: `python -m app serve` on a new data dir, the project's schema with its
  PyPI, npm and OCI packs, default threads and CPU budget), loaded over HTTP: `bench/app` with ten 1 KiB
  versions, a 10 MiB artifact, a PyPI project and an npm package of --pack-files files each;
- two more Depots over data dirs filled beforehand by bench/bulk_load.py (one publish of each shape through
  the real route, then its transaction replayed with other names; seconds instead of many minutes): the small
  one holds 1,000 packages, one of them with 10 versions; the large one 100,000 packages, one of them with
  100,000 versions (--quick: 10,000 and 10,000);
- the ceiling for any route: bench/hello_app.py, a Flask app answering a constant JSON body, served by the same
  front end and settings as Depot (app/http/server.py); and the same app under gunicorn's gthread worker (one
  worker, 16 threads, as many as Depot's), when gunicorn is installed;
- the ceiling for downloads: nginx (Debian's) started on a free port with a temporary config (one worker,
  sendfile, no access log) serving the same 10 MiB file.

Each round measures, in an order that is reversed every other round, so that a slow moment of the (shared,
noisy) machine slows what is compared alike:

1. requests/s, p50 and p99 of: `latest`, metadata, the 1 KiB and the 10 MiB downloads, `/health`, the PyPI simple
   page (pip's Accept header, an API token over Basic auth as pip sends it) and the npm packument (the full
   document npm install asks for, an API token as npm sends it); the Flask app under both servers; nginx.
   wrk -t2 -c16 when wrk is installed (`apt-get install wrk`), else Python threads (--client);
2. 1 KiB publishes, each a new version with its own bytes, from one connection and from 16: publishes/s;
3. search (`/v1/search?q=many`, one package matches) and listings (`/v1/bulk`, `/v1/bulk/many/versions`, their
   first and their last page), with `latest` and a metadata read as controls, on the small and the large Depot,
   one request at a time: the median latency;
4. the publish of a --publish-mib (1024) MiB file (a new digest each round), streamed from disk, beside
   `hashlib.sha256` over the same file and a copy of it fsynced to the same disk: seconds, and the server's
   peak resident memory above what it was before (VmRSS sampled every 5 ms).

Figures are compared as ratios measured in the same run (the median over the rounds of each round's ratio) and
checked against issue 15's targets; the table printed at the end is the one README.md's "Performance" section
carries, and every figure, round by round, goes to --json (default bench/results/<date>.json, or
<date>-quick.json with --quick).

    python3 bench/run.py              # ~9 min on a two-core machine
    python3 bench/run.py --quick      # ~90 s: smaller sizes, fewer and shorter rounds
"""
import argparse
import base64
import contextlib
import datetime
import hashlib
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import loadgen  # noqa: E402
from bench.bulk_load import MANY, many_versions  # noqa: E402
from bench.hello_app import BODY as HELLO_BODY  # noqa: E402
from bench.server import ROOT, BenchServer, MemorySampler, free_port, memory_kib, percentile  # noqa: E402
from tests.npm_clients import npm_tarball, publish_document  # noqa: E402
from tests.pypi_clients import PIP_ACCEPT, TOKEN_USER, build_wheel, legacy_upload  # noqa: E402

NAMESPACE = "bench"
BULK = "bulk"  # the namespace bench/bulk_load.py fills
PROJECT = "bench-project"
NPM_PACKAGE = "bench-package"
MIB = 1 << 20
SMALL_FILE = 1024
BIG_FILE = 10 * MIB
CONNECTIONS = 16

MODES = {
    "full": {"rounds": 5, "seconds": 5.0, "scale_seconds": 1.5, "packages": (1000, 100000),
             "versions": (10, 100000), "publish_mib": 1024, "pack_files": 100},
    "quick": {"rounds": 2, "seconds": 2.0, "scale_seconds": 0.5, "packages": (1000, 10000),
              "versions": (10, 10000), "publish_mib": 256, "pack_files": 20},
}

# issue 15's targets: (figure key, comparison, bound)
TARGETS = {
    "hello_vs_gunicorn": (">=", 2.5),
    "latest": (">=", 0.65),
    "metadata": (">=", 0.65),
    "download_1k": (">=", 0.55),
    "download_10m": (">=", 0.8),
    "big_publish_vs_copy": (">=", 0.8),
    "big_publish_rss_mib": ("<=", 64),
    "publishes_sequential": (">=", 200),
    "publishes_concurrent": (">=", 500),
    "search": ("<=", 2.0),
    "packages_first_page": ("<=", 2.0),
    "packages_last_page_cursor": ("<=", 2.0),
    "versions_first_page": ("<=", 2.0),
    "versions_last_page_cursor": ("<=", 2.0),
}  # the last pages by number are measured too, without a target: a page number walks the rows before it


# ---------------------------------------------------------------------------------------------- other servers

class Listening:
    """A server process started on entering and ready once ``probe`` answers 200; stopped on leaving."""

    def __init__(self, name, argv, probe, log_dir):
        self.name, self.argv, self.probe, self.log_dir = name, argv, probe, Path(log_dir)
        self.proc = self.log = None

    def __enter__(self):
        self.log = open(self.log_dir / ("%s.log" % self.name), "w+")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:  # polling a child process's readiness: outside anything measured
            try:
                if requests.get(self.probe, timeout=5).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise SystemExit("%s did not start:\n%s" % (self.name, self.log.read()[-2000:]))
            time.sleep(0.2)

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


NGINX_CONF = """worker_processes 1;
daemon off;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path %(dir)s/client_body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:%(port)d;
        root %(dir)s/www;
    }
}
"""


def start_nginx(stack, work, data):
    """nginx serving ``data`` as /file.bin from a directory its worker (an unprivileged user when started as
    root) can read. -> base URL."""
    directory = work / "nginx"
    (directory / "www").mkdir(parents=True)
    for path in (work, directory, directory / "www"):
        path.chmod(0o755)
    (directory / "www" / "file.bin").write_bytes(data)
    (directory / "www" / "file.bin").chmod(0o644)
    port = free_port()
    (directory / "nginx.conf").write_text(NGINX_CONF % {"dir": directory, "port": port}, encoding="utf-8")
    url = "http://127.0.0.1:%d" % port
    stack.enter_context(Listening("nginx", [shutil.which("nginx"), "-p", str(directory), "-e", "stderr", "-c",
                                            str(directory / "nginx.conf")], url + "/file.bin", work))
    return url


def start_hello(stack, work):
    """The Flask app under Depot's front end, and under gunicorn gthread when installed: {name: base URL}."""
    urls = {}
    port = free_port()
    stack.enter_context(Listening("hello", [sys.executable, "bench/hello_app.py", "--port", str(port)],
                                  "http://127.0.0.1:%d/hello" % port, work))
    urls["hello"] = "http://127.0.0.1:%d" % port
    if importlib.util.find_spec("gunicorn") is not None:
        port = free_port()
        stack.enter_context(Listening("gunicorn", [
            sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", "16", "-b",
            "127.0.0.1:%d" % port, "bench.hello_app:app"], "http://127.0.0.1:%d/hello" % port, work))
        urls["gunicorn"] = "http://127.0.0.1:%d" % port
    return urls


# ---------------------------------------------------------------------------------------------- loading

def bearer(token):
    return {"Authorization": "Bearer " + token}


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}


def expect(answer, status, what):
    if answer.status_code != status:
        raise SystemExit("%s: expected %d, got %d %s" % (what, status, answer.status_code, answer.text[:300]))
    return answer


def accepted(answer, what):
    if answer.status_code not in (200, 201):
        raise SystemExit("%s was refused: %d %s" % (what, answer.status_code, answer.text[:300]))


@dataclass
class Target:
    """One URL the request section times, and what its figure is compared with."""
    key: str
    label: str
    url: str
    headers: dict
    ceiling: str = ""  # the key of the target it is a ratio of


@dataclass
class MainDepot:
    server: BenchServer
    api_token: str
    big_data: bytes
    targets: list = field(default_factory=list)

    @property
    def auth(self):
        return self.server.auth


def load_main(server, work, pack_files):
    """The main Depot's data, over HTTP, each piece checked as it is read back."""
    session = requests.Session()
    session.headers.update(server.auth)
    url = server.url
    api_token = expect(session.post(url + "/auth/tokens", json={"name": "bench", "scopes": ["read", "write"]},
                                    timeout=60), 201, "POST /auth/tokens").json()["token"]
    small = {}
    for patch in range(10):
        small[patch] = os.urandom(SMALL_FILE)
        expect(session.put(url + "/v1/%s/app/1.0.%d/linux-amd64/blob" % (NAMESPACE, patch), data=small[patch],
                           timeout=60), 201, "publish")
    big = os.urandom(BIG_FILE)
    expect(session.put(url + "/v1/%s/big-file/1.0.0/any/blob" % NAMESPACE, data=big, timeout=600), 201, "publish")

    wheels = [build_wheel(work / "wheels", PROJECT, "1.%d.0" % i, requires=["requests>=2"])
              for i in range(pack_files)]
    pypi = "%s/pypi/%s/" % (url, NAMESPACE)
    with ThreadPoolExecutor(4) as pool:
        for answer in pool.map(lambda dist: legacy_upload(pypi + "legacy/", dist, password=api_token), wheels):
            accepted(answer, "a PyPI upload")
    registry = "%s/npm/%s/" % (url, NAMESPACE)
    for i in range(pack_files):
        version = "1.%d.0" % i
        document = publish_document(registry, NPM_PACKAGE, version, npm_tarball(NPM_PACKAGE, version))
        accepted(requests.put(registry + NPM_PACKAGE, json=document, headers=bearer(api_token), timeout=60),
                 "an npm publish")

    main = MainDepot(server, api_token, big)
    app = url + "/v1/%s/app" % NAMESPACE
    jwt = dict(server.auth)
    main.targets = [
        Target("latest", "`latest`", app + "/latest", jwt, "hello"),
        Target("metadata", "metadata", app + "/1.0.9/linux-amd64", jwt, "hello"),
        Target("download_1k", "1 KiB download", app + "/1.0.9/linux-amd64/blob", jwt, "hello"),
        Target("download_10m", "10 MiB download", url + "/v1/%s/big-file/1.0.0/any/blob" % NAMESPACE, jwt,
               "nginx"),
        Target("health", "`/health`", url + "/health", {}, "hello"),
        Target("pypi_simple", "PyPI simple page (%d files)" % pack_files, pypi + "simple/%s/" % PROJECT,
               dict(basic(TOKEN_USER, api_token), Accept=PIP_ACCEPT), "hello"),
        Target("npm_packument", "npm packument (%d versions)" % pack_files, registry + NPM_PACKAGE,
               dict(bearer(api_token), **{"Accept": "application/json", "Accept-Encoding": "gzip, deflate"}),
               "hello"),
    ]

    checks = {"latest": lambda a: a.json()["version"] == "1.0.9",
              "metadata": lambda a: a.json()["blob_size"] == SMALL_FILE,
              "download_1k": lambda a: a.content == small[9],
              "download_10m": lambda a: a.content == big,
              "health": lambda a: True,
              "pypi_simple": lambda a: len(a.json()["files"]) == pack_files,
              "npm_packument": lambda a: len(a.json()["versions"]) == pack_files}
    for target in main.targets:
        answer = expect(requests.get(target.url, headers=target.headers, timeout=600), 200, target.url)
        if not checks[target.key](answer):
            raise SystemExit("%s answered something else than what was loaded: %s" % (target.url,
                                                                                      answer.text[:300]))
    return main


def ceiling_targets(hello_urls, nginx_url, main):
    """The Flask app (and nginx) as Targets, each checked to answer what it should."""
    headers = dict(main.auth)  # the same request head as Depot's routes get
    targets = [Target(name, {"hello": "Flask app, Depot's front end (waitress)",
                             "gunicorn": "Flask app, gunicorn gthread (1 worker, 16 threads)"}[name],
                      base + "/hello", headers) for name, base in hello_urls.items()]
    for target in targets:
        if expect(requests.get(target.url, timeout=60), 200, target.url).content != HELLO_BODY:
            raise SystemExit("%s answered another body" % target.url)
    if nginx_url:
        targets.append(Target("nginx", "nginx, the same 10 MiB file", nginx_url + "/file.bin", headers))
        if requests.get(nginx_url + "/file.bin", timeout=600).content != main.big_data:
            raise SystemExit("nginx served other bytes")
    return targets


def start_loaders(work, sizes):
    """bench/bulk_load.py for the small and the large data dir, in parallel: {size: (Popen, data dir)}."""
    loaders = {}
    for size, (packages, versions) in sizes.items():
        data_dir = work / ("bulk-%s" % size)
        log = open(work / ("bulk-%s.log" % size), "w")
        loaders[size] = (subprocess.Popen([sys.executable, "bench/bulk_load.py", str(data_dir), "--namespace", BULK,
                                           "--packages", str(packages), "--versions", str(versions)],
                                          cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), data_dir, log)
    return loaders


def wait_loaders(loaders):
    for size, (proc, data_dir, log) in loaders.items():
        if proc.wait() != 0:
            log.close()
            raise SystemExit("loading the %s data dir failed:\n%s" % (size, Path(log.name).read_text()[-3000:]))
        log.close()
        print("  " + Path(log.name).read_text().strip())


@dataclass
class Query:
    key: str
    label: str
    paths: dict  # size -> path


def scale_queries(servers, sizes):
    """The searches and listings on the small and the large Depot, each checked against what was loaded."""
    last = {size: {"packages": -(-packages // 50), "versions": -(-versions // 50)}
            for size, (packages, versions) in sizes.items()}
    queries = [
        Query("search", "search `?q=many` (one match)", {s: "/v1/search?q=%s" % MANY for s in sizes}),
        Query("packages_first_page", "packages, first page", {s: "/v1/%s" % BULK for s in sizes}),
        Query("packages_last_page", "packages, last page",
              {s: "/v1/%s?page=%d" % (BULK, last[s]["packages"]) for s in sizes}),
        Query("versions_first_page", "versions, first page", {s: "/v1/%s/%s/versions" % (BULK, MANY) for s in sizes}),
        Query("versions_last_page", "versions, last page",
              {s: "/v1/%s/%s/versions?page=%d" % (BULK, MANY, last[s]["versions"]) for s in sizes}),
        Query("packages_last_page_cursor", "packages, last page by cursor (`after`)", {}),
        Query("versions_last_page_cursor", "versions, last page by cursor (`after`)", {}),
        Query("scale_latest", "`latest` (control)", {s: "/v1/%s/%s/latest" % (BULK, MANY) for s in sizes}),
        Query("scale_metadata", "metadata (control)", {s: "/v1/%s/pkg-000500/1.0.0/any" % BULK for s in sizes}),
    ]
    by_key = {query.key: query for query in queries}
    pairs = [(by_key[kind + "_last_page_cursor"], by_key[kind + "_last_page"]) for kind in ("packages", "versions")]
    for size, (packages, versions) in sizes.items():
        server = servers[size]

        def get(path):
            return expect(requests.get(server.url + path, headers=server.auth, timeout=600), 200, path).json()
        for cursor_query, numbered in pairs:  # the cursor the page before the last gives
            head, last_page = numbered.paths[size].rsplit("=", 1)
            base = numbered.paths[size].split("?")[0]
            cursor_query.paths[size] = base if last_page == "1" else \
                base + "?after=" + get("%s=%d" % (head, int(last_page) - 1))["next"]
        found = {
            "packages": get("/v1/%s" % BULK)["total"], "versions": get("/v1/%s/%s/versions" % (BULK, MANY))["total"],
            "highest": get("/v1/%s/%s/versions" % (BULK, MANY))["items"][0]["version"],
            "latest": get("/v1/%s/%s/latest" % (BULK, MANY))["version"],
            "search": [item["name"] for item in get("/v1/search?q=%s" % MANY)["items"]],
            "last page": sum(len(get(numbered.paths[size])["items"]) for _, numbered in pairs),
            "by cursor": all(get(c.paths[size])["items"] == get(n.paths[size])["items"] for c, n in pairs)}
        wanted = {"packages": packages, "versions": versions, "highest": many_versions(versions)[-1],
                  "latest": many_versions(versions)[-1], "search": [MANY],
                  "last page": (packages - 1) % 50 + 1 + (versions - 1) % 50 + 1, "by cursor": True}
        if found != wanted:
            raise SystemExit("the %s Depot holds something else than was loaded: %s, not %s" % (size, found, wanted))
    return queries


# ---------------------------------------------------------------------------------------------- the sections

def ordered(items, round_number):
    return list(items) if round_number % 2 == 0 else list(reversed(items))


def measure_requests(targets, client, seconds, round_number):
    return {t.key: loadgen.rate(client, t.url, t.headers, CONNECTIONS, seconds) for t in ordered(targets, round_number)}


def measure_publishes(main, client, seconds, round_number):
    results = {}
    for mode, connections in ordered((("sequential", 1), ("concurrent", CONNECTIONS)), round_number):
        prefix = "/v1/%s/publish-%s-r%d" % (NAMESPACE, mode, round_number)
        results[mode] = loadgen.publishes(client, main.server.url, prefix, main.auth, connections, seconds)
    return results


def measure_scale(servers, queries, seconds, round_number):
    results = {}
    pairs = [(query, size) for query in queries for size in servers]
    for query, size in ordered(pairs, round_number):
        server = servers[size]
        latencies = loadgen.sequential(server.url + query.paths[size], server.auth, seconds, 5)
        results.setdefault(query.key, {})[size] = {"median": statistics.median(latencies),
                                                   "p99": percentile(latencies, 0.99),
                                                   "requests": len(latencies)}
    return results


def make_big_file(path, mib):
    block = os.urandom(MIB)
    with open(path, "wb") as handle:
        for i in range(mib):
            handle.write(block[i % 997:] + block[:i % 997])  # no two MiB alike


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(MIB)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


def fsynced_copy(path, target):
    with open(path, "rb") as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, MIB)
        out.flush()
        os.fsync(out.fileno())
    os.unlink(target)


def measure_big_publish(main, path, copy_dir, round_number):
    with open(path, "r+b") as handle:  # a new digest each round: a publish of bytes already stored is cheaper
        handle.write(b"round %04d %s" % (round_number, os.urandom(8).hex().encode()))
    results, digest = {}, {}
    url = main.server.url + "/v1/%s/big/%d.0.0/any/blob" % (NAMESPACE, round_number + 1)

    def hash_it():
        digest["sha256"] = sha256_of(path)

    def copy_it():
        fsynced_copy(path, copy_dir / "copy.bin")

    def publish_it():
        pid = main.server.proc.pid
        before = memory_kib(pid)[0]
        sampler = MemorySampler(pid)
        sampler.start()
        try:
            with open(path, "rb") as body:
                answer = requests.put(url, data=body, headers=dict(main.auth, **{
                    "Content-Type": "application/octet-stream"}), timeout=3600)
        finally:
            peak = sampler.stop()
        digest["published"] = expect(answer, 201, "the big publish").json()["blob_digest"]
        results["rss_growth_kib"] = peak - before

    for name, step in ordered((("sha256", hash_it), ("copy", copy_it), ("publish", publish_it)), round_number):
        started = time.perf_counter()
        step()
        results[name] = time.perf_counter() - started
    if digest["published"] != "sha256:" + digest["sha256"]:
        raise SystemExit("the big publish stored %s, the file hashes to %s" % (digest["published"], digest["sha256"]))
    return results


# ---------------------------------------------------------------------------------------------- the report

def median_of(rounds, *keys):
    values = []
    for figures in rounds:
        for key in keys:
            figures = figures[key]
        values.append(figures)
    return statistics.median(values)


def summarize(rounds, targets, queries, settings):
    summary = {"requests": {}, "ratios": {}, "publishes": {}, "big_publish": {}, "scale": {}}
    present = {t.key for t in targets}
    for target in targets:
        summary["requests"][target.key] = {
            "label": target.label, "ceiling": target.ceiling,
            **{figure: median_of(rounds, "requests", target.key, figure)
               for figure in ("rate", "p50", "p99", "bytes_per_s")}}
        if target.ceiling in present:
            summary["ratios"][target.key] = statistics.median(
                r["requests"][target.key]["rate"] / r["requests"][target.ceiling]["rate"] for r in rounds)
    if "gunicorn" in present:
        summary["ratios"]["hello_vs_gunicorn"] = statistics.median(
            r["requests"]["hello"]["rate"] / r["requests"]["gunicorn"]["rate"] for r in rounds)
    if rounds and "publishes" in rounds[0]:
        for mode in ("sequential", "concurrent"):
            summary["publishes"][mode] = {figure: median_of(rounds, "publishes", mode, figure)
                                          for figure in ("rate", "p50", "p99")}
    if rounds and "big_publish" in rounds[0]:
        big = summary["big_publish"]
        for step in ("sha256", "copy", "publish"):
            big[step] = {"seconds": median_of(rounds, "big_publish", step)}
            big[step]["mib_per_s"] = settings["publish_mib"] / big[step]["seconds"]
        big["ratio_vs_copy"] = statistics.median(r["big_publish"]["copy"] / r["big_publish"]["publish"]
                                                 for r in rounds)
        big["ratio_vs_sha256"] = statistics.median(r["big_publish"]["sha256"] / r["big_publish"]["publish"]
                                                   for r in rounds)
        big["peak_rss_growth_mib"] = max(r["big_publish"]["rss_growth_kib"] for r in rounds) / 1024
    if rounds and "scale" in rounds[0]:
        for query in queries:
            summary["scale"][query.key] = {
                "label": query.label,
                **{size: {"median": median_of(rounds, "scale", query.key, size, "median"),
                          "p99": median_of(rounds, "scale", query.key, size, "p99")} for size in ("small", "large")},
                "ratio": statistics.median(r["scale"][query.key]["large"]["median"] /
                                           r["scale"][query.key]["small"]["median"] for r in rounds)}
    return summary


def verdicts(summary):
    """{target key: (figure, bound text, met)} for every target measured."""
    figures = dict(summary["ratios"])
    if summary["publishes"]:
        figures["publishes_sequential"] = summary["publishes"]["sequential"]["rate"]
        figures["publishes_concurrent"] = summary["publishes"]["concurrent"]["rate"]
    if summary["big_publish"]:
        figures["big_publish_vs_copy"] = summary["big_publish"]["ratio_vs_copy"]
        figures["big_publish_rss_mib"] = summary["big_publish"]["peak_rss_growth_mib"]
    for key, scale in summary["scale"].items():
        figures[key] = scale["ratio"]
    result = {}
    for key, (comparison, bound) in TARGETS.items():
        if key in figures:
            value = figures[key]
            result[key] = {"figure": value, "target": "%s %s" % ("≥" if comparison == ">=" else "≤", bound),
                           "met": value >= bound if comparison == ">=" else value <= bound}
    return result


def down(value, digits):
    """``value`` with ``digits`` decimals, truncated: a figure where more is better is never rounded up."""
    return "%.*f" % (digits, math.floor(value * 10 ** digits + 1e-6) / 10 ** digits)  # 1e-6: 2189.2 stays


def up(value, digits):
    """``value`` with ``digits`` decimals, rounded up: a figure where less is better is never rounded down."""
    return "%.*f" % (digits, math.ceil(value * 10 ** digits - 1e-6) / 10 ** digits)


def ms(seconds):
    return "%s ms" % up(seconds * 1000, 1) if seconds >= 0.001 else "%s µs" % up(seconds * 1e6, 0)


def yes(met):
    return "**yes**" if met else "**no**"


def report(summary, verdict, settings, sizes, client):
    """The README's tables (Markdown)."""
    by = "wrk -t2 -c16" if client == "wrk" else "16 Python client threads"
    lines = ["| requests (%s; medians of %d rounds of %g s) | requests/s | p50 | p99 | ratio to its ceiling | "
             "target | met |" % (by, settings["rounds"], settings["seconds"]), "|---|---|---|---|---|---|---|"]
    requests_ = summary["requests"]
    for key, figures in requests_.items():
        rate = down(figures["rate"], 1)
        if key in ("download_10m", "nginx"):
            rate += " (%s MiB/s)" % down(figures["bytes_per_s"] / MIB, 0)
        ratio = ""
        if key in summary["ratios"] and figures["ceiling"]:
            ratio = "%s of %s" % (down(summary["ratios"][key], 3), "nginx" if figures["ceiling"] == "nginx" else
                                    "the Flask app")
        elif key == "hello" and "hello_vs_gunicorn" in summary["ratios"]:
            ratio = "%s of gunicorn gthread" % down(summary["ratios"]["hello_vs_gunicorn"], 3)
        target_key = "hello_vs_gunicorn" if key == "hello" else key
        target = verdict.get(target_key)
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            figures["label"], rate, ms(figures["p50"]), ms(figures["p99"]), ratio,
            target["target"] if target else "", yes(target["met"]) if target else ""))
    if summary["publishes"]:
        lines += ["", "| publishes of 1 KiB (each a new version and blob) | publishes/s | p50 | p99 | target | met |",
                  "|---|---|---|---|---|---|"]
        for mode, label in (("sequential", "one client, one at a time"), ("concurrent", "16 concurrent clients")):
            figures, target = summary["publishes"][mode], verdict["publishes_" + mode]
            lines.append("| %s | %s | %s | %s | %s | %s |" % (label, down(figures["rate"], 1), ms(figures["p50"]),
                                                                ms(figures["p99"]), target["target"],
                                                                yes(target["met"])))
    if summary["big_publish"]:
        big = summary["big_publish"]
        lines += ["", "| %d MiB, streamed from a file (medians of %d rounds) | seconds | MiB/s | publish's ratio "
                  "(its throughput over this one's) | target | met |" % (settings["publish_mib"], settings["rounds"]),
                  "|---|---|---|---|---|---|"]
        lines.append("| publish (`PUT .../blob`, to the 201) | %s | %s | | | |" % (
            up(big["publish"]["seconds"], 2), down(big["publish"]["mib_per_s"], 0)))
        target = verdict["big_publish_vs_copy"]
        lines.append("| copy of the file, fsynced | %s | %s | %s | %s | %s |" % (
            down(big["copy"]["seconds"], 2), up(big["copy"]["mib_per_s"], 0), down(big["ratio_vs_copy"], 3),
            target["target"],
            yes(target["met"])))
        lines.append("| `hashlib.sha256` over the file | %s | %s | %s | | |" % (
            down(big["sha256"]["seconds"], 2), up(big["sha256"]["mib_per_s"], 0), down(big["ratio_vs_sha256"], 3)))
        target = verdict["big_publish_rss_mib"]
        lines.append("| server's peak resident memory growth during the publish (highest of the rounds) | "
                     "%s MiB | | | %s MiB | %s |" % (up(big["peak_rss_growth_mib"], 1), target["target"],
                                                     yes(target["met"])))
    if summary["scale"]:
        (small_packages, small_versions), (large_packages, large_versions) = sizes["small"], sizes["large"]
        lines += ["", "| one request at a time, median latency | %s packages, `many` with %s versions | %s packages, "
                  "`many` with %s versions | ratio | target | met |" % (
                      "{:,}".format(small_packages), "{:,}".format(small_versions), "{:,}".format(large_packages),
                      "{:,}".format(large_versions)), "|---|---|---|---|---|---|"]
        for key, figures in summary["scale"].items():
            target = verdict.get(key)
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                figures["label"], ms(figures["small"]["median"]), ms(figures["large"]["median"]),
                up(figures["ratio"], 2),
                target["target"] if target else "", yes(target["met"]) if target else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the run

SECTIONS = ("requests", "publishes", "scale", "big")


def run(args, settings, work, stack):
    client = args.client if args.client != "auto" else ("wrk" if loadgen.wrk_installed() else "python")
    sizes = {"small": (settings["packages"][0], settings["versions"][0]),
             "large": (settings["packages"][1], settings["versions"][1])}
    notes = []
    started = time.perf_counter()
    print("setting up (%s mode, %s client)" % (args.mode, client), flush=True)
    loaders = start_loaders(work, sizes) if "scale" in args.sections else {}

    main = load_main(stack.enter_context(BenchServer()), work, settings["pack_files"])
    hello_urls = start_hello(stack, work)
    if "gunicorn" not in hello_urls:
        notes.append("gunicorn is not installed (pip install -r requirements.txt): the Flask app was not measured "
                     "under gunicorn gthread")
    nginx_url = None
    if shutil.which("nginx"):
        nginx_url = start_nginx(stack, work, main.big_data)
    else:
        notes.append("nginx is not installed (apt-get install nginx): no ceiling for downloads")
    targets = main.targets + ceiling_targets(hello_urls, nginx_url, main)

    servers, queries = {}, []
    if loaders:
        wait_loaders(loaders)
        servers = {size: stack.enter_context(BenchServer(data_dir=str(data_dir)))
                   for size, (_, data_dir, _) in loaders.items()}
        queries = scale_queries(servers, sizes)
    big_file = work / "big.bin"
    if "big" in args.sections:
        make_big_file(big_file, settings["publish_mib"])
    setup_seconds = time.perf_counter() - started
    print("set up in %.0f s; every server answers what was loaded" % setup_seconds, flush=True)

    rounds = []
    for number in range(settings["rounds"]):
        figures = {}
        if "requests" in args.sections:
            figures["requests"] = measure_requests(targets, client, settings["seconds"], number)
        if "publishes" in args.sections:
            figures["publishes"] = measure_publishes(main, client, settings["seconds"], number)
        if "scale" in args.sections:
            figures["scale"] = measure_scale(servers, queries, settings["scale_seconds"], number)
        if "big" in args.sections:
            figures["big_publish"] = measure_big_publish(main, big_file, work, number)
        rounds.append(figures)
        print("round %d of %d done (%.0f s in)" % (number + 1, settings["rounds"], time.perf_counter() - started),
              flush=True)
    if "requests" not in args.sections:
        targets = []
    summary = summarize(rounds, targets, queries, settings)
    verdict = verdicts(summary)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return {"measured": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "mode": args.mode,
            "commit": commit,
            "settings": settings, "sizes": sizes, "client": client, "wrk": loadgen.wrk_version(),
            "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "setup_seconds": setup_seconds,
            "seconds": time.perf_counter() - started, "notes": notes, "summary": summary, "targets": verdict,
            "rounds": rounds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", dest="mode", action="store_const", const="quick", default="full",
                        help="smaller sizes, fewer and shorter rounds (~2 min)")
    parser.add_argument("--rounds", type=int, help="rounds (full 5, quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds per measured URL per round (full 5, quick 2)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="the HTTP load client (default: wrk if installed, else python)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="which sections to run, comma-separated (default: %s)" % ",".join(SECTIONS))
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/<date>.json)")
    parser.add_argument("--table", type=Path, metavar="RESULTS", help="print the tables of a results file and exit")
    args = parser.parse_args()
    if args.table:
        results = json.loads(args.table.read_text(encoding="utf-8"))
        print(report(results["summary"], results["targets"], results["settings"], results["sizes"],
                     results["client"]))
        return 0
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if set(args.sections) - set(SECTIONS):
        parser.error("unknown sections: %s" % ", ".join(sorted(set(args.sections) - set(SECTIONS))))
    if args.client == "wrk" and not loadgen.wrk_installed():
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --client python")
    settings = dict(MODES[args.mode])
    if args.rounds:
        settings["rounds"] = args.rounds
    if args.seconds:
        settings["seconds"] = args.seconds

    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    try:
        with contextlib.ExitStack() as stack:
            results = run(args, settings, work, stack)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    for note in results["notes"]:
        print("note: " + note)
    print(report(results["summary"], results["targets"], settings, results["sizes"], results["client"]))
    out = args.json
    if out is None:
        stem = datetime.date.today().isoformat() + ("-quick" if args.mode == "quick" else "")
        out = ROOT / "bench" / "results" / (stem + ".json")
        number = 2
        while out.exists():
            out = out.with_name("%s-%d.json" % (stem, number))
            number += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("\nresults written to %s (%.0f s in all)" % (out, results["seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
