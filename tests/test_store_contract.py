"""The store interfaces' contract (app/stores/interfaces.py): the same tests for every implementation the registry
names. A new kind (an S3 blob store, a PostgreSQL kv store) passes these before it is registered; SPECS gives the
schema spec its tests open it with (its server, credentials) besides the kind.

Blob stores: stage / promote / discard, reads whole and by range, exists, size, delete, the digests and uploads
GC iterates, limits. State backends: documents, index rows (order, prefix, after-cursor, offset, counts, unique
and partial keys), the event log (append in a transaction, read after a sequence) and replica bookkeeping; a
transaction shows nothing before its commit, and one failed condition fails all of it; the commit lock. Caches
(the redis kind on the machine's Redis, under a key prefix of each test's own).
"""
import hashlib
import io
import os
import threading

import pytest

from app.engine.compiler import compile_schema
from app.engine.definitions import BlobStoreDef, EventLog as EventLogSettings, UploadSessionsDef
from app.errors import DepotError
from app.stores.interfaces import BlobHandle, IndexDef, IndexKeyDef
from app.stores.registry import REGISTRY, Registry, Stores

SPECS = {}  # kind -> what its spec needs besides "kind" (a shared store names its server here): set per test
SERVERS = {"s3": "s3_server", "postgresql": "postgres_state"}  # kind -> the fixture of its server, whose spec() gives a test its own place there
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def kind_specs(request):
    """The spec of each shared kind a test is parametrized with, in a place of its server no other test uses."""
    callspec = getattr(request.node, "callspec", None)
    kinds = {value for value in (callspec.params.values() if callspec else ()) if isinstance(value, str)}
    for kind in kinds & set(SERVERS):
        SPECS[kind] = request.getfixturevalue(SERVERS[kind]).spec()
    yield
    SPECS.clear()


def spec_of(kind, **more):
    """The spec of a store of ``kind``: ``root`` (a filesystem store's directory) is left out of other kinds'."""
    if kind != "filesystem":
        more.pop("root", None)
    return dict(SPECS.get(kind, {}), kind=kind, **more)


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def stores(tmp_path):
    opened = Stores(str(tmp_path / "data"))
    yield opened
    opened.close()


def open_blob_store(stores, kind, name="primary", **limits):
    spec = spec_of(kind, root="blobs-" + name)
    if limits:
        spec["limits"] = limits
    return stores.blob_store(BlobStoreDef(name, spec))


@pytest.fixture(params=sorted(REGISTRY.blob_stores))
def blobs(request, stores):
    return open_blob_store(stores, request.param)


@pytest.fixture(params=sorted(REGISTRY.kv_stores))
def state(request, stores):
    return stores.state({"meta": spec_of(request.param), "other": spec_of(request.param)})


@pytest.fixture
def log(state):
    return state.event_log(EventLogSettings("meta", "eventlog/", 262144))


def versions_index():
    """Versions by (namespace, name), highest first; a partial key of releases only; every row by all three."""
    keys = [IndexKeyDef("versions", "by_name", ["namespace", "name"], ["version:desc"], False, "semver"),
            IndexKeyDef("versions", "releases", ["namespace", "name"], ["version:desc"], False, "semver",
                        where=lambda row: "-" not in row["version"]),
            IndexKeyDef("versions", "all", [], ["namespace", "name", "version"], False, "semver")]
    return IndexDef("versions", keys, lambda row: "%s/%s/%s" % (row["namespace"], row["name"], row["version"]))


def tags_index():
    keys = [IndexKeyDef("tags", "by_tag", ["namespace", "name", "tag"], [], True, "semver")]
    return IndexDef("tags", keys, lambda row: "%s/%s/%s" % (row["namespace"], row["name"], row["tag"]))


def row(namespace, name, version):
    return {"namespace": namespace, "name": name, "version": version}


def commit(state, *writes):
    """One transaction applying ``writes`` (functions of the transaction), committed."""
    txn = state.transaction()
    for write in writes:
        write(txn)
    return txn.commit()


def versions_of(rows):
    return [r["version"] for r in rows]


def assert_conflict(raised, code="CONFLICT"):
    assert isinstance(raised.value, DepotError) and raised.value.status == 409 and raised.value.code == code


# --- blob stores ------------------------------------------------------------------------------------------------

def test_a_staged_blob_is_hashed_and_invisible_until_promoted(blobs):
    data = b"staged bytes" * 1000
    staged = blobs.stage(io.BytesIO(data), also=("sha512", "md5", "blake2b_256"))
    assert staged.digest == sha(data) and staged.size == len(data)
    assert staged.digests == {"sha256": sha(data)[7:], "sha512": hashlib.sha512(data).hexdigest(),
                              "md5": hashlib.md5(data).hexdigest(),
                              "blake2b_256": hashlib.blake2b(data, digest_size=32).hexdigest()}
    with staged.open() as stream:  # a staged blob reads as its bytes before and after promotion
        assert stream.read() == data
    assert not blobs.exists(staged.digest) and blobs.locate(staged.digest) is None
    assert sha(data) not in set(blobs.digests())
    blobs.commit(staged)
    assert blobs.exists(staged.digest) and sha(data) in set(blobs.digests())


