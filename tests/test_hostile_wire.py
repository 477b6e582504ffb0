"""Hostile requests on the wire, to a real server: malformed HTTP the server itself must refuse, lying lengths,
broken chunking, smuggling shapes, traversal, NUL and control characters, bad digests. Every one is answered
with a JSON 4xx carrying X-Request-Id (never HTML, never a 5xx), and nothing is stored."""
import json
import socket

import pytest
import requests

from tests.conftest import ADMIN_PASSWORD, ServerProcess

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    process = ServerProcess(data_dir, env={"DEPOT_ADMIN_PASSWORD": ADMIN_PASSWORD})
    token = requests.post(process.url + "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD},
                          timeout=30).json()["token"]
    process.token, process.data_dir = token, data_dir
    assert requests.put(process.url + "/v1/acme/tool/1.0.0/x/blob", data=b"existing",
                        headers={"Authorization": "Bearer " + token}).status_code == 201
    yield process
    process.stop()


def exchange(server, raw, shut_write=False):
    """Send ``raw`` bytes on a fresh connection and read the answer until the server closes or it is complete.
    -> (status, headers dict with lower-case names, body bytes)."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            reply += chunk
            if _complete(reply):
                break
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), "no HTTP answer: %r" % reply[:200]
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), headers, body


def _complete(reply):
    head, sep, body = reply.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def stored(server):
    """Every event and blob file the server holds: any write adds to one or the other."""
    events = requests.get(server.url + "/admin/replication/events", params={"after": 0},
                          headers={"Authorization": "Bearer " + server.token}, timeout=30).json()["events"]
    blobs = sorted(p for p in (server.data_dir / "data" / "blobs").rglob("*") if p.is_file())
    return [e["seq"] for e in events], blobs


def request(method, target, headers=(), body=b"", auth=True, server=None):
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: depot"]
    if auth:
        lines.append("Authorization: Bearer " + server.token)
    lines += list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


PUT = "/v1/acme/hostile/1.0.0/x/blob"
CASES = {
    # what the HTTP server itself must refuse
    "bad header name": lambda s: request("GET", "/v1", ["Bad Header: x"], server=s),
    "control character in a header value": lambda s: request("GET", "/v1", ["X-Depot-Description: a\x01b"],
                                                             server=s),
    "NUL in a header value": lambda s: request("PUT", PUT, ["Content-Length: 1", "X-Depot-Description: a\x00b"],
                                               b"x", server=s),
    "request line over 8 KiB": lambda s: request("GET", "/v1/" + "a" * 9000, server=s),
    "too many headers": lambda s: request("GET", "/v1", ["X-H%d: v" % i for i in range(300)], server=s),
    "one header of 64 KiB": lambda s: request("GET", "/v1", ["X-Big: " + "v" * 65536], server=s),
    "conflicting Content-Length": lambda s: request("PUT", PUT, ["Content-Length: 1", "Content-Length: 2"], b"xy",
                                                    server=s),
    "Content-Length and chunked together": lambda s: request(
        "PUT", PUT, ["Content-Length: 5", "Transfer-Encoding: chunked"], b"1\r\nx\r\n0\r\n\r\n", server=s),
    "negative Content-Length": lambda s: request("PUT", PUT, ["Content-Length: -1"], b"x", server=s),
    "non-numeric Content-Length": lambda s: request("PUT", PUT, ["Content-Length: abc"], b"x", server=s),
    "unknown transfer coding": lambda s: request("PUT", PUT, ["Transfer-Encoding: gzip, chunked"],
                                                 b"1\r\nx\r\n0\r\n\r\n", server=s),
    "space before a header colon": lambda s: request("PUT", PUT, ["Transfer-Encoding : chunked"],
                                                     b"1\r\nx\r\n0\r\n\r\n", server=s),
    "transfer coding listed twice": lambda s: request("PUT", PUT, ["Transfer-Encoding: chunked",
                                                                   "Transfer-Encoding: identity"],
                                                      b"1\r\nx\r\n0\r\n\r\n", server=s),
    "look-alike transfer coding": lambda s: request("PUT", PUT, ["Transfer-Encoding: xchunked"],
                                                    b"1\r\nx\r\n0\r\n\r\n", server=s),
    "signed Content-Length": lambda s: request("PUT", PUT, ["Content-Length: +1"], b"x", server=s),
    "Content-Length list": lambda s: request("PUT", PUT, ["Content-Length: 1, 1"], b"x", server=s),
    "invalid chunk size": lambda s: request("PUT", PUT, ["Transfer-Encoding: chunked"], b"zz\r\nx\r\n0\r\n\r\n",
                                            server=s),
    "garbage request line": lambda s: b"HELLO THERE\r\n\r\n",
    "invalid method token": lambda s: request("G@T", "/v1", server=s),
    "obsolete header folding": lambda s: request("GET", "/v1", ["X-Depot-Description: a", " folded"], server=s),
    # what the app refuses
    "traversal with encoded slashes": lambda s: request("PUT", "/v1/acme/..%2f..%2fetc/1.0.0/x/blob",
                                                        ["Content-Length: 1"], b"x", server=s),
    "dot-dot segment": lambda s: request("PUT", "/v1/acme/%2e%2e/1.0.0/x/blob", ["Content-Length: 1"], b"x",
                                         server=s),
    "backslash": lambda s: request("PUT", "/v1/acme/a%5cb/1.0.0/x/blob", ["Content-Length: 1"], b"x", server=s),
    "NUL in the path": lambda s: request("PUT", "/v1/acme/a%00b/1.0.0/x/blob", ["Content-Length: 1"], b"x",
                                         server=s),
    "control character in the path": lambda s: request("PUT", "/v1/acme/a%01b/1.0.0/x/blob", ["Content-Length: 1"],
                                                       b"x", server=s),
    "malformed Content-Digest": lambda s: request("PUT", PUT, ["Content-Length: 1",
                                                               "Content-Digest: sha-256=:not base64:"], b"x",
                                                  server=s),
    "wrong Content-Digest": lambda s: request("PUT", PUT, ["Content-Length: 1", "Content-Digest: sha-256=:"
                                                           "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"], b"x",
                                              server=s),
    "malformed digest query": lambda s: request("PUT", PUT + "?digest=sha256:XYZ", ["Content-Length: 1"], b"x",
                                                server=s),
    "deeply nested JSON": lambda s: request("PUT", "/v1/acme/tool/tags/deep", [
        "Content-Type: application/json", "Content-Length: 20000"], b"[" * 10000 + b"]" * 10000, server=s),
    "Content-Length beyond the limit": lambda s: request("PUT", PUT, ["Content-Length: 99999999999"], server=s),
}
SHORT_BODIES = {
    "body shorter than its Content-Length": lambda s: request("PUT", PUT, ["Content-Length: %d" % (10 * MIB)],
                                                              b"a" * MIB, server=s),
    "chunked body without its last chunk": lambda s: request("PUT", PUT, ["Transfer-Encoding: chunked"],
                                                             b"100000\r\n" + b"a" * MIB + b"\r\n", server=s),
    "chunk cut short": lambda s: request("PUT", PUT, ["Transfer-Encoding: chunked"], b"100000\r\n" + b"a" * 1000,
                                         server=s),
}


def assert_refused_in_json(status, headers, body, what):
    assert 400 <= status < 500, "%s: %d %r" % (what, status, body[:200])
    assert headers.get("content-type", "").startswith("application/json"), "%s: %r" % (what, headers)
    assert "x-request-id" in headers, what
    assert json.loads(body)["error"]["code"], what


@pytest.mark.attack
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_requests_get_a_json_4xx_and_store_nothing(server, case):
    before = stored(server)
    status, headers, body = exchange(server, CASES[case](server))
    assert_refused_in_json(status, headers, body, case)
    assert stored(server) == before


@pytest.mark.attack
@pytest.mark.parametrize("case", sorted(SHORT_BODIES))
def test_bodies_that_end_early_are_refused_and_store_nothing(server, case):
    before = stored(server)
    status, headers, body = exchange(server, SHORT_BODIES[case](server), shut_write=True)
    assert_refused_in_json(status, headers, body, case)
    assert stored(server) == before
    whole = requests.put(server.url + PUT, data=b"a" * MIB, headers={"Authorization": "Bearer " + server.token})
    assert whole.status_code in (201, 409)  # the coordinates were never taken by the short body
    if whole.status_code == 409:
        meta = requests.get(server.url + PUT[:-len("/blob")], headers={"Authorization": "Bearer " + server.token})
        assert meta.json()["blob_size"] == MIB


@pytest.mark.attack
def test_a_label_header_with_an_underscore_is_refused_not_dropped(server):
    """waitress leaves a header whose name has an underscore out of the WSGI environ; a label the client sent
    must not silently disappear: the publish is refused, naming the header, and nothing is stored."""
    before = stored(server)
    target = "/v1/acme/labelled/1.0.0/x/blob"
    status, headers, body = exchange(server, request("PUT", target, [
        "Content-Length: 1", "X-Depot-Label-os: linux", "X-Depot-Label-build_id: 7"], b"x", server=server))
    assert_refused_in_json(status, headers, body, "underscore label")
    error = json.loads(body)["error"]
    assert status == 400 and error["code"] == "INVALID_HEADER" and error["field"] == "X-Depot-Label-build_id"
    assert stored(server) == before
    # an underscore header no step reads is dropped as before, and harmless
    status, _, body = exchange(server, request("PUT", target, [
        "Content-Length: 1", "X-Depot-Label-build-id: 7", "X_Trace_Id: abc"], b"x", server=server))
    assert status == 201, body
    meta = requests.get(server.url + target[:-len("/blob")], headers={"Authorization": "Bearer " + server.token},
                        timeout=30).json()
    assert meta["labels"] == {"build-id": "7"}
