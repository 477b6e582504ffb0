"""Namespace permissions: grants of read < write < delete < admin to users, groups and anonymous callers on
namespace patterns, enforced on every route that names a namespace, filtering listings and search, managed
through /admin/grants and /admin/groups (audited) and `python -m app admin`.

A real Service over a temporary data dir, through the Flask test client; the CLI as a real child process.
"""
import copy
import subprocess
import sys

import pytest

from app.engine.compiler import compile_schema
from tests.conftest import ADMIN_PASSWORD, ROOT
from tests.test_identity import ALICE_PASSWORD, admin_headers, assert_error, bearer, create_user, login_token
from tests.test_identity import admin, depot  # noqa: F401  (fixtures)

BOB_PASSWORD = "bob-password-123456"


@pytest.fixture
def alice(depot, admin):
    """A read+write user, signed in."""
    create_user(depot, admin, "alice", ["read", "write"], ALICE_PASSWORD)
    return bearer(login_token(depot, "alice", ALICE_PASSWORD))


@pytest.fixture
def bob(depot, admin):
    create_user(depot, admin, "bob", ["read", "write"], BOB_PASSWORD)
    return bearer(login_token(depot, "bob", BOB_PASSWORD))


def grant(depot, admin, subject, namespace, permission, status=201):
    response = depot.client.post("/admin/grants", headers=admin,
                                 json={"subject": subject, "namespace": namespace, "permission": permission})
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def publish(depot, headers, namespace, name="tool", version="1.0.0", variant="linux", data=b"bytes"):
    return depot.client.put("/v1/%s/%s/%s/%s/blob" % (namespace, name, version, variant), data=data,
                            headers=headers)


def published(depot, admin, *coordinates):
    for namespace, name, version in coordinates:
        response = publish(depot, admin, namespace, name, version, data=("%s/%s/%s" % (namespace, name, version))
                           .encode())
        assert response.status_code == 201, response.get_data(as_text=True)


