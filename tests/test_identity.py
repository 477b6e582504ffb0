"""Identities over HTTP: login tokens (JWT), API tokens, passwords, login rate limits, anonymous access and
route policies.

Every test runs a real Service (its SQLite database migrated by Alembic at start) through the Flask test
client. Tokens that the server would never issue are built with PyJWT from the service's own secret, so a
rejection is due to the claim under test and nothing else.
"""
import copy
import hashlib
import json
import time
import uuid
from datetime import timedelta

import jwt
import pytest
from sqlalchemy import select

from models import ApiToken, User, utcnow
from tests.conftest import ADMIN_PASSWORD

ALICE_PASSWORD = "alice-password-1234"
BOB_PASSWORD = "bob-password-123456"
ISSUER = AUDIENCE = "depot"
CLAIMS = ["sub", "scopes", "ver", "iat", "exp", "iss", "aud", "jti"]
LATEST_MISSING = "/v1/acme/missing/latest"


# --- helpers ----------------------------------------------------------------------------------------------

def assert_error(response, status, code=None):
    """The response is the JSON error envelope ``{"error": {"code", "message"[, "field"]}}`` with ``status``."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.mimetype == "application/json", response.headers.get("Content-Type")
    body = json.loads(response.get_data())
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) >= {"code", "message"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def assert_unauthorized(response, code=None):
    error = assert_error(response, 401, code)
    assert "bearer" in response.headers.get("WWW-Authenticate", "").lower()
    return error


def bearer(token):
    return {"Authorization": "Bearer " + token}


def login(depot, username, password, **kw):
    return depot.client.post("/auth/login", json={"username": username, "password": password}, **kw)


def login_token(depot, username, password, **kw):
    response = login(depot, username, password, **kw)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["token"].count(".") == 2 and body["expires_at"].endswith("Z")
    return body["token"]


def admin_headers(depot, **kw):
    return bearer(login_token(depot, "admin", ADMIN_PASSWORD, **kw))


def create_user(depot, admin, username, scopes, password):
    response = depot.client.post("/admin/users", headers=admin,
                                 json={"username": username, "password": password, "scopes": scopes})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["username"] == username
    return response.get_json()


def me(depot, token):
    return depot.client.get("/auth/me", headers=bearer(token))


def token_version(depot, username):
    with depot.service.sessions() as session:
        return session.scalar(select(User.token_version).where(User.username == username))


def forge(depot, sub="alice", key=None, algorithm="HS256", drop=(), **overrides):
    """A login token built outside the server: every required claim valid unless overridden or dropped."""
    now = int(time.time())
    claims = {"sub": sub, "scopes": ["read"], "ver": token_version(depot, sub), "iat": now, "exp": now + 600,
              "iss": ISSUER, "aud": AUDIENCE, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    for name in drop:
        del claims[name]
    return jwt.encode(claims, depot.service.identity.secret if key is None else key, algorithm=algorithm)


def create_api_token(depot, headers, name="ci", scopes=("read",), expires_in=None, path="/auth/tokens"):
    body = {"name": name, "scopes": list(scopes)}
    if expires_in is not None:
        body["expires_in"] = expires_in
    response = depot.client.post(path, headers=headers, json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def token_row(depot, token_id):
    with depot.service.sessions() as session:
        return session.get(ApiToken, token_id)


@pytest.fixture
def depot(make_depot, project_schema):
    return make_depot(project_schema)


@pytest.fixture
def admin(depot):
    return admin_headers(depot)


@pytest.fixture
def alice(depot, admin):
    """A read+write user created through the admin API."""
    create_user(depot, admin, "alice", ["read", "write"], ALICE_PASSWORD)
    return "alice"


def with_auth(schema, **login):
    schema = copy.deepcopy(schema)
    schema["auth"]["login"].update(login)
    return schema


# --- login, /auth/me --------------------------------------------------------------------------------------

def test_login_success_and_me_shows_username_and_scopes(depot, admin):
    response = depot.client.get("/auth/me", headers=admin)
    assert response.status_code == 200
    body = response.get_json()
    assert body["username"] == "admin"
    assert body["scopes"] == ["admin", "read", "write"]
    assert body["status"] == "active"
    assert body["last_login_at"] is not None

    create_user(depot, admin, "reader", ["read"], "reader-password-1")
    token = login_token(depot, "reader", "reader-password-1")
    body = me(depot, token).get_json()
    assert body["username"] == "reader" and body["scopes"] == ["read"] and body["auth"] == "jwt"


def test_login_failures(depot, alice):
    assert_unauthorized(login(depot, "alice", "wrong-password-123"), "INVALID_CREDENTIALS")
    assert_unauthorized(login(depot, "nobody", ALICE_PASSWORD), "INVALID_CREDENTIALS")
    assert_unauthorized(login(depot, "alice", ""), "INVALID_CREDENTIALS")
    assert_error(depot.client.post("/auth/login", json={"username": "alice"}), 400)
    assert_error(depot.client.post("/auth/login", data=b"not json", content_type="application/json"), 400)


def test_me_without_credentials_is_401(depot):
    assert_unauthorized(depot.client.get("/auth/me"), "UNAUTHENTICATED")
    assert_unauthorized(depot.client.get("/auth/me", headers={"Authorization": "Basic YWRtaW46eA=="}))
    assert_unauthorized(depot.client.get("/auth/me", headers={"Authorization": "Bearer "}))


def test_login_of_disabled_user_fails(depot, admin, alice):
    response = depot.client.patch("/admin/users/alice", headers=admin, json={"status": "disabled"})
    assert response.status_code == 200 and response.get_json()["status"] == "disabled"
    assert_unauthorized(login(depot, "alice", ALICE_PASSWORD), "INVALID_CREDENTIALS")


# --- forged and stale JWTs --------------------------------------------------------------------------------

def test_a_well_formed_token_built_with_the_secret_is_accepted(depot, alice):
    """The control for the rejections below: the forging helper itself yields a valid token."""
    response = me(depot, forge(depot))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["username"] == "alice"


@pytest.mark.parametrize("endpoint", ["/auth/me", LATEST_MISSING])
def test_alg_none_is_rejected(depot, alice, endpoint):
    now = int(time.time())
    claims = {"sub": "alice", "scopes": ["read"], "ver": token_version(depot, "alice"), "iat": now,
              "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE, "jti": uuid.uuid4().hex}
    token = jwt.encode(claims, None, algorithm="none")
    assert token.endswith(".")
    assert_unauthorized(depot.client.get(endpoint, headers=bearer(token)), "INVALID_TOKEN")


@pytest.mark.parametrize("endpoint", ["/auth/me", LATEST_MISSING])
def test_wrong_key_is_rejected(depot, alice, endpoint):
    token = forge(depot, key="not-the-server-secret-" + "x" * 32)
    assert_unauthorized(depot.client.get(endpoint, headers=bearer(token)), "INVALID_TOKEN")


def test_other_algorithm_with_the_right_key_is_rejected(depot, alice):
    assert_unauthorized(me(depot, forge(depot, algorithm="HS512")), "INVALID_TOKEN")


def test_tampered_payload_is_rejected(depot, alice):
    header, payload, signature = forge(depot).split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["scopes"] = ["read", "write", "admin"]
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    assert_unauthorized(me(depot, ".".join([header, payload, signature])), "INVALID_TOKEN")


@pytest.mark.parametrize("claim", CLAIMS)
def test_missing_required_claim_is_rejected(depot, alice, claim):
    assert_unauthorized(me(depot, forge(depot, drop=[claim])))


@pytest.mark.parametrize("claim", CLAIMS)
def test_missing_required_claim_is_rejected_by_schema_routes(depot, alice, claim):
    assert_unauthorized(depot.client.get(LATEST_MISSING, headers=bearer(forge(depot, drop=[claim]))))


@pytest.mark.parametrize("endpoint", ["/auth/me", LATEST_MISSING])
def test_expired_beyond_the_skew_is_rejected(depot, alice, endpoint):
    now = int(time.time())
    token = forge(depot, iat=now - 3600, exp=now - 120)
    assert_unauthorized(depot.client.get(endpoint, headers=bearer(token)), "TOKEN_EXPIRED")


@pytest.mark.parametrize("endpoint", ["/auth/me", LATEST_MISSING])
def test_a_token_checked_before_is_refused_once_it_expires(depot, alice, endpoint, monkeypatch):
    """A token's signature is checked once and its claims kept: its expiry is still read on every request."""
    from app.identity import auth
    now = int(time.time())
    token = forge(depot, iat=now - 60, exp=now + 60)
    assert depot.client.get(endpoint, headers=bearer(token)).status_code != 401
    monkeypatch.setattr(auth, "_now", lambda: now + 60 + auth.CLOCK_SKEW_SECONDS)
    assert_unauthorized(depot.client.get(endpoint, headers=bearer(token)), "TOKEN_EXPIRED")
    monkeypatch.setattr(auth, "_now", lambda: now + 59 + auth.CLOCK_SKEW_SECONDS)  # within the skew: still good
    assert depot.client.get(endpoint, headers=bearer(token)).status_code != 401


