#!/usr/bin/env python3
"""Depot's OCI pack against distribution (the reference registry): pulls of a 50 MiB layer, pushes of 10-layer
images, and the server's memory growth while it takes them.

Both servers run as real processes on loopback, each over its own storage in a temporary directory:
distribution as Debian's `docker-registry` 2.8 runs it (tests/oci_registry.ReferenceRegistry: filesystem
storage, its default access log, the blob descriptor cache in memory), and Depot as it ships (`python -m app
serve`, bench/server.py: the project's schema with packs/oci.json at /v2/, its default threads and CPU budget).
The repository is `bench/app` (Depot's namespace `bench`), and the user `bench` (scopes read and write) pushes
and pulls on both.

Authentication (--auth). The default, `token`, is the Bearer token flow on both: each registry challenges
`GET /v2/` with `Bearer realm=...,service=...`, a token for `repository:bench/app:pull,push` is fetched from
the realm with the user's Basic credentials, and every timed request carries it. This is the fairest choice
because it is the same flow on both wires and the one every real client (docker, containerd, podman, skopeo,
oras) uses against both. It is also the only flow where both servers do the same work per request: each
verifies a signed token (distribution an RS256 JWT from tests/oci_registry.TokenServer, its realm; Depot its own
access token) and issues none. The tokens are fetched before the timing starts (a client fetches one per
push; distribution's realm is a Python server inside this process, so counting its time would measure it and
not the registry). `--auth basic` sends Basic credentials on every request instead (distribution's htpasswd,
bcrypt cost 4, checked on each request; Depot's password, checked once and then remembered for a minute), which
favours Depot on small requests. No-auth distribution would spare distribution the check that Depot still makes.

Before anything is timed (else exit 1): the pull blob, pushed to each server the way skopeo pushes, must come
back hashing to its digest; a first image pushed to each must be readable (its manifest by tag, byte for byte,
with its digest in Docker-Content-Digest, and each of its blobs by HEAD with its size). Then:

- Pushes, first (on servers that have served only the checks): a new --layers (10) layer image per server per
  round, --push-rounds (10) rounds taking turns (which server goes first alternates), each layer --layer-mib (4)
  MiB of random bytes and a few odd bytes, pushed as skopeo (containers/image) pushes a blob: `HEAD` the blob
  (404), `POST /blobs/uploads/` (202, Location), `PATCH` the whole blob to the Location, `PUT <Location>?digest=`;
  the layers --push-parallel (6, containers/image's default) at a time, then the config the same way, then
  `PUT /manifests/<tag>`. Reported: the median time of an image push (first HEAD to the manifest's 201) and
  MiB/s. Every pushed manifest must read back afterwards.
- The server's resident memory during the pushes: VmRSS from /proc/<pid>/status sampled every 5 ms, its peak
  above what it was just before the first push, and VmHWM's growth over the push phase.
- Pulls of one --blob-mib (50) MiB layer, `GET /v2/bench/app/blobs/<digest>`, from --connections (4)
  concurrent keep-alive clients for --seconds (5) per server per round, --rounds (5) rounds taking turns. The
  load client is wrk when installed (`apt-get install wrk`), else a Python one of threads (--client chooses; the
  same client for both). Reported: MiB/s, requests/s, p50 and p99 latency (wrk's; a round makes a few dozen
  requests, so p99 is close to the slowest). Then --single (3) pulls per server per round from one client on a
  new connection: the time of one pull.

Ratios are depot/distribution, each the median of the per-round ratios (above 1 is faster for rates, below 1 for
times). Prints a table and writes every figure, round by round, to --json (default
bench/results/bench_oci-<time>.json).

    python3 bench/bench_oci.py                          # ~75 s
    python3 bench/bench_oci.py --push-parallel 1        # layers one after another
    python3 bench/bench_oci.py --only depot --rounds 2 --push-rounds 2
"""
import argparse
import base64
import contextlib
import hashlib
import http.client
import os
import shutil
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import loadgen  # noqa: E402
from bench.server import BenchServer, MemorySampler, memory_kib, write_results  # noqa: E402
from tests.oci_registry import (CONFIG, LAYER, MANIFEST, Blob, OciClient, ReferenceRegistry,  # noqa: E402
                                config_blob, describe, image_manifest, parse_challenge)

REPO = "bench/app"
USER, PASSWORD = "bench", "bench user password 1"
MIB = 1 << 20
SCOPE = "repository:%s:pull,push" % REPO


