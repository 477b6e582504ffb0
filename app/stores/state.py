"""KV documents, indexes and the event log in one rocksdict database.

Keeping them in one database is what lets a transaction commit KV, index and event writes in a single
atomic write batch. Key spaces (first byte):
    k  KV documents      k<store>\\0<document key>
    i  index entries     i<index>\\0<key name>\\0<encoded key fields><encoded sort fields><encoded row id>
    r  index row map     r<index>\\0<row id>  -> the entry keys a row currently occupies
    c  cache entries     c<kind>\\0<key>
    x  replication       xcursor (last primary event applied), xapplied\\0<event id> (see app/replication.py)
"""
import json
import os
import threading

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

from app.errors import DepotError, conflict
from app.stores import sortkeys

SEQ_WIDTH = 20


def dumps(value):
    return _ENCODER.encode(value).encode("utf-8")


def loads(raw, resolve_blob=None):
    """Decode JSON; with ``resolve_blob``, blob handles stored by reference come back as handles."""
    if resolve_blob is None:
        return json.loads(raw)

    def hook(obj):
        if len(obj) == 1 and "$blob" in obj:
            return resolve_blob(obj["$blob"])
        return obj
    return json.loads(raw, object_hook=hook)


def _encode_special(value):
    to_json = getattr(value, "to_json", None)
    if to_json is None:
        raise TypeError("%s is not JSON serialisable" % type(value).__name__)
    return to_json()


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_encode_special)


def kv_key(store, key):
    return b"k" + store.encode() + b"\x00" + key.encode("utf-8")


class IndexKeyDef:
    def __init__(self, index_name, name, fields, sort, unique, ordering, where=None):
        self.name = name
        self.fields = list(fields)
        self.unique = unique
        self.where = where  # row -> bool: a partial key holds only the rows it admits
        self.sorts = []
        for spec in sort:
            field, _, direction = spec.partition(":")
            self.sorts.append((field, direction == "desc", ordering if field == "version" else None))
        self.head = b"i" + index_name.encode() + b"\x00" + name.encode() + b"\x00"

    def prefix(self, values, fields=None):
        return self.prefix_of([values.get(f) for f in (fields or self.fields)])

    def prefix_of(self, ordered_values):
        """The key prefix for the values of the leading key fields, in key order."""
        return self.head + b"".join(map(sortkeys.encode_value, ordered_values))

    def entry_key(self, row, rowid):
        parts = [self.prefix(row)]
        if self.unique:
            return parts[0]
        for field, desc, ordering in self.sorts:
            value = row.get(field)
            encoded = (sortkeys.encode_version(str(value), ordering) if ordering
                       else sortkeys.encode_value(value))
            parts.append(sortkeys.descending(encoded) if desc else encoded)
        parts.append(sortkeys.encode_str(rowid))
        return b"".join(parts)


class IndexDef:
    def __init__(self, name, keys, rowid):
        self.name = name
        self.keys = keys
        self.rowid = rowid  # row dict -> stable row identity (the source document's key)
        self.rowmap_head = b"r" + name.encode() + b"\x00"

    def key_for(self, fields, name=None):
        """The index key (named ``name``, or the first) whose leading fields are exactly ``fields``."""
        wanted = set(fields)
        for key in self.keys:
            if (name is None or key.name == name) and set(key.fields[:len(wanted)]) == wanted:
                return key
        return None


# RocksDB's memory, bounded whatever the load: memtables (written to disk when full) and one block cache that also
# holds index and filter blocks, so neither grows with the number of files. Defaults would allow 128 MiB of
# memtables alone.
WRITE_BUFFER_BYTES = 16 * 1024 * 1024
WRITE_BUFFERS = 2
BLOCK_CACHE_BYTES = 16 * 1024 * 1024


def _bounded_options():
    table = BlockBasedOptions()
    table.set_block_cache(Cache(BLOCK_CACHE_BYTES))
    table.set_cache_index_and_filter_blocks(True)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(WRITE_BUFFERS)
    options.set_block_based_table_factory(table)
    return options