def test_expired_within_the_clock_skew_still_works(depot, alice):
    now = int(time.time())
    response = me(depot, forge(depot, iat=now - 600, exp=now - 5))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["username"] == "alice"


def test_wrong_audience_is_rejected(depot, alice):
    assert_unauthorized(me(depot, forge(depot, aud="someone-else")), "INVALID_TOKEN")


def test_wrong_issuer_is_rejected(depot, alice):
    assert_unauthorized(me(depot, forge(depot, iss="someone-else")), "INVALID_TOKEN")


def test_unknown_user_and_stale_version_are_rejected(depot, alice):
    assert_unauthorized(me(depot, forge(depot, ver=token_version(depot, "alice") + 1)))
    assert_unauthorized(me(depot, forge(depot, ver=token_version(depot, "alice") - 1)))
    now = int(time.time())
    ghost = jwt.encode({"sub": "ghost", "scopes": ["read"], "ver": 1, "iat": now, "exp": now + 600, "iss": ISSUER,
                        "aud": AUDIENCE, "jti": uuid.uuid4().hex}, depot.service.identity.secret, algorithm="HS256")
    assert_unauthorized(me(depot, ghost))


def test_scopes_in_a_token_are_bounded_by_the_users_scopes(depot, admin):
    create_user(depot, admin, "reader", ["read"], "reader-password-1")
    token = forge(depot, sub="reader", scopes=["read", "write", "admin"])
    assert me(depot, token).get_json()["scopes"] == ["read"]
    assert_error(depot.client.get("/admin/users", headers=bearer(token)), 403, "FORBIDDEN")


