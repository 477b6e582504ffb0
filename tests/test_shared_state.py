"""DEPOT_STATE_URL=postgresql://...: a repository's documents, indexes and event log in PostgreSQL, shared by every
process serving it (app/stores/pgstate.py). The state contract tests run on it in tests/test_store_contract.py.

The shared stack here is what a deployment of several processes uses: state and identities in one fresh
PostgreSQL database, blobs in the tests' S3 server (DEPOT_BLOB_URL), caches, limits and revocations in the
machine's Redis (DEPOT_CACHE_URL). Each process has its own data dir: they share nothing else.
"""
import os
import signal
import threading
import time

import pytest
import requests

from app.engine.definitions import EventLog as EventLogSettings
from app.stores.interfaces import StateLocationError
from app.stores.registry import Stores
from tests.conftest import ADMIN_PASSWORD, Depot, ServerProcess, free_port, join_all
from tests.test_identity import bearer, login_token
from tests.test_migrations import fresh_postgres_database

VARIANT = "linux-amd64"


@pytest.fixture
def shared_stack(s3_server, redis_url, monkeypatch):
    """The environment of every process of one deployment on the shared stack: a fresh PostgreSQL database (state
    and identities), a prefix of its own in the S3 server, a Redis prefix of its own, one signing key."""
    with fresh_postgres_database() as database_url:
        env = {"DEPOT_DATABASE_URL": database_url, "DEPOT_STATE_URL": database_url,
               "DEPOT_BLOB_URL": "s3://%s/%s?endpoint_url=%s&region=us-east-1" % (
                   s3_server.bucket, s3_server.new_prefix().rstrip("/"), s3_server.endpoint_url),
               "DEPOT_CACHE_URL": redis_url, "DEPOT_SECRET_KEY": "one signing key for every process"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield env


@pytest.fixture
def two_depots(shared_stack, tmp_path, reference_schema):
    """Two Depots in this process standing for two processes of one deployment (own data dirs, shared stack)."""
    first = Depot(str(tmp_path / "first"), reference_schema)
    second = Depot(str(tmp_path / "second"), reference_schema)
    yield first, second
    second.close()
    first.close()


def test_a_write_through_one_process_is_read_through_the_other_at_once(two_depots):
    first, second = two_depots
    assert first.service.stores.state({}).health()["kind"] == "postgresql"
    body = b"published through the first process"
    assert first.publish("acme", "hello", "1.0.0", VARIANT, body).status_code == 201
    latest = second.client.get("/v1/acme/hello/latest", headers=second.headers(["read"]))
    assert latest.status_code == 200 and latest.get_json()["version"] == "1.0.0", latest.data
    fetched = second.client.get("/v1/acme/hello/1.0.0/%s/blob" % VARIANT, headers=second.headers(["read"]))
    assert fetched.status_code == 200 and fetched.get_data() == body
    assert second.publish("acme", "hello", "1.1.0", VARIANT, b"and a newer one").status_code == 201
    again = first.client.get("/v1/acme/hello/latest", headers=first.headers(["read"]))
    assert again.get_json()["version"] == "1.1.0"  # the first process's cached answer was dropped


def test_one_publish_of_the_same_coordinates_wins_across_processes_and_the_log_has_no_gap(two_depots):
    first, second = two_depots
    statuses, errors = [], []
    first.headers(), second.headers()  # the test user, made once before the threads race

    def publish(depot, version):
        try:
            statuses.append((version, depot.publish("acme", "race", version, VARIANT, b"body " + version.encode())
                             .status_code))
        except Exception as exc:  # noqa: BLE001 - reported by join_all
            errors.append(exc)
    # 16 threads: each holds a PostgreSQL connection while it runs, and the suite's other worker uses the server too
    threads = [threading.Thread(target=publish, args=((first, second)[i % 2], "1.0.%d" % (i // 4)))
               for i in range(16)]
    for thread in threads:
        thread.start()
    join_all(threads, errors)
    for version in ("1.0.0", "1.0.1", "1.0.2", "1.0.3"):  # four publishes of each, two through each process
        assert sorted(status for v, status in statuses if v == version) == [201] + [409] * 3, statuses
    log = first.service.stores.state({}).event_log(EventLogSettings("meta", "eventlog/", 262144))
    numbers = [event.record["seq"] for event in log.read_after(0)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 4


def test_two_server_processes_share_state_blobs_and_revocations_and_one_of_40_racing_publishes_wins(shared_stack,
                                                                                                  tmp_path):
    first = ServerProcess(tmp_path / "first", env=shared_stack)
    try:
        second = ServerProcess(tmp_path / "second", env=shared_stack)
        try:
            token = requests.post(first.url + "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD},
                                  timeout=60).json()["token"]
            put = "/v1/acme/served/2.0.0/%s/blob" % VARIANT
            assert requests.put(first.url + put, data=b"over the wire", headers=bearer(token),
                                timeout=60).status_code == 201
            fetched = requests.get(second.url + put, headers=bearer(token), timeout=60)
            assert fetched.status_code == 200 and fetched.content == b"over the wire"
            assert requests.put(second.url + put, data=b"again", headers=bearer(token), timeout=60).status_code == 409
            race = "/v1/acme/raced/1.0.0/%s/blob" % VARIANT
            statuses, errors = [], []

            def publish(server, n):
                try:
                    statuses.append(requests.put(server.url + race, data=b"racer %d" % n, headers=bearer(token),
                                                 timeout=120).status_code)
                except Exception as exc:  # noqa: BLE001 - reported by join_all
                    errors.append(exc)
            racers = [threading.Thread(target=publish, args=((first, second)[n % 2], n)) for n in range(40)]
            for racer in racers:
                racer.start()
            join_all(racers, errors)
            assert sorted(statuses) == [201] + [409] * 39, statuses
            assert requests.post(second.url + "/auth/logout", headers=bearer(token), timeout=60).status_code == 200
            refused = requests.get(first.url + "/v1/acme/served/latest", headers=bearer(token), timeout=60)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "TOKEN_REVOKED"
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_malformed_state_url_or_a_silent_server_stops_the_start_naming_it(tmp_path, monkeypatch, capsys):
    from app.tools.cli import main
    monkeypatch.setenv("DEPOT_ADMIN_PASSWORD", ADMIN_PASSWORD)
    for url, says in (("mysql://db/x", "expected postgresql://"),
                      ("postgresql://127.0.0.1:5432/test?table=Bad-Name", "table"),
                      ("postgresql://postgres@127.0.0.1:%d/test" % free_port(), "does not answer")):
        monkeypatch.setenv("DEPOT_STATE_URL", url)
        assert main(["serve", "--data-dir", str(tmp_path / "data"), "--port", "0"]) == 2
        err = capsys.readouterr().err
        assert says in err, err
    with pytest.raises(StateLocationError):
        Stores(str(tmp_path / "other"), state_url="sqlite:///state.db")


# --- serve --workers N ----------------------------------------------------------------------------------------------

def children(pid):
    """The process ids of ``pid``'s children (Linux /proc)."""
    with open("/proc/%d/task/%d/children" % (pid, pid)) as listing:
        return [int(child) for child in listing.read().split()]


def test_several_workers_serve_one_port_and_a_dead_one_is_started_again(shared_stack, tmp_path):
    server = ServerProcess(tmp_path / "data", env=shared_stack, args=("--workers", "2"))
    try:
        workers = children(server.proc.pid)
        assert len(workers) == 2, server.output
        token = requests.post(server.url + "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD},
                              timeout=60).json()["token"]
        put = server.url + "/v1/acme/workers/1.0.0/%s/blob" % VARIANT
        assert requests.put(put, data=b"served by a worker", headers=bearer(token), timeout=60).status_code == 201
        os.kill(workers[0], signal.SIGKILL)
        for _ in range(20):  # each request is answered, by the other worker while the first is started again
            fetched = requests.get(put, headers=bearer(token), timeout=60)
            assert fetched.status_code == 200 and fetched.content == b"served by a worker"
        deadline = time.monotonic() + 60
        while len(children(server.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the supervisor's children until it has started the worker again
        again = children(server.proc.pid)
        assert len(again) == 2 and workers[0] not in again and workers[1] in again
    finally:
        server.stop()
    for pid in again:
        assert not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z"


def test_several_workers_over_the_embedded_stores_are_refused_saying_why(tmp_path, monkeypatch, capsys):
    from app.tools.cli import main
    for name in ("DEPOT_STATE_URL", "DEPOT_BLOB_URL", "DEPOT_CACHE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEPOT_ADMIN_PASSWORD", ADMIN_PASSWORD)
    assert main(["serve", "--data-dir", str(tmp_path / "data"), "--port", "0", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "serve one process" in err and all(name in err for name in ("DEPOT_STATE_URL", "DEPOT_BLOB_URL",
                                                                       "DEPOT_CACHE_URL")), err


def test_a_schema_loaded_through_one_process_is_served_by_the_other(two_depots, reference_schema):
    first, second = two_depots
    changed = dict(reference_schema, description="loaded through the first process")
    admin = {"Authorization": "Bearer " + login_token(first, "admin", ADMIN_PASSWORD)}
    before = second.client.get("/health").get_json()["schema_sha256"]
    loaded = first.client.post("/admin/schema", json=changed, headers=admin)
    assert loaded.status_code == 201, loaded.get_data(as_text=True)
    wanted = first.client.get("/health").get_json()["schema_sha256"]
    assert wanted != before
    deadline = time.monotonic() + 60
    while second.client.get("/health").get_json()["schema_sha256"] != wanted and time.monotonic() < deadline:
        time.sleep(0.1)  # polling until the other's follower has swapped the schema in (every 2 s)
    assert second.client.get("/health").get_json()["schema_sha256"] == wanted
