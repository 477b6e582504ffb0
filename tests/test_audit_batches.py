"""The route writes' audit rows are committed off the request path, in batches (app/identity/audit.py): none is
lost while the server runs or when it stops, a reader sees every row queued before it asked, and each row keeps
the time of its request."""
import threading

from tests.conftest import join_all


def route_rows(depot, admin):
    answer = depot.client.get("/admin/audit?action=route.publish_artifact_blob&page_size=200", headers=admin)
    assert answer.status_code == 200
    return answer.get_json()["items"]


def test_concurrent_writes_are_all_audited_and_read_back_at_once(ref_depot):
    admin = ref_depot.headers(["admin"])
    errors, statuses = [], []

    def publish(worker):
        try:
            for i in range(10):
                statuses.append(ref_depot.publish("acme", "audited", "1.%d.%d" % (worker, i), "x",
                                                  b"%d-%d" % (worker, i)).status_code)
        except Exception as exc:  # noqa: BLE001 - reported by join_all
            errors.append(exc)
    threads = [threading.Thread(target=publish, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    join_all(threads, errors)
    assert statuses == [201] * 80
    rows = route_rows(ref_depot, admin)  # no wait: the reader waits for what was queued before it
    assert len(rows) == 80 and {row["outcome"] for row in rows} == {"success"}
    assert len({row["request_id"] for row in rows}) == 80


def test_rows_queued_when_the_server_stops_are_written(ref_depot):
    audit = ref_depot.service.audit
    for i in range(300):
        audit.record_later("tester", "route.publish_artifact_blob", "/v1/acme/late/%d" % i, "success")
    ref_depot.restart()  # closing commits what is queued
    rows = route_rows(ref_depot, ref_depot.headers(["admin"]))
    assert len([row for row in rows if row["target"].startswith("/v1/acme/late/")]) == 200  # the page's limit
    total = ref_depot.client.get("/admin/audit?action=route.publish_artifact_blob&page_size=1",
                                 headers=ref_depot.headers(["admin"])).get_json()["total"]
    assert total == 300


def test_a_row_keeps_the_time_of_its_request(ref_depot):
    audit = ref_depot.service.audit
    audit.record_later("tester", "route.publish_artifact_blob", "/v1/acme/first", "success")
    audit.flush()
    audit.record_later("tester", "route.publish_artifact_blob", "/v1/acme/second", "success")
    rows = route_rows(ref_depot, ref_depot.headers(["admin"]))
    times = {row["target"]: row["at"] for row in rows}
    assert times["/v1/acme/first"] <= times["/v1/acme/second"]
