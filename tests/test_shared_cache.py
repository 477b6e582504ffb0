"""DEPOT_CACHE_URL=redis://...: what processes serving one repository must share lives in Redis (the machine's, under
a key prefix of each test's own: the redis_url fixture).

Two Depots in this process stand for two server processes: each has its own data dir (state store, blobs), and
they share only what separate processes of one deployment share: the identity database (one SQLite file, or
PostgreSQL), the signing key and the Redis; one test runs two `serve` processes so. A token revoked, an account disabled or a password changed through one is refused by
the other at its next request; login attempts through one count on the other. The cache contract tests run on
Redis in tests/test_store_contract.py.
"""
import base64
import io
import os
import subprocess
import sys

import pytest
import redis

from app.stores.interfaces import CacheServerError
from app.stores.registry import Stores
from app.tools import cli
from tests.conftest import ADMIN_PASSWORD, REDIS, ROOT, Depot, ServerProcess, free_port
from tests.test_identity import assert_error, assert_unauthorized, bearer, login, login_token
from tests.test_migrations import fresh_postgres_database


@pytest.fixture
def two_processes(tmp_path, monkeypatch):
    """make(cache_url) -> two Depots over one identity database and signing key, each with its own data dir,
    both using ``cache_url`` (None: none, each keeps its own caches and counts)."""
    made = []
    monkeypatch.setenv("DEPOT_DATABASE_URL", "sqlite:///%s" % (tmp_path / "identity.db"))
    monkeypatch.setenv("DEPOT_SECRET_KEY", "one signing key for both processes")

    def make(cache_url):
        if cache_url is None:
            monkeypatch.delenv("DEPOT_CACHE_URL", raising=False)
        else:
            monkeypatch.setenv("DEPOT_CACHE_URL", cache_url)
        made.extend([Depot(str(tmp_path / "first")), Depot(str(tmp_path / "second"))])
        return made[-2], made[-1]
    yield make
    for depot in made:
        depot.close()


def me(depot, token):
    return depot.client.get("/auth/me", headers=bearer(token))


def create_user(depot, username, password="a long enough password"):
    response = depot.client.post("/admin/users", headers=bearer(login_token(depot, "admin", ADMIN_PASSWORD)),
                                 json={"username": username, "password": password, "scopes": ["read"]})
    assert response.status_code == 201, response.get_data(as_text=True)
    return password


def test_a_login_token_logged_out_through_one_process_is_refused_by_the_other_at_once(two_processes, redis_url):
    first, second = two_processes(redis_url)
    token = login_token(first, "admin", ADMIN_PASSWORD)
    assert me(second, token).status_code == 200  # the other process has now cached the account and the token
    assert first.client.post("/auth/logout", headers=bearer(token)).status_code == 200
    assert_unauthorized(me(second, token), "TOKEN_REVOKED")


def test_an_api_token_revoked_through_one_process_is_refused_by_the_other_at_once(two_processes, redis_url):
    first, second = two_processes(redis_url)
    session = bearer(login_token(first, "admin", ADMIN_PASSWORD))
    created = first.client.post("/auth/tokens", headers=session, json={"name": "ci", "scopes": ["read"]})
    assert created.status_code == 201, created.get_data(as_text=True)
    secret, token_id = created.get_json()["token"], created.get_json()["id"]
    assert me(second, secret).status_code == 200
    assert first.client.delete("/auth/tokens/" + token_id, headers=session).status_code == 200
    assert_unauthorized(me(second, secret), "TOKEN_REVOKED")


def test_an_account_disabled_through_one_process_is_refused_by_the_other_at_once(two_processes, redis_url):
    first, second = two_processes(redis_url)
    password = create_user(first, "bob")
    token = login_token(second, "bob", password)
    assert me(second, token).status_code == 200
    disabled = first.client.patch("/admin/users/bob", headers=bearer(login_token(first, "admin", ADMIN_PASSWORD)),
                                  json={"status": "disabled"})
    assert disabled.status_code == 200, disabled.get_data(as_text=True)
    assert_unauthorized(me(second, token), "TOKEN_REVOKED")


def test_a_password_reset_by_the_admin_cli_ends_tokens_in_a_running_process_at_once(two_processes, redis_url,
                                                                                    monkeypatch, capsys):
    first, second = two_processes(redis_url)
    password = create_user(first, "carol")
    token = login_token(second, "carol", password)
    basic = {"Authorization": "Basic " + base64.b64encode(("carol:" + password).encode()).decode()}
    assert me(second, token).status_code == 200 and second.client.get("/auth/me", headers=basic).status_code == 200
    monkeypatch.setenv("DEPOT_NEW_PASSWORD", "another long enough password")
    assert cli.main(["admin", "reset-password", "carol", "--data-dir", first.data_dir]) == 0, capsys.readouterr()
    assert_unauthorized(me(second, token), "TOKEN_REVOKED")
    assert_unauthorized(second.client.get("/auth/me", headers=basic), "INVALID_CREDENTIALS")