@pytest.mark.parametrize("endpoint", ["/auth/me", LATEST_MISSING])
def test_token_after_logout_is_rejected(depot, alice, endpoint):
    token = login_token(depot, "alice", ALICE_PASSWORD)
    other = login_token(depot, "alice", ALICE_PASSWORD)
    assert me(depot, token).status_code == 200
    response = depot.client.post("/auth/logout", headers=bearer(token))
    assert response.status_code == 200 and response.get_json() == {"ok": True}
    assert_unauthorized(depot.client.get(endpoint, headers=bearer(token)), "TOKEN_REVOKED")
    assert_unauthorized(depot.client.post("/auth/logout", headers=bearer(token)), "TOKEN_REVOKED")
    # only that token ended: another login of the same user still works
    assert me(depot, other).status_code == 200


def test_logout_survives_a_restart(depot, alice):
    token = login_token(depot, "alice", ALICE_PASSWORD)
    assert depot.client.post("/auth/logout", headers=bearer(token)).status_code == 200
    depot.restart()
    assert_unauthorized(me(depot, token), "TOKEN_REVOKED")


@pytest.mark.parametrize("endpoint", ["/auth/me", LATEST_MISSING])
def test_token_of_a_disabled_user_is_rejected(depot, admin, alice, endpoint):
    token = login_token(depot, "alice", ALICE_PASSWORD)
    assert me(depot, token).status_code == 200
    response = depot.client.patch("/admin/users/alice", headers=admin, json={"status": "disabled"})
    assert response.status_code == 200
    assert_unauthorized(depot.client.get(endpoint, headers=bearer(token)), "TOKEN_REVOKED")
    # re-enabling does not bring the old token back; a fresh login works
    response = depot.client.patch("/admin/users/alice", headers=admin, json={"status": "active"})
    assert response.status_code == 200
    assert_unauthorized(me(depot, token), "TOKEN_REVOKED")
    assert me(depot, login_token(depot, "alice", ALICE_PASSWORD)).status_code == 200


