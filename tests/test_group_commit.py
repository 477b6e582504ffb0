"""Group commit in the embedded state store: commits checked one after another share one synced write, readers see
only what is durable, later commits build on writes still in flight, and a failed write fails every commit that
was queued with it or built on it, leaving no gap in the event log.

The store's batch writer is held at a gate the test opens, so that commits queue behind a write in flight.
"""
import threading

import pytest

from app.errors import DepotError
from app.stores.registry import Stores
from app.stores.state import StateStore
from app.engine.definitions import EventLog as EventLogSettings


class GatedWrites:
    """The store's batch writer, held at a gate on its first call; counts the batches and their commits."""

    def __init__(self, state: StateStore) -> None:
        self.real, self.batches = state.write_in_order, []
        self.entered, self.gate = threading.Event(), threading.Event()
        self.fail_next = False
        state.write_in_order = self

    def __call__(self, changes):
        changes = list(changes)
        self.batches.append(len(changes))
        self.entered.set()
        assert self.gate.wait(30)
        if self.fail_next:
            self.fail_next = False
            raise OSError("no space left on device")
        self.real(changes)


@pytest.fixture
def state(tmp_path):
    stores = Stores(str(tmp_path / "data"))
    yield stores.state({"meta": {"kind": "rocksdb"}})
    stores.close()


def put(state, key, log=None):
    txn = state.transaction()
    txn.put_if_absent("meta", key, state.documents.encode(key), key)
    if log is not None:
        txn.append(log, {"type": "made", "payload": {"key": key}})
    return txn.commit()


def in_threads(state, keys, log=None):
    """Commit each key in its own thread; -> the threads and, once joined, each one's error (None: committed)."""
    errors = {}

    def run(key):
        try:
            put(state, key, log)
            errors[key] = None
        except (DepotError, OSError) as exc:
            errors[key] = exc
    threads = [threading.Thread(target=run, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    return threads, errors


def queued(state, count):
    """Wait until ``count`` commits are queued behind the write in flight."""
    with state.group.cond:
        assert state.group.cond.wait_for(lambda: len(state.group.queue) >= count, 30)


def test_commits_queued_behind_a_write_share_the_next_one(state):
    writes = GatedWrites(state)
    first, _ = in_threads(state, ["first"])
    assert writes.entered.wait(30)
    others, errors = in_threads(state, ["k%d" % i for i in range(15)])
    queued(state, 15)
    assert state.documents.get("meta", "k3") is None  # checked, not yet durable: no reader sees it
    txn = state.transaction()
    assert txn.get("meta", "k3") == "k3"  # a commit builds on it
    txn.abort()
    writes.gate.set()
    for thread in first + others:
        thread.join()
    assert writes.batches == [1, 15] and set(errors.values()) == {None}
    assert [state.documents.get("meta", "k%d" % i) for i in range(15)] == ["k%d" % i for i in range(15)]
    assert state.commit_lock.acquire(blocking=False)  # nothing in flight
    state.commit_lock.release()


def test_a_commit_conflicting_with_one_in_flight_is_refused_at_once(state):
    writes = GatedWrites(state)
    first, _ = in_threads(state, ["same"])
    assert writes.entered.wait(30)
    with pytest.raises(DepotError) as raised:
        put(state, "same")
    assert raised.value.status == 409
    writes.gate.set()
    first[0].join()
    assert state.documents.get("meta", "same") == "same"


def test_a_failed_write_fails_every_commit_queued_with_it_and_leaves_no_gap(state):
    log = state.event_log(EventLogSettings("meta", "eventlog/", 262144))
    put(state, "before", log)
    writes = GatedWrites(state)
    writes.fail_next = True
    first, first_errors = in_threads(state, ["lost"], log)
    assert writes.entered.wait(30)
    others, errors = in_threads(state, ["also lost %d" % i for i in range(3)], log)
    queued(state, 3)
    writes.gate.set()  # the batch in flight fails; the three queued after it were checked against it: they fail too
    for thread in first + others:
        thread.join()
    assert all(isinstance(error, OSError) for error in list(first_errors.values()) + list(errors.values()))
    assert state.documents.get("meta", "lost") is None and state.group.pending == {}
    put(state, "after", log)
    assert [event["seq"] for event in map(lambda e: e.record, log.read_after(0))] == [1, 2]
    assert state.documents.get("meta", "after") == "after"
