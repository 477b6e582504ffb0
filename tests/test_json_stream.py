"""parse.json with `stream`: declared string members of a JSON body (an npm publish's base64 tarball) stream,
decoded, into a blob store's staging area while the rest of the body is parsed.

The reader is tested alone first (a real blob store in a temp dir, every chunk boundary of small documents), then
through the HTTP stack with the project schema and an npm-like publish route added. Large bodies are produced
lazily (a base64 encoding of tests.test_streaming.LazyBody), so neither the test nor the server holds them.
"""
import base64
import hashlib
import io
import json
import os

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from app.engine.jsonstream import JsonMember, JsonStreamReader, StreamSpec, parse_pattern
from app.errors import DepotError
from app.stores.blobs import FileBlobStore
from tests.test_multipart import Chain, error, load_errors, stored
from tests.test_ops import route, step, with_routes
from tests.test_streaming import MEMORY_BOUND, LazyBody, lazy_digest, traced_peak

MiB = 1024 * 1024


# --- the reader alone ---------------------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    return FileBlobStore("primary", str(tmp_path / "blobs"), lambda hexdigest: hexdigest[:2] + "/" + hexdigest)


def read(store, document, members, decode="base64", chunk=65536, max_members=10, max_bytes=MiB, max_depth=64):
    """-> (the body, [(path, bytes) of each streamed member]); the staged files are discarded (as the request's
    end does, whatever the outcome)."""
    spec = StreamSpec.compile(members, decode, max_members)
    handles = []

    def stage(member, path):
        handles.append(JsonMember(store.stage(member, ("sha1",)), path))
        return handles[-1]
    try:
        body, read_handles = JsonStreamReader(io.BytesIO(document), spec, stage, max_bytes, max_depth, chunk).read()
        assert read_handles == handles
        streamed = []
        for handle in handles:
            with handle.open() as staged:
                streamed.append((handle.path, staged.read()))
        return body, streamed
    finally:
        for handle in handles:
            handle.discard(store)


def staged_files(store):
    return os.listdir(store.tmp_dir)


def b64(data):
    return base64.b64encode(data).decode()


PUBLISH = {
    "_id": "demo", "name": "demo", "description": 'a "data": "trap" and a \\ backslash',
    "dist-tags": {"latest": "1.0.0"},
    "versions": {"1.0.0": {"name": "demo", "version": "1.0.0", "data": {"x": [1, 2.5, True, None]}}},
    "_attachments": {
        "demo-1.0.0.tgz": {"content_type": "application/octet-stream", "data": b64(b"the tarball \x00\xff" * 7),
                           "length": 98},
        "demo-1.0.0.tgz.sig": {"data": b64(b"sig"), "length": 3}},
    "data": "not a member: a top-level key"}


def test_each_member_streams_whatever_the_chunk_boundaries(store):
    document = json.dumps(PUBLISH).encode()
    expected = json.loads(document)
    for name in expected["_attachments"]:
        expected["_attachments"][name]["data"] = None
    for chunk in range(1, len(document) + 1):
        body, streamed = read(store, document, ["_attachments.*.data"], chunk=chunk)
        assert body == expected, chunk
        assert streamed == [(["_attachments", "demo-1.0.0.tgz", "data"], b"the tarball \x00\xff" * 7),
                            (["_attachments", "demo-1.0.0.tgz.sig", "data"], b"sig")], chunk
    assert staged_files(store) == []


def test_array_items_escaped_slashes_and_keys_written_with_escapes(store):
    payload = bytes(range(256)) * 3  # its base64 holds slashes, here escaped as \/
    escaped = b64(payload).replace("/", "\\/")
    document = ('{"files": [{"data": "%s"}, {"name": "b", "d\\u0061ta": "%s"}, {"data\\"": "not one"}], '
                '"list": ["%s"]}' % (escaped, b64(b"second"), b64(b"third"))).encode()
    for chunk in range(1, len(document) + 1):
        body, streamed = read(store, document, ["files[].data", "list[]"], chunk=chunk)
        assert streamed == [(["files", 0, "data"], payload), (["files", 1, "data"], b"second"),
                            (["list", 0], b"third")], chunk
        assert body == {"files": [{"data": None}, {"name": "b", "data": None}, {'data"': "not one"}],
                        "list": [None]}