class StoreLocked(Exception):
    """Another process (a running server) holds the state store: RocksDB allows one at a time."""


def _open(path):
    try:
        return Rdict(path, options=_bounded_options())
    except Exception as exc:  # rocksdict raises plain Exceptions; only a held lock is a StoreLocked
        if any(sign in str(exc) for sign in ("While lock file", "lock hold by")):
            raise StoreLocked(path) from exc
        raise


class StateStore:
    def __init__(self, path, sync=True):
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.db = _open(path)
        self.write_options = WriteOptions()
        self.write_options.sync = sync
        self.commit_lock = threading.Lock()
        self._seq = {}

    def close(self):
        if self.db is not None:
            self.db.close()
            self.db = None

    def get(self, raw_key):
        return self.db.get(raw_key)

    def scan(self, prefix, limit=None, start=None):
        """(key, value) pairs under ``prefix`` in key order, from ``start`` (exclusive) when given."""
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

    def count(self, prefix):
        return sum(1 for _ in self.scan(prefix))

    def write(self, puts, deletes=()):
        batch = WriteBatch(raw_mode=True)
        for key in deletes:
            batch.delete(key)
        for key, value in puts:
            batch.put(key, value)
        self.db.write(batch, self.write_options)

    def next_seq(self, log_prefix):
        """The next event sequence number for a log; call with commit_lock held."""
        if log_prefix not in self._seq:
            it = self.db.iter()
            it.seek_for_prev(log_prefix + b"\xff")
            last = 0
            if it.valid() and it.key().startswith(log_prefix):
                last = int(it.key()[len(log_prefix):].decode())
            self._seq[log_prefix] = last
        return self._seq[log_prefix] + 1

    def transaction(self):
        return Transaction(self)

    def reindex(self, index, batch=1000):
        """Rewrite every row of ``index`` under its current keys, as after a schema change of their fields, sort
        or `where`: each row is read back from an entry it occupies and upserted again (a row no key admitted
        has no entry to read and is left alone). Only with no other writer: the server stopped. -> rows
        rewritten."""
        rewritten, start = 0, None
        while True:
            with self.commit_lock:
                rowmaps = list(self.scan(index.rowmap_head, batch, start))
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

    def health(self, detail=False):
        report = {"kind": "rocksdict", "ok": True}
        try:
            self.db.get(b"health-probe")
        except Exception as exc:  # report any store failure as unhealthy rather than crash the probe
            report.update(ok=False, error=str(exc) if detail else "the state database cannot be read")
        if detail:
            report["path"] = self.path
            report["memory"] = self.memory()
        return report

    def memory(self):
        """RocksDB's memory now, and its bound: memtables and the block cache (see _bounded_options)."""
        return {"memtables_bytes": self.db.property_int_value("rocksdb.cur-size-all-mem-tables"),
                "block_cache_bytes": self.db.property_int_value("rocksdb.block-cache-usage"),
                "bound_bytes": WRITE_BUFFER_BYTES * WRITE_BUFFERS + BLOCK_CACHE_BYTES}


class _Overlay:
    """Pending writes over the committed state, so a commit sees its own earlier writes."""

    def __init__(self, state, writes):
        self.state = state
        self.writes = writes

    def get(self, key):
        if key in self.writes:
            return self.writes[key]
        return self.state.get(key)

    def put(self, key, value):
        self.writes[key] = value

    def delete(self, key):
        self.writes[key] = None

    def flush(self):
        """Write the pending writes in one batch."""
        self.state.write([(k, v) for k, v in self.writes.items() if v is not None],
                         [k for k, v in self.writes.items() if v is None])


