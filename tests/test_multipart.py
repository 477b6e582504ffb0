"""parse.multipart, blob.put from a staged form file, digests in several algorithms from one pass, and
blob.verify_digest of declared digests in any usual form: real stores, the Flask test client, the project schema
with a twine-like upload route added.

Bodies are built as a chain of readers, so a 100 MiB file part is produced lazily and the test never holds it.
"""
import base64
import copy
import hashlib
import io

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from app.engine.compiler import compile_schema
from app.engine.multipart import MAX_BUFFERED
from tests.test_ops import route, step, with_routes
from tests.test_streaming import MEMORY_BOUND, LazyBody, lazy_digest, traced_peak

MiB = 1024 * 1024
BOUNDARY = "depot-test-boundary-7d3f"
UPLOAD_FIELDS = {
    "action": {"form": ":action", "required": True},
    "protocol_version": {"type": "integer", "minimum": 1, "maximum": 1},
    "name": {"required": True, "max_bytes": 200},
    "version": {"required": True},
    "filetype": {}, "pyversion": {}, "metadata_version": {}, "summary": {"max_bytes": 512},
    "requires_python": {},
    "classifiers": {"repeated": True, "max_items": 5},
    "sha256_digest": {"max_bytes": 128}, "blake2_256_digest": {"max_bytes": 128}, "md5_digest": {"max_bytes": 64}}
DECLARED = {"sha256": "{sha256_digest?}", "blake2b_256": "{blake2_256_digest?}", "md5": "{md5_digest?}"}


def upload_route(**multipart):
    args = dict(fields=UPLOAD_FIELDS, file="content", store="primary", digests=["blake2b-256", "md5"],
                out="upload")
    args.update(multipart)
    return route(
        "legacy_upload", "POST", "/legacy/{namespace}",
        step("auth.require_scopes", scopes=["write"]),
        step("parse.path"),
        step("parse.multipart", **args),
        step("txn.begin"),
        step("blob.put", store="primary", out="digest", out_size="size", out_blob="blob", **{"from": "$upload"}),
        step("blob.verify_digest", digest="$digest", expected=DECLARED),
        step("txn.commit"),
        step("respond.json", status=201, body={
            "namespace": "{namespace}", "action": "{action}", "name": "{name}", "version": "{version}",
            "protocol": "{protocol_version?}", "summary": "{summary?}", "classifiers": "{classifiers}",
            "filename": "$upload.filename", "content_type": "$upload.content_type", "digest": "$digest",
            "size": "$size", "md5": "$blob.digests.md5", "blake2b_256": "$blob.digests.blake2b_256",
            "sha256_base64": "$blob.digests_base64.sha256", "staged_md5": "$upload.digests.md5"}))


@pytest.fixture
def depot(make_depot, project_schema):
    return make_depot(with_routes(project_schema, upload_route()))


