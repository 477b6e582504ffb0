"""`python -m app migrate-store`: a repository's state and blobs copied between the embedded stores and the shared
ones (PostgreSQL, S3), then served from there: everything published reads the same, the event log goes on from
where it was, and a blob whose bytes do not match its digest stops the copy."""
import json
import os

import pytest

from app.tools.cli import main
from tests.conftest import Depot, needs_embedded_stores

VARIANT = "linux-amd64"
SHARED = ("DEPOT_STATE_URL", "DEPOT_BLOB_URL", "DEPOT_CACHE_URL")


@pytest.fixture
def places(postgres_state, s3_server):
    """(a DEPOT_STATE_URL of a table of its own, a DEPOT_BLOB_URL of a prefix of its own)"""
    return (postgres_state.state_url(), "s3://%s/%s?endpoint_url=%s&region=us-east-1"
            % (s3_server.bucket, s3_server.new_prefix().rstrip("/"), s3_server.endpoint_url))


@pytest.fixture
def embedded(monkeypatch):
    needs_embedded_stores()
    for name in SHARED:
        monkeypatch.delenv(name, raising=False)


def publish_some(depot):
    for version in ("1.0.0", "1.2.0", "1.10.0"):
        body = ("bytes of %s" % version).encode()
        assert depot.publish("acme", "moved", version, VARIANT, body).status_code == 201


def read_back(depot):
    """What the repository answers about what publish_some wrote."""
    read = depot.headers(["read"])
    latest = depot.client.get("/v1/acme/moved/latest", headers=read).get_json()
    versions = depot.client.get("/v1/acme/moved/versions", headers=read).get_json()
    assert "items" in versions, versions
    blob = depot.client.get("/v1/acme/moved/1.2.0/%s/blob" % VARIANT, headers=read)
    assert blob.status_code == 200
    return latest["version"], [v["version"] for v in versions["items"]], blob.get_data()


def migrate(capsys, data_dir, *options):
    code = main(["migrate-store", "--data-dir", data_dir, *options])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else captured.err)


def test_an_embedded_repository_moves_to_postgresql_and_s3_and_is_served_from_there(
        embedded, places, tmp_path, project_schema, monkeypatch, capsys):
    state_url, blob_url = places
    depot = Depot(str(tmp_path / "data"), project_schema)
    publish_some(depot)
    before = read_back(depot)
    depot.close()
    code, report = migrate(capsys, str(tmp_path / "data"), "--to-state", state_url, "--to-blobs", blob_url)
    assert code == 0, report
    assert report["state"]["keys_copied"] > 0 and report["blobs"]["primary"]["copied"] == 3
    monkeypatch.setenv("DEPOT_STATE_URL", state_url)
    monkeypatch.setenv("DEPOT_BLOB_URL", blob_url)
    moved = Depot(str(tmp_path / "data"), project_schema)
    try:
        assert read_back(moved) == before
        assert moved.service.engine.state.health()["kind"] == "postgresql"
        assert moved.publish("acme", "moved", "2.0.0", VARIANT, b"published after the move").status_code == 201
        assert read_back(moved)[0] == "2.0.0"
    finally:
        moved.close()
    code, error = migrate(capsys, str(tmp_path / "data"), "--to-state", state_url)
    assert code == 1 and "already holds a repository" in error


def test_a_shared_repository_moves_back_to_the_embedded_stores(places, tmp_path, project_schema, monkeypatch,
                                                             capsys):
    state_url, blob_url = places
    monkeypatch.setenv("DEPOT_STATE_URL", state_url)
    monkeypatch.setenv("DEPOT_BLOB_URL", blob_url)
    monkeypatch.delenv("DEPOT_CACHE_URL", raising=False)
    depot = Depot(str(tmp_path / "data"), project_schema)
    publish_some(depot)
    before = read_back(depot)
    depot.close()
    code, report = migrate(capsys, str(tmp_path / "data"), "--to-state", "embedded", "--to-blobs", "file://")
    assert code == 0, report
    assert report["blobs"]["primary"]["copied"] == 3
    monkeypatch.delenv("DEPOT_STATE_URL")
    monkeypatch.delenv("DEPOT_BLOB_URL")
    back = Depot(str(tmp_path / "data"), project_schema)
    try:
        assert read_back(back) == before and back.service.engine.state.health()["kind"] == "rocksdict"
    finally:
        back.close()


def test_a_blob_whose_bytes_do_not_match_its_digest_stops_the_copy(embedded, places, tmp_path, project_schema,
                                                                   capsys):
    depot = Depot(str(tmp_path / "data"), project_schema)
    publish_some(depot)
    damaged = depot.blob_files()[0]
    depot.close()
    with open(damaged, "r+b") as handle:
        handle.write(b"X")
    code, error = migrate(capsys, str(tmp_path / "data"), "--to-blobs", places[1])
    assert code == 1 and os.path.basename(damaged) in error and "do not match" in error


def test_nothing_to_move_is_refused(embedded, tmp_path, project_schema, capsys):
    Depot(str(tmp_path / "data"), project_schema).close()
    assert main(["migrate-store", "--data-dir", str(tmp_path / "data")]) == 2
    assert "nothing to move" in capsys.readouterr().err
    code, error = migrate(capsys, str(tmp_path / "data"), "--to-state", "embedded")
    assert code == 1 and "there already" in error
