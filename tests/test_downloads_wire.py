"""Blob downloads on the wire, from a real server: the I/O thread sends a file response with os.sendfile
(app/http/server.py), so what reaches the client must be exactly the bytes, the range or nothing (HEAD) that
the response announces, however fast or slowly it is read, several at once."""
import hashlib
import os
import socket
import threading

import pytest
import requests

from tests.conftest import ADMIN_PASSWORD, ServerProcess, join_all

SIZE = 24 * 1024 * 1024 + 12345  # several sendfile calls, and a tail that is no round number


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("downloads") / "data",
                            env={"DEPOT_ADMIN_PASSWORD": ADMIN_PASSWORD})
    token = requests.post(process.url + "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD},
                          timeout=30).json()["token"]
    process.headers = {"Authorization": "Bearer " + token}
    process.data = os.urandom(SIZE)
    process.blob = process.url + "/v1/acme/big/1.0.0/x/blob"
    assert requests.put(process.blob, data=process.data, headers=process.headers, timeout=120).status_code == 201
    yield process
    process.stop()


def test_a_whole_blob_arrives_byte_for_byte(server):
    answer = requests.get(server.blob, headers=server.headers, timeout=120)
    assert answer.status_code == 200 and int(answer.headers["Content-Length"]) == SIZE
    assert hashlib.sha256(answer.content).digest() == hashlib.sha256(server.data).digest()


@pytest.mark.parametrize("first, last", [(0, 0), (1, 9 * 1024 * 1024), (SIZE - 100, SIZE - 1), (12345, SIZE - 1)])
def test_a_range_arrives_exactly(server, first, last):
    answer = requests.get(server.blob, headers=dict(server.headers, Range="bytes=%d-%d" % (first, last)), timeout=120)
    assert answer.status_code == 206 and answer.headers["Content-Range"] == "bytes %d-%d/%d" % (first, last, SIZE)
    assert answer.content == server.data[first:last + 1]


def test_head_sends_no_body_and_the_connection_goes_on(server):
    with requests.Session() as session:
        head = session.head(server.blob, headers=server.headers, timeout=60)
        assert head.status_code == 200 and head.content == b"" and int(head.headers["Content-Length"]) == SIZE
        after = session.get(server.blob, headers=dict(server.headers, Range="bytes=0-3"), timeout=60)
        assert after.content == server.data[:4]  # the same connection: nothing of the body was left on it


def test_a_stalled_reader_and_fast_ones_each_get_their_bytes(server):
    """A reader that stops with most of the blob unread leaves its socket full (the server's sends would block)
    while others download the whole blob; once it reads again it gets every byte that was left."""
    digests, errors = [], []
    stalled, fast_done = threading.Event(), threading.Event()

    def stalling():
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
                sock.sendall(("GET /v1/acme/big/1.0.0/x/blob HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                              "Connection: close\r\n\r\n" % server.headers["Authorization"]).encode())
                received = bytearray()
                while len(received) < 1024 * 1024:
                    received += sock.recv(65536)
                stalled.set()
                assert fast_done.wait(120)
                while True:
                    chunk = sock.recv(1024 * 1024)
                    if not chunk:
                        break
                    received += chunk
            digests.append(hashlib.sha256(bytes(received).split(b"\r\n\r\n", 1)[1]).digest())
        except Exception as exc:  # noqa: BLE001 - reported by join_all
            stalled.set()
            errors.append(exc)

    def fast():
        try:
            assert stalled.wait(120)
            digests.append(hashlib.sha256(requests.get(server.blob, headers=server.headers, timeout=120).content)
                           .digest())
        except Exception as exc:  # noqa: BLE001 - reported by join_all
            errors.append(exc)
    readers = [threading.Thread(target=fast) for _ in range(3)]
    slow = threading.Thread(target=stalling)
    for thread in [slow] + readers:
        thread.start()
    join_all(readers, errors)
    fast_done.set()
    join_all([slow], errors)
    assert digests == [hashlib.sha256(server.data).digest()] * 4