@dataclass
class Target:
    """One registry as the benchmark drives it: its process, its URL and the Authorization header it gets."""
    name: str
    pid: int
    url: str
    auth: str  # "token" or "basic"
    header: str = ""
    local: threading.local = field(default_factory=threading.local)

    def authorize(self):
        """A fresh Authorization header: a Bearer token for SCOPE from the registry's realm, or Basic."""
        basic = "Basic " + base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
        if self.auth == "basic":
            self.header = basic
            return
        answer = requests.get(self.url + "/v2/", timeout=60)
        scheme, params = parse_challenge(answer.headers.get("WWW-Authenticate", ""))
        if answer.status_code != 401 or scheme != "bearer":
            raise SystemExit("%s: GET /v2/ answered %d %r, not a Bearer challenge" % (
                self.name, answer.status_code, answer.headers.get("WWW-Authenticate")))
        client = OciClient(self.url, USER, PASSWORD)
        self.header = "Bearer " + client.fetch_token(dict(params, scope=SCOPE))

    @property
    def session(self):
        """A requests session of the calling thread (keep-alive, as a client's)."""
        if getattr(self.local, "session", None) is None:
            self.local.session = requests.Session()
        return self.local.session

    def request(self, method, path_or_url, expect, **kw):
        headers = dict(kw.pop("headers", {}), Authorization=self.header)
        answer = self.session.request(method, urljoin(self.url + "/", path_or_url), headers=headers,
                                      allow_redirects=method in ("GET", "HEAD"), timeout=600, **kw)
        if answer.status_code != expect:
            raise SystemExit("%s: expected %d\n%s" % (self.name, expect, describe(answer)))
        return answer


# ---------------------------------------------------------------------------------------------- pushing

def push_blob(target, blob):
    """One blob, as containers/image pushes it: HEAD (absent), POST, PATCH with the whole blob, PUT ?digest=."""
    target.request("HEAD", "/v2/%s/blobs/%s" % (REPO, blob.digest), 404)
    started = target.request("POST", "/v2/%s/blobs/uploads/" % REPO, 202, data=b"")
    patched = target.request("PATCH", started.headers["Location"], 202, data=blob.data,
                             headers={"Content-Type": "application/octet-stream"})
    target.request("PUT", patched.headers["Location"], 201, params={"digest": blob.digest},
                   headers={"Content-Type": "application/octet-stream"})


def push_image(target, manifest, tag, parallel):
    """The layers ``parallel`` at a time, then the config, then the manifest under ``tag``: seconds taken."""
    config, layers = manifest.blobs[0], manifest.blobs[1:]
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda layer: push_blob(target, layer), layers))
    push_blob(target, config)
    target.request("PUT", "/v2/%s/manifests/%s" % (REPO, tag), 201, data=manifest.body,
                   headers={"Content-Type": MANIFEST})
    return time.perf_counter() - started


def new_image(layers, layer_mib):
    """An image of ``layers`` new random layers (``layer_mib`` MiB and a few odd bytes each) and a config."""
    blobs = [Blob(os.urandom(layer_mib * MIB + 1 + (i * 7919) % 4096), LAYER) for i in range(layers)]
    config = config_blob(rootfs={"type": "layers", "diff_ids": [b.digest for b in blobs]})
    return image_manifest(Blob(config.data, CONFIG), blobs)


def check_image(target, manifest, tag):
    """The manifest comes back byte for byte by tag with its digest, and every blob it names is there."""
    answer = target.request("GET", "/v2/%s/manifests/%s" % (REPO, tag), 200, headers={"Accept": MANIFEST})
    if answer.content != manifest.body or answer.headers.get("Docker-Content-Digest") != manifest.digest:
        raise SystemExit("%s served another manifest for %s (%s)" % (target.name, tag,
                                                                   answer.headers.get("Docker-Content-Digest")))
    for blob in manifest.blobs:
        head = target.request("HEAD", "/v2/%s/blobs/%s" % (REPO, blob.digest), 200)
        if int(head.headers.get("Content-Length", -1)) != blob.size:
            raise SystemExit("%s: HEAD of %s says %s bytes, not %d" % (target.name, blob.digest,
                                                                      head.headers.get("Content-Length"), blob.size))


def check_pull(target, blob):
    """The whole blob comes back and hashes to its digest."""
    answer = target.request("GET", "/v2/%s/blobs/%s" % (REPO, blob.digest), 200, stream=True)
    digest, size = hashlib.sha256(), 0
    for chunk in answer.iter_content(MIB):
        digest.update(chunk)
        size += len(chunk)
    if "sha256:" + digest.hexdigest() != blob.digest or size != blob.size:
        raise SystemExit("%s served %d bytes hashing to sha256:%s for %s" % (target.name, size, digest.hexdigest(),
                                                                             blob.digest))