def test_stored_bytes_read_whole_and_by_range(blobs):
    data = bytes(range(256)) * 64
    blobs.commit(blobs.stage(io.BytesIO(data)))
    digest = sha(data)
    handle = blobs.locate(digest)
    assert isinstance(handle, BlobHandle) and handle.size == len(data) and handle.digest == digest
    assert blobs.size(digest) == len(data) and blobs.stat(digest).size == len(data)
    with blobs.open(digest) as reader:
        assert reader.read() == data
    for start, end in ((0, 1), (100, 300), (len(data) - 5, None), (7, len(data))):
        with blobs.open(digest, start, end) as reader:
            assert reader.read() == data[start:end]
    with handle.open(10, 20) as reader:
        assert reader.read(4) == data[10:14] and reader.read() == data[14:20] and reader.read() == b""


def test_a_handle_runs_on_close_once_and_keeps_by_reference(blobs):
    data = b"handle bytes"
    blobs.commit(blobs.stage(io.BytesIO(data)))
    closed = []
    reader = blobs.locate(sha(data)).open(on_close=lambda: closed.append(True))
    assert reader.read() == data
    reader.close()
    reader.close()
    assert closed == [True]
    kept = blobs.locate(sha(data)).to_json()["$blob"]
    assert kept == {"store": blobs.name, "digest": sha(data), "size": len(data)}
    with blobs.ref(kept["digest"], kept["size"]).open() as again:
        assert again.read() == data


def test_discard_and_delete_leave_nothing(blobs):
    discarded = blobs.stage(io.BytesIO(b"discarded"))
    assert list(blobs.uploads()) != []  # staged bytes are an upload until promoted or discarded
    blobs.discard(discarded)
    assert list(blobs.uploads()) == [] and not blobs.exists(sha(b"discarded"))
    blobs.commit(blobs.stage(io.BytesIO(b"deleted")))
    assert list(blobs.uploads()) == []
    assert blobs.delete(sha(b"deleted")) is True and blobs.delete(sha(b"deleted")) is False
    assert not blobs.exists(sha(b"deleted")) and blobs.stat(sha(b"deleted")) is None
    assert list(blobs.digests()) == []
    with pytest.raises(FileNotFoundError):
        blobs.open(sha(b"deleted"))


def test_the_same_bytes_twice_are_one_blob(blobs):
    for _ in range(2):
        blobs.commit(blobs.stage(io.BytesIO(b"twice")))
    assert list(blobs.digests()) == [sha(b"twice")] and list(blobs.uploads()) == []


def test_uploads_are_listed_with_their_age_and_removable(blobs):
    staged = blobs.stage(io.BytesIO(b"left over"))
    (upload,) = blobs.uploads()
    assert blobs.upload_stat(upload).size == len(b"left over")
    assert blobs.delete_upload(upload) is True and list(blobs.uploads()) == []
    assert blobs.upload_stat(upload) is None
    blobs.discard(staged)


@pytest.mark.parametrize("kind", sorted(REGISTRY.blob_stores))
def test_limits_refuse_and_keep_nothing(stores, kind):
    bounded = open_blob_store(stores, kind, "bounded", min_blob_bytes=2, max_blob_bytes=MIB)
    for data, code in ((b"x", "BLOB_TOO_SMALL"), (b"x" * (MIB + 1), "BLOB_TOO_LARGE")):
        with pytest.raises(DepotError) as raised:
            bounded.stage(io.BytesIO(data))
        assert raised.value.code == code
    assert list(bounded.uploads()) == [] and list(bounded.digests()) == []


def test_a_malformed_digest_is_400(blobs):
    for call in (blobs.locate, blobs.exists, blobs.hold):
        with pytest.raises(DepotError) as raised:
            call("sha256:nothex")
        assert raised.value.status == 400 and raised.value.code == "INVALID_DIGEST"


# --- documents and transactions --------------------------------------------------------------------------------