class Transaction:
    """Buffers KV, index and event writes and staged blobs; commit applies them in one write batch.

    Isolation: reads of KV documents inside the transaction are remembered and re-checked at commit under the
    commit lock (optimistic concurrency), as are `if_absent` conditions; any change since is a 409 CONFLICT.
    """

    def __init__(self, state):
        self.state = state
        self.writes = {}
        self.reads = {}
        self.absent = {}
        self.index_ops = []
        self.events = []
        self.blobs = []
        self.open = True

    def kv_get(self, raw_key):
        if raw_key in self.writes:
            return self.writes[raw_key]
        value = self.state.get(raw_key)
        self.reads.setdefault(raw_key, value)
        return value

    def kv_put(self, raw_key, raw_value):
        self.writes[raw_key] = raw_value

    def kv_delete(self, raw_key):
        self.writes[raw_key] = None

    def kv_put_if_absent(self, raw_key, raw_value, label):
        if self.writes.get(raw_key) is not None:
            raise conflict("%s already exists" % label)
        self.absent[raw_key] = label
        self.writes[raw_key] = raw_value

    def index_upsert(self, index, row):
        self.index_ops.append((index, row, True))

    def index_delete(self, index, row):
        self.index_ops.append((index, row, False))

    def emit(self, log_prefix, record):
        self.events.append((log_prefix, record))

    def stage_blob(self, store, staged):
        self.blobs.append((store, staged))

    def commit(self):
        if not self.open:
            raise DepotError("TXN_CLOSED", 500, "transaction is not open")
        try:
            with self.state.commit_lock:
                self._validate()
                view = _Overlay(self.state, dict(self.writes))
                for index, row, upsert in self.index_ops:
                    (_apply_upsert if upsert else _apply_delete)(view, index, row)
                committed = self._append_events(view)
                for store, staged in self.blobs:
                    store.promote(staged)
                view.flush()
                self.state._seq.update(committed)
        except BaseException:
            self.abort()
            raise
        self.open = False
        return [record for _, record in self.events]

    def _validate(self):
        for raw_key, label in self.absent.items():
            if self.state.get(raw_key) is not None:
                raise conflict("%s already exists" % label)
        for raw_key, seen in self.reads.items():
            if self.state.get(raw_key) != seen:
                raise conflict("a document read by this transaction changed before it committed")

    def _append_events(self, view):
        next_seq = {}
        for log_prefix, record in self.events:
            seq = next_seq.get(log_prefix) or self.state.next_seq(log_prefix)
            record["seq"] = seq
            view.put(log_prefix + b"%0*d" % (SEQ_WIDTH, seq), dumps(record))
            next_seq[log_prefix] = seq + 1
        return {prefix: seq - 1 for prefix, seq in next_seq.items()}

    def abort(self):
        if not self.open:
            return
        self.open = False
        for store, staged in self.blobs:
            store.discard(staged)


def _row_entries(view, index, rowid):
    raw = view.get(index.rowmap_head + rowid.encode("utf-8"))
    return [bytes.fromhex(h) for h in json.loads(raw)] if raw else []


def _apply_upsert(view, index, row):
    rowid = index.rowid(row)
    new_entries = []
    for key in index.keys:
        if key.where is not None and not key.where(row):
            continue
        entry = key.entry_key(row, rowid)
        if key.unique:
            existing = view.get(entry)
            if existing is not None and json.loads(existing)[0] != rowid:
                raise conflict("index %s key %s is unique and already taken" % (index.name, key.name),
                               "UNIQUE_VIOLATION")
        new_entries.append(entry)
    for old in _row_entries(view, index, rowid):
        if old not in new_entries:
            view.delete(old)
    payload = dumps([rowid, row])
    for entry in new_entries:
        view.put(entry, payload)
    view.put(index.rowmap_head + rowid.encode("utf-8"), json.dumps([e.hex() for e in new_entries]).encode())


def _apply_delete(view, index, row):
    rowid = index.rowid(row)
    for old in _row_entries(view, index, rowid):
        view.delete(old)
    view.delete(index.rowmap_head + rowid.encode("utf-8"))
