"""Templates (templates/*.json) applied with `python -m app add` / `routes add`: to a schema file, to a data dir's
active schema and to a running server through its admin API. Real files, real processes, the Flask test client."""
import copy
import json
import re
import shutil
import subprocess
import sys

import pytest
import requests

from app.engine.compiler import load_schema_file
from app.repository.service import Service
from tests.conftest import ADMIN_PASSWORD, ROOT, ServerProcess, load_json

TEMPLATES = ROOT / "templates"


def cli(*args):
    """Run `python -m app ARGS` in the project root; the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, "-m", "app", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def template(kind):
    return "templates/%s_template.json" % kind


@pytest.fixture
def schema_file(tmp_path):
    """A temporary copy of the project's schema.json."""
    path = tmp_path / "schema.json"
    shutil.copyfile(ROOT / "schema.json", path)
    shutil.copytree(ROOT / "packs", tmp_path / "packs")  # the packs it mounts, by paths relative to it
    return path


def route_ids(doc):
    return [route["id"] for route in doc["api"]["routes"]]


def route(doc, route_id):
    return next(r for r in doc["api"]["routes"] if r["id"] == route_id)


# --- every template kind, applied to a schema file ---------------------------------------------------------------

def _landed_route(before, after, route_id, path):
    assert route_ids(after) == route_ids(before) + [route_id]
    added = route(after, route_id)
    assert added["path"] == path and added["method"] == "GET" and added["pipeline"]
    assert "<<" not in json.dumps(added)


def _landed_entity(before, after):
    assert set(after["entities"]) - set(before["entities"]) == {"plugin"}
    assert set(after["entities"]["plugin"]["fields"]) == {"owner", "plugin", "version"}


def _landed_blob_store(before, after):
    stores = after["storage"]["blob_stores"]
    assert set(stores) - set(before["storage"]["blob_stores"]) == {"archive"}
    assert stores["archive"]["root"] == "blobs/archive"
    # a string that is exactly one placeholder takes the value's JSON type
    assert stores["archive"]["limits"]["max_blob_bytes"] == 104857600


def _landed_auth_scope(before, after):
    assert after["auth"]["scopes"] == before["auth"]["scopes"] + [{"name": "promote"}]


def _landed_upstream(before, after):
    assert set(after["upstreams"]) - set(before.get("upstreams", {})) == {"mirror"}
    assert after["upstreams"]["mirror"]["base_url"] == "https://mirror.example.org"


LANDED = {
    "route": lambda b, a: _landed_route(b, a, "package_info", "/v1/{namespace}/{name}/info"),
    "pipeline": lambda b, a: _landed_route(b, a, "packages_matching", "/v1/-/matching"),
    "entity": _landed_entity,
    "blob_store": _landed_blob_store,
    "auth_scope": _landed_auth_scope,
    "upstream": _landed_upstream,
}


@pytest.mark.parametrize("kind", sorted(LANDED))
def test_each_template_applies_to_a_schema_file_and_the_result_checks(kind, schema_file):
    before = load_json(schema_file)
    result = cli("add", template(kind), "--schema-file", schema_file)
    assert result.returncode == 0, result.stderr
    assert str(schema_file) in result.stdout
    after = load_json(schema_file)
    LANDED[kind](before, after)
    # nothing else changed
    section = {"route": "api", "pipeline": "api", "entity": "entities", "blob_store": "storage",
               "auth_scope": "auth", "upstream": "upstreams"}[kind]
    assert {k: v for k, v in after.items() if k != section} == {k: v for k, v in before.items() if k != section}
    check = cli("check", schema_file)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "WARNING" not in check.stdout  # a template holds no key the server ignores


def test_set_fills_placeholders(schema_file):
    result = cli("add", template("blob_store"), "--set", "store_name=attic", "--set", "max_blob_bytes=2048",
                 "--schema-file", schema_file)
    assert result.returncode == 0, result.stderr
    store = load_json(schema_file)["storage"]["blob_stores"]["attic"]
    assert store["root"] == "blobs/attic" and store["limits"]["max_blob_bytes"] == 2048


