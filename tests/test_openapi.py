"""GET /openapi.json: an OpenAPI 3.1 document of the whole API (the compiled routes and Depot's own /auth, /admin,
/health, /openapi.json and /docs views); GET /docs: Swagger UI over it, served by Depot itself."""
import re

import jsonschema
import pytest
from openapi_spec_validator import validate

from app.http import openapi
from tests.conftest import ADMIN_PASSWORD
from tests.test_ops import PATH, READ, route, step, with_routes

FETCH = "/v1/{namespace}/{name}/{version}/{variant}/blob"
PUBLISH = FETCH


def spec_of(depot):
    response = depot.client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def operations(spec):
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def parameters(op, where):
    return {p["name"]: p for p in op["parameters"] if p["in"] == where}


def conforms(spec, schema, value):
    """Validate ``value`` against a schema of the document (its $refs resolved against the document)."""
    jsonschema.Draft202012Validator(dict(schema, components=spec["components"])).validate(value)


@pytest.fixture
def depot(make_depot, project_schema):
    return make_depot(project_schema)


def test_document_validates_and_covers_every_route(depot, project_schema):
    spec = spec_of(depot)
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    ids = {op["operationId"]: (path, method) for path, method, op in operations(spec)}
    for declared in project_schema["api"]["routes"]:
        assert ids[declared["id"]] == (declared["path"], declared["method"].lower())
    assert len(ids) == len(operations(spec)), "operationIds are unique"


def test_every_rule_of_the_url_map_is_documented(depot):
    spec = spec_of(depot)
    routed = set()
    for rule in depot.app.routing_map().iter_rules():
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        path = path.rstrip("/") or "/"
        routed |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path.rstrip("/") or "/", method) for path, method, _ in operations(spec)}
    assert routed - documented == set()
    assert {("/auth/login", "post"), ("/admin/users/{username}", "patch"), ("/health", "get"),
            ("/docs", "get"), ("/openapi.json", "get"), ("/admin/replication/apply", "post")} <= routed


def test_an_undocumented_view_is_refused(depot):
    """A view added without @documented cannot slip out of the document unnoticed."""
    depot.app.add_url_rule("/extra", "extra", lambda: "")
    with pytest.raises(LookupError, match="/extra"):
        openapi.document(depot.service.engine.compiled, depot.app)


def test_auth_and_admin_operations(depot):
    spec = spec_of(depot)
    paths = spec["paths"]
    login = paths["/auth/login"]["post"]
    assert "security" not in login
    assert login["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Credentials"}
    assert {"200", "400", "401", "413", "429"} <= set(login["responses"])
    assert "RATE_LIMITED" in login["responses"]["429"]["x-error-codes"]
    tokens = paths["/auth/tokens"]["post"]
    assert tokens["security"] == [{"bearer": []}]
    assert "LOGIN_SESSION_REQUIRED" in tokens["responses"]["403"]["x-error-codes"]
    assert tokens["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/IssuedToken")
    users = paths["/admin/users"]["get"]
    assert users["x-required-scopes"] == ["admin"]
    assert {"page", "page_size"} <= set(parameters(users, "query"))
    assert {"401", "403"} <= set(users["responses"])
    patch = paths["/admin/users/{username}"]["patch"]
    assert "LAST_ADMIN" in patch["responses"]["409"]["x-error-codes"]
    version = parameters(paths["/admin/schema/versions/{version}"]["get"], "path")["version"]
    assert version["schema"] == {"type": "integer", "minimum": 0, "maximum": 2147483647}
    assert "422" in paths["/admin/schema"]["post"]["responses"]
    assert paths["/admin/gc"]["post"]["requestBody"]["required"] is False
    assert {"200", "503"} <= set(paths["/health"]["get"]["responses"])
    assert "text/html" in paths["/docs"]["get"]["responses"]["200"]["content"]


def test_the_list_envelope_and_the_error_envelope_are_shared(depot):
    schemas = spec_of(depot)["components"]["schemas"]
    for page in ("UserPage", "SchemaVersionPage", "AuditPage"):
        assert set(schemas[page]["required"]) == {"items", "total", "page", "page_size"}
    assert schemas["Error"]["properties"]["error"]["required"] == ["code", "message"]
    for path, method, op in operations(spec_of(depot)):
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")) and "content" in answer and path != "/health":
                schema = answer["content"]["application/json"]["schema"]
                if path.startswith(("/npm/", "/v2/")):  # a pack's own error format (error_body), or the envelope
                    schema = schema["anyOf"][1]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_every_operation_answers_with_described_bodies(depot):
    for path, method, op in operations(spec_of(depot)):
        successes = [s for s in op["responses"] if s[0] in "23"]
        assert successes, (method, path)
        for status, answer in op["responses"].items():
            assert answer["description"], (method, path, status)
            for media, content in answer.get("content", {}).items():
                assert content["schema"] not in ({}, None), (method, path, status, media)


