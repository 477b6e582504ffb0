"""Filters, loops and the base URL in real routes over real stores: a PEP 691-style file list and a
packument-style object built from index rows, storage keys holding '/', and the OpenAPI description of both."""
import base64
import hashlib

from tests.test_ops import READ, WRITE, PATH, route, step, with_routes

FILES_PAGE = route(
    "files_page", "GET", "/pages/{namespace}/{name}", READ, *PATH,
    step("index.query", index="artifact_versions", using="by_name", key={"namespace": "{namespace}", "name": "{name}"},
         limit=100, out="rows"),
    step("respond.json", body={
        "meta": {"api-version": "1.0"},
        "name": "{name|pep503}",
        "files": {"$each": "$rows", "as": "row", "emit": {
            "filename": "{$row.name}-{$row.version}-{$row.variant}.bin",
            "url": "{request.base_url}/v1/{namespace}/{$row.name|urlquote}/{$row.version|urlquote}/"
                   "{$row.variant|urlquote}/blob",
            "hashes": {"sha256": "{$row.blob_digest:7:64}"},
            "integrity": "sha256-{$row.blob_digest:7:64|hex_to_base64}",
            "description": "{$row.description|default:none}"}},
        "versions": {"$each": "$rows", "as": "row", "key": "{$row.version}", "emit": {
            "name": "$row.name", "dist": {"shasum": "{$row.blob_digest:7:64}"}}}}))

LABELS = [
    route("put_label", "PUT", "/labels/{namespace}/{name}", WRITE, *PATH,
          step("parse.query", fields={"label": {"type": "string", "required": True}}),
          step("txn.begin"),
          step("kv.put", doc="tag_map", key="tag/{namespace}/{name}/{label|urlquote}",
               value={"namespace": "{namespace}", "name": "{name}", "tag": "{label}", "version": "1",
                      "variant": "x", "updated_at": "now"}),
          step("txn.commit"), step("respond.json", status=201, body={"key": "{label|urlquote}"})),
    route("get_label", "GET", "/labels/{namespace}/{name}", READ, *PATH,
          step("parse.query", fields={"label": {"type": "string", "required": True}}),
          step("kv.get", doc="tag_map", key="tag/{namespace}/{name}/{label|urlquote}", out="doc"),
          step("respond.error", when={"is_null": "$doc"}, status=404, code="NOT_FOUND", message="no label"),
          step("respond.json", body="$doc")),
    route("put_raw_label", "PUT", "/raw-labels/{namespace}/{name}", WRITE, *PATH,
          step("parse.query", fields={"label": {"type": "string", "required": True}}),
          step("kv.delete", doc="tag_map", key="tag/{namespace}/{name}/{label}"),
          step("respond.json", body={"ok": True}))]


def test_a_file_list_and_a_version_object_from_rows(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, FILES_PAGE))
    first, second = b"one", b"two"
    assert depot.publish("acme", "my_pkg", "1.0.0", "linux", first).status_code == 201
    assert depot.publish("acme", "my_pkg", "2.0.0", "any", second).status_code == 201
    response = depot.client.get("/pages/acme/my_pkg", headers=depot.headers(("read",)))
    assert response.status_code == 200, response.get_json()
    page = response.get_json()
    assert page["name"] == "my-pkg"  # normalize.entity made it my-pkg already; pep503 keeps it
    sha = {data: hashlib.sha256(data).hexdigest() for data in (first, second)}
    sri = {data: "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode() for data in (first, second)}
    assert page["files"] == [
        {"filename": "my-pkg-2.0.0-any.bin", "url": "http://localhost/v1/acme/my-pkg/2.0.0/any/blob",
         "hashes": {"sha256": sha[second]}, "integrity": sri[second], "description": ""},
        {"filename": "my-pkg-1.0.0-linux.bin", "url": "http://localhost/v1/acme/my-pkg/1.0.0/linux/blob",
         "hashes": {"sha256": sha[first]}, "integrity": sri[first], "description": ""}]
    assert page["versions"] == {"2.0.0": {"name": "my-pkg", "dist": {"shasum": sha[second]}},
                                "1.0.0": {"name": "my-pkg", "dist": {"shasum": sha[first]}}}
    # what the file list links to is what was published
    download = depot.client.get(page["files"][1]["url"].replace("http://localhost", ""),
                                headers=depot.headers(("read",)))
    assert download.status_code == 200 and download.data == first


def test_an_empty_file_list(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, FILES_PAGE))
    page = depot.client.get("/pages/acme/nothing", headers=depot.headers(("read",))).get_json()
    assert page["files"] == [] and page["versions"] == {}


def test_a_storage_key_holding_a_slash_through_urlquote(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, *LABELS))
    h = depot.headers()
    for label in ("library/ubuntu", "a b/c%2F", "plain"):
        put = depot.client.put("/labels/acme/x", query_string={"label": label}, headers=h)
        assert put.status_code == 201, put.get_json()
        got = depot.client.get("/labels/acme/x", query_string={"label": label}, headers=h)
        assert got.status_code == 200 and got.get_json()["tag"] == label
    # escaping keeps values apart: library/ubuntu and library%2Fubuntu are two keys
    assert depot.client.get("/labels/acme/x", query_string={"label": "library%2Fubuntu"}, headers=h).status_code == 404


def test_storage_keys_still_refuse_what_would_add_a_segment(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, *LABELS))
    h = depot.headers()
    for label in ("..", "."):
        response = depot.client.put("/labels/acme/x", query_string={"label": label}, headers=h)
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "INVALID_KEY_SEGMENT"
    raw = depot.client.put("/raw-labels/acme/x", query_string={"label": "a/b"}, headers=h)
    assert raw.status_code == 400
    assert raw.get_json()["error"] == {"code": "INVALID_KEY_SEGMENT", "field": "label",
                                       "message": "value for {label} is not a valid key segment"}


ECHO = route(
    "echo_numbers", "POST", "/echo", READ, step("parse.json", out="body"),
    step("validate.json_schema", value="$body", schema={"type": "object", "properties": {"items": {
        "type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}}}}),
    step("respond.json", body={"$each": "$body.items?", "as": "it", "key": "{$it.n}", "emit": "$it.n"}))


def test_a_loop_over_the_request_body(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, ECHO))
    response = depot.client.post("/echo", json={"items": [{"n": 1}, {"n": 2}]}, headers=depot.headers(("read",)))
    assert response.get_json() == {"1": 1, "2": 2}
    assert depot.client.post("/echo", json={}, headers=depot.headers(("read",))).get_json() == {}


def test_openapi_describes_loops_and_filter_errors(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, FILES_PAGE, ECHO, *LABELS))
    document = depot.client.get("/openapi.json").get_json()
    operation = document["paths"]["/pages/{namespace}/{name}"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    files = schema["properties"]["files"]
    assert files["type"] == "array"
    assert files["items"]["properties"]["url"] == {"type": "string"}
    assert files["items"]["properties"]["hashes"]["properties"]["sha256"] == {"type": "string"}
    versions = schema["properties"]["versions"]
    assert versions["type"] == "object"
    assert versions["additionalProperties"]["properties"]["dist"]["properties"]["shasum"] == {"type": "string"}
    echo = document["paths"]["/echo"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert echo == {"type": "object", "additionalProperties": {"type": "integer"}}  # $it read as an item
    assert "INVALID_FILTER_INPUT" in str(operation["responses"]["400"])  # hex_to_base64 may refuse its input
    assert "INVALID_FILTER_INPUT" not in str(document["paths"]["/labels/{namespace}/{name}"]["get"]["responses"])
