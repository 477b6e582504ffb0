"""Depot's metrics, declared once, in the Prometheus text format (prometheus-client).

Every layer observes what it knows: the HTTP layer requests by route, status and duration and those in flight;
the pipeline runner the latency of each step that does I/O, by op; the state store its commits; a blob store
its fsyncs; the cache its hits and misses; proxy.fetch its upstream fetches. They live in one registry of the
process (``REGISTRY``), which ``GET /metrics`` (admins) and the optional separate listener (`serve
--metrics-address`) expose. Labels are bounded by the schema: route ids, op names, upstream names, cache kinds.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# request latencies from a fraction of a millisecond (a cached read) to minutes (a large upload)
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
_STORE = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

REQUESTS = Counter("depot_http_requests", "HTTP requests answered, by route (or view), method and status",
                   ("route", "method", "status"), registry=REGISTRY)
REQUEST_SECONDS = Histogram("depot_http_request_duration_seconds", "Time to answer a request (until its response "
                            "starts), by route", ("route",), buckets=_LATENCY, registry=REGISTRY)
IN_FLIGHT = Gauge("depot_http_requests_in_flight", "Requests being answered now", registry=REGISTRY)
OP_SECONDS = Histogram("depot_op_duration_seconds", "Time of each pipeline step that does I/O, by op",
                       ("op",), buckets=_LATENCY, registry=REGISTRY)
COMMIT_SECONDS = Histogram("depot_store_commit_seconds", "Time of a state store commit (one synced write batch)",
                           buckets=_STORE, registry=REGISTRY)
FSYNC_SECONDS = Histogram("depot_blob_fsync_seconds", "Time of a blob store fsync (a staged file, a directory)",
                          buckets=_STORE, registry=REGISTRY)
CACHE_LOOKUPS = Counter("depot_cache_lookups", "Cache lookups, by cache kind and outcome (hit, miss)",
                        ("kind", "outcome"), registry=REGISTRY)
UPSTREAM_FETCHES = Counter("depot_upstream_fetches", "Fetches from upstreams, by upstream and outcome (the status "
                           "class, or error)", ("upstream", "outcome"), registry=REGISTRY)
UPSTREAM_SECONDS = Histogram("depot_upstream_fetch_duration_seconds", "Time of an upstream fetch (to its response "
                             "head), by upstream", ("upstream",), buckets=_LATENCY, registry=REGISTRY)


def exposition() -> bytes:
    """Every metric, in the text format Prometheus scrapes."""
    return generate_latest(REGISTRY)


def start_listener(host: str, port: int) -> None:
    """Serve the metrics, and nothing else, on their own address (a thread of this process)."""
    from prometheus_client import start_http_server
    start_http_server(port, host, registry=REGISTRY)
