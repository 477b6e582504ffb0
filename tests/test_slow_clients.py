"""Slow clients cannot starve others: with 200 connections trickling headers, trickling a body a byte at a time
or downloading without reading, a real server (4 worker threads) still answers /health and normal requests,
and it closes every such connection once its timeout has passed."""
import socket
import threading

import pytest
import requests

from tests.conftest import ADMIN_PASSWORD, ServerProcess

TIMEOUT_SECONDS = 3
BLOB = "/v1/acme/big/1.0.0/x/blob"
MIB = 1024 * 1024


class Trickler:
    """Connections that each send their next piece every half second, until the server closes them."""

    def __init__(self, port):
        self.port = port
        self.pieces = {}  # socket -> the pieces it has still to send
        self.closed = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def open(self, head, pieces=(), receive_buffer=None):
        sock = socket.socket()
        if receive_buffer:  # a reader that takes nothing: a small window fills at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(("127.0.0.1", self.port))
        sock.sendall(head)
        self.pieces[sock] = list(pieces)
        return sock

    def _run(self):
        while not self.stop.wait(0.5):  # the attack's own pace, not a synchronisation
            for sock, pieces in list(self.pieces.items()):
                if pieces and sock not in self.closed:
                    try:
                        sock.send(pieces.pop(0))
                    except OSError:
                        self.closed.add(sock)

    def closed_by_server(self, sock, wait):
        """Whether the server has closed ``sock`` (reading what it sent first), waiting up to ``wait`` s."""
        if sock in self.closed:
            return True
        sock.settimeout(wait)
        try:
            while sock.recv(65536):
                pass
        except socket.timeout:
            return False
        except OSError:
            pass
        return True


@pytest.mark.attack
def test_two_hundred_slow_connections_neither_starve_others_nor_stay_open(tmp_path):
    server = ServerProcess(tmp_path / "data", args=["--header-timeout", str(TIMEOUT_SECONDS), "--idle-timeout",
                                                    str(TIMEOUT_SECONDS), "--min-body-rate", "1024"])
    trickler = None
    try:
        token = requests.post(server.url + "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD},
                              timeout=30).json()["token"]
        auth = {"Authorization": "Bearer " + token}
        assert requests.put(server.url + BLOB, data=b"z" * (10 * MIB), headers=auth, timeout=60).status_code == 201
        trickler = Trickler(int(server.url.rsplit(":", 1)[1]))
        auth_line = ("Authorization: Bearer %s\r\n" % token).encode()
        headers = [trickler.open(b"GET /health HTTP/1.1\r\n", [b"X-Slow: header\r\n"] * 1000) for _ in range(70)]
        bodies = [trickler.open(b"PUT /v1/acme/slow/1.0.%d/x/blob HTTP/1.1\r\nHost: depot\r\n" % i + auth_line +
                                b"Content-Length: 1048576\r\n\r\n", [b"b"] * 1000) for i in range(70)]
        readers = [trickler.open(b"GET " + BLOB.encode() + b" HTTP/1.1\r\nHost: depot\r\n" + auth_line + b"\r\n",
                                 receive_buffer=4096) for _ in range(60)]
        trickler.thread.start()

        for _ in range(10):  # every slow connection is open: the others are still served
            assert requests.get(server.url + "/health", timeout=10).status_code == 200
        assert requests.put(server.url + "/v1/acme/fast/1.0.0/x/blob", data=b"fast", headers=auth,
                            timeout=10).status_code == 201
        assert requests.get(server.url + "/v1/acme/fast/latest", headers=auth, timeout=10).json()["version"] == "1.0.0"

        for sock in headers + bodies + readers:  # ... and each is closed once its timeout has passed
            assert trickler.closed_by_server(sock, wait=TIMEOUT_SECONDS * 10), "a slow connection stayed open"
        assert requests.get(server.url + "/v1/acme/slow/versions", headers=auth, timeout=10).json()["total"] == 0
    finally:
        if trickler is not None:
            trickler.stop.set()
        server.stop()
