"""What Depot asks of its stores: one Protocol for each kind, and the value types that cross the boundary.

Callers (ops, the engine, the HTTP layer, GC, replication) hold stores through these interfaces only. How a store
lays its data out (byte keys, row encodings, file paths) is its own business and never leaves its module:
documents are addressed by (kv store name, key string), index rows by an index key and the values of its leading
fields, events by sequence number, blobs by digest.

A state backend (the registry's kv store kinds) keeps documents, index rows, the event log and a replica's
bookkeeping together, because one Transaction commits writes to all of them atomically. Blob stores are
separate; a transaction promotes the blobs it staged under the same commit lock, before it writes.

Tests/test_store_contract.py is the contract: every implementation passes the same tests.
"""
from __future__ import annotations

import threading
from typing import (Any, BinaryIO, Callable, ContextManager, Hashable, Iterable, Iterator, NamedTuple, Optional,
                    Protocol, Sequence, runtime_checkable)

JsonValue = Any  # what json.loads returns: dict, list, str, int, float, bool or None
Row = dict[str, Any]  # an index row: a JSON object
Event = dict[str, Any]  # an event record: {"event_id", "type", "at", "payload", "seq"}
Cursor = bytes  # an opaque position in an index key's order (IndexStore.cursor), meaningful to its store only


class StoreLocked(Exception):
    """Another process (a running server) holds the data dir's stores: the embedded ones admit one process."""


class CacheServerError(Exception):
    """DEPOT_CACHE_URL is malformed, or names a server that does not answer (raised as the stores open, at start)."""


class BlobLocationError(ValueError):
    """DEPOT_BLOB_URL is malformed (raised as the stores open, at start)."""


class StateLocationError(ValueError):
    """DEPOT_STATE_URL (or a postgresql kv store's url) is malformed, or its server does not answer (raised as the
    stores open, at start)."""


# --- definitions a schema gives the stores ---------------------------------------------------------------------

def _no_rowid(row: Row) -> str:
    raise TypeError("an index key outside any IndexDef has no row id")


class IndexKeyDef:
    """One key of an index: rows sorted by ``fields`` (equality prefix), then ``sorts`` ((field, descending,
    version ordering or None) each), then row id. A unique key holds one row per value of its fields; ``where``
    (row -> bool) admits the rows a partial key holds; ``rowid`` is its index's (IndexDef binds it). Keys hash by
    identity: a store may keep what it derives from one (weakly: a schema swap drops its keys)."""
    __slots__ = ("index", "name", "fields", "sorts", "unique", "where", "rowid", "__weakref__")

    def __init__(self, index: str, name: str, fields: Sequence[str], sort: Sequence[str], unique: bool,
                 ordering: str, where: Optional[Callable[[Row], bool]] = None) -> None:
        """``sort`` as the schema spells it ("field" or "field:desc"); the `version` field sorts by the version
        ``ordering`` of the index's entity (semver, pep440, opaque: app/stores/sortkeys.py), every other field by
        value."""
        self.index = index
        self.name = name
        self.fields = list(fields)
        self.unique = unique
        self.where = where
        self.rowid: Callable[[Row], str] = _no_rowid
        self.sorts = []
        for spec in sort:
            field, _, direction = spec.partition(":")
            self.sorts.append((field, direction == "desc", ordering if field == "version" else None))


