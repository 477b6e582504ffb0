"""HTTP Basic credentials (RFC 7617) wherever a bearer token is accepted, the per-route WWW-Authenticate challenge
that tells clients like pip which credentials to send, and reads without credentials where the installation allows
them while credentials, when sent, still count.

A real Service over a temporary data dir through the Flask test client; one test drives a real server process with
`requests`, as pip and twine send Basic credentials.
"""
import base64
import copy
import json
import threading

import pytest
import requests
from sqlalchemy import select

from app.engine.compiler import compile_schema
from app.identity.auth import hash_password
from models import User
from tests.conftest import ADMIN_PASSWORD, ServerProcess, join_all
from tests.test_identity import (ALICE_PASSWORD, admin_headers, assert_error, bearer, create_api_token, create_user,
                                 login_token, with_auth)
from tests.test_identity import admin, depot  # noqa: F401  (fixtures)
from tests.test_namespace_permissions import grant, publish, published

PYPI = 'Basic realm="pypi"'
LATEST = "/v1/acme/tool/latest"


def basic(username, secret, encoding="utf-8"):
    pair = ("%s:%s" % (username, secret)).encode(encoding)
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


@pytest.fixture
def alice(depot, admin):
    """A read+write user, with a tool published in acme."""
    create_user(depot, admin, "alice", ["read", "write"], ALICE_PASSWORD)
    published(depot, admin, ("acme", "tool", "1.0.0"))
    return "alice"


@pytest.fixture
def alice_token(depot, alice):
    """A read-only API token of alice (its secret)."""
    return create_api_token(depot, bearer(login_token(depot, "alice", ALICE_PASSWORD)))["token"]


