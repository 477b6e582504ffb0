"""One consistent API: one schema digest everywhere, key order kept across schema swaps, an identical schema
upload is no new version, one list envelope with validated paging, one vocabulary for artifact fields, and CLI
commands that refuse what is not a Depot data dir.

Real stores in temporary dirs, the Flask test client, and `python -m app` in child processes.
"""
import copy
import json
import os
import subprocess
import sys

import pytest
import requests

from app.tools.testing import LocalDepot
from tests.conftest import ROOT, ServerProcess


def admin(depot, sub="boss"):
    return {"Authorization": "Bearer " + depot.token(["admin", "read", "write"], sub)}


def hello_route(route_id="hello"):
    return {"id": route_id, "method": "GET", "path": "/v1/{namespace}/{name}/%s" % route_id, "tags": [],
            "pipeline": [{"op": "parse.path", "args": {"entity": "artifact"}},
                         {"op": "respond.json", "args": {"body": {"hello": "{name}"}}}]}


def active(depot):
    response = depot.client.get("/admin/schema", headers=admin(depot))
    assert response.status_code == 200, response.get_data()
    return response.get_json()


@pytest.fixture
def depot(make_depot, project_schema):
    return make_depot(project_schema)


# --- the schema digest, key order, identical uploads ----------------------------------------------------------

def digests(depot):
    """The schema digest as /health, /openapi.json and /admin/schema show it."""
    health = depot.client.get("/health").get_json()["schema_sha256"]
    openapi = depot.client.get("/openapi.json").get_json()["info"]["x-schema-sha256"]
    return health, openapi, active(depot)["sha256"]


def test_one_schema_digest_in_health_openapi_and_admin_schema(depot, project_schema):
    first = digests(depot)
    assert len(set(first)) == 1 and len(first[0]) == 64
    changed = copy.deepcopy(project_schema)
    changed["api"]["routes"].append(hello_route())
    assert depot.client.post("/admin/schema", json=changed, headers=admin(depot)).status_code == 201
    second = digests(depot)
    assert len(set(second)) == 1 and second[0] != first[0]
    depot.restart()
    assert digests(depot) == second


def test_an_identical_schema_upload_is_not_a_new_version(depot, project_schema):
    before = active(depot)
    reordered = dict(reversed(list(copy.deepcopy(project_schema).items())))  # the same schema, keys reordered
    for doc in (project_schema, reordered):
        response = depot.client.post("/admin/schema", json=doc, headers=admin(depot))
        assert response.status_code == 200, response.get_data()
        body = response.get_json()
        assert body["unchanged"] is True and body["version"] == before["version"]
        assert body["sha256"] == before["sha256"]
    rollback = depot.client.post("/admin/schema/rollback", json={"version": before["version"]},
                                 headers=admin(depot))
    assert rollback.status_code == 200 and rollback.get_json()["unchanged"] is True
    listed = depot.client.get("/admin/schema/versions", headers=admin(depot)).get_json()
    assert listed["total"] == 1
    changed = copy.deepcopy(project_schema)
    changed["api"]["routes"].append(hello_route())
    created = depot.client.post("/admin/schema", json=changed, headers=admin(depot))
    assert created.status_code == 201 and created.get_json()["unchanged"] is False
    assert created.get_json()["version"] == before["version"] + 1


def latest_keys(depot):
    response = depot.client.get("/v1/acme/order/latest", headers=depot.headers())
    assert response.status_code == 200, response.get_data()
    return list(response.get_json())


def test_response_keys_keep_the_schemas_order_across_a_swap_a_restart_and_a_rollback(depot):
    assert depot.publish("acme", "order", "1.0.0", "x", b"bytes").status_code == 201
    before = latest_keys(depot)
    assert before == ["namespace", "name", "version", "variant", "blob_digest", "blob_size"]
    first = active(depot)
    doc = first["schema"]  # as the admin API hands it out: edited and posted back, as `routes add --url` does
    assert list(doc) == list(json.load(open(os.path.join(ROOT, "schema.json"))))
    doc["api"]["routes"].append(hello_route())
    # as a client sends it (the test client's json= would sort the keys)
    posted = depot.client.post("/admin/schema", data=json.dumps(doc), content_type="application/json",
                               headers=admin(depot))
    assert posted.status_code == 201
    assert latest_keys(depot) == before
    depot.restart()
    assert latest_keys(depot) == before
    rollback = depot.client.post("/admin/schema/rollback", json={"version": first["version"]},
                                 headers=admin(depot))
    assert rollback.status_code == 201
    assert latest_keys(depot) == before


# --- one list envelope ----------------------------------------------------------------------------------------

LISTS = ["/auth/tokens", "/admin/users", "/admin/users/boss/tokens", "/admin/audit", "/admin/schema/versions",
         "/v1", "/v1/acme", "/v1/search", "/v1/acme/listed/versions", "/v1/acme/listed/tags"]
BAD_PAGES = [({"page": "0"}, "page"), ({"page": "x"}, "page"), ({"page": "10000001"}, "page"),
             ({"page_size": "0"}, "page_size"), ({"page_size": "201"}, "page_size"),
             ({"page_size": "1.5"}, "page_size")]


