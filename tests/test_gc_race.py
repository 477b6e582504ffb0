"""Garbage collection racing writers: nothing a committed or in-flight write needs is ever removed, for any
grace period, 0 included.

The deterministic tests put a write at the exact point of a collection where the old protocol lost it (between
the mark and the sweep, or while an upload streams); the loop (marked `attack`) races collections against
publishes, re-publishes of collected bytes, uploads and replication in threads, and checks every acknowledged
write afterwards.
"""
import hashlib
import os
import threading

import pytest

from app.repository import gc
from tests.conftest import GatedBody, join_all, send_chunked
from tests.test_replication import admin, apply, copy_blobs, pair, shipped  # noqa: F401 (pair: a fixture)

MIB = 1024 * 1024


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def collect(depot, **body):
    response = depot.client.post("/admin/gc", json=dict({"grace_seconds": 0}, **body), headers=admin(depot))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def fetch(depot, path):
    return depot.client.get(path, headers=depot.headers(("read",)))


def during_the_sweep(monkeypatch, action):
    """Run ``action`` once, right after the next collection has marked and before it sweeps."""
    real_mark = gc.mark

    def mark_then_act(*args):
        marked = real_mark(*args)
        action()
        return marked
    monkeypatch.setattr(gc, "mark", mark_then_act)


def test_a_publish_committed_between_mark_and_sweep_keeps_its_bytes(make_depot, project_schema, monkeypatch):
    depot = make_depot(project_schema)
    data = os.urandom(MIB)
    published = []
    during_the_sweep(monkeypatch, lambda: published.append(depot.publish("acme", "late", "1.0.0", "x", data)))
    result = collect(depot)
    assert published[0].status_code == 201 and result["removed"] == []
    assert fetch(depot, "/v1/acme/late/1.0.0/x/blob").data == data


def test_republishing_collected_bytes_during_the_sweep_keeps_them(make_depot, project_schema, monkeypatch):
    depot = make_depot(project_schema)
    data = os.urandom(MIB)
    assert depot.publish("acme", "again", "1.0.0", "x", data).status_code == 201
    assert depot.client.delete("/v1/acme/again/1.0.0/x", headers=admin(depot)).status_code == 200
    published = []
    during_the_sweep(monkeypatch, lambda: published.append(depot.publish("acme", "again", "2.0.0", "x", data)))
    result = collect(depot)
    assert published[0].status_code == 201 and digest(data) not in result["removed"]
    assert fetch(depot, "/v1/acme/again/2.0.0/x/blob").data == data


def test_an_upload_in_progress_survives_a_collection(make_depot, project_schema):
    depot = make_depot(project_schema)
    data = os.urandom(2 * MIB)
    streaming, collected = threading.Event(), threading.Event()
    results, errors = [], []

    def upload():  # the first MiB is in the upload's temporary file when the body pauses
        try:
            results.append(depot.client.put("/v1/acme/slow/1.0.0/x/blob", headers=depot.headers(),
                                            input_stream=GatedBody(data, streaming, collected, after=MIB)))
        except BaseException as exc:
            errors.append(exc)
            streaming.set()
    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    assert streaming.wait(60) and not errors
    result = collect(depot)
    collected.set()
    join_all([thread], errors, "the upload")
    assert result["temp_files"] == {"removed": 0, "removed_bytes": 0, "kept": 1}
    assert results[0].status_code == 201, results[0].get_json()
    assert fetch(depot, "/v1/acme/slow/1.0.0/x/blob").data == data


def test_bytes_a_replica_received_outlive_a_collection_until_their_event_applies(pair):
    primary, replica = pair
    events = shipped(primary)["events"]
    copy_blobs(primary, replica, events)
    assert collect(replica)["removed"] == []  # nothing names them yet: leased, not orphaned
    assert apply(replica, events).status_code == 200
    assert fetch(replica, "/v1/acme/tool/1.0.0/linux/blob").data == b"one"


def test_a_dry_run_reports_what_a_run_then_does(make_depot, project_schema):
    depot = make_depot(project_schema)
    for version, data in (("1.0.0", b"live"), ("1.1.0", b"orphaned"), ("1.2.0", b"orphaned too")):
        assert depot.publish("acme", "dry", version, "x", data).status_code == 201
    for version in ("1.1.0", "1.2.0"):
        assert depot.client.delete("/v1/acme/dry/%s/x" % version, headers=admin(depot)).status_code == 200
    leftover = os.path.join(depot.service.engine.blob_store("primary").tmp_dir, "upload-leftover")
    with open(leftover, "wb") as handle:
        handle.write(b"x" * 100)

    dry = collect(depot, dry_run=True)
    real = collect(depot)
    assert dry.pop("dry_run") is True and real.pop("dry_run") is False
    assert dry == real
    assert sorted(real["removed"]) == sorted([digest(b"orphaned"), digest(b"orphaned too")])
    assert real["orphans"] == {"count": 2, "bytes": len(b"orphaned") + len(b"orphaned too"), "removed": 2,
                               "within_grace": 0, "in_use": 0}
    assert real["temp_files"] == {"removed": 1, "removed_bytes": 100, "kept": 0}
    assert not os.path.exists(leftover)


def test_orphans_within_the_grace_period_are_reported_not_removed(make_depot, project_schema):
    depot = make_depot(project_schema)
    assert depot.publish("acme", "young", "1.0.0", "x", b"young orphan").status_code == 201
    assert depot.client.delete("/v1/acme/young/1.0.0/x", headers=admin(depot)).status_code == 200
    result = collect(depot, grace_seconds=3600)
    assert result["removed"] == [] and result["orphans"]["within_grace"] == 1
    assert result["orphans"]["bytes"] == len(b"young orphan")