def test_password_change_ends_old_tokens_at_once(depot, alice):
    old = login_token(depot, "alice", ALICE_PASSWORD)
    assert me(depot, old).status_code == 200
    new_password = "a-brand-new-password"
    response = depot.client.post("/auth/change-password", headers=bearer(old),
                                 json={"current_password": ALICE_PASSWORD, "new_password": new_password})
    assert response.status_code == 200 and response.get_json()["ok"] is True
    assert_unauthorized(me(depot, old), "TOKEN_REVOKED")
    assert_unauthorized(depot.client.get(LATEST_MISSING, headers=bearer(old)), "TOKEN_REVOKED")
    assert_unauthorized(login(depot, "alice", ALICE_PASSWORD), "INVALID_CREDENTIALS")
    fresh = login_token(depot, "alice", new_password)
    assert me(depot, fresh).get_json()["username"] == "alice"


# --- passwords --------------------------------------------------------------------------------------------

def test_change_password_with_wrong_current_password_is_401(depot, alice):
    token = login_token(depot, "alice", ALICE_PASSWORD)
    response = depot.client.post("/auth/change-password", headers=bearer(token),
                                 json={"current_password": "not-alices-password", "new_password": "another-long-pw"})
    assert_unauthorized(response, "INVALID_CREDENTIALS")
    # nothing changed: the token and the old password still work
    assert me(depot, token).status_code == 200
    assert login(depot, "alice", ALICE_PASSWORD).status_code == 200


def test_change_password_to_a_short_password_is_weak(depot, alice):
    token = login_token(depot, "alice", ALICE_PASSWORD)
    response = depot.client.post("/auth/change-password", headers=bearer(token),
                                 json={"current_password": ALICE_PASSWORD, "new_password": "x" * 11})
    error = assert_error(response, 400, "WEAK_PASSWORD")
    assert error.get("field") == "new_password"
    assert me(depot, token).status_code == 200
    assert login(depot, "alice", ALICE_PASSWORD).status_code == 200


def test_change_password_needs_a_token(depot, alice):
    response = depot.client.post("/auth/change-password",
                                 json={"current_password": ALICE_PASSWORD, "new_password": "another-long-pw"})
    assert_unauthorized(response)


def test_creating_a_user_with_a_short_password_is_400(depot, admin):
    response = depot.client.post("/admin/users", headers=admin,
                                 json={"username": "shorty", "password": "x" * 11, "scopes": ["read"]})
    assert_error(response, 400, "WEAK_PASSWORD")
    assert_error(depot.client.get("/admin/users/shorty", headers=admin), 404, "USER_NOT_FOUND")
    # exactly the minimum is enough
    create_user(depot, admin, "shorty", ["read"], "x" * 12)


def test_resetting_a_password_to_a_short_one_is_400(depot, admin, alice):
    response = depot.client.patch("/admin/users/alice", headers=admin, json={"password": "short"})
    assert_error(response, 400, "WEAK_PASSWORD")
    assert login(depot, "alice", ALICE_PASSWORD).status_code == 200


def test_min_password_length_comes_from_the_schema(make_depot, project_schema):
    depot = make_depot(with_auth(project_schema, min_password_length=16))
    admin = admin_headers(depot)
    response = depot.client.post("/admin/users", headers=admin,
                                 json={"username": "carol", "password": "y" * 15, "scopes": ["read"]})
    assert_error(response, 400, "WEAK_PASSWORD")
    create_user(depot, admin, "carol", ["read"], "y" * 16)


# --- API tokens -------------------------------------------------------------------------------------------