@pytest.mark.parametrize("path", LISTS)
def test_every_list_answers_one_envelope_and_validates_its_paging(depot, path):
    assert depot.publish("acme", "listed", "1.0.0", "x", b"listed").status_code == 201
    headers = admin(depot)
    assert depot.client.put("/v1/acme/listed/tags/stable", headers=headers,
                            json={"version": "1.0.0", "variant": "x"}).status_code == 200
    search = {"q": "list"} if path == "/v1/search" else {}
    for name in ("one", "two", "three"):  # at least three of everything the lists show
        assert depot.client.post("/auth/tokens", headers=headers,
                                 json={"name": name, "scopes": ["read"]}).status_code == 201
    full = depot.client.get(path, headers=headers, query_string=search)
    assert full.status_code == 200, full.get_data()
    body = full.get_json()
    # index-backed listings (those that grow with the repository) add `next`, a cursor costing the same however deep
    assert list(body) in (["items", "total", "page", "page_size"], ["items", "total", "page", "page_size", "next"])
    assert (body["page"], body["page_size"]) == (1, 50) and body["total"] == len(body["items"]) >= 1
    second = depot.client.get(path, headers=headers, query_string=dict(search, page=2, page_size=1)).get_json()
    assert (second["page"], second["page_size"], second["total"]) == (2, 1, body["total"])
    assert second["items"] == body["items"][1:2]
    if "next" in body:
        first = depot.client.get(path, headers=headers, query_string=dict(search, page_size=1)).get_json()
        assert body["next"] is None and (first["next"] is None) == (second["items"] == [])
        if first["next"] is not None:
            after = dict(search, page_size=1, after=first["next"])
            assert depot.client.get(path, headers=headers, query_string=after).get_json()["items"] == second["items"]
    for params, field in BAD_PAGES:
        refused = depot.client.get(path, headers=headers, query_string=dict(search, **params))
        assert refused.status_code == 400, (params, refused.get_data())
        error = refused.get_json()["error"]
        assert (error["code"], error["field"]) == ("INVALID_QUERY", field), (params, error)
        assert error["message"].startswith("query parameter %r " % field), error


# --- one vocabulary -------------------------------------------------------------------------------------------

ARTIFACT = ["namespace", "name", "version", "variant", "blob_digest", "blob_size"]


def test_artifact_fields_have_one_name_in_every_view(depot):
    published = depot.publish("acme", "vocab", "1.0.0", "x", b"vocabulary", headers={"X-Depot-Description": "d"})
    assert published.status_code == 201
    assert list(published.get_json()) == ["ok", "blob_digest", "blob_size"]
    tagged = depot.client.put("/v1/acme/vocab/tags/stable", json={"version": "1.0.0", "variant": "x"},
                              headers=depot.headers())
    assert tagged.status_code == 200, tagged.get_data()
    read = depot.headers()
    views = {"metadata": depot.client.get("/v1/acme/vocab/1.0.0/x", headers=read).get_json(),
             "version row": depot.client.get("/v1/acme/vocab/versions", headers=read).get_json()["items"][0],
             "latest": depot.client.get("/v1/acme/vocab/latest", headers=read).get_json()}
    expected = {"namespace": "acme", "name": "vocab", "version": "1.0.0", "variant": "x",
                "blob_digest": published.get_json()["blob_digest"], "blob_size": len(b"vocabulary")}
    for what, view in views.items():
        assert {key: view.get(key) for key in ARTIFACT} == expected, what
        assert list(view)[:len(ARTIFACT)] == ARTIFACT, what
    assert list(views["metadata"]) == list(views["version row"])  # the same fields, in the same order
    tag_views = [depot.client.get("/v1/acme/vocab/tags/stable", headers=read).get_json(),
                 depot.client.get("/v1/acme/vocab/tags", headers=read).get_json()["items"][0]]
    for view in tag_views:
        assert list(view) == ["namespace", "name", "tag", "version", "variant", "blob_digest", "updated_at",
                              "updated_by"]
        assert {key: view[key] for key in ("version", "variant", "blob_digest")} == {
            key: expected[key] for key in ("version", "variant", "blob_digest")}


# --- commands on a data dir ---------------------------------------------------------------------------------------

ROUTE_TEMPLATE = str(ROOT / "templates" / "route_template.json")
DATA_DIR_COMMANDS = [("gc",), ("gc", "--dry-run"), ("routes", "add", ROUTE_TEMPLATE), ("add", ROUTE_TEMPLATE),
                     ("db", "upgrade"), ("admin", "create", "someone", "--scopes", "read"),
                     ("admin", "reset-password", "admin")]