class Chain(io.RawIOBase):
    """Readers (BytesIO, LazyBody) read one after the other, as one body."""

    def __init__(self, *readers):
        super().__init__()
        self.readers = list(readers)
        self.pos = 0

    def readable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        """Only what EnvironBuilder does before a byte is read: measure the end, then go back to the start."""
        self.pos = sum(reader.seek(0, io.SEEK_END) - reader.seek(0) for reader in self.readers) \
            if whence == io.SEEK_END else offset
        return self.pos

    def read(self, size=-1):
        while self.readers:
            chunk = self.readers[0].read(size)
            if chunk:
                self.pos += len(chunk)
                return chunk
            self.readers.pop(0)
        return b""

    def readinto(self, buffer):
        chunk = self.read(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def field_part(name, value, boundary=BOUNDARY):
    value = value.encode() if isinstance(value, str) else value
    return io.BytesIO(b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                      % (boundary.encode(), name.encode(), value))


def file_parts(name, filename, body, boundary=BOUNDARY, content_type="application/octet-stream"):
    head = io.BytesIO(b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\nContent-Type: %s\r\n\r\n'
                      % (boundary.encode(), name.encode(), filename.encode(), content_type.encode()))
    return [head, io.BytesIO(body) if isinstance(body, bytes) else body, io.BytesIO(b"\r\n")]


def closing(boundary=BOUNDARY):
    return io.BytesIO(b"--%s--\r\n" % boundary.encode())


def twine_fields(data=None, **changes):
    """The fields twine sends with a file (its digests of ``data`` when given), as (name, value) pairs."""
    fields = {":action": "file_upload", "protocol_version": "1", "name": "demo", "version": "1.0",
              "filetype": "bdist_wheel", "pyversion": "py3", "metadata_version": "2.1", "summary": "A demo",
              "requires_python": ">=3.8", "description": "long text " * 100}
    if data is not None:
        fields.update(sha256_digest=hashlib.sha256(data).hexdigest(),
                      blake2_256_digest=hashlib.blake2b(data, digest_size=32).hexdigest(),
                      md5_digest=hashlib.md5(data).hexdigest())
    fields.update(changes)
    pairs = [(name, value) for name, value in fields.items() if value is not None]
    pairs += [("classifiers", "Programming Language :: Python :: 3"), ("classifiers", "License :: OSI Approved")]
    return pairs


def form(pairs, file=None, file_first=False, boundary=BOUNDARY):
    """A multipart body (a Chain): the fields ``pairs``, and the file parts ``file`` before or after them."""
    fields = [field_part(name, value, boundary) for name, value in pairs]
    files = list(file or [])
    return Chain(*(files + fields if file_first else fields + files), closing(boundary))


def post(depot, path, body, content_type="multipart/form-data; boundary=" + BOUNDARY, length=None, headers=None):
    environ = EnvironBuilder(path=path, method="POST", headers=depot.headers(["read", "write"], **(headers or {})),
                             input_stream=body, content_type=content_type).get_environ()
    if length is None:  # a chunked upload: the body's end is where it ends
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True
    else:
        environ["CONTENT_LENGTH"] = str(length)
    return depot.client.open(Request(environ))


def error(response, status):
    assert response.status_code == status, response.data
    return response.get_json()["error"]


def stored(depot, data):
    return depot.service.engine.blob_store("primary").locate("sha256:" + hashlib.sha256(data).hexdigest())


# --- a twine upload -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("file_first", [False, True])
def test_a_twine_upload_binds_its_fields_and_stores_its_file_with_every_digest_checked(depot, file_first):
    data = b"wheel bytes " * 5000
    body = form(twine_fields(data), file_parts("content", "demo-1.0-py3-none-any.whl", data), file_first)
    response = post(depot, "/legacy/acme", body)
    assert response.status_code == 201, response.data
    sha256 = hashlib.sha256(data)
    assert response.get_json() == {
        "namespace": "acme", "action": "file_upload", "name": "demo", "version": "1.0", "protocol": 1,
        "summary": "A demo", "classifiers": ["Programming Language :: Python :: 3", "License :: OSI Approved"],
        "filename": "demo-1.0-py3-none-any.whl", "content_type": "application/octet-stream",
        "digest": "sha256:" + sha256.hexdigest(), "size": len(data), "md5": hashlib.md5(data).hexdigest(),
        "blake2b_256": hashlib.blake2b(data, digest_size=32).hexdigest(),
        "sha256_base64": base64.b64encode(sha256.digest()).decode(), "staged_md5": hashlib.md5(data).hexdigest()}
    blob = stored(depot, data)
    assert blob is not None and open(blob.path, "rb").read() == data
    assert depot.temp_files() == []


@pytest.mark.parametrize("field", ["sha256_digest", "blake2_256_digest", "md5_digest"])
def test_a_wrong_declared_digest_is_400_naming_its_field_and_nothing_is_stored(depot, field):
    data = b"the real bytes"
    wrong = {"sha256_digest": hashlib.sha256(b"x").hexdigest(),
             "blake2_256_digest": hashlib.blake2b(b"x", digest_size=32).hexdigest(),
             "md5_digest": hashlib.md5(b"x").hexdigest()}[field]
    body = form(twine_fields(data, **{field: wrong}), file_parts("content", "demo.whl", data))
    err = error(post(depot, "/legacy/acme", body), 400)
    assert err["code"] == "DIGEST_MISMATCH" and err["field"] == field and wrong in err["message"]
    assert stored(depot, data) is None and depot.temp_files() == []


def test_declared_digests_are_optional_each(depot):
    data = b"no digests declared"
    body = form(twine_fields(), file_parts("content", "demo.whl", data))
    assert post(depot, "/legacy/acme", body).status_code == 201
    assert stored(depot, data) is not None


def test_a_100_mib_file_streams_through_in_bounded_memory_with_three_digests_from_one_pass(depot):
    size = 100 * MiB
    head = twine_fields(None, sha256_digest=lazy_digest(size), md5_digest=lazy_digest(size, algorithm="md5"))
    body = form(head, file_parts("content", "big.whl", LazyBody(size)), file_first=False)
    response, peak = traced_peak(lambda: post(depot, "/legacy/acme", body))
    assert response.status_code == 201, response.data
    assert peak < MEMORY_BOUND, "a 100 MiB form peaked at %.1f MiB" % (peak / MiB)  # (measured: 1.8 MiB)
    answer, lazy = response.get_json(), LazyBody(size)
    assert answer["size"] == size and answer["digest"] == "sha256:" + lazy_digest(size)
    blake2b = hashlib.blake2b(digest_size=32)
    for chunk in iter(lambda: LazyBody.read(lazy, MiB), b""):
        blake2b.update(chunk)
    assert answer["blake2b_256"] == blake2b.hexdigest()
    assert answer["md5"] == lazy_digest(size, algorithm="md5")
    assert depot.temp_files() == []


def test_the_clients_content_digest_describes_the_body_not_the_form_file(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, route(
        "plain", "POST", "/plain", step("parse.multipart", file="content", store="primary", out="upload"),
        step("blob.put", store="primary", out="digest", **{"from": "$upload"}),
        step("blob.verify_digest", digest="$digest"),
        step("respond.json", body={"digest": "$digest"}))))
    data = b"the file, not the body"
    body = form([], file_parts("content", "f.bin", data))
    raw = b"".join(iter(lambda: body.read(65536), b""))  # the whole multipart body
    header = "sha-256=:%s:" % base64.b64encode(hashlib.sha256(raw).digest()).decode()
    response = post(depot, "/plain", io.BytesIO(raw), headers={"Content-Digest": header})
    assert response.get_json() == {"digest": "sha256:" + hashlib.sha256(data).hexdigest()}


