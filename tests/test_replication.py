"""Replication (app/repository/replication.py, /admin/replication, `python -m app replicate`): a primary ships its event
log, a replica applies each event once through its apply pipelines, blob bytes arrive before the events naming
them, and the replica ends up answering every read exactly as the primary does."""
import copy
import hashlib
import os
import queue
import subprocess
import sys
import threading

import pytest
import requests

from app.repository import replication
from tests.conftest import ADMIN_PASSWORD, ROOT, Depot, ServerProcess, free_port, join_all

# every read a user can make of what the scenario below publishes
READS = ["/v1/namespaces", "/v1/acme", "/v1/acme/tool", "/v1/acme/tool/versions", "/v1/acme/tool/latest",
         "/v1/acme/tool/tags", "/v1/acme/tool/tags/stable", "/v1/acme/tool/tags/old",
         "/v1/acme/tool/1.0.0/linux", "/v1/acme/tool/1.1.0/linux", "/v1/acme/tool/1.2.0/linux",
         "/v1/acme/tool/1.0.0/linux/blob", "/v1/acme/tool/1.1.0/linux/blob", "/v1/other/lib/latest",
         "/v1/other/lib/2.0.0-rc.1/linux"]


def scenario(write, admin_delete):
    """Publish, tag, untag and delete on a primary; ``write(method, path, **kw)`` sends with a writer token."""
    described = {"X-Depot-Label-team": "core", "X-Depot-Description": "first"}
    assert write("PUT", "/v1/acme/tool/1.0.0/linux/blob", data=b"one", headers=described) == 201
    assert write("PUT", "/v1/acme/tool/1.1.0/linux/blob", data=b"two") == 201
    assert write("PUT", "/v1/acme/tool/1.2.0/linux/blob", data=b"three") == 201
    assert write("PUT", "/v1/other/lib/2.0.0-rc.1/linux/blob", data=b"one") == 201  # the same bytes again
    assert write("PUT", "/v1/acme/tool/tags/stable", json={"version": "1.0.0", "variant": "linux"}) == 200
    assert write("PUT", "/v1/acme/tool/tags/old", json={"version": "1.1.0", "variant": "linux"}) == 200
    assert write("DELETE", "/v1/acme/tool/tags/old") == 200
    assert admin_delete("/v1/acme/tool/1.2.0/linux") == 200


@pytest.fixture
def pair(make_depot, project_schema):
    primary, replica = make_depot(project_schema, "primary"), make_depot(project_schema, "replica")

    def write(method, path, headers=None, **kw):
        return primary.client.open(path, method=method, headers=primary.headers(**(headers or {})), **kw).status_code

    scenario(write, lambda path: primary.client.delete(path, headers=admin(primary)).status_code)
    return primary, replica


def admin(depot):
    return {"Authorization": "Bearer " + depot.token(["admin"], "replicator")}


def shipped(depot, after=0, **params):
    response = depot.client.get("/admin/replication/events", headers=admin(depot),
                                query_string=dict(params, after=after))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def apply(depot, events):
    return depot.client.post("/admin/replication/apply", json={"events": events}, headers=admin(depot))


def copy_blobs(primary, replica, events):
    for digest in replication.digests_named_by(events):
        download = primary.client.get("/admin/replication/blobs/" + digest, headers=admin(primary))
        assert download.status_code == 200
        stored = replica.client.put("/admin/replication/blobs/" + digest, data=download.data, headers=admin(replica),
                                    query_string={"store": download.headers["X-Depot-Blob-Store"]})
        assert stored.status_code == 201 and stored.get_json()["digest"] == digest


def assert_same_reads(read_primary, read_replica):
    for path in READS:
        here, there = read_primary(path), read_replica(path)
        assert here == there, "%s differs:\nprimary %s\nreplica %s" % (path, here, there)


def reads_of(depot):
    headers = depot.headers(("read",))

    def read(path):
        response = depot.client.get(path, headers=headers)
        return response.status_code, response.get_json() if response.is_json else response.data
    return read


# --- shipping -----------------------------------------------------------------------------------------------

