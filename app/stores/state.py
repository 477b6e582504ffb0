"""The `rocksdb` kv store kind: documents, indexes, the event log, a replica's bookkeeping and the cache in one
rocksdict database.

Keeping them in one database is what lets a transaction commit KV, index and event writes in a single
atomic write batch. Key spaces (first byte):
    k  KV documents      k<store>\\0<document key>   (the event log too: k<log store>\\0<key_prefix><seq, 20 digits>)
    i  index entries     i<index>\\0<key name>\\0<encoded key fields><encoded sort fields><encoded row id>
                         -> JSON [row id, row]
    r  index row map     r<index>\\0<row id>  -> the entry keys a row currently occupies
    n  index counts      n<index>\\0<key name>\\0<encoded leading key fields> -> rows under that prefix (decimal),
                         for every leading prefix of a key's fields (absent: none)
    N  counted keys      N<index>\\0<key name>  -> present once the key's counts are complete (see _Indexes.count)
    t  text postings     t<index>\\0<token>\\0<encoded row id>  -> empty (indexes declaring `text`; app/stores/text.py)
    T  text row record   T<index>\\0<encoded row id>  -> JSON [row, its tokens]
    c  cache entries     c<kind>\\0<key>  (app/stores/cache.py)
    x  replication       xcursor (last primary event applied), xapplied\\0<event id>
Every byte key and row encoding is built here and nowhere else: callers use the typed views (``documents``,
``indexes``, ``event_log``) and Transaction's typed methods (app/stores/interfaces.py). The raw methods
(get, scan, write, kv_get, kv_put ...) are this implementation's own, for its views and for tests.
"""
import json
import os
import threading
from itertools import islice
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, ContextManager, Iterable, Iterator, Optional, Protocol, Sequence, cast

from rocksdict import BlockBasedIndexType, BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

from app.metrics import COMMIT_SECONDS
from app.errors import DepotError, conflict
from app.stores import sortkeys, text
from app.stores.codec import dumps, loads
from app.stores.interfaces import (BlobStore, CommitLock, Cursor, Event, EventLog, IndexDef, IndexKeyDef, JsonValue,
                                   LoggedEvent, Row, StagedBlob, StoreLocked, process_lock)

__all__ = ["StateStore", "Transaction", "StoreLocked", "IndexDef", "IndexKeyDef", "dumps", "loads", "kv_key"]

SEQ_WIDTH = 20
CACHE_SPACE = b"c"  # the key space of the embedded cache's entries (app/stores/cache.py)
CURSOR_KEY = b"xcursor"
_APPLIED_HEAD = b"xapplied\x00"
_MAX_CODECS = 4096  # index keys whose codecs are kept (a schema has tens)


def kv_key(store: str, key: str) -> bytes:
    return b"k" + store.encode() + b"\x00" + key.encode("utf-8")


class _KeyCodec:
    """An index key's byte encoding: entries sort as the key orders its rows."""

    __slots__ = ("key", "head")

    def __init__(self, key: IndexKeyDef) -> None:
        self.key = key
        self.head = b"i" + key.index.encode() + b"\x00" + key.name.encode() + b"\x00"

    def prefix_of(self, ordered_values: Sequence[JsonValue]) -> bytes:
        """The key prefix for the values of the leading key fields, in key order."""
        return self.head + b"".join(map(sortkeys.encode_value, ordered_values))

    def count_keys(self, row: Row) -> list[bytes]:
        """The count keys a row of this key adds to: one for each leading prefix of the key's fields."""
        keys = [b"n" + self.head[1:]]
        for field in self.key.fields:
            keys.append(keys[-1] + sortkeys.encode_value(row.get(field)))
        return keys

    def count_key(self, ordered_values: Sequence[JsonValue]) -> bytes:
        return b"n" + self.prefix_of(ordered_values)[1:]

    def entry_key(self, row: Row, rowid: str) -> bytes:
        key = self.key
        parts = [self.prefix_of([row.get(f) for f in key.fields])]
        if key.unique:
            return parts[0]
        for field, desc, ordering in key.sorts:
            value = row.get(field)
            encoded = (sortkeys.encode_version(str(value), ordering) if ordering
                       else sortkeys.encode_value(value))
            parts.append(sortkeys.descending(encoded) if desc else encoded)
        parts.append(sortkeys.encode_str(rowid))
        return b"".join(parts)


def _rowmap_key(index: IndexDef, rowid: str) -> bytes:
    return b"r" + index.name.encode() + b"\x00" + rowid.encode("utf-8")


