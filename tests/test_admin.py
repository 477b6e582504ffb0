"""The admin and auth API over real HTTP: admin-scope enforcement, schema upload / versions / rollback with an
atomic engine swap, route add and delete, persistence of the active schema across a restart, concurrent
readers during swaps, user management, and the audit log every one of those actions writes.

Everything runs through the Flask test client against real SQLite (migrated by Alembic) and real rocksdict
stores; threads are released together by a Barrier and coordinated with Events, never with sleeps.
"""
import copy
import json
import sys
import threading
from datetime import datetime

import pytest

from tests.conftest import ADMIN_PASSWORD, GatedBody, join_all

# --- helpers ------------------------------------------------------------------------------------------------

def route(route_id, method, path, *steps, tags=()):
    return {"id": route_id, "method": method, "path": path, "tags": list(tags), "pipeline": list(steps)}


def step(op, **args):
    return {"op": op, "args": args}


def hello_route(route_id="hello"):
    """GET /v1/{namespace}/{name}/hello: a new route that needs no token."""
    return route(route_id, "GET", "/v1/{namespace}/{name}/hello",
                 step("parse.path", entity="artifact"),
                 step("respond.json", body={"hello": "{name}", "route": route_id}))


def broken_route():
    """A route using an op that is not in ops.allowed."""
    return route("evil", "GET", "/v1/{namespace}/{name}/evil", step("shell.exec", command="rm -rf /"),
                 step("respond.json", body={"ok": True}))


def with_routes(schema, *routes):
    schema = copy.deepcopy(schema)
    schema["api"]["routes"].extend(copy.deepcopy(list(routes)))
    return schema


def admin(depot, sub="boss", **extra):
    """Headers carrying an admin token for user ``sub``."""
    return dict({"Authorization": "Bearer " + depot.token(["admin", "read", "write"], sub)}, **extra)


def bearer(token, **extra):
    return dict({"Authorization": "Bearer " + token}, **extra)


def error_of(response):
    assert response.mimetype == "application/json", response.get_data()
    body = response.get_json()
    assert set(body) == {"error"}, body
    return body["error"]


def active_schema(depot):
    response = depot.client.get("/admin/schema", headers=admin(depot))
    assert response.status_code == 200, response.get_data()
    return response.get_json()


def versions(depot, **params):
    response = depot.client.get("/admin/schema/versions", query_string=params, headers=admin(depot))
    assert response.status_code == 200, response.get_data()
    return response.get_json()


def audit_rows(depot, **params):
    response = depot.client.get("/admin/audit", query_string=params, headers=admin(depot))
    assert response.status_code == 200, response.get_data()
    body = response.get_json()
    assert set(body) == {"items", "total", "page", "page_size"}
    return body


def all_audit(depot, **params):
    """Every audit row matching ``params``, newest first (walking the pages)."""
    rows, page = [], 1
    while True:
        body = audit_rows(depot, page=page, page_size=200, **params)
        rows += body["items"]
        if len(rows) >= body["total"] or not body["items"]:
            return rows
        page += 1


def the_row(depot, **match):
    """The one audit row whose fields equal ``match``."""
    rows = [r for r in all_audit(depot) if all(r.get(k) == v for k, v in match.items())]
    assert len(rows) == 1, (match, rows)
    return rows[0]


def assert_row_shape(row):
    for key in ("actor", "action", "target", "outcome", "request_id", "client_ip", "at"):
        assert row.get(key), (key, row)
    assert row["client_ip"] == "127.0.0.1"
    datetime.fromisoformat(row["at"].replace("Z", "+00:00"))


def login(depot, username, password, request_id=None):
    headers = {"X-Request-Id": request_id} if request_id else {}
    return depot.client.post("/auth/login", json={"username": username, "password": password}, headers=headers)


@pytest.fixture
def depot(make_depot, project_schema):
    return make_depot(project_schema)


# --- admin scope --------------------------------------------------------------------------------------------

ADMIN_ENDPOINTS = [
    ("GET", "/admin/users", None, "admin.users.list"),
    ("POST", "/admin/users", {"username": "mallory", "password": "a-long-enough-password", "scopes": ["admin"]},
     "admin.users.create"),
    ("GET", "/admin/users/admin", None, "admin.users.get"),
    ("PATCH", "/admin/users/admin", {"status": "disabled"}, "admin.users.update"),
    ("GET", "/admin/schema", None, "admin.schema.get"),
    ("POST", "/admin/schema", "SCHEMA", "admin.schema.update"),
    ("GET", "/admin/schema/versions", None, "admin.schema.versions"),
    ("GET", "/admin/schema/versions/1", None, "admin.schema.version"),
    ("POST", "/admin/schema/rollback", {"version": 1}, "admin.schema.rollback"),
    ("POST", "/admin/routes", "ROUTE", "admin.routes.add"),
    ("DELETE", "/admin/routes/resolve_latest", None, "admin.routes.delete"),
    ("GET", "/admin/audit", None, "admin.audit"),
]


def _body(body, depot):
    if body == "SCHEMA":
        return with_routes(depot.schema, hello_route())
    if body == "ROUTE":
        return hello_route()
    return body