def test_api_token_is_shown_once_and_works_as_bearer(depot, alice):
    jwt_headers = bearer(login_token(depot, "alice", ALICE_PASSWORD))
    created = create_api_token(depot, jwt_headers, name="ci", scopes=["read", "write"], expires_in=3600)
    secret = created["token"]
    assert secret.startswith("dpt_") and len(secret) > 24
    assert created["name"] == "ci" and created["owner"] == "alice"
    assert created["scopes"] == ["read", "write"]
    assert created["expires_at"] is not None and created["revoked"] is False

    response = depot.client.get("/auth/me", headers=bearer(secret))
    assert response.status_code == 200
    assert response.get_json()["username"] == "alice" and response.get_json()["auth"] == "api_token"
    assert depot.client.get(LATEST_MISSING, headers=bearer(secret)).status_code == 404
    # the token writes too
    response = depot.client.put("/v1/acme/hello/1.0.0/linux-amd64/blob", data=b"hello", headers=bearer(secret))
    assert response.status_code == 201, response.get_data(as_text=True)

    listed = depot.client.get("/auth/tokens", headers=jwt_headers)
    assert listed.status_code == 200
    assert b"dpt_" not in listed.get_data()
    items = listed.get_json()["items"]
    assert [item["id"] for item in items] == [created["id"]]
    assert "token" not in items[0] and "secret_sha256" not in items[0]
    # an API token cannot list tokens (they are managed from a login session), and its refusal shows no secret
    listed = depot.client.get("/auth/tokens", headers=bearer(secret))
    assert_error(listed, 403, "LOGIN_SESSION_REQUIRED")
    assert b"dpt_" not in listed.get_data()


def test_api_token_revoked_by_delete(depot, alice):
    jwt_headers = bearer(login_token(depot, "alice", ALICE_PASSWORD))
    created = create_api_token(depot, jwt_headers)
    secret = created["token"]
    assert depot.client.get("/auth/me", headers=bearer(secret)).status_code == 200
    response = depot.client.delete("/auth/tokens/" + created["id"], headers=jwt_headers)
    assert response.status_code == 200 and response.get_json()["revoked"] is True
    assert_unauthorized(depot.client.get("/auth/me", headers=bearer(secret)), "TOKEN_REVOKED")
    assert_unauthorized(depot.client.get(LATEST_MISSING, headers=bearer(secret)))
    assert depot.client.get("/auth/tokens", headers=jwt_headers).get_json()["items"][0]["revoked"] is True
    assert_error(depot.client.delete("/auth/tokens/nonexistent", headers=jwt_headers), 404, "TOKEN_NOT_FOUND")


def test_unknown_api_token_is_rejected(depot):
    assert_unauthorized(depot.client.get("/auth/me", headers=bearer("dpt_" + "A" * 43)), "INVALID_TOKEN")


def test_api_token_scopes_must_be_held_by_the_owner(depot, admin):
    create_user(depot, admin, "reader", ["read"], "reader-password-1")
    reader = bearer(login_token(depot, "reader", "reader-password-1"))
    response = depot.client.post("/auth/tokens", headers=reader, json={"name": "x", "scopes": ["write"]})
    assert_error(response, 403, "SCOPE_NOT_HELD")
    response = depot.client.post("/auth/tokens", headers=reader, json={"name": "x", "scopes": ["read", "admin"]})
    assert_error(response, 403, "SCOPE_NOT_HELD")
    assert depot.client.get("/auth/tokens", headers=reader).get_json()["items"] == []
    read_only = create_api_token(depot, reader, scopes=["read"])["token"]
    response = depot.client.put("/v1/acme/hello/1.0.0/linux-amd64/blob", data=b"hello", headers=bearer(read_only))
    assert_error(response, 403)
    # an admin may ask for any scope
    created = create_api_token(depot, admin, scopes=["admin", "read", "write"])
    assert created["scopes"] == ["admin", "read", "write"]
    assert depot.client.get("/admin/users", headers=bearer(created["token"])).status_code == 200


def test_api_token_request_validation(depot, alice):
    headers = bearer(login_token(depot, "alice", ALICE_PASSWORD))
    for body in ({"scopes": ["read"]}, {"name": "x", "scopes": []}, {"name": "x"},
                 {"name": "x", "scopes": ["read"], "expires_in": 0},
                 {"name": "x", "scopes": ["read"], "expires_in": "soon"}):
        assert_error(depot.client.post("/auth/tokens", headers=headers, json=body), 400, "INVALID_TOKEN_REQUEST")
    assert_unauthorized(depot.client.post("/auth/tokens", json={"name": "x", "scopes": ["read"]}))


def test_expired_api_token_is_rejected(depot, alice):
    headers = bearer(login_token(depot, "alice", ALICE_PASSWORD))
    created = create_api_token(depot, headers, expires_in=3600)
    with depot.service.sessions() as session:
        row = session.get(ApiToken, created["id"])
        row.expires_at = utcnow() - timedelta(hours=1)
        session.commit()
    assert_unauthorized(depot.client.get("/auth/me", headers=bearer(created["token"])), "TOKEN_EXPIRED")
    assert_unauthorized(depot.client.get(LATEST_MISSING, headers=bearer(created["token"])), "TOKEN_EXPIRED")