# --- bad forms: 400 naming the field, nothing left behind -----------------------------------------------------

@pytest.mark.parametrize("pairs,code,field", [
    ([(n, v) for n, v in twine_fields() if n != ":action"], "FORM_FIELD_MISSING", ":action"),
    (twine_fields(name="n" * 201), "FORM_FIELD_TOO_LARGE", "name"),
    (twine_fields(protocol_version="2"), "INVALID_FORM_FIELD", "protocol_version"),
    (twine_fields(protocol_version="one"), "INVALID_FORM_FIELD", "protocol_version"),
    (twine_fields() + [("name", "again")], "INVALID_FORM_FIELD", "name"),
    (twine_fields() + [("classifiers", "c")] * 4, "INVALID_FORM_FIELD", "classifiers"),
    (twine_fields(summary=b"\xff\xfe not utf-8"), "INVALID_FORM_FIELD", "summary"),
])
def test_a_form_that_breaks_its_declaration_is_400_naming_the_form_field(depot, pairs, code, field):
    data = b"some wheel"
    err = error(post(depot, "/legacy/acme", form(pairs, file_parts("content", "demo.whl", data), True)), 400)
    assert (err["code"], err["field"]) == (code, field), err
    assert stored(depot, data) is None and depot.temp_files() == []


def test_a_form_without_its_file_part_is_400(depot):
    err = error(post(depot, "/legacy/acme", form(twine_fields())), 400)
    assert (err["code"], err["field"]) == ("FORM_FIELD_MISSING", "content")
    twice = file_parts("content", "a.whl", b"a") + file_parts("content", "b.whl", b"b")
    err = error(post(depot, "/legacy/acme", form(twine_fields(), twice)), 400)
    assert (err["code"], err["field"]) == ("INVALID_FORM_FIELD", "content")
    assert depot.temp_files() == []