@pytest.mark.parametrize("method,path,body,action", ADMIN_ENDPOINTS, ids=[e[1] + " " + e[0] for e in ADMIN_ENDPOINTS])
def test_admin_routes_refuse_without_a_token_and_without_the_admin_scope(depot, method, path, body, action):
    payload = _body(body, depot)

    anonymous = depot.client.open(path, method=method, json=payload)
    assert anonymous.status_code == 401
    assert error_of(anonymous)["code"] == "UNAUTHENTICATED"
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"

    writer = bearer(depot.token(["read", "write"], "writer"), **{"X-Request-Id": "denied-attempt-1"})
    refused = depot.client.open(path, method=method, json=payload, headers=writer)
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "FORBIDDEN"
    assert refused.headers["X-Request-Id"] == "denied-attempt-1"

    row = the_row(depot, actor="writer", action=action)
    assert row["outcome"] == "denied"
    assert row["target"] == path
    assert row["request_id"] == "denied-attempt-1"
    assert_row_shape(row)

    # the refused attempts changed nothing
    assert versions(depot)["total"] == 1
    assert active_schema(depot)["version"] == 1
    users = depot.client.get("/admin/users", headers=admin(depot)).get_json()
    assert "mallory" not in [u["username"] for u in users["items"]]
    assert depot.client.get("/admin/users/admin", headers=admin(depot)).get_json()["status"] == "active"
    assert login(depot, "admin", ADMIN_PASSWORD).status_code == 200
    assert depot.client.get("/v1/acme/pkg/hello").status_code == 404


def test_an_admins_read_write_token_is_refused(depot):
    """A token carries the scopes it was issued with; an admin's read/write token is not an admin token."""
    depot.token(["admin", "read", "write"], "dual")
    token = depot.token(["read", "write"], "dual")
    refused = depot.client.get("/admin/users", headers=bearer(token))
    assert refused.status_code == 403 and error_of(refused)["code"] == "FORBIDDEN"
    assert the_row(depot, actor="dual", action="admin.users.list")["outcome"] == "denied"


# --- schema upload that fails -------------------------------------------------------------------------------

def test_a_broken_schema_upload_is_422_with_placed_findings_and_changes_nothing(depot):
    assert depot.publish("acme", "pkg", "1.0.0", "linux", b"payload").status_code == 201
    before = active_schema(depot)
    assert before["version"] == 1 and before["active"] is True
    original = before["schema"]

    broken = with_routes(original, broken_route())
    response = depot.client.post("/admin/schema", json=broken, headers=admin(depot, **{"X-Request-Id": "bad-up"}))
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "SCHEMA_INVALID"
    assert isinstance(error["details"], list) and error["details"]
    for finding in error["details"]:
        assert {"severity", "place", "message"} <= set(finding)
        assert finding["severity"] == "error"
    index = len(original["api"]["routes"])
    places = [f["place"] for f in error["details"]]
    assert "api.routes[%d].pipeline[0].op" % index in places, places
    assert any("shell.exec" in f["message"] for f in error["details"])

    # a document that is not a schema at all is refused the same way
    garbage = depot.client.post("/admin/schema", json={"hello": "world"}, headers=admin(depot))
    assert garbage.status_code == 422
    assert error_of(garbage)["code"] == "SCHEMA_INVALID"
    assert all("place" in f for f in error_of(garbage)["details"])

    # a body that is not JSON is a 400
    not_json = depot.client.post("/admin/schema", data=b"{nope", headers=admin(depot))
    assert not_json.status_code == 400 and error_of(not_json)["code"] == "INVALID_JSON"

    # nothing changed
    after = active_schema(depot)
    assert after["version"] == 1 and after["sha256"] == before["sha256"] and after["schema"] == original
    listed = versions(depot)
    assert listed["total"] == 1 and [v["version"] for v in listed["items"]] == [1]
    latest = depot.client.get("/v1/acme/pkg/latest", headers=depot.headers(["read"]))
    assert latest.status_code == 200 and latest.get_json()["version"] == "1.0.0"
    blob = depot.client.get("/v1/acme/pkg/1.0.0/linux/blob", headers=depot.headers(["read"]))
    assert blob.status_code == 200 and blob.get_data() == b"payload"
    evil = depot.client.get("/v1/acme/pkg/evil")
    assert evil.status_code == 404 and error_of(evil)["code"] == "NOT_FOUND"

    failed = the_row(depot, action="admin.schema.update", request_id="bad-up")
    assert failed["outcome"] == "failure" and failed["actor"] == "boss"
    assert failed["detail"]["code"] == "SCHEMA_INVALID" and failed["detail"]["status"] == 422
    assert_row_shape(failed)


# --- schema upload that succeeds, versions, rollback --------------------------------------------------------

