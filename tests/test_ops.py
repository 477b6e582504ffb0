"""Every op of the vocabulary, run through real routes over HTTP against real stores."""
import copy
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.engine.opspec import REGISTRY
from app.stores.state import kv_key
from app.tools.testing import ManualClock


def with_routes(schema, *routes, **changes):
    schema = copy.deepcopy(schema)
    schema["api"]["routes"].extend(routes)
    for path, value in changes.items():
        node = schema
        *parents, last = path.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return schema


def route(route_id, method, path, *steps, tags=()):
    return {"id": route_id, "method": method, "path": path, "tags": list(tags), "pipeline": list(steps)}


def step(op, **args):
    return {"op": op, "args": args}


READ = step("auth.require_scopes", scopes=["read"])
WRITE = step("auth.require_scopes", scopes=["write"])
PATH = [step("parse.path", entity="artifact"), step("normalize.entity", entity="artifact"),
        step("validate.entity", entity="artifact")]


def test_vocabulary_is_the_project_schemas_allowed_ops(project_schema, reference_schema):
    assert set(REGISTRY) == set(project_schema["ops"]["allowed"])
    assert set(reference_schema["ops"]["allowed"]) <= set(REGISTRY)
    for decl in REGISTRY.values():
        assert decl.summary and callable(decl.fn)


# --- auth ---------------------------------------------------------------------------------------------------

def test_auth_require_scopes(ref_depot):
    url = "/v1/acme/pkg/latest"
    assert ref_depot.client.get(url).status_code == 401
    assert ref_depot.client.get(url).headers["WWW-Authenticate"] == "Bearer"
    publish = ref_depot.publish("acme", "pkg", "1.0.0", "x", b"a", scopes=["read"])
    assert publish.status_code == 403 and publish.get_json()["error"]["code"] == "FORBIDDEN"
    assert ref_depot.publish("acme", "pkg", "1.0.0", "x", b"a", scopes=["admin"]).status_code == 201
    assert ref_depot.client.get(url, headers=ref_depot.headers(["admin"])).status_code == 200


def test_login_issues_a_working_token(ref_depot):
    from tests.conftest import ADMIN_PASSWORD
    bad = ref_depot.client.post("/auth/login", json={"username": "admin", "password": "wrong"})
    assert bad.status_code == 401 and bad.get_json()["error"]["code"] == "INVALID_CREDENTIALS"
    good = ref_depot.client.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    token = good.get_json()["token"]
    published = ref_depot.client.put("/v1/a/b/1.0.0/c/blob", data=b"x", headers={"Authorization": "Bearer " + token})
    assert published.status_code == 201


# --- parse / normalize / validate ---------------------------------------------------------------------------

def test_parse_path_normalize_and_validate(ref_depot):
    assert ref_depot.publish(" ACME ", "My_Pkg", "1.0.0", "Linux", b"z").status_code == 201
    meta = json.loads(ref_depot.service.engine.state.get(kv_key("meta", "artifact/acme/my-pkg/1.0.0/linux")))
    assert (meta["namespace"], meta["name"], meta["variant"]) == ("acme", "my-pkg", "linux")
    bad = ref_depot.publish("-acme", "pkg", "1.0.0", "x", b"z")
    assert bad.status_code == 400
    assert bad.get_json()["error"] == {"code": "INVALID_FIELD", "field": "namespace",
                                       "message": "namespace must match ^[a-z0-9][a-z0-9._-]{0,127}$"}
    assert ref_depot.publish("acme", "pkg", "1.0", "x", b"z").get_json()["error"]["code"] == "INVALID_VERSION"
    pre = ref_depot.publish("acme", "pkg", "1.0.0-rc.1", "x", b"z")
    assert pre.get_json()["error"]["code"] == "PRERELEASE_NOT_ALLOWED"