def test_undeclared_parts_and_files_are_skipped_unread(depot):
    data = b"the wheel"
    extra = [("description", "x" * (3 * MiB)), ("comment", "ignored")]
    body = form(twine_fields(data) + extra, file_parts("gpg_signature", "a.asc", b"sig" * 1000)
                + file_parts("content", "demo.whl", data))
    response, peak = traced_peak(lambda: post(depot, "/legacy/acme", body))
    assert response.status_code == 201, response.data
    assert peak < 3 * MiB  # the 3 MiB undeclared field was never held
    assert stored(depot, b"sig" * 1000) is None and depot.temp_files() == []


def test_the_form_text_is_bounded_as_a_whole(make_depot, project_schema):
    fields = {name: {"max_bytes": 60} for name in ("a", "b", "c")}
    depot = make_depot(with_routes(project_schema, route(
        "small_form", "POST", "/small", step("parse.multipart", fields=fields, max_form_bytes=100, max_parts=4),
        step("respond.json", body={"a": "{a?}", "b": "{b?}"}))))
    assert post(depot, "/small", form([("a", "x" * 60)])).get_json() == {"a": "x" * 60, "b": None}
    err = error(post(depot, "/small", form([("a", "x" * 60), ("b", "y" * 41)])), 400)
    assert (err["code"], err["field"]) == ("FORM_FIELD_TOO_LARGE", "b") and "max_form_bytes" in err["message"]
    err = error(post(depot, "/small", form([("z", "")] * 5)), 400)
    assert err["code"] == "INVALID_MULTIPART" and "parts" in err["message"]


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data", "multipart/mixed; boundary=x",
                                          "multipart/form-data; boundary=" + "b" * 71])
def test_a_body_that_is_not_multipart_form_data_is_400_naming_content_type(depot, content_type):
    err = error(post(depot, "/legacy/acme", form(twine_fields()), content_type=content_type), 400)
    assert (err["code"], err["field"]) == ("INVALID_MULTIPART", "Content-Type")


@pytest.mark.parametrize("raw", [
    b"",
    b"--%s\r\nContent-Disposition: form-data; name=\":action\"\r\n\r\nfile_upload" % BOUNDARY.encode(),
    b"--%s\r\nX-Other: 1\r\n\r\nvalue\r\n--%s--\r\n" % (BOUNDARY.encode(), BOUNDARY.encode()),
    b"no boundary anywhere " * 50000,
    b"--%s\r\nContent-Disposition: form-data; name=\"a\"\r\n%s\r\n\r\nv\r\n--%s--\r\n"
    % (BOUNDARY.encode(), b"X-Pad: " + b"p" * (2 * MAX_BUFFERED), BOUNDARY.encode()),
], ids=["empty", "cut-short", "no-disposition", "endless-preamble", "endless-header"])
def test_a_malformed_multipart_body_is_400_and_leaves_nothing(depot, raw):
    err = error(post(depot, "/legacy/acme", io.BytesIO(raw)), 400)
    assert err["code"] == "INVALID_MULTIPART", err
    assert depot.temp_files() == []


def test_a_file_cut_short_mid_part_is_400_and_its_staged_bytes_are_removed(depot):
    body = Chain(*file_parts("content", "demo.whl", LazyBody(3 * MiB))[:2])  # no closing boundary
    err = error(post(depot, "/legacy/acme", body), 400)
    assert err["code"] == "INVALID_MULTIPART" and "ends before" in err["message"]
    declared = Chain(*file_parts("content", "demo.whl", LazyBody(MiB)))
    err = error(post(depot, "/legacy/acme", declared, length=3 * MiB), 400)  # Content-Length says more
    assert err["code"] == "BODY_INCOMPLETE"
    assert depot.temp_files() == []


def test_a_file_over_max_blob_bytes_is_413_and_leaves_no_temp_file(make_depot, project_schema):
    schema = with_routes(project_schema, upload_route())
    schema["storage"]["blob_stores"]["primary"].setdefault("limits", {})["max_blob_bytes"] = MiB
    depot = make_depot(schema)
    body = form(twine_fields(), file_parts("content", "big.whl", LazyBody(4 * MiB)), file_first=True)
    assert error(post(depot, "/legacy/acme", body), 413)["code"] == "BLOB_TOO_LARGE"
    assert depot.temp_files() == []