# ---------------------------------------------------------------------------------------------- pulling

def single_pull(target, path):
    """Seconds of one pull from one client on a new connection, the body read whole."""
    parts = urlsplit(target.url)
    buffer = memoryview(bytearray(MIB))
    started = time.perf_counter()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    connection.request("GET", path, headers={"Authorization": target.header})
    answer = connection.getresponse()
    while answer.readinto(buffer):
        pass
    elapsed = time.perf_counter() - started
    connection.close()
    if answer.status != 200:
        raise SystemExit("%s answered %d to GET %s" % (target.name, answer.status, path))
    return elapsed


# ---------------------------------------------------------------------------------------------- the servers

def start_distribution(stack, auth):
    registry = stack.enter_context(ReferenceRegistry(auth="htpasswd" if auth == "basic" else "token",
                                                     username=USER, password=PASSWORD))
    return Target("distribution", registry.proc.pid, registry.url, auth)


def start_depot(stack, auth):
    server = stack.enter_context(BenchServer())
    answer = requests.post(server.url + "/admin/users", headers=server.auth, timeout=60,
                           json={"username": USER, "password": PASSWORD, "scopes": ["read", "write"]})
    if answer.status_code not in (200, 201):
        raise SystemExit("Depot refused the bench user: %d %s" % (answer.status_code, answer.text[:300]))
    return Target("depot", server.proc.pid, server.url, auth)


# ---------------------------------------------------------------------------------------------- the report

def median_ratio(per_round, key):
    """The median over the rounds of depot's figure over distribution's (None unless both ran)."""
    if not all("depot" in r and "distribution" in r for r in per_round):
        return None
    return statistics.median(r["depot"][key] / r["distribution"][key] for r in per_round)


def summarize(names, pulls, singles, pushes, memory, args):
    image_mib = args.layers * args.layer_mib
    summary = {"pull": {}, "single": {}, "push": {}}
    for name in names:
        summary["pull"][name] = {key: statistics.median(r[name][key] for r in pulls)
                                 for key in ("rate", "bytes_per_s", "p50", "p99")}
        summary["pull"][name]["mib_per_s"] = summary["pull"][name]["bytes_per_s"] / MIB
        seconds = statistics.median(s for r in singles for s in r[name]["seconds"])
        summary["single"][name] = {"seconds": seconds, "mib_per_s": args.blob_mib / seconds}
        seconds = statistics.median(r[name]["seconds"] for r in pushes)
        summary["push"][name] = {"seconds": seconds, "mib_per_s": image_mib / seconds,
                                 "peak_rss_growth_mib": memory[name]["peak_rss_growth_kib"] / 1024,
                                 "vmhwm_growth_mib": memory[name]["vmhwm_growth_kib"] / 1024,
                                 "rss_before_mib": memory[name]["rss_before_kib"] / 1024}
    for round_ in singles:
        for name in names:
            round_[name]["median"] = statistics.median(round_[name]["seconds"])
    summary["ratios"] = {"pull_mib_per_s": median_ratio(pulls, "bytes_per_s"),
                         "pull_requests_per_s": median_ratio(pulls, "rate"),
                         "single_pull_seconds": median_ratio(singles, "median"),
                         "push_seconds": median_ratio(pushes, "seconds")}
    return summary


def print_report(names, summary, args, client):
    ratios = summary["ratios"]
    print("\npull of one %d MiB layer, %s client, %d connections, %d rounds of %.0f s" % (
        args.blob_mib, client, args.connections, args.rounds, args.seconds))
    print("%-13s %9s %9s %9s %9s %14s" % ("server", "MiB/s", "req/s", "p50 ms", "p99 ms", "1 client, s"))
    for name in names:
        pull, single = summary["pull"][name], summary["single"][name]
        print("%-13s %9.1f %9.2f %9.1f %9.1f %14.3f" % (name, pull["mib_per_s"], pull["rate"], pull["p50"] * 1000,
                                                        pull["p99"] * 1000, single["seconds"]))
    if ratios["pull_mib_per_s"] is not None:
        print("ratio depot/distribution: MiB/s %.2f, req/s %.2f, one client's pull time %.2f (medians of the "
              "rounds)" % (ratios["pull_mib_per_s"], ratios["pull_requests_per_s"], ratios["single_pull_seconds"]))
    print("\npush of a %d-layer image (%d MiB), layers %d at a time, %d rounds" % (
        args.layers, args.layers * args.layer_mib, args.push_parallel, args.push_rounds))
    print("%-13s %9s %9s %15s %19s" % ("server", "median s", "MiB/s", "peak RSS +MiB", "VmHWM +MiB (phase)"))
    for name in names:
        push = summary["push"][name]
        print("%-13s %9.3f %9.1f %15.1f %19.1f" % (name, push["seconds"], push["mib_per_s"],
                                                    push["peak_rss_growth_mib"], push["vmhwm_growth_mib"]))
    if ratios["push_seconds"] is not None:
        print("ratio depot/distribution image push time: %.2f (median of the rounds)" % ratios["push_seconds"])


