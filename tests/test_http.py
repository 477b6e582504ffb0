"""HTTP behaviour of the Flask layer over the reference schema: blob downloads (HEAD, Range, ETag), the JSON error
envelope for every failure, request ids, path-parameter hygiene, crashes and /health.

Every test runs real stores in a temporary data dir through the Flask test client.
"""
import copy
import hashlib
import json
import os
import re
import uuid
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from werkzeug.http import http_date, parse_date
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from app.http.responses import attachment
from app.engine.definitions import BlobStoreDef
from app.stores.blobs import FileBlobStore

BLOB = "/v1/acme/hello/1.0.0/linux-amd64/blob"
DATA = bytes(range(256)) * 40  # 10240 bytes, every byte value, so ranges are easy to check
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
ARTIFACT_PREFIX = b"kmeta\x00artifact/"
EVENT_PREFIX = b"kmeta\x00eventlog/"


# --- helpers ----------------------------------------------------------------------------------------------

def assert_error(response, status, code=None):
    """The response is the JSON error envelope with ``status`` (and ``code``); never HTML, never a traceback."""
    assert response.status_code == status, (response.status_code, response.data[:500])
    assert response.mimetype == "application/json", response.headers.get("Content-Type")
    raw = response.get_data()
    assert b"<html" not in raw.lower() and b"<!doctype" not in raw.lower()
    assert b"Traceback" not in raw and b'File "' not in raw
    body = json.loads(raw)
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) >= {"code", "message"}
    assert set(error) <= {"code", "message", "field"}
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    assert response.headers.get("X-Request-Id")
    return error


def artifact_keys(depot):
    return [key for key, _ in depot.service.engine.state.scan(ARTIFACT_PREFIX)]


def event_count(depot):
    return depot.service.engine.state.count(EVENT_PREFIX)


def small_limits_schema(reference_schema, **limits):
    schema = copy.deepcopy(reference_schema)
    for key, value in limits.items():
        if key == "max_blob_bytes":
            schema["storage"]["blob_stores"]["primary"]["limits"]["max_blob_bytes"] = value
        else:
            schema["ops"]["limits"][key] = value
    return schema


@pytest.fixture
def published(ref_depot):
    response = ref_depot.publish("acme", "hello", "1.0.0", "linux-amd64", DATA)
    assert response.status_code == 201, response.data
    assert response.get_json()["digest"] == DIGEST
    return ref_depot


# --- downloads --------------------------------------------------------------------------------------------

def test_head_gives_headers_and_no_body(published):
    response = published.client.head(BLOB, headers=published.headers(["read"]))
    assert response.status_code == 200
    assert response.get_data() == b""
    assert int(response.headers["Content-Length"]) == len(DATA)
    assert response.headers["ETag"] == '"%s"' % DIGEST
    assert response.headers.get("X-Request-Id")


def test_get_etag_is_the_quoted_digest_and_body_is_the_bytes(published):
    for _ in range(2):  # the second one is served from the response cache: same headers, same bytes
        response = published.client.get(BLOB, headers=published.headers(["read"]))
        assert response.status_code == 200
        assert response.get_data() == DATA
        assert response.headers["ETag"] == '"%s"' % DIGEST
        assert int(response.headers["Content-Length"]) == len(DATA)
        assert response.mimetype == "application/octet-stream"


def test_range_prefix_gives_206_with_content_range(published):
    response = published.client.get(BLOB, headers=published.headers(["read"], Range="bytes=0-4"))
    assert response.status_code == 206
    assert response.get_data() == DATA[0:5]
    assert response.headers["Content-Range"] == "bytes 0-4/%d" % len(DATA)
    assert int(response.headers["Content-Length"]) == 5


def test_range_in_the_middle(published):
    response = published.client.get(BLOB, headers=published.headers(["read"], Range="bytes=300-555"))
    assert response.status_code == 206
    assert response.get_data() == DATA[300:556]
    assert response.headers["Content-Range"] == "bytes 300-555/%d" % len(DATA)


def test_suffix_range_gives_the_last_bytes(published):
    response = published.client.get(BLOB, headers=published.headers(["read"], Range="bytes=-7"))
    assert response.status_code == 206
    assert response.get_data() == DATA[-7:]
    assert response.headers["Content-Range"] == "bytes %d-%d/%d" % (len(DATA) - 7, len(DATA) - 1, len(DATA))


def test_unsatisfiable_range_is_416_json_envelope(published):
    start = len(DATA) + 100
    response = published.client.get(BLOB, headers=published.headers(["read"], Range="bytes=%d-%d"
                                                                     % (start, start + 10)))
    assert_error(response, 416, "RANGE_NOT_SATISFIABLE")
    assert response.headers["Content-Range"] == "bytes */%d" % len(DATA)