def test_schema_upload_swaps_at_once_and_rollback_restores_the_old_version(depot):
    assert depot.client.get("/v1/acme/pkg/hello").status_code == 404
    v1 = active_schema(depot)
    assert v1["version"] == 1 and v1["created_by"] == "bootstrap"
    doc = copy.deepcopy(v1["schema"])
    doc["api"]["routes"].append(hello_route())

    uploaded = depot.client.post("/admin/schema?comment=add%20hello", json=doc,
                                 headers=admin(depot, **{"X-Request-Id": "upload-hello"}))
    assert uploaded.status_code == 201, uploaded.get_data()
    body = uploaded.get_json()
    assert body["version"] == 2 and body["active"] is True
    assert body["created_by"] == "boss" and body["comment"] == "add hello"
    assert body["warnings"] == [] and len(body["sha256"]) == 64

    # served at once, no restart
    hello = depot.client.get("/v1/acme/pkg/hello")
    assert hello.status_code == 200 and hello.get_json() == {"hello": "pkg", "route": "hello"}

    v2 = active_schema(depot)
    assert v2["version"] == 2 and v2["schema"] == doc and v2["sha256"] == body["sha256"]

    # the old version keeps its full document
    old = depot.client.get("/admin/schema/versions/1", headers=admin(depot))
    assert old.status_code == 200
    old = old.get_json()
    assert old["version"] == 1 and old["active"] is False
    assert old["schema"] == v1["schema"] and old["sha256"] == v1["sha256"]
    assert "hello" not in [r["id"] for r in old["schema"]["api"]["routes"]]
    missing = depot.client.get("/admin/schema/versions/99", headers=admin(depot))
    assert missing.status_code == 404 and error_of(missing)["code"] == "SCHEMA_VERSION_NOT_FOUND"

    # rollback is a further version holding the old document
    rolled = depot.client.post("/admin/schema/rollback", json={"version": 1},
                               headers=admin(depot, **{"X-Request-Id": "rollback-1"}))
    assert rolled.status_code == 201, rolled.get_data()
    assert rolled.get_json()["version"] == 3 and rolled.get_json()["active"] is True
    gone = depot.client.get("/v1/acme/pkg/hello")
    assert gone.status_code == 404 and gone.mimetype == "application/json"
    assert error_of(gone)["code"] == "NOT_FOUND"
    v3 = active_schema(depot)
    assert v3["version"] == 3 and v3["schema"] == v1["schema"] and v3["sha256"] == v1["sha256"]

    # bad rollbacks change nothing
    for payload, status, code in (({"version": 42}, 404, "SCHEMA_VERSION_NOT_FOUND"),
                                  ({"version": "1"}, 400, "INVALID_REQUEST"),
                                  ({"version": True}, 400, "INVALID_REQUEST"),
                                  ({}, 400, "INVALID_REQUEST")):
        bad = depot.client.post("/admin/schema/rollback", json=payload, headers=admin(depot))
        assert bad.status_code == status and error_of(bad)["code"] == code, (payload, bad.get_data())
    assert active_schema(depot)["version"] == 3

    # the version list: newest first, paginated, exactly one active
    listed = versions(depot)
    assert set(listed) == {"items", "total", "page", "page_size"}
    assert listed["total"] == 3 and listed["page"] == 1 and listed["page_size"] == 50
    assert [v["version"] for v in listed["items"]] == [3, 2, 1]
    assert [v["active"] for v in listed["items"]] == [True, False, False]
    assert all("schema" not in v for v in listed["items"])
    assert listed["items"][0]["comment"] == "rollback to version 1"
    first = versions(depot, page=1, page_size=2)
    second = versions(depot, page=2, page_size=2)
    assert (first["total"], first["page"], first["page_size"]) == (3, 1, 2)
    assert [v["version"] for v in first["items"]] == [3, 2]
    assert (second["total"], second["page"], second["page_size"]) == (3, 2, 2)
    assert [v["version"] for v in second["items"]] == [1]
    assert versions(depot, page=3, page_size=2)["items"] == []
    for params in ({"page": 0}, {"page_size": 0}, {"page_size": 201}, {"page": "x"}):
        bad = depot.client.get("/admin/schema/versions", query_string=params, headers=admin(depot))
        assert bad.status_code == 400 and error_of(bad)["code"] == "INVALID_QUERY", params

    update = the_row(depot, action="admin.schema.update", request_id="upload-hello")
    assert update["outcome"] == "success" and update["actor"] == "boss" and "2" in update["target"]
    rollback = the_row(depot, action="admin.schema.rollback", request_id="rollback-1")
    assert rollback["outcome"] == "success" and "3" in rollback["target"]
    assert_row_shape(update)
    assert_row_shape(rollback)
    failures = all_audit(depot, action="admin.schema.rollback")
    assert sorted(r["outcome"] for r in failures) == ["failure"] * 4 + ["success"]


def test_the_uploaded_schema_stays_active_after_a_restart(depot):
    doc = with_routes(active_schema(depot)["schema"], hello_route())
    uploaded = depot.client.post("/admin/schema", json=doc, headers=admin(depot))
    assert uploaded.status_code == 201
    assert depot.client.get("/v1/acme/pkg/hello").status_code == 200

    depot.restart()  # re-created with the original schema, which has no hello route
    assert "hello" not in [r["id"] for r in depot.schema["api"]["routes"]]

    hello = depot.client.get("/v1/acme/pkg/hello")
    assert hello.status_code == 200 and hello.get_json()["hello"] == "pkg"
    after = active_schema(depot)
    assert after["version"] == 2 and after["schema"] == doc
    assert versions(depot)["total"] == 2  # the restart stored no new version

    # and a rollback after the restart still works against the stored history
    rolled = depot.client.post("/admin/schema/rollback", json={"version": 1}, headers=admin(depot))
    assert rolled.status_code == 201 and rolled.get_json()["version"] == 3
    assert depot.client.get("/v1/acme/pkg/hello").status_code == 404
    depot.restart()
    assert depot.client.get("/v1/acme/pkg/hello").status_code == 404
    assert active_schema(depot)["version"] == 3