def test_one_collection_at_a_time(make_depot, project_schema, monkeypatch):
    depot = make_depot(project_schema)
    answers = []
    during_the_sweep(monkeypatch, lambda: answers.append(depot.client.post("/admin/gc", json={},
                                                                           headers=admin(depot))))
    collect(depot)
    assert answers[0].status_code == 409 and answers[0].get_json()["error"]["code"] == "GC_RUNNING"


@pytest.mark.parametrize("body, field", [({"dry-run": True}, "dry-run"), ({"dry_run": "yes"}, "dry_run"),
                                         ({"grace_seconds": 10 ** 30}, "grace_seconds"),
                                         ({"grace_seconds": -1}, "grace_seconds")])
def test_gc_refuses_unknown_or_malformed_fields(make_depot, project_schema, body, field):
    depot = make_depot(project_schema)
    assert depot.publish("acme", "keep", "1.0.0", "x", b"bytes").status_code == 201
    assert depot.client.delete("/v1/acme/keep/1.0.0/x", headers=admin(depot)).status_code == 200
    response = depot.client.post("/admin/gc", json=body, headers=admin(depot))
    assert response.status_code == 400 and response.get_json()["error"]["field"] == field
    assert depot.service.engine.blob_store("primary").locate(digest(b"bytes")) is not None


def test_gc_reads_a_chunked_body(make_depot, project_schema):
    depot = make_depot(project_schema)
    assert depot.publish("acme", "chunk", "1.0.0", "x", b"chunked").status_code == 201
    assert depot.client.delete("/v1/acme/chunk/1.0.0/x", headers=admin(depot)).status_code == 200
    response = send_chunked(depot.client, "POST", "/admin/gc", b'{"grace_seconds": 0, "dry_run": true}',
                            dict(admin(depot), **{"Content-Type": "application/json"}))
    assert response.status_code == 200 and response.get_json()["dry_run"] is True
    assert depot.service.engine.blob_store("primary").locate(digest(b"chunked")) is not None


# --- the loop ---------------------------------------------------------------------------------------------------

GC_RACE_TRIALS = int(os.environ.get("DEPOT_GC_RACE_TRIALS", "30"))


@pytest.mark.attack
def test_collections_racing_every_kind_of_write_lose_nothing(make_depot, project_schema):
    """Collections with grace 0 run back to back while writers publish new bytes, publish again bytes whose
    only version was deleted, stream slow uploads, and feed a replica; every acknowledged write is intact."""
    depot = make_depot(project_schema)
    primary = make_depot(project_schema, "primary")
    revived = [os.urandom(64 * 1024) for _ in range(GC_RACE_TRIALS)]
    for i, data in enumerate(revived):
        assert depot.publish("acme", "revived", "1.0.%d" % i, "x", data).status_code == 201
        assert depot.client.delete("/v1/acme/revived/1.0.%d/x" % i, headers=admin(depot)).status_code == 200
        assert primary.publish("up", "stream", "1.0.%d" % i, "x", data + b"!").status_code == 201
    done, errors, acknowledged, collections = threading.Event(), [], [], []

    def keep_collecting():
        client = depot.app.test_client()
        while not done.is_set():
            answer = client.post("/admin/gc", json={"grace_seconds": 0}, headers=admin(depot))
            if answer.status_code != 409:  # another collection is running: fine
                assert answer.status_code == 200, answer.get_json()
                collections.append(answer.get_json())

    def write(kind, i):
        if kind == "new":
            data = os.urandom(MIB)
            answer = depot.publish("acme", "new", "1.0.%d" % i, "x", data)
        elif kind == "revived":
            data = revived[i]
            answer = depot.publish("acme", "revived", "2.0.%d" % i, "x", data)
        else:
            data = os.urandom(256 * 1024)
            answer = send_chunked(depot.app.test_client(), "PUT", "/v1/acme/chunked/1.0.%d/x/blob" % i, data,
                                  depot.headers())
        assert answer.status_code == 201, answer.get_json()
        acknowledged.append((answer.request.path, data))

    def writer(kind):
        try:
            for i in range(GC_RACE_TRIALS):
                write(kind, i)
        except BaseException as exc:
            errors.append(exc)

    def replicate():
        try:
            events = shipped(primary)["events"]
            for start in range(0, len(events), 2):
                batch = events[start:start + 2]
                copy_blobs(primary, depot, batch)
                assert apply(depot, batch).status_code == 200
        except BaseException as exc:
            errors.append(exc)

    collector = threading.Thread(target=keep_collecting, daemon=True)
    collector.start()
    workers = [threading.Thread(target=writer, args=(kind,), daemon=True) for kind in ("new", "revived", "chunked")]
    workers.append(threading.Thread(target=replicate, daemon=True))
    for thread in workers:
        thread.start()
    join_all(workers, errors, "a writer")
    done.set()
    join_all([collector], errors, "the collector")

    assert collections and sum(len(c["removed"]) for c in collections) >= 1  # they did collect meanwhile
    for path, data in acknowledged:
        assert fetch(depot, path).data == data, path
    for i in range(GC_RACE_TRIALS):
        assert fetch(depot, "/v1/up/stream/1.0.%d/x/blob" % i).data == revived[i] + b"!"
    assert collect(depot)["orphans"]["count"] == 0 and depot.temp_files() == []