def test_api_token_of_a_disabled_owner_fails(depot, admin, alice):
    created = create_api_token(depot, bearer(login_token(depot, "alice", ALICE_PASSWORD)), scopes=["read"])
    secret = created["token"]
    assert depot.client.get("/auth/me", headers=bearer(secret)).status_code == 200
    assert depot.client.patch("/admin/users/alice", headers=admin, json={"status": "disabled"}).status_code == 200
    assert_unauthorized(depot.client.get("/auth/me", headers=bearer(secret)), "TOKEN_REVOKED")
    assert_unauthorized(depot.client.get(LATEST_MISSING, headers=bearer(secret)))


def test_api_token_scopes_follow_the_owners_scopes(depot, admin, alice):
    secret = create_api_token(depot, bearer(login_token(depot, "alice", ALICE_PASSWORD)),
                              scopes=["read", "write"])["token"]
    assert depot.client.get("/auth/me", headers=bearer(secret)).get_json()["scopes"] == ["read", "write"]
    assert depot.client.patch("/admin/users/alice", headers=admin, json={"scopes": ["read"]}).status_code == 200
    assert depot.client.get("/auth/me", headers=bearer(secret)).get_json()["scopes"] == ["read"]


def test_database_stores_only_the_sha256_of_an_api_token(depot, alice):
    created = create_api_token(depot, bearer(login_token(depot, "alice", ALICE_PASSWORD)))
    secret = created["token"]
    row = token_row(depot, created["id"])
    assert row is not None
    assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    body = secret[len("dpt_"):]
    for column in ApiToken.__table__.columns:
        value = str(getattr(row, column.key))
        assert secret not in value and body not in value, column.key
    # nor anywhere in the database file's tables
    with depot.service.db.connect() as connection:
        for table in ("api_tokens", "users", "audit_events"):
            for record in connection.exec_driver_sql("SELECT * FROM %s" % table):
                assert body not in repr(tuple(record)), table


def test_last_used_at_is_set_after_use(depot, alice):
    headers = bearer(login_token(depot, "alice", ALICE_PASSWORD))
    created = create_api_token(depot, headers)
    assert created["last_used_at"] is None
    assert token_row(depot, created["id"]).last_used_at is None
    assert depot.client.get("/auth/me", headers=bearer(created["token"])).status_code == 200
    assert token_row(depot, created["id"]).last_used_at is not None
    listed = depot.client.get("/auth/tokens", headers=headers).get_json()["items"]
    assert listed[0]["last_used_at"] is not None and listed[0]["last_used_at"].endswith("Z")


def test_logout_with_an_api_token_revokes_it(depot, alice):
    secret = create_api_token(depot, bearer(login_token(depot, "alice", ALICE_PASSWORD)))["token"]
    assert depot.client.post("/auth/logout", headers=bearer(secret)).status_code == 200
    assert_unauthorized(depot.client.get("/auth/me", headers=bearer(secret)), "TOKEN_REVOKED")


def test_admin_lists_and_revokes_another_users_tokens(depot, admin, alice):
    alice_headers = bearer(login_token(depot, "alice", ALICE_PASSWORD))
    created = create_api_token(depot, alice_headers, name="alice-ci")
    secret = created["token"]

    listed = depot.client.get("/admin/users/alice/tokens", headers=admin)
    assert listed.status_code == 200
    assert b"dpt_" not in listed.get_data()
    items = listed.get_json()["items"]
    assert [(t["id"], t["name"], t["owner"]) for t in items] == [(created["id"], "alice-ci", "alice")]
    # the admin's own list does not hold alice's token
    assert depot.client.get("/auth/tokens", headers=admin).get_json()["items"] == []
    # a non-admin cannot use the admin views
    assert_error(depot.client.get("/admin/users/admin/tokens", headers=alice_headers), 403, "FORBIDDEN")
    assert_error(depot.client.delete("/admin/users/alice/tokens/" + created["id"], headers=alice_headers), 403)

    response = depot.client.delete("/admin/users/alice/tokens/" + created["id"], headers=admin)
    assert response.status_code == 200 and response.get_json()["revoked"] is True
    assert_unauthorized(depot.client.get("/auth/me", headers=bearer(secret)), "TOKEN_REVOKED")
    assert depot.client.get("/admin/users/alice/tokens", headers=admin).get_json()["items"][0]["revoked"] is True
    assert_error(depot.client.get("/admin/users/nobody/tokens", headers=admin), 404, "USER_NOT_FOUND")