def test_login_attempts_through_one_process_count_on_the_other(two_processes, redis_url):
    first, second = two_processes(redis_url)
    for _ in range(5):  # auth.login.rate_limit_per_username_and_address: 5/m
        assert_unauthorized(login(first, "admin", "wrong password"), "INVALID_CREDENTIALS")
    limited = assert_error(login(second, "admin", ADMIN_PASSWORD), 429, "RATE_LIMITED")
    assert "retry in" in limited["message"]
    assert 1 <= int(login(second, "admin", ADMIN_PASSWORD).headers["Retry-After"]) <= 60


def test_over_postgresql_a_logout_and_login_attempts_reach_the_other_process(tmp_path, redis_url, monkeypatch):
    monkeypatch.setenv("DEPOT_SECRET_KEY", "one signing key for both processes")
    monkeypatch.setenv("DEPOT_CACHE_URL", redis_url)
    with fresh_postgres_database() as database_url:
        monkeypatch.setenv("DEPOT_DATABASE_URL", database_url)
        first = Depot(str(tmp_path / "first"))
        second = Depot(str(tmp_path / "second"))
        try:
            token = login_token(first, "admin", ADMIN_PASSWORD)
            assert me(second, token).status_code == 200
            assert first.client.post("/auth/logout", headers=bearer(token)).status_code == 200
            assert_unauthorized(me(second, token), "TOKEN_REVOKED")
            for _ in range(4):  # with the login above, auth.login's pair limit: 5/m
                assert_unauthorized(login(second, "admin", "wrong password"), "INVALID_CREDENTIALS")
            assert_error(login(first, "admin", ADMIN_PASSWORD), 429, "RATE_LIMITED")
        finally:
            first.close()
            second.close()


def test_without_a_cache_url_each_process_counts_its_own_attempts(two_processes):
    first, second = two_processes(None)
    assert first.service.stores.shared is None and first.service.stores.cache_kind == "embedded"
    for _ in range(5):
        assert_unauthorized(login(first, "admin", "wrong password"), "INVALID_CREDENTIALS")
    assert_error(login(first, "admin", ADMIN_PASSWORD), 429, "RATE_LIMITED")
    assert login(second, "admin", ADMIN_PASSWORD).status_code == 200


def test_two_server_processes_share_revocations_and_login_attempts(tmp_path, redis_url):
    import requests
    shared = {"DEPOT_DATABASE_URL": "sqlite:///%s" % (tmp_path / "identity.db"), "DEPOT_CACHE_URL": redis_url,
              "DEPOT_SECRET_KEY": "one signing key for both processes"}
    first = ServerProcess(tmp_path / "first", env=shared)
    try:
        second = ServerProcess(tmp_path / "second", env=shared)
        try:
            def log_in(server, password):
                return requests.post(server.url + "/auth/login", json={"username": "admin", "password": password},
                                     timeout=60)
            token = log_in(first, ADMIN_PASSWORD).json()["token"]
            assert requests.get(second.url + "/auth/me", headers=bearer(token), timeout=60).status_code == 200
            assert requests.post(first.url + "/auth/logout", headers=bearer(token), timeout=60).status_code == 200
            refused = requests.get(second.url + "/auth/me", headers=bearer(token), timeout=60)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "TOKEN_REVOKED"
            for _ in range(4):  # with the login above: the 5 attempts a minute of auth.login's pair limit
                assert log_in(second, "wrong password").status_code == 401
            limited = log_in(first, ADMIN_PASSWORD)
            assert limited.status_code == 429 and limited.json()["error"]["code"] == "RATE_LIMITED"
        finally:
            second.stop()
    finally:
        first.stop()


# --- the cache -----------------------------------------------------------------------------------------------------

SETTINGS = {"response": {"enabled": True, "max_entry_bytes": 1000, "default_ttl_seconds": 300}}


def open_cache(path, url):
    stores = Stores(str(path), cache_url=url)
    return stores, stores.cache(SETTINGS, lambda info: None)