def test_decode_none_stores_the_strings_own_text(store):
    text = 'caf\u00e9 \U0001F600 "quoted" back\\slash\ttab \u2028 end'
    document = json.dumps({"readme": text, "other": "x"}).encode()  # escapes: \u00e9, \ud83d\ude00, \", \\, \t
    also_raw = json.dumps({"readme": text}, ensure_ascii=False).encode()
    for doc in (document, also_raw):
        for chunk in range(1, len(doc) + 1):
            body, streamed = read(store, doc, ["readme"], decode="none", chunk=chunk)
            assert streamed == [(["readme"], text.encode())], chunk
            assert body["readme"] is None


def test_a_top_level_array_and_nested_patterns(store):
    document = json.dumps([{"blob": {"raw": b64(b"one")}}, {"blob": 5}, {"blob": {"raw": b64(b"two")}}]).encode()
    for chunk in range(1, len(document) + 1):
        body, streamed = read(store, document, ["[].blob.raw"], chunk=chunk)
        assert streamed == [([0, "blob", "raw"], b"one"), ([2, "blob", "raw"], b"two")]
        assert body == [{"blob": {"raw": None}}, {"blob": 5}, {"blob": {"raw": None}}]


def test_a_body_without_members_reads_as_plain_json(store):
    document = b' {"a": [1, -2.5e3, true, false, null, {"b": "c\\u0041"}], "n": 123456789012345678901234567890} '
    for chunk in (1, 3, 1000):
        assert read(store, document, ["x.data"], chunk=chunk) == (json.loads(document), [])


@pytest.mark.parametrize("document,code,field", [
    (b'{"data": 5}', "STREAMED_MEMBER_NOT_STRING", "data"),
    (b'{"data": null}', "STREAMED_MEMBER_NOT_STRING", "data"),
    (b'{"data": {"a": "b"}}', "STREAMED_MEMBER_NOT_STRING", "data"),
    (b'{"data": ["aGk="]}', "STREAMED_MEMBER_NOT_STRING", "data"),
    (b'{"files": [{"data": true}]}', "STREAMED_MEMBER_NOT_STRING", "files.0.data"),
    (b'{"data": "aGk"}', "INVALID_ENCODING", "data"),
    (b'{"data": "aGk=aGk="}', "INVALID_ENCODING", "data"),
    (b'{"data": "aG k="}', "INVALID_ENCODING", "data"),
    (b'{"data": "aGk\\n"}', "INVALID_ENCODING", "data"),
    (b'{"data": "aG\\u0073="}', "INVALID_ENCODING", "data"),
    (b'{"data": "aGk=", "x": 1, "data": "aGk="}', "TOO_MANY_STREAMED_MEMBERS", "data"),
    (b'{"data": "aGk=" "x"}', "INVALID_JSON", None),
    (b'{"data" "aGk="}', "INVALID_JSON", None),
    (b'{"data": "aGk=', "INVALID_JSON", "data"),
    (b'{"data": "aGk=",', "INVALID_JSON", None),
    (b'{"a": "b}', "INVALID_JSON", None),
    (b'{"a": 1,}', "INVALID_JSON", None),
    (b'{"a": 1} {}', "INVALID_JSON", None),
    (b'', "INVALID_JSON", None),
    (b' \n ', "INVALID_JSON", None),
    (b'{"a": [[[[1]]]]}', "INVALID_JSON", None),
])
def test_a_broken_body_is_a_400_naming_the_member_and_stores_nothing(store, document, code, field):
    for chunk in (2, 7, 65536):
        with pytest.raises(DepotError) as raised:
            read(store, document, ["data", "files[].data"], chunk=chunk, max_members=1, max_depth=4)
        assert (raised.value.status, raised.value.code, raised.value.field) == (400, code, field), raised.value
        assert staged_files(store) == []