class IndexDef:
    """An index over a document type: its keys, how a row names the document it came from (its row id), and the
    versioning scheme its rows' `version` follows (the engine's to read: a store needs each key's ordering only;
    None when the schema leaves it undecided). ``text``: the row fields its text search reads (the schema's
    `text.fields`; app/stores/text.py has the semantics), or None: no text search."""
    __slots__ = ("name", "keys", "rowid", "scheme", "text", "__weakref__")

    def __init__(self, name: str, keys: Sequence[IndexKeyDef], rowid: Callable[[Row], str],
                 scheme: Optional[str] = "semver", text: Optional[Sequence[str]] = None) -> None:
        self.name = name
        self.keys = list(keys)
        self.rowid = rowid  # row -> its stable identity (the source document's key)
        self.scheme = scheme
        self.text = list(text) if text is not None else None
        for key in self.keys:
            key.rowid = rowid

    def key_for(self, fields: Iterable[str], name: Optional[str] = None) -> Optional[IndexKeyDef]:
        """The index key (named ``name``, or the first) whose leading fields are exactly ``fields``."""
        wanted = set(fields)
        for key in self.keys:
            if (name is None or key.name == name) and set(key.fields[:len(wanted)]) == wanted:
                return key
        return None


# --- blobs ------------------------------------------------------------------------------------------------------

class BlobStat(NamedTuple):
    size: int
    modified: float  # time.time() of the last write or touch (garbage collection's grace period runs from it)


class BlobHandle:
    """A blob's bytes, as steps pass them around (blob.get, blob.put, a proxied body) and respond.bytes sends them.
    ``store`` and ``digest`` are None for bytes that are in no store (an upstream's body). Concrete stores
    subclass it; ops and the HTTP layer use only what is declared here."""

    template_attrs: tuple[str, ...] = ("digest", "size", "store")  # what a template may read of a handle ($blob.digest)
    __slots__ = ("store", "digest", "size")

    def __init__(self, store: Optional[str], digest: Optional[str], size: Optional[int]) -> None:
        self.store, self.digest, self.size = store, digest, size

    def stat(self) -> BlobStat:
        """Size and modification time; FileNotFoundError when the bytes are gone."""
        raise NotImplementedError

    def open(self, start: int = 0, end: Optional[int] = None,
             on_close: Optional[Callable[[], None]] = None) -> BinaryIO:
        """A reader positioned at ``start`` whose reads stop at ``end`` (exclusive; None: the end). It may be
        seekable (a server may then send it without a worker thread); ``on_close`` runs once, when it is
        closed. FileNotFoundError when the bytes are gone."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """How a handle is kept in a cache entry; BlobStore.ref turns it back into a handle."""
        return {"$blob": {"store": self.store, "digest": self.digest, "size": self.size}}


class StagedBlob(Protocol):
    """Bytes streamed into a store and hashed, not yet visible under their digest (BlobStore.stage)."""
    store: str
    digest: str  # "sha256:<hex>"
    size: int
    digests: dict[str, str]  # algorithm name (app.stores.digests.ALGORITHMS) -> hex, each computed while staging
    verified: bool  # set by blob.verify_digest: the runtime check all_blob_puts_followed_by reads it

    def stat(self) -> BlobStat: ...

    def open(self, start: int = 0, end: Optional[int] = None,
             on_close: Optional[Callable[[], None]] = None) -> BinaryIO:
        """Its bytes (staged, or stored once promoted), as BlobHandle.open."""


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed bytes. Writing is two steps: ``stage`` streams bytes in while hashing them (nothing is
    visible under the digest), ``promote`` (inside a transaction's commit, under the commit lock) or ``commit``
    (alone) makes them so; ``discard`` forgets a staged blob. Bytes a write in flight needs are protected from
    garbage collection by the data dir's BlobGuard (hold, lease, and the staged uploads it tracks)."""
    name: str

    def stage(self, stream: Readable, also: Iterable[str] = ()) -> StagedBlob:
        """Stream ``stream`` in, hashing with sha-256 and the algorithms ``also`` names (ALGORITHMS); 413
        BLOB_TOO_LARGE / 400 BLOB_TOO_SMALL by the store's limits, nothing kept."""

    def promote(self, staged: StagedBlob, defer_sync: bool = False) -> Optional[Callable[[], None]]:
        """Make staged bytes visible under their digest; the commit lock is held. Bytes already there are
        touched (their modification time restarts the grace period) and the staged copy dropped. With
        ``defer_sync`` what is left to make the bytes durable under their name (a directory's sync) is returned
        instead of done, to be called before the commit referring to them is written (so commits written
        together share it); equal ones do the same. None: nothing left."""

    def commit(self, staged: StagedBlob) -> None:
        """``promote`` outside a transaction: takes the commit lock."""

    def discard(self, staged: StagedBlob) -> None: ...

    def locate(self, digest: str) -> Optional[BlobHandle]:
        """A handle on the stored bytes with their size, or None; 400 INVALID_DIGEST for a malformed digest."""

    def ref(self, digest: str, size: Optional[int]) -> BlobHandle:
        """A handle on ``digest`` without looking whether it is there (a cache entry names it)."""

    def exists(self, digest: str) -> bool: ...

    def size(self, digest: str) -> Optional[int]: ...

    def stat(self, digest: str) -> Optional[BlobStat]: ...

    def open(self, digest: str, start: int = 0, end: Optional[int] = None) -> BinaryIO:
        """The stored bytes from ``start`` to ``end`` (exclusive); FileNotFoundError when absent."""

    def delete(self, digest: str) -> bool:
        """Remove the bytes; False when they were not there. Garbage collection decides (app/gc.py)."""

    def digests(self) -> Iterator[str]:
        """Every stored digest ("sha256:<hex>"), for garbage collection and scrubbing."""

    def uploads(self) -> Iterator[str]:
        """Every staged upload not yet promoted or discarded (what a crash may leave), by its guard id."""

    def upload_stat(self, upload: str) -> Optional[BlobStat]: ...

    def delete_upload(self, upload: str) -> bool: ...

    def hold(self, digest: str) -> None:
        """Keep ``digest``'s bytes from garbage collection until ``release``."""

    def release(self, digest: str) -> None: ...

    def lease(self, digest: str, seconds: float) -> None:
        """Keep ``digest``'s bytes from garbage collection for ``seconds`` (or until ``end_lease``)."""

    def end_lease(self, digest: str) -> None: ...

    def health(self, detail: bool = False) -> dict[str, Any]: ...


