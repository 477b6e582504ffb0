"""A real server process: start-up, first-admin bootstrap, streamed upload and download over a socket."""
import hashlib
import json
import socket
import stat
import subprocess
import sys

import pytest
import requests

from tests.conftest import ROOT, ServerProcess, free_port

CHUNK = 1024 * 1024


@pytest.fixture
def server(tmp_path):
    data_dir = tmp_path / "data"
    process = ServerProcess(data_dir, drop_env=("DEPOT_ADMIN_PASSWORD",))
    yield process.url, data_dir
    process.stop()


def test_first_start_creates_admin_with_private_password_file(server):
    url, data_dir = server
    password_file = data_dir / "admin.password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / "secret.key").stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 16
    login = requests.post(url + "/auth/login", json={"username": "admin", "password": password})
    assert login.status_code == 200 and login.json()["token"].count(".") == 2


def test_the_data_dir_and_everything_in_it_are_private_to_their_owner(server):
    url, data_dir = server
    password = (data_dir / "admin.password").read_text().strip()
    token = requests.post(url + "/auth/login", json={"username": "admin", "password": password}).json()["token"]
    published = requests.put(url + "/v1/acme/private/1.0.0/x/blob", data=b"bytes",
                             headers={"Authorization": "Bearer " + token})
    assert published.status_code == 201
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    shared = [str(path) for path in data_dir.rglob("*") if path.stat().st_mode & 0o077]
    assert shared == [] and (data_dir / "depot.db").exists()


def test_health_shows_where_stores_live_to_admins_only(server):
    url, data_dir = server
    anonymous = requests.get(url + "/health").json()
    assert anonymous["ok"] is True and str(data_dir) not in json.dumps(anonymous)
    password = (data_dir / "admin.password").read_text().strip()
    token = requests.post(url + "/auth/login", json={"username": "admin", "password": password}).json()["token"]
    detailed = requests.get(url + "/health", headers={"Authorization": "Bearer " + token}).json()
    assert detailed["stores"]["state"]["path"].startswith(str(data_dir))
    memory = detailed["stores"]["state"]["memory"]
    assert 0 <= memory["memtables_bytes"] + memory["block_cache_bytes"] <= memory["bound_bytes"]


def test_streamed_upload_and_ranged_download_over_a_socket(server):
    url, data_dir = server
    password = (data_dir / "admin.password").read_text().strip()
    token = requests.post(url + "/auth/login", json={"username": "admin", "password": password}).json()["token"]
    auth = {"Authorization": "Bearer " + token}
    hasher = hashlib.sha256()

    def body():  # chunked transfer: the server never learns the length in advance
        for i in range(32):
            chunk = bytes([i]) * CHUNK
            hasher.update(chunk)
            yield chunk
    response = requests.put(url + "/v1/acme/big/1.0.0/raw/blob", data=body(), headers=auth)
    assert response.status_code == 201, response.text
    digest = "sha256:" + hasher.hexdigest()
    assert response.json() == {"ok": True, "blob_digest": digest, "blob_size": 32 * CHUNK}
    ranged = requests.get(url + "/v1/acme/big/1.0.0/raw/blob", headers=dict(auth, Range="bytes=%d-%d"
                                                                               % (CHUNK - 1, CHUNK)))
    assert ranged.status_code == 206 and ranged.content == b"\x00\x01"
    full = requests.get(url + "/v1/acme/big/1.0.0/raw/blob", headers=auth, stream=True)
    streamed = hashlib.sha256()
    for chunk in full.iter_content(CHUNK):
        streamed.update(chunk)
    assert "sha256:" + streamed.hexdigest() == digest == full.headers["ETag"].strip('"')


def test_oversized_declared_body_is_refused_with_json_before_it_is_sent(server):
    url, _ = server
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"PUT /v1/a/b/1.0.0/x/blob HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
        reply = b""
        while b'"}}' not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413")
    assert '"code":"PAYLOAD_TOO_LARGE"' in reply and "application/json" in reply


def test_serve_refuses_a_schema_that_fails_its_checks(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"ops": {"allowed": ["kv.get"]}, "api": {"routes": [{"id": "r", "method": "GET", '
                      '"path": "/x", "pipeline": [{"op": "kv.put", "args": {}}]}]}}')
    result = subprocess.run([sys.executable, "-m", "app", "serve", "--schema", str(broken), "--data-dir",
                             str(tmp_path / "d"), "--port", str(free_port())], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "api.routes[0].pipeline[0].op" in result.stderr and "refusing to start" in result.stderr
