"""Which implementation serves each store `kind` a schema names, and the data dir's open stores (Stores).

The schema's `storage.blob_stores.*.kind` picks a blob store implementation (`filesystem`: files in the data
dir; `s3`: objects in an S3-compatible bucket); `storage.kv_stores.*.kind` picks the state backend that keeps
documents, indexes and the event log (one kind for all of a schema's kv stores: one transaction commits across
them): `rocksdb` in the data dir, or `postgresql` (app/stores/pgstate.py), where DEPOT_STATE_URL also places
`rocksdb` kv stores (``state_url``). The response and blob caches have no kind in the schema: the deployment picks it with DEPOT_CACHE_URL
(``cache_url``): unset, the embedded cache in the state database; ``redis://...``, Redis, which then also keeps
what every process must see alike (login rate limits, the identity generation: ``shared``).

A new kind is a module implementing app/stores/interfaces.py (and passing tests/test_store_contract.py) plus one
entry in REGISTRY below (and, for a blob store kind with spec keys of its own, their check in ``blob_specs``):
the compiler accepts the kind and reports its spec's problems, Stores opens it, and nothing else changes.
"""
import copy
import json
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import parse_qs, urlsplit

from app.stores import pgstate, s3
from app.stores.blobcache import DiskBlobCache
from app.stores.blobs import FileBlobStore
from app.stores.cache import CacheStore
from app.stores.guard import BlobGuard
from app.stores.interfaces import (BlobLocationError, BlobStore, Cache, StateBackend, StateLocationError,
                                   UploadSessions, process_lock)
from app.stores.rediscache import RedisServer
from app.stores.s3_sessions import S3UploadSessions
from app.stores.sessions import FileUploadSessions
from app.stores.state import StateStore, holds_state

STATE_DIR = "state"  # the data dir's embedded state database: its lock is the data dir's lease
TMP_DIR = "tmp"
BLOB_CACHE_DIR = "blob-cache"  # remote blob stores' local disk caches, one directory per store
DEFAULT_KV_KIND = "rocksdb"  # a schema that declares no kv store
STATE_URL_KIND = "postgresql"  # the kv kind DEPOT_STATE_URL places `rocksdb` kv stores in
CACHE_KIND = "embedded"  # without DEPOT_CACHE_URL
REDIS_CACHE_KIND = "redis"

KvSpec = dict[str, Any]  # a schema's storage.kv_stores.<name>
CacheSettings = dict[str, dict[str, Any]]  # cache kind -> its settings (CompiledSchema.caching)
ResolveBlob = Callable[[dict[str, Any]], Any]  # a cached handle's JSON -> the BlobHandle

BlobStoreFactory = Callable[["Stores", Any], BlobStore]  # (stores, app.engine.definitions.BlobStoreDef)
StateFactory = Callable[["Stores", Mapping[str, KvSpec]], StateBackend]  # (stores, the kv_stores specs of its kind)
CacheFactory = Callable[["Stores", CacheSettings, ResolveBlob], Cache]  # (stores, caching settings, resolve_blob)
# (the blob store its sessions end in, app.engine.definitions.UploadSessionsDef), by the blob store's kind
SessionsFactory = Callable[[BlobStore, Any], UploadSessions]
# a blob store spec -> (its key, message) for each problem of it, which the compiler reports at load
SpecCheck = Callable[[dict[str, Any]], list[tuple[str, str]]]


