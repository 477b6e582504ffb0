"""GET /openapi.json: an OpenAPI 3.1 document generated from the compiled routes; GET /docs renders it."""
from openapi_spec_validator import validate

from tests.test_ops import route, step, with_routes


def test_document_validates_and_covers_every_route(make_depot, project_schema):
    depot = make_depot(project_schema)
    response = depot.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    operations = {op["operationId"]: (path, method) for path, ops in spec["paths"].items()
                  for method, op in ops.items()}
    for declared in project_schema["api"]["routes"]:
        assert operations[declared["id"]] == (declared["path"], declared["method"].lower())


def test_path_parameters_carry_the_entity_patterns(make_depot, project_schema):
    spec = make_depot(project_schema).client.get("/openapi.json").get_json()
    params = spec["paths"]["/v1/{namespace}/{name}/latest"]["get"]["parameters"]
    assert {p["name"]: p["schema"]["pattern"] for p in params} == {
        "namespace": "^[a-z0-9][a-z0-9._-]{0,127}$", "name": "^[a-z0-9][a-z0-9._-]{0,127}$"}


def test_request_bodies_responses_and_security(make_depot, project_schema):
    spec = make_depot(project_schema).client.get("/openapi.json").get_json()
    tag = spec["paths"]["/v1/{namespace}/{name}/tags/{tag}"]["put"]
    body = tag["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["version", "variant"]
    assert {"200", "404", "409", "401", "403"} <= set(tag["responses"])
    assert tag["security"] == [{"bearer": []}] and tag["x-required-scopes"] == ["write"]
    publish = spec["paths"]["/v1/{namespace}/{name}/{version}/{variant}/blob"]["put"]
    assert "application/octet-stream" in publish["requestBody"]["content"]
    assert {p["name"] for p in publish["parameters"] if p["in"] == "header"} >= {"X-Depot-Description"}
    versions = spec["paths"]["/v1/{namespace}/{name}/versions"]["get"]
    query = {p["name"]: p["schema"] for p in versions["parameters"] if p["in"] == "query"}
    assert query["page_size"]["maximum"] == 200 and query["page"]["default"] == 1
    fetch = spec["paths"]["/v1/{namespace}/{name}/{version}/{variant}/blob"]["get"]
    assert "application/octet-stream" in fetch["responses"]["200"]["content"]
    assert fetch["responses"]["410"]["description"] == "GONE"


def test_document_follows_schema_changes(make_depot, project_schema):
    schema = with_routes(project_schema, route("ping", "GET", "/ping", step("respond.json", body={"pong": True})))
    spec = make_depot(schema).client.get("/openapi.json").get_json()
    validate(spec)
    assert spec["paths"]["/ping"]["get"]["operationId"] == "ping"
    assert "security" not in spec["paths"]["/ping"]["get"]


def test_docs_page_renders_for_a_browser(make_depot, project_schema):
    page = make_depot(project_schema).client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "/openapi.json" in text and "/v1/{namespace}/{name}/latest" in text and "<script" not in text
