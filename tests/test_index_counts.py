"""Index counts in the embedded state store: a database written before counts existed (or after a reindex) is
counted once, whole, on its first count, and commits keep the counts from then on."""
from tests.test_store_contract import commit, publish_versions, row, versions_index

from app.stores.registry import Stores


def drop_counts(state):
    """Make the database look as one written before counts existed: no count and no mark of one."""
    state.write([], [key for head in (b"n", b"N") for key, _ in state.scan(head)])


def test_a_database_from_before_counts_is_counted_on_the_first_count(tmp_path):
    stores = Stores(str(tmp_path / "data"))
    try:
        state = stores.state({"meta": {"kind": "rocksdb"}})
        index = versions_index()
        by_name, releases, every = index.keys
        publish_versions(state, index, "a", ["1.0.0", "2.0.0", "3.0.0-rc.1"])
        drop_counts(state)
        commit(state, lambda txn: txn.index_delete(index, row("ns", "a", "1.0.0")))  # a commit before any count
        assert state.indexes.count(by_name, ["ns", "a"]) == 2 and state.indexes.count(releases, ["ns", "a"]) == 1
        publish_versions(state, index, "a", ["4.0.0"])
        assert state.indexes.count(every, []) == 3 and state.indexes.count(by_name, ["ns"]) == 3
        assert state.reindex(index) == 3
        assert list(state.scan(b"N")) == []  # a reindex drops the marks: the next count counts again
        assert state.indexes.count(releases, ["ns", "a"]) == 2 and state.indexes.count(every, []) == 3
    finally:
        stores.close()