def test_set_with_an_unknown_placeholder_is_refused(schema_file):
    original = schema_file.read_bytes()
    result = cli("add", template("entity"), "--set", "no_such_placeholder=x", "--schema-file", schema_file)
    assert result.returncode == 1
    assert "unknown placeholder(s) no_such_placeholder" in result.stderr and "entity_name" in result.stderr
    assert schema_file.read_bytes() == original


@pytest.mark.parametrize("kind,message", [("entity", "entity 'plugin' already exists"),
                                          ("blob_store", "blob store 'archive' already exists"),
                                          ("upstream", "upstream 'mirror' already exists")])
def test_applying_a_named_piece_twice_is_refused_and_changes_nothing(kind, message, schema_file):
    assert cli("add", template(kind), "--schema-file", schema_file).returncode == 0
    once = schema_file.read_bytes()
    again = cli("add", template(kind), "--schema-file", schema_file)
    assert again.returncode == 1
    assert message in again.stderr
    assert schema_file.read_bytes() == once


def test_applying_a_route_twice_reports_the_duplicate_id_and_changes_nothing(schema_file):
    assert cli("add", template("route"), "--schema-file", schema_file).returncode == 0
    once = schema_file.read_bytes()
    again = cli("add", template("route"), "--schema-file", schema_file)
    assert again.returncode == 1
    assert "duplicate route id 'package_info'" in again.stderr
    assert "not added" in again.stderr
    assert schema_file.read_bytes() == once


def test_routes_add_refuses_a_template_that_is_not_a_route(schema_file):
    original = schema_file.read_bytes()
    result = cli("routes", "add", template("entity"), "--schema-file", schema_file)
    assert result.returncode == 1
    assert "is a entity template; this command takes route or pipeline" in result.stderr
    assert schema_file.read_bytes() == original


# --- the added routes answer -------------------------------------------------------------------------------------

def test_route_template_result_answers(schema_file, make_depot):
    assert cli("routes", "add", template("route"), "--schema-file", schema_file).returncode == 0
    depot = make_depot(load_schema_file(str(schema_file)))
    read = depot.headers(("read",))
    missing = depot.client.get("/v1/acme/hello-world/info", headers=read)
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "NOT_FOUND"
    assert "acme/hello-world" in missing.get_json()["error"]["message"]

    assert depot.publish("acme", "hello-world", "1.0.0", "linux-amd64", b"hello").status_code == 201
    found = depot.client.get("/v1/acme/hello-world/info", headers=read)
    assert found.status_code == 200, found.get_data(as_text=True)
    assert found.get_json()["namespace"] == "acme" and found.get_json()["name"] == "hello-world"
    # the route's own normalize/validate steps run: names are normalized before the lookup
    assert depot.client.get("/v1/ACME/hello-world/info", headers=read).status_code == 200
    # the public tag's read scope is enforced
    assert depot.client.get("/v1/acme/hello-world/info").status_code == 401


def test_pipeline_template_result_answers(schema_file, make_depot):
    assert cli("routes", "add", template("pipeline"), "--schema-file", schema_file).returncode == 0
    depot = make_depot(load_schema_file(str(schema_file)))
    for name in ("hello-world", "goodbye-world", "other"):
        assert depot.publish("acme", name, "1.0.0", "linux-amd64", b"x" + name.encode()).status_code == 201
    read = depot.headers(("read",))
    answer = depot.client.get("/v1/-/matching?q=world", headers=read)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["total"] == 2 and body["page"] == 1 and body["page_size"] == 50
    assert sorted(item["name"] for item in body["items"]) == ["goodbye-world", "hello-world"]
    paged = depot.client.get("/v1/-/matching?q=world&page_size=1&page=2", headers=read).get_json()
    assert paged["total"] == 2 and len(paged["items"]) == 1 and paged["page"] == 2
    assert depot.client.get("/v1/-/matching?q=nothing-like-it", headers=read).get_json()["total"] == 0
    assert depot.client.get("/v1/-/matching", headers=read).status_code == 400  # q is required


