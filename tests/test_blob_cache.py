"""The local disk cache in front of an s3 blob store (caching.blob_cache: enabled, max_bytes, eviction lru;
app/stores/blobcache.py), on a real SeaweedFS S3 gateway: a blob read whole is kept as it streams, later reads
(whole or by range) come from the local file, the least recently read blobs go first when the bound is passed,
bytes that do not match their digest and blobs read in part are never kept, a removed blob leaves the cache, and
a restart keeps what was cached and removes what was half-written."""
import io
import os

import pytest

from app.engine.compiler import compile_schema
from app.engine.definitions import BlobStoreDef
from app.stores.blobcache import DiskBlobCache
from app.stores.blobs import ServedFile
from tests.test_store_contract import sha, stores  # noqa: F401 - stores is a fixture these tests use

KIB = 1024
A, B, C = (bytes([n]) * 2 * KIB for n in (1, 2, 3))


@pytest.fixture
def cached(stores, s3_server):
    """An s3 blob store whose local disk cache holds 5 KiB: two 2 KiB blobs, not three."""
    return stores.blob_store(BlobStoreDef("primary", dict(s3_server.spec(), kind="s3"), local_cache_bytes=5 * KIB))


def read_whole(store, data):
    with store.locate(sha(data)).open() as reader:
        return reader.read()


def cached_files(store):
    return sorted(name for name in os.listdir(store.cache.root))


def put(store, *blobs):
    for data in blobs:
        store.commit(store.stage(io.BytesIO(data)))


def test_a_blob_read_whole_is_kept_and_then_read_from_the_local_file_whole_or_by_range(cached):
    put(cached, A)
    assert read_whole(cached, A) == A
    assert cached_files(cached) == [sha(A)[7:]]
    with cached.locate(sha(A)).open() as reader:
        assert isinstance(reader, ServedFile) and reader.read() == A
    with cached.locate(sha(A)).open(10, 20) as reader:
        assert isinstance(reader, ServedFile) and reader.read() == A[10:20]


def test_the_least_recently_read_blobs_go_first_when_the_bound_is_passed(cached):
    put(cached, A, B, C)
    read_whole(cached, A)
    read_whole(cached, B)
    read_whole(cached, A)  # A is now the more recently read
    read_whole(cached, C)  # 6 KiB > 5 KiB: B goes
    assert cached_files(cached) == sorted([sha(A)[7:], sha(C)[7:]])
    assert cached.cache.usage() == {"blobs": 2, "bytes": 4 * KIB, "max_bytes": 5 * KIB}


def test_a_blob_read_in_part_or_larger_than_the_cache_is_not_kept(cached):
    large = b"L" * 6 * KIB
    put(cached, A, large)
    with cached.locate(sha(A)).open(0, 100) as reader:
        reader.read()
    with cached.locate(sha(A)).open() as reader:  # a client that went away after the first bytes
        reader.read(100)
    assert read_whole(cached, large) == large
    assert cached_files(cached) == []


def test_bytes_that_do_not_match_their_digest_are_not_kept(cached, s3_server):
    put(cached, A)
    handle = cached.locate(sha(A))
    s3_server.client().put_object(Bucket=cached.bucket, Key=handle.key, Body=B)  # the bucket's bytes went bad
    with handle.open() as reader:
        assert reader.read() == B  # what the bucket holds is sent (scrub's business), but never cached
    assert cached_files(cached) == []


def test_a_deleted_blob_leaves_the_cache_and_is_not_served_from_it(cached):
    put(cached, A)
    read_whole(cached, A)
    assert cached.delete(sha(A)) and cached_files(cached) == [] and cached.locate(sha(A)) is None


def test_a_restart_keeps_what_was_cached_and_removes_what_was_half_written(cached):
    put(cached, A)
    read_whole(cached, A)
    with open(cached.cache.partial_path(), "wb") as partial:
        partial.write(b"a crash left this")
    again = DiskBlobCache(cached.cache.root, cached.cache.max_bytes)
    assert sorted(os.listdir(again.root)) == [sha(A)[7:]] and again.usage()["bytes"] == len(A)


def test_the_schema_turns_it_on_for_remote_stores_with_its_bound(project_schema):
    project_schema["caching"]["blob_cache"] = {"enabled": True, "max_bytes": 123456, "eviction": {"policy": "lru"}}
    compiled, report = compile_schema(project_schema, "test")
    assert report.ok, report.to_text()
    assert {d.local_cache_bytes for d in compiled.definitions["blob_store"].values()} == {123456}
    project_schema["caching"]["blob_cache"]["enabled"] = False
    compiled, _ = compile_schema(project_schema, "test")
    assert {d.local_cache_bytes for d in compiled.definitions["blob_store"].values()} == {None}