@pytest.mark.parametrize("document", [
    b'{"t": "a\\x"}', b'{"t": "\\u12"}', b'{"t": "\\ud800"}', b'{"t": "\\ud83d\\u0041"}', b'{"t": "tab\there"}',
    b'{"t": "\xff"}', b'{"t": "\xc3"}'])
def test_decode_none_refuses_what_is_not_a_json_string(store, document):
    for chunk in (1, 4, 1000):
        with pytest.raises(DepotError) as raised:
            read(store, document, ["t"], decode="none", chunk=chunk)
        assert raised.value.code in ("INVALID_JSON", "INVALID_ENCODING") and raised.value.field == "t"
        assert staged_files(store) == []


def test_max_bytes_counts_the_body_without_its_members(store):
    big = b64(os.urandom(3000))
    document = json.dumps({"data": big, "rest": "x" * 100}).encode()
    body, streamed = read(store, document, ["data"], max_bytes=130, chunk=64)
    assert len(streamed[0][1]) == 3000
    with pytest.raises(DepotError) as raised:
        read(store, json.dumps({"data": "", "rest": "x" * 200}).encode(), ["data"], max_bytes=130)
    assert (raised.value.status, raised.value.code) == (413, "JSON_TOO_LARGE")


def test_long_strings_and_many_escapes_are_passed_at_memory_speed(store):
    """A string split across many chunks goes to the parser whole, not again and again from its start."""
    readme = 'x"\\' * (2 * MiB)
    document = json.dumps({"readme": readme, "data": b64(b"tarball")}).encode()
    body, streamed = read(store, document, ["data"], max_bytes=16 * MiB)
    assert body["readme"] == readme and streamed == [(["data"], b"tarball")]


@pytest.mark.parametrize("pattern,steps", [
    ("_attachments.*.data", ("_attachments", "*", "data")),
    ("files[].data", ("files", "[]", "data")),
    ("[][].x", ("[]", "[]", "x")),
    ("a\\.b.c\\*\\[\\]\\\\", ("a.b", "c*[]\\")),
])
def test_member_patterns(pattern, steps):
    assert tuple(s if isinstance(s, str) else repr(s) for s in parse_pattern(pattern)) == steps


@pytest.mark.parametrize("members,index,words", [
    ([], None, "non-empty list"),
    ("data", None, "non-empty list"),
    (["a..b"], 0, "step 2 is malformed"),
    (["ok", "a*b"], 1, "step 1 is malformed"),
    (["a.[]"], 0, "[] follows a step"),
    (["a.", "b"], 0, "step 2 is malformed"),
    ([5], 0, "non-empty string"),
    (["a.*.data", "a.x.data"], 1, "matches the same members as"),
    (["a.b", "a.*.c"], 1, "overlaps"),
])
def test_bad_member_patterns_are_refused(members, index, words):
    with pytest.raises(ValueError) as raised:
        StreamSpec.compile(members, "base64", 1)
    message, where = raised.value.args
    assert where == index and words in message, message


# --- through the HTTP stack -----------------------------------------------------------------------------------------

STREAM = {"members": ["_attachments.*.data"], "decode": "base64", "store": "primary",
          "digests": ["sha1", "sha512"], "max_members": 1, "out": "attachments"}


def publish_route(**stream):
    return route(
        "npm_publish", "PUT", "/npm/{package}",
        step("auth.require_scopes", scopes=["write"]),
        step("parse.path"),
        step("parse.json", out="body", stream=dict(STREAM, **stream)),
        step("txn.begin"),
        step("blob.put", store="primary", out="digest", out_size="size", out_blob="blob",
             **{"from": "$attachments[0]"}),
        step("blob.verify_digest", digest="$digest"),
        step("txn.commit"),
        step("respond.json", status=201, body={
            "package": "{package}", "name": "{name}", "filename": "$attachments[0].path[1]",
            "path": "$attachments[0].path", "digest": "$digest", "size": "$size",
            "staged_digest": "$attachments[0].digest", "sha1": "$attachments[0].digests.sha1",
            "sha512_base64": "$blob.digests_base64.sha512", "attachments": "{_attachments}"}))