# --- a data dir's active schema ----------------------------------------------------------------------------------

def test_routes_add_to_a_data_dir_makes_a_new_active_version(tmp_path, project_schema, make_depot):
    data_dir = tmp_path / "data"
    bootstrap = Service(str(data_dir), schema=project_schema, announce=lambda *_: None)
    assert bootstrap.schemas.active().version == 1
    bootstrap.close()

    result = cli("routes", "add", template("route"), "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    assert "schema version 2 is active" in result.stdout

    depot = make_depot(project_schema, name="data")  # the same data dir: it serves the active version
    active = depot.service.schemas.active()
    assert active.version == 2 and active.created_by == "cli" and "package_info" in active.comment
    assert depot.service.schemas.get(1).active is False
    assert "package_info" in route_ids(depot.service.active_document())
    assert "package_info" not in route_ids(json.loads(depot.service.schemas.get(1).document))

    assert depot.publish("acme", "hello-world", "1.0.0", "linux-amd64", b"hello").status_code == 201
    found = depot.client.get("/v1/acme/hello-world/info", headers=depot.headers(("read",)))
    assert found.status_code == 200 and found.get_json()["name"] == "hello-world"


# --- a running server --------------------------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    """A running server and an admin token for it."""
    process = ServerProcess(tmp_path / "server-data", env={"DEPOT_ADMIN_PASSWORD": ADMIN_PASSWORD})
    try:
        login = requests.post(process.url + "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD},
                              timeout=30)
        assert login.status_code == 200, login.text
        yield process.url, login.json()["token"]
    finally:
        process.stop()


def test_routes_add_to_a_running_server_serves_the_route_at_once(server):
    url, token = server
    auth = {"Authorization": "Bearer " + token}
    assert requests.put(url + "/v1/acme/hello-world/1.0.0/linux-amd64/blob", data=b"hello", headers=auth,
                        timeout=30).status_code == 201
    before_version = requests.get(url + "/admin/schema", headers=auth, timeout=30).json()["version"]
    assert requests.get(url + "/v1/acme/hello-world/info2", headers=auth, timeout=30).status_code == 404

    result = cli("routes", "add", template("route"), "--set", "route_id=info2", "--set", "path=/v1/{namespace}/{name}/info2",
                 "--url", url, "--token", token)
    assert result.returncode == 0, result.stderr
    assert "added route info2: schema version %d is active and served" % (before_version + 1) in result.stdout

    answer = requests.get(url + "/v1/acme/hello-world/info2", headers=auth, timeout=30)  # same process, no restart
    assert answer.status_code == 200, answer.text
    assert answer.json()["namespace"] == "acme" and answer.json()["name"] == "hello-world"
    schema = requests.get(url + "/admin/schema", headers=auth, timeout=30).json()
    assert schema["version"] == before_version + 1
    assert route(schema["schema"], "info2")["path"] == "/v1/{namespace}/{name}/info2"


def test_a_broken_result_is_refused_by_the_running_server_with_its_findings(server):
    url, token = server
    auth = {"Authorization": "Bearer " + token}
    before = requests.get(url + "/admin/schema", headers=auth, timeout=30).json()

    result = cli("routes", "add", template("route"), "--set", "route_id=sneaky", "--set", "path=/admin/{namespace}/{name}",
                 "--url", url, "--token", token)
    assert result.returncode == 1
    assert "not added (422)" in result.stderr and "SCHEMA_INVALID" in result.stderr
    # the finding on the reserved path is printed, with its place
    assert "belong to Depot itself" in result.stderr
    assert re.search(r"api\.routes\[\d+\]\.path", result.stderr)

    after = requests.get(url + "/admin/schema", headers=auth, timeout=30).json()
    assert after["version"] == before["version"] and "sneaky" not in route_ids(after["schema"])


def test_undeclared_placeholder_is_refused_cleanly(tmp_path):
    from app.tools import templates as tpl
    template = {"$template": {"kind": "upstream", "placeholders": {}}, "name": "<<nope>>",
                "value": {"base_url": "https://x.example"}}
    with pytest.raises(tpl.TemplateError, match="undeclared placeholder"):
        tpl.instantiate(template, {})


def test_auth_scope_template_twice_is_refused(tmp_path):
    from app.tools import templates as tpl
    body = tpl.instantiate(tpl.load(str(ROOT / "templates" / "auth_scope_template.json")), {})
    doc, _ = tpl.apply({"auth": {"scopes": []}}, "auth_scope", body)
    with pytest.raises(tpl.TemplateError, match="already exists"):
        tpl.apply(doc, "auth_scope", body)


# --- routes that overlap ------------------------------------------------------------------------------------

def _route_errors(schema):
    from app.engine.compiler import compile_schema
    compiled, report = compile_schema(schema, "test")
    return compiled, [e for e in report.to_dict()["errors"]]


def test_a_route_hiding_another_routes_urls_is_refused(project_schema):
    """The old default path of the route template, /v1/info/{namespace}/{name}, would answer
    /v1/info/<name>/latest in place of the latest of package <name> in namespace 'info'."""
    schema = copy.deepcopy(project_schema)
    schema["api"]["routes"].append({"id": "package_info", "method": "GET", "path": "/v1/info/{namespace}/{name}",
                                    "tags": ["public"], "pipeline": [
                                        {"op": "parse.path", "args": {"entity": "artifact"}},
                                        {"op": "respond.json", "args": {"body": {"name": "{name}"}}}]})
    compiled, errors = _route_errors(schema)
    assert compiled is None
    hidden = {e["place"] for e in errors if "is hidden by GET /v1/info/{namespace}/{name}" in e["message"]}
    index = {r["id"]: i for i, r in enumerate(schema["api"]["routes"])}
    assert {"api.routes[%d].path" % index[i] for i in ("resolve_latest", "list_versions", "list_tags")} <= hidden
    assert all("namespace is 'info'" in e["message"] for e in errors if "is hidden" in e["message"])


def test_a_literal_segment_beside_a_parameter_needs_the_name_reserved(project_schema):
    """GET /v1/search matches before GET /v1/{namespace}: the schema reserves 'search' as a namespace."""
    schema = copy.deepcopy(project_schema)
    namespace = next(c for c in schema["entities"]["artifact"]["constraints"] if c["field"] == "namespace")
    assert namespace["reserved"] == ["search"]
    del namespace["reserved"]
    compiled, errors = _route_errors(schema)
    assert compiled is None
    [error] = [e for e in errors if "hidden" in e["message"]]
    assert "GET /v1/{namespace} is hidden by GET /v1/search" in error["message"]
    assert '{"field": "namespace", "reserved": ["search"]}' in error["message"]


def test_a_reserved_namespace_cannot_be_published_to(make_depot, project_schema):
    depot = make_depot(project_schema)
    response = depot.publish("search", "tool", "1.0.0", "linux", b"x")
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "namespace"
    assert "reserved" in response.get_json()["error"]["message"]
    assert depot.publish("SEARCH", "tool", "1.0.0", "linux", b"x").status_code == 400


def test_overlaps_the_entity_already_refuses_are_accepted(project_schema):
    """GET .../tags/{tag} beside GET .../{version}/{variant}: 'tags' is no semantic version, so no valid
    request is lost; with a versioning scheme that accepts it, the checker says so."""
    assert _route_errors(project_schema)[0] is not None
    schema = copy.deepcopy(project_schema)
    schema["entities"]["versioning"].update(scheme="opaque", ordering="lexical")
    compiled, errors = _route_errors(schema)
    assert any("when version is 'tags'" in e["message"] for e in errors), errors
