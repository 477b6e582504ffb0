"""Depot's metrics, declared once, in the Prometheus text format (prometheus-client).

Every layer observes what it knows: the HTTP layer requests by route, status and duration and those in flight;
the pipeline runner the latency of each step that does I/O, by op; the state store its commits; a blob store
its fsyncs; the cache its hits and misses; proxy.fetch its upstream fetches. They live in one registry of the
process (``REGISTRY``), which ``GET /metrics`` (admins) and the optional separate listener (`serve
--metrics-address`) expose. Labels are bounded by the schema: route ids, op names, upstream names, cache kinds.

Why not prometheus-client's own Counter and Histogram: each observation there takes a lock per value and walks
the buckets in Python, about 0.7 µs for a histogram and 1.3 µs for a labelled counter, paid several times by
every request (a `latest` costs about 100 µs in all). Here each thread counts into cells of its own (no lock, and
no update lost: a cell has one writer), a histogram finds its bucket by bisection, a labelled child is one dict
lookup; a scrape adds the threads' cells up, and prometheus-client writes the exposition as before.
"""
from __future__ import annotations

import threading
import time
from bisect import bisect_left
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# request latencies from a fraction of a millisecond (a cached read) to minutes (a large upload)
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
_STORE = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _ThreadCells:
    """A fixed number of numbers counted per thread: ``mine()`` is the calling thread's list, written by it
    alone; ``totals()`` adds every thread's up. A finished thread's cells are folded into the retired total at
    the next read, so threads that come and go do not accumulate lists."""

    __slots__ = ("_width", "_local", "_live", "_retired", "_lock")

    def __init__(self, width: int) -> None:
        self._width = width
        self._local = threading.local()
        self._live: list[tuple[threading.Thread, list[float]]] = []
        self._retired = [0.0] * width
        self._lock = threading.Lock()

    def mine(self) -> list[float]:
        try:
            cells: list[float] = self._local.cells
        except AttributeError:
            cells = self._local.cells = [0.0] * self._width
            with self._lock:
                self._live.append((threading.current_thread(), cells))
        return cells

    def totals(self) -> list[float]:
        with self._lock:
            live = []
            for thread, cells in self._live:
                if thread.is_alive():
                    live.append((thread, cells))
                else:  # it writes no more: its counts join the retired ones
                    self._retired = [a + b for a, b in zip(self._retired, cells)]
            self._live = live
            totals = list(self._retired)
            for _, cells in live:
                totals = [a + b for a, b in zip(totals, cells)]
        return totals


class _Family:
    """A metric and its children, one per combination of label values (created on first use)."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()
        if not self.labelnames:
            self._unlabelled = self.labels()
        REGISTRY.register(self)

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError("%s takes labels %s" % (self.name, self.labelnames))
            with self._lock:
                child = self._children.setdefault(values, self._child())
        return child

    def _child(self) -> Any:
        raise NotImplementedError

    def _samples(self) -> Iterator[tuple[tuple[str, ...], Any]]:
        for values, child in list(self._children.items()):
            yield list(values), child

    def describe(self) -> list[Any]:
        return [self._family()]

    def collect(self) -> list[Any]:
        family = self._family()
        for values, child in self._samples():
            self._add(family, values, child.cells.totals())
        return [family]

    def _family(self) -> Any:
        raise NotImplementedError

    def _add(self, family: Any, values: list[str], totals: list[float]) -> None:
        raise NotImplementedError


class _CounterChild:
    __slots__ = ("cells",)

    def __init__(self) -> None:
        self.cells = _ThreadCells(1)

    def inc(self, amount: float = 1) -> None:
        self.cells.mine()[0] += amount


class Counter(_Family):
    def _child(self) -> _CounterChild:
        return _CounterChild()

    def inc(self, amount: float = 1) -> None:
        self._unlabelled.inc(amount)

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Any, values: list[str], totals: list[float]) -> None:
        family.add_metric(values, totals[0])


class _GaugeChild(_CounterChild):
    __slots__ = ()

    def dec(self, amount: float = 1) -> None:
        self.cells.mine()[0] -= amount


class Gauge(Counter):
    """Counted up and down by each thread; the sum of all threads is the value (requests in flight)."""

    def _child(self) -> _GaugeChild:
        return _GaugeChild()

    def dec(self, amount: float = 1) -> None:
        self._unlabelled.dec(amount)

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)


class _HistogramChild:
    """Cells: one count per bucket (the last for +Inf), then the sum of the values observed."""

    __slots__ = ("cells", "_bounds")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.cells = _ThreadCells(len(bounds) + 2)

    def observe(self, amount: float) -> None:
        cells = self.cells.mine()
        cells[bisect_left(self._bounds, amount)] += 1  # the first bound at or above it: buckets are `le`
        cells[-1] += amount

    @contextmanager
    def time(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started)


class Histogram(_Family):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = _LATENCY) -> None:
        self.bounds = tuple(sorted(buckets))
        super().__init__(name, documentation, labelnames)

    def _child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def observe(self, amount: float) -> None:
        self._unlabelled.observe(amount)

    def time(self) -> Any:
        return self._unlabelled.time()

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Any, values: list[str], totals: list[float]) -> None:
        cumulative, buckets = 0.0, []
        for bound, count in zip(self.bounds + (float("inf"),), totals[:-1]):
            cumulative += count
            buckets.append((_bound_text(bound), cumulative))
        family.add_metric(values, buckets, totals[-1])


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


REQUESTS = Counter("depot_http_requests", "HTTP requests answered, by route (or view), method and status",
                   ("route", "method", "status"))
REQUEST_SECONDS = Histogram("depot_http_request_duration_seconds", "Time to answer a request (until its response "
                            "starts), by route", ("route",), buckets=_LATENCY)
IN_FLIGHT = Gauge("depot_http_requests_in_flight", "Requests being answered now")
OP_SECONDS = Histogram("depot_op_duration_seconds", "Time of each pipeline step that does I/O, by op",
                       ("op",), buckets=_LATENCY)
COMMIT_SECONDS = Histogram("depot_store_commit_seconds", "Time of a state store commit (one synced write batch)",
                           buckets=_STORE)
FSYNC_SECONDS = Histogram("depot_blob_fsync_seconds", "Time of a blob store fsync (a staged file, a directory)",
                          buckets=_STORE)
CACHE_LOOKUPS = Counter("depot_cache_lookups", "Cache lookups, by cache kind and outcome (hit, miss)",
                        ("kind", "outcome"))
UPSTREAM_FETCHES = Counter("depot_upstream_fetches", "Fetches from upstreams, by upstream and outcome (the status "
                           "class, or error)", ("upstream", "outcome"))
UPSTREAM_SECONDS = Histogram("depot_upstream_fetch_duration_seconds", "Time of an upstream fetch (to its response "
                             "head), by upstream", ("upstream",), buckets=_LATENCY)


def exposition() -> bytes:
    """Every metric, in the text format Prometheus scrapes."""
    return generate_latest(REGISTRY)


def start_listener(host: str, port: int) -> None:
    """Serve the metrics, and nothing else, on their own address (a thread of this process)."""
    from prometheus_client import start_http_server
    start_http_server(port, host, registry=REGISTRY)