def _counted_key(key: IndexKeyDef) -> bytes:
    return b"N" + key.index.encode() + b"\x00" + key.name.encode()


# RocksDB's memory, bounded whatever the load: memtables (written to disk when full) and one block cache that also
# holds index and filter blocks, so neither grows with the number of files. Defaults would allow 128 MiB of
# memtables alone.
WRITE_BUFFER_BYTES = 16 * 1024 * 1024
WRITE_BUFFERS = 2
BLOCK_CACHE_BYTES = 16 * 1024 * 1024


def _bounded_options() -> Options:
    table = BlockBasedOptions()
    table.set_block_cache(Cache(BLOCK_CACHE_BYTES))
    table.set_cache_index_and_filter_blocks(True)
    # A file's index in small partitions under a pinned top level: one index block per file grows with the file
    # (5 MiB at 100,000 packages), larger than a shard of the cache, so it was read and decoded again on every
    # point read; partitions are cached like data blocks. Bloom filters spare reads of files without the key.
    table.set_index_type(BlockBasedIndexType.two_level_index_search())
    table.set_bloom_filter(10, False)
    table.set_partition_filters(True)
    table.set_pin_top_level_index_and_filter(True)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(WRITE_BUFFERS)
    options.set_block_based_table_factory(table)
    return options


def _open(path: str) -> Rdict:
    options = _bounded_options()
    try:
        # the default column family named with its options: without it, an existing database opens that family
        # with the options stored in it and a default 8 MiB cache, so the bounds held on the first start only
        return Rdict(path, options=options, column_families={"default": options})
    except Exception as exc:  # rocksdict raises plain Exceptions; only a held lock is a StoreLocked
        if any(sign in str(exc) for sign in ("While lock file", "lock hold by")):
            raise StoreLocked(path) from exc
        raise


def holds_state(path: str) -> bool:
    """Whether ``path`` holds a state database (RocksDB writes CURRENT when it creates one)."""
    return os.path.isfile(os.path.join(path, "CURRENT"))