def test_parse_query_typed_and_bounded(make_depot, project_schema):
    schema = with_routes(project_schema, route(
        "echo_query", "GET", "/echo",
        step("parse.query", fields={"page": {"type": "integer", "default": 1, "minimum": 1, "maximum": 9},
                                    "q": {"type": "string", "required": True}}, out="query"),
        step("respond.json", body={"page": "{page}", "q": "{q}", "all": "$query"})))
    client = make_depot(schema).client
    assert client.get("/echo?q=x").get_json() == {"page": 1, "q": "x", "all": {"q": "x"}}
    assert client.get("/echo?q=x&page=3").get_json()["page"] == 3
    for query, field in (("page=3", "q"), ("q=x&page=0", "page"), ("q=x&page=two", "page")):
        error = client.get("/echo?" + query).get_json()["error"]
        assert error["code"] == "INVALID_QUERY" and error["field"] == field


def test_parse_headers_refuses_a_dropped_header_it_would_have_read(make_depot, project_schema):
    schema = with_routes(project_schema, route(
        "headers", "GET", "/headers", step("parse.headers", fields={"note": "X-Note_Field"},
                                           prefixes={"labels": "X-Depot-Label-"}),
        step("respond.json", body={"labels": "$labels"})))
    client = make_depot(schema).client

    def get(*dropped):
        return client.get("/headers", headers={"X-Depot-Label-Os": "linux"},
                          environ_overrides={"depot.dropped_headers": dropped})
    assert get().get_json() == {"labels": {"os": "linux"}}
    assert get("X_Unrelated", "X-Depot-Label_").get_json() == {"labels": {"os": "linux"}}  # nothing it reads
    for dropped in ("x-depot-label-build_id", "X-NOTE_FIELD"):
        response = get("X_Unrelated", dropped)
        error = response.get_json()["error"]
        assert response.status_code == 400 and error["code"] == "INVALID_HEADER" and error["field"] == dropped


def test_parse_json_and_validate_json_schema(ref_depot):
    url = "/v1/acme/pkg/tags/stable"
    h = ref_depot.headers()
    assert ref_depot.client.put(url, data=b"{not json", headers=h).get_json()["error"]["code"] == "INVALID_JSON"
    assert ref_depot.client.put(url, data=b"", headers=h).get_json()["error"]["code"] == "INVALID_JSON"
    missing = ref_depot.client.put(url, json={"target_version": "1.0.0"}, headers=h).get_json()["error"]
    assert missing["code"] == "SCHEMA_VALIDATION" and missing["field"] == "target_variant"
    wrong_type = ref_depot.client.put(url, json={"target_version": 1, "target_variant": "x"}, headers=h)
    assert wrong_type.get_json()["error"]["field"] == "target_version"


def test_validate_json_schema_by_storage_schema_name(make_depot, project_schema):
    schema = with_routes(project_schema, route(
        "check_tag_doc", "POST", "/check", step("parse.json", out="doc"),
        step("validate.json_schema", schema="TagMapV1", value="$doc"),
        step("respond.json", body={"valid": True})))
    client = make_depot(schema).client
    error = client.post("/check", json={"namespace": "a"}).get_json()["error"]
    assert error["code"] == "SCHEMA_VALIDATION" and error["field"] == "name"
    doc = {"namespace": "a", "name": "b", "tag": "t", "version": "1.0.0", "variant": "x", "updated_at": "now"}
    assert client.post("/check", json=doc).get_json() == {"valid": True}


def test_parse_json_is_bounded(make_depot, reference_schema):
    reference_schema["ops"]["limits"]["max_json_bytes"] = 64
    depot = make_depot(reference_schema)
    response = depot.client.put("/v1/acme/pkg/tags/stable", headers=depot.headers(),
                                json={"target_version": "1.0.0", "target_variant": "x" * 100})
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "JSON_TOO_LARGE"


# --- transactions and kv ------------------------------------------------------------------------------------