# --- /admin/routes ------------------------------------------------------------------------------------------

def test_routes_are_added_and_deleted_one_at_a_time(depot):
    added = depot.client.post("/admin/routes", json=hello_route(), headers=admin(depot, **{"X-Request-Id": "add"}))
    assert added.status_code == 201, added.get_data()
    assert added.get_json()["version"] == 2 and added.get_json()["comment"] == "added route hello"
    hello = depot.client.get("/v1/acme/widget/hello")
    assert hello.status_code == 200 and hello.get_json() == {"hello": "widget", "route": "hello"}
    assert "hello" in [r["id"] for r in active_schema(depot)["schema"]["api"]["routes"]]

    # bad routes: 422 with findings, nothing changes
    for bad_route in (broken_route(), hello_route(), {"id": "half"}):  # bad op, duplicate id, not a route
        refused = depot.client.post("/admin/routes", json=bad_route, headers=admin(depot))
        assert refused.status_code == 422, (bad_route, refused.get_data())
        error = error_of(refused)
        assert error["code"] == "SCHEMA_INVALID" and error["details"]
        assert all("place" in f for f in error["details"])
    not_object = depot.client.post("/admin/routes", json=[hello_route("other")], headers=admin(depot))
    assert not_object.status_code == 400 and error_of(not_object)["code"] == "INVALID_JSON"
    assert versions(depot)["total"] == 2
    assert active_schema(depot)["version"] == 2
    assert depot.client.get("/v1/acme/widget/evil").status_code == 404
    assert depot.client.get("/v1/acme/widget/hello").status_code == 200

    unknown = depot.client.delete("/admin/routes/no-such-route", headers=admin(depot))
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "ROUTE_NOT_FOUND"
    assert versions(depot)["total"] == 2

    deleted = depot.client.delete("/admin/routes/hello", headers=admin(depot, **{"X-Request-Id": "del"}))
    assert deleted.status_code in (200, 201), deleted.get_data()
    assert deleted.get_json()["version"] == 3
    gone = depot.client.get("/v1/acme/widget/hello")
    assert gone.status_code == 404 and error_of(gone)["code"] == "NOT_FOUND"
    assert "hello" not in [r["id"] for r in active_schema(depot)["schema"]["api"]["routes"]]
    again = depot.client.delete("/admin/routes/hello", headers=admin(depot))
    assert again.status_code == 404 and error_of(again)["code"] == "ROUTE_NOT_FOUND"
    # the other routes still answer
    assert depot.publish("acme", "widget", "1.0.0", "x", b"w").status_code == 201

    add_row = the_row(depot, action="admin.routes.add", request_id="add")
    assert add_row["outcome"] == "success" and add_row["actor"] == "boss"
    assert_row_shape(add_row)
    assert [r["outcome"] for r in all_audit(depot, action="admin.routes.add")].count("failure") == 4
    delete_row = the_row(depot, action="admin.routes.delete", request_id="del")
    assert delete_row["outcome"] == "success"
    assert sorted(r["outcome"] for r in all_audit(depot, action="admin.routes.delete")) == \
        ["failure", "failure", "success"]


# --- concurrency during swaps -------------------------------------------------------------------------------

READERS = 8
SWAPS = 6


def test_readers_never_fail_while_the_schema_is_swapped(depot):
    assert depot.publish("acme", "pkg", "1.0.0", "linux", b"stable bytes" * 1000).status_code == 201
    read = depot.headers(["read"])
    base = active_schema(depot)["schema"]
    with_hello = with_routes(base, hello_route())
    barrier = threading.Barrier(READERS + 1, timeout=60)
    stop = threading.Event()
    statuses = [[] for _ in range(READERS)]
    errors = []

    def reader(i):
        client = depot.app.test_client()
        urls = ("/v1/acme/pkg/1.0.0/linux/blob", "/v1/acme/pkg/latest")
        try:
            barrier.wait()
            n = 0
            while not stop.is_set() or n < 4:
                url = urls[n % 2]
                with client.get(url, headers=read) as response:
                    data = response.get_data()
                    statuses[i].append(response.status_code)
                    if response.status_code == 200:
                        if url.endswith("/blob"):
                            assert data == b"stable bytes" * 1000
                        else:
                            assert json.loads(data)["version"] == "1.0.0"
                n += 1
        except BaseException as exc:  # reported after the join
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    posted = []
    try:
        for n in range(SWAPS):
            doc = with_hello if n % 2 == 0 else base
            response = depot.client.post("/admin/schema", json=doc, headers=admin(depot))
            assert response.status_code == 201, response.get_data()
            posted.append(response.get_json()["version"])
            expected = 200 if n % 2 == 0 else 404
            assert depot.client.get("/v1/acme/pkg/hello").status_code == expected
    finally:
        stop.set()
    join_all(threads, errors, "a reader")

    assert posted == list(range(2, SWAPS + 2))
    flat = [status for per_thread in statuses for status in per_thread]
    assert len(flat) >= READERS * 4
    assert all(len(per_thread) >= 4 for per_thread in statuses)
    assert set(flat) == {200}, sorted(set(flat))
    assert versions(depot)["total"] == SWAPS + 1