def peek_route():
    return route("npm_peek", "POST", "/peek", step("parse.json", out="body", stream=STREAM),
                 step("respond.json", body={"name": "{name}", "size": "$attachments[0].size",
                                            "sha1": "$attachments[0].digests.sha1"}))


@pytest.fixture
def depot(make_depot, project_schema):
    return make_depot(with_routes(project_schema, publish_route(), peek_route()))


class Base64Reader(io.RawIOBase):
    """The base64 encoding of a reader of ``size`` bytes (a LazyBody), produced as it is read."""

    def __init__(self, source, size):
        super().__init__()
        self.source, self.size = source, size
        self.pending = b""

    def readable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_END:
            return 4 * ((self.size + 2) // 3)
        self.source.seek(0)
        self.pending = b""
        return 0

    def read(self, size=-1):
        size = 256 * 1024 if size is None or size < 0 else size
        while len(self.pending) < size:
            raw = self.source.read(3 * 64 * 1024)
            if not raw:
                break
            self.pending += base64.b64encode(raw)
        chunk, self.pending = self.pending[:size], self.pending[size:]
        return chunk


def publish_body(data=None, size=None, name="demo", extra=""):
    """A publish body (a Chain of readers): ``data``, or ``size`` lazy bytes, as the one attachment."""
    head = ('{"_id": "%s", "name": "%s", "dist-tags": {"latest": "1.0.0"}, %s"versions": {"1.0.0": {"name": "%s"}}, '
            '"_attachments": {"%s-1.0.0.tgz": {"content_type": "application/octet-stream", "data": "'
            % (name, name, extra, name, name)).encode()
    encoded = io.BytesIO(base64.b64encode(data)) if data is not None else Base64Reader(LazyBody(size), size)
    tail = ('", "length": %d}}}' % (len(data) if data is not None else size)).encode()
    return Chain(io.BytesIO(head), encoded, io.BytesIO(tail))


def put(depot, path, body, method="PUT", length=True):
    environ = EnvironBuilder(path=path, method=method, headers=depot.headers(), input_stream=body,
                             content_type="application/json").get_environ()
    if not length:
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True
    return depot.client.open(Request(environ))


def test_a_publish_stores_its_attachment_and_answers_with_its_digests(depot):
    data = b"a tarball " * 1000
    response = put(depot, "/npm/demo", publish_body(data))
    assert response.status_code == 201, response.data
    assert response.get_json() == {
        "package": "demo", "name": "demo", "filename": "demo-1.0.0.tgz",
        "path": ["_attachments", "demo-1.0.0.tgz", "data"],
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data),
        "staged_digest": "sha256:" + hashlib.sha256(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest(),
        "sha512_base64": b64(hashlib.sha512(data).digest()),
        "attachments": {"demo-1.0.0.tgz": {"content_type": "application/octet-stream", "data": None,
                                           "length": len(data)}}}
    blob = stored(depot, data)
    assert blob is not None and open(blob.path, "rb").read() == data
    assert depot.temp_files() == []


def test_a_staged_member_no_step_takes_is_removed_when_the_request_ends(depot):
    data = b"looked at, never kept"
    response = put(depot, "/peek", publish_body(data), method="POST")
    assert response.get_json() == {"name": "demo", "size": len(data), "sha1": hashlib.sha1(data).hexdigest()}
    response.close()
    assert stored(depot, data) is None and depot.temp_files() == []


def test_a_100_mib_attachment_streams_through_in_bounded_memory(depot):
    size = 100 * MiB
    response, peak = traced_peak(lambda: put(depot, "/npm/big", publish_body(size=size, name="big"), length=False))
    assert response.status_code == 201, response.data
    assert peak < MEMORY_BOUND, "a 100 MiB attachment peaked at %.1f MiB" % (peak / MiB)  # (measured: 1.6 MiB)
    answer = response.get_json()
    assert answer["size"] == size and answer["digest"] == "sha256:" + lazy_digest(size)
    assert answer["sha1"] == lazy_digest(size, algorithm="sha1")
    assert depot.temp_files() == []


def test_a_real_server_publishes_100_mib_with_its_peak_memory_growing_less_than_64_mib(tmp_path, project_schema):
    """The server process's own peak resident size (VmHWM), C allocations included, not Python's alone."""
    import requests

    from tests.conftest import ServerProcess
    publish = publish_route()
    publish["pipeline"].pop(0)  # no credentials: this server has no test token
    schema_path = tmp_path / "schema.json"
    schema_path.write_text(json.dumps(with_routes(project_schema, publish)))
    server = ServerProcess(tmp_path / "data", args=("--schema", str(schema_path)))
    try:
        def send(body):
            chunks = iter(lambda: body.read(MiB), b"")  # a generator: sent chunked, never held
            return requests.put(server.url + "/npm/big", data=chunks, timeout=300,
                                headers={"Content-Type": "application/json"})
        assert send(publish_body(b"warm-up")).status_code == 201  # modules imported, pools made
        before = peak_resident(server.proc.pid)
        size = 100 * MiB
        response = send(publish_body(size=size, name="big"))
        assert response.status_code == 201, response.text
        assert response.json()["digest"] == "sha256:" + lazy_digest(size)
        growth = peak_resident(server.proc.pid) - before
        assert growth < 64 * MiB, "the server's peak resident size grew by %.1f MiB" % (growth / MiB)  # (1.7)
    finally:
        server.stop()


def peak_resident(pid):
    with open("/proc/%d/status" % pid) as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.parametrize("body,code,field", [
    (b'{"_attachments": {"a.tgz": {"data": 5}}}', "STREAMED_MEMBER_NOT_STRING", "_attachments.a.tgz.data"),
    (b'{"_attachments": {"a.tgz": {"data": "not base64!"}}}', "INVALID_ENCODING", "_attachments.a.tgz.data"),
    (b'{"_attachments": {"a.tgz": {"data": "aGk="}, "b.tgz": {"data": "aGk="}}}', "TOO_MANY_STREAMED_MEMBERS",
     "_attachments.b.tgz.data"),
    (b'{"_attachments": {"a.tgz": {"data": "aGk="}}', "INVALID_JSON", None),
    (b'{"_attachments": {"a.tgz": {"data": "aGk=', "INVALID_JSON", "_attachments.a.tgz.data"),
    (b'{"_attachments": {"a.tgz": {"data": "aGk="}}, }', "INVALID_JSON", None),
    (b'', "INVALID_JSON", None),
])
def test_a_bad_publish_is_a_json_error_and_stores_nothing(depot, body, code, field):
    err = error(put(depot, "/npm/demo", io.BytesIO(body)), 400)
    assert (err["code"], err.get("field")) == (code, field), err
    assert stored(depot, b"hi") is None and depot.temp_files() == []


def test_a_body_cut_short_of_its_content_length_is_400_and_stores_nothing(depot):
    environ = EnvironBuilder(path="/npm/demo", method="PUT", headers=depot.headers(),
                             input_stream=publish_body(b"cut short"), content_type="application/json").get_environ()
    environ["CONTENT_LENGTH"] = str(int(environ["CONTENT_LENGTH"]) + 10)
    err = error(depot.client.open(Request(environ)), 400)
    assert err["code"] in ("BODY_INCOMPLETE", "INVALID_JSON")
    assert stored(depot, b"cut short") is None and depot.temp_files() == []


def test_max_json_bytes_counts_the_body_without_its_streamed_members(make_depot, project_schema):
    schema = with_routes(project_schema, publish_route(), ops__limits__max_json_bytes=MiB)
    depot = make_depot(schema)
    data = os.urandom(3 * MiB)
    assert put(depot, "/npm/demo", publish_body(data)).status_code == 201
    plain = publish_body(b"small", extra='"readme": "%s", ' % ("x" * (2 * MiB)))
    err = error(put(depot, "/npm/demo", plain), 413)
    assert err["code"] == "JSON_TOO_LARGE"
    assert stored(depot, b"small") is None and depot.temp_files() == []


@pytest.mark.parametrize("limits,data,status,code", [
    ({"max_blob_bytes": 1000}, b"x" * 1001, 413, "BLOB_TOO_LARGE"),
    ({"min_blob_bytes": 10}, b"x" * 9, 400, "BLOB_TOO_SMALL"),
])
def test_the_blob_stores_limits_apply_to_the_decoded_bytes(make_depot, project_schema, limits, data, status, code):
    schema = with_routes(project_schema, publish_route())
    schema["storage"]["blob_stores"]["primary"].setdefault("limits", {}).update(limits)
    depot = make_depot(schema)
    assert error(put(depot, "/npm/demo", publish_body(data)), status)["code"] == code
    assert depot.temp_files() == []
    fits = data[:1000] if "max_blob_bytes" in limits else data + b"x"
    assert put(depot, "/npm/demo", publish_body(fits)).status_code == 201


def test_the_route_documents_its_body_and_the_staged_handles(depot):
    from openapi_spec_validator import validate
    spec = depot.client.get("/openapi.json").get_json()
    validate(spec)
    operation = spec["paths"]["/npm/{package}"]["put"]
    assert "_attachments.*.data" in operation["requestBody"]["description"]
    assert {"INVALID_ENCODING", "STREAMED_MEMBER_NOT_STRING", "TOO_MANY_STREAMED_MEMBERS", "BLOB_TOO_LARGE"} <= {
        code for answer in operation["responses"].values() for code in json.dumps(answer).split('"')}
    created = operation["responses"]["201"]["content"]["application/json"]["schema"]["properties"]
    assert created["path"]["type"] == "array" and created["staged_digest"]["pattern"].startswith("^sha256:")


# --- the checker ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream,place,words", [
    (dict(STREAM, members=["a..b"]), "members[0]", "step 2 is malformed"),
    (dict(STREAM, members=["ok", "a*"]), "members[1]", "malformed"),
    (dict(STREAM, members=[]), "members", "non-empty list"),
    (dict(STREAM, members="data"), "members", "expected string list"),
    (dict(STREAM, store="nowhere"), "store", "unknown blob store 'nowhere'"),
    (dict(STREAM, digests=["sha3"]), "digests", "unknown digest algorithm"),
    (dict(STREAM, digests="sha1"), "digests", "expected string list"),
    (dict(STREAM, out="not a name"), "out", "variable name"),
    (dict(STREAM, out="body"), "out", "other than `out`'s"),
    (dict(STREAM, decode="hex"), "decode", "expected one of 'base64', 'none'"),
    (dict(STREAM, max_members=0), "max_members", "expected at least 1"),
    ({k: v for k, v in STREAM.items() if k != "store"}, "store", "needs store"),
    ({k: v for k, v in STREAM.items() if k != "out"}, "out", "needs out"),
    (dict(STREAM, extra=1), "", "unknown key(s) extra"),
])
def test_stream_misuse_is_refused_at_load_at_its_place(project_schema, stream, place, words):
    errors = load_errors(project_schema, step("parse.json", out="body", stream=stream))
    where = "pipeline[0].args.stream" + ("." + place if place else "")
    assert words in errors.get(where, ""), errors


def test_the_checker_knows_the_streamed_handles_variable(project_schema):
    uses = step("respond.json", body={"d": "$attachments[0].digest"})
    assert load_errors(project_schema, step("parse.json", out="body", stream=STREAM), uses) == {}
    assert "$attachments" in load_errors(project_schema, step("parse.json", out="body"), uses)["pipeline[1].args.body"]