def run(args, stack):
    client = args.client if args.client != "auto" else ("wrk" if loadgen.wrk_installed() else "python")
    targets = []
    if args.only != "depot":
        targets.append(start_distribution(stack, args.auth))
    if args.only != "distribution":
        targets.append(start_depot(stack, args.auth))
    names = [t.name for t in targets]

    pull_blob = Blob(os.urandom(args.blob_mib * MIB), LAYER)
    pull_image = image_manifest(config_blob(), [pull_blob])
    first_image = new_image(args.layers, args.layer_mib)
    for target in targets:
        target.authorize()
        push_image(target, pull_image, "pull", 1)
        check_pull(target, pull_blob)
        push_image(target, first_image, "first", args.push_parallel)
        check_image(target, first_image, "first")
        print("%s: the %d MiB layer pulls back whole and a %d-layer image pushed reads back" % (
            target.name, args.blob_mib, args.layers))

    memory = {}
    for target in targets:
        target.authorize()
        rss, hwm = memory_kib(target.pid)
        memory[target.name] = {"rss_before_kib": rss, "vmhwm_before_kib": hwm}
    samplers = {t.name: MemorySampler(t.pid) for t in targets}
    for sampler in samplers.values():
        sampler.start()
    pushes, pushed = [], []
    for number in range(args.push_rounds):
        order = targets if number % 2 == 0 else targets[::-1]
        result = {}
        for target in order:
            image, tag = new_image(args.layers, args.layer_mib), "round-%d" % number  # outside the timing
            result[target.name] = {"seconds": push_image(target, image, tag, args.push_parallel)}
            pushed.append((target, image, tag))
        pushes.append(result)
    for target in targets:
        peak = samplers[target.name].stop()
        rss, hwm = memory_kib(target.pid)
        memory[target.name].update(peak_rss_growth_kib=peak - memory[target.name]["rss_before_kib"],
                                   vmhwm_growth_kib=hwm - memory[target.name]["vmhwm_before_kib"], rss_after_kib=rss)
    for target, image, tag in pushed:
        check_image(target, image, tag)
    print("every image pushed in the timed rounds reads back")

    path = "/v2/%s/blobs/%s" % (REPO, pull_blob.digest)
    pulls, singles = [], []
    for number in range(args.rounds):
        order = targets if number % 2 == 0 else targets[::-1]
        result, single = {}, {}
        for target in order:
            target.authorize()  # tokens live a few minutes: a new one per round
            result[target.name] = loadgen.rate(client, target.url + path, {"Authorization": target.header},
                                               args.connections, args.seconds)
            single[target.name] = {"seconds": [single_pull(target, path) for _ in range(args.single)]}
        pulls.append(result)
        singles.append(single)

    summary = summarize(names, pulls, singles, pushes, memory, args)
    print_report(names, summary, args, client)
    return {"measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "client": client, "arguments": vars(args),
            "summary": summary, "pull_rounds": pulls, "single_pull_rounds": singles, "push_rounds": pushes,
            "memory": memory}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auth", choices=("token", "basic"), default="token",
                        help="Bearer token flow on both (default), or Basic credentials on every request")
    parser.add_argument("--blob-mib", type=int, default=50, help="size of the pulled layer (default 50)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent pulling clients (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of pulls (default 5)")
    parser.add_argument("--seconds", type=float, default=5, help="seconds of pulls per server per round (5)")
    parser.add_argument("--single", type=int, default=3, help="one-client pulls per server per round (3)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="the pull load client (default: wrk if installed, else python)")
    parser.add_argument("--layers", type=int, default=10, help="layers of a pushed image (default 10)")
    parser.add_argument("--layer-mib", type=int, default=4, help="MiB of each layer (default 4)")
    parser.add_argument("--push-rounds", type=int, default=10, help="image pushes per server (default 10)")
    parser.add_argument("--push-parallel", type=int, default=6,
                        help="layers pushed at once (default 6, containers/image's)")
    parser.add_argument("--only", choices=("depot", "distribution"), help="run one server alone")
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/...)")
    args = parser.parse_args()
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --client python")

    with contextlib.ExitStack() as stack:
        results = run(args, stack)
    write_results(results, "bench_oci", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
