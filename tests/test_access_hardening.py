"""Access hardening: long passphrases, usernames (and how existing ones migrate), who may manage API tokens and for
how long they live, what a password change or a disable ends, the last admin, deleting users and the recovery
commands, login rate limits that cannot lock a victim out and wrong-typed fields.

Real services over temporary data dirs through the Flask test client, the recovery commands as real child
processes, and migrations against real SQLite files (and PostgreSQL when tests/test_migrations.py finds one).
"""
import copy
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta

import bcrypt
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError

from app.identity import database
from app.identity.auth import PREHASHED
from app.engine.compiler import compile_schema
from models import ApiToken, User
from tests.conftest import ADMIN_PASSWORD, ROOT, Depot, join_all
from tests.test_identity import (ALICE_PASSWORD, admin_headers, assert_error, assert_unauthorized, bearer,
                                 create_api_token, create_user, login, login_token, me)
from tests.test_identity import admin, alice, depot  # noqa: F401  (fixtures)
from tests.test_migrations import fresh_postgres_database

LATEST_MISSING = "/v1/acme/missing/latest"


@pytest.fixture
def alice_session(depot, alice):
    """Headers carrying a login token of alice (a read+write user)."""
    return bearer(login_token(depot, "alice", ALICE_PASSWORD))


def with_auth_section(schema, section, **values):
    schema = copy.deepcopy(schema)
    schema["auth"].setdefault(section, {}).update(values)
    return schema


def parse_time(stamp):
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def audit_rows(depot, admin, **query):
    response = depot.client.get("/admin/audit", headers=admin, query_string=dict(query, page_size=200))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["items"]


def works(depot, secret):
    return depot.client.get("/auth/me", headers=bearer(secret)).status_code == 200


# --- 6. long passphrases ------------------------------------------------------------------------------------

PASSPHRASE = ("correct horse battery staple, ünïcödé too: " * 5)[:200]
OTHER_PASSPHRASE = PASSPHRASE[:150] + "x" * 50


def test_a_200_character_passphrase_through_create_login_and_change(depot, admin):
    assert len(PASSPHRASE) == 200 and len(PASSPHRASE.encode()) > 72
    create_user(depot, admin, "poet", ["read"], PASSPHRASE)
    token = login_token(depot, "poet", PASSPHRASE)
    # bytes beyond the 72nd count: a passphrase sharing only the first 150 characters is wrong
    assert_unauthorized(login(depot, "poet", OTHER_PASSPHRASE), "INVALID_CREDENTIALS")
    changed = depot.client.post("/auth/change-password", headers=bearer(token),
                                json={"current_password": PASSPHRASE, "new_password": OTHER_PASSPHRASE})
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert_unauthorized(login(depot, "poet", PASSPHRASE), "INVALID_CREDENTIALS")
    assert login(depot, "poet", OTHER_PASSPHRASE).status_code == 200
    reset = depot.client.patch("/admin/users/poet", headers=admin, json={"password": PASSPHRASE})
    assert reset.status_code == 200
    assert login(depot, "poet", PASSPHRASE).status_code == 200
    with depot.service.sessions() as session:
        assert session.scalar(select(User.password_hash).where(User.username == "poet")).startswith(PREHASHED)


def test_a_plain_bcrypt_hash_from_before_prehashing_still_logs_in(depot, admin):
    create_user(depot, admin, "veteran", ["read"], "replaced-below-1")
    with depot.service.sessions() as session:
        user = session.scalar(select(User).where(User.username == "veteran"))
        user.password_hash = bcrypt.hashpw(b"veteran-password-1", bcrypt.gensalt(4)).decode()
        session.commit()
    assert me(depot, login_token(depot, "veteran", "veteran-password-1")).status_code == 200
    assert_unauthorized(login(depot, "veteran", "veteran-password-2"), "INVALID_CREDENTIALS")
    assert_unauthorized(login(depot, "veteran", PASSPHRASE), "INVALID_CREDENTIALS")  # long: no 500


