"""Durability across a restart (stores closed and reopened over the same data dir) and atomicity of aborted
transactions: what committed survives, the event log stays contiguous, and what aborted leaves no trace.
"""
import hashlib
import json

EVENT_PREFIX = b"kmeta\x00eventlog/"
ARTIFACT_PREFIX = b"kmeta\x00artifact/"
TAG_KEY = b"kmeta\x00tag/acme/app/stable"
SEQ_WIDTH = 20


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def events(depot):
    return [(key, json.loads(raw)) for key, raw in depot.service.engine.state.scan(EVENT_PREFIX)]


def assert_contiguous(logged):
    """Events are numbered 1..n with no gap or repeat, and each key names its record's seq."""
    assert [record["seq"] for _, record in logged] == list(range(1, len(logged) + 1))
    for key, record in logged:
        assert key == EVENT_PREFIX + b"%0*d" % (SEQ_WIDTH, record["seq"])
    assert len({record["event_id"] for _, record in logged}) == len(logged)


def snapshot(depot):
    """Everything a request could have written: KV documents, index entries, row maps, events, blob files."""
    state = depot.service.engine.state
    return {
        "kv": [(k, v) for k, v in state.scan(b"kmeta\x00")],
        "index": [(k, v) for k, v in state.scan(b"i")],
        "rowmap": [(k, v) for k, v in state.scan(b"r")],
        "blobs": depot.blob_files(),
        "tmp": depot.temp_files(),
    }


def fetch(depot, version, variant="linux"):
    return depot.client.get("/v1/acme/app/%s/%s/blob" % (version, variant), headers=depot.headers(["read"]))


def tag(depot, version, variant="linux", name="stable"):
    return depot.client.put("/v1/acme/app/tags/%s" % name, headers=depot.headers(),
                            json={"target_version": version, "target_variant": variant})


def test_the_event_log_lives_where_the_schema_says(ref_depot):
    assert ref_depot.service.engine.event_log.prefix == EVENT_PREFIX


def test_publish_and_tag_survive_a_restart(ref_depot):
    depot = ref_depot
    old = b"version one bytes\n" * 1000
    new = b"version one-two bytes\n" * 1000
    assert depot.publish("acme", "app", "1.0.0", "linux", old).status_code == 201
    assert depot.publish("acme", "app", "1.2.0", "linux", new).status_code == 201
    assert tag(depot, "1.0.0").status_code == 200
    assert fetch(depot, "1.0.0").get_data() == old  # also fills the response cache before the restart
    token_from_before = depot.token(["read"])

    before = snapshot(depot)
    logged_before = events(depot)
    assert [record["type"] for _, record in logged_before] == ["artifact.published", "artifact.published",
                                                               "tag.updated"]
    tag_doc_before = depot.service.engine.state.get(TAG_KEY)
    assert tag_doc_before is not None

    depot.restart()

    assert snapshot(depot) == before
    assert events(depot) == logged_before
    for version, data in (("1.0.0", old), ("1.2.0", new)):
        fetched = fetch(depot, version)
        assert fetched.status_code == 200
        assert fetched.get_data() == data
        assert fetched.headers["ETag"] == '"%s"' % digest_of(data)
    ranged = depot.client.get("/v1/acme/app/1.2.0/linux/blob", headers=depot.headers(["read"], Range="bytes=-5"))
    assert ranged.status_code == 206 and ranged.get_data() == new[-5:]

    latest = depot.client.get("/v1/acme/app/latest", headers=depot.headers(["read"]))
    assert latest.status_code == 200
    assert latest.get_json() == {"namespace": "acme", "name": "app", "version": "1.2.0", "variant": "linux",
                                 "blob_digest": digest_of(new)}

    tag_doc = depot.service.engine.state.get(TAG_KEY)
    assert tag_doc == tag_doc_before
    assert json.loads(tag_doc)["target_key"] == "artifact/acme/app/1.0.0/linux"

    # the signing key persisted too: a token issued before the restart still works
    assert depot.client.get("/v1/acme/app/latest",
                            headers={"Authorization": "Bearer " + token_from_before}).status_code == 200

    # write-once survives the restart
    again = depot.publish("acme", "app", "1.0.0", "linux", b"different")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "CONFLICT"