def test_nothing_is_visible_before_commit(state, log, blobs):
    index = versions_index()
    txn = state.transaction()
    txn.put("meta", "doc/a", state.documents.encode({"a": 1}))
    txn.index_upsert(index, row("ns", "a", "1.0.0"))
    txn.append(log, {"type": "t", "payload": {}})
    staged = blobs.stage(io.BytesIO(b"with the commit"))
    txn.stage_blob(blobs, staged)
    assert txn.get("meta", "doc/a") == {"a": 1}  # its own writes, to itself
    assert state.documents.get("meta", "doc/a") is None and state.transaction().get("meta", "doc/a") is None
    assert list(state.indexes.rows(index.keys[0], ["ns", "a"])) == [] and log.last_seq() == 0
    assert not blobs.exists(staged.digest)
    records = txn.commit()
    assert [r["seq"] for r in records] == [1]
    assert state.documents.get("meta", "doc/a") == {"a": 1}
    assert versions_of(state.indexes.rows(index.keys[0], ["ns", "a"])) == ["1.0.0"] and log.last_seq() == 1
    assert blobs.exists(staged.digest)


def test_one_failed_condition_fails_the_whole_commit(state, log, blobs):
    index = versions_index()
    commit(state, lambda txn: txn.put("meta", "taken", state.documents.encode("first")))
    txn = state.transaction()
    txn.put("meta", "doc/b", state.documents.encode({"b": 1}))
    txn.put_if_absent("meta", "taken", state.documents.encode("second"), "document 'taken'")
    txn.index_upsert(index, row("ns", "b", "1.0.0"))
    txn.append(log, {"type": "t", "payload": {}})
    staged = blobs.stage(io.BytesIO(b"never promoted"))
    txn.stage_blob(blobs, staged)
    with pytest.raises(DepotError) as raised:
        txn.commit()
    assert_conflict(raised)
    assert "taken" in raised.value.message
    assert state.documents.get("meta", "taken") == "first" and state.documents.get("meta", "doc/b") is None
    assert list(state.indexes.rows(index.keys[2], [])) == [] and log.last_seq() == 0
    assert not blobs.exists(staged.digest) and list(blobs.uploads()) == []
    with pytest.raises(DepotError) as again:
        txn.commit()
    assert again.value.code == "TXN_CLOSED"


def test_put_if_absent_twice_in_one_transaction_conflicts_at_once(state):
    txn = state.transaction()
    txn.put_if_absent("meta", "k", state.documents.encode(1), "k")
    with pytest.raises(DepotError) as raised:
        txn.put_if_absent("meta", "k", state.documents.encode(2), "k")
    assert_conflict(raised)


def test_a_document_read_and_changed_before_commit_fails_it(state):
    commit(state, lambda txn: txn.put("meta", "read", state.documents.encode({"v": 1})))
    reader = state.transaction()
    assert reader.get("meta", "read") == {"v": 1} and reader.get("meta", "absent") is None
    commit(state, lambda txn: txn.put("meta", "read", state.documents.encode({"v": 2})))
    reader.put("meta", "written", state.documents.encode(True))
    with pytest.raises(DepotError) as raised:
        reader.commit()
    assert_conflict(raised)
    assert state.documents.get("meta", "read") == {"v": 2} and state.documents.get("meta", "written") is None
    absent_then_created = state.transaction()
    assert absent_then_created.get("meta", "absent") is None
    commit(state, lambda txn: txn.put("meta", "absent", state.documents.encode(0)))
    with pytest.raises(DepotError):
        absent_then_created.commit()


def test_delete_and_a_transactions_own_view(state):
    commit(state, lambda txn: txn.put("meta", "gone", state.documents.encode("here")))
    txn = state.transaction()
    txn.delete("meta", "gone")
    assert txn.get("meta", "gone") is None and state.documents.get("meta", "gone") == "here"
    txn.commit()
    assert state.documents.get("meta", "gone") is None


def test_abort_discards_everything(state, log, blobs):
    txn = state.transaction()
    txn.put("meta", "aborted", state.documents.encode(1))
    txn.append(log, {"type": "t", "payload": {}})
    staged = blobs.stage(io.BytesIO(b"aborted bytes"))
    txn.stage_blob(blobs, staged)
    txn.abort()
    assert state.documents.get("meta", "aborted") is None and log.last_seq() == 0
    assert not blobs.exists(staged.digest) and list(blobs.uploads()) == []


def test_documents_by_store_and_prefix_in_key_order(state):
    encode = state.documents.encode
    commit(state, *[lambda txn, k=k: txn.put("meta", k, encode({"k": k})) for k in ("b/2", "a/1", "b/1", "b")],
           lambda txn: txn.put("other", "b/3", encode("elsewhere")))
    assert [k for k, _ in state.documents.items("meta")] == ["a/1", "b", "b/1", "b/2"]
    assert list(state.documents.items("meta", "b/")) == [("b/1", {"k": "b/1"}), ("b/2", {"k": "b/2"})]
    assert list(state.documents.items("other")) == [("b/3", "elsewhere")]
    assert state.documents.get("other", "a/1") is None
    assert len(encode({"k": "b/1"})) == len(b'{"k":"b/1"}')  # encode: the size max_kv_value_bytes bounds