def _doc_routes(schema):
    return with_routes(
        schema,
        route("put_note", "PUT", "/notes/{namespace}/{name}", WRITE, *PATH, step("parse.json", out="body"),
              step("txn.begin"),
              step("kv.put", doc="tag_map", key="tag/{namespace}/{name}/note",
                   value={"namespace": "{namespace}", "name": "{name}", "tag": "note", "version": "$body.target",
                          "variant": "x", "updated_at": "now"}),
              step("txn.abort", when={"equals": ["$body.abort", True]}),
              step("respond.json", when={"equals": ["$body.abort", True]}, status=200, body={"aborted": True}),
              step("txn.commit"),
              step("respond.json", status=201, body={"ok": True})),
        route("get_note", "GET", "/notes/{namespace}/{name}", READ, *PATH,
              step("kv.get", doc="tag_map", key="tag/{namespace}/{name}/note", out="note"),
              step("respond.error", when={"is_null": "$note"}, status=404, code="NOT_FOUND", message="no note"),
              step("respond.json", body="$note")),
        route("delete_note", "DELETE", "/notes/{namespace}/{name}", WRITE, *PATH,
              step("txn.begin"), step("kv.delete", doc="tag_map", key="tag/{namespace}/{name}/note"),
              step("txn.commit"), step("respond.json", status=204, body=None)))


def test_kv_put_get_delete_and_txn_abort(make_depot, project_schema):
    depot = make_depot(_doc_routes(project_schema))
    client, h = depot.client, depot.headers()
    assert client.get("/notes/a/b", headers=h).status_code == 404
    assert client.put("/notes/a/b", json={"target": "t1"}, headers=h).status_code == 201
    assert client.get("/notes/a/b", headers=h).get_json()["version"] == "t1"
    assert client.put("/notes/a/b", json={"target": "t2", "abort": True}, headers=h).get_json() == {"aborted": True}
    assert client.get("/notes/a/b", headers=h).get_json()["version"] == "t1"
    assert client.delete("/notes/a/b", headers=h).status_code == 204
    assert client.get("/notes/a/b", headers=h).status_code == 404


def test_kv_put_validates_against_the_document_schema(make_depot, project_schema):
    depot = make_depot(_doc_routes(project_schema))
    response = depot.client.put("/notes/a/b", json={"target": 42}, headers=depot.headers())
    error = response.get_json()["error"]
    assert response.status_code == 400 and error["code"] == "DOCUMENT_INVALID" and error["field"] == "version"
    assert depot.client.get("/notes/a/b", headers=depot.headers()).status_code == 404


def test_kv_value_size_is_bounded(make_depot, project_schema):
    schema = _doc_routes(project_schema)
    schema["ops"]["limits"]["max_kv_value_bytes"] = 200
    depot = make_depot(schema)
    response = depot.client.put("/notes/a/b", json={"target": "x" * 300}, headers=depot.headers())
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "VALUE_TOO_LARGE"


def test_kv_cas_put_if_absent(ref_depot):
    assert ref_depot.publish("a", "b", "1.0.0", "x", b"first").status_code == 201
    second = ref_depot.publish("a", "b", "1.0.0", "x", b"second")
    assert second.status_code == 409
    fetched = ref_depot.client.get("/v1/a/b/1.0.0/x/blob", headers=ref_depot.headers())
    assert fetched.data == b"first"


def test_txn_read_validation_detects_a_concurrent_change(make_depot, project_schema):
    depot = make_depot(project_schema)
    engine = depot.service.engine
    key = kv_key("meta", "tag/a/b/t")
    txn = engine.state.transaction()
    assert txn.kv_get(key) is None
    engine.state.write([(key, b'{"x":1}')])
    txn.kv_put(key, b'{"x":2}')
    with pytest.raises(Exception) as raised:
        txn.commit()
    assert getattr(raised.value, "status", None) == 409
    assert engine.state.get(key) == b'{"x":1}'


# --- blob ---------------------------------------------------------------------------------------------------