def test_a_staged_file_no_step_takes_is_removed_when_the_request_ends(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, route(
        "peek", "POST", "/peek", step("parse.multipart", file="content", store="primary", digests=["sha1"],
                                      out="upload"),
        step("respond.json", body={"name": "$upload.filename", "size": "$upload.size",
                                   "sha1": "$upload.digests.sha1", "sha1_b64": "$upload.digests_base64.sha1"}))))
    data = b"looked at, never kept"
    response = post(depot, "/peek", form([], file_parts("content", "f.bin", data)))
    assert response.get_json() == {"name": "f.bin", "size": len(data), "sha1": hashlib.sha1(data).hexdigest(),
                                   "sha1_b64": base64.b64encode(hashlib.sha1(data).digest()).decode()}
    assert len(depot.temp_files()) == 1  # until the response has been sent
    response.close()
    assert stored(depot, data) is None and depot.temp_files() == []


def test_the_route_documents_its_form_body(depot):
    from openapi_spec_validator import validate
    spec = depot.client.get("/openapi.json").get_json()
    validate(spec)
    body = spec["paths"]["/legacy/{namespace}"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == [":action", "name", "version", "content"]
    assert body["properties"]["classifiers"]["type"] == "array"
    assert body["properties"]["protocol_version"] == {"type": "integer", "minimum": 1, "maximum": 1}
    assert body["properties"]["content"]["contentMediaType"] == "application/octet-stream"


# --- digests from one pass and declared in any form -------------------------------------------------------------

def verify_route(**verify):
    return route(
        "verify", "PUT", "/verify",
        step("parse.query", fields={"declared": {"type": "string"}}),
        step("blob.put", store="primary", digests=["sha1"], out="digest", out_blob="blob",
             **{"from": "request.body"}),
        step("blob.verify_digest", digest="$digest", **verify),
        step("respond.json", body={"sha1": "$blob.digests.sha1", "sha512_b64": "$blob.digests_base64.sha512?",
                                   "sha384": "$blob.digests.sha384?"}))


@pytest.mark.parametrize("algorithm,form_of", [
    ("sha256", lambda d: d.hexdigest()),
    ("sha256", lambda d: "sha256:" + d.hexdigest()),
    ("sha256", lambda d: "sha256=" + d.hexdigest().upper()),
    ("sha512", lambda d: "sha512-" + base64.b64encode(d.digest()).decode()),
    ("sha384", lambda d: "sha384-" + base64.b64encode(d.digest()).decode() + "?opt"),
    ("sha512", lambda d: "sha-512=:%s:" % base64.b64encode(d.digest()).decode()),
    ("sha1", lambda d: "sha-1:" + d.hexdigest()),
    ("md5", lambda d: "MD5=" + d.hexdigest()),
    ("blake2b", lambda d: "blake2b-256:" + d.hexdigest()),
])
def test_blob_verify_digest_reads_a_declared_digest_in_any_usual_form(make_depot, project_schema, algorithm,
                                                                      form_of):
    depot = make_depot(with_routes(project_schema, verify_route(expected="{declared?}")))
    data = b"verified bytes"
    hasher = hashlib.blake2b(data, digest_size=32) if algorithm == "blake2b" else hashlib.new(algorithm, data)
    good = depot.client.put("/verify", data=data, query_string={"declared": form_of(hasher)},
                            headers=depot.headers())
    assert good.status_code == 200, good.data
    assert good.get_json()["sha1"] == hashlib.sha1(data).hexdigest()
    other = hashlib.blake2b(b"x", digest_size=32) if algorithm == "blake2b" else hashlib.new(algorithm, b"x")
    bad = depot.client.put("/verify", data=data, query_string={"declared": form_of(other)}, headers=depot.headers())
    err = error(bad, 400)
    assert (err["code"], err["field"]) == ("DIGEST_MISMATCH", "declared")


def test_several_sri_digests_are_each_checked(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, verify_route(expected="{declared?}")))
    data = b"integrity"

    def sri(name, payload):
        return "%s-%s" % (name, base64.b64encode(hashlib.new(name, payload).digest()).decode())
    both = "%s %s" % (sri("sha512", data), sri("sha1", data))
    assert depot.client.put("/verify?declared=" + both.replace("+", "%2B"), data=data,
                            headers=depot.headers()).status_code == 200
    one_wrong = "%s %s" % (sri("sha512", data), sri("sha1", b"other"))
    response = depot.client.put("/verify", data=data, query_string={"declared": one_wrong}, headers=depot.headers())
    assert error(response, 400)["code"] == "DIGEST_MISMATCH"