# --- indexes ----------------------------------------------------------------------------------------------------

def publish_versions(state, index, name, versions, namespace="ns"):
    commit(state, *[lambda txn, v=v: txn.index_upsert(index, row(namespace, name, v)) for v in versions])


def test_rows_come_in_sort_order_by_key_and_prefix(state):
    index = versions_index()
    by_name, _, every = index.keys
    publish_versions(state, index, "a", ["1.2.0", "1.10.0", "0.1.0", "1.9.0", "2.0.0-rc.1"])
    publish_versions(state, index, "ab", ["9.0.0"])  # a name that the first one prefixes
    publish_versions(state, index, "a", ["5.0.0"], namespace="other")
    assert versions_of(state.indexes.rows(by_name, ["ns", "a"])) == ["2.0.0-rc.1", "1.10.0", "1.9.0", "1.2.0",
                                                                       "0.1.0"]
    assert versions_of(state.indexes.rows(by_name, ["ns", "ab"])) == ["9.0.0"]
    assert [(r["name"], r["version"]) for r in state.indexes.rows(by_name, ["ns"])][-1] == ("ab", "9.0.0")
    assert len(list(state.indexes.rows(every, []))) == 7
    assert [r["namespace"] for r in state.indexes.rows(every, [])][-1] == "other"
    assert versions_of(state.indexes.rows(by_name, ["ns", "a"], limit=2)) == ["2.0.0-rc.1", "1.10.0"]
    assert versions_of(state.indexes.rows(by_name, ["ns", "a"], offset=3, limit=5)) == ["1.2.0", "0.1.0"]
    assert list(state.indexes.rows(by_name, ["ns", "nothing"])) == []


def test_an_after_cursor_pages_through_every_row_once(state):
    index = versions_index()
    by_name = index.keys[0]
    publish_versions(state, index, "a", ["1.%d.0" % i for i in range(7)])
    publish_versions(state, index, "b", ["1.0.0"])
    pages, after = [], None
    while True:
        page = list(state.indexes.rows(by_name, ["ns", "a"], after=after, limit=3))
        if not page:
            break
        pages.append(versions_of(page))
        after = state.indexes.cursor(by_name, page[-1])
    assert pages == [["1.6.0", "1.5.0", "1.4.0"], ["1.3.0", "1.2.0", "1.1.0"], ["1.0.0"]]
    before_all = state.indexes.cursor(by_name, row("ns", "0", "1.0.0"))  # a cursor before this prefix
    assert len(list(state.indexes.rows(by_name, ["ns", "a"], after=before_all))) == 7


def test_counts(state):
    index = versions_index()
    publish_versions(state, index, "a", ["1.0.0", "2.0.0", "3.0.0-beta"])
    by_name, releases, every = index.keys
    assert state.indexes.count(by_name, ["ns", "a"]) == 3 and state.indexes.count(releases, ["ns", "a"]) == 2
    assert state.indexes.count(every, []) == 3 and state.indexes.count(by_name, ["ns", "b"]) == 0


def test_counts_follow_every_write_by_any_leading_prefix(state):
    """A count is what the rows are, after upserts that move a row within its key, out of and back into a partial
    key, upserts of an unchanged row, deletes, and in a transaction writing the same row twice."""
    index, tags = versions_index(), tags_index()
    publish_versions(state, index, "a", ["1.0.0", "2.0.0", "3.0.0"])
    publish_versions(state, index, "b", ["1.0.0-rc.1", "1.0.0"], namespace="other")
    publish_versions(state, index, "a", ["2.0.0"])  # the same row again
    commit(state, lambda txn: txn.index_upsert(index, row("ns", "a", "4.0.0-rc.1")),
           lambda txn: txn.index_upsert(index, row("ns", "a", "4.0.0-rc.1")))
    commit(state, lambda txn: txn.index_delete(index, row("ns", "a", "1.0.0")))
    for tag in ("t1", "t2"):
        commit(state, lambda txn, tag=tag: txn.index_upsert(tags, {"namespace": "ns", "name": "a", "tag": tag}))
    commit(state, lambda txn: txn.index_upsert(tags, {"namespace": "ns", "name": "a", "tag": "t1", "v": 2}))
    for key in index.keys + tags.keys:
        for values in ([], ["ns"], ["ns", "a"], ["other"], ["other", "b"], ["none", "x"], ["ns", "a", "t1"]):
            values = values[:len(key.fields)]
            assert state.indexes.count(key, values) == len(list(state.indexes.rows(key, values))), (key.name, values)
    assert state.indexes.count(index.keys[0], ["ns", "a"]) == 3 and state.indexes.count(index.keys[2], []) == 5
    assert state.indexes.count(tags.keys[0], ["ns"]) == 2