def me(depot, headers):
    response = depot.client.get("/auth/me", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def audited(depot, admin, outcome, action="auth.login"):
    rows = depot.client.get("/admin/audit?action=%s&page_size=200" % action, headers=admin).get_json()["items"]
    return [row for row in rows if row["outcome"] == outcome]


def schema_with(project_schema, policy_challenge=None, route_challenges=None, **auth):
    """The project's schema, its `public` routes also selected by a policy declaring ``policy_challenge``, some
    routes with their own challenge (route id -> challenge), and ``auth`` settings replaced."""
    schema = copy.deepcopy(project_schema)
    if policy_challenge is not None:
        schema["auth"]["policies"].append({"name": "pypi_challenge", "when": {"route.tags": ["public"]},
                                           "challenge": policy_challenge})
    for route in schema["api"]["routes"]:
        if route["id"] in (route_challenges or {}):
            route["challenge"] = route_challenges[route["id"]]
    schema["auth"].update(auth)
    return schema


def errors_of(schema):
    compiled, report = compile_schema(schema, "test")
    return compiled, [str(error) for error in report.to_dict()["errors"]]


# --- what Basic credentials name ----------------------------------------------------------------------------

def test_an_api_token_as_the_password_of_token_or_of_its_owner(depot, alice, alice_token):
    for username in ("__token__", "alice", "ALICE"):
        response = depot.client.get(LATEST, headers=basic(username, alice_token))
        assert response.status_code == 200, (username, response.get_data(as_text=True))
    assert me(depot, basic("__token__", alice_token))["auth"] == "api_token"
    assert me(depot, basic("alice", alice_token))["scopes"] == ["read"]  # the token's scopes, not alice's


def test_a_login_token_as_the_password_of_token(depot, alice):
    jwt = login_token(depot, "alice", ALICE_PASSWORD)
    assert me(depot, basic("__token__", jwt))["auth"] == "jwt"


def test_an_api_token_of_someone_else_is_refused(depot, admin, alice, alice_token):
    create_user(depot, admin, "bob", ["read"], "bob-password-123456")
    error = assert_error(depot.client.get(LATEST, headers=basic("bob", alice_token)), 401, "INVALID_CREDENTIALS")
    assert "bob" in error["message"]


def test_a_password(depot, alice):
    view = me(depot, basic("alice", ALICE_PASSWORD))
    assert view["auth"] == "password" and view["username"] == "alice" and view["scopes"] == ["read", "write"]
    assert view["last_login_at"] is not None  # a password check is a login
    assert publish(depot, basic("alice", ALICE_PASSWORD), "acme", version="2.0.0").status_code == 201
    assert depot.client.get(LATEST, headers=basic("alice", ALICE_PASSWORD)).get_json()["version"] == "2.0.0"


def test_a_password_in_iso_8859_1_as_python_requests_sends_it(depot, admin):
    password = "pässwörd-of-carol"
    create_user(depot, admin, "carol", ["read"], password)
    assert me(depot, basic("carol", password, "iso-8859-1"))["username"] == "carol"
    assert me(depot, basic("carol", password))["username"] == "carol"


def test_a_wrong_password_is_401_with_the_challenge_and_audited(depot, admin, alice):
    response = depot.client.get(LATEST, headers=basic("alice", "not-her-password"))
    error = assert_error(response, 401, "INVALID_CREDENTIALS")
    assert "password" in error["message"] and response.headers["WWW-Authenticate"] == "Bearer"
    assert_error(depot.client.get(LATEST, headers=basic("nobody", ALICE_PASSWORD)), 401, "INVALID_CREDENTIALS")
    failures = audited(depot, admin, "failure")
    assert [(row["actor"], row["detail"]) for row in failures[:2]] == [("nobody", {"via": "basic"}),
                                                                        ("alice", {"via": "basic"})]


def test_a_password_login_is_no_login_session(depot, alice):
    response = depot.client.post("/auth/tokens", headers=basic("alice", ALICE_PASSWORD),
                                 json={"name": "ci", "scopes": ["read"]})
    assert_error(response, 403, "LOGIN_SESSION_REQUIRED")


@pytest.mark.parametrize("header", [
    "Basic", "Basic ", "Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode(b":password-without-user").decode(),
    "Basic " + base64.b64encode(b"alice:pass\nword").decode(), "basic " + "é"])
def test_malformed_basic_credentials_are_401_not_500(depot, alice, header):
    response = depot.client.get(LATEST, headers={"Authorization": header})
    error = assert_error(response, 401, "MALFORMED_CREDENTIALS")
    assert error["field"] == "Authorization" and "Basic" in error["message"]


def test_an_unknown_scheme_names_both_accepted_ones(depot, alice):
    error = assert_error(depot.client.get(LATEST, headers={"Authorization": "Digest x"}), 401, "INVALID_TOKEN")
    assert "Bearer" in error["message"] and "Basic" in error["message"]


# --- ended accounts and credentials -------------------------------------------------------------------------

def test_a_disabled_user_is_refused_even_just_after_a_verified_request(depot, admin, alice, alice_token):
    assert me(depot, basic("alice", ALICE_PASSWORD))["username"] == "alice"  # verified, and cached
    assert depot.client.patch("/admin/users/alice", headers=admin, json={"status": "disabled"}).status_code == 200
    assert_error(depot.client.get(LATEST, headers=basic("alice", ALICE_PASSWORD)), 401, "INVALID_CREDENTIALS")
    assert_error(depot.client.get(LATEST, headers=basic("__token__", alice_token)), 401, "TOKEN_REVOKED")


def test_a_changed_password_ends_the_cached_verification(depot, alice):
    old = basic("alice", ALICE_PASSWORD)
    assert me(depot, old)["username"] == "alice"
    response = depot.client.post("/auth/change-password", headers=old, json={
        "current_password": ALICE_PASSWORD, "new_password": "a brand new passphrase"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_error(depot.client.get(LATEST, headers=old), 401, "INVALID_CREDENTIALS")
    assert me(depot, basic("alice", "a brand new passphrase"))["username"] == "alice"


def test_a_change_from_another_process_ends_it_too(depot, alice):
    """The admin CLI changes the database beside the server: the cached verification holds the account's token
    version, compared with the account's state on every use (which this process re-reads every few seconds)."""
    assert me(depot, basic("alice", ALICE_PASSWORD))["username"] == "alice"
    with depot.service.sessions() as session:  # what `python -m app admin reset-password` writes
        user = session.scalar(select(User).where(User.username == "alice"))
        user.password_hash = hash_password("reset by the operator")
        user.token_version += 1
        session.commit()
    depot.service.identity._users.clear()  # as if STATE_CACHE_SECONDS had passed
    assert_error(depot.client.get(LATEST, headers=basic("alice", ALICE_PASSWORD)), 401, "INVALID_CREDENTIALS")
    assert me(depot, basic("alice", "reset by the operator"))["username"] == "alice"


def test_revoked_and_expired_tokens_say_so(depot, alice, alice_token):
    session = bearer(login_token(depot, "alice", ALICE_PASSWORD))
    listed = depot.client.get("/auth/tokens", headers=session).get_json()["items"]
    assert depot.client.delete("/auth/tokens/" + listed[0]["id"], headers=session).status_code == 200
    for username in ("__token__", "alice"):
        assert_error(depot.client.get(LATEST, headers=basic(username, alice_token)), 401, "TOKEN_REVOKED")
    assert_error(depot.client.get(LATEST, headers=basic("__token__", "dpt_" + "A" * 43)), 401, "INVALID_TOKEN")


def test_a_password_that_looks_like_a_token(depot, admin):
    """A secret of the API token form naming no token is a password: a password may look so."""
    create_user(depot, admin, "dora", ["read"], "dpt_this-is-my-password")
    assert me(depot, basic("dora", "dpt_this-is-my-password"))["auth"] == "password"


# --- rate limits ----------------------------------------------------------------------------------------------

def test_wrong_passwords_through_basic_are_rate_limited_like_logins(make_depot, project_schema):
    depot = make_depot(with_auth(project_schema, rate_limit_per_username_and_address="3/m"))
    admin = admin_headers(depot)
    create_user(depot, admin, "alice", ["read"], ALICE_PASSWORD)
    for _ in range(3):
        assert_error(depot.client.get(LATEST, headers=basic("alice", "wrong-password-1")), 401, "INVALID_CREDENTIALS")
    response = depot.client.get(LATEST, headers=basic("alice", ALICE_PASSWORD))
    assert_error(response, 429, "RATE_LIMITED")
    assert int(response.headers["Retry-After"]) >= 1
    assert_error(depot.client.post("/auth/login", json={"username": "alice", "password": ALICE_PASSWORD}), 429)
    limited = audited(depot, admin, "rate_limited")
    assert limited[-1]["detail"] == {"limit": "rate_limit_per_username_and_address", "via": "basic"}
    other = {"environ_base": {"REMOTE_ADDR": "10.9.8.7"}}  # the pair's limit: another address is not limited
    assert depot.client.get("/auth/me", headers=basic("alice", ALICE_PASSWORD), **other).status_code == 200


def test_a_failed_write_counts_its_wrong_password_once(make_depot, project_schema):
    """A refused write is audited with its caller: asking who it was must not check the password again."""
    depot = make_depot(with_auth(project_schema, rate_limit_per_username_and_address="2/m"))
    admin = admin_headers(depot)
    create_user(depot, admin, "alice", ["read", "write"], ALICE_PASSWORD)
    for version in ("1.0.0", "2.0.0"):
        response = publish(depot, basic("alice", "wrong-password-1"), "acme", version=version)
        assert_error(response, 401, "INVALID_CREDENTIALS")
    assert len(audited(depot, admin, "failure")) == 2
    assert audited(depot, admin, "failure", "route.publish_artifact_blob")[0]["actor"] == "anonymous"


def test_a_verified_password_costs_one_attempt_not_one_per_request(make_depot, project_schema):
    depot = make_depot(with_auth(project_schema, rate_limit_per_username_and_address="2/m"))
    create_user(depot, admin_headers(depot), "alice", ["read"], ALICE_PASSWORD)
    for _ in range(20):
        assert me(depot, basic("alice", ALICE_PASSWORD))["username"] == "alice"


def test_concurrent_first_requests_check_the_password_once(make_depot, project_schema, monkeypatch):
    """uv and pip fetch in parallel: the first requests carrying new credentials wait for one check. The check
    is held until every request has looked in the cache and missed, so all of them are in flight at once."""
    depot = make_depot(with_auth(project_schema, rate_limit_per_username_and_address="2/m"))
    create_user(depot, admin_headers(depot), "alice", ["read"], ALICE_PASSWORD)
    identity, checks, count = depot.service.identity, depot.service.password_checks, 8
    lookups, all_looked, lock = [], threading.Event(), threading.Lock()
    look, check = identity._passwords.get, checks.before

    def counted_lookup(key):
        with lock:
            lookups.append(key)
            if len(lookups) >= count:
                all_looked.set()
        return look(key)

    def held_check(username, request):
        assert all_looked.wait(60)
        check(username, request)
    monkeypatch.setattr(identity._passwords, "get", counted_lookup)
    monkeypatch.setattr(checks, "before", held_check)
    statuses, errors = [], []

    def fetch():
        try:
            statuses.append(depot.app.test_client().get("/auth/me", headers=basic("alice", ALICE_PASSWORD))
                            .status_code)
        except Exception as error:  # noqa: BLE001 (re-raised by join_all)
            errors.append(error)
    threads = [threading.Thread(target=fetch) for _ in range(count)]
    for thread in threads:
        thread.start()
    join_all(threads, errors)
    assert statuses == [200] * count


# --- namespace grants -----------------------------------------------------------------------------------------

def test_grants_apply_to_basic_principals_as_to_bearer_ones(depot, admin, alice, alice_token):
    published(depot, admin, ("other", "tool", "1.0.0"))
    grant(depot, admin, "user:alice", "acme", "write")
    password = basic("alice", ALICE_PASSWORD)
    assert depot.client.get(LATEST, headers=password).status_code == 200
    assert publish(depot, password, "acme", version="3.0.0").status_code == 201
    error = assert_error(depot.client.get("/v1/other/tool/latest", headers=password), 403, "FORBIDDEN")
    assert error["field"] == "namespace"
    assert_error(publish(depot, password, "other", version="3.0.0"), 403)
    token = basic("__token__", alice_token)  # read-only: the token's scopes cap the grant
    assert depot.client.get(LATEST, headers=token).status_code == 200
    assert_error(publish(depot, token, "acme", version="4.0.0"), 403)
    listing = depot.client.get("/v1", headers=password).get_json()["items"]
    assert [row["namespace"] for row in listing] == ["acme"]


# --- the challenge ------------------------------------------------------------------------------------------

def test_a_policy_declares_the_challenge_of_the_routes_it_selects(make_depot, project_schema):
    depot = make_depot(schema_with(project_schema, PYPI))
    response = depot.client.get(LATEST)
    assert_error(response, 401, "UNAUTHENTICATED")
    assert response.headers["WWW-Authenticate"] == PYPI
    for header in (basic("alice", "wrong-password-1"), {"Authorization": "Basic ???"}, bearer("not.a.jwt")):
        assert depot.client.get(LATEST, headers=header).headers["WWW-Authenticate"] == PYPI
    assert depot.client.put("/v1/acme/tool/1.0.0/linux/blob", data=b"x").headers["WWW-Authenticate"] == "Bearer"
    assert depot.client.get("/auth/me").headers["WWW-Authenticate"] == "Bearer"


def test_a_route_declares_its_own_challenge(make_depot, project_schema):
    depot = make_depot(schema_with(project_schema, PYPI, {"resolve_latest": 'Basic realm="mine", Bearer'}))
    assert depot.client.get(LATEST).headers["WWW-Authenticate"] == 'Basic realm="mine", Bearer'
    assert depot.client.get("/v1/acme/tool/tags").headers["WWW-Authenticate"] == PYPI


def test_several_policies_challenges_are_all_sent_once_each(make_depot, project_schema):
    schema = schema_with(project_schema, PYPI)
    schema["auth"]["policies"].append({"name": "also", "when": {"route.tags": ["public"]}, "challenge": "Bearer"})
    schema["auth"]["policies"].append({"name": "again", "when": {"route.tags": ["public"]}, "challenge": PYPI})
    depot = make_depot(schema)
    assert depot.client.get(LATEST).headers["WWW-Authenticate"] == PYPI + ", Bearer"


def test_the_namespace_guard_refusal_carries_the_challenge(make_depot, project_schema):
    depot = make_depot(schema_with(project_schema, PYPI))
    admin = admin_headers(depot)
    published(depot, admin, ("acme", "tool", "1.0.0"))
    grant(depot, admin, "anonymous", "public", "read")
    response = depot.client.get(LATEST)
    assert_error(response, 401, "UNAUTHENTICATED")["field"] == "namespace"
    assert response.headers["WWW-Authenticate"] == PYPI


def test_the_openapi_document_shows_the_challenge_and_basic(make_depot, project_schema):
    depot = make_depot(schema_with(project_schema, PYPI))
    spec = depot.client.get("/openapi.json").get_json()
    latest = spec["paths"]["/v1/{namespace}/{name}/latest"]["get"]
    assert latest["responses"]["401"]["headers"]["WWW-Authenticate"]["schema"] == {"const": PYPI}
    assert latest["security"] == [{"bearer": []}, {"basic": []}]
    assert {"MALFORMED_CREDENTIALS", "INVALID_CREDENTIALS"} <= set(latest["responses"]["401"]["x-error-codes"])
    assert spec["components"]["securitySchemes"]["basic"]["scheme"] == "basic"
    assert spec["paths"]["/auth/tokens"]["post"]["security"] == [{"bearer": []}]


@pytest.mark.parametrize("challenge, complaint", [
    ("Basic", "realm"), ('Basic charset="UTF-8"', "realm"), ("Digest realm=\"x\"", "'Digest'"),
    ('Basic realm="unterminated', "a scheme, then"), ('Basic realm="x";', "a scheme, then"),
    ('Basic realm="x"\r\nX-Injected: 1', "a scheme, then"), ("", "a scheme, then"),
    ('Basic realm="caf\u00e9"', "a scheme, then"), (", Bearer", "a scheme, then")])
def test_a_malformed_challenge_is_an_error_naming_its_place(project_schema, challenge, complaint):
    for schema, where in ((schema_with(project_schema, challenge), "auth.policies[3].challenge"),
                          (schema_with(project_schema, None, {"resolve_latest": challenge}), ".challenge")):
        compiled, errors = errors_of(schema)
        assert compiled is None
        assert any(where in error and (complaint in error or challenge == "") for error in errors), errors


def test_a_challenge_that_is_no_string_is_an_error(project_schema):
    compiled, errors = errors_of(schema_with(project_schema, ["Basic realm=\"x\""]))
    assert compiled is None and any("auth.policies[3].challenge" in error for error in errors), errors


# --- reads without credentials --------------------------------------------------------------------------------

def test_anonymous_reads_still_take_credentials(make_depot, project_schema):
    """auth.anonymous: callers without credentials read; with credentials they are themselves (bad ones are 401,
    never read as anonymous)."""
    schema = schema_with(project_schema, PYPI, anonymous={"enabled": True, "scopes": ["read"]})
    depot = make_depot(schema)
    admin = admin_headers(depot)
    create_user(depot, admin, "alice", ["read", "write"], ALICE_PASSWORD)
    published(depot, admin, ("acme", "tool", "1.0.0"))
    assert depot.client.get(LATEST).get_json()["version"] == "1.0.0"
    assert me(depot, basic("alice", ALICE_PASSWORD))["username"] == "alice"
    response = publish(depot, basic("alice", ALICE_PASSWORD), "acme", version="2.0.0")
    assert response.status_code == 201 and depot.client.get(LATEST).get_json()["version"] == "2.0.0"
    response = depot.client.get(LATEST, headers=basic("alice", "wrong-password-1"))
    assert_error(response, 401, "INVALID_CREDENTIALS")
    assert response.headers["WWW-Authenticate"] == PYPI


def test_an_anonymous_grant_opens_one_namespace_and_credentials_open_the_rest(make_depot, project_schema):
    """What pip does: no credentials first; a 401 naming Basic; the same request again with credentials."""
    depot = make_depot(schema_with(project_schema, PYPI))
    admin = admin_headers(depot)
    create_user(depot, admin, "alice", ["read"], ALICE_PASSWORD)
    published(depot, admin, ("public", "tool", "1.0.0"), ("acme", "tool", "1.0.0"))
    grant(depot, admin, "anonymous", "public", "read")
    grant(depot, admin, "user:alice", "acme", "read")
    assert depot.client.get("/v1/public/tool/latest").status_code == 200
    first = depot.client.get(LATEST)
    assert first.status_code == 401 and first.headers["WWW-Authenticate"] == PYPI
    assert depot.client.get(LATEST, headers=basic("alice", ALICE_PASSWORD)).status_code == 200
    assert depot.client.get("/v1/public/tool/latest", headers=basic("alice", ALICE_PASSWORD)).status_code == 200


def test_a_route_declared_open_reads_without_credentials_until_grants_exist(make_depot, project_schema):
    """A policy naming the namespace but no scope: readable by anyone while the scopes decide, by grant once
    grants exist (an anonymous grant for callers without credentials)."""
    schema = copy.deepcopy(project_schema)
    schema["auth"]["policies"].append({"name": "open_read", "when": {"route.tags": ["open_read"]},
                                       "require": {"namespace": "namespace", "permission": "read"},
                                       "challenge": PYPI})
    route = next(r for r in schema["api"]["routes"] if r["id"] == "resolve_latest")
    route["tags"] = ["open_read"]
    route["pipeline"] = [step for step in route["pipeline"] if step["op"] != "auth.require_scopes"]
    depot = make_depot(schema)
    admin = admin_headers(depot)
    create_user(depot, admin, "alice", ["read"], ALICE_PASSWORD)
    published(depot, admin, ("acme", "tool", "1.0.0"))
    assert depot.client.get(LATEST).status_code == 200
    grant(depot, admin, "user:alice", "acme", "read")
    response = depot.client.get(LATEST)
    assert_error(response, 401, "UNAUTHENTICATED")
    assert response.headers["WWW-Authenticate"] == PYPI
    assert depot.client.get(LATEST, headers=basic("alice", ALICE_PASSWORD)).status_code == 200


# --- a real server, a real client ---------------------------------------------------------------------------

def test_requests_retries_with_basic_credentials_after_the_challenge(tmp_path, project_schema):
    """Over real HTTP: the first request carries nothing and gets the route's challenge; requests then sends
    __token__ and an API token (pip's and twine's way), and a username and password."""
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema_with(project_schema, PYPI)))
    server = ServerProcess(tmp_path / "data", args=("--schema", str(schema_file)))
    try:
        session = requests.post(server.url + "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD},
                                timeout=30).json()["token"]
        admin = bearer(session)
        put = requests.put(server.url + "/v1/acme/tool/1.0.0/linux/blob", data=b"bytes", headers=admin, timeout=30)
        assert put.status_code == 201, put.text
        token = requests.post(server.url + "/auth/tokens", headers=admin, json={"name": "pip", "scopes": ["read"]},
                              timeout=30).json()["token"]
        first = requests.get(server.url + LATEST, timeout=30)
        assert first.status_code == 401 and first.headers["WWW-Authenticate"] == PYPI
        assert first.json()["error"]["code"] == "UNAUTHENTICATED"
        for auth in (("__token__", token), ("admin", ADMIN_PASSWORD)):
            again = requests.get(server.url + LATEST, auth=auth, timeout=30)
            assert again.status_code == 200 and again.json()["version"] == "1.0.0", again.text
    finally:
        server.stop()
