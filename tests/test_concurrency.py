"""Concurrent requests against one Depot: write-once coordinates have exactly one winner, whose bytes and
metadata are what is stored; independent publishes all land and latest is the highest version.

Threads are released together by a Barrier; each has its own Flask test client over the same app and stores.
"""
import hashlib
import json
import threading

import pytest

from tests.conftest import join_all

THREADS = 20
ARTIFACT_PREFIX = b"kmeta\x00artifact/"
EVENT_PREFIX = b"kmeta\x00eventlog/"
INDEX_PREFIX = b"iartifact_versions\x00"
ROWMAP_PREFIX = b"rartifact_versions\x00"


def race(depot, requests):
    """Run each ``request(client)`` in its own thread with its own test client, all released at once.
    Returns the responses in request order; re-raises the first exception a thread hit."""
    barrier = threading.Barrier(len(requests), timeout=60)
    results = [None] * len(requests)
    errors = []

    def worker(i, request):
        client = depot.app.test_client()
        try:
            barrier.wait()
            response = request(client)
            response.get_data()  # consume while still in the thread
            results[i] = response
        except BaseException as exc:  # reported below, after every thread is joined
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i, r), daemon=True) for i, r in enumerate(requests)]
    for thread in threads:
        thread.start()
    join_all(threads, errors, "a request thread")
    return results


def index_rows(depot):
    return [json.loads(raw)[1] for _, raw in depot.service.engine.state.scan(INDEX_PREFIX)]


def events(depot):
    return [(key, json.loads(raw)) for key, raw in depot.service.engine.state.scan(EVENT_PREFIX)]


def publisher(headers, path, body):
    return lambda client: client.put(path, data=body, headers=headers)


@pytest.mark.parametrize("round_", range(3))
def test_racing_publishes_of_the_same_coordinates_have_exactly_one_winner(ref_depot, round_):
    depot = ref_depot
    path = "/v1/acme/race/1.0.0/linux-amd64/blob"
    bodies = [("contender %d of round %d\n" % (i, round_)).encode() * (8000 + i) for i in range(THREADS)]
    digests = ["sha256:" + hashlib.sha256(body).hexdigest() for body in bodies]
    assert len(set(digests)) == THREADS
    headers = depot.headers()

    responses = race(depot, [publisher(headers, path, body) for body in bodies])

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (THREADS - 1), statuses
    winner = next(i for i, r in enumerate(responses) if r.status_code == 201)
    assert responses[winner].get_json() == {"ok": True, "digest": digests[winner], "size": len(bodies[winner])}
    for i, response in enumerate(responses):
        if i != winner:
            assert response.mimetype == "application/json"
            assert response.get_json()["error"]["code"] == "CONFLICT"

    state = depot.service.engine.state
    docs = list(state.scan(ARTIFACT_PREFIX))
    assert [key for key, _ in docs] == [b"kmeta\x00artifact/acme/race/1.0.0/linux-amd64"]
    meta = json.loads(docs[0][1])
    assert meta["blob_digest"] == digests[winner]
    assert meta["blob_size"] == len(bodies[winner])

    fetched = depot.client.get(path, headers=depot.headers(["read"]))
    assert fetched.status_code == 200
    assert fetched.get_data() == bodies[winner]
    assert fetched.headers["ETag"] == '"%s"' % digests[winner]

    rows = index_rows(depot)
    assert len(rows) == 1
    assert rows[0]["version"] == "1.0.0" and rows[0]["variant"] == "linux-amd64"
    assert rows[0]["blob_digest"] == digests[winner]
    assert state.count(ROWMAP_PREFIX) == 1
    latest = depot.client.get("/v1/acme/race/latest", headers=depot.headers(["read"])).get_json()
    assert latest["blob_digest"] == digests[winner]

    logged = events(depot)
    assert len(logged) == 1
    assert logged[0][1]["seq"] == 1
    assert logged[0][1]["payload"]["blob_digest"] == digests[winner]

    # only the winner's bytes are kept; the losers' staged uploads are gone
    store = depot.service.engine.blob_store("primary")
    assert depot.blob_files() == [store.path_for(digests[winner].split(":", 1)[1])]


def test_racing_publishes_of_different_versions_all_succeed(ref_depot):
    depot = ref_depot
    versions = ["1.%d.0" % i for i in range(THREADS)]  # 1.19.0 is highest; lexically 1.9.0 would win
    bodies = {v: ("bytes of %s\n" % v).encode() * 300 for v in versions}
    headers = depot.headers()
    responses = race(depot, [publisher(headers, "/v1/acme/many/%s/x/blob" % v, bodies[v]) for v in versions])
    assert [r.status_code for r in responses] == [201] * THREADS, [r.get_data() for r in responses]

    latest = depot.client.get("/v1/acme/many/latest", headers=depot.headers(["read"]))
    assert latest.status_code == 200
    assert latest.get_json()["version"] == "1.19.0"
    assert latest.get_json()["blob_digest"] == "sha256:" + hashlib.sha256(bodies["1.19.0"]).hexdigest()

    rows = index_rows(depot)
    assert sorted(row["version"] for row in rows) == sorted(versions)
    assert [row["version"] for row in rows] == ["1.%d.0" % i for i in reversed(range(THREADS))]

    logged = events(depot)
    assert [record["seq"] for _, record in logged] == list(range(1, THREADS + 1))
    assert sorted(record["payload"]["version"] for _, record in logged) == sorted(versions)
    assert len({record["event_id"] for _, record in logged}) == THREADS

    for version in versions:
        fetched = depot.client.get("/v1/acme/many/%s/x/blob" % version, headers=depot.headers(["read"]))
        assert fetched.status_code == 200 and fetched.get_data() == bodies[version]


def test_racing_tag_moves_leave_document_index_and_log_consistent(ref_depot):
    depot = ref_depot
    versions = ["2.%d.0" % i for i in range(THREADS)]
    for version in versions:
        assert depot.publish("acme", "tagged", version, "x", version.encode()).status_code == 201
    before = len(events(depot))
    headers = depot.headers()

    def mover(version):
        return lambda client: client.put("/v1/acme/tagged/tags/stable", headers=headers,
                                         json={"target_version": version, "target_variant": "x"})

    responses = race(depot, [mover(v) for v in versions])
    assert [r.status_code for r in responses] == [200] * THREADS

    state = depot.service.engine.state
    doc = json.loads(state.get(b"kmeta\x00tag/acme/tagged/stable"))
    tag_rows = [json.loads(raw)[1] for _, raw in state.scan(b"itags\x00")]
    assert len(tag_rows) == 1
    assert tag_rows[0]["target_key"] == doc["target_key"]

    tag_events = [record for _, record in events(depot)[before:]]
    assert [record["seq"] for record in tag_events] == list(range(before + 1, before + THREADS + 1))
    assert all(record["type"] == "tag.updated" for record in tag_events)
    last = tag_events[-1]["payload"]
    assert doc["target_key"] == "artifact/acme/tagged/%s/%s" % (last["target_version"], last["target_variant"])