class UploadSessions(Protocol):
    """Resumable uploads into a blob store (the schema's storage.upload_sessions): bytes arrive in chunks, each
    appended where the last ended, across requests (and processes: a session lives in the store, not in memory),
    then become one staged blob. A session idle longer than its time-to-live is gone."""
    name: str

    def start(self) -> str:
        """A new, empty session's id: unguessable, made of [0-9a-f]."""

    def size(self, session_id: str) -> Optional[int]:
        """The bytes it holds; None when there is no such live session."""

    def append(self, session_id: str, stream: Readable, offset: Optional[int] = None) -> int:
        """Append the stream (all of it or nothing), which must start at ``offset`` when given (416
        UPLOAD_RANGE_INVALID otherwise); -> the new size. 404 UPLOAD_UNKNOWN; 413 BLOB_TOO_LARGE."""

    def finish(self, session_id: str) -> StagedBlob:
        """The bytes as a staged blob of the store (promote or discard it as any other); the session ends."""

    def abort(self, session_id: str) -> bool:
        """Cancel; False when there was no such session."""

    def expire(self) -> tuple[int, int]:
        """Remove sessions idle past the time-to-live -> (sessions, bytes) removed."""


# --- documents, indexes, events ---------------------------------------------------------------------------------

class DocumentStore(Protocol):
    """JSON documents by (kv store name, key). Writes go through a Transaction."""

    def encode(self, document: JsonValue) -> bytes:
        """The document as this store keeps it: its length is what max_kv_value_bytes bounds, and
        Transaction.put takes it, so a document is encoded once."""

    def get(self, store: str, key: str) -> Optional[JsonValue]:
        """The document, or None (a read outside any transaction)."""

    def items(self, store: str, prefix: str = "") -> Iterator[tuple[str, JsonValue]]:
        """(key, document) for every key starting with ``prefix``, in key order."""