def test_blob_put_get_verify_digest(ref_depot):
    data = b"blob bytes"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    wrong = "sha256:" + "0" * 64
    mismatch = ref_depot.client.put("/v1/a/b/1.0.0/x/blob?digest=" + wrong, data=data, headers=ref_depot.headers())
    assert mismatch.status_code == 400 and mismatch.get_json()["error"]["code"] == "DIGEST_MISMATCH"
    assert ref_depot.client.get("/v1/a/b/latest", headers=ref_depot.headers()).status_code == 404
    assert ref_depot.service.engine.blob_store("primary").locate(digest) is None
    ok = ref_depot.client.put("/v1/a/b/1.0.0/x/blob?digest=" + digest, data=data, headers=ref_depot.headers())
    assert ok.status_code == 201 and ok.get_json()["digest"] == digest
    blob = ref_depot.service.engine.blob_store("primary").locate(digest)
    assert blob.size == len(data) and blob.path.endswith("sha256/%s/%s/%s" % (digest[7:9], digest[9:11], digest[7:]))
    assert open(blob.path, "rb").read() == data


def test_blob_get_missing_blob_is_404(ref_depot):
    assert ref_depot.publish("a", "b", "1.0.0", "x", b"gone soon").status_code == 201
    blob = ref_depot.service.engine.blob_store("primary").locate("sha256:" + hashlib.sha256(b"gone soon").hexdigest())
    import os
    os.unlink(blob.path)
    response = ref_depot.client.get("/v1/a/b/1.0.0/x/blob", headers=ref_depot.headers())
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "BLOB_NOT_FOUND"


def test_respond_bytes_names_and_dates_the_download_as_its_arguments_say(make_depot, project_schema):
    schema = with_routes(project_schema, route(
        "named", "GET", "/named/{namespace}/{name}/{version}/{variant}", READ, *PATH,
        step("parse.query", fields={"at": {"type": "string"}}),
        step("kv.get", doc="artifact_meta", key="artifact/{namespace}/{name}/{version}/{variant}", out="meta"),
        step("blob.get", store="primary", digest="$meta.blob_digest", out="blob"),
        step("respond.bytes", body="$blob", filename="r\u00e9sum\u00e9 of {name}.txt", last_modified="{at}")))
    depot = make_depot(schema)
    assert depot.publish("a", "b", "1.0.0", "x", b"named bytes").status_code == 201
    response = depot.client.get("/named/a/b/1.0.0/x?at=2020-01-02T03:04:05Z", headers=depot.headers())
    assert response.status_code == 200 and response.data == b"named bytes"
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"r_sum_ of b.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20of%20b.txt")
    assert response.headers["Last-Modified"] == "Thu, 02 Jan 2020 03:04:05 GMT"
    bad = depot.client.get("/named/a/b/1.0.0/x?at=yesterday", headers=depot.headers())
    assert bad.status_code == 500 and bad.get_json()["error"]["code"] == "INVALID_TIMESTAMP"


# --- index --------------------------------------------------------------------------------------------------