def test_a_partial_key_holds_only_the_rows_its_where_admits(state):
    index = versions_index()
    publish_versions(state, index, "a", ["1.0.0", "2.0.0-rc.1"])
    assert versions_of(state.indexes.rows(index.keys[1], ["ns", "a"])) == ["1.0.0"]


def test_upsert_moves_a_row_and_delete_removes_it_from_every_key(state):
    index = tags_index()
    tag = {"namespace": "ns", "name": "a", "tag": "stable"}
    commit(state, lambda txn: txn.index_upsert(index, dict(tag, version="1.0.0")))
    commit(state, lambda txn: txn.index_upsert(index, dict(tag, version="2.0.0")))
    assert versions_of(state.indexes.rows(index.keys[0], ["ns", "a"])) == ["2.0.0"]
    versions = versions_index()
    publish_versions(state, versions, "a", ["1.0.0"])
    commit(state, lambda txn: txn.index_delete(versions, row("ns", "a", "1.0.0")),
           lambda txn: txn.index_delete(index, tag))
    assert all(list(state.indexes.rows(key, [])) == [] for key in versions.keys + index.keys)


def test_a_unique_key_taken_by_another_row_fails_the_whole_commit(state):
    index = tags_index()
    other_rowid = IndexDef("tags", [IndexKeyDef("tags", "by_tag", ["namespace", "name", "tag"], [], True, "semver")],
                           lambda r: "another row")
    commit(state, lambda txn: txn.index_upsert(index, {"namespace": "ns", "name": "a", "tag": "t"}))
    txn = state.transaction()
    txn.put("meta", "with the violation", state.documents.encode(1))
    txn.index_upsert(other_rowid, {"namespace": "ns", "name": "a", "tag": "t", "v": 2})
    with pytest.raises(DepotError) as raised:
        txn.commit()
    assert_conflict(raised, "UNIQUE_VIOLATION")
    assert state.documents.get("meta", "with the violation") is None
    assert list(state.indexes.rows(index.keys[0], ["ns", "a", "t"])) == [{"namespace": "ns", "name": "a", "tag": "t"}]


# --- text search ------------------------------------------------------------------------------------------------

def packages_index(text=("name", "description", "labels")):
    keys = [IndexKeyDef("pkgs", "all", [], ["namespace", "name"], False, "semver")]
    return IndexDef("pkgs", keys, lambda r: "%s/%s" % (r["namespace"], r["name"]),
                    text=list(text) if text is not None else None)


def package(name, description="", labels=None, namespace="ns"):
    return {"namespace": namespace, "name": name, "description": description, "labels": labels or {}}


def found(state, index, query, after=None):
    from app.stores.text import terms
    return [r["name"] for r in state.indexes.search(index, terms(query), after=after)]


def test_search_finds_substrings_short_prefixes_words_and_labels_in_row_id_order(state):
    index = packages_index()
    commit(state, *[lambda txn, r=r: txn.index_upsert(index, r) for r in [
        package("hello-world", "Greets The World", {"team": "Platform"}),
        package("many-things", "a parser of many formats", {"lang": "rust"}),
        package("zebra", "unrelated", {"os": "linux"}),
        package("ab", "Alpha Beta")]])
    assert found(state, index, "world") == ["hello-world"]  # substring of the name, and of the description
    assert found(state, index, "LLO-W") == ["hello-world"]  # anywhere in the name, any case
    assert found(state, index, "wo") == ["hello-world"]  # a short term starts a word
    assert found(state, index, "or") == []  # ... and only starts one: "world" holds "or" inside
    assert found(state, index, "ab") == ["ab"]  # the value itself starts with it
    assert found(state, index, "pars") == ["many-things"]  # a word of the description
    assert found(state, index, "platform") == ["hello-world"] and found(state, index, "lang") == ["many-things"]
    assert found(state, index, "rust many") == ["many-things"]  # every term, each in some field
    assert found(state, index, "rust world") == []
    assert found(state, index, "a") == ["ab", "many-things"]  # row id order: ns/ab before ns/many-things
    assert found(state, index, "a", after=state.indexes.search_cursor(index, package("ab"))) == ["many-things"]
    assert found(state, index, "nothing-like-it") == []


def test_search_follows_updates_and_deletes(state):
    index = packages_index()
    commit(state, lambda txn: txn.index_upsert(index, package("tool", "converts images")))
    commit(state, lambda txn: txn.index_upsert(index, package("tool", "renders fonts", {"kind": "cli"})))
    assert found(state, index, "images") == [] and found(state, index, "fonts cli") == ["tool"]
    commit(state, lambda txn: txn.index_delete(index, package("tool")))
    assert found(state, index, "fonts") == [] and found(state, index, "tool") == []
    commit(state, lambda txn: txn.index_upsert(index, package("tool", "images again")))
    assert found(state, index, "images") == ["tool"] and found(state, index, "fonts") == []


