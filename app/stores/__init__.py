"""Stores behind small interfaces. The embedded implementations: files for blobs, rocksdict for KV, indexes,
the event log and the cache. A shared implementation (for example PostgreSQL or Redis) fits the same methods.

    BlobStore   stage(stream, also=()) -> StagedBlob (.digests: sha-256 and the algorithms in also);
                promote(staged); discard(staged);
                locate(digest) -> BlobRef | None; health()
    StateStore  get(space, key); scan(space, prefix, limit, after); transaction() -> Transaction; health()
    Transaction kv_put / kv_delete / kv_cas / kv_get (read-validated) / index_upsert / index_delete /
                emit / stage_blob / commit() / abort()
"""