@dataclass(frozen=True)
class Registry:
    blob_stores: Mapping[str, BlobStoreFactory]
    kv_stores: Mapping[str, StateFactory]
    caches: Mapping[str, CacheFactory]
    upload_sessions: Mapping[str, SessionsFactory]
    blob_specs: Mapping[str, SpecCheck] = field(default_factory=dict)  # by kind; none: nothing to check
    kv_specs: Mapping[str, SpecCheck] = field(default_factory=dict)  # likewise, for kv store kinds

    def kind_problems(self, storage: dict[str, Any]) -> list[tuple[str, str]]:
        """(where, message) for each store kind in a schema's `storage` section that nothing implements, and for
        kv stores of more than one kind."""
        problems = []
        for name, spec in storage.get("blob_stores", {}).items():
            if spec.get("kind") not in self.blob_stores:
                problems.append(("storage.blob_stores.%s.kind" % name, "blob store kind %r is not supported; "
                                 "expected one of: %s" % (spec.get("kind"), ", ".join(sorted(self.blob_stores)))))
            check = self.blob_specs.get(spec.get("kind"))
            problems.extend(("storage.blob_stores.%s.%s" % (name, key), message)
                            for key, message in (check(spec) if check is not None else ()))
        kinds: dict[object, str] = {}  # kind (as the schema spells it) -> the first kv store of it
        for name, spec in storage.get("kv_stores", {}).items():
            if spec.get("kind") not in self.kv_stores:
                problems.append(("storage.kv_stores.%s.kind" % name, "kv store kind %r is not supported; "
                                 "expected one of: %s" % (spec.get("kind"), ", ".join(sorted(self.kv_stores)))))
            kinds.setdefault(spec.get("kind"), name)
            check = self.kv_specs.get(spec.get("kind"))
            problems.extend(("storage.kv_stores.%s.%s" % (name, key), message)
                            for key, message in (check(spec) if check is not None else ()))
        blob_kinds = {name: spec.get("kind") for name, spec in storage.get("blob_stores", {}).items()}
        for name, spec in storage.get("upload_sessions", {}).items():
            kind = blob_kinds.get(spec.get("blob_store"))
            if kind in self.blob_stores and kind not in self.upload_sessions:
                problems.append(("storage.upload_sessions.%s.blob_store" % name, "blob store kind %r keeps no "
                                 "upload sessions; expected a blob store of kind: %s"
                                 % (kind, ", ".join(sorted(self.upload_sessions)))))
        if len(kinds) > 1:
            problems.append(("storage.kv_stores", "kv stores %s are of different kinds (%s): one transaction "
                             "commits across every kv store, so they share one kind"
                             % (", ".join(kinds.values()), ", ".join(map(str, kinds)))))
        return problems


def resolve_blob_root(data_dir: str, root: str) -> str:
    """Blob store roots live inside the data dir; an absolute root is taken relative to it."""
    relative = os.path.normpath(root).lstrip(os.sep)
    if relative.startswith(".."):
        raise ValueError("blob store root %r leaves the data dir" % root)
    return os.path.join(data_dir, relative)


def _filesystem(stores: "Stores", definition: Any) -> BlobStore:
    root = resolve_blob_root(stores.data_dir, definition.root)
    store = FileBlobStore(definition.name, root, definition.layout, definition.min_bytes,
                          definition.max_bytes, stores.guard)
    if stores.first_open(("filesystem", root)):  # once per root: a later store over it may share live uploads
        remove_leftover_uploads(store, stores.guard)
    return store


def _filesystem_spec(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(key, "only an s3 blob store reads %s; a filesystem one keeps its files under root" % key)
            for key in s3.SPEC_KEYS if key in spec]


def _s3(stores: "Stores", definition: Any) -> BlobStore:
    """Objects in a bucket; nothing is removed at open: other processes may share the bucket (s3.py)."""
    client = s3.connect(definition.endpoint_url, definition.region)
    cache = None
    if definition.local_cache_bytes:
        cache = DiskBlobCache(os.path.join(stores.data_dir, BLOB_CACHE_DIR, definition.name),
                              definition.local_cache_bytes)
    return s3.S3BlobStore(definition.name, client, definition.bucket, definition.prefix, definition.layout,
                          definition.min_bytes, definition.max_bytes, stores.guard, cache=cache)


def _file_sessions(store: BlobStore, definition: Any) -> UploadSessions:
    if not isinstance(store, FileBlobStore):
        raise TypeError("filesystem upload sessions need a filesystem blob store")
    return FileUploadSessions(definition.name, store, definition.ttl_seconds, definition.max_bytes)


def _s3_sessions(store: BlobStore, definition: Any) -> UploadSessions:
    if not isinstance(store, s3.S3BlobStore):
        raise TypeError("s3 upload sessions need an s3 blob store")
    return S3UploadSessions(definition.name, store, definition.ttl_seconds, definition.max_bytes)


def _rocksdb(stores: "Stores", specs: Mapping[str, KvSpec]) -> StateBackend:
    return stores.local_state  # every rocksdb kv store lives in the data dir's state database


def _postgresql(stores: "Stores", specs: Mapping[str, KvSpec]) -> StateBackend:
    """Every postgresql kv store of a schema in one table (one transaction commits across them): the first's url
    (DEPOT_STATE_URL's when it names none) and table."""
    spec = next(iter(specs.values()), {})
    url = spec.get("url") or (stores.state_location or {}).get("url")
    if not url:
        raise StateLocationError("a postgresql kv store needs a url, or %s" % pgstate.STATE_URL_ENV)
    engine = pgstate.PostgresKV(url, spec.get("table", pgstate.DEFAULT_TABLE))
    return StateStore(commit_lock=stores.commit_lock, engine=engine)


def _embedded_cache(stores: "Stores", settings: CacheSettings, resolve_blob: ResolveBlob) -> Cache:
    """In the state database: the data dir's, or the shared one DEPOT_STATE_URL names (where every process reads
    what another invalidated)."""
    state = stores.state({}) if stores.state_location is not None else stores.local_state
    return CacheStore(state, settings, resolve_blob)