def test_index_upsert_query_delete(make_depot, project_schema):
    schema = with_routes(
        project_schema,
        route("versions", "GET", "/versions/{namespace}/{name}", READ, *PATH,
              step("parse.query", fields={"limit": {"type": "integer", "default": 100},
                                          "offset": {"type": "integer", "default": 0}}),
              step("index.query", index="artifact_versions", key={"namespace": "{namespace}", "name": "{name}"},
                   limit="{limit}", offset="{offset}", out="rows"),
              step("respond.json", body={"versions": "$rows"})),
        route("unlist", "DELETE", "/versions/{namespace}/{name}/{version}/{variant}", WRITE, *PATH,
              step("txn.begin"),
              step("index.delete", index="artifact_versions", key={"namespace": "{namespace}", "name": "{name}"},
                   value={"version": "{version}", "variant": "{variant}"}),
              step("txn.commit"), step("respond.json", body={"ok": True})))
    depot = make_depot(schema)
    for version in ("1.2.0", "1.10.0", "1.9.0", "0.1.0"):
        assert depot.publish("a", "b", version, "x", version.encode()).status_code == 201
    rows = depot.client.get("/versions/a/b", headers=depot.headers()).get_json()["versions"]
    assert [r["version"] for r in rows] == ["1.10.0", "1.9.0", "1.2.0", "0.1.0"]
    page = depot.client.get("/versions/a/b?limit=2&offset=1", headers=depot.headers()).get_json()["versions"]
    assert [r["version"] for r in page] == ["1.9.0", "1.2.0"]
    assert depot.client.delete("/versions/a/b/1.10.0/x", headers=depot.headers()).status_code == 200
    rows = depot.client.get("/versions/a/b", headers=depot.headers()).get_json()["versions"]
    assert [r["version"] for r in rows] == ["1.9.0", "1.2.0", "0.1.0"]
    assert depot.client.get("/versions/a/b?limit=5000", headers=depot.headers()).status_code == 400


def test_index_unique_key_rejects_a_second_row(make_depot, project_schema):
    from app.errors import DepotError
    engine = make_depot(project_schema).service.engine
    tags = engine.compiled.definitions["index"]["tags"]
    txn = engine.state.transaction()
    txn.index_upsert(tags, {"namespace": "a", "name": "b", "tag": "t", "target_key": "k1"})
    txn.commit()
    txn = engine.state.transaction()
    txn.index_upsert(tags, {"namespace": "a", "name": "b", "tag": "t", "target_key": "k2"})
    txn.commit()  # the same row (same tag) moves
    rows = list(engine.indexes.rows(tags.keys[0], ["a", "b"]))
    assert [r["target_key"] for r in rows] == ["k2"]
    assert isinstance(DepotError("X", 409, "m"), Exception)


# --- cache --------------------------------------------------------------------------------------------------

def test_cache_get_put_hits_after_first_fetch(ref_depot):
    assert ref_depot.publish("a", "b", "1.0.0", "x", b"cached bytes").status_code == 201
    cache = ref_depot.service.engine.cache
    assert cache.get("response", "blob_resp/a/b/1.0.0/x") == (False, None)
    first = ref_depot.client.get("/v1/a/b/1.0.0/x/blob", headers=ref_depot.headers())
    hit, value = cache.get("response", "blob_resp/a/b/1.0.0/x")
    assert hit and value["headers"]["ETag"] == first.headers["ETag"]
    second = ref_depot.client.get("/v1/a/b/1.0.0/x/blob", headers=ref_depot.headers())
    assert second.data == first.data == b"cached bytes" and second.headers["ETag"] == first.headers["ETag"]


def test_cache_entries_expire_and_respect_max_entry_bytes(make_depot, project_schema):
    schema = copy.deepcopy(project_schema)
    schema["caching"]["response_cache"]["max_entry_bytes"] = 100
    cache = make_depot(schema).service.engine.cache
    assert cache.put("response", "small", {"v": 1}, ttl_seconds=60)
    assert not cache.put("response", "big", {"v": "x" * 200}, ttl_seconds=60)
    assert cache.get("response", "big") == (False, None)
    cache.put("response", "expired", {"v": 1}, ttl_seconds=-1)
    assert cache.get("response", "expired") == (False, None)
    assert cache.get("response", "small") == (True, {"v": 1})


# --- proxy --------------------------------------------------------------------------------------------------