def test_admin_creates_a_token_for_another_user(depot, admin, alice):
    created = create_api_token(depot, admin, path="/admin/users/alice/tokens", scopes=["read"])
    assert created["owner"] == "alice" and created["token"].startswith("dpt_")
    assert depot.client.get("/auth/me", headers=bearer(created["token"])).get_json()["username"] == "alice"
    # still bounded by the owner's scopes
    response = depot.client.post("/admin/users/alice/tokens", headers=admin, json={"name": "x", "scopes": ["admin"]})
    assert_error(response, 403, "SCOPE_NOT_HELD")


# --- login rate limits ------------------------------------------------------------------------------------

def assert_rate_limited(response):
    assert_error(response, 429, "RATE_LIMITED")
    retry = response.headers.get("Retry-After")
    assert retry is not None and retry.isdigit(), retry
    assert int(retry) > 0
    return int(retry)


def test_sixth_login_for_one_username_is_rate_limited(depot, admin):
    create_user(depot, admin, "alice", ["read"], ALICE_PASSWORD)
    create_user(depot, admin, "bob", ["read"], BOB_PASSWORD)
    assert login(depot, "alice", ALICE_PASSWORD).status_code == 200
    assert login(depot, "alice", ALICE_PASSWORD).status_code == 200
    for _ in range(3):
        assert_unauthorized(login(depot, "alice", "wrong-password-123"), "INVALID_CREDENTIALS")
    retry = assert_rate_limited(login(depot, "alice", ALICE_PASSWORD))
    assert retry <= 60
    assert_rate_limited(login(depot, "alice", "wrong-password-123"))
    # another username from the same address is not affected
    assert me(depot, login_token(depot, "bob", BOB_PASSWORD)).get_json()["username"] == "bob"