class _CyclicGarbage:
    """Garbage only the cycle collector frees, running Python code as it goes: a collection that starts while a
    thread builds AST objects lets another thread run there."""

    def __init__(self):
        self.itself = self

    def __del__(self):
        sum(range(10))


def test_url_maps_bound_by_threads_at_once_never_fail():
    """The readers above rebuild the URL map after each swap while the swap compiles the next schema, both
    binding Werkzeug rules, which goes through ast.parse; CPython 3.11 counts the AST's depth per interpreter, so
    two threads doing it at once failed with SystemError (the test above, once in a loaded run). Every rule is
    bound under one lock (app.engine.shadowing.url_map, DepotFlask.add_url_rule). Here threads switch as often as
    the interpreter allows and inside the parser too; without the lock this failed on every run."""
    from werkzeug.routing import Rule
    from app.engine.shadowing import url_map
    errors = []

    def bind_maps():
        try:
            for _ in range(60):
                url_map([Rule("/v1/<namespace>/<name>/<version>/<variant>/f%d" % n, endpoint=n) for n in range(20)])
                for _ in range(50):
                    _CyclicGarbage()
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=bind_maps) for _ in range(4)]
        for thread in threads:
            thread.start()
        join_all(threads, errors, "a thread binding rules")
    finally:
        sys.setswitchinterval(interval)


def probe_route(served_by):
    return route("probe", "POST", "/probe", step("parse.json", out="body"),
                 step("respond.json", body={"served_by": served_by, "x": "$body.x"}))


def test_an_in_flight_request_finishes_on_the_engine_it_started_with(depot):
    base = active_schema(depot)["schema"]
    first = depot.client.post("/admin/schema", json=with_routes(base, probe_route("A")), headers=admin(depot))
    assert first.status_code == 201
    engine_a = depot.service.engine
    reading, release = threading.Event(), threading.Event()
    payload = json.dumps({"x": "in-flight"}).encode()
    outcome = {}

    def slow_request():
        client = depot.app.test_client()
        try:
            response = client.post("/probe", input_stream=GatedBody(payload, reading, release),
                                   content_length=len(payload), content_type="application/json")
            outcome["status"], outcome["body"] = response.status_code, response.get_json()
        except BaseException as exc:
            outcome["error"] = exc
            reading.set()

    thread = threading.Thread(target=slow_request, daemon=True)
    thread.start()
    try:
        assert reading.wait(60), "the request never started reading its body"
        assert "error" not in outcome, outcome
        # the request is matched and running on engine A; swap in B meanwhile
        swapped = depot.client.post("/admin/schema", json=with_routes(base, probe_route("B")), headers=admin(depot))
        assert swapped.status_code == 201 and swapped.get_json()["version"] == 3
        assert depot.service.engine is not engine_a
        fresh = depot.client.post("/probe", json={"x": "new"})
        assert fresh.status_code == 200 and fresh.get_json() == {"served_by": "B", "x": "new"}
    finally:
        release.set()
        thread.join(60)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    assert outcome["status"] == 200
    assert outcome["body"] == {"served_by": "A", "x": "in-flight"}
    # the old engine is intact and still knows only its own version of the route
    assert engine_a.routes["probe"] is not depot.service.engine.routes["probe"]


# --- users --------------------------------------------------------------------------------------------------