@pytest.mark.parametrize("declared,code", [("sha3:" + "ab" * 32, "UNSUPPORTED_DIGEST_ALGORITHM"),
                                           ("sha256:abc", "INVALID_DIGEST"), ("not a digest", "INVALID_DIGEST"),
                                           ("sha512-AAAA", "INVALID_DIGEST")])
def test_a_malformed_declared_digest_is_400_naming_its_field(make_depot, project_schema, declared, code):
    depot = make_depot(with_routes(project_schema, verify_route(expected="{declared?}")))
    response = depot.client.put("/verify", data=b"x", query_string={"declared": declared}, headers=depot.headers())
    err = error(response, 400)
    assert (err["code"], err["field"]) == (code, "declared")


def test_a_digest_not_computed_while_streaming_is_computed_from_the_stored_file(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, verify_route(expected={"sha384": "{declared}"})))
    data = b"hashed again"
    good = depot.client.put("/verify", data=data, query_string={"declared": hashlib.sha384(data).hexdigest()},
                            headers=depot.headers())
    assert good.status_code == 200 and good.get_json()["sha384"] == hashlib.sha384(data).hexdigest()
    pinned = depot.client.put("/verify", data=data, query_string={"declared": "md5:" + hashlib.md5(data).hexdigest()},
                              headers=depot.headers())
    err = error(pinned, 400)  # the object's key says which algorithm the field holds
    assert (err["code"], err["field"]) == ("INVALID_DIGEST", "declared")


def test_a_content_digest_sha_512_is_still_computed_while_streaming(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, verify_route()))
    data = b"declared by header"
    header = "sha-512=:%s:" % base64.b64encode(hashlib.sha512(data).digest()).decode()
    response = depot.client.put("/verify", data=data, headers=depot.headers(**{"Content-Digest": header}))
    assert response.status_code == 200, response.data
    assert response.get_json()["sha512_b64"] == base64.b64encode(hashlib.sha512(data).digest()).decode()


# --- the checker: misuse is found at load, at its place --------------------------------------------------------

def load_errors(project_schema, *steps):
    doc = with_routes(project_schema, route("misuse", "POST", "/misuse", *steps, step("respond.json", body={})))
    compiled, report = compile_schema(copy.deepcopy(doc), "test")
    index = len(doc["api"]["routes"]) - 1
    return {f.place.replace("api.routes[%d]." % index, ""): f.message for f in report.errors}


@pytest.mark.parametrize("args,place,words", [
    (dict(fields={"a": {"typ": "string"}}), "fields", "unknown key(s) typ"),
    (dict(fields={"a": {"type": "float"}}), "fields", "type must be one of"),
    (dict(fields={"a-b": {}}), "fields", "not a name a template can read"),
    (dict(fields={"a": {"max_bytes": 0}}), "fields", "max_bytes must be a positive integer"),
    (dict(fields={"a": {"max_bytes": 200}}, max_form_bytes=100), "fields", "exceeds max_form_bytes"),
    (dict(fields={"a": {"minimum": 1}}), "fields", "minimum needs type integer"),
    (dict(fields={"a": {"repeated": "yes"}}), "fields", "repeated must be true or false"),
    (dict(fields={"a": {"type": "integer", "default": "1"}}), "fields", "default must be a value of type integer"),
    (dict(fields={"a": {"repeated": True, "default": "x"}}), "fields", "a list of values of type string"),
    (dict(fields={"a": {}, "b": {"form": "a"}}), "fields", "read the same form field 'a'"),
    (dict(fields={"content": {}}, file="content", store="primary", out="u"), "fields", "both as a text field"),
    (dict(file="content", out="u"), "store", "needs `store`"),
    (dict(file="content", store="primary"), "out", "needs `store`"),
    (dict(store="primary"), "file", "declare it with `file`"),
    (dict(file="content", store="primary", out="u", digests=["sha3"]), "digests", "unknown digest algorithm"),
    (dict(file="content", store="nowhere", out="u"), "store", "unknown blob store"),
    (dict(max_parts=0), "max_parts", "at least 1"),
])
def test_parse_multipart_misuse_is_refused_at_load(project_schema, args, place, words):
    errors = load_errors(project_schema, step("parse.multipart", **args))
    assert words in errors.get("pipeline[0].args." + place, ""), errors