def depot_cli(*args, cwd=ROOT):
    """`python -m app ARGS` in ``cwd``; a new password comes from the environment."""
    env = {k: v for k, v in os.environ.items() if k != "DEPOT_DATABASE_URL"}
    env.update(PYTHONPATH=str(ROOT), DEPOT_BCRYPT_ROUNDS="4", DEPOT_NEW_PASSWORD="a-new-password-123")
    return subprocess.run([sys.executable, "-m", "app", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def assert_one_line_refusal(result, *phrases):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


@pytest.mark.parametrize("command", DATA_DIR_COMMANDS, ids=" ".join)
def test_commands_refuse_what_is_not_a_data_dir_and_create_nothing(tmp_path, command):
    missing, empty, other = tmp_path / "missing", tmp_path / "empty", tmp_path / "other"
    empty.mkdir()
    other.mkdir()
    (other / "notes.txt").write_text("not a data dir")
    for target in (missing, empty, other):
        result = depot_cli(*command, "--data-dir", target)
        assert_one_line_refusal(result, "%s is not a Depot data dir" % target)
    assert not missing.exists() and list(empty.iterdir()) == [] and list(other.iterdir()) == [other / "notes.txt"]
    default = depot_cli(*command, cwd=tmp_path)  # the default data dir, ./data, is not made either
    assert_one_line_refusal(default, "./data is not a Depot data dir")
    assert not (tmp_path / "data").exists()


def test_commands_say_when_a_running_server_holds_the_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir)
    try:
        assert_one_line_refusal(depot_cli("gc", "--data-dir", data_dir),
                                "data dir %s is in use by a running server: use POST /admin/gc" % data_dir)
        for command in (("routes", "add", ROUTE_TEMPLATE), ("add", ROUTE_TEMPLATE)):
            assert_one_line_refusal(depot_cli(*command, "--data-dir", data_dir), "in use by a running server",
                                    "--url")
        assert_one_line_refusal(depot_cli("db", "upgrade", "--data-dir", data_dir), "in use by a running server")
        second = depot_cli("serve", "--data-dir", data_dir, "--port", "0")
        assert_one_line_refusal(second, "in use by a running server")
        # account recovery needs only SQL: it works beside the server, which sees the new account
        created = depot_cli("admin", "create", "rescue", "--scopes", "read,admin", "--data-dir", data_dir)
        assert created.returncode == 0, created.stderr
        login = requests.post(server.url + "/auth/login", json={"username": "rescue",
                                                               "password": "a-new-password-123"}, timeout=30)
        assert login.status_code == 200, login.text
        served = requests.get(server.url + "/admin/schema", timeout=30,
                              headers={"Authorization": "Bearer " + login.json()["token"]}).json()
        assert served["version"] == 1  # the refused `routes add` stored nothing the server does not serve
    finally:
        server.stop()
    assert depot_cli("gc", "--dry-run", "--data-dir", data_dir).returncode == 0
    added = depot_cli("routes", "add", ROUTE_TEMPLATE, "--data-dir", data_dir)
    assert added.returncode == 0 and "schema version 2 is active" in added.stdout, added.stderr
    assert depot_cli("db", "upgrade", "--data-dir", data_dir).returncode == 0
    depot = LocalDepot(str(data_dir))
    try:
        rows, _ = depot.service.audit.query(actor="cli", action="admin.gc")
        assert [row["detail"]["dry_run"] for row in rows] == [True]
    finally:
        depot.close()


# --- serve --schema on a data dir that has an active schema -------------------------------------------------------

def start_line(server):
    return next(line for line in server.lines if line.startswith("Depot serving"))


def test_serve_names_the_version_it_serves_and_loads_a_file_only_when_asked(tmp_path, project_schema):
    from app.engine.compiler import schema_digest
    data_dir, schema_file = tmp_path / "data", tmp_path / "with-hello.json"
    changed = copy.deepcopy(project_schema)
    changed["api"]["routes"].append(hello_route())
    schema_file.write_text(json.dumps(changed, indent=2))
    ServerProcess(data_dir).stop()  # the data dir starts with the project's schema: version 1

    def serve(*args):
        server = ServerProcess(data_dir, args=args)
        try:
            hello = requests.get(server.url + "/v1/acme/x/hello", timeout=30).status_code
        finally:
            server.stop()
        return server, hello

    ignored, hello = serve("--schema", schema_file)
    assert hello == 404
    assert "schema version 1 (sha256 %s, the data dir's active schema)" % schema_digest(project_schema)[:12] \
        in start_line(ignored) and str(schema_file) not in start_line(ignored)
    assert "%s differs from the data dir's active schema (version 1), which is served" % schema_file \
        in ignored.output and "--load-schema" in ignored.output

    loaded, hello = serve("--schema", schema_file, "--load-schema")
    assert hello == 200
    assert "schema version 2 (sha256 %s, from %s)" % (schema_digest(changed)[:12], schema_file) \
        in start_line(loaded)
    for args in (("--schema", schema_file), ("--schema", schema_file, "--load-schema")):
        again, hello = serve(*args)  # the same file again: no note, no new version
        assert hello == 200 and "schema version 2 (" in start_line(again) and "differs" not in again.output
    plain, hello = serve()
    assert hello == 200 and "schema version 2 (sha256 %s, the data dir's active schema)" % (
        schema_digest(changed)[:12]) in start_line(plain) and "differs" not in plain.output
