"""Uploads and downloads stream: memory stays bounded whatever the body size, the digest is computed over the
streamed bytes, declared digests are enforced, and a rejected upload leaves nothing behind.

Bodies are generated lazily by a seekable file-like object, so the test itself never holds them in memory.
"""
import base64
import copy
import hashlib
import io
import tracemalloc

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

MiB = 1024 * 1024
BIG = 64 * MiB
MEMORY_BOUND = 8 * MiB
ARTIFACT_PREFIX = b"kmeta\x00artifact/"
EVENT_PREFIX = b"kmeta\x00eventlog/"


class LazyBody:
    """``total`` deterministic bytes produced on demand: 64 KiB blocks, each a sha256 of (seed, index) repeated."""

    BLOCK = 64 * 1024

    def __init__(self, total, seed=b"depot"):
        self.total = total
        self.seed = seed
        self.pos = 0
        self.largest_read = 0
        self._cached = (None, b"")

    def _block(self, index):
        if self._cached[0] != index:
            unit = hashlib.sha256(self.seed + index.to_bytes(8, "big")).digest()
            self._cached = (index, unit * (self.BLOCK // len(unit)))
        return self._cached[1]

    def read(self, size=-1):
        remaining = self.total - self.pos
        if size is None or size < 0 or size > remaining:
            size = remaining
        self.largest_read = max(self.largest_read, size)
        parts = []
        while size > 0:
            index, offset = divmod(self.pos, self.BLOCK)
            piece = self._block(index)[offset:offset + size]
            parts.append(piece)
            self.pos += len(piece)
            size -= len(piece)
        return b"".join(parts)

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.total}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def close(self):
        pass


def lazy_digest(total, seed=b"depot", algorithm="sha256"):
    """The digest (hex) of what LazyBody(total, seed) produces, computed independently of any request."""
    body, hasher = LazyBody(total, seed), hashlib.new(algorithm)
    while True:
        chunk = body.read(MiB)
        if not chunk:
            return hasher.hexdigest()
        hasher.update(chunk)


def nothing_stored(depot, namespace="acme", name="big"):
    state = depot.service.engine.state
    assert list(state.scan(ARTIFACT_PREFIX)) == []
    assert state.count(EVENT_PREFIX) == 0
    assert state.count(b"iartifact_versions\x00") == 0
    latest = depot.client.get("/v1/%s/%s/latest" % (namespace, name), headers=depot.headers(["read"]))
    assert latest.status_code == 404
    assert latest.get_json()["error"]["code"] == "NOT_FOUND"
    assert depot.blob_files() == []
    assert depot.temp_files() == []


def put_stream(depot, path, body, headers=None, query=None, chunked=False):
    """PUT a file-like body; ``chunked`` drops Content-Length as a chunked upload would."""
    builder = EnvironBuilder(path=path, method="PUT", headers=depot.headers(**(headers or {})),
                             input_stream=body, query_string=query)
    environ = builder.get_environ()
    if chunked:
        del environ["CONTENT_LENGTH"]
        environ["wsgi.input_terminated"] = True
    return depot.client.open(Request(environ))


def traced_peak(fn):
    """Run ``fn`` with tracemalloc on; return (result, peak bytes allocated by Python during it)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    return result, peak


def content_digest(hexdigest, algorithm="sha-256"):
    return "%s=:%s:" % (algorithm, base64.b64encode(bytes.fromhex(hexdigest)).decode())


def small_blob_schema(reference_schema, max_blob_bytes):
    schema = copy.deepcopy(reference_schema)
    schema["storage"]["blob_stores"]["primary"]["limits"]["max_blob_bytes"] = max_blob_bytes
    return schema


# --- uploads ----------------------------------------------------------------------------------------------

def test_a_64_mib_upload_streams_in_bounded_memory(ref_depot):
    expected = lazy_digest(BIG)
    body = LazyBody(BIG)
    response, peak = traced_peak(lambda: put_stream(ref_depot, "/v1/acme/big/1.0.0/x/blob", body))
    assert response.status_code == 201, response.data
    assert body.pos == BIG  # the whole body was consumed
    assert peak < MEMORY_BOUND, "upload of %d MiB peaked at %.1f MiB" % (BIG // MiB, peak / MiB)
    assert response.get_json() == {"ok": True, "digest": "sha256:" + expected, "size": BIG}

    meta = ref_depot.service.engine.state.get(b"kmeta\x00artifact/acme/big/1.0.0/x")
    assert b'"blob_digest":"sha256:%s"' % expected.encode() in meta
    stored = ref_depot.service.engine.blob_store("primary").locate("sha256:" + expected)
    assert stored is not None and stored.size == BIG
    with open(stored.path, "rb") as handle:
        hasher = hashlib.sha256()
        for chunk in iter(lambda: handle.read(MiB), b""):
            hasher.update(chunk)
    assert hasher.hexdigest() == expected
    assert ref_depot.temp_files() == []


def test_a_chunked_upload_without_content_length_is_stored_whole(ref_depot):
    size = 3 * MiB + 17
    expected = lazy_digest(size, b"chunked")
    response = put_stream(ref_depot, "/v1/acme/chunky/1.0.0/x/blob", LazyBody(size, b"chunked"), chunked=True)
    assert response.status_code == 201, response.data
    assert response.get_json() == {"ok": True, "digest": "sha256:" + expected, "size": size}


@pytest.mark.parametrize("how", ["header", "query"])
def test_a_correct_declared_digest_is_accepted(ref_depot, how):
    size = 2 * MiB + 3
    expected = lazy_digest(size)
    headers = {"Content-Digest": content_digest(expected)} if how == "header" else None
    query = {"digest": "sha256:" + expected} if how == "query" else None
    response = put_stream(ref_depot, "/v1/acme/big/1.0.0/x/blob", LazyBody(size), headers=headers, query=query)
    assert response.status_code == 201, response.data
    assert response.get_json()["digest"] == "sha256:" + expected
    latest = ref_depot.client.get("/v1/acme/big/latest", headers=ref_depot.headers(["read"]))
    assert latest.status_code == 200 and latest.get_json()["blob_digest"] == "sha256:" + expected


def test_a_bare_hex_query_digest_is_accepted(ref_depot):
    data = b"bare hex digest"
    hexdigest = hashlib.sha256(data).hexdigest()
    response = ref_depot.publish("acme", "big", "1.0.0", "x", data, query_string={"digest": hexdigest})
    assert response.status_code == 201, response.data


@pytest.mark.parametrize("how", ["header", "query"])
def test_a_wrong_declared_digest_is_400_and_nothing_is_stored(ref_depot, how):
    size = 2 * MiB + 3
    wrong = hashlib.sha256(b"something else").hexdigest()
    headers = {"Content-Digest": content_digest(wrong)} if how == "header" else None
    query = {"digest": "sha256:" + wrong} if how == "query" else None
    response = put_stream(ref_depot, "/v1/acme/big/1.0.0/x/blob", LazyBody(size), headers=headers, query=query)
    assert response.status_code == 400, response.data
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == "DIGEST_MISMATCH"
    assert wrong in error["message"]
    assert ref_depot.service.engine.state.get(b"kmeta\x00artifact/acme/big/1.0.0/x") is None
    nothing_stored(ref_depot)
    fetched = ref_depot.client.get("/v1/acme/big/1.0.0/x/blob", headers=ref_depot.headers(["read"]))
    assert fetched.status_code == 404

    # the coordinates are still free: the right bytes publish afterwards
    retry = put_stream(ref_depot, "/v1/acme/big/1.0.0/x/blob", LazyBody(size))
    assert retry.status_code == 201


def test_content_digest_and_query_digest_must_both_be_well_formed(ref_depot):
    data = b"well formed digests only"
    right = hashlib.sha256(data).hexdigest()
    bad_header = ref_depot.publish("acme", "big", "1.0.0", "x", data, headers={"Content-Digest": "sha-256=:abc:"})
    assert bad_header.status_code == 400 and bad_header.get_json()["error"]["code"] == "INVALID_DIGEST"
    bad_query = ref_depot.publish("acme", "big", "1.0.0", "x", data, query_string={"digest": "sha256:xyz"})
    assert bad_query.status_code == 400 and bad_query.get_json()["error"]["code"] == "INVALID_DIGEST"
    nothing_stored(ref_depot)
    ok = ref_depot.publish("acme", "big", "1.0.0", "x", data, headers={"Content-Digest": content_digest(right)})
    assert ok.status_code == 201


def test_a_sha_512_content_digest_is_checked_while_streaming_in_bounded_memory(ref_depot):
    size = 24 * MiB + 5
    sha256, sha512 = lazy_digest(size), lazy_digest(size, algorithm="sha512")
    header = "%s, %s" % (content_digest(sha256), content_digest(sha512, "sha-512"))
    body = LazyBody(size)
    response, peak = traced_peak(lambda: put_stream(ref_depot, "/v1/acme/big/1.0.0/x/blob", body,
                                                    headers={"Content-Digest": header}))
    assert response.status_code == 201, response.data
    assert peak < MEMORY_BOUND and body.largest_read <= MiB  # hashed chunk by chunk, never buffered whole
    only_512 = put_stream(ref_depot, "/v1/acme/big/1.0.1/x/blob", LazyBody(size),
                          headers={"Content-Digest": content_digest(sha512, "sha-512")})
    assert only_512.status_code == 201, only_512.data


def test_each_algorithm_of_a_content_digest_is_checked(ref_depot):
    data = b"two algorithms"
    sha256, sha512 = hashlib.sha256(data).hexdigest(), hashlib.sha512(data).hexdigest()
    wrong512 = hashlib.sha512(b"other bytes").hexdigest()
    header = "%s, %s" % (content_digest(sha256), content_digest(wrong512, "sha-512"))
    response = ref_depot.publish("acme", "big", "1.0.0", "x", data, headers={"Content-Digest": header})
    assert response.status_code == 400, response.data
    error = response.get_json()["error"]
    assert error["code"] == "DIGEST_MISMATCH" and error["field"] == "Content-Digest"
    assert "Content-Digest sha-512 %s" % wrong512 in error["message"] and sha512 in error["message"]
    nothing_stored(ref_depot)
    header = "sha-512=:%s:, sha-256=:%s:;note=x, md5=:AAAA:" % (
        base64.b64encode(bytes.fromhex(sha512)).decode(), base64.b64encode(bytes.fromhex(sha256)).decode())
    assert ref_depot.publish("acme", "big", "1.0.0", "x", data, headers={"Content-Digest": header}).status_code == 201


@pytest.mark.parametrize("wrong", ["query", "header", "both"])
def test_query_and_header_digests_are_both_checked_and_the_disagreeing_one_is_named(ref_depot, wrong):
    data = b"declared twice"
    right, other = hashlib.sha256(data).hexdigest(), hashlib.sha256(b"not these").hexdigest()
    header = content_digest(other if wrong in ("header", "both") else right)
    query = {"digest": "sha256:" + (other if wrong in ("query", "both") else right)}
    response = ref_depot.publish("acme", "big", "1.0.0", "x", data, headers={"Content-Digest": header},
                                 query_string=query)
    assert response.status_code == 400, response.data
    error = response.get_json()["error"]
    assert error["code"] == "DIGEST_MISMATCH"
    assert error["field"] == ("digest" if wrong == "query" else "Content-Digest")
    assert ("?digest=sha256:%s" % other in error["message"]) == (wrong in ("query", "both"))
    assert ("Content-Digest sha-256 %s" % other in error["message"]) == (wrong in ("header", "both"))
    nothing_stored(ref_depot)
    agreed = ref_depot.publish("acme", "big", "1.0.0", "x", data, headers={"Content-Digest": content_digest(right)},
                               query_string={"digest": "sha256:" + right})
    assert agreed.status_code == 201, agreed.data


@pytest.mark.parametrize("header,named", [("md5=:XrY7u+Ae7tCTyyK7j1rNww==:", "md5"),
                                          ("md5=:XrY7u+Ae7tCTyyK7j1rNww==:, sha=:AAAA:", "md5, sha")])
def test_a_content_digest_of_unknown_algorithms_only_is_400_before_the_body_is_read(ref_depot, header, named):
    body = LazyBody(2 * MiB)
    response = put_stream(ref_depot, "/v1/acme/big/1.0.0/x/blob", body, headers={"Content-Digest": header})
    assert response.status_code == 400, response.data
    error = response.get_json()["error"]
    assert error["code"] == "UNSUPPORTED_DIGEST_ALGORITHM" and error["field"] == "Content-Digest"
    assert "(%s)" % named in error["message"]
    assert body.largest_read == 0  # refused before a byte of the body was read
    nothing_stored(ref_depot)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_max_blob_bytes_is_413_and_leaves_no_temp_file(make_depot, reference_schema, chunked):
    depot = make_depot(small_blob_schema(reference_schema, MiB))
    body = LazyBody(8 * MiB)
    response = put_stream(depot, "/v1/acme/big/1.0.0/x/blob", body, chunked=chunked)
    assert response.status_code == 413, response.data
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "BLOB_TOO_LARGE"
    nothing_stored(depot)
    exact = put_stream(depot, "/v1/acme/big/1.0.0/x/blob", LazyBody(MiB), chunked=chunked)
    assert exact.status_code == 201, exact.data


def test_a_body_over_max_request_body_bytes_while_streaming_leaves_no_temp_file(make_depot, reference_schema):
    schema = copy.deepcopy(reference_schema)
    schema["ops"]["limits"]["max_request_body_bytes"] = 2 * MiB
    depot = make_depot(schema)
    response = put_stream(depot, "/v1/acme/big/1.0.0/x/blob", LazyBody(6 * MiB), chunked=True)
    assert response.status_code == 413, response.data
    assert response.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    nothing_stored(depot)


# --- downloads --------------------------------------------------------------------------------------------

def test_the_download_response_is_a_passthrough_file_stream(ref_depot):
    size = 4 * MiB
    assert put_stream(ref_depot, "/v1/acme/big/1.0.0/x/blob", LazyBody(size)).status_code == 201
    with ref_depot.app.test_request_context("/v1/acme/big/1.0.0/x/blob", headers=ref_depot.headers(["read"])):
        response = ref_depot.app.full_dispatch_request()
        try:
            assert response.status_code == 200
            assert response.direct_passthrough is True
            assert response.is_streamed
            assert not isinstance(response.response, (bytes, list, tuple))
            assert response.content_length == size
        finally:
            response.close()


def test_a_64_mib_download_streams_in_chunks_in_bounded_memory(ref_depot):
    expected = lazy_digest(BIG)
    assert put_stream(ref_depot, "/v1/acme/big/1.0.0/x/blob", LazyBody(BIG)).status_code == 201

    def download():
        response = ref_depot.client.get("/v1/acme/big/1.0.0/x/blob", headers=ref_depot.headers(["read"]),
                                        buffered=False)
        hasher, chunks, largest, total = hashlib.sha256(), 0, 0, 0
        try:
            assert response.status_code == 200
            assert int(response.headers["Content-Length"]) == BIG
            for chunk in response.response:
                hasher.update(chunk)
                chunks += 1
                largest = max(largest, len(chunk))
                total += len(chunk)
        finally:
            response.close()
        return hasher.hexdigest(), chunks, largest, total

    (digest, chunks, largest, total), peak = traced_peak(download)
    assert total == BIG
    assert digest == expected
    assert chunks >= 64  # iterated piecewise, not handed over as one buffer
    assert largest <= MiB
    assert peak < MEMORY_BOUND, "download of %d MiB peaked at %.1f MiB" % (BIG // MiB, peak / MiB)