def names(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    return [row.get("namespace") + "/" + row["name"] if "name" in row else row["namespace"]
            for row in response.get_json()["items"]]


# --- the model ---------------------------------------------------------------------------------------------

def test_without_grants_the_global_scopes_decide(depot, admin, alice):
    """An installation that defines no grants behaves as before grants existed."""
    assert publish(depot, alice, "acme").status_code == 201
    assert publish(depot, alice, "other").status_code == 201
    assert names(depot.client.get("/v1", headers=alice)) == ["acme", "other"]
    assert_error(depot.client.delete("/v1/acme/tool/1.0.0/linux", headers=alice), 403, "FORBIDDEN")


def test_write_on_acme_cannot_publish_to_other_nor_see_it(depot, admin, alice):
    published(depot, admin, ("other", "secret", "1.0.0"), ("acme", "tool", "0.9.0"))
    grant(depot, admin, "user:alice", "acme", "write")
    assert publish(depot, alice, "acme").status_code == 201
    error = assert_error(publish(depot, alice, "other"), 403, "FORBIDDEN")
    assert "'other'" in error["message"] and error["field"] == "namespace"
    for path in ("/v1/other/secret/latest", "/v1/other/secret/versions", "/v1/other/secret/1.0.0/linux",
                 "/v1/other/secret/1.0.0/linux/blob", "/v1/other", "/v1/other/secret/tags"):
        assert_error(depot.client.get(path, headers=alice), 403, "FORBIDDEN")
    assert names(depot.client.get("/v1", headers=alice)) == ["acme"]
    assert names(depot.client.get("/v1/search?q=t", headers=alice)) == ["acme/tool"]
    listing = depot.client.get("/v1/search?q=t", headers=alice).get_json()
    assert listing["total"] == 1
    assert depot.client.get("/v1/acme/tool/latest", headers=alice).get_json()["version"] == "1.0.0"
    # the administrator sees everything
    assert names(depot.client.get("/v1", headers=admin)) == ["acme", "other"]


def test_the_checked_namespace_is_the_normalized_one(depot, admin, alice):
    """The path's namespace is checked as the route stores it: 'ACME' is acme, not another namespace."""
    grant(depot, admin, "user:alice", "acme", "write")
    assert publish(depot, alice, "ACME").status_code == 201
    assert publish(depot, alice, " other").status_code in (400, 403)


def test_a_grant_and_a_revocation_take_effect_on_the_next_request(depot, admin, alice):
    published(depot, admin, ("acme", "tool", "1.0.0"))
    keep = grant(depot, admin, "anonymous", "public-*", "read")  # grants exist: alice has none on acme
    assert_error(depot.client.get("/v1/acme/tool/latest", headers=alice), 403, "FORBIDDEN")
    given = grant(depot, admin, "user:alice", "acme", "read")
    assert depot.client.get("/v1/acme/tool/latest", headers=alice).status_code == 200
    assert_error(publish(depot, alice, "acme", version="2.0.0"), 403, "FORBIDDEN")
    assert grant(depot, admin, "user:alice", "acme", "write", status=200)["id"] == given["id"]  # replaced
    assert publish(depot, alice, "acme", version="2.0.0").status_code == 201
    response = depot.client.delete("/admin/grants/%d" % given["id"], headers=admin)
    assert response.status_code == 200 and response.get_json()["deleted"] is True
    assert_error(depot.client.get("/v1/acme/tool/latest", headers=alice), 403, "FORBIDDEN")
    assert depot.client.delete("/admin/grants/%d" % keep["id"], headers=admin).status_code == 200
    # no grant left: the global scopes decide again
    assert depot.client.get("/v1/acme/tool/latest", headers=alice).status_code == 200


def test_patterns_and_the_order_of_permissions(depot, admin, alice):
    grant(depot, admin, "user:alice", "acme-*", "delete")
    assert publish(depot, alice, "acme-tools").status_code == 201
    assert_error(publish(depot, alice, "acme"), 403)  # acme-* does not match acme
    assert depot.client.delete("/v1/acme-tools/tool/1.0.0/linux", headers=alice).status_code == 200
    grant(depot, admin, "user:alice", "*", "read")
    assert depot.client.get("/v1/acme", headers=alice).status_code == 200
    assert_error(publish(depot, alice, "acme"), 403)


def test_write_cannot_delete_and_delete_needs_the_delete_permission(depot, admin, alice):
    grant(depot, admin, "user:alice", "acme", "write")
    assert publish(depot, alice, "acme").status_code == 201
    error = assert_error(depot.client.delete("/v1/acme/tool/1.0.0/linux", headers=alice), 403, "FORBIDDEN")
    assert "delete" in error["message"]


def test_groups_carry_their_grants_to_their_members(depot, admin, alice, bob):
    assert depot.client.post("/admin/groups", headers=admin, json={"name": "team-acme"}).status_code == 201
    grant(depot, admin, "group:team-acme", "acme", "write")
    assert_error(publish(depot, bob, "acme"), 403)
    response = depot.client.put("/admin/groups/team-acme/members/bob", headers=admin)
    assert response.status_code == 200 and response.get_json()["members"] == ["bob"]
    assert publish(depot, bob, "acme").status_code == 201
    assert_error(publish(depot, alice, "acme", version="2.0.0"), 403)
    assert depot.client.delete("/admin/groups/team-acme/members/bob", headers=admin).status_code == 200
    assert_error(publish(depot, bob, "acme", version="3.0.0"), 403)
    listing = depot.client.get("/admin/groups", headers=admin).get_json()
    assert listing["total"] == 1 and listing["items"][0]["name"] == "team-acme"
    assert depot.client.delete("/admin/groups/team-acme", headers=admin).status_code == 200
    assert depot.client.get("/admin/grants", headers=admin).get_json()["total"] == 0


def test_the_scopes_of_a_token_cap_its_grants(depot, admin, alice):
    """A read-only API token of a user with write on acme reads acme and writes nothing."""
    grant(depot, admin, "user:alice", "acme", "write")
    response = depot.client.post("/auth/tokens", headers=alice, json={"name": "ci", "scopes": ["read"]})
    assert response.status_code == 201, response.get_data(as_text=True)
    read_only = bearer(response.get_json()["token"])
    assert publish(depot, alice, "acme").status_code == 201
    assert depot.client.get("/v1/acme/tool/latest", headers=read_only).status_code == 200
    assert_error(publish(depot, read_only, "acme", version="2.0.0"), 403)


def test_anonymous_access_can_be_granted_per_namespace(depot, admin):
    published(depot, admin, ("public", "tool", "1.0.0"), ("private", "tool", "1.0.0"))
    assert_error(depot.client.get("/v1/public/tool/latest"), 401, "UNAUTHENTICATED")
    grant(depot, admin, "anonymous", "public", "read")
    assert depot.client.get("/v1/public/tool/latest").get_json()["version"] == "1.0.0"
    assert depot.client.get("/v1/public/tool/1.0.0/linux/blob").get_data() == b"public/tool/1.0.0"
    error = assert_error(depot.client.get("/v1/private/tool/latest"), 401, "UNAUTHENTICATED")
    assert "'private'" in error["message"]
    assert_error(depot.client.put("/v1/public/tool/2.0.0/linux/blob", data=b"x"), 401)
    error = assert_error(depot.client.post("/admin/grants", headers=admin, json={
        "subject": "anonymous", "namespace": "public", "permission": "write"}), 400)
    assert error["field"] == "permission"


def test_grants_are_validated_and_audited(depot, admin, alice):
    for body, field in (({"subject": "user:alice", "namespace": "ACME!", "permission": "read"}, "namespace"),
                        ({"subject": "user:alice", "namespace": "acme", "permission": "own"}, "permission"),
                        ({"subject": "someone", "namespace": "acme", "permission": "read"}, "subject"),
                        ({"subject": "user:alice", "namespace": "acme"}, "permission"),
                        ({"subject": "user:alice", "namespace": "acme", "permission": "read", "x": 1}, "x")):
        error = assert_error(depot.client.post("/admin/grants", headers=admin, json=body), 400)
        assert error["field"] == field, (body, error)
    assert_error(depot.client.post("/admin/grants", headers=admin, json={
        "subject": "user:nobody", "namespace": "acme", "permission": "read"}), 404, "USER_NOT_FOUND")
    assert_error(depot.client.post("/admin/grants", headers=alice, json={
        "subject": "user:alice", "namespace": "*", "permission": "admin"}), 403)
    made = grant(depot, admin, "user:alice", "acme", "write")
    assert made["subject"] == "user:alice" and made["namespace"] == "acme" and made["created_by"] == "admin"
    listing = depot.client.get("/admin/grants?subject=user:alice", headers=admin).get_json()
    assert set(listing) == {"items", "total", "page", "page_size"} and listing["items"] == [made]
    audit = depot.client.get("/admin/audit?action=admin.grants.create", headers=admin).get_json()["items"]
    assert audit and audit[0]["outcome"] == "success" and "user:alice on acme (write)" == audit[0]["target"]
    assert [row["outcome"] for row in depot.client.get(
        "/admin/audit?action=admin.grants.create&page_size=200", headers=admin).get_json()["items"]].count(
        "denied") == 1


def test_deleting_a_user_removes_its_grants(depot, admin, alice):
    grant(depot, admin, "user:alice", "acme", "write")
    assert depot.client.delete("/admin/users/alice", headers=admin).status_code == 200
    assert depot.client.get("/admin/grants", headers=admin).get_json()["total"] == 0
    create_user(depot, admin, "alice", ["read", "write"], ALICE_PASSWORD)  # a namesake starts with nothing
    grant(depot, admin, "anonymous", "x", "read")
    assert_error(publish(depot, bearer(login_token(depot, "alice", ALICE_PASSWORD)), "acme"), 403)


# --- the schema declares it ---------------------------------------------------------------------------------

def test_a_route_with_a_namespace_but_no_namespace_policy_is_reported(project_schema):
    schema = copy.deepcopy(project_schema)
    route = next(r for r in schema["api"]["routes"] if r["id"] == "resolve_latest")
    route["tags"] = []
    _, report = compile_schema(schema, "test")
    assert any("resolve_latest" in str(w) or "routes[%d]" % schema["api"]["routes"].index(route) in str(w)
               for w in report.to_dict()["warnings"]), report.to_dict()["warnings"]


def test_a_policy_permission_needs_a_namespace(project_schema):
    schema = copy.deepcopy(project_schema)
    del schema["auth"]["policies"][0]["require"]["namespace"]
    compiled, report = compile_schema(schema, "test")
    assert compiled is None
    assert any("auth.policies[0].require.permission" in str(e) for e in report.to_dict()["errors"])


def test_require_scopes_with_a_namespace_checks_the_permission(depot, admin, alice, project_schema):
    """A route (of a pack or a template) without policies can name its namespace in auth.require_scopes."""
    schema = copy.deepcopy(project_schema)
    route = next(r for r in schema["api"]["routes"] if r["id"] == "resolve_latest")
    route["tags"] = []
    route["pipeline"].insert(3, {"op": "auth.require_scopes", "args": {"scopes": ["read"],
                                                                       "namespace": "{namespace}"}})
    response = depot.client.post("/admin/schema", headers=admin, json=schema)
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    published(depot, admin, ("acme", "tool", "1.0.0"), ("other", "tool", "1.0.0"))
    grant(depot, admin, "user:alice", "acme", "read")
    assert depot.client.get("/v1/acme/tool/latest", headers=alice).status_code == 200
    assert_error(depot.client.get("/v1/other/tool/latest", headers=alice), 403)


# --- the CLI ------------------------------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "app", "admin", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_the_admin_cli_manages_grants_and_groups(tmp_path):
    from tests.conftest import Depot
    data_dir = str(tmp_path / "data")
    Depot(data_dir).close()
    depot_ = Depot(data_dir)
    depot_.service.identity.create_user("carol", "carol-password-1234", ["read", "write"])
    depot_.close()
    steps = [("group-add", "--data-dir", data_dir, "team", "carol"),
             ("grant", "--data-dir", data_dir, "group:team", "acme-*", "write"),
             ("grant", "--data-dir", data_dir, "anonymous", "public", "read")]
    for step in steps:
        result = run_cli(*step)
        assert result.returncode == 0, (step, result.stdout, result.stderr)
    listing = run_cli("grants", "--data-dir", data_dir)
    assert listing.returncode == 0 and "group:team" in listing.stdout and "acme-*" in listing.stdout
    depot_ = Depot(data_dir)
    try:
        token = bearer(login_token(depot_, "carol", "carol-password-1234"))
        assert publish(depot_, token, "acme-x").status_code == 201
        assert_error(publish(depot_, token, "other"), 403)
        admin = admin_headers(depot_)
        audit = depot_.client.get("/admin/audit?action=admin.grants.create", headers=admin).get_json()["items"]
        assert len(audit) == 2 and all(row["actor"].startswith("cli") for row in audit)
    finally:
        depot_.close()
    grant_id = [line.split()[0] for line in listing.stdout.splitlines() if "group:team" in line][0]
    assert run_cli("revoke", "--data-dir", data_dir, grant_id).returncode == 0
    assert run_cli("group-remove", "--data-dir", data_dir, "team", "carol").returncode == 0
    bad = run_cli("grant", "--data-dir", data_dir, "user:nobody", "acme", "read")
    assert bad.returncode != 0 and "nobody" in bad.stderr and "Traceback" not in bad.stderr


def test_a_grant_id_no_integer_column_holds_is_404(depot, admin):
    """Found by the OpenAPI fuzzer: a grant id past 2**63 reached SQLite as an overflow, a 500."""
    for grant_id in (74019705784372740176740352, 2**31, 0):
        response = depot.client.delete("/admin/grants/%d" % grant_id, headers=admin)
        assert response.status_code == 404, (grant_id, response.get_data(as_text=True))
        assert response.get_json()["error"]["code"] in ("GRANT_NOT_FOUND", "NOT_FOUND")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_another_process_s_change_is_seen_after_the_snapshot_period_and_only_then_read_again(depot, admin, alice):
    """The server's grants against a second Access over the same database (what the admin CLI is): the server
    looks at the change counter once SNAPSHOT_SECONDS have passed, keeps its snapshot while nothing changed, and
    reads the grants again once the counter moved."""
    from app.identity.access import SNAPSHOT_SECONDS, Access
    clock = FakeClock()
    server, cli = Access(depot.service.sessions, clock=clock), Access(depot.service.sessions)
    principal = {"sub": "alice", "kind": "user", "scopes": ["read", "write"]}
    cli.grant("user:alice", "zeta", "write", "cli")
    first = server.snapshot()
    assert server.rank(principal, "acme") < 0 and server.rank(principal, "zeta") >= 1
    clock.now += SNAPSHOT_SECONDS + 1
    assert server.snapshot() is first  # nothing changed: the same compiled snapshot, not read again
    cli.grant("user:alice", "acme", "write", "cli")
    assert server.rank(principal, "acme") < 0  # not yet due
    clock.now += SNAPSHOT_SECONDS + 1
    assert server.snapshot() is not first and server.rank(principal, "acme") >= 1