def test_event_numbering_continues_contiguously_after_restarts(ref_depot):
    depot = ref_depot
    assert depot.publish("acme", "app", "1.0.0", "linux", b"a").status_code == 201
    assert depot.publish("acme", "app", "1.1.0", "linux", b"b").status_code == 201
    assert tag(depot, "1.0.0").status_code == 200
    assert_contiguous(events(depot))
    assert len(events(depot)) == 3

    depot.restart()
    assert depot.publish("acme", "app", "1.2.0", "linux", b"c").status_code == 201
    assert tag(depot, "1.2.0").status_code == 200
    logged = events(depot)
    assert len(logged) == 5
    assert_contiguous(logged)
    assert logged[3][1]["payload"]["version"] == "1.2.0"
    assert logged[4][1]["type"] == "tag.updated"

    depot.restart()
    depot.restart()  # a restart with no writes in between changes nothing
    assert events(depot) == logged
    assert depot.publish("acme", "app", "2.0.0", "linux", b"d").status_code == 201
    logged = events(depot)
    assert len(logged) == 6
    assert_contiguous(logged)

    latest = depot.client.get("/v1/acme/app/latest", headers=depot.headers(["read"])).get_json()
    assert latest["version"] == "2.0.0"
    assert json.loads(depot.service.engine.state.get(TAG_KEY))["target_key"] == "artifact/acme/app/1.2.0/linux"


def test_tag_to_a_missing_target_writes_nothing(ref_depot):
    depot = ref_depot
    assert depot.publish("acme", "app", "1.0.0", "linux", b"present").status_code == 201
    before = snapshot(depot)
    logged = events(depot)

    for version, variant in (("9.9.9", "linux"), ("1.0.0", "windows")):
        response = tag(depot, version, variant)
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "TARGET_NOT_FOUND"

    assert snapshot(depot) == before
    assert events(depot) == logged
    assert depot.service.engine.state.get(TAG_KEY) is None
    assert depot.service.engine.state.count(b"itags\x00") == 0

    depot.restart()  # nothing was left pending to surface later either
    assert snapshot(depot) == before
    assert events(depot) == logged
    assert tag(depot, "1.0.0").status_code == 200
    logged_after = events(depot)
    assert len(logged_after) == len(logged) + 1
    assert_contiguous(logged_after)


def test_a_publish_conflict_writes_nothing(ref_depot):
    depot = ref_depot
    original = b"the original bytes\n" * 200
    assert depot.publish("acme", "app", "1.0.0", "linux", original).status_code == 201
    before = snapshot(depot)
    logged = events(depot)
    assert len(before["blobs"]) == 1

    for attempt in range(3):
        response = depot.publish("acme", "app", "1.0.0", "linux", b"an impostor %d\n" % attempt * 300)
        assert response.status_code == 409
        assert response.get_json()["error"]["code"] == "CONFLICT"

    assert snapshot(depot) == before  # no new blob file, no temp file, no KV/index change
    assert events(depot) == logged
    assert fetch(depot, "1.0.0").get_data() == original

    depot.restart()
    assert snapshot(depot) == before
    assert events(depot) == logged
    assert depot.publish("acme", "app", "1.0.1", "linux", b"next").status_code == 201
    logged_after = events(depot)
    assert len(logged_after) == len(logged) + 1
    assert_contiguous(logged_after)


def test_a_digest_mismatch_or_invalid_request_writes_nothing(ref_depot):
    depot = ref_depot
    assert depot.publish("acme", "app", "1.0.0", "linux", b"first").status_code == 201
    before = snapshot(depot)
    logged = events(depot)

    wrong = "sha256:" + hashlib.sha256(b"not these bytes").hexdigest()
    mismatch = depot.publish("acme", "app", "1.1.0", "linux", b"these bytes", query_string={"digest": wrong})
    assert mismatch.status_code == 400 and mismatch.get_json()["error"]["code"] == "DIGEST_MISMATCH"
    invalid = depot.publish("acme", "app", "not-semver", "linux", b"these bytes")
    assert invalid.status_code == 400
    forbidden = depot.publish("acme", "app", "1.1.0", "linux", b"these bytes", scopes=["read"])
    assert forbidden.status_code == 403

    assert snapshot(depot) == before
    assert events(depot) == logged
    depot.restart()
    assert snapshot(depot) == before
    assert depot.client.get("/v1/acme/app/latest", headers=depot.headers(["read"])).get_json()["version"] == "1.0.0"


def test_identical_bytes_under_two_coordinates_share_one_blob_across_restart(ref_depot):
    depot = ref_depot
    data = b"shared content\n" * 100
    assert depot.publish("acme", "app", "1.0.0", "linux", data).status_code == 201
    assert depot.publish("acme", "app", "1.0.0", "darwin", data).status_code == 201
    assert len(depot.blob_files()) == 1
    depot.restart()
    assert len(depot.blob_files()) == 1
    assert fetch(depot, "1.0.0", "linux").get_data() == data
    assert fetch(depot, "1.0.0", "darwin").get_data() == data
    assert depot.service.engine.state.count(ARTIFACT_PREFIX) == 2