class OrderedKV(Protocol):
    """The ordered byte-key store a StateStore keeps its key spaces in: the `rocksdb` kind's database (RocksKV
    below), or a shared one (app/stores/pgstate.py). ``shared``: other processes write the same keys, so commits
    are checked and written at once inside ``exclusive()`` (a transaction holding the store's own lock) and no
    process keeps what it read of them (sequence numbers) between commits."""
    kind: str
    shared: bool

    def get(self, key: bytes) -> Optional[bytes]: ...

    def scan(self, prefix: bytes, limit: Optional[int] = None,
             start: Optional[bytes] = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs under ``prefix`` in key order, from ``start`` (exclusive) when given."""

    def last_key(self, prefix: bytes) -> Optional[bytes]:
        """The greatest key under ``prefix``, or None."""

    def seeker(self) -> Callable[[bytes], Optional[bytes]]:
        """A function giving the least key at or after its argument (None: none), for a walk of many seeks."""

    def write_in_order(self, changes: Iterable[dict[bytes, Optional[bytes]]]) -> None:
        """Write several commits' changes (None: delete) atomically, later ones over earlier: one sync."""

    def exclusive(self) -> ContextManager[Any]:
        """What a commit of a shared store checks and writes in: one transaction under a lock every process
        takes; reads and writes inside it are the transaction's. Nothing for a store one process owns."""

    def probe(self) -> None:
        """Raise when the store cannot be read."""

    def details(self) -> dict[str, Any]:
        """What /health reports of it in detail."""

    def close(self) -> None: ...


def key_after_prefix(prefix: bytes) -> Optional[bytes]:
    """The least key greater than every key starting with ``prefix`` (None: there is none)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


class RocksKV:
    """OrderedKV in a rocksdict database one process owns (its lock file is the data dir's lease)."""
    kind = "rocksdict"
    shared = False

    def __init__(self, path: str, sync: bool = True) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.db: Any = _open(path)  # None once closed
        self.write_options = WriteOptions()
        self.write_options.sync = sync

    def get(self, key: bytes) -> Optional[bytes]:
        return cast(Optional[bytes], self.db.get(key))  # raw mode: keys and values are bytes

    def scan(self, prefix: bytes, limit: Optional[int] = None,
             start: Optional[bytes] = None) -> Iterator[tuple[bytes, bytes]]:
        it = self.db.iter()
        if start is None:
            it.seek(prefix)
        else:
            it.seek(start)
            if it.valid() and it.key() == start:
                it.next()
        count = 0
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            yield key, it.value()
            count += 1
            if limit is not None and count >= limit:
                break  # without stepping the iterator past the last row wanted
            it.next()

    def last_key(self, prefix: bytes) -> Optional[bytes]:
        it = self.db.iter()
        upper = key_after_prefix(prefix)
        if upper is None:
            it.seek_to_last()
        else:
            it.seek_for_prev(upper)
            if it.valid() and it.key() == upper:
                it.prev()
        return it.key() if it.valid() and it.key().startswith(prefix) else None

    def seeker(self) -> Callable[[bytes], Optional[bytes]]:
        it = self.db.iter()

        def seek(key: bytes) -> Optional[bytes]:
            it.seek(key)
            return it.key() if it.valid() else None
        return seek

    def write_in_order(self, changes: Iterable[dict[bytes, Optional[bytes]]]) -> None:
        batch = WriteBatch(raw_mode=True)
        for writes in changes:
            for key, value in writes.items():
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
        self.db.write(batch, self.write_options)

    def exclusive(self) -> ContextManager[Any]:
        return nullcontext()

    def probe(self) -> None:
        self.db.get(b"health-probe")

    def details(self) -> dict[str, Any]:
        return {"path": self.path, "memory": self.memory()}

    def memory(self) -> dict[str, Optional[int]]:
        """RocksDB's memory now, and its bound: memtables and the block cache (see _bounded_options)."""
        return {"memtables_bytes": self.db.property_int_value("rocksdb.cur-size-all-mem-tables"),
                "block_cache_bytes": self.db.property_int_value("rocksdb.block-cache-usage"),
                "block_cache_capacity_bytes": self.db.property_int_value("rocksdb.block-cache-capacity"),
                "bound_bytes": WRITE_BUFFER_BYTES * WRITE_BUFFERS + BLOCK_CACHE_BYTES}

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


class StateStore:
    """The state backend (interfaces.StateBackend) over an ordered byte-key store: the `rocksdb` kind's database
    at ``path`` unless ``engine`` gives another (app/stores/pgstate.py)."""

    def __init__(self, path: str = "", sync: bool = True, commit_lock: Optional[CommitLock] = None,
                 engine: Optional[OrderedKV] = None) -> None:
        self.engine: OrderedKV = engine if engine is not None else RocksKV(path, sync)
        self.commit_lock = commit_lock if commit_lock is not None else process_lock()
        self._seq: dict[bytes, int] = {}  # log prefix -> its last sequence number (a store one process owns)
        # by key identity; a plain dict (a weak one costs a Python call per lookup), bounded: schema swaps add keys
        self._codecs: dict[IndexKeyDef, _KeyCodec] = {}
        self.group = _GroupCommit(self)
        self._counted: set[bytes] = set()  # keys of _counted_key known present: one read fewer per count
        self.documents = _Documents(self)
        self.indexes = _Indexes(self)
        self.get = self.engine.get  # the durable value: what every reader outside a commit sees
        self.scan = self.engine.scan  # (key, value) under a prefix in key order, from a start key (exclusive)

    def close(self) -> None:
        self.engine.close()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No commit of any process runs meanwhile: the commit lock, and the engine's own for a shared one."""
        with self.commit_lock, self.engine.exclusive():
            yield

    # --- the typed interface --------------------------------------------------------------------------------

    def transaction(self) -> "Transaction":
        return Transaction(self)

    def event_log(self, settings: Any) -> "_EventLog":
        return _EventLog(self, settings)

    def codec(self, key: IndexKeyDef) -> _KeyCodec:
        codec = self._codecs.get(key)
        if codec is None:
            if len(self._codecs) >= _MAX_CODECS:
                self._codecs.clear()
            codec = self._codecs[key] = _KeyCodec(key)
        return codec

    # --- raw access (this module's views, and tests) --------------------------------------------------------

    def latest(self, raw_key: bytes) -> Optional[bytes]:
        """The value after every commit checked so far, durable or still being written: what a commit checks and
        builds on."""
        pending = self.group.pending.get(raw_key)
        return self.get(raw_key) if pending is None else pending[1]

    def count(self, prefix: bytes) -> int:
        return sum(1 for _ in self.scan(prefix))

    def count_rows(self, key: IndexKeyDef) -> None:
        """Count every row of ``key`` again and keep the counts: the counts commits kept before the key was marked
        counted (missing rows written before counts existed) are replaced, in one batch, under the commit lock."""
        codec = self.codec(key)
        with self.exclusive():
            if self.get(_counted_key(key)) is not None:
                self._counted.add(_counted_key(key))
                return
            counts: dict[bytes, int] = {}
            for _, raw in self.scan(codec.head):
                for count_key in codec.count_keys(json.loads(raw)[1]):
                    counts[count_key] = counts.get(count_key, 0) + 1
            stale = [k for k, _ in self.scan(b"n" + codec.head[1:]) if k not in counts]
            puts = [(k, b"%d" % n) for k, n in counts.items()] + [(_counted_key(key), b"1")]
            self.write(puts, stale)
            self._counted.add(_counted_key(key))

    def forget_counts(self, index: IndexDef) -> None:
        """Drop an index's counts (a reindex may change what its keys hold): the next count counts again."""
        head = index.name.encode() + b"\x00"
        marks = [k for k, _ in self.scan(b"N" + head)]
        self.write([], marks + [k for k, _ in self.scan(b"n" + head)])
        self._counted.difference_update(marks)

    def write(self, puts: Iterable[tuple[bytes, bytes]], deletes: Iterable[bytes] = ()) -> None:
        changes: dict[bytes, Optional[bytes]] = dict.fromkeys(deletes)
        changes.update(puts)
        self.write_in_order([changes])

    def write_in_order(self, changes: Iterable[dict[bytes, Optional[bytes]]]) -> None:
        """Write several commits' changes (None: delete) as one batch, later ones over earlier: one sync."""
        with COMMIT_SECONDS.time():
            self.engine.write_in_order(changes)

    def last_seq(self, log_prefix: bytes) -> int:
        last = self.engine.last_key(log_prefix)
        return int(last[len(log_prefix):].decode()) if last is not None else 0

    def next_seq(self, log_prefix: bytes) -> int:
        """The next event sequence number for a log; call with commit_lock held (and, for a shared engine, inside
        its exclusive(): other processes append too, so nothing is kept)."""
        if self.engine.shared:
            return self.last_seq(log_prefix) + 1
        if log_prefix not in self._seq:
            self._seq[log_prefix] = self.last_seq(log_prefix)
        return self._seq[log_prefix] + 1

    def reindex(self, index: IndexDef, batch: int = 1000) -> int:
        """Rewrite every row of ``index`` under its current keys, as after a schema change of their fields, sort
        or `where`: each row is read back from an entry it occupies and upserted again (a row no key admitted
        has no entry to read and is left alone). Only with no other writer: the server stopped. -> rows
        rewritten."""
        rewritten, start = 0, None
        head = b"r" + index.name.encode() + b"\x00"
        self.forget_counts(index)
        if index.text is None:
            self._drop_text(index, batch)
        while True:
            with self.exclusive():
                rowmaps = list(self.scan(head, batch, start))
                view = _Overlay(self, {})
                for _, raw in rowmaps:
                    payload = next(filter(None, map(self.get, map(bytes.fromhex, json.loads(raw)))), None)
                    if payload is not None:
                        _apply_upsert(view, index, json.loads(payload)[1])
                        rewritten += 1
                view.flush()
            if len(rowmaps) < batch:
                return rewritten
            start = rowmaps[-1][0]

    def _drop_text(self, index: IndexDef, batch: int) -> None:
        """Remove the text postings and row records of an index that no longer declares `text`."""
        for head in (_text_head(b"t", index), _text_head(b"T", index)):
            while True:
                with self.exclusive():
                    keys = [key for key, _ in self.scan(head, batch)]
                    self.write([], keys)
                if len(keys) < batch:
                    break

    def health(self, detail: bool = False) -> dict[str, Any]:
        report: dict[str, Any] = {"kind": self.engine.kind, "ok": True}
        try:
            self.engine.probe()
        except Exception as exc:  # report any store failure as unhealthy rather than crash the probe
            report.update(ok=False, error=str(exc) if detail else "the state database cannot be read")
        else:
            if detail:
                report.update(self.engine.details())
        return report

    def memory(self) -> dict[str, Optional[int]]:
        return cast(RocksKV, self.engine).memory()


class _Documents:
    """interfaces.DocumentStore over the state database."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    def encode(self, document: JsonValue) -> bytes:
        return dumps(document)

    def get(self, store: str, key: str) -> Optional[JsonValue]:
        raw = self.state.get(kv_key(store, key))
        return loads(raw) if raw is not None else None

    def items(self, store: str, prefix: str = "") -> Iterator[tuple[str, JsonValue]]:
        skip = len(kv_key(store, ""))
        for raw_key, raw in self.state.scan(kv_key(store, prefix)):
            yield raw_key[skip:].decode("utf-8"), loads(raw)


class _Indexes:
    """interfaces.IndexStore over the state database: entries are [row id, row] under their entry keys."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    def rows(self, key: IndexKeyDef, values: Sequence[JsonValue], after: Optional[Cursor] = None,
             offset: int = 0, limit: Optional[int] = None) -> Iterator[Row]:
        prefix = self.state.codec(key).prefix_of(values)
        if after is not None and after < prefix:  # a cursor before this prefix: every row is after it
            after = None
        scan = self.state.scan(prefix, limit + offset if limit is not None else None, after)
        if offset:  # skipped undecoded
            scan = islice(scan, offset, None)
        for _, raw in scan:
            yield json.loads(raw)[1]

    def cursor(self, key: IndexKeyDef, row: Row) -> Cursor:
        return self.state.codec(key).entry_key(row, key.rowid(row))

    def count(self, key: IndexKeyDef, values: Sequence[JsonValue]) -> int:
        """One read: commits keep a count for every leading prefix of a key's fields. A key counted for the first
        time (a database from before counts, or a reindex) is counted once, whole, under the commit lock."""
        state = self.state
        if _counted_key(key) not in state._counted:
            state.count_rows(key)
        raw = state.get(state.codec(key).count_key(values))
        return int(raw) if raw else 0

    def search(self, index: IndexDef, terms: Sequence[str], after: Optional[Cursor] = None) -> Iterator[Row]:
        if index.text is None:
            raise TypeError("index %s declares no text" % index.name)
        records = _text_head(b"T", index)
        for rowid in _intersect(self.state, index, text.query_tokens(terms), after or b""):
            raw = self.state.get(records + rowid)
            if raw is None:  # deleted since its postings were read
                continue
            row = json.loads(raw)[0]
            if text.matches(row, index.text, terms):
                yield row

    def search_cursor(self, index: IndexDef, row: Row) -> Cursor:
        return sortkeys.encode_str(index.rowid(row))


class _EventLog:
    """interfaces.EventLog: events under the log's key prefix, numbered by 20 zero-padded digits."""

    def __init__(self, state: StateStore, settings: Any) -> None:
        self.state = state
        self.settings = settings
        self.prefix = kv_key(settings.store, settings.key_prefix)

    def read_after(self, seq: int) -> Iterator[LoggedEvent]:
        if seq >= 10 ** SEQ_WIDTH:  # beyond any sequence number (and its key would sort among theirs)
            return
        for _, raw in self.state.scan(self.prefix, start=self.prefix + b"%0*d" % (SEQ_WIDTH, seq)):
            yield LoggedEvent(json.loads(raw), len(raw))

    def last_seq(self) -> int:
        return self.state.last_seq(self.prefix)

    def applied_through(self) -> int:
        raw = self.state.get(CURSOR_KEY)
        return int(raw) if raw else 0

    def was_applied(self, event_id: str) -> bool:
        return self.state.get(_APPLIED_HEAD + event_id.encode("utf-8")) is not None


class _Overlay:
    """Pending writes over the committed state, so a commit sees its own earlier writes."""

    def __init__(self, state: StateStore, writes: dict[bytes, Optional[bytes]]) -> None:
        self.state = state
        self.writes = writes

    def get(self, key: bytes) -> Optional[bytes]:
        if key in self.writes:
            return self.writes[key]
        return self.state.latest(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.writes[key] = None

    def flush(self) -> None:
        """Write the pending writes in one batch."""
        self.state.write_in_order([self.writes])


class Transaction:
    """Buffers KV, index and event writes and staged blobs; commit applies them in one write batch.

    Isolation: reads of KV documents inside the transaction are remembered and re-checked at commit under the
    commit lock (optimistic concurrency), as are `if_absent` conditions; any change since is a 409 CONFLICT.
    The typed methods (interfaces.Transaction) address documents by store and key; the raw ones (kv_get,
    kv_put ...) by byte key.
    """

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.writes: dict[bytes, Optional[bytes]] = {}  # None: delete
        self.reads: dict[bytes, Optional[bytes]] = {}  # what each read saw, re-checked at commit
        self.absent: dict[bytes, str] = {}  # key -> label, for put_if_absent
        self.index_ops: list[tuple[IndexDef, Row, bool]] = []  # (index, row, upsert)
        self.events: list[tuple[bytes, Event]] = []  # (log prefix, record)
        self.blobs: list[tuple[BlobStore, StagedBlob]] = []
        self.open = True

    # --- interfaces.Transaction -------------------------------------------------------------------------------

    def get(self, store: str, key: str) -> Optional[JsonValue]:
        raw = self.kv_get(kv_key(store, key))
        return loads(raw) if raw is not None else None

    def put(self, store: str, key: str, encoded: bytes) -> None:
        self.writes[kv_key(store, key)] = encoded

    def put_if_absent(self, store: str, key: str, encoded: bytes, label: str) -> None:
        self.kv_put_if_absent(kv_key(store, key), encoded, label)

    def delete(self, store: str, key: str) -> None:
        self.writes[kv_key(store, key)] = None

    def append(self, log: EventLog, record: Event) -> None:
        if not isinstance(log, _EventLog):
            raise TypeError("a rocksdb transaction appends to a rocksdb event log only")
        self.events.append((log.prefix, record))

    def record_applied(self, seq: int, event_id: Optional[str]) -> None:
        self.writes[CURSOR_KEY] = b"%d" % seq
        if event_id is not None:
            self.writes[_APPLIED_HEAD + event_id.encode("utf-8")] = b"1"

    # --- raw ----------------------------------------------------------------------------------------------------

    def kv_get(self, raw_key: bytes) -> Optional[bytes]:
        if raw_key in self.writes:
            return self.writes[raw_key]
        value = self.state.latest(raw_key)
        self.reads.setdefault(raw_key, value)
        return value

    def kv_put(self, raw_key: bytes, raw_value: bytes) -> None:
        self.writes[raw_key] = raw_value

    def kv_delete(self, raw_key: bytes) -> None:
        self.writes[raw_key] = None

    def kv_put_if_absent(self, raw_key: bytes, raw_value: bytes, label: str) -> None:
        if self.writes.get(raw_key) is not None:
            raise conflict("%s already exists" % label)
        self.absent[raw_key] = label
        self.writes[raw_key] = raw_value

    def index_upsert(self, index: IndexDef, row: Row) -> None:
        self.index_ops.append((index, row, True))

    def index_delete(self, index: IndexDef, row: Row) -> None:
        self.index_ops.append((index, row, False))

    def emit(self, log_prefix: bytes, record: Event) -> None:
        self.events.append((log_prefix, record))

    def stage_blob(self, store: BlobStore, staged: StagedBlob) -> None:
        self.blobs.append((store, staged))

    def commit(self) -> list[Event]:
        if not self.open:
            raise DepotError("TXN_CLOSED", 500, "transaction is not open")
        try:
            if self.state.engine.shared:
                self._commit_at_once()
            else:
                self._commit_grouped()
        except BaseException:
            self.abort()
            raise
        self.open = False
        return [record for _, record in self.events]

    def _commit_grouped(self) -> None:
        """Checked in commit order under the process's lock; the write is shared with the commits checked while
        it waited (_GroupCommit)."""
        group = self.state.group
        with self.state.commit_lock.for_commit():
            generation = group.generation
            view, committed = self._checked_writes()
            syncs = [store.promote(staged, defer_sync=True) for store, staged in self.blobs]
            ticket = group.enqueue(view.writes, committed, generation, [s for s in syncs if s is not None])
        group.wait_durable(ticket)

    def _commit_at_once(self) -> None:
        """A shared engine's commit: checked and written in one of its transactions, under the lock every process
        takes, so a commit of another process is either wholly before it or wholly after."""
        state = self.state
        with state.commit_lock.for_commit(), state.engine.exclusive():
            view, _ = self._checked_writes()
            for store, staged in self.blobs:
                store.promote(staged)
            state.write_in_order([view.writes])

    def _checked_writes(self) -> tuple["_Overlay", dict[bytes, int]]:
        """Check the conditions, then every write the commit makes (index entries, counts, postings, events) ->
        (the writes, each log's last sequence number); call with the commit lock held."""
        self._validate()
        view = _Overlay(self.state, dict(self.writes))
        for index, row, upsert in self.index_ops:
            (_apply_upsert if upsert else _apply_delete)(view, index, row)
        return view, self._append_events(view)

    def _validate(self) -> None:
        for raw_key, label in self.absent.items():
            if self.state.latest(raw_key) is not None:
                raise conflict("%s already exists" % label)
        for raw_key, seen in self.reads.items():
            if self.state.latest(raw_key) != seen:
                raise conflict("a document read by this transaction changed before it committed")

    def _append_events(self, view: _Overlay) -> dict[bytes, int]:
        next_seq: dict[bytes, int] = {}
        for log_prefix, record in self.events:
            seq = next_seq.get(log_prefix) or self.state.next_seq(log_prefix)
            record["seq"] = seq
            view.put(log_prefix + b"%0*d" % (SEQ_WIDTH, seq), dumps(record))
            next_seq[log_prefix] = seq + 1
        return {prefix: seq - 1 for prefix, seq in next_seq.items()}

    def abort(self) -> None:
        if not self.open:
            return
        self.open = False
        for store, staged in self.blobs:
            store.discard(staged)


class _GroupCommit:
    """Commits checked one after another, written together: the first commit to wait writes every change queued
    so far in one synced batch (in the order they were checked), and the others queued with it return when it
    is durable. Until then their changes are `pending`: later commits check against and build on them
    (StateStore.latest) while readers see only durable state. A failed write fails every commit queued, and any
    commit checked against them (the generation moves on), so nothing builds on what was not written."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.cond = threading.Condition()
        self.queue: list[tuple[int, dict[bytes, Optional[bytes]], list[Callable[[], None]]]] = []
        self.pending: dict[bytes, tuple[int, Optional[bytes]]] = {}  # key -> (ticket, value) of the last write
        self.generation = 0
        self.last_ticket = 0
        self.durable = 0
        self.writing = False
        self.failed: dict[int, BaseException] = {}

    def enqueue(self, writes: dict[bytes, Optional[bytes]], sequences: dict[bytes, int], generation: int,
                syncs: list[Callable[[], None]]) -> int:
        """Queue a checked commit's writes, and the syncs its blobs need first; call with the commit lock held.
        -> its ticket."""
        with self.cond:
            if generation != self.generation:
                raise DepotError("COMMIT_FAILED", 503, "an earlier commit this one depended on was not written")
            self.last_ticket += 1
            ticket = self.last_ticket
            self.queue.append((ticket, writes, syncs))
            for key, value in writes.items():
                self.pending[key] = (ticket, value)
            self.state._seq.update(sequences)
            self.state.commit_lock.writes_started(1)
            return ticket

    def wait_durable(self, ticket: int) -> None:
        with self.cond:
            while self.durable < ticket and ticket not in self.failed:
                if self.writing:
                    self.cond.wait()
                else:
                    self._write_queued()
            error = self.failed.pop(ticket, None)
        if error is not None:
            raise error

    def _write_queued(self) -> None:
        """Write every queued commit as the leader; called with ``cond`` held, released while writing."""
        batch, self.queue, self.writing = self.queue, [], True
        self.cond.release()
        try:
            for sync in dict.fromkeys(sync for _, _, syncs in batch for sync in syncs):  # the blobs' names first
                sync()
            self.state.write_in_order(writes for _, writes, _ in batch)
            error: Optional[BaseException] = None
        except BaseException as exc:  # a full disk, a closed store: every commit in the batch fails alike
            error = exc
        finally:
            self.cond.acquire()
        last = batch[-1][0]
        ended = len(batch)
        if error is None:
            self.pending = {k: v for k, v in self.pending.items() if v[0] > last}
        else:  # what was queued after was checked against the lost writes: it fails too
            failed, self.queue = batch + self.queue, []
            ended = len(failed)
            self.failed.update((entry[0], error) for entry in failed)
            self.pending, self.generation = {}, self.generation + 1
            self.state._seq.clear()
            last = failed[-1][0]
        self.durable, self.writing = last, False
        self.state.commit_lock.writes_ended(ended)
        self.cond.notify_all()


def _row_entries(view: _Overlay, index: IndexDef, rowid: str) -> list[bytes]:
    raw = view.get(_rowmap_key(index, rowid))
    return [bytes.fromhex(h) for h in json.loads(raw)] if raw else []


def _apply_upsert(view: _Overlay, index: IndexDef, row: Row) -> None:
    rowid = index.rowid(row)
    new_entries: dict[bytes, IndexKeyDef] = {}
    for key in index.keys:
        if key.where is not None and not key.where(row):
            continue
        entry = view.state.codec(key).entry_key(row, rowid)
        if key.unique:
            existing = view.get(entry)
            if existing is not None and json.loads(existing)[0] != rowid:
                raise conflict("index %s key %s is unique and already taken" % (index.name, key.name),
                               "UNIQUE_VIOLATION")
        new_entries[entry] = key
    counts = _CountChanges(view)
    old_entries = _row_entries(view, index, rowid)
    _remove_entries(view, index, [old for old in old_entries if old not in new_entries], counts)
    payload = dumps([rowid, row])
    for entry, key in new_entries.items():
        if entry not in old_entries:
            counts.add(view.state.codec(key), row, 1)
        view.put(entry, payload)
    view.put(_rowmap_key(index, rowid), json.dumps([e.hex() for e in new_entries]).encode())
    counts.apply()
    _apply_text_upsert(view, index, rowid, row)


def _apply_delete(view: _Overlay, index: IndexDef, row: Row) -> None:
    rowid = index.rowid(row)
    counts = _CountChanges(view)
    _remove_entries(view, index, _row_entries(view, index, rowid), counts)
    view.delete(_rowmap_key(index, rowid))
    counts.apply()
    _apply_text_delete(view, index, rowid)


def _remove_entries(view: _Overlay, index: IndexDef, entries: list[bytes], counts: "_CountChanges") -> None:
    """Delete a row's entries, each counted out of its key's prefixes (read from the row it holds, since the row
    now being written may have moved)."""
    codecs = [view.state.codec(key) for key in index.keys]
    for entry in entries:
        raw = view.get(entry)
        codec = next((c for c in codecs if entry.startswith(c.head)), None)
        if raw is not None and codec is not None:
            counts.add(codec, json.loads(raw)[1], -1)
        view.delete(entry)


class _CountChanges:
    """The changes one row's write makes to its keys' counts, applied together (a move within a prefix nets 0)."""

    def __init__(self, view: _Overlay) -> None:
        self.view = view
        self.deltas: dict[bytes, int] = {}

    def add(self, codec: _KeyCodec, row: Row, delta: int) -> None:
        for count_key in codec.count_keys(row):
            self.deltas[count_key] = self.deltas.get(count_key, 0) + delta

    def apply(self) -> None:
        view = self.view
        for count_key, delta in self.deltas.items():
            if delta:
                raw = view.get(count_key)
                total = (int(raw) if raw else 0) + delta
                if total > 0:
                    view.put(count_key, b"%d" % total)
                else:
                    view.delete(count_key)


# --- text search: postings kept in the same write batch as the index rows ---------------------------------------

def _text_head(space: bytes, index: IndexDef) -> bytes:
    return space + index.name.encode() + b"\x00"


def _posting_head(index: IndexDef, token: str) -> bytes:
    return _text_head(b"t", index) + token.encode("utf-8") + b"\x00"


def _old_text_tokens(view: _Overlay, record: bytes) -> list[str]:
    raw = view.get(record)
    return json.loads(raw)[1] if raw else []


def _apply_text_upsert(view: _Overlay, index: IndexDef, rowid: str, row: Row) -> None:
    """Write the row's text record and the postings its tokens gained, delete those it lost."""
    if index.text is None:
        return
    encoded = sortkeys.encode_str(rowid)
    record = _text_head(b"T", index) + encoded
    old = set(_old_text_tokens(view, record))
    new = text.tokens(row, index.text)
    for token in old - new:
        view.delete(_posting_head(index, token) + encoded)
    for token in new - old:
        view.put(_posting_head(index, token) + encoded, b"")
    view.put(record, dumps([row, sorted(new)]))


def _apply_text_delete(view: _Overlay, index: IndexDef, rowid: str) -> None:
    if index.text is None:
        return
    encoded = sortkeys.encode_str(rowid)
    record = _text_head(b"T", index) + encoded
    for token in _old_text_tokens(view, record):
        view.delete(_posting_head(index, token) + encoded)
    view.delete(record)


def _intersect(state: StateStore, index: IndexDef, tokens: Sequence[str], after: bytes) -> Iterator[bytes]:
    """The encoded row ids present in every token's postings, ascending, above ``after``: a leapfrog join, each
    list's iterator seeking to the largest row id another one reached, so the work follows the shortest list."""
    heads = [_posting_head(index, token) for token in tokens]
    seekers = [state.engine.seeker() for _ in heads]
    candidate = after + b"\x00" if after else b""  # the least row id above ``after``
    agreed, i = 0, 0
    while True:
        head = heads[i]
        key = seekers[i](head + candidate)
        if key is None or not key.startswith(head):
            return
        found = key[len(head):]
        if found == candidate:
            agreed += 1
        else:
            candidate, agreed = found, 1
        if agreed == len(heads):
            yield candidate
            candidate, agreed = candidate + b"\x00", 0
        i = (i + 1) % len(heads)
