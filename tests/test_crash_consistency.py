"""A real server killed with SIGKILL while clients publish and tag, then restarted, trial after trial over one
data dir: everything acknowledged is intact, nothing unacknowledged is half-visible, and no temporary file
survives the restart. On the embedded stores, and on the shared ones (PostgreSQL, S3, Redis). DEPOT_CRASH_TRIALS sets the number of trials (10 by default; 20 on demand)."""
import hashlib
import os
import random
import threading

import pytest
import requests

from tests.conftest import ADMIN_PASSWORD, ServerProcess

TRIALS = int(os.environ.get("DEPOT_CRASH_TRIALS", "10"))
WRITERS = 4


class Ledger:
    """What the clients sent and what the server acknowledged, across every trial."""

    def __init__(self):
        self.lock = threading.Lock()
        self.published = {}  # path -> bytes, acknowledged
        self.attempted = {}  # path -> bytes, sent but not acknowledged
        self.tags = {}  # tag path -> (version, variant), acknowledged
        self.tag_attempts = {}

    def record(self, table, key, value):
        with self.lock:
            table[key] = value


def login(url):
    answer = requests.post(url + "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=30)
    assert answer.status_code == 200, answer.text
    return {"Authorization": "Bearer " + answer.json()["token"]}


def write_until_killed(url, auth, ledger, trial, writer, rng):
    """Publish and tag until the server goes away."""
    session = requests.Session()
    session.headers.update(auth)
    package = "/v1/crash/w%d" % writer
    mine = []
    try:
        for n in range(10_000):
            version = "%d.%d.%d" % (trial, writer, n)
            data = rng.randbytes(rng.choice((100, 4096, 256 * 1024, 2 * 1024 * 1024)))
            path = "%s/%s/x" % (package, version)
            ledger.record(ledger.attempted, path, data)
            if session.put(url + path + "/blob", data=data, timeout=60).status_code == 201:
                ledger.record(ledger.published, path, data)
                mine.append(version)
            if mine and n % 3 == 2:
                tag = "%s/tags/t%d-%d" % (package, trial, n)
                target = (rng.choice(mine), "x")
                ledger.record(ledger.tag_attempts, tag, target)
                body = {"version": target[0], "variant": target[1]}
                if session.put(url + tag, json=body, timeout=60).status_code == 200:
                    ledger.record(ledger.tags, tag, target)
    except requests.RequestException:
        return  # the server was killed


def verify(url, auth, ledger, paths=None):
    """Check the attempts at ``paths`` (default: every one): acknowledged ones intact, the others whole or absent,
    and each package's listing naming exactly the versions whose documents exist."""
    read = requests.Session()
    read.headers.update(auth)
    present = set()
    for path in ledger.attempted if paths is None else paths:
        meta = read.get(url + path, timeout=60)
        if path in ledger.published:
            assert meta.status_code == 200, (path, meta.text)
        if meta.status_code == 404:
            continue  # never committed: the listings below must not name it either
        assert meta.status_code == 200, (path, meta.text)
        data = ledger.attempted[path]
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert meta.json()["blob_digest"] == digest and meta.json()["blob_size"] == len(data), path
        assert hashlib.sha256(read.get(url + path + "/blob", timeout=60).content).hexdigest() == digest[7:], path
        present.add(path)
    for writer in range(WRITERS):
        package = "/v1/crash/w%d" % writer
        listed = {"%s/%s/x" % (package, version) for version in versions(read, url + package)}
        checked = {path for path in ledger.attempted if path.startswith(package + "/")}
        if paths is not None:
            checked &= set(paths)
        assert listed & checked == present & checked, package  # index rows and documents agree
    for tag, target in ledger.tag_attempts.items():
        answer = read.get(url + tag, timeout=60)
        if tag in ledger.tags:
            assert answer.status_code == 200, tag
        if answer.status_code == 200:
            assert (answer.json()["version"], answer.json()["variant"]) == target, tag
        else:
            assert answer.status_code == 404, tag


def versions(session, package_url):
    listed, page = set(), 1
    while True:
        answer = session.get(package_url + "/versions", params={"page": page, "page_size": 200}, timeout=60).json()
        listed |= {item["version"] for item in answer["items"]}
        if len(answer["items"]) < 200:
            return listed
        page += 1


def temp_files(data_dir):
    dirs = [os.path.join(data_dir, "data", "blobs", ".tmp"), os.path.join(data_dir, "tmp")]
    return [name for d in dirs if os.path.isdir(d) for name in os.listdir(d)]


@pytest.fixture(params=["embedded", "shared"])
def stack(request):
    """The environment the server runs in: the embedded stores, or the shared ones (state in a PostgreSQL table,
    blobs under an S3 prefix, caches under a Redis prefix, each of this test's own)."""
    if request.param == "embedded":
        return {}
    state, s3 = request.getfixturevalue("postgres_state"), request.getfixturevalue("s3_server")
    return {"DEPOT_STATE_URL": state.state_url(), "DEPOT_CACHE_URL": request.getfixturevalue("redis_url"),
            "DEPOT_BLOB_URL": "s3://%s/%s?endpoint_url=%s&region=us-east-1"
                              % (s3.bucket, s3.new_prefix().rstrip("/"), s3.endpoint_url)}


@pytest.mark.attack
def test_sigkill_during_publishes_and_tags_loses_nothing_acknowledged(tmp_path, stack):
    data_dir = tmp_path / "data"
    ledger, rng, verified, auth = Ledger(), random.Random(1234), set(), None
    for trial in range(TRIALS):
        server = ServerProcess(data_dir, env=stack)
        try:
            assert temp_files(data_dir) == []  # what the last kill left was removed at start
            auth = auth or login(server.url)  # once: on the shared stack login attempts are counted across restarts
            verify(server.url, auth, ledger, paths=[p for p in ledger.attempted if p not in verified])
            verified.update(ledger.attempted)
            writers = [threading.Thread(target=write_until_killed, daemon=True,
                                        args=(server.url, auth, ledger, trial, w, random.Random(rng.random())))
                       for w in range(WRITERS)]
            for thread in writers:
                thread.start()
            killed = threading.Event()
            killed.wait(rng.uniform(0.3, 2.0))  # a random moment of the writing, not a synchronisation
            server.kill()
            for thread in writers:
                thread.join(120)
            assert not any(thread.is_alive() for thread in writers)
        finally:
            server.stop()
    server = ServerProcess(data_dir, env=stack)
    try:
        assert temp_files(data_dir) == []
        verify(server.url, auth, ledger)
        assert len(ledger.published) >= TRIALS  # the trials did publish
    finally:
        server.stop()
