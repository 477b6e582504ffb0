"""The seed loader against a real server process: first load, idempotent re-run, conflicts, bad credentials."""
import hashlib
import json
import subprocess
import sys

import pytest
import requests

from tests.conftest import ROOT, ServerProcess, free_port

PASSWORD = "seed loader test password"
SEED_FILE = ROOT / "seed_data" / "example_packages.json"
LOADER = ROOT / "seed_data" / "load_seed_data.py"
SEED = json.loads(SEED_FILE.read_text(encoding="utf-8"))
STEPS = len(SEED["artifacts"]) + len(SEED["tags"])


def _digest(text):
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_loader(url, *args):
    return subprocess.run([sys.executable, str(LOADER), "--url", url, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def admin_args(password=PASSWORD):
    return ("--username", "admin", "--password", password)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("seed") / "data", env={"DEPOT_ADMIN_PASSWORD": PASSWORD})
    yield process.url
    process.stop()


@pytest.fixture(scope="module")
def first_run(server):
    return run_loader(server, *admin_args())


@pytest.fixture(scope="module")
def auth(server, first_run):
    token = requests.post(server + "/auth/login", json={"username": "admin", "password": PASSWORD}).json()["token"]
    return {"Authorization": "Bearer " + token}


def test_first_run_publishes_everything(first_run):
    assert first_run.returncode == 0, first_run.stdout + first_run.stderr
    assert "summary: %d published, 0 already present, 0 failed" % STEPS in first_run.stdout


def test_every_artifact_has_its_digest_description_and_labels(server, first_run, auth):
    for artifact in SEED["artifacts"]:
        path = "/v1/%(namespace)s/%(name)s/%(version)s/%(variant)s" % artifact
        meta = requests.get(server + path, headers=auth).json()
        assert meta["blob_digest"] == _digest(artifact["content"]), path
        assert meta["blob_size"] == len(artifact["content"].encode("utf-8"))
        assert meta["description"] == artifact["description"]
        assert meta["labels"] == artifact["labels"]
        blob = requests.get(server + path + "/blob", headers=auth)
        assert blob.content.decode("utf-8") == artifact["content"]


def test_latest_and_tags_resolve(server, first_run, auth):
    latest = requests.get(server + "/v1/acme/hello-world/latest", headers=auth).json()
    assert latest["version"] == "2.0.0"
    contents = {(a["namespace"], a["name"], a["version"], a["variant"]): a["content"] for a in SEED["artifacts"]}
    for tag in SEED["tags"]:
        path = "/v1/%(namespace)s/%(name)s/tags/%(tag)s" % tag
        doc = requests.get(server + path, headers=auth).json()
        assert (doc["version"], doc["variant"]) == (tag["version"], tag["variant"])
        download = requests.get(server + path + "/blob", headers=auth)  # 307 to the blob, followed
        assert download.status_code == 200
        assert download.text == contents[(tag["namespace"], tag["name"], tag["version"], tag["variant"])]
    names = {t["tag"] for t in requests.get(server + "/v1/acme/hello-world/tags", headers=auth).json()["items"]}
    assert names == {"latest", "stable"}


def test_second_run_finds_everything_already_present(server, first_run):
    again = run_loader(server, *admin_args())
    assert again.returncode == 0, again.stdout + again.stderr
    assert "summary: 0 published, %d already present, 0 failed" % STEPS in again.stdout
    steps = [line for line in again.stdout.splitlines() if not line.startswith("summary:")]
    assert len(steps) == STEPS and all(line.startswith("already present") for line in steps)


def test_conflicting_content_fails_and_is_named(server, first_run, auth, tmp_path):
    token = requests.post(server + "/auth/tokens", headers=auth,
                          json={"name": "seed-test", "scopes": ["read", "write"]}).json()["token"]
    changed = dict(next(a for a in SEED["artifacts"] if a["version"] == "2.0.0" and a["variant"] == "linux-amd64"))
    original = changed["content"]
    changed["content"] = original + "# a different build\n"
    conflict_file = tmp_path / "conflict.json"
    conflict_file.write_text(json.dumps({"artifacts": [changed], "tags": []}))
    result = run_loader(server, "--token", token, "--file", str(conflict_file))
    assert result.returncode != 0
    assert "FAILED  acme/hello-world 2.0.0 (linux-amd64)" in result.stdout
    assert "conflict" in result.stdout and _digest(original) in result.stdout
    assert "summary: 0 published, 0 already present, 1 failed" in result.stdout
    meta = requests.get(server + "/v1/acme/hello-world/2.0.0/linux-amd64", headers=auth).json()
    assert meta["blob_digest"] == _digest(original)


def test_wrong_password_is_refused_clearly(server, first_run):
    result = run_loader(server, *admin_args("not the password"))
    assert result.returncode != 0
    assert "login as 'admin' failed: HTTP 401 INVALID_CREDENTIALS" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_server_is_reported_without_a_traceback():
    result = run_loader("http://127.0.0.1:%d" % free_port(), "--token", "dpt_unused")
    assert result.returncode != 0
    assert "cannot connect to" in result.stderr and "Traceback" not in result.stderr