def test_login_rate_limit_per_address(make_depot, project_schema):
    depot = make_depot(with_auth(project_schema, rate_limit_per_address="3/m"))
    admin = admin_headers(depot, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    for name in ("alice", "bob", "carol", "dave"):
        create_user(depot, admin, name, ["read"], name + "-password-123")
    here = {"environ_base": {"REMOTE_ADDR": "10.0.0.1"}}
    assert login(depot, "alice", "alice-password-123", **here).status_code == 200
    assert login(depot, "bob", "bob-password-123", **here).status_code == 200
    assert_unauthorized(login(depot, "carol", "wrong-password-123", **here))
    assert_rate_limited(login(depot, "dave", "dave-password-123", **here))
    assert_rate_limited(login(depot, "alice", "alice-password-123", **here))
    # another address has its own budget
    there = {"environ_base": {"REMOTE_ADDR": "10.0.0.2"}}
    assert login(depot, "dave", "dave-password-123", **there).status_code == 200


def test_login_limits_come_from_the_schema(make_depot, project_schema):
    depot = make_depot(with_auth(project_schema, rate_limit_per_username_and_address="2/m"))
    create_user(depot, admin_headers(depot), "alice", ["read"], ALICE_PASSWORD)
    assert login(depot, "alice", ALICE_PASSWORD).status_code == 200
    assert login(depot, "alice", ALICE_PASSWORD).status_code == 200
    assert_rate_limited(login(depot, "alice", ALICE_PASSWORD))


def test_login_limit_changes_with_the_active_schema(depot, admin, alice, project_schema):
    response = depot.client.post("/admin/schema", headers=admin,
                                 json=with_auth(project_schema, rate_limit_per_username_and_address="3/m"))
    assert response.status_code == 201, response.get_data(as_text=True)
    for _ in range(3):
        assert login(depot, "alice", ALICE_PASSWORD).status_code == 200
    assert_rate_limited(login(depot, "alice", ALICE_PASSWORD))


# --- anonymous access and route policies ------------------------------------------------------------------

def with_anonymous(schema, enabled=True, scopes=("read",)):
    schema = copy.deepcopy(schema)
    schema["auth"]["anonymous"] = {"enabled": enabled, "scopes": list(scopes)}
    return schema


def test_reading_without_credentials_is_401_by_default(depot):
    assert_unauthorized(depot.client.get(LATEST_MISSING), "UNAUTHENTICATED")
    assert_unauthorized(depot.client.get("/v1/acme/missing/1.0.0/x/blob"), "UNAUTHENTICATED")


def test_anonymous_read_when_enabled(make_depot, project_schema):
    depot = make_depot(with_anonymous(project_schema))
    assert_error(depot.client.get(LATEST_MISSING), 404, "NOT_FOUND")
    assert depot.publish("acme", "hello", "1.0.0", "linux-amd64", b"hello bytes").status_code == 201
    response = depot.client.get("/v1/acme/hello/latest")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["version"] == "1.0.0"
    response = depot.client.get("/v1/acme/hello/1.0.0/linux-amd64/blob")
    assert response.status_code == 200 and response.get_data() == b"hello bytes"
    # a bad credential is not silently downgraded to anonymous
    assert_unauthorized(depot.client.get(LATEST_MISSING, headers=bearer("not-a-token")))
    # anonymous is not a login
    assert_unauthorized(depot.client.get("/auth/me"))
    assert_unauthorized(depot.client.get("/auth/tokens"))


def test_anonymous_cannot_publish(make_depot, project_schema):
    depot = make_depot(with_anonymous(project_schema))
    response = depot.client.put("/v1/acme/hello/1.0.0/linux-amd64/blob", data=b"hello")
    assert_unauthorized(response)
    assert_error(depot.client.get("/v1/acme/hello/latest"), 404)


def test_anonymous_explicitly_disabled_is_401(make_depot, project_schema):
    depot = make_depot(with_anonymous(project_schema, enabled=False))
    assert_unauthorized(depot.client.get(LATEST_MISSING), "UNAUTHENTICATED")


def test_public_tag_requires_read_even_without_an_auth_step(make_depot, project_schema):
    schema = copy.deepcopy(project_schema)
    schema["api"]["routes"] += [
        {"id": "public_ping", "method": "GET", "path": "/v1/ping/public", "tags": ["public"],
         "pipeline": [{"op": "respond.json", "args": {"status": 200, "body": {"ok": True}}}]},
        {"id": "untagged_ping", "method": "GET", "path": "/v1/ping/open", "tags": [],
         "pipeline": [{"op": "respond.json", "args": {"status": 200, "body": {"ok": True}}}]},
    ]
    depot = make_depot(schema)
    # the control: an untagged route without an auth step is open
    assert depot.client.get("/v1/ping/open").status_code == 200
    assert_unauthorized(depot.client.get("/v1/ping/public"), "UNAUTHENTICATED")
    assert_error(depot.client.get("/v1/ping/public", headers=depot.headers(["write"])), 403, "FORBIDDEN")
    response = depot.client.get("/v1/ping/public", headers=depot.headers(["read"]))
    assert response.status_code == 200 and response.get_json() == {"ok": True}
    assert_unauthorized(depot.client.get("/v1/ping/public", headers=bearer(forge(depot, sub="tester",
                                                                                 aud="x"))))


def test_a_deny_policy_leaves_its_routes_to_admins(make_depot, project_schema):
    schema = copy.deepcopy(project_schema)
    schema["auth"]["policies"].append({"name": "maintenance_only", "effect": "deny",
                                       "when": {"route.tags": ["maintenance"]}})
    schema["api"]["routes"].append(
        {"id": "maintenance_ping", "method": "GET", "path": "/v1/ping/maintenance", "tags": ["maintenance", "public"],
         "pipeline": [{"op": "respond.json", "args": {"status": 200, "body": {"ok": True}}}]})
    depot = make_depot(schema)
    assert_unauthorized(depot.client.get("/v1/ping/maintenance"), "UNAUTHENTICATED")
    refused = depot.client.get("/v1/ping/maintenance", headers=depot.headers(["read", "write"]))
    assert_error(refused, 403, "FORBIDDEN")
    assert "deny policy" in refused.get_json()["error"]["message"]
    allowed = depot.client.get("/v1/ping/maintenance", headers=bearer(depot.token(["admin"], "root")))
    assert allowed.status_code == 200 and allowed.get_json() == {"ok": True}