def test_digest_misuse_is_refused_at_load(project_schema):
    put = step("blob.put", store="primary", out="d", digests=["sha-512", "whirlpool"], **{"from": "request.body"})
    assert "unknown digest algorithm 'whirlpool'" in load_errors(project_schema, put)["pipeline[0].args.digests"]
    good_put = step("blob.put", store="primary", out="d", **{"from": "request.body"})
    verify = step("blob.verify_digest", digest="$d", expected={"sha256": "x", "crc32": "{c?}"})
    assert "unknown digest algorithm 'crc32'" in load_errors(project_schema, good_put, verify)[
        "pipeline[1].args.expected"]
    algo = step("blob.verify_digest", digest="$d", algo="sha3_256")
    assert "expected one of" in load_errors(project_schema, good_put, algo)["pipeline[1].args.algo"]


# --- twine itself, against a real server ------------------------------------------------------------------------

def test_twine_uploads_a_wheel_to_a_real_server(tmp_path, project_schema):
    """twine 7 (requests-toolbelt's streaming multipart encoder) through the real front end: the form is read,
    the wheel stored with its sha256 and blake2b-256 checked, and its METADATA extracted into its own blob."""
    import json
    import subprocess
    import sys
    import zipfile

    import requests

    from tests.conftest import ServerProcess

    metadata = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nSummary: A demo\nClassifier: A :: B\n\nDemo.\n"
    wheel_path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel_path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("demo/__init__.py", b"VALUE = 1\n")
        zf.writestr("demo-1.0.dist-info/METADATA", metadata)
        zf.writestr("demo-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                b"Tag: py3-none-any\n")
        zf.writestr("demo-1.0.dist-info/RECORD", b"")
    upload = upload_route()
    upload["path"] = "/legacy/{namespace}/"
    pipeline = upload["pipeline"]
    pipeline.pop(0)  # twine sends Basic credentials, which this test route does not ask for
    pipeline.insert(-2, step("blob.extract", store="primary", member="*.dist-info/METADATA", required=True,
                             out="metadata", **{"from": "$blob"}))
    pipeline[-1] = step("respond.json", body={"ok": True})
    fetch = route("fetch", "GET", "/blobs/{digest}", step("parse.path"),
                  step("blob.get", store="primary", digest="{digest}", out="blob"),
                  step("respond.bytes", body="$blob"))
    schema_path = tmp_path / "schema.json"
    schema_path.write_text(json.dumps(with_routes(project_schema, upload, fetch)))
    server = ServerProcess(tmp_path / "data", args=("--schema", str(schema_path)))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "twine", "upload", "--repository-url", server.url + "/legacy/acme/", "-u", "u",
             "-p", "p", "--non-interactive", "--disable-progress-bar", str(wheel_path)],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr + server.output
        for data in (wheel_path.read_bytes(), metadata):
            fetched = requests.get(server.url + "/blobs/sha256:" + hashlib.sha256(data).hexdigest(), timeout=30)
            assert fetched.status_code == 200 and fetched.content == data
    finally:
        server.stop()


def test_a_second_step_reading_the_request_body_is_warned_about(project_schema):
    doc = with_routes(project_schema, route(
        "twice", "POST", "/twice", step("parse.multipart", fields={"a": {}}), step("parse.json", out="body"),
        step("blob.put", store="primary", out="d", **{"from": "request.body"}), step("respond.json", body={})))
    compiled, report = compile_schema(copy.deepcopy(doc), "test")
    index = len(doc["api"]["routes"]) - 1
    first = "parse.multipart at api.routes[%d].pipeline[0]" % index
    for later, op in ((1, "parse.json"), (2, "blob.put")):
        place = "api.routes[%d].pipeline[%d]" % (index, later)
        assert any(f.place == place and op + " reads the request body, which " + first in f.message
                   for f in report.warnings), report.to_text()