# --- 4. usernames -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("username", ["\u0430dmin", "admin ", "admin\u200b", "\u202enimda", "x\r\ny", "ev\u0000il",
                                      "admin\n", "", "-admin", ".admin", "_admin", "a b", "a/b", "a@b", "a" * 65])
def test_usernames_outside_the_pattern_are_refused(depot, admin, username):
    response = depot.client.post("/admin/users", headers=admin,
                                 json={"username": username, "password": "a-long-enough-password"})
    assert assert_error(response, 400, "INVALID_USERNAME")["field"] == "username"
    assert_unauthorized(login(depot, username, "a-long-enough-password"), "INVALID_CREDENTIALS")
    assert depot.client.get("/admin/users", headers=admin).get_json()["total"] == 1


@pytest.mark.parametrize("username", ["a", "Z9", "ci-bot", "first.last", "x_y", "0day", "a" * 64])
def test_usernames_inside_the_pattern_are_accepted(depot, admin, username):
    create_user(depot, admin, username, ["read"], "a-long-enough-password")
    assert me(depot, login_token(depot, username, "a-long-enough-password")).get_json()["username"] == username


def test_usernames_are_unique_and_log_in_case_insensitively(depot, admin):
    assert_error(depot.client.post("/admin/users", headers=admin,
                                   json={"username": "Admin", "password": "a-long-enough-password"}), 409,
                 "USER_EXISTS")
    create_user(depot, admin, "Carol", ["read"], "carol-password-12")
    assert_error(depot.client.post("/admin/users", headers=admin,
                                   json={"username": "carol", "password": "a-long-enough-password"}), 409,
                 "USER_EXISTS")
    token = login_token(depot, "CAROL", "carol-password-12")
    assert me(depot, token).get_json()["username"] == "Carol"  # the account's own spelling
    assert depot.client.get("/admin/users/carol", headers=admin).get_json()["username"] == "Carol"


def test_the_database_refuses_a_second_name_that_differs_only_in_case(depot):
    with depot.service.sessions() as session:
        session.add(User(username="ADMIN", username_key="admin", password_hash="x", scopes=[], status="active",
                         token_version=1))
        with pytest.raises(IntegrityError):
            session.commit()


def legacy_rows(connection):
    """Rows as revision 0001 allowed them: names differing only in case or breaking today's pattern, and an
    API token that never expires."""
    insert_user = text("INSERT INTO users (id, username, password_hash, scopes, status, token_version, created_at) "
                       "VALUES (:id, :name, :hash, :scopes, 'active', 1, CURRENT_TIMESTAMP)")
    for user_id, name, scopes in ((1, "admin", '["admin", "read", "write"]'), (2, "Admin", '["read"]'),
                                  (3, "bob ", '["read"]')):
        connection.execute(insert_user, {"id": user_id, "name": name, "scopes": scopes,
                                         "hash": bcrypt.hashpw(("%s-password-1" % name).encode(),
                                                               bcrypt.gensalt(4)).decode()})
    connection.execute(text("INSERT INTO api_tokens (id, user_id, name, secret_sha256, scopes, created_at) "
                            "VALUES ('t1', 3, 'ci', :sha, '[\"read\"]', CURRENT_TIMESTAMP)"), {"sha": "0" * 64})


def migrate_legacy_database(url):
    database.upgrade(url, "0001")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            legacy_rows(connection)
        database.upgrade(url)
        with engine.connect() as connection:
            keys = connection.execute(text("SELECT id, username_key FROM users ORDER BY id")).all()
            expiry = connection.execute(text("SELECT expires_at FROM api_tokens")).scalar_one()
    finally:
        engine.dispose()
    assert [tuple(row) for row in keys] == [(1, "admin"), (2, "admin#2"), (3, "bob ")]
    assert expiry is not None


def test_existing_users_and_tokens_migrate_on_sqlite(tmp_path, make_depot, project_schema):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    migrate_legacy_database(database.database_url(str(data_dir)))
    depot = make_depot(project_schema)  # over the migrated database
    # each legacy account logs in under its exact name; another spelling finds the plain key's account
    for typed, account in (("admin", "admin"), ("Admin", "Admin"), ("ADMIN", "admin"), ("bob ", "bob ")):
        password = "%s-password-1" % account
        assert me(depot, login_token(depot, typed, password)).get_json()["username"] == account


