"""Slow clients cannot starve others: with 200 connections trickling headers, trickling a body a byte at a time
or downloading without reading, a real server (4 worker threads) still answers /health and normal requests,
and it closes every such connection once its timeout has passed."""
import pytest
import requests

from tests.conftest import ADMIN_PASSWORD, ServerProcess
from tests.slow_clients import Trickler, open_slow_connections

TIMEOUT_SECONDS = 3
BLOB = "/v1/acme/big/1.0.0/x/blob"
MIB = 1024 * 1024


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
        headers, bodies, readers = open_slow_connections(trickler, token, BLOB)
        trickler.start()

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