def test_if_none_match_with_the_etag_gives_304(published):
    etag = published.client.get(BLOB, headers=published.headers(["read"])).headers["ETag"]
    assert etag == '"%s"' % DIGEST
    response = published.client.get(BLOB, headers=published.headers(["read"], **{"If-None-Match": etag}))
    assert response.status_code == 304
    assert response.get_data() == b""
    other = published.client.get(BLOB, headers=published.headers(["read"], **{"If-None-Match": '"sha256:%s"'
                                                                              % ("0" * 64)}))
    assert other.status_code == 200 and other.get_data() == DATA


def test_a_download_is_an_attachment_named_by_its_digest_and_dated_by_its_file_by_default(published):
    response = published.client.get(BLOB, headers=published.headers(["read"]))
    assert response.headers["Content-Disposition"] == 'attachment; filename="sha256-%s"' % DIGEST[7:]
    layout = BlobStoreDef("primary", {"kind": "filesystem"}).layout
    path = FileBlobStore("primary", os.path.join(published.data_dir, "data", "blobs"), layout).path_for(DIGEST[7:])
    modified = datetime.fromtimestamp(int(os.stat(path).st_mtime), timezone.utc)
    assert response.last_modified == modified


def test_if_modified_since_gives_304_unless_the_bytes_are_newer(published):
    read = published.headers(["read"])
    last_modified = published.client.get(BLOB, headers=read).headers["Last-Modified"]
    for since in (last_modified, http_date(datetime.now(timezone.utc) + timedelta(days=1))):
        response = published.client.get(BLOB, headers=dict(read, **{"If-Modified-Since": since}))
        assert response.status_code == 304 and response.get_data() == b"", since
    earlier = http_date(parse_date(last_modified) - timedelta(seconds=1))
    response = published.client.get(BLOB, headers=dict(read, **{"If-Modified-Since": earlier}))
    assert response.status_code == 200 and response.get_data() == DATA
    # If-None-Match decides when both are sent (RFC 9110 13.2.2)
    response = published.client.get(BLOB, headers=dict(read, **{"If-Modified-Since": last_modified,
                                                                "If-None-Match": '"sha256:%s"' % ("0" * 64)}))
    assert response.status_code == 200


@pytest.mark.parametrize("ranges", ["bytes=0-1,5-9", "bytes=0-1, %d-" % (len(DATA) + 5),
                                    "bytes=%d-,-3" % (len(DATA) + 5), "bytes=-0,0-0"])
def test_several_ranges_with_one_satisfiable_give_the_whole_body(published, ranges):
    response = published.client.get(BLOB, headers=published.headers(["read"], Range=ranges))
    assert response.status_code == 200 and response.get_data() == DATA
    assert "Content-Range" not in response.headers


@pytest.mark.parametrize("ranges", ["bytes=-0", "bytes=-0,-0", "bytes=%d-,%d-" % (len(DATA), len(DATA) + 9)])
def test_ranges_none_of_which_is_satisfiable_are_416(published, ranges):
    response = published.client.get(BLOB, headers=published.headers(["read"], Range=ranges))
    assert_error(response, 416, "RANGE_NOT_SATISFIABLE")
    assert response.headers["Content-Range"] == "bytes */%d" % len(DATA)


def test_a_range_in_a_unit_other_than_bytes_is_ignored(published):
    response = published.client.get(BLOB, headers=published.headers(["read"], Range="items=0-4"))
    assert response.status_code == 200 and response.get_data() == DATA


@pytest.mark.parametrize("name,header", [
    ("plain-1.0.0.tgz", 'attachment; filename="plain-1.0.0.tgz"'),
    ('na\u00efve "q".bin', 'attachment; filename="na_ve _q_.bin"; filename*=UTF-8\'\'na%C3%AFve%20%22q%22.bin'),
    ("../etc/pass\r\nwd", 'attachment; filename=".._etc_pass__wd"'),
    ("\u6587\u4ef6", 'attachment; filename="__"; filename*=UTF-8\'\'%E6%96%87%E4%BB%B6')])
def test_content_disposition_quotes_ascii_and_encodes_the_rest(name, header):
    assert attachment(name) == header


def test_fetch_of_a_missing_artifact_is_404_envelope(ref_depot):
    response = ref_depot.client.get("/v1/acme/nothing/1.0.0/x/blob", headers=ref_depot.headers(["read"]))
    assert_error(response, 404, "NOT_FOUND")


# --- the error envelope -----------------------------------------------------------------------------------