def test_existing_users_and_tokens_migrate_on_postgresql():
    with fresh_postgres_database() as url:
        migrate_legacy_database(url)


# --- 1. API tokens are managed from a login session, expire, and name declared scopes ----------------------

def test_an_api_token_cannot_create_list_or_revoke_tokens(depot, admin, alice_session):
    writer = create_api_token(depot, alice_session, name="ci-write", scopes=["read", "write"])
    reader = create_api_token(depot, alice_session, name="short-read", scopes=["read"], expires_in=60)
    as_reader = bearer(reader["token"])

    minted = depot.client.post("/auth/tokens", headers=as_reader, json={"name": "forever", "scopes": ["read"]})
    assert_error(minted, 403, "LOGIN_SESSION_REQUIRED")
    assert_error(depot.client.get("/auth/tokens", headers=as_reader), 403, "LOGIN_SESSION_REQUIRED")
    revoked = depot.client.delete("/auth/tokens/" + writer["id"], headers=as_reader)
    assert_error(revoked, 403, "LOGIN_SESSION_REQUIRED")

    assert works(depot, writer["token"])
    listed = depot.client.get("/auth/tokens", headers=alice_session).get_json()["items"]
    assert sorted(t["name"] for t in listed) == ["ci-write", "short-read"]
    assert not any(t["revoked"] for t in listed)
    denied = [r for r in audit_rows(depot, admin, actor="alice") if r["outcome"] == "denied"]
    assert sorted(r["action"] for r in denied) == ["token.create", "token.list", "token.revoke"]


def test_an_admins_api_token_cannot_manage_anyones_tokens(depot, admin, alice_session):
    admin_token = bearer(create_api_token(depot, admin, scopes=["admin", "read", "write"])["token"])
    assert depot.client.get("/admin/users", headers=admin_token).status_code == 200  # still an admin token
    for method, path in (("POST", "/admin/users/alice/tokens"), ("GET", "/admin/users/alice/tokens"),
                         ("DELETE", "/admin/users/alice/tokens/x"), ("POST", "/auth/tokens")):
        response = depot.client.open(path, method=method, headers=admin_token, json={"name": "x", "scopes": ["read"]})
        assert_error(response, 403, "LOGIN_SESSION_REQUIRED")
    # from a login session the same admin can
    assert create_api_token(depot, admin, path="/admin/users/alice/tokens")["owner"] == "alice"


def test_a_token_without_expires_in_expires_after_the_default(depot, alice_session):
    created = create_api_token(depot, alice_session)
    lifetime = parse_time(created["expires_at"]) - parse_time(created["created_at"])
    assert abs(lifetime - timedelta(days=30)) < timedelta(minutes=1)


def test_token_lifetimes_come_from_the_schema(make_depot, project_schema):
    depot = make_depot(with_auth_section(project_schema, "tokens", default_ttl_seconds=3600,
                                         max_ttl_seconds=7200))
    session = bearer(login_token(depot, "admin", ADMIN_PASSWORD))
    default = create_api_token(depot, session)
    lifetime = parse_time(default["expires_at"]) - parse_time(default["created_at"])
    assert abs(lifetime - timedelta(hours=1)) < timedelta(minutes=1)
    assert create_api_token(depot, session, expires_in=7200)["expires_at"]
    too_long = depot.client.post("/auth/tokens", headers=session, json={"name": "x", "scopes": ["read"],
                                                                     "expires_in": 7201})
    assert assert_error(too_long, 400, "INVALID_TOKEN_REQUEST")["field"] == "expires_in"
    never = depot.client.post("/auth/tokens", headers=session, json={"name": "x", "scopes": ["read"],
                                                                  "expires_in": None})
    assert assert_error(never, 400, "INVALID_TOKEN_REQUEST")["field"] == "expires_in"