class IndexStore(Protocol):
    """Index rows, kept by the transactions that upsert and delete them."""

    def rows(self, key: IndexKeyDef, values: Sequence[JsonValue], after: Optional[Cursor] = None,
             offset: int = 0, limit: Optional[int] = None) -> Iterator[Row]:
        """The rows whose leading key fields equal ``values`` (a prefix of ``key.fields``, in that order), in
        the key's sort order: from just after ``after`` (a cursor of this key; keyset pagination), the first
        ``offset`` skipped (page numbers), at most ``limit`` of them."""

    def cursor(self, key: IndexKeyDef, row: Row) -> Cursor:
        """The position of ``row`` in ``key``'s order: pass it as ``after`` to read on from there."""

    def count(self, key: IndexKeyDef, values: Sequence[JsonValue]) -> int: ...

    def search(self, index: IndexDef, terms: Sequence[str], after: Optional[Cursor] = None) -> Iterator[Row]:
        """The rows of ``index`` (one declaring ``text``) matching every one of ``terms`` (app.stores.text.terms
        of a query; the semantics are app.stores.text.matches), in row id order, from just after ``after`` (a
        ``search_cursor``). Kept atomically with the index's rows; the cost follows the rarest of the terms'
        tokens, not the number of rows."""

    def search_cursor(self, index: IndexDef, row: Row) -> Cursor:
        """The position of ``row`` in ``search``'s order: pass it as ``after`` to read on from there."""


class LoggedEvent(NamedTuple):
    record: Event
    size: int  # the stored size in bytes: what replication's batch byte bound counts


class EventLog(Protocol):
    """An append-only log numbered 1, 2, ... without gaps (appended by Transaction.append), and a replica's
    bookkeeping: up to which primary sequence number it has applied, and which event ids."""
    settings: Any  # the schema's replication.log and .shipping (app.engine.definitions.EventLog)

    def read_after(self, seq: int) -> Iterator[LoggedEvent]:
        """The events numbered above ``seq``, in order."""

    def last_seq(self) -> int:
        """The highest sequence number appended (0: none)."""

    def applied_through(self) -> int:
        """A replica's cursor: the last primary sequence number it took (0: none)."""

    def was_applied(self, event_id: str) -> bool: ...


class Transaction(Protocol):
    """Buffered writes: nothing is visible before ``commit``, which checks every condition (if-absent puts, and
    that each document read is unchanged) under the commit lock and applies everything in one atomic write, or
    nothing (409 CONFLICT / UNIQUE_VIOLATION). ``abort`` (or a failed commit) discards it all, staged blobs too."""
    blobs: list[tuple[BlobStore, StagedBlob]]  # (BlobStore, StagedBlob) promoted at commit

    def get(self, store: str, key: str) -> Optional[JsonValue]:
        """The document as this transaction sees it (its own writes first); re-checked at commit."""

    def put(self, store: str, key: str, encoded: bytes) -> None:
        """``encoded``: DocumentStore.encode of the document."""

    def put_if_absent(self, store: str, key: str, encoded: bytes, label: str) -> None:
        """Put, on condition that the key is absent at commit (409 CONFLICT naming ``label`` otherwise)."""

    def delete(self, store: str, key: str) -> None: ...

    def index_upsert(self, index: IndexDef, row: Row) -> None: ...

    def index_delete(self, index: IndexDef, row: Row) -> None: ...

    def append(self, log: EventLog, record: Event) -> None:
        """Append ``record`` at commit; its ``seq`` is set then."""

    def record_applied(self, seq: int, event_id: Optional[str]) -> None:
        """A replica's bookkeeping, committed with the event's own writes: the cursor moves to ``seq`` and
        ``event_id`` counts as applied."""

    def stage_blob(self, store: BlobStore, staged: StagedBlob) -> None: ...

    def commit(self) -> list[Event]:
        """Apply everything atomically; -> the appended event records (with their ``seq``)."""

    def abort(self) -> None: ...