def _redis_cache(stores: "Stores", settings: CacheSettings, resolve_blob: ResolveBlob) -> Cache:
    if stores.shared is None:
        raise ValueError("the redis cache needs a Redis: DEPOT_CACHE_URL=redis://host:port/db")
    return stores.shared.cache(settings, resolve_blob)


REGISTRY = Registry(blob_stores={"filesystem": _filesystem, "s3": _s3},
                    kv_stores={"rocksdb": _rocksdb, "postgresql": _postgresql},
                    caches={CACHE_KIND: _embedded_cache, REDIS_CACHE_KIND: _redis_cache},
                    upload_sessions={"filesystem": _file_sessions, "s3": _s3_sessions},
                    blob_specs={"filesystem": _filesystem_spec, "s3": s3.spec_problems},
                    kv_specs={"postgresql": pgstate.spec_problems})


def remove_leftover_uploads(store: BlobStore, guard: BlobGuard) -> tuple[int, int]:
    """Remove the staged uploads no upload of this process is writing (what a crash left). -> (uploads, bytes)"""
    removed = removed_bytes = 0
    for upload in store.uploads():
        outcome, size = guard.remove_unless_needed(guard.temp_in_use, upload, partial(store.upload_stat, upload),
                                                   partial(store.delete_upload, upload), float("inf"))
        if outcome == "removed":
            removed, removed_bytes = removed + 1, removed_bytes + size
    return removed, removed_bytes


class Stores:
    """The data dir's stores, shared by every engine (schema version) that runs over it. The embedded state
    database is opened first: its lock is the data dir's lease (StoreLocked while another process holds it).
    Opening a blob store removes what a crash can leave behind: uploads no upload of this process is writing.
    ``cache_url`` (DEPOT_CACHE_URL; None or empty: the embedded cache) is connected to at once, so a Redis that
    does not answer stops the start (rediscache.CacheServerError), not the first request."""

    def __init__(self, data_dir: str, sync: bool = True, registry: Registry = REGISTRY,
                 cache_url: str | None = None, blob_url: str | None = None, state_url: str | None = None) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.registry = registry
        self.blob_location = blob_location(blob_url) if blob_url else None  # before anything is opened
        self.state_location = pgstate.state_location(state_url) if state_url else None
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        self.commit_lock = process_lock()
        self.local_state = StateStore(os.path.join(self.data_dir, STATE_DIR), sync=sync,
                                      commit_lock=self.commit_lock)
        try:
            self.shared = RedisServer(cache_url) if cache_url else None
        except BaseException:
            self.local_state.close()  # give the lease back
            raise
        self.cache_kind = CACHE_KIND if self.shared is None else REDIS_CACHE_KIND
        self.guard = BlobGuard(self.commit_lock)
        self.tmp_dir = os.path.join(self.data_dir, TMP_DIR)  # bodies a request is passing on (proxied)
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        for name in os.listdir(self.tmp_dir):  # upstream bodies of requests that ended with the last process
            _remove(os.path.join(self.tmp_dir, name))
        self._blob_stores: dict[tuple[str, str], BlobStore] = {}  # (name, its spec as JSON) -> the store
        self._states: dict[tuple[str, str], StateBackend] = {}  # (kv kind, its specs as JSON) -> its backend
        self._sessions: dict[tuple[str, str], UploadSessions] = {}  # (name, its spec as JSON) -> the sessions
        self._opened: set[object] = set()
        self._owner = True  # closes the data dir's own stores (a relocated copy does not)

    def relocated(self, state_url: str | None, blob_url: str | None) -> "Stores":
        """The same data dir's stores placed elsewhere, as DEPOT_STATE_URL and DEPOT_BLOB_URL would place them
        (None: embedded, as the schema declares): what migrate-store copies into. It shares this one's lease,
        guard and commit lock; closing it closes only what it opened."""
        other = copy.copy(self)
        other.state_location = pgstate.state_location(state_url) if state_url else None
        other.blob_location = blob_location(blob_url) if blob_url else None
        other._blob_stores, other._states, other._sessions, other._opened = {}, {}, {}, set()
        other._owner = False
        return other

    def first_open(self, token: Any) -> bool:
        """True the first time ``token`` is given: what an implementation does once per data dir."""
        if token in self._opened:
            return False
        self._opened.add(token)
        return True

    def placed(self, definition: Any) -> Any:
        """The BlobStoreDef as this deployment places it: with DEPOT_BLOB_URL, a filesystem store's objects live in
        that bucket instead, under the URL's prefix and the store's root (each store apart); else as declared."""
        if self.blob_location is None or definition.kind != "filesystem":
            return definition
        spec = {key: value for key, value in definition.spec.items() if key not in ("kind", "root")}
        prefix = self.blob_location.get("prefix", "") + definition.root.strip("/") + "/"
        return type(definition)(definition.name, dict(spec, **dict(self.blob_location, prefix=prefix)),
                                definition.local_cache_bytes)

    def blob_store(self, definition: Any) -> BlobStore:
        """The blob store an app.engine.definitions.BlobStoreDef describes (one object per distinct definition),
        where this deployment places it (``placed``)."""
        definition = self.placed(definition)
        key = (definition.name, json.dumps(definition.spec, sort_keys=True))
        if key not in self._blob_stores:
            self._blob_stores[key] = self.registry.blob_stores[definition.kind](self, definition)
        return self._blob_stores[key]

    def upload_sessions(self, definition: Any, blob_store: Any) -> UploadSessions:
        """The sessions an app.engine.definitions.UploadSessionsDef describes, over the BlobStoreDef
        ``blob_store`` (one object per distinct definition)."""
        blob_store = self.placed(blob_store)
        key = (definition.name, json.dumps([definition.spec, blob_store.spec], sort_keys=True))
        if key not in self._sessions:
            self._sessions[key] = self.registry.upload_sessions[blob_store.kind](self.blob_store(blob_store),
                                                                                definition)
        return self._sessions[key]

    def state(self, kv_stores: Mapping[str, KvSpec]) -> StateBackend:
        """The state backend of a schema's kv stores (their common kind; compilation refused a mix), where this
        deployment places it: with DEPOT_STATE_URL, `rocksdb` kv stores live in that PostgreSQL database."""
        kind: str = next((spec["kind"] for spec in kv_stores.values()), DEFAULT_KV_KIND)
        specs = {name: spec for name, spec in kv_stores.items() if spec.get("kind") == kind}
        if self.state_location is not None and kind == DEFAULT_KV_KIND:
            kind = STATE_URL_KIND
            specs = {name: dict(self.state_location, kind=kind) for name in specs or ("",)}
        key = (kind, json.dumps(sorted({json.dumps(spec, sort_keys=True) for spec in specs.values()})))
        if key not in self._states:
            self._states[key] = self.registry.kv_stores[kind](self, specs)
        return self._states[key]

    def cache(self, settings: CacheSettings, resolve_blob: ResolveBlob) -> Cache:
        return self.registry.caches[self.cache_kind](self, settings, resolve_blob)

    def close(self) -> None:
        for state in self._states.values():
            if state is not self.local_state:
                state.close()
        if not self._owner:
            return
        if self.shared is not None:
            self.shared.close()
        self.local_state.close()