def test_own_answers_conform_to_their_schemas(depot):
    """What /auth and /admin answer is what the document says (schemathesis checks this broadly too)."""
    spec = spec_of(depot)
    admin = {"Authorization": "Bearer " + depot.token(["admin"], "root")}
    login = depot.client.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    session = {"Authorization": "Bearer " + login.get_json()["token"]}
    calls = [("/auth/login", "post", login),
             ("/auth/tokens", "post", depot.client.post("/auth/tokens", json={"name": "ci", "scopes": ["read"]},
                                                         headers=session)),
             ("/auth/tokens", "get", depot.client.get("/auth/tokens", headers=session)),
             ("/auth/me", "get", depot.client.get("/auth/me", headers=session)),
             ("/admin/users", "get", depot.client.get("/admin/users", headers=admin)),
             ("/admin/schema/versions", "get", depot.client.get("/admin/schema/versions", headers=admin)),
             ("/admin/audit", "get", depot.client.get("/admin/audit", headers=admin)),
             ("/admin/gc", "post", depot.client.post("/admin/gc", json={"dry_run": True}, headers=admin)),
             ("/admin/replication/status", "get", depot.client.get("/admin/replication/status", headers=admin)),
             ("/admin/users", "get", depot.client.get("/admin/users")),
             ("/health", "get", depot.client.get("/health"))]
    for path, method, response in calls:
        answer = spec["paths"][path][method]["responses"][str(response.status_code)]
        conforms(spec, answer["content"]["application/json"]["schema"], response.get_json())


def test_the_download_route_documents_ranges_and_conditional_requests(depot):
    spec = spec_of(depot)
    fetch = spec["paths"][FETCH]["get"]
    assert {"200", "206", "304", "404", "410", "416"} <= set(fetch["responses"])
    assert "application/octet-stream" in fetch["responses"]["206"]["content"]
    assert "content" not in fetch["responses"]["304"]
    assert fetch["responses"]["416"]["x-error-codes"] == ["RANGE_NOT_SATISFIABLE"]
    assert {"Range", "If-None-Match", "If-Modified-Since", "If-Range"} <= set(parameters(fetch, "header"))
    replica = spec["paths"]["/admin/replication/blobs/{digest}"]["get"]
    assert {"200", "206", "304", "416"} <= set(replica["responses"])
    assert "Range" in parameters(replica, "header")


def test_publish_documents_conflicts_limits_digests_and_label_headers(depot):
    spec = spec_of(depot)
    publish = spec["paths"][PUBLISH]["put"]
    assert "CONFLICT" in publish["responses"]["409"]["x-error-codes"]
    assert {"BLOB_TOO_LARGE", "PAYLOAD_TOO_LARGE"} <= set(publish["responses"]["413"]["x-error-codes"])
    assert "Content-Digest" in parameters(publish, "header") and "digest" in parameters(publish, "query")
    proxied = spec["paths"]["/v1/proxy/{namespace}/{name}/{version}/{variant}/blob"]["get"]
    assert "Content-Digest" not in parameters(proxied, "header"), "its digest is the upstream's, not the client's"
    assert not [p["name"] for p in publish["parameters"] if "{" in p["name"] or "*" in p["name"]]
    [labels] = publish["x-header-pattern"]
    assert labels["pattern"] == "X-Depot-Label-*" and labels["collected"]["maxProperties"] == 32
    assert "X-Depot-Label-*" in publish["description"]
    created = publish["responses"]["201"]["content"]["application/json"]["schema"]
    assert created["properties"]["blob_digest"]["pattern"] == "^sha256:[0-9a-f]{64}$"
    assert created["properties"]["blob_size"]["type"] == "integer"


