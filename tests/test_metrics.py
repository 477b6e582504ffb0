"""GET /metrics: the Prometheus text format, for admins, and on an address of its own when configured. Metrics are
process-wide, so every check compares what a test's own requests added."""
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess, free_port


def samples(text):
    """(sample name, labels as a sorted tuple) -> value."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(depot):
    response = depot.client.get("/metrics", headers=depot.headers(["admin"]))
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


def added(before, after, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def test_metrics_are_for_admins(ref_depot):
    assert ref_depot.client.get("/metrics").status_code == 401
    assert ref_depot.client.get("/metrics", headers=ref_depot.headers(["read", "write"])).status_code == 403
    scrape(ref_depot)


def test_requests_ops_commits_fsyncs_and_cache_lookups_are_counted(ref_depot):
    before = scrape(ref_depot)
    assert ref_depot.publish("acme", "tool", "1.0.0", "linux", b"metered bytes").status_code == 201
    for _ in range(3):
        fetched = ref_depot.client.get("/v1/acme/tool/1.0.0/linux/blob", headers=ref_depot.headers(["read"]))
        assert fetched.status_code == 200
    missing = ref_depot.client.get("/v1/acme/tool/9.9.9/linux/blob", headers=ref_depot.headers(["read"]))
    assert missing.status_code == 404
    after = scrape(ref_depot)
    assert added(before, after, "depot_http_requests_total", route="publish_artifact_blob", method="PUT",
                 status="201") == 1
    assert added(before, after, "depot_http_requests_total", route="fetch_artifact_blob", method="GET",
                 status="200") == 3
    assert added(before, after, "depot_http_requests_total", route="fetch_artifact_blob", method="GET",
                 status="404") == 1
    assert added(before, after, "depot_http_request_duration_seconds_count", route="fetch_artifact_blob") == 4
    assert added(before, after, "depot_op_duration_seconds_count", op="blob.put") == 1
    assert added(before, after, "depot_op_duration_seconds_count", op="cache.get") == 4
    assert added(before, after, "depot_store_commit_seconds_count") >= 1
    assert added(before, after, "depot_blob_fsync_seconds_count") >= 2  # the staged file and its directory
    assert added(before, after, "depot_cache_lookups_total", kind="response", outcome="miss") == 2  # the first
    assert added(before, after, "depot_cache_lookups_total", kind="response", outcome="hit") == 2  # and the 404
    assert after[("depot_http_requests_in_flight", ())] == 1  # the scrape itself


def test_a_separate_address_serves_the_metrics_without_credentials(tmp_path):
    port = free_port()
    server = ServerProcess(tmp_path / "data", args=("--metrics-address", "127.0.0.1:%d" % port))
    try:
        assert "Metrics at http://127.0.0.1:%d/metrics" % port in server.output
        answer = requests.get("http://127.0.0.1:%d/metrics" % port, timeout=30)
        assert answer.status_code == 200
        assert ("depot_http_requests_total", (("method", "GET"), ("route", "health"), ("status", "200"))) in \
            samples(answer.text)  # the start-up probe of /health, counted
        assert requests.get(server.url + "/metrics", timeout=30).status_code == 401  # the main port still asks
    finally:
        server.stop()


def test_counts_from_many_threads_are_exact_and_outlive_their_threads():
    """Each thread counts into cells of its own: no update is lost to a race, and a thread's counts stay once it
    has finished (folded into the retired total at the next scrape)."""
    import threading

    from app.metrics import Counter, Gauge, Histogram

    counter = Counter("depot_test_thread_counts", "test", ("kind",))
    histogram = Histogram("depot_test_thread_latency", "test", buckets=(0.5, 1.0))
    gauge = Gauge("depot_test_thread_gauge", "test")
    start = threading.Barrier(8)

    def work():
        start.wait()
        for i in range(5000):
            counter.labels("x").inc()
            histogram.observe(0.25 if i % 2 else 0.75)
            gauge.inc()
            gauge.dec()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    from app.metrics import exposition
    first = samples(exposition().decode())
    second = samples(exposition().decode())  # after the finished threads' cells were folded
    for seen in (first, second):
        assert seen[("depot_test_thread_counts_total", (("kind", "x"),))] == 40000
        assert seen[("depot_test_thread_latency_bucket", (("le", "0.5"),))] == 20000
        assert seen[("depot_test_thread_latency_bucket", (("le", "1.0"),))] == 40000
        assert seen[("depot_test_thread_latency_bucket", (("le", "+Inf"),))] == 40000
        assert seen[("depot_test_thread_latency_count", ())] == 40000
        assert seen[("depot_test_thread_latency_sum", ())] == 20000 * 0.25 + 20000 * 0.75
        assert seen[("depot_test_thread_gauge", ())] == 0