def test_processes_on_one_redis_share_cache_entries_and_other_prefixes_do_not(tmp_path, redis_url):
    first, first_cache = open_cache(tmp_path / "first", redis_url)
    second, second_cache = open_cache(tmp_path / "second", redis_url)
    elsewhere, elsewhere_cache = open_cache(tmp_path / "elsewhere", redis_url + "-another-repository")
    try:
        assert first.cache_kind == "redis"
        assert first_cache.put("response", "page", {"body": "cached once"})
        assert second_cache.get("response", "page") == (True, {"body": "cached once"})
        assert elsewhere_cache.get("response", "page") == (False, None)  # another repository on the same Redis
        second_cache.invalidate("response", "page")
        assert first_cache.get("response", "page") == (False, None)
    finally:
        for stores in (first, second, elsewhere):
            stores.close()
        elsewhere_cache.invalidate("response", "page")


# --- a Redis that does not answer stops the start ----------------------------------------------------------------

def test_a_redis_that_does_not_answer_stops_the_stores_opening_and_frees_the_data_dir(tmp_path):
    url = "redis://127.0.0.1:%d/0" % free_port()
    with pytest.raises(CacheServerError) as raised:
        Stores(str(tmp_path / "data"), cache_url=url)
    assert "DEPOT_CACHE_URL=%s" % url in str(raised.value) and "does not answer" in str(raised.value)
    Stores(str(tmp_path / "data")).close()  # the failed start gave the data dir's lease back


@pytest.mark.parametrize("url, complaint", [("http://127.0.0.1:6379/0", "is not a Redis URL"),
                                            ("redis://127.0.0.1:6379/0?prefix=a:b", "prefix is a non-empty name")])
def test_a_cache_url_that_is_no_redis_url_is_refused(tmp_path, url, complaint):
    with pytest.raises(CacheServerError) as raised:
        Stores(str(tmp_path / "data"), cache_url=url)
    assert complaint in str(raised.value) and "DEPOT_CACHE_URL" in str(raised.value)


def test_serve_refuses_to_start_naming_the_cache_url(tmp_path):
    url = "redis://:secret@127.0.0.1:%d/0" % free_port()
    started = subprocess.run([sys.executable, "-m", "app", "serve", "--port", "0", "--data-dir", str(tmp_path / "data")],
                             cwd=ROOT, env=dict(os.environ, DEPOT_CACHE_URL=url), capture_output=True, text=True,
                             timeout=120)
    assert started.returncode == 2, started.stdout + started.stderr
    assert started.stderr.startswith("error: DEPOT_CACHE_URL=redis://:***@127.0.0.1:"), started.stderr
    assert "does not answer" in started.stderr and "secret" not in started.stderr + started.stdout


def test_the_redis_cache_serves_a_cached_route(tmp_path, redis_url, monkeypatch):
    monkeypatch.setenv("DEPOT_CACHE_URL", redis_url)
    depot = Depot(str(tmp_path / "data"))
    client = redis.Redis.from_url(REDIS)
    try:
        published = depot.publish("acme", "tool", "1.0.0", "linux-amd64", io.BytesIO(b"cached bytes"))
        assert published.status_code == 201, published.get_data(as_text=True)
        cached = redis_url.split("prefix=")[1] + ":cache:response:blob_resp/acme/tool/1.0.0/linux-amd64"
        for filled in (False, True):  # a miss that fills the cache, then a hit
            assert bool(client.exists(cached)) is filled
            response = depot.client.get("/v1/acme/tool/1.0.0/linux-amd64/blob", headers=depot.headers())
            assert response.status_code == 200 and response.get_data() == b"cached bytes"
        assert 0 < client.pttl(cached) <= 300_000
        health = depot.client.get("/health").get_json()
        assert health["ok"] and health["stores"]["cache"] == {"kind": "redis", "ok": True}
    finally:
        client.close()
        depot.close()


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own (so that the test can stop it): its URL, and the process."""
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in server.stdout:  # ready once it says so
            if "Ready to accept connections" in line:
                break
        else:
            raise AssertionError("redis-server did not start")
        yield "redis://127.0.0.1:%d/0" % port, server
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_redis_that_stops_answering_fails_the_requests_that_need_it_with_503(tmp_path, own_redis, monkeypatch):
    url, server = own_redis
    monkeypatch.setenv("DEPOT_CACHE_URL", url)
    depot = Depot(str(tmp_path / "data"))
    try:
        token = login_token(depot, "admin", ADMIN_PASSWORD)
        assert me(depot, token).status_code == 200
        server.terminate()
        server.wait(timeout=30)
        assert_error(me(depot, token), 503, "CACHE_UNAVAILABLE")
        assert_error(login(depot, "admin", ADMIN_PASSWORD), 503, "CACHE_UNAVAILABLE")
        assert depot.client.get("/health").status_code == 503
    finally:
        depot.close()
