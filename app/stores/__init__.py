"""Depot's stores: typed interfaces, a registry of implementations by kind, and the embedded implementations.

    interfaces.py  what callers may ask (typing.Protocol classes, and the values crossing the boundary):
        BlobStore     stage(stream, also) -> StagedBlob; promote(staged) (commit lock held) / commit(staged);
                      discard(staged); locate(digest) -> BlobHandle | None; ref(digest, size); exists; size;
                      stat -> BlobStat(size, modified); open(digest, start, end) -> reader; delete(digest);
                      digests() and uploads() (for GC and scrubbing); hold/release, lease/end_lease; health
        BlobHandle    what steps pass around: .store .digest .size; stat(); open(start, end, on_close)
        DocumentStore encode(document) -> bytes; get(store, key); items(store, prefix) in key order
        IndexStore    rows(key, values, after=cursor, offset, limit) in the key's sort order; cursor(key, row);
                      count(key, values)
        EventLog      read_after(seq) -> LoggedEvent(record, size); last_seq(); a replica's applied_through()
                      and was_applied(event_id); .settings (the schema's replication.log)
        Transaction   get / put / put_if_absent / delete (documents), index_upsert / index_delete, append
                      (events), record_applied (replica bookkeeping), stage_blob; commit() checks its conditions
                      under the commit lock and applies everything in one atomic write, or nothing; abort()
        CommitLock    what a commit (and the start of a garbage collection) holds: a process lock here
        Cache         enabled(kind); get(kind, key) -> (hit, value); put(kind, key, value, ttl); invalidate
        StateBackend  documents, indexes, event_log(settings), transaction(), commit_lock, reindex, health
    registry.py    REGISTRY: the schema's store kinds -> implementations (blob: filesystem, s3; kv: rocksdb; the
                   embedded cache), and Stores, a data dir's open stores, built from it
    state.py       the rocksdb kind: documents, index rows, events, replica bookkeeping in one rocksdict database;
    cache.py       the embedded cache, in the same database (these two build every byte key and row encoding)
    blobs.py       the filesystem kind: content-addressed files (file paths stay inside it)
    s3.py          the s3 kind: content-addressed objects in an S3-compatible bucket (keys stay inside it);
                   s3_sessions.py, its upload sessions, kept in the bucket
    guard.py       what garbage collection must not remove at this moment (holds, leases, uploads, seen-set)
    digests.py     digest forms (sha256:<hex>) and the digests clients declare; codec.py, JSON as Depot writes it
    sortkeys.py    order-preserving byte encodings for index keys
"""