def test_search_indexes_a_fields_first_characters_only(state):
    from app.stores.text import MAX_FIELD_CHARS
    index = packages_index()
    commit(state, lambda txn: txn.index_upsert(index, package("long", "x" * (MAX_FIELD_CHARS - 3) + "abcdef")))
    assert found(state, index, "xabc") == ["long"] and found(state, index, "cdef") == []


def test_search_is_committed_with_the_rows_and_refused_by_a_failed_commit(state):
    index, tags = packages_index(), tags_index()
    commit(state, lambda txn: txn.index_upsert(tags, {"namespace": "ns", "name": "a", "tag": "t"}))
    txn = state.transaction()
    txn.index_upsert(index, package("visible", "never"))
    assert found(state, index, "never") == []
    txn.index_upsert(IndexDef("tags", tags.keys, lambda r: "another row"), {"namespace": "ns", "name": "a",
                                                                           "tag": "t"})
    with pytest.raises(DepotError):
        txn.commit()
    assert found(state, index, "never") == []


def test_reindex_makes_rows_written_before_text_was_declared_searchable(state):
    commit(state, lambda txn: txn.index_upsert(packages_index(text=None), package("older", "from before")))
    index = packages_index()
    assert found(state, index, "older") == []
    assert state.reindex(index) == 1
    assert found(state, index, "before") == ["older"]
    assert state.reindex(packages_index(text=["name"])) == 1  # fewer fields: the others' postings go
    assert found(state, index, "before") == [] and found(state, index, "older") == ["older"]


# --- the event log ----------------------------------------------------------------------------------------------

def append(log, *types):
    return [lambda txn, t=t: txn.append(log, {"type": t, "payload": {}}) for t in types]


def test_events_are_numbered_at_commit_and_read_after_a_sequence(state, log):
    assert log.last_seq() == 0 and list(log.read_after(0)) == []
    records = commit(state, *append(log, "a", "b"))
    commit(state, *append(log, "c"))
    assert [r["seq"] for r in records] == [1, 2] and log.last_seq() == 3
    assert [(e.record["type"], e.record["seq"]) for e in log.read_after(1)] == [("b", 2), ("c", 3)]
    assert all(event.size > 0 for event in log.read_after(0))
    assert list(log.read_after(3)) == [] and list(log.read_after(10 ** 25)) == []


def test_a_failed_or_aborted_transaction_appends_nothing_and_leaves_no_gap(state, log):
    commit(state, lambda txn: txn.put("meta", "k", state.documents.encode(1)))
    failing = state.transaction()
    failing.put_if_absent("meta", "k", state.documents.encode(2), "k")
    failing.append(log, {"type": "lost", "payload": {}})
    with pytest.raises(DepotError):
        failing.commit()
    aborted = state.transaction()
    aborted.append(log, {"type": "aborted", "payload": {}})
    aborted.abort()
    commit(state, *append(log, "kept"))
    assert [(e.record["type"], e.record["seq"]) for e in log.read_after(0)] == [("kept", 1)]


def test_replica_bookkeeping_commits_with_the_transaction(state, log):
    assert log.applied_through() == 0 and not log.was_applied("e5")
    txn = state.transaction()
    txn.record_applied(5, "e5")
    txn.put("meta", "applied", state.documents.encode(1))
    assert log.applied_through() == 0
    txn.commit()
    assert log.applied_through() == 5 and log.was_applied("e5") and not log.was_applied("e6")
    commit(state, lambda txn: txn.record_applied(6, None))
    assert log.applied_through() == 6 and not log.was_applied("e6")


# --- the commit lock --------------------------------------------------------------------------------------------

def test_the_commit_lock_is_the_one_garbage_collection_takes(state, stores):
    assert state.commit_lock is stores.commit_lock is stores.guard.commit_lock


def test_a_commit_holds_the_commit_lock_while_it_writes(state):
    lock, held_during_commit = state.commit_lock, []

    def admitted(row):  # a partial key's condition runs while the commit applies its index writes
        taken = lock.acquire(blocking=False)
        if taken:
            lock.release()
        held_during_commit.append(not taken)
        return True
    index = IndexDef("probe", [IndexKeyDef("probe", "all", [], ["k"], False, "semver", where=admitted)],
                     lambda r: r["k"])
    commit(state, lambda txn: txn.index_upsert(index, {"k": "x"}))
    assert held_during_commit == [True]
    assert lock.acquire(blocking=False)  # and gave it back
    lock.release()