class CommitLock(Protocol):
    """Serialises commits' checks (and the start of a garbage collection, a reindex, a recount). A commit takes
    it through ``for_commit()`` and leaves its writes in flight when it lets go (several commits share one sync:
    group commit); whoever takes it otherwise (``with lock:``, ``acquire``) also waits until no write is in
    flight, so it sees every commit made before it, durable. The embedded stores use a process lock
    (ProcessCommitLock); a shared database would take a database-level lock."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...

    def __enter__(self) -> bool: ...

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> Any: ...

    def for_commit(self) -> ContextManager[Any]:
        """The lock for a commit's checks: taken without waiting for writes in flight."""

    def writes_started(self, count: int) -> None: ...

    def writes_ended(self, count: int) -> None: ...


class ProcessCommitLock:
    """CommitLock for stores one process owns: a threading.Lock and a count of commits written but not yet
    durable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._in_flight = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken = self._lock.acquire(blocking, timeout)
        if taken:
            with self._idle:
                self._idle.wait_for(lambda: self._in_flight == 0)
        return taken

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        self.release()

    def for_commit(self) -> ContextManager[Any]:
        return self._lock

    def writes_started(self, count: int) -> None:
        with self._idle:
            self._in_flight += count

    def writes_ended(self, count: int) -> None:
        with self._idle:
            self._in_flight -= count
            if self._in_flight == 0:
                self._idle.notify_all()


def process_lock() -> CommitLock:
    """The commit lock of stores one process owns."""
    return ProcessCommitLock()


class Cache(Protocol):
    """Advisory entries with a TTL, per cache kind ("response", "blob"): a miss is always safe."""

    def enabled(self, kind: str) -> bool: ...

    def get(self, kind: str, key: str) -> tuple[bool, JsonValue]:
        """(hit, value); an expired entry is a miss."""

    def put(self, kind: str, key: str, value: JsonValue, ttl_seconds: Optional[int] = None) -> bool:
        """Store unless caching is off or the entry exceeds max_entry_bytes; -> whether stored."""

    def invalidate(self, kind: str, key: str) -> None: ...


class RateLimit(Protocol):
    """At most so many hits per window for each key (auth.login's limits): in process, or shared by every process
    serving the repository (DEPOT_CACHE_URL)."""

    rate: str  # as the schema writes it: "5/m"

    def hit(self, key: Hashable) -> int:
        """Record a hit; 0 when allowed, else the seconds to wait before the next would be."""


class Generation(Protocol):
    """A counter every process serving the repository reads alike, bumped after each change that ends credentials
    (a revoked token, a disabled, changed or deleted account): a process trusts what it cached about credentials
    only while the counter reads as it did when the cached state was read."""

    def current(self) -> int: ...

    def bump(self) -> None: ...


class StateBackend(Protocol):
    """Documents, indexes and the event log of one kv store kind, committed together by its transactions."""

    @property
    def documents(self) -> DocumentStore: ...

    @property
    def indexes(self) -> IndexStore: ...

    @property
    def commit_lock(self) -> CommitLock:
        """The lock its commits take: the data dir's BlobGuard takes the same one (Stores.commit_lock)."""

    def transaction(self) -> Transaction: ...

    def event_log(self, settings: Any) -> EventLog:
        """The log the schema's replication.log section places (``settings``: app.engine.definitions.EventLog)."""

    def reindex(self, index: IndexDef) -> int:
        """Rewrite every row of ``index`` under its current keys and text fields (after a schema change: rows
        written before `text` was declared become searchable, and an index no longer declaring it loses its
        text postings); only with no other writer. -> rows rewritten."""

    def health(self, detail: bool = False) -> dict[str, Any]: ...

    def close(self) -> None: ...