class _Upstream(BaseHTTPRequestHandler):
    calls = []
    fail_first = 0

    def do_GET(self):
        _Upstream.calls.append(self.path)
        if _Upstream.fail_first > 0:
            _Upstream.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        if "missing" in self.path:
            self.send_response(404)
            self.end_headers()
            return
        body = ("upstream:" + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Depot-Digest", "sha256:" + hashlib.sha256(body).hexdigest())
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Upstream.calls, _Upstream.fail_first = [], 0
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_proxy_fetch_caches_upstream_artifact(make_depot, project_schema, upstream):
    project_schema["upstreams"]["originA"]["base_url"] = upstream
    project_schema["upstreams"]["originA"]["retry"] = {"max_attempts": 3, "backoff_ms": 1}
    depot = make_depot(project_schema)
    _Upstream.fail_first = 1  # one 503, then success: retried
    url = "/v1/proxy/up/pkg/1.0.0/x/blob"
    first = depot.client.get(url, headers=depot.headers(["read"]))
    assert first.status_code == 200 and first.data == b"upstream:/v1/up/pkg/1.0.0/x/blob"
    assert _Upstream.calls == ["/v1/up/pkg/1.0.0/x/blob"] * 2
    again = depot.client.get(url, headers=depot.headers(["read"]))
    assert again.status_code == 307
    events = [json.loads(v) for _, v in depot.service.engine.state.scan(b"kmeta\x00eventlog/")]
    assert [e["type"] for e in events] == ["artifact.cached"]
    missing = depot.client.get("/v1/proxy/up/missing/1.0.0/x/blob", headers=depot.headers(["read"]))
    assert missing.status_code == 502 and missing.get_json()["error"]["code"] == "UPSTREAM_ERROR"


def test_proxy_fetch_unreachable_upstream_is_502(make_depot, project_schema):
    project_schema["upstreams"]["originA"]["base_url"] = "http://127.0.0.1:9"
    project_schema["upstreams"]["originA"]["retry"] = {"max_attempts": 2, "backoff_ms": 1}
    depot = make_depot(project_schema)
    response = depot.client.get("/v1/proxy/a/b/1.0.0/x/blob", headers=depot.headers(["read"]))
    assert response.status_code == 502


def test_proxy_disabled_is_404(make_depot, project_schema):
    project_schema["features"]["proxy_enabled"] = False
    depot = make_depot(project_schema)
    response = depot.client.get("/v1/proxy/a/b/1.0.0/x/blob", headers=depot.headers(["read"]))
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "PROXY_DISABLED"


def test_reference_proxy_put_without_verify_is_aborted(make_depot, reference_schema, upstream):
    reference_schema["upstreams"]["originA"]["base_url"] = upstream
    depot = make_depot(reference_schema)
    response = depot.client.get("/v1/proxy/a/b/1.0.0/x/blob", headers=depot.headers(["read"]))
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "RUNTIME_CHECK_FAILED"
    assert depot.service.engine.state.get(kv_key("meta", "artifact/a/b/1.0.0/x")) is None


# --- events -------------------------------------------------------------------------------------------------

def test_emit_event_is_durable_and_validated(ref_depot):
    assert ref_depot.publish("a", "b", "1.0.0", "x", b"e").status_code == 201
    events = [json.loads(v) for _, v in ref_depot.service.engine.state.scan(b"kmeta\x00eventlog/")]
    assert len(events) == 1
    event = events[0]
    assert event["type"] == "artifact.published" and event["seq"] == 1 and len(event["event_id"]) == 32
    assert event["payload"]["blob_size"] == 1 and event["payload"]["by"] == "tester"


def test_emit_event_rejects_payload_failing_its_schema(make_depot, project_schema):
    schema = with_routes(project_schema, route(
        "bad_event", "POST", "/bad-event", WRITE,
        step("emit.event", type="artifact.published", payload={"namespace": "a"}),
        step("respond.json", body={"ok": True})))
    schema["validation"]["runtime_checks"] = []
    depot = make_depot(schema)
    response = depot.client.post("/bad-event", headers=depot.headers())
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "EVENT_INVALID"
    assert list(depot.service.engine.state.scan(b"kmeta\x00eventlog/")) == []


def test_replayed_events_apply_through_apply_pipelines(make_depot, project_schema):
    source = make_depot(project_schema, "source")
    assert source.publish("a", "b", "1.0.0", "x", b"r").status_code == 201
    tagged = source.client.put("/v1/a/b/tags/stable", headers=source.headers(),
                               json={"version": "1.0.0", "variant": "x"})
    assert tagged.status_code == 200
    replica = make_depot(project_schema, "replica")
    for _, raw in source.service.engine.state.scan(b"kmeta\x00eventlog/"):
        replica.service.engine.apply_event(json.loads(raw))
    state = replica.service.engine.state
    assert json.loads(state.get(kv_key("meta", "artifact/a/b/1.0.0/x")))["blob_size"] == 1
    tag = json.loads(state.get(kv_key("meta", "tag/a/b/stable")))
    digest = "sha256:" + hashlib.sha256(b"r").hexdigest()
    assert (tag["version"], tag["variant"], tag["blob_digest"]) == ("1.0.0", "x", digest)


# --- respond / time / string --------------------------------------------------------------------------------

def test_respond_redirect_error_json_time_and_string_format(make_depot, project_schema):
    schema = with_routes(
        project_schema,
        route("fmt", "GET", "/fmt/{namespace}/{name}", *PATH, step("time.now_iso8601", out="now"),
              step("string.format", template="{namespace}/{name}@$now", out="label"),
              step("respond.json", status=202, headers={"X-Label": "$label"}, body={"label": "$label", "now": "$now"})),
        route("go", "GET", "/go/{namespace}", *PATH[:1],
              step("respond.redirect", status=308, location="/v1/{namespace}")),
        route("teapot", "GET", "/teapot", step("respond.error", status=418, code="TEAPOT", message="short and stout",
                                                field="spout")))
    client = make_depot(schema).client
    response = client.get("/fmt/A/b")
    body = response.get_json()
    assert response.status_code == 202 and response.headers["X-Label"] == body["label"]
    assert body["label"] == "a/b@" + body["now"] and body["now"].endswith("Z") and "T" in body["now"]
    from datetime import datetime
    assert datetime.fromisoformat(body["now"].replace("Z", "+00:00")).tzinfo is not None
    redirect = client.get("/go/acme")
    assert redirect.status_code == 308 and redirect.headers["Location"].endswith("/v1/acme")
    teapot = client.get("/teapot")
    assert teapot.status_code == 418
    assert teapot.get_json() == {"error": {"code": "TEAPOT", "message": "short and stout", "field": "spout"}}


def test_string_format_always_gives_a_string(make_depot, project_schema):
    schema = with_routes(project_schema, route(
        "fmt", "GET", "/fmt", step("parse.query", fields={"note": {"type": "string"}, "n": {"type": "integer"}}),
        step("string.format", template="{note?}", out="note"), step("string.format", template="{n?}", out="n"),
        step("respond.json", body={"note": "$note", "n": "$n"})))
    client = make_depot(schema).client
    assert client.get("/fmt").get_json() == {"note": "", "n": ""}  # absent optional: nothing, never "null"
    assert client.get("/fmt?note=hi&n=7").get_json() == {"note": "hi", "n": "7"}


def test_publishing_without_a_description_stores_an_empty_one(make_depot, project_schema):
    depot = make_depot(project_schema)
    assert depot.publish("a", "b", "1.0.0", "x", b"bytes").status_code == 201
    meta = depot.client.get("/v1/a/b/1.0.0/x", headers=depot.headers()).get_json()
    assert meta["description"] == "" and meta["labels"] == {}


# --- limits -------------------------------------------------------------------------------------------------

def test_io_limit_is_enforced(make_depot, reference_schema):
    reference_schema["ops"]["limits"]["max_io_ops_per_request"] = 1
    depot = make_depot(reference_schema)
    response = depot.client.get("/v1/a/b/1.0.0/x/blob", headers=depot.headers())
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "IO_LIMIT_EXCEEDED"


class ChargingBody(io.BytesIO):
    """A request body whose every read spends ``ns`` by the CPU budget's clock (a ManualClock)."""

    def __init__(self, data, clock, ns):
        super().__init__(data)
        self.clock, self.ns = clock, ns

    def read(self, size=-1):
        self.clock.advance(self.ns)
        return super().read(size)

    def readinto(self, buffer):
        self.clock.advance(self.ns)
        return super().readinto(buffer)


def charged_put(depot, path, data, clock, ns):
    return depot.client.put(path, input_stream=ChargingBody(data, clock, ns), headers=depot.headers(
        **{"Content-Length": str(len(data)), "Content-Type": "application/json"}))


def budget_routes(schema):
    return with_routes(schema, route(
        "charged_json", "PUT", "/charged", WRITE, step("parse.json", out="body"),
        step("kv.get", doc="tag_map", key="tag/a/b/c", out="found"), step("respond.json", body={"ok": True})),
        ops__limits__max_cpu_ms_per_request=20)


def test_cpu_limit_is_enforced(make_depot, project_schema):
    clock = ManualClock()
    depot = make_depot(budget_routes(project_schema), cpu_clock=clock)
    assert charged_put(depot, "/charged", b'{"a": 1}', clock, 1_000_000).get_json() == {"ok": True}
    response = charged_put(depot, "/charged", b'{"a": 1}', clock, 25_000_000)  # parsing JSON is charged
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "CPU_LIMIT_EXCEEDED"


def test_streaming_is_not_charged_to_the_cpu_limit(make_depot, project_schema):
    clock = ManualClock()
    depot = make_depot(budget_routes(project_schema), cpu_clock=clock)
    data = b"\x5a" * (3 * 1024 * 1024)  # every read 25 ms by the clock, against a 20 ms budget
    response = charged_put(depot, "/v1/a/b/1.0.0/x/blob", data, clock, 25_000_000)
    assert response.status_code == 201, response.data


def test_the_test_depots_cpu_clock_stands_still(make_depot, project_schema):
    """No test depends on machine speed: a depot's budget is never spent unless its test spends it."""
    schema = with_routes(project_schema, ops__limits__max_cpu_ms_per_request=0)
    depot = make_depot(schema)
    assert depot.publish("a", "b", "1.0.0", "x", b"\x01" * 4096).status_code == 201
    assert depot.client.get("/v1/a/b/latest", headers=depot.headers()).status_code == 200


def test_depot_cpu_budget_off_stops_the_served_clock(monkeypatch):
    from app.engine.budget import stopped_clock
    from app.tools.cli import _cpu_clock
    monkeypatch.setenv("DEPOT_CPU_BUDGET", "off")
    assert _cpu_clock() is stopped_clock and stopped_clock() == stopped_clock()
    monkeypatch.delenv("DEPOT_CPU_BUDGET")
    assert _cpu_clock() is None  # the thread's CPU clock


def test_scope_steps_a_policy_already_enforces_leave_the_plan_but_others_stay(make_depot, project_schema):
    schema = with_routes(project_schema,
                         route("needs_write", "GET", "/needs-write", step("auth.require_scopes", scopes=["write"]),
                               step("respond.json", body={"ok": True}), tags=("public",)))
    depot = make_depot(schema)
    routes = {r.id: r for r in depot.service.engine.compiled.routes}
    assert [fn.__name__ for fn, *_ in routes["resolve_latest"].pipeline.plan][0] != "auth_require_scopes"
    assert [fn.__name__ for fn, *_ in routes["needs_write"].pipeline.plan][0] == "auth_require_scopes"
    def bearer(scopes, sub):
        return {"Authorization": "Bearer " + depot.token(scopes, sub)}
    assert depot.client.get("/needs-write", headers=bearer(["read"], "r")).status_code == 403
    assert depot.client.get("/needs-write", headers=bearer(["write"], "w")).status_code == 403
    assert depot.client.get("/needs-write", headers=bearer(["read", "write"], "rw")).status_code == 200