def test_the_commit_lock_admits_one_holder_at_a_time(state):
    lock, answers = state.commit_lock, []
    with lock:
        other = threading.Thread(target=lambda: answers.append(lock.acquire(blocking=False)))
        other.start()
        other.join()
    assert answers == [False]


# --- caches -----------------------------------------------------------------------------------------------------

SETTINGS = {"response": {"enabled": True, "max_entry_bytes": 200, "default_ttl_seconds": 300},
            "blob": {"enabled": False}}


# a cache kind -> the fixture giving the DEPOT_CACHE_URL its tests open the stores with (a prefix of their own)
CACHE_URLS = {"redis": "redis_url"}


@pytest.fixture(params=sorted(REGISTRY.caches))
def cache(request, tmp_path):
    url_fixture = CACHE_URLS.get(request.param)
    stores = Stores(str(tmp_path / "cached"), cache_url=request.getfixturevalue(url_fixture) if url_fixture else None)
    request.addfinalizer(stores.close)
    assert stores.cache_kind == request.param
    blob_store = open_blob_store(stores, sorted(REGISTRY.blob_stores)[0])

    def resolve(info):
        return blob_store.ref(info["digest"], info["size"])
    return REGISTRY.caches[request.param](stores, SETTINGS, resolve), blob_store


def test_cache_hits_misses_expires_and_invalidates(cache):
    cache, _ = cache
    assert cache.enabled("response") and cache.get("response", "k") == (False, None)
    assert cache.put("response", "k", {"v": [1, "two"]}) is True
    assert cache.get("response", "k") == (True, {"v": [1, "two"]})
    cache.invalidate("response", "k")
    assert cache.get("response", "k") == (False, None)
    assert cache.put("response", "expired", 1, ttl_seconds=-1) and cache.get("response", "expired") == (False, None)


def test_cache_off_and_too_large_entries_are_not_kept(cache):
    cache, _ = cache
    assert not cache.enabled("blob") and cache.put("blob", "k", 1) is False and cache.get("blob", "k") == (False, None)
    assert cache.put("response", "big", "x" * 500) is False and cache.get("response", "big") == (False, None)


def test_cache_keeps_blob_handles_by_reference(cache):
    cache, blobs = cache
    blobs.commit(blobs.stage(io.BytesIO(b"cached blob")))
    assert cache.put("response", "with a blob", {"body": blobs.locate(sha(b"cached blob"))})
    hit, value = cache.get("response", "with a blob")
    assert hit and isinstance(value["body"], BlobHandle) and value["body"].digest == sha(b"cached blob")
    with value["body"].open() as reader:
        assert reader.read() == b"cached blob"


# --- the registry -----------------------------------------------------------------------------------------------

def storage_problems(project_schema, change):
    change(project_schema["storage"])
    compiled, report = compile_schema(project_schema, "test")
    return {(finding.place, finding.message.split(";")[0]) for finding in report.errors}


def test_a_store_kind_nothing_implements_is_refused_at_load(project_schema):
    def unknown_kinds(storage):
        storage["blob_stores"]["primary"]["kind"] = "tape"
        storage["kv_stores"]["meta"]["kind"] = "punched-cards"
    problems = storage_problems(project_schema, unknown_kinds)
    assert ("storage.blob_stores.primary.kind", "blob store kind 'tape' is not supported") in problems
    assert ("storage.kv_stores.meta.kind", "kv store kind 'punched-cards' is not supported") in problems


def test_kv_stores_of_one_schema_share_one_kind(project_schema):
    def two_kinds(storage):
        storage["kv_stores"]["other"] = {"kind": "postgresql"}
    assert any(where == "storage.kv_stores" and "different kinds" in message
               for where, message in storage_problems(project_schema, two_kinds))


def test_stores_opens_each_kind_through_the_registry(tmp_path):
    opened = []

    def elsewhere(stores, definition):  # a new kind: its factory, and nothing else
        opened.append(definition.name)
        return REGISTRY.blob_stores["filesystem"](stores, definition)
    registry = Registry(dict(REGISTRY.blob_stores, elsewhere=elsewhere), REGISTRY.kv_stores, REGISTRY.caches,
                        REGISTRY.upload_sessions)
    stores = Stores(str(tmp_path / "data"), registry=registry)
    try:
        store = stores.blob_store(BlobStoreDef("far", {"kind": "elsewhere", "root": "far"}))
        assert opened == ["far"] and stores.blob_store(BlobStoreDef("far", {"kind": "elsewhere", "root": "far"})) \
            is store
        store.commit(store.stage(io.BytesIO(b"far bytes")))
        assert store.exists(sha(b"far bytes"))
    finally:
        stores.close()


# --- upload sessions ------------------------------------------------------------------------------------------