def test_only_a_maximum_caps_the_default_lifetime_too(project_schema):
    schema = copy.deepcopy(project_schema)
    schema["auth"]["tokens"] = {"max_ttl_seconds": 3600}
    compiled, report = compile_schema(schema)
    assert report.ok and compiled.auth_settings["api_token_default_ttl_seconds"] == 3600


@pytest.mark.parametrize("tokens,place", [
    ({"default_ttl_seconds": 7200, "max_ttl_seconds": 3600}, "auth.tokens.default_ttl_seconds"),
    ({"default_ttl_seconds": "30d"}, "auth.tokens.default_ttl_seconds"),
    ({"max_ttl_seconds": 10}, "auth.tokens.max_ttl_seconds"),
    ({"max_ttl_seconds": True}, "auth.tokens.max_ttl_seconds"),
    ({"never_expire": True}, "auth.tokens"),
])
def test_the_schema_checker_refuses_bad_token_lifetimes(project_schema, tokens, place):
    schema = copy.deepcopy(project_schema)
    schema["auth"]["tokens"] = tokens
    compiled, report = compile_schema(schema)
    assert compiled is None
    assert place in [finding["place"] for finding in report.to_dict()["errors"]], report.to_text()


@pytest.mark.parametrize("path", ["/auth/tokens", "/admin/users/admin/tokens"])
def test_an_undeclared_scope_is_400_even_for_an_admin(depot, admin, path):
    response = depot.client.post(path, headers=admin, json={"name": "x", "scopes": ["read", "root"]})
    error = assert_error(response, 400, "UNKNOWN_SCOPE")
    assert error["field"] == "scopes" and "root" in error["message"]
    assert depot.client.get("/auth/tokens", headers=admin).get_json()["items"] == []


# --- 2. a password change and a disable end API tokens ------------------------------------------------------