def test_statuses_follow_the_ops_of_each_pipeline(make_depot, project_schema):
    """A route's statuses are what its steps declare: no respond.bytes, no 206; no kv.cas_put, no 409."""
    schema = with_routes(project_schema, route(
        "ping", "GET", "/ping", step("respond.json", body={"pong": True})), route(
        "meta", "GET", "/meta/{namespace}/{name}/{version}/{variant}", READ, *PATH,
        step("kv.get", doc="artifact_meta", out="meta"),
        step("respond.error", when={"is_null": "$meta"}, status=404, code="NOT_FOUND", message="none"),
        step("respond.json", when={"equals": ["$meta.deleted", True]}, status=404, body={"deleted": True}),
        step("respond.json", body={"found": "$meta.version", "size": "$meta.blob_size?", "at": "{namespace}/{name}"})))
    spec = spec_of(make_depot(schema))
    validate(spec)
    ping = spec["paths"]["/ping"]["get"]
    assert set(ping["responses"]) == {"200", "503"} and "security" not in ping
    assert ping["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "object", "required": ["pong"], "properties": {"pong": {"type": "boolean", "const": True}}}
    meta = spec["paths"]["/meta/{namespace}/{name}/{version}/{variant}"]["get"]
    assert {"206", "304", "409", "413"}.isdisjoint(meta["responses"])
    body = meta["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert body == {"found": {"type": "string"}, "size": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                    "at": {"type": "string"}}
    missing = meta["responses"]["404"]
    assert missing["x-error-codes"] == ["NOT_FOUND"]
    assert missing["content"]["application/json"]["schema"]["anyOf"][0] == {"$ref": "#/components/schemas/Error"}
    assert missing["content"]["application/json"]["schema"]["anyOf"][1]["required"] == ["deleted"]


def test_a_json_schema_with_its_own_definitions_keeps_the_document_valid(make_depot, project_schema):
    """A "$ref" inside a schema route's JSON Schema points into that schema, not into the OpenAPI document."""
    body = {"type": "object", "$defs": {"name": {"type": "string"}}, "properties": {"n": {"$ref": "#/$defs/name"}}}
    schema = with_routes(project_schema, route(
        "echo", "POST", "/echo", step("parse.json", out="body"), step("validate.json_schema", schema=body,
                                                                          value="$body"),
        step("respond.json", body={"n": "$body.n"})))
    spec = spec_of(make_depot(schema))
    validate(spec)
    request = spec["paths"]["/echo"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in str(request) and request["description"]


def test_a_disabled_route_is_documented_as_what_it_answers(make_depot, project_schema):
    spec = spec_of(make_depot(with_routes(project_schema, features__proxy_enabled=False)))
    validate(spec)
    proxy = spec["paths"]["/v1/proxy/{namespace}/{name}/{version}/{variant}/blob"]["get"]
    assert set(proxy["responses"]) == {"404"} and proxy["responses"]["404"]["x-error-codes"] == ["PROXY_DISABLED"]


def test_document_follows_schema_changes(make_depot, project_schema):
    schema = with_routes(project_schema, route("ping", "GET", "/ping", step("respond.json", body={"pong": True})))
    spec = spec_of(make_depot(schema))
    validate(spec)
    assert spec["paths"]["/ping"]["get"]["operationId"] == "ping"


def test_docs_page_is_swagger_ui_served_by_depot_itself(depot):
    page = depot.client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "SwaggerUIBundle" in text and '"url": "/openapi.json"' in text and '"validatorUrl": null' in text
    assert not re.search(r"https?:|//[a-z]", text), "the page names no other host"
    assets = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert len(assets) >= 4
    for url in assets:
        assert url.startswith("/docs/"), url
        assert depot.client.get(url).status_code == 200, url
    assert depot.client.get("/docs/").status_code == 200
    missing = depot.client.get("/docs/no-such-asset.js")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "NOT_FOUND"


def test_a_schema_change_that_changes_nothing_is_a_documented_200(depot):
    """Found by the fuzzer: a rollback to the version already served answers 200 unchanged."""
    spec = spec_of(depot)
    admin = {"Authorization": "Bearer " + depot.token(["admin"], "root")}
    response = depot.client.post("/admin/schema/rollback", json={"version": 1}, headers=admin)
    assert response.status_code == 200 and response.get_json()["unchanged"] is True
    for path in ("/admin/schema", "/admin/schema/rollback", "/admin/routes"):
        answer = spec["paths"][path]["post"]["responses"]["200"]
        conforms(spec, answer["content"]["application/json"]["schema"], response.get_json())