def open_sessions(stores, kind, ttl_seconds=3600, max_bytes=None):
    definition = UploadSessionsDef("uploads", dict({"blob_store": "primary", "ttl_seconds": ttl_seconds},
                                                   **({"max_bytes": max_bytes} if max_bytes is not None else {})))
    return stores.upload_sessions(definition, BlobStoreDef("primary", spec_of(kind, root="blobs-primary")))


@pytest.fixture(params=sorted(REGISTRY.upload_sessions))
def sessions_kind(request):
    return request.param


@pytest.fixture
def sessions(stores, sessions_kind):
    return open_sessions(stores, sessions_kind)


def test_a_session_takes_chunks_in_order_and_finishes_as_a_staged_blob(stores, sessions, sessions_kind):
    session = sessions.start()
    assert sessions.size(session) == 0
    assert sessions.append(session, io.BytesIO(b"hello "), 0) == 6
    assert sessions.append(session, io.BytesIO(b"world")) == 11  # no offset: at the end
    with pytest.raises(DepotError) as refused:
        sessions.append(session, io.BytesIO(b"!"), 3)
    assert refused.value.status == 416 and sessions.size(session) == 11
    staged = sessions.finish(session)
    assert (staged.digest, staged.size) == (sha(b"hello world"), 11)
    store = open_blob_store(stores, sessions_kind)
    assert not store.exists(staged.digest)  # staged, not stored, until promoted
    store.commit(staged)
    assert store.open(staged.digest).read() == b"hello world"
    assert sessions.size(session) is None
    with pytest.raises(DepotError) as gone:
        sessions.append(session, io.BytesIO(b"late"))
    assert gone.value.code == "UPLOAD_UNKNOWN"


def test_a_chunk_cut_short_leaves_the_session_as_it_was(sessions):
    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell() >= 4:
                raise OSError("the client went away")
            return super().read(4)
    session = sessions.start()
    sessions.append(session, io.BytesIO(b"kept"))
    with pytest.raises(OSError):
        sessions.append(session, Broken(b"lost bytes"))
    assert sessions.size(session) == 4
    sessions.append(session, io.BytesIO(b"!"), 4)
    assert sessions.finish(session).digest == sha(b"kept!")


@pytest.mark.parametrize("kind", sorted(REGISTRY.upload_sessions))
def test_a_session_over_its_limit_is_refused_and_unchanged(stores, kind):
    sessions = open_sessions(stores, kind, max_bytes=8)
    session = sessions.start()
    sessions.append(session, io.BytesIO(b"12345"))
    with pytest.raises(DepotError) as refused:
        sessions.append(session, io.BytesIO(b"67890"))
    assert refused.value.status == 413 and sessions.size(session) == 5


def test_concurrent_appends_at_one_offset_admit_one(sessions):
    session = sessions.start()
    outcomes, errors = [], []

    def append(byte):
        try:
            sessions.append(session, io.BytesIO(byte * MIB), 0)
            outcomes.append("ok")
        except DepotError as exc:
            outcomes.append(exc.status)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=append, args=(bytes([48 + i]),)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and sorted(outcomes, key=str) == [416] * 5 + ["ok"]
    data = sessions.finish(session)
    with data.open() as stream:
        content = stream.read()
    assert len(content) == MIB and len(set(content)) == 1  # one writer's bytes, whole


def test_sessions_outlive_their_process_and_expire_when_idle(tmp_path):
    first = Stores(str(tmp_path / "restarted"))
    sessions = open_sessions(first, "filesystem", ttl_seconds=60)
    kept, idle = sessions.start(), sessions.start()
    sessions.append(kept, io.BytesIO(b"resumed "))
    sessions.append(idle, io.BytesIO(b"abandoned"))
    first.close()
    reopened = Stores(str(tmp_path / "restarted"))
    try:
        again = open_sessions(reopened, "filesystem", ttl_seconds=60)
        assert again.size(kept) == 8
        path = os.path.join(again.directory, idle)
        os.utime(path, (os.stat(path).st_mtime - 120,) * 2)
        assert again.size(idle) is None  # expired: gone to its callers at once
        assert again.expire() == (1, len(b"abandoned")) and not os.path.exists(path)
        again.append(kept, io.BytesIO(b"later"), 8)
        assert again.finish(kept).digest == sha(b"resumed later")  # hashed again from its file
    finally:
        reopened.close()


def test_the_embedded_state_keeps_its_memory_bounds_when_it_is_opened_again(tmp_path):
    """RocksDB opens an existing database's default column family with the options stored in it unless they are
    named again: the bounds must hold on every start, not only the first."""
    from app.stores.state import BLOCK_CACHE_BYTES, StateStore
    for _ in range(2):
        state = StateStore(str(tmp_path / "state"))
        try:
            assert state.memory()["block_cache_capacity_bytes"] == BLOCK_CACHE_BYTES
        finally:
            state.close()