def test_changing_ones_password_revokes_ones_api_tokens(depot, alice_session):
    secret = create_api_token(depot, alice_session, scopes=["read", "write"])["token"]
    response = depot.client.post("/auth/change-password", headers=alice_session,
                                 json={"current_password": ALICE_PASSWORD, "new_password": "a-new-alice-password"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_unauthorized(me(depot, secret), "TOKEN_REVOKED")
    fresh = bearer(login_token(depot, "alice", "a-new-alice-password"))
    assert [t["revoked"] for t in depot.client.get("/auth/tokens", headers=fresh).get_json()["items"]] == [True]


def test_an_admin_set_password_revokes_the_users_api_tokens(depot, admin, alice_session):
    secret = create_api_token(depot, alice_session)["token"]
    response = depot.client.patch("/admin/users/alice", headers=admin, json={"password": "set-by-the-admin-1"})
    assert response.status_code == 200
    assert_unauthorized(me(depot, secret), "TOKEN_REVOKED")
    assert_unauthorized(depot.client.get(LATEST_MISSING, headers=bearer(secret)), "TOKEN_REVOKED")


def test_disabling_revokes_api_tokens_for_good(depot, admin, alice_session):
    secret = create_api_token(depot, alice_session)["token"]
    for status in ("disabled", "active"):
        assert depot.client.patch("/admin/users/alice", headers=admin, json={"status": status}).status_code == 200
    assert_unauthorized(me(depot, secret), "TOKEN_REVOKED")
    listed = depot.client.get("/admin/users/alice/tokens", headers=admin).get_json()["items"]
    assert [t["revoked"] for t in listed] == [True]
    assert me(depot, login_token(depot, "alice", ALICE_PASSWORD)).status_code == 200  # the account itself works


def test_changing_scopes_or_re_enabling_an_active_user_leaves_tokens_alone(depot, admin, alice_session):
    """The control: only a password change or a disable revokes."""
    secret = create_api_token(depot, alice_session)["token"]
    for body in ({"scopes": ["read"]}, {"status": "active"}):
        assert depot.client.patch("/admin/users/alice", headers=admin, json=body).status_code == 200
    assert works(depot, secret)


# --- 3. the last admin, deleting users ----------------------------------------------------------------------

@pytest.mark.parametrize("method,body", [("PATCH", {"status": "disabled"}), ("PATCH", {"scopes": ["read", "write"]}),
                                         ("DELETE", None)])
def test_the_last_active_admin_cannot_be_disabled_demoted_or_deleted(depot, admin, method, body):
    # a disabled admin does not count
    create_user(depot, admin, "dormant", ["admin"], "dormant-password-1")
    assert depot.client.patch("/admin/users/dormant", headers=admin, json={"status": "disabled"}).status_code == 200
    refused = depot.client.open("/admin/users/admin", method=method, headers=admin, json=body)
    assert_error(refused, 409, "LAST_ADMIN")
    view = depot.client.get("/admin/users/admin", headers=admin).get_json()
    assert view["status"] == "active" and "admin" in view["scopes"]
    assert me(depot, login_token(depot, "admin", ADMIN_PASSWORD)).status_code == 200

    # with a second active admin the same change goes through, and the second is then the last
    assert depot.client.patch("/admin/users/dormant", headers=admin, json={"status": "active"}).status_code == 200
    dormant = bearer(login_token(depot, "dormant", "dormant-password-1"))
    assert depot.client.open("/admin/users/admin", method=method, headers=dormant, json=body).status_code == 200
    assert_error(depot.client.patch("/admin/users/dormant", headers=dormant, json={"status": "disabled"}),
                 409, "LAST_ADMIN")


def test_two_admins_demoting_each_other_at_once_leave_one_admin(depot, admin):
    create_user(depot, admin, "second", ["admin", "read"], "second-password-1")
    second = bearer(login_token(depot, "second", "second-password-1"))
    barrier = threading.Barrier(2, timeout=60)
    statuses, errors = {}, []

    def demote(headers, target):
        client = depot.app.test_client()
        try:
            barrier.wait()
            statuses[target] = client.patch("/admin/users/" + target, headers=headers,
                                            json={"scopes": ["read"]}).status_code
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=demote, args=args, daemon=True)
               for args in ((admin, "second"), (second, "admin"))]
    for thread in threads:
        thread.start()
    join_all(threads, errors, "a demotion")
    # one goes through; the other is refused as the last admin, or finds its caller no longer an admin
    assert sorted(statuses.values())[0] == 200 and sorted(statuses.values())[1] in (401, 403, 409), statuses
    with depot.service.sessions() as session:
        admins = [u.username for u in session.scalars(select(User)) if "admin" in u.scopes]
    assert len(admins) == 1, admins


def test_deleting_a_user_ends_their_tokens_and_keeps_their_audit_records(depot, admin, alice_session):
    secret = create_api_token(depot, alice_session)["token"]
    login_jwt = alice_session["Authorization"].split(" ", 1)[1]
    response = depot.client.delete("/admin/users/alice", headers=dict(admin, **{"X-Request-Id": "rm-alice"}))
    assert response.status_code == 200 and response.get_json()["deleted"] is True
    assert_error(depot.client.get("/admin/users/alice", headers=admin), 404, "USER_NOT_FOUND")
    assert [r["action"] for r in audit_rows(depot, admin, actor="alice")] == ["token.create", "auth.login"]
    deleted = audit_rows(depot, admin, action="admin.users.delete")
    assert [(r["target"], r["outcome"], r["request_id"]) for r in deleted] == [("alice", "success", "rm-alice")]

    assert_unauthorized(me(depot, secret))
    assert_unauthorized(me(depot, login_jwt), "TOKEN_REVOKED")
    assert_unauthorized(login(depot, "alice", ALICE_PASSWORD), "INVALID_CREDENTIALS")
    with depot.service.sessions() as session:
        assert session.scalars(select(ApiToken)).all() == []
    assert_error(depot.client.delete("/admin/users/alice", headers=admin), 404, "USER_NOT_FOUND")

    # a new account of the same name does not honour the old one's login token
    create_user(depot, admin, "alice", ["read"], "the-new-alice-pw")
    assert_unauthorized(me(depot, login_jwt), "TOKEN_REVOKED")