def test_user_management(depot):
    h = admin(depot)
    created = depot.client.post("/admin/users", headers=dict(h, **{"X-Request-Id": "mk-alice"}),
                                json={"username": "alice", "password": "alice-password-1",
                                      "scopes": ["write", "read"]})
    assert created.status_code == 201, created.get_data()
    view = created.get_json()
    assert view["username"] == "alice" and view["scopes"] == ["read", "write"] and view["status"] == "active"
    assert "password" not in json.dumps(view) and "hash" not in json.dumps(view)

    duplicate = depot.client.post("/admin/users", headers=h,
                                  json={"username": "alice", "password": "another-password-1"})
    assert duplicate.status_code == 409 and error_of(duplicate)["code"] == "USER_EXISTS"
    bad_scope = depot.client.post("/admin/users", headers=h,
                                  json={"username": "carol", "password": "carol-password-1", "scopes": ["root"]})
    assert bad_scope.status_code == 400 and error_of(bad_scope)["field"] == "scopes"
    weak = depot.client.post("/admin/users", headers=h, json={"username": "dave", "password": "short"})
    assert weak.status_code == 400 and error_of(weak)["code"] == "WEAK_PASSWORD"
    bob = depot.client.post("/admin/users", headers=h, json={"username": "bob", "password": "bob-password-12"})
    assert bob.status_code == 201 and bob.get_json()["scopes"] == ["read"]  # the default scope

    # list, paginated and sorted by name: admin, alice, bob, boss
    listed = depot.client.get("/admin/users", headers=h).get_json()
    assert set(listed) == {"items", "total", "page", "page_size"}
    names = [u["username"] for u in listed["items"]]
    assert names == ["admin", "alice", "bob", "boss"] and listed["total"] == 4
    page2 = depot.client.get("/admin/users?page=2&page_size=3", headers=h).get_json()
    assert page2 == {"items": page2["items"], "total": 4, "page": 2, "page_size": 3}
    assert [u["username"] for u in page2["items"]] == ["boss"]
    assert depot.client.get("/admin/users?page_size=500", headers=h).status_code == 400

    got = depot.client.get("/admin/users/alice", headers=h)
    assert got.status_code == 200 and got.get_json()["scopes"] == ["read", "write"]
    for method in ("GET", "PATCH"):
        unknown = depot.client.open("/admin/users/nobody", method=method, headers=h,
                                    json={"status": "disabled"} if method == "PATCH" else None)
        assert unknown.status_code == 404 and error_of(unknown)["code"] == "USER_NOT_FOUND", method

    # alice logs in and uses her token
    first = login(depot, "alice", "alice-password-1")
    assert first.status_code == 200
    alice_token = first.get_json()["token"]
    assert depot.client.get("/auth/me", headers=bearer(alice_token)).get_json()["username"] == "alice"

    # scopes
    narrowed = depot.client.patch("/admin/users/alice", headers=h, json={"scopes": ["read"]})
    assert narrowed.status_code == 200 and narrowed.get_json()["scopes"] == ["read"]
    assert depot.client.get("/admin/users/alice", headers=h).get_json()["scopes"] == ["read"]
    publish = depot.client.put("/v1/acme/pkg/1.0.0/x/blob", data=b"a", headers=bearer(alice_token))
    assert publish.status_code == 403  # her token's write scope is bounded by her current scopes
    invalid = depot.client.patch("/admin/users/alice", headers=h, json={"scopes": ["read", "sudo"]})
    assert invalid.status_code == 400 and error_of(invalid)["field"] == "scopes"
    bad_status = depot.client.patch("/admin/users/alice", headers=h, json={"status": "banned"})
    assert bad_status.status_code == 400 and error_of(bad_status)["field"] == "status"
    unknown_field = depot.client.patch("/admin/users/alice", headers=h, json={"is_admin": True})
    assert unknown_field.status_code == 400
    assert depot.client.get("/admin/users/alice", headers=h).get_json()["scopes"] == ["read"]

    # disabled: cannot log in, and her earlier token stops working
    disabled = depot.client.patch("/admin/users/alice", headers=h, json={"status": "disabled"})
    assert disabled.status_code == 200 and disabled.get_json()["status"] == "disabled"
    refused = login(depot, "alice", "alice-password-1")
    assert refused.status_code == 401 and error_of(refused)["code"] == "INVALID_CREDENTIALS"
    assert depot.client.get("/auth/me", headers=bearer(alice_token)).status_code == 401

    # re-enabled with a password reset: only the new password works
    reset = depot.client.patch("/admin/users/alice", headers=h,
                               json={"status": "active", "password": "fresh-password-99"})
    assert reset.status_code == 200 and reset.get_json()["status"] == "active"
    assert login(depot, "alice", "alice-password-1").status_code == 401
    again = login(depot, "alice", "fresh-password-99")
    assert again.status_code == 200
    assert depot.client.get("/auth/me", headers=bearer(again.get_json()["token"])).get_json()["scopes"] == ["read"]
    weak_reset = depot.client.patch("/admin/users/alice", headers=h, json={"password": "tiny"})
    assert weak_reset.status_code == 400 and error_of(weak_reset)["code"] == "WEAK_PASSWORD"

    create_row = the_row(depot, action="admin.users.create", request_id="mk-alice")
    assert create_row["outcome"] == "success" and create_row["target"] == "alice" and create_row["actor"] == "boss"
    assert_row_shape(create_row)
    creates = all_audit(depot, action="admin.users.create")
    assert sorted(r["outcome"] for r in creates) == ["failure", "failure", "failure", "success", "success"]
    updates = all_audit(depot, action="admin.users.update")
    assert sum(r["outcome"] == "success" for r in updates) == 3
    assert all(r["target"] == "alice" for r in updates if r["outcome"] == "success")


# --- audit --------------------------------------------------------------------------------------------------

