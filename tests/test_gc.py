"""Garbage collection: blobs of deleted versions are reclaimed; referenced and recent blobs are kept."""
import hashlib
import os
import subprocess
import sys

import pytest

from tests.conftest import BLOB_KINDS, ROOT, with_blob_kind


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", BLOB_KINDS)
def test_deleted_versions_bytes_are_reclaimed_and_live_ones_kept(make_depot, project_schema, kind, request):
    depot = make_depot(with_blob_kind(project_schema, kind, request))
    for version, data in (("1.0.0", b"kept bytes"), ("1.1.0", b"deleted bytes")):
        assert depot.publish("acme", "gc", version, "x", data).status_code == 201
    assert depot.client.delete("/v1/acme/gc/1.1.0/x", headers=depot.headers(["admin"])).status_code == 200
    store = depot.service.engine.blob_store("primary")
    admin = depot.headers(["admin"])

    recent = depot.client.post("/admin/gc", json={}, headers=admin).get_json()
    assert recent["removed"] == [] and recent["too_recent"] == 1  # within the schema's grace period

    dry = depot.client.post("/admin/gc", json={"grace_seconds": 0, "dry_run": True}, headers=admin).get_json()
    assert dry["removed"] == [digest(b"deleted bytes")] and store.locate(digest(b"deleted bytes")) is not None

    done = depot.client.post("/admin/gc", json={"grace_seconds": 0}, headers=admin).get_json()
    assert done["removed"] == [digest(b"deleted bytes")] and done["kept"] == 1
    assert store.locate(digest(b"deleted bytes")) is None
    fetched = depot.client.get("/v1/acme/gc/1.0.0/x/blob", headers=depot.headers(["read"]))
    assert fetched.data == b"kept bytes"


def test_a_blob_published_again_after_the_mark_is_not_swept(make_depot, project_schema):
    depot = make_depot(project_schema)
    assert depot.publish("acme", "gc", "1.0.0", "x", b"shared").status_code == 201
    assert depot.client.delete("/v1/acme/gc/1.0.0/x", headers=depot.headers(["admin"])).status_code == 200
    path = depot.service.engine.blob_store("primary").locate(digest(b"shared")).path
    os.utime(path, (1, 1))  # as if unreferenced for ages
    assert depot.publish("acme", "gc", "2.0.0", "x", b"shared").status_code == 201  # the same bytes again
    result = depot.client.post("/admin/gc", json={"grace_seconds": 3600}, headers=depot.headers(["admin"]))
    assert result.get_json()["removed"] == [] and os.path.exists(path)


def test_gc_needs_admin_and_the_cli_works_offline(make_depot, project_schema, tmp_path):
    depot = make_depot(project_schema)
    assert depot.client.post("/admin/gc", json={}, headers=depot.headers(["write"])).status_code == 403
    depot.close()
    result = subprocess.run([sys.executable, "-m", "app", "gc", "--data-dir", depot.data_dir, "--dry-run"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and '"dry_run": true' in result.stdout