def test_deleting_needs_the_admin_scope(depot, admin, alice_session):
    assert_error(depot.client.delete("/admin/users/admin", headers=alice_session), 403, "FORBIDDEN")
    assert depot.client.get("/admin/users/admin", headers=admin).status_code == 200


# --- 3. recovery commands (server stopped) ------------------------------------------------------------------

def admin_command(data_dir, *args, password=None, stdin=None):
    env = {k: v for k, v in os.environ.items() if k not in ("DEPOT_DATABASE_URL", "DEPOT_NEW_PASSWORD")}
    env["DEPOT_BCRYPT_ROUNDS"] = "4"
    if password is not None:
        env["DEPOT_NEW_PASSWORD"] = password
    # a new session has no controlling terminal, so getpass reads the prompt answers from stdin
    return subprocess.run([sys.executable, "-m", "app", "admin", *args, "--data-dir", str(data_dir)], cwd=ROOT,
                          env=env, input=stdin, capture_output=True, text=True, timeout=120, start_new_session=True)


def test_reset_password_recovers_a_disabled_account_with_the_server_stopped(depot, admin, alice_session):
    secret = create_api_token(depot, alice_session)["token"]
    assert depot.client.patch("/admin/users/alice", headers=admin, json={"status": "disabled"}).status_code == 200
    depot.close()

    result = admin_command(depot.data_dir, "reset-password", "ALICE", password="recovered-password-1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "active again" in result.stdout and "recovered-password-1" not in result.stdout + result.stderr

    depot.restart()
    assert me(depot, login_token(depot, "alice", "recovered-password-1")).get_json()["status"] == "active"
    assert_unauthorized(login(depot, "alice", ALICE_PASSWORD), "INVALID_CREDENTIALS")
    assert_unauthorized(me(depot, secret), "TOKEN_REVOKED")
    row = audit_rows(depot, admin_headers(depot), actor="cli")[0]
    assert (row["action"], row["target"], row["outcome"]) == ("admin.users.reset_password", "ALICE", "success")
    assert row["detail"] == {"re_enabled": True}


def test_create_makes_an_admin_with_the_server_stopped(depot):
    depot.close()
    result = admin_command(depot.data_dir, "create", "rescue", "--scopes", "read,write,admin",
                           password="rescue-password-12")
    assert result.returncode == 0, result.stdout + result.stderr
    depot.restart()
    token = login_token(depot, "rescue", "rescue-password-12")
    assert me(depot, token).get_json()["scopes"] == ["admin", "read", "write"]
    rescue = bearer(token)
    assert depot.client.get("/admin/users", headers=rescue).status_code == 200
    row = audit_rows(depot, rescue, actor="cli")[0]
    assert (row["action"], row["target"], row["outcome"]) == ("admin.users.create", "rescue", "success")


@pytest.mark.parametrize("args,password,message", [
    (("create", "Admin", "--scopes", "read"), "long-enough-password", "already exists"),
    (("create", "bad name", "--scopes", "read"), "long-enough-password", "username"),
    (("create", "carol", "--scopes", "read,root"), "long-enough-password", "root"),
    (("create", "carol", "--scopes", "read"), "short", "at least 12"),
    (("reset-password", "nobody"), "long-enough-password", "no user"),
])
def test_recovery_commands_refuse_bad_input_and_change_nothing(depot, args, password, message):
    depot.close()
    result = admin_command(depot.data_dir, *args, password=password)
    assert result.returncode == 1 and message in result.stderr, result.stdout + result.stderr
    depot.restart()
    names = [u["username"] for u in depot.client.get("/admin/users", headers=admin_headers(depot))
             .get_json()["items"]]
    assert names == ["admin"]
    assert audit_rows(depot, admin_headers(depot), actor="cli")[0]["outcome"] == "failure"


def test_the_password_prompt_asks_twice(depot):
    depot.close()
    differing = admin_command(depot.data_dir, "reset-password", "admin", stdin="first-password-1\nother-password-2\n")
    assert differing.returncode == 1 and "differ" in differing.stderr
    same = admin_command(depot.data_dir, "reset-password", "admin", stdin="prompted-password\nprompted-password\n")
    assert same.returncode == 0, same.stdout + same.stderr
    depot.restart()
    assert login(depot, "admin", "prompted-password").status_code == 200


def test_a_password_is_never_an_argument_and_the_help_says_where_it_comes_from(tmp_path):
    refused = admin_command(tmp_path, "create", "x", "--scopes", "read", "--password", "in-the-process-list")
    assert refused.returncode == 2 and "unrecognized arguments" in refused.stderr
    for command in ("reset-password", "create"):
        shown = subprocess.run([sys.executable, "-m", "app", "admin", command, "--help"], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and "DEPOT_NEW_PASSWORD" in shown.stdout


def test_a_missing_data_dir_is_an_error(tmp_path):
    result = admin_command(tmp_path / "nowhere", "reset-password", "admin", password="long-enough-password")
    assert result.returncode == 2 and "is not a Depot data dir" in result.stderr
    assert not (tmp_path / "nowhere").exists()


# --- 5. login rate limits -----------------------------------------------------------------------------------

def at(address):
    return {"environ_base": {"REMOTE_ADDR": address}}


def test_wrong_passwords_from_one_address_do_not_lock_out_another(depot):
    attacker, victim = at("203.0.113.7"), at("198.51.100.20")
    for _ in range(5):
        assert_unauthorized(login(depot, "admin", "not-the-password", **attacker), "INVALID_CREDENTIALS")
    assert_error(login(depot, "admin", ADMIN_PASSWORD, **attacker), 429, "RATE_LIMITED")
    assert_error(login(depot, "ADMIN", ADMIN_PASSWORD, **attacker), 429, "RATE_LIMITED")  # same account
    assert login(depot, "admin", ADMIN_PASSWORD, **victim).status_code == 200


def test_one_address_is_limited_across_usernames(make_depot, project_schema):
    depot = make_depot(with_auth_section(project_schema, "login", rate_limit_per_address="3/m"))
    for name in ("u1", "u2", "u3"):
        assert_unauthorized(login(depot, name, "whatever-password", **at("203.0.113.9")))
    assert_error(login(depot, "admin", ADMIN_PASSWORD, **at("203.0.113.9")), 429, "RATE_LIMITED")
    assert login(depot, "admin", ADMIN_PASSWORD, **at("203.0.113.10")).status_code == 200


def test_the_older_name_of_the_pair_limit_still_loads_and_counts_per_pair(make_depot, project_schema):
    schema = copy.deepcopy(project_schema)
    login_section = schema["auth"]["login"]
    login_section["rate_limit_per_username"] = "2/m"
    del login_section["rate_limit_per_username_and_address"]
    compiled, report = compile_schema(schema)
    assert compiled is not None
    assert [w["place"] for w in report.to_dict()["warnings"]] == ["auth.login.rate_limit_per_username"]

    depot = make_depot(schema)
    for _ in range(2):
        assert_unauthorized(login(depot, "admin", "not-the-password", **at("203.0.113.7")))
    assert_error(login(depot, "admin", ADMIN_PASSWORD, **at("203.0.113.7")), 429, "RATE_LIMITED")
    assert login(depot, "admin", ADMIN_PASSWORD, **at("198.51.100.20")).status_code == 200


def test_both_names_of_the_pair_limit_together_are_an_error(project_schema):
    compiled, report = compile_schema(with_auth_section(project_schema, "login", rate_limit_per_username="2/m"))
    assert compiled is None
    assert [e["place"] for e in report.to_dict()["errors"]] == ["auth.login.rate_limit_per_username"]


# --- wrong-typed fields -------------------------------------------------------------------------------------

WRONG_TYPES = [
    ("POST", "/auth/login", {"username": 5, "password": "x"}, "username"),
    ("POST", "/auth/login", {"username": "admin", "password": {"x": 1}}, "password"),
    ("POST", "/auth/login", {"username": ["admin"], "password": "x"}, "username"),
    ("POST", "/auth/change-password", {"current_password": 5, "new_password": "a-long-new-password"},
     "current_password"),
    ("POST", "/auth/change-password", {"current_password": ADMIN_PASSWORD, "new_password": ["x" * 20]},
     "new_password"),
    ("POST", "/auth/change-password", {"new_password": "a-long-new-password"}, "current_password"),
    ("POST", "/admin/users", {"username": 5, "password": "a-long-enough-password"}, "username"),
    ("POST", "/admin/users", {"username": {"a": 1}, "password": "a-long-enough-password"}, "username"),
    ("POST", "/admin/users", {"username": "carol", "password": 123456789012345}, "password"),
    ("POST", "/admin/users", {"username": "carol", "password": "a-long-enough-password", "scopes": "read"}, "scopes"),
    ("POST", "/admin/users", {"username": "carol", "password": "a-long-enough-password", "scopes": [["read"]]},
     "scopes"),
    ("POST", "/admin/users", {"username": "carol", "password": "a-long-enough-password", "scopes": [{}]}, "scopes"),
    ("POST", "/admin/users", {"username": "carol", "password": "a-long-enough-password", "status": {}}, "status"),
    ("PATCH", "/admin/users/admin", {"scopes": {"admin": True}}, "scopes"),
    ("PATCH", "/admin/users/admin", {"scopes": [1, 2]}, "scopes"),
    ("PATCH", "/admin/users/admin", {"status": ["active"]}, "status"),
    ("PATCH", "/admin/users/admin", {"password": 5}, "password"),
    ("PATCH", "/admin/users/admin", {"scopes": None}, "scopes"),
    ("POST", "/auth/tokens", {"name": 5, "scopes": ["read"]}, "name"),
    ("POST", "/auth/tokens", {"name": "x", "scopes": [{"read": 1}]}, "scopes"),
    ("POST", "/auth/tokens", {"name": "x", "scopes": "read"}, "scopes"),
    ("POST", "/auth/tokens", {"name": "x", "scopes": ["read"], "expires_in": 1.5}, "expires_in"),
    ("POST", "/auth/tokens", {"name": "x", "scopes": ["read"], "expires_in": True}, "expires_in"),
    ("POST", "/auth/tokens", {"name": "x", "scopes": ["read"], "expires_in": {"days": 1}}, "expires_in"),
    ("POST", "/admin/users/admin/tokens", {"name": ["x"], "scopes": ["read"]}, "name"),
    ("POST", "/admin/users/admin/tokens", {"name": "x", "scopes": [None]}, "scopes"),
]


@pytest.mark.parametrize("method,path,body,field", WRONG_TYPES,
                         ids=["%s %s %s" % (m, p, f) for m, p, _, f in WRONG_TYPES])
def test_a_wrong_typed_field_is_400_naming_it(depot, admin, method, path, body, field):
    response = depot.client.open(path, method=method, headers=admin, json=body)
    assert assert_error(response, 400)["field"] == field
    view = depot.client.get("/admin/users/admin", headers=admin).get_json()
    assert view["scopes"] == ["admin", "read", "write"] and view["status"] == "active"
    assert login(depot, "admin", ADMIN_PASSWORD).status_code == 200


def test_odd_login_names_are_refused_not_failed_on_postgresql(tmp_path, monkeypatch, project_schema):
    """PostgreSQL refuses NUL characters and strings longer than their column, where SQLite takes anything: a
    login naming such a user is still a 401 (and audited), not a 500."""
    with fresh_postgres_database() as url:
        monkeypatch.setenv("DEPOT_DATABASE_URL", url)
        depot = Depot(str(tmp_path / "data"), project_schema)
        try:
            for name in ("ev\u0000il", "x" * 300):
                assert_unauthorized(login(depot, name, "a-wrong-password"), "INVALID_CREDENTIALS")
            create = depot.client.post("/admin/users", headers=admin_headers(depot),
                                       json={"username": "ev\u0000il", "password": "a-long-enough-password"})
            assert_error(create, 400, "INVALID_USERNAME")
            actors = [r["actor"] for r in audit_rows(depot, admin_headers(depot), action="auth.login")]
            assert "ev\ufffdil" in actors and "x" * 128 in actors
        finally:
            depot.close()