def test_the_audit_log_records_logins_tokens_publishes_tags_and_admin_actions(depot):
    # logins
    ok = login(depot, "admin", ADMIN_PASSWORD, request_id="login-ok")
    assert ok.status_code == 200 and ok.headers["X-Request-Id"] == "login-ok"
    token = ok.get_json()["token"]
    bad = login(depot, "admin", "not the password", request_id="login-bad")
    assert bad.status_code == 401
    ghost = login(depot, "ghost", "whatever-password")
    assert ghost.status_code == 401

    row = the_row(depot, action="auth.login", request_id="login-ok")
    assert (row["actor"], row["target"], row["outcome"]) == ("admin", "admin", "success")
    assert_row_shape(row)
    row = the_row(depot, action="auth.login", request_id="login-bad")
    assert (row["actor"], row["outcome"]) == ("admin", "failure")
    assert_row_shape(row)
    row = the_row(depot, action="auth.login", actor="ghost")
    assert row["outcome"] == "failure" and row["request_id"] == ghost.headers["X-Request-Id"]

    # API tokens: creation and revocation
    made = depot.client.post("/auth/tokens", json={"name": "ci", "scopes": ["read", "write"]}, headers=bearer(token))
    assert made.status_code == 201, made.get_data()
    token_id, secret = made.get_json()["id"], made.get_json()["token"]
    row = the_row(depot, action="token.create", request_id=made.headers["X-Request-Id"])
    assert (row["actor"], row["target"], row["outcome"]) == ("admin", "admin/" + token_id, "success")
    assert_row_shape(row)
    too_wide = depot.client.post("/auth/tokens", json={"name": "x", "scopes": ["admin"]},
                                 headers=bearer(secret))
    assert too_wide.status_code == 403

    # publish through the API token: success, then a failed republish
    published = depot.client.put("/v1/acme/pkg/1.0.0/linux/blob", data=b"one", headers=bearer(secret))
    assert published.status_code == 201
    republished = depot.client.put("/v1/acme/pkg/1.0.0/linux/blob", data=b"two", headers=bearer(secret))
    assert republished.status_code == 409
    row = the_row(depot, action="route.publish_artifact_blob", request_id=published.headers["X-Request-Id"])
    assert (row["actor"], row["outcome"]) == ("admin", "success")
    assert row["target"] == "/v1/acme/pkg/1.0.0/linux/blob"
    assert_row_shape(row)
    row = the_row(depot, action="route.publish_artifact_blob", request_id=republished.headers["X-Request-Id"])
    assert (row["actor"], row["outcome"]) == ("admin", "failure") and row["detail"]["status"] == 409
    assert_row_shape(row)

    # a tag change
    tagged = depot.client.put("/v1/acme/pkg/tags/stable", json={"version": "1.0.0", "variant": "linux"},
                              headers=bearer(secret, **{"X-Request-Id": "tag-it"}))
    assert tagged.status_code == 200, tagged.get_data()
    row = the_row(depot, action="route.set_tag", request_id="tag-it")
    assert (row["actor"], row["target"], row["outcome"]) == ("admin", "/v1/acme/pkg/tags/stable", "success")
    assert_row_shape(row)

    # revoke the API token: recorded, and the token stops working
    revoked = depot.client.delete("/auth/tokens/" + token_id, headers=bearer(token))
    assert revoked.status_code == 200 and revoked.get_json()["revoked"] is True
    row = the_row(depot, action="token.revoke", request_id=revoked.headers["X-Request-Id"])
    assert (row["actor"], row["target"], row["outcome"]) == ("admin", "admin/" + token_id, "success")
    assert_row_shape(row)
    assert depot.client.get("/v1/acme/pkg/latest", headers=bearer(secret)).status_code == 401

    # reads are not audited
    actions = {r["action"] for r in all_audit(depot)}
    assert not any(a.startswith("route.") and a not in ("route.publish_artifact_blob", "route.set_tag")
                   for a in actions), actions


def test_audit_query_order_filters_and_pages(depot):
    h = admin(depot)
    assert login(depot, "admin", ADMIN_PASSWORD).status_code == 200
    assert login(depot, "admin", "wrong password").status_code == 401
    assert depot.client.post("/admin/users", headers=h,
                             json={"username": "erin", "password": "erin-password-12"}).status_code == 201
    assert login(depot, "erin", "erin-password-12").status_code == 200
    assert depot.client.post("/admin/routes", json=hello_route(), headers=h).status_code == 201
    assert depot.client.get("/admin/users", headers=bearer(depot.token(["read"], "reader"))).status_code == 403
    assert depot.publish("acme", "pkg", "1.0.0", "x", b"x").status_code == 201

    everything = all_audit(depot)
    assert [r["action"] for r in everything] == [
        "route.publish_artifact_blob", "admin.users.list", "admin.routes.add", "auth.login", "admin.users.create",
        "auth.login", "auth.login"]
    ids = [r["id"] for r in everything]
    assert ids == sorted(ids, reverse=True)  # newest first
    moments = [datetime.fromisoformat(r["at"].replace("Z", "+00:00")) for r in everything]
    assert moments == sorted(moments, reverse=True)
    for row in everything:
        assert_row_shape(row)
    assert everything[1]["outcome"] == "denied" and everything[1]["actor"] == "reader"

    by_actor = audit_rows(depot, actor="erin")
    assert by_actor["total"] == 1 and by_actor["items"][0]["action"] == "auth.login"
    by_admin = audit_rows(depot, actor="admin")
    assert by_admin["total"] == 2 and {r["outcome"] for r in by_admin["items"]} == {"success", "failure"}
    logins = audit_rows(depot, action="auth.login")
    assert logins["total"] == 3 and [r["actor"] for r in logins["items"]] == ["erin", "admin", "admin"]
    both = audit_rows(depot, actor="admin", action="auth.login")
    assert both["total"] == 2
    assert audit_rows(depot, actor="nobody")["total"] == 0
    assert audit_rows(depot, action="admin.users.create")["items"][0]["target"] == "erin"

    # since: an instant keeps the rows at or after it
    cut = everything[3]["at"]
    since = audit_rows(depot, since=cut)
    assert since["total"] >= 4
    assert [r["id"] for r in since["items"]] == ids[:since["total"]]
    assert all(datetime.fromisoformat(r["at"].replace("Z", "+00:00")) >= moments[3] for r in since["items"])
    assert audit_rows(depot, since="2999-01-01T00:00:00Z")["total"] == 0
    assert audit_rows(depot, since="2000-01-01T00:00:00Z")["total"] == len(everything)
    assert audit_rows(depot, since="2000-01-01T00:00:00+00:00", action="auth.login")["total"] == 3

    # pages
    page1 = audit_rows(depot, page=1, page_size=3)
    page2 = audit_rows(depot, page=2, page_size=3)
    page3 = audit_rows(depot, page=3, page_size=3)
    assert (page1["total"], page1["page"], page1["page_size"]) == (len(everything), 1, 3)
    assert (page2["page"], page3["page"]) == (2, 3)
    assert [r["id"] for r in page1["items"] + page2["items"] + page3["items"]] == ids
    assert audit_rows(depot, page=9, page_size=3)["items"] == []
    for query in ("page=0", "page_size=0", "page_size=201", "page=one"):
        bad = depot.client.get("/admin/audit?" + query, headers=h)
        assert bad.status_code == 400 and error_of(bad)["code"] == "INVALID_QUERY", query
    bad_since = depot.client.get("/admin/audit?since=yesterday", headers=h)
    assert bad_since.status_code == 400 and error_of(bad_since)["code"] == "INVALID_QUERY"