def test_the_log_ships_in_order_from_after(pair):
    primary, _ = pair
    batch = shipped(primary)
    types = [e["type"] for e in batch["events"]]
    assert types == ["artifact.published"] * 4 + ["tag.updated"] * 2 + ["tag.deleted", "artifact.deleted"]
    assert [e["seq"] for e in batch["events"]] == list(range(1, 9)) and batch["next_after"] == 8
    assert batch["more"] is False
    rest = shipped(primary, after=5)
    assert [e["seq"] for e in rest["events"]] == [6, 7, 8]
    assert shipped(primary, after=8) == {"events": [], "next_after": 8, "more": False}
    assert shipped(primary, after=10 ** 25)["events"] == []


def test_batches_are_bounded_by_count_and_bytes(make_depot, project_schema):
    def publish_five(depot):
        for i in range(5):  # five events of one size: same-length coordinates and bytes
            assert depot.publish("acme", "tool", "1.0.%d" % i, "linux", b"x%d" % i).status_code == 201
        return [len(raw) for _, raw in depot.service.engine.state.scan(depot.service.engine.event_log.prefix)]
    size = publish_five(make_depot(project_schema, "measure"))[0]
    schema = copy.deepcopy(project_schema)
    schema["replication"]["shipping"]["batch"] = {"max_events": 3, "max_bytes": 2 * size + size // 2}
    depot = make_depot(schema)
    assert set(publish_five(depot)) == {size}
    first = shipped(depot)
    assert len(first["events"]) == 2 and first["more"] is True  # the bytes bound: two fit, three do not
    assert len(shipped(depot, limit=1)["events"]) == 1
    schema["replication"]["shipping"]["batch"] = {"max_events": 3, "max_bytes": 10 * size}
    counted = make_depot(schema, "counted")
    publish_five(counted)
    assert [e["seq"] for e in shipped(counted)["events"]] == [1, 2, 3]  # the count bound
    seen, after = [], 0
    while True:
        batch = shipped(counted, after)
        seen += [e["seq"] for e in batch["events"]]
        after = batch["next_after"]
        if not batch["more"]:
            break
    assert seen == [1, 2, 3, 4, 5]
    schema["replication"]["shipping"]["batch"] = {"max_events": 3, "max_bytes": 1}
    tiny = make_depot(schema, "tiny")
    assert tiny.publish("acme", "tool", "1.0.0", "linux", b"x").status_code == 201
    assert len(shipped(tiny)["events"]) == 1  # one event always fits, however small the bound


@pytest.mark.parametrize("path", ["/admin/replication/events", "/admin/replication/status",
                                  "/admin/replication/blobs/sha256:" + "0" * 64])
def test_replication_needs_the_admin_scope(make_depot, project_schema, path):
    depot = make_depot(project_schema)
    assert depot.client.get(path).status_code == 401
    assert depot.client.get(path, headers=depot.headers(("read", "write"))).status_code == 403


@pytest.mark.parametrize("query", ["after=-1", "after=x", "limit=0"])
def test_bad_shipping_queries_are_400(make_depot, project_schema, query):
    depot = make_depot(project_schema)
    response = depot.client.get("/admin/replication/events?" + query, headers=admin(depot))
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "INVALID_QUERY"


# --- blobs ----------------------------------------------------------------------------------------------------

def test_blobs_are_served_by_digest_with_their_store(pair):
    primary, _ = pair
    digest = "sha256:" + hashlib.sha256(b"one").hexdigest()
    response = primary.client.get("/admin/replication/blobs/" + digest, headers=admin(primary))
    assert response.status_code == 200 and response.data == b"one"
    assert response.headers["X-Depot-Blob-Store"] == "primary" and response.headers["ETag"] == '"%s"' % digest
    assert primary.client.head("/admin/replication/blobs/" + digest, headers=admin(primary)).status_code == 200
    unknown = primary.client.get("/admin/replication/blobs/sha256:" + "0" * 64, headers=admin(primary))
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "BLOB_NOT_FOUND"
    bad = primary.client.get("/admin/replication/blobs/md5:abc", headers=admin(primary))
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "INVALID_DIGEST"


def test_received_bytes_must_match_their_digest(make_depot, project_schema):
    replica = make_depot(project_schema)
    wrong = "sha256:" + hashlib.sha256(b"expected").hexdigest()
    response = replica.client.put("/admin/replication/blobs/" + wrong, data=b"something else",
                                  query_string={"store": "primary"}, headers=admin(replica))
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "DIGEST_MISMATCH"
    assert replica.blob_files() == []  # nothing kept, not even the temporary file
    unknown = replica.client.put("/admin/replication/blobs/" + wrong, data=b"expected",
                                 query_string={"store": "elsewhere"}, headers=admin(replica))
    assert unknown.status_code == 400 and unknown.get_json()["error"]["field"] == "store"
    right = "sha256:" + hashlib.sha256(b"expected").hexdigest()
    only_store = replica.client.put("/admin/replication/blobs/" + right, data=b"expected", headers=admin(replica))
    assert only_store.status_code == 201 and only_store.get_json()["store"] == "primary"  # the one store there is


# --- applying -------------------------------------------------------------------------------------------------

def test_events_naming_missing_bytes_are_refused_until_the_bytes_arrive(pair):
    primary, replica = pair
    events = shipped(primary)["events"]
    refused = apply(replica, events)
    assert refused.status_code == 409
    assert refused.get_json()["error"] == {"code": "BLOB_MISSING", "field": "events[0].payload.blob_digest",
                                           "message": refused.get_json()["error"]["message"]}
    assert replica.client.get("/admin/replication/status", headers=admin(replica)).get_json()["cursor"] == 0
    copy_blobs(primary, replica, events)
    assert apply(replica, events).get_json() == {"applied": 8, "skipped": 0, "without_pipeline": 0, "cursor": 8}


def test_a_replica_answers_every_read_as_the_primary_does(pair):
    primary, replica = pair
    events = shipped(primary)["events"]
    copy_blobs(primary, replica, events)
    assert apply(replica, events).status_code == 200
    assert_same_reads(reads_of(primary), reads_of(replica))


def test_each_event_is_applied_once_even_when_shipped_again(pair):
    primary, replica = pair
    events = shipped(primary)["events"]
    copy_blobs(primary, replica, events)
    assert apply(replica, events[:5]).get_json()["cursor"] == 5
    again = apply(replica, events).get_json()  # at-least-once shipping: the first five come again
    assert again == {"applied": 3, "skipped": 5, "without_pipeline": 0, "cursor": 8}
    replica.restart()
    assert apply(replica, events).get_json() == {"applied": 0, "skipped": 8, "without_pipeline": 0, "cursor": 8}
    assert_same_reads(reads_of(primary), reads_of(replica))


def test_events_apply_only_in_unbroken_order(pair):
    primary, replica = pair
    events = shipped(primary)["events"]
    copy_blobs(primary, replica, events)
    response = apply(replica, events[2:])
    error = response.get_json()["error"]
    assert response.status_code == 409 and error["code"] == "EVENT_GAP" and error["field"] == "events[0].seq"
    assert replication.cursor(replica.service.engine) == 0
    assert apply(replica, events[:2] + events[3:]).get_json()["error"]["field"] == "events[2].seq"
    assert replication.cursor(replica.service.engine) == 2  # the two before the gap are in
    assert apply(replica, events).get_json()["cursor"] == 8


def test_a_failing_event_stops_the_batch_and_keeps_what_came_before(pair, make_depot, project_schema):
    primary, replica = pair
    events = shipped(primary)["events"]
    copy_blobs(primary, replica, events)
    deleted = events[-1]
    assert deleted["type"] == "artifact.deleted"
    ghost = dict(copy.deepcopy(deleted), event_id="ghost", seq=4)  # next in line after three
    ghost["payload"]["version"] = "9.9.9"  # an artifact the replica never saw
    response = apply(replica, events[:3] + [ghost] + events[3:])
    error = response.get_json()["error"]
    assert response.status_code == 409 and error["code"] == "REPLICA_DIVERGED" and error["field"] == "events[3]"
    status = replica.client.get("/admin/replication/status", headers=admin(replica)).get_json()
    assert status["cursor"] == 3  # the three before it are applied, nothing of it or after it is
    engine = replica.service.engine
    assert not replication.was_applied(engine, "ghost") and replication.was_applied(engine, events[2]["event_id"])


def test_events_naming_bytes_the_primary_collected_apply_when_declared_gone(pair):
    primary, replica = pair
    collected = primary.client.post("/admin/gc", json={"grace_seconds": 0}, headers=admin(primary)).get_json()
    gone = "sha256:" + hashlib.sha256(b"three").hexdigest()  # 1.2.0's bytes: the version was deleted
    assert collected["removed"] == [gone]
    events = shipped(primary)["events"]
    copy_blobs(primary, replica, [e for e in events if e["payload"].get("blob_digest") != gone])
    refused = apply(replica, events)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "BLOB_MISSING"
    response = replica.client.post("/admin/replication/apply", json={"events": events, "gone": [gone]},
                                   headers=admin(replica))
    assert response.get_json()["cursor"] == 8
    assert_same_reads(reads_of(primary), reads_of(replica))
    bad = replica.client.post("/admin/replication/apply", json={"events": [], "gone": ["md5:x"]},
                              headers=admin(replica))
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "gone[0]"


def test_event_types_without_an_apply_pipeline_only_move_the_cursor(make_depot, reference_schema, project_schema):
    primary = make_depot(project_schema, "primary")
    assert primary.publish("acme", "tool", "1.0.0", "linux", b"x").status_code == 201
    assert primary.client.delete("/v1/acme/tool/1.0.0/linux", headers=admin(primary)).status_code == 200
    events = shipped(primary)["events"]
    schema = copy.deepcopy(project_schema)
    del schema["replication"]["replay"]["apply_pipelines"]["artifact.deleted"]
    replica = make_depot(schema, "replica")
    copy_blobs(primary, replica, events)
    assert apply(replica, events).get_json() == {"applied": 1, "skipped": 0, "without_pipeline": 1, "cursor": 2}
    meta = replica.client.get("/v1/acme/tool/1.0.0/linux", headers=replica.headers(("read",)))
    assert meta.status_code == 200  # the delete was not applied here


def test_an_event_whose_payload_breaks_its_schema_is_400_naming_the_field(make_depot, project_schema):
    replica = make_depot(project_schema)
    event = {"seq": 1, "type": "artifact.published", "event_id": "e1", "payload": {"namespace": "acme"}}
    response = apply(replica, [event])
    error = response.get_json()["error"]
    assert response.status_code == 400 and error["code"] == "EVENT_INVALID"
    assert error["field"].startswith("events[0].payload.")
    assert replication.cursor(replica.service.engine) == 0


@pytest.mark.parametrize("event, field", [
    ("not an event", "events[0]"),
    ({"type": "artifact.published", "payload": {}, "event_id": "e"}, "events[0].seq"),
    ({"seq": 0, "type": "artifact.published", "payload": {}, "event_id": "e"}, "events[0].seq"),
    ({"seq": 1, "payload": {}, "event_id": "e"}, "events[0].type"),
    ({"seq": 1, "type": "artifact.published", "payload": [], "event_id": "e"}, "events[0].payload"),
    ({"seq": 1, "type": "artifact.published", "payload": {}}, "events[0].event_id"),
])
def test_malformed_events_are_400_naming_the_field(make_depot, project_schema, event, field):
    replica = make_depot(project_schema)
    response = apply(replica, [event])
    assert response.status_code == 400 and response.get_json()["error"]["field"] == field
    not_a_list = replica.client.post("/admin/replication/apply", json={"events": {}}, headers=admin(replica))
    assert not_a_list.status_code == 400 and not_a_list.get_json()["error"]["code"] == "INVALID_BATCH"


# --- a read-only replica -------------------------------------------------------------------------------------

def test_a_read_only_replica_refuses_changes_but_applies_replication(pair, tmp_path, project_schema):
    primary, _ = pair
    replica = Depot(str(tmp_path / "read-only"), project_schema, read_only=True)
    try:
        assert replica.publish("acme", "tool", "3.0.0", "linux", b"new").get_json()["error"]["code"] == "READ_ONLY"
        assert replica.blob_files() == [] and replica.temp_files() == []  # the upload was never read
        events = shipped(primary)["events"]
        copy_blobs(primary, replica, events)
        assert apply(replica, events).get_json()["applied"] == 8
        assert_same_reads(reads_of(primary), reads_of(replica))
        files = replica.blob_files()
        refused = [replica.publish("acme", "tool", "3.0.0", "linux", b"new"),
                   replica.client.put("/v1/acme/tool/tags/next", headers=replica.headers(),
                                      json={"version": "1.0.0", "variant": "linux"}),
                   replica.client.delete("/v1/acme/tool/1.0.0/linux", headers=admin(replica)),
                   replica.client.delete("/v1/acme/tool/tags/stable", headers=replica.headers())]
        for response in refused:
            assert response.status_code == 403 and response.get_json()["error"]["code"] == "READ_ONLY"
        assert replica.blob_files() == files and replica.temp_files() == []
        assert_same_reads(reads_of(primary), reads_of(replica))  # nothing changed
        # the proxy route only redirects to what the replica holds; fetching from upstream would change it
        held = replica.client.get("/v1/proxy/acme/tool/1.0.0/linux/blob", headers=replica.headers(("read",)))
        assert held.status_code == 307
        assert replica.client.get("/health").get_json()["read_only"] is True
        status = replica.client.get("/admin/replication/status", headers=admin(replica)).get_json()
        assert status["read_only"] is True and status["cursor"] == 8
    finally:
        replica.close()


# --- the pump, between two running servers --------------------------------------------------------------------

def login(server):
    response = requests.post(server.url + "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD},
                             timeout=30)
    assert response.status_code == 200
    return response.json()["token"]


def test_replicate_command_copies_a_running_primary_into_a_running_replica(tmp_path):
    primary, replica = ServerProcess(tmp_path / "primary"), ServerProcess(tmp_path / "replica")
    try:
        tokens = {"DEPOT_SOURCE_TOKEN": login(primary), "DEPOT_TARGET_TOKEN": login(replica)}
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + tokens["DEPOT_SOURCE_TOKEN"]

        def write(method, path, **kw):
            return session.request(method, primary.url + path, timeout=30, **kw).status_code
        scenario(write, lambda path: write("DELETE", path))
        # the deleted version's bytes are collected before the replica ever sees them: its events still apply
        collected = session.post(primary.url + "/admin/gc", json={"grace_seconds": 0}, timeout=30).json()
        assert collected["removed"] == ["sha256:" + hashlib.sha256(b"three").hexdigest()]
        command = [sys.executable, "-m", "app", "replicate", "--source", primary.url, "--target", replica.url]
        env = dict(os.environ, **tokens)
        first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert "8 event(s) applied" in first.stdout
        second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0 and "0 event(s) applied" in second.stdout

        def reader(server, token):
            def read(path):
                response = requests.get(server.url + path, headers={"Authorization": "Bearer " + token}, timeout=30)
                is_json = response.headers.get("Content-Type", "").startswith("application/json")
                return response.status_code, response.json() if is_json else response.content
            return read
        assert_same_reads(reader(primary, tokens["DEPOT_SOURCE_TOKEN"]), reader(replica, tokens["DEPOT_TARGET_TOKEN"]))

        # following: what the primary publishes next reaches the replica without another run
        source = replication.Endpoint(primary.url, tokens["DEPOT_SOURCE_TOKEN"])
        target = replication.Endpoint(replica.url, tokens["DEPOT_TARGET_TOKEN"])
        lines, stop, errors = queue.Queue(), threading.Event(), []

        def follow():
            try:
                replication.pump(source, target, follow=True, interval=0.05, report=lines.put, stop=stop)
            except Exception as exc:  # handed to the test thread by join_all
                errors.append(exc)
        follower = threading.Thread(target=follow)
        follower.start()
        try:
            assert write("PUT", "/v1/acme/tool/2.0.0/linux/blob", data=b"four") == 201
            assert lines.get(timeout=60) == "applied 1 event(s), skipped 0, cursor now 9"
        finally:
            stop.set()
            join_all([follower], errors, "the follower")
        latest = reader(replica, tokens["DEPOT_TARGET_TOKEN"])("/v1/acme/tool/latest")
        assert latest[0] == 200 and latest[1]["version"] == "2.0.0"
    finally:
        primary.stop()
        replica.stop()


def test_replicate_command_without_tokens_says_what_is_missing():
    env = {k: v for k, v in os.environ.items() if k not in ("DEPOT_SOURCE_TOKEN", "DEPOT_TARGET_TOKEN")}
    result = subprocess.run([sys.executable, "-m", "app", "replicate", "--source", "http://127.0.0.1:9",
                             "--target", "http://127.0.0.1:9"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "DEPOT_SOURCE_TOKEN" in result.stderr


def test_an_apply_pipeline_no_event_type_uses_is_reported_not_compiled(project_schema):
    from app.engine.compiler import compile_schema
    schema = copy.deepcopy(project_schema)
    del schema["replication"]["replay"]["apply_pipelines"]["artifact.deleted"]
    compiled, report = compile_schema(schema, "schema")
    assert compiled is not None and "artifact.deleted" not in compiled.apply_pipelines
    assert [w.place for w in report.warnings if "no event type is applied" in w.message] == \
        ["replication.apply_pipelines.apply_artifact_deleted"]


def test_without_dedupe_the_cursor_alone_keeps_replay_exactly_once(pair, make_depot, project_schema):
    primary, _ = pair
    schema = copy.deepcopy(project_schema)
    schema["replication"]["shipping"]["dedupe"] = {"enabled": False}
    replica = make_depot(schema, "no-dedupe")
    events = shipped(primary)["events"]
    copy_blobs(primary, replica, events)
    stripped = [{k: v for k, v in e.items() if k != "event_id"} for e in events]  # no dedupe key needed
    assert apply(replica, stripped).get_json() == {"applied": 8, "skipped": 0, "without_pipeline": 0, "cursor": 8}
    assert apply(replica, stripped).get_json()["skipped"] == 8
    assert replica.client.get("/admin/replication/status", headers=admin(replica)).get_json()["dedupe_key"] is None
    not_a_list = replica.client.post("/admin/replication/apply", json={"events": [], "gone": "x"},
                                     headers=admin(replica))
    assert not_a_list.status_code == 400 and not_a_list.get_json()["error"]["field"] == "gone"


def test_replicate_command_reports_a_refusal_and_exits_1(tmp_path):
    primary = ServerProcess(tmp_path / "primary")
    try:
        env = dict(os.environ, DEPOT_SOURCE_TOKEN=login(primary), DEPOT_TARGET_TOKEN="not-a-token")
        result = subprocess.run([sys.executable, "-m", "app", "replicate", "--source", primary.url,
                                 "--target", primary.url], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 1
        assert "replication stopped" in result.stderr and "401" in result.stderr and "INVALID_TOKEN" in result.stderr
    finally:
        primary.stop()


def test_apply_batch_called_directly_needs_no_gone_list(pair):
    primary, replica = pair
    events = shipped(primary)["events"]
    copy_blobs(primary, replica, events)
    result = replication.apply_batch(replica.service.engine, events)
    assert result == {"applied": 8, "skipped": 0, "without_pipeline": 0, "cursor": 8}
    assert replication.cursor(replica.service.engine) == 8



def test_following_rides_out_a_primary_that_is_down(tmp_path, project_schema):
    """The follower starts before its primary is up, reports the refusals, and catches up once it is."""
    primary_dir = tmp_path / "primary"
    seeded = Depot(str(primary_dir), project_schema)  # the primary's data dir: its admin, key and one artifact
    assert seeded.publish("acme", "tool", "1.0.0", "linux", b"one").status_code == 201
    source_token = seeded.token(["admin"], "replicator")
    seeded.close()
    port = free_port()
    replica = ServerProcess(tmp_path / "replica")
    lines, stop, errors = queue.Queue(), threading.Event(), []

    def follow():
        try:
            replication.pump(replication.Endpoint("http://127.0.0.1:%d" % port, source_token),
                             replication.Endpoint(replica.url, login(replica)), follow=True, interval=0.05,
                             report=lines.put, stop=stop)
        except Exception as exc:  # handed to the test thread by join_all
            errors.append(exc)
    follower = threading.Thread(target=follow)
    primary = None
    try:
        follower.start()
        assert lines.get(timeout=60).startswith("replication paused: ")  # nothing listens yet
        primary = ServerProcess(primary_dir, port=port)
        line = lines.get(timeout=120)
        while line.startswith("replication paused: "):  # refusals reported while the primary was starting
            line = lines.get(timeout=120)
        assert line == "applied 1 event(s), skipped 0, cursor now 1"
    finally:
        stop.set()
        join_all([follower], errors, "the follower")
        replica.stop()
        if primary is not None:
            primary.stop()