def test_unknown_path_is_404_envelope(ref_depot):
    for path in ("/nope", "/", "/v1", "/v2/acme/x/1.0.0/y/blob", "/v1/acme/x/1.0.0/y/blob/extra"):
        assert_error(ref_depot.client.get(path, headers=ref_depot.headers()), 404, "NOT_FOUND")


def test_wrong_method_is_405_envelope_with_allow(ref_depot):
    response = ref_depot.client.delete(BLOB, headers=ref_depot.headers())
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "PUT"} <= allowed
    assert "DELETE" not in allowed
    post = ref_depot.client.post("/v1/acme/hello/latest", headers=ref_depot.headers())
    assert_error(post, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in post.headers["Allow"]


@pytest.mark.parametrize("limit, code", [("max_request_body_bytes", "PAYLOAD_TOO_LARGE"),
                                         ("max_blob_bytes", "BLOB_TOO_LARGE")])
def test_a_body_over_a_size_limit_is_413_and_leaves_nothing(make_depot, reference_schema, limit, code):
    depot = make_depot(small_limits_schema(reference_schema, **{limit: 1024}))
    assert_error(depot.publish("acme", "big", "1.0.0", "x", b"z" * 1025), 413, code)
    assert artifact_keys(depot) == []
    assert depot.blob_files() == []
    assert depot.publish("acme", "big", "1.0.0", "x", b"z" * 1024).status_code == 201  # exactly the limit


def test_body_over_limit_without_content_length_is_413(make_depot, reference_schema):
    """A body framed without Content-Length (chunked) is cut off at the limit while streaming."""
    import io
    depot = make_depot(small_limits_schema(reference_schema, max_request_body_bytes=1024))
    environ = EnvironBuilder(path="/v1/acme/big/1.0.0/x/blob", method="PUT", headers=depot.headers(),
                             input_stream=io.BytesIO(b"z" * 5000)).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    response = depot.client.open(Request(environ))
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert artifact_keys(depot) == []
    assert depot.blob_files() == []


def test_malformed_json_to_set_tag_is_400_invalid_json(published):
    for body in (b"{not json", b"", b"   ", b'{"target_version": "1.0.0",'):
        response = published.client.put("/v1/acme/hello/tags/stable", data=body, content_type="application/json",
                                         headers=published.headers())
        assert_error(response, 400, "INVALID_JSON")
    assert published.service.engine.state.get(b"kmeta\x00tag/acme/hello/stable") is None


def test_json_schema_violation_names_the_field(published):
    response = published.client.put("/v1/acme/hello/tags/stable", json={"target_version": "1.0.0"},
                                    headers=published.headers())
    error = assert_error(response, 400)
    assert "target_variant" in json.dumps(error)


def test_json_over_max_json_bytes_is_413(make_depot, reference_schema):
    depot = make_depot(small_limits_schema(reference_schema, max_json_bytes=64))
    assert depot.publish("acme", "hello", "1.0.0", "x", b"abc").status_code == 201
    body = {"target_version": "1.0.0", "target_variant": "x", "padding": "p" * 200}
    response = depot.client.put("/v1/acme/hello/tags/stable", json=body, headers=depot.headers())
    assert_error(response, 413, "JSON_TOO_LARGE")
    assert depot.service.engine.state.get(b"kmeta\x00tag/acme/hello/stable") is None
    ok = depot.client.put("/v1/acme/hello/tags/stable", json={"target_version": "1.0.0", "target_variant": "x"},
                          headers=depot.headers())
    assert ok.status_code == 200


def test_missing_token_is_401(ref_depot):
    assert_error(ref_depot.client.put(BLOB, data=b"x"), 401, "UNAUTHENTICATED")
    assert_error(ref_depot.client.get(BLOB), 401, "UNAUTHENTICATED")
    assert artifact_keys(ref_depot) == [] and ref_depot.blob_files() == []


def test_malformed_authorization_header_is_401(ref_depot):
    for header in ("Basic dXNlcjpwdw==", "Bearer ", "Bearer not.a.jwt"):
        response = ref_depot.client.put(BLOB, data=b"x", headers={"Authorization": header})
        assert_error(response, 401)
    assert artifact_keys(ref_depot) == []


def test_token_without_the_scope_is_403(ref_depot):
    response = ref_depot.publish("acme", "hello", "1.0.0", "linux-amd64", DATA, scopes=["read"])
    error = assert_error(response, 403, "FORBIDDEN")
    assert "write" in error["message"]
    assert artifact_keys(ref_depot) == [] and ref_depot.blob_files() == []
    assert event_count(ref_depot) == 0


def _claims(scopes=("read", "write"), **override):
    now = datetime.now(timezone.utc)
    claims = {"sub": "mallory", "scopes": list(scopes), "iat": now, "exp": now + timedelta(hours=1),
              "iss": "depot", "aud": "depot", "jti": uuid.uuid4().hex}
    claims.update(override)
    return claims


def test_forged_token_is_401(ref_depot):
    forged = jwt.encode(_claims(["read", "write", "admin"]), "not-the-server-secret-" * 3, algorithm="HS256")
    response = ref_depot.client.put(BLOB, data=DATA, headers={"Authorization": "Bearer " + forged})
    assert_error(response, 401, "INVALID_TOKEN")
    assert artifact_keys(ref_depot) == [] and ref_depot.blob_files() == []


def test_expired_and_alg_none_tokens_are_401(ref_depot):
    secret = ref_depot.service.identity.secret
    past = datetime.now(timezone.utc) - timedelta(hours=2)
    expired = jwt.encode(_claims(iat=past, exp=past + timedelta(minutes=5)), secret, algorithm="HS256")
    assert_error(ref_depot.client.get(BLOB, headers={"Authorization": "Bearer " + expired}), 401)
    unsigned = jwt.encode(_claims(), None, algorithm="none")
    assert_error(ref_depot.client.get(BLOB, headers={"Authorization": "Bearer " + unsigned}), 401)


def test_validation_failure_is_400_naming_the_field(ref_depot):
    response = ref_depot.publish("-bad", "hello", "1.0.0", "linux-amd64", DATA)
    error = assert_error(response, 400, "INVALID_FIELD")
    assert error["field"] == "namespace"
    response = ref_depot.publish("acme", "hello", "1.0.0", "Linux amd64!", DATA)
    assert assert_error(response, 400, "INVALID_FIELD")["field"] == "variant"
    assert artifact_keys(ref_depot) == [] and ref_depot.blob_files() == []


def test_non_semver_version_is_400_invalid_version(ref_depot):
    for version in ("1.0", "v1.0.0", "latest-ish", "01.2.3"):
        response = ref_depot.publish("acme", "hello", version, "linux-amd64", DATA)
        error = assert_error(response, 400, "INVALID_VERSION")
        assert error["field"] == "version"
    assert artifact_keys(ref_depot) == [] and ref_depot.blob_files() == []


def test_prerelease_is_rejected_by_the_reference_versioning(ref_depot):
    response = ref_depot.publish("acme", "hello", "1.0.0-rc.1", "linux-amd64", DATA)
    assert_error(response, 400, "PRERELEASE_NOT_ALLOWED")


# --- request ids ------------------------------------------------------------------------------------------

def test_every_response_has_a_request_id(published):
    responses = [
        published.client.get(BLOB, headers=published.headers(["read"])),
        published.client.head(BLOB, headers=published.headers(["read"])),
        published.client.get("/v1/acme/hello/latest", headers=published.headers(["read"])),
        published.client.get("/nope"),
        published.client.get(BLOB),
        published.client.delete(BLOB),
        published.client.get("/health"),
        published.publish("acme", "hello", "1.0.0", "linux-amd64", b"again"),
    ]
    ids = [r.headers.get("X-Request-Id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)  # freshly generated ones are unique


def test_a_sane_incoming_request_id_is_echoed(published):
    ok = published.client.get(BLOB, headers=published.headers(["read"], **{"X-Request-Id": "client-req.42_A"}))
    assert ok.status_code == 200 and ok.headers["X-Request-Id"] == "client-req.42_A"
    err = published.client.get("/nope", headers={"X-Request-Id": "abc-123"})
    assert_error(err, 404)
    assert err.headers["X-Request-Id"] == "abc-123"


def test_an_insane_incoming_request_id_is_replaced(published):
    for bad in ("has space", "x" * 200, "semi;colon", "<script>"):
        response = published.client.get("/nope", headers={"X-Request-Id": bad})
        assert_error(response, 404)
        echoed = response.headers["X-Request-Id"]
        assert echoed != bad
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", echoed)


# --- path parameters --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/v1/acme/../1.0.0/linux-amd64/blob",          # a parameter that is exactly ".."
    "/v1/../hello/1.0.0/linux-amd64/blob",
    "/v1/acme/hello/1.0.0/../blob",
    "/v1/acme/hello/1.0.0/linux..amd64/blob",       # a parameter containing ".."
    "/v1/acme/he..llo/1.0.0/linux-amd64/blob",
    "/v1/acme/a%2Fb/1.0.0/linux-amd64/blob",        # encoded slash
    "/v1/acme/a%2f..%2f..%2fetc/1.0.0/x/blob",
    "/v1/acme/hello%00/1.0.0/linux-amd64/blob",     # encoded NUL
    "/v1/acme/hello/1.0.0/linux%00amd64/blob",
    "/v1/acme/a%5Cb/1.0.0/linux-amd64/blob",        # encoded backslash
])
def test_hostile_path_parameters_are_rejected_and_nothing_is_stored(ref_depot, path):
    response = ref_depot.client.put(path, data=DATA, headers=ref_depot.headers())
    assert 400 <= response.status_code < 500, (path, response.status_code)
    assert_error(response, response.status_code)
    assert artifact_keys(ref_depot) == []
    assert ref_depot.blob_files() == []
    assert event_count(ref_depot) == 0
    assert ref_depot.service.engine.state.count(b"i") == 0


@pytest.mark.parametrize("path", [
    "/v1/acme/x/tags/..",
    "/v1/acme/x/tags/a%2Fb",
    "/v1/acme/x/tags/a%00b",
    "/v1/acme/x/tags/st..able",
])
def test_hostile_tag_names_are_rejected(published, path):
    path = path.replace("/x/", "/hello/")
    response = published.client.put(path, json={"target_version": "1.0.0", "target_variant": "linux-amd64"},
                                     headers=published.headers())
    assert 400 <= response.status_code < 500, (path, response.status_code)
    assert_error(response, response.status_code)
    assert published.service.engine.state.count(b"kmeta\x00tag/") == 0


def test_encoded_path_parameters_do_not_escape_on_fetch(published):
    for path in ("/v1/acme/hello/1.0.0/..%2F..%2Fsecret.key/blob", "/v1/acme/hello/1.0.0/%2E%2E/blob"):
        response = published.client.get(path, headers=published.headers(["read"]))
        assert 400 <= response.status_code < 500
        assert_error(response, response.status_code)


# --- crashes ----------------------------------------------------------------------------------------------

def test_an_unhandled_exception_in_a_flask_route_is_a_json_500(ref_depot):
    def explode():
        raise RuntimeError("boom: secret internals")
    ref_depot.app.add_url_rule("/_test/explode", "explode", explode)
    response = ref_depot.client.get("/_test/explode", headers={"X-Request-Id": "crash-1"})
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert "boom" not in response.get_data(as_text=True)
    assert "secret internals" not in error["message"]
    assert response.headers["X-Request-Id"] == "crash-1"
    assert "crash-1" in error["message"]


def test_a_store_fault_inside_a_pipeline_is_a_json_500(published, monkeypatch):
    def broken_locate(self, digest):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(FileBlobStore, "locate", broken_locate)
    response = published.client.get(BLOB, headers=published.headers(["read"]))
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert "disk on fire" not in response.get_data(as_text=True)
    assert error["message"]


def test_a_store_fault_during_publish_is_a_json_500_and_stores_nothing(ref_depot, monkeypatch):
    def broken_promote(self, staged):
        raise RuntimeError("rename failed")
    monkeypatch.setattr(FileBlobStore, "promote", broken_promote)
    response = ref_depot.publish("acme", "hello", "1.0.0", "linux-amd64", DATA)
    assert_error(response, 500, "INTERNAL_ERROR")
    monkeypatch.undo()
    assert artifact_keys(ref_depot) == []
    assert event_count(ref_depot) == 0
    assert ref_depot.blob_files() == []
    latest = ref_depot.client.get("/v1/acme/hello/latest", headers=ref_depot.headers(["read"]))
    assert_error(latest, 404, "NOT_FOUND")
    assert ref_depot.publish("acme", "hello", "1.0.0", "linux-amd64", DATA).status_code == 201


# --- health -----------------------------------------------------------------------------------------------

def test_health_reports_every_store_ok(ref_depot):
    response = ref_depot.client.get("/health")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["ok"] is True
    stores = body["stores"]
    assert set(stores) == {"state", "blob:primary"}
    assert all(store["ok"] is True for store in stores.values())
    assert body["schema_sha256"] == ref_depot.service.engine.compiled.sha256
    assert response.headers.get("X-Request-Id")


def test_health_reports_a_broken_blob_store(ref_depot):
    """A blob root that has gone away is reported, with 503, while the state store stays ok."""
    root = ref_depot.service.engine.blob_store("primary").root
    os.rename(root, root + ".gone")
    try:
        response = ref_depot.client.get("/health")
    finally:
        os.rename(root + ".gone", root)
    assert response.status_code == 503
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["ok"] is False
    assert body["stores"]["blob:primary"]["ok"] is False
    assert body["stores"]["state"]["ok"] is True
    assert ref_depot.client.get("/health").status_code == 200