# --- what the audit log says changed ---------------------------------------------------------------------------

def test_a_user_update_is_audited_with_before_and_after_and_never_a_password(depot):
    h = admin(depot)
    assert depot.client.post("/admin/users", headers=h, json={"username": "fay", "password": "fay-password-123",
                                                              "scopes": ["read"]}).status_code == 201
    changed = depot.client.patch("/admin/users/fay", headers=dict(h, **{"X-Request-Id": "fay-up"}),
                                 json={"scopes": ["read", "write"], "status": "disabled",
                                       "password": "fay-new-password-1"})
    assert changed.status_code == 200, changed.get_data()
    row = the_row(depot, action="admin.users.update", request_id="fay-up")
    assert row["detail"] == {"before": {"scopes": ["read"], "status": "active"},
                             "after": {"scopes": ["read", "write"], "status": "disabled"},
                             "password_changed": True}
    scopes_only = depot.client.patch("/admin/users/fay", headers=dict(h, **{"X-Request-Id": "fay-scopes"}),
                                     json={"scopes": ["read"]})
    assert scopes_only.status_code == 200
    row = the_row(depot, action="admin.users.update", request_id="fay-scopes")
    assert row["detail"]["before"]["scopes"] == ["read", "write"] and row["detail"]["after"]["scopes"] == ["read"]
    assert row["detail"]["password_changed"] is False
    created = the_row(depot, action="admin.users.create", target="fay")
    assert created["detail"] == {"after": {"scopes": ["read"], "status": "active"}}
    assert depot.client.delete("/admin/users/fay", headers=h).status_code == 200
    deleted = the_row(depot, action="admin.users.delete", target="fay")
    assert deleted["detail"] == {"before": {"scopes": ["read"], "status": "disabled"}}
    text = json.dumps(all_audit(depot))
    assert "password-1" not in text and "bcrypt" not in text and "$2b$" not in text


def test_gc_is_audited_with_whether_it_was_a_dry_run(depot):
    h = admin(depot)
    for dry_run, request_id in ((True, "gc-dry"), (False, "gc-real")):
        collected = depot.client.post("/admin/gc", json={"dry_run": dry_run},
                                      headers=dict(h, **{"X-Request-Id": request_id}))
        assert collected.status_code == 200, collected.get_data()
        row = the_row(depot, action="admin.gc", request_id=request_id)
        assert row["detail"]["dry_run"] is dry_run and row["detail"]["removed"] == 0
        assert row["target"].startswith("dry run: ") is dry_run


def test_every_action_taken_with_an_api_token_names_the_token(depot):
    session = bearer(login(depot, "admin", ADMIN_PASSWORD).get_json()["token"])
    made = depot.client.post("/auth/tokens", headers=session,
                             json={"name": "robot", "scopes": ["admin", "read", "write"]})
    assert made.status_code == 201
    token_id, robot = made.get_json()["id"], bearer(made.get_json()["token"])
    actions = [("admin.users.create", depot.client.post("/admin/users", headers=robot, json={
                   "username": "gus", "password": "gus-password-123"})),
               ("admin.users.update", depot.client.patch("/admin/users/gus", headers=robot,
                                                         json={"status": "disabled"})),
               ("admin.gc", depot.client.post("/admin/gc", headers=robot, json={"dry_run": True})),
               ("route.publish_artifact_blob", depot.client.put("/v1/acme/robot/1.0.0/x/blob", data=b"r",
                                                                headers=robot)),
               ("admin.tokens.list", depot.client.get("/admin/users/gus/tokens", headers=robot)),  # denied
               ("token.create", depot.client.post("/auth/tokens", headers=robot,
                                                  json={"name": "child", "scopes": ["read"]}))]  # denied
    for action, response in actions:
        row = the_row(depot, action=action, request_id=response.headers["X-Request-Id"])
        assert row["detail"]["token_id"] == token_id, (action, row)
    by_session = depot.client.post("/admin/gc", headers=session, json={"dry_run": True})
    row = the_row(depot, action="admin.gc", request_id=by_session.headers["X-Request-Id"])
    assert "token_id" not in row["detail"]


def test_a_rollback_to_a_version_no_integer_column_holds_is_404(depot):
    """Found by the OpenAPI fuzzer: a version past 2**63 reached SQLite as an overflow, a 500."""
    for version in (74019705784372740176740352, 2**31, 0, -1):
        response = depot.client.post("/admin/schema/rollback", json={"version": version}, headers=admin(depot))
        assert response.status_code == 404, (version, response.get_data(as_text=True))
        assert error_of(response)["code"] == "SCHEMA_VERSION_NOT_FOUND"