BLOB_URL_ENV = "DEPOT_BLOB_URL"
_BLOB_URL_OPTIONS = ("endpoint_url", "region")


def blob_location(url: str) -> dict[str, Any] | None:
    """DEPOT_BLOB_URL read: ``s3://bucket[/prefix][?endpoint_url=http://host:port&region=NAME]`` -> what an s3
    blob store's spec takes from it (None for ``file://``: the schema's own stores, as declared);
    BlobLocationError naming what is wrong otherwise."""
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path in ("", "/"):
        return None
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - set(_BLOB_URL_OPTIONS))
    if parts.scheme != "s3" or not parts.netloc or unknown or any(len(v) != 1 for v in options.values()):
        raise BlobLocationError("%s=%s: expected s3://bucket[/prefix][?endpoint_url=http(s)://host:port&region=NAME]"
                                " (or file:// for the schema's own stores)%s" % (
                                    BLOB_URL_ENV, url, "; unknown: " + ", ".join(unknown) if unknown else ""))
    prefix = parts.path.strip("/")
    location: dict[str, Any] = {"kind": "s3", "bucket": parts.netloc, "prefix": prefix + "/" if prefix else ""}
    location.update({name: values[0] for name, values in options.items()})
    problems = s3.spec_problems(location)
    if problems:
        raise BlobLocationError("%s=%s: %s" % (BLOB_URL_ENV, url, "; ".join("%s: %s" % p for p in problems)))
    return location


def holds_stores(data_dir: str) -> bool:
    """Whether ``data_dir`` holds a data dir's stores (a server's first start creates them)."""
    return holds_state(os.path.join(data_dir, STATE_DIR))


class Lease(Protocol):
    def close(self) -> None: ...


def lease(data_dir: str) -> Lease:
    """Take the data dir's lease (what a running server holds) until ``close()``; StoreLocked when another
    process holds it."""
    return StateStore(os.path.join(data_dir, STATE_DIR))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

