"""What the server does with each key a schema may hold, and the check that reports the keys it accepts but does
not act on.

The metaschema (app/engine/metaschema.py) decides which shapes load; many of its sections are open objects, so a key
nothing reads (a setting Depot does not implement, a misspelling) would load silently and be believed to act.
``KEYS`` says, key by key, what the server does with it:

- ``READ``/``Read``: read by the compiler, the engine, GC or the OpenAPI document;
- ``OPAQUE``: a free-form value checked elsewhere (pipelines, JSON Schemas, conditions);
- ``Only``: a description of how the server always works; a value it does not implement is reported;
- ``Declared``: describes what the schema's own routes do; reported unless an invariant or a validation check
  of the schema names it (then the schema checks its own claim);
- ``Unsupported``: accepted, never acted on; reported wherever it appears.

Any key of a section the table does not know is reported too. Every finding is a warning with its place: the
schema still loads. OPERATIONS.md ("Schema keys read and ignored") is generated from this table.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Union

from app.engine.definitions import Limits
from app.engine.report import Report, place
from app.stores.interfaces import JsonValue

CHECK = "schema_keys"
UNSUPPORTED = "accepted but not supported by this server"


@dataclass(frozen=True)
class Read:
    note: str = ""  # shown in OPERATIONS.md when set


@dataclass(frozen=True)
class Opaque:
    note: str = ""


@dataclass(frozen=True)
class Only:
    """``allowed``: the values the server implements (a tuple, or a regular expression a string must match); a
    list value is checked item by item."""
    allowed: re.Pattern[str] | tuple[JsonValue, ...]
    does: str
    label: str = ""  # how the docs and findings name ``allowed`` when it is a regular expression

    def accepts(self, value: JsonValue) -> bool:
        if isinstance(self.allowed, re.Pattern):
            return isinstance(value, str) and self.allowed.fullmatch(value) is not None
        return any(value == a and type(value) is type(a) for a in self.allowed)  # 1 is not True

    def describe(self) -> str:
        if isinstance(self.allowed, re.Pattern):
            return self.label or "a value matching %s" % self.allowed.pattern
        return ", ".join(json.dumps(a) for a in self.allowed)


@dataclass(frozen=True)
class Declared:
    instead: str


@dataclass(frozen=True)
class Unsupported:
    instead: str


# What the server does with a key (a leaf), with each key of a section (a dict; "*" for any other key), or with
# each item of a list (a list of one spec).
KeySpec = Union[Read, Opaque, Only, Declared, Unsupported, dict[str, "KeySpec"], list["KeySpec"]]

READ, OPAQUE = Read(), Opaque()

_CACHE: dict[str, KeySpec] = {"enabled": READ, "max_entry_bytes": READ, "default_ttl_seconds": READ,
          "vary_headers": Unsupported("an entry is found by the key cache.get and cache.put render: put what a "
                                      "response varies by into that key template"),
          "revalidate": Unsupported("entries are not revalidated; they live default_ttl_seconds (or the "
                                    "cache.put's ttl_seconds). Downloads always carry ETag and Last-Modified and "
                                    "answer If-None-Match and If-Modified-Since")}
_BLOB_CACHE_LATER = Unsupported("blobs are not pinned: the local disk cache of an s3 blob store removes the least "
                                "recently read ones first")
# an unknown scheme or ordering is a load error (app.engine.compiler), so both are plainly read
_VERSIONING: dict[str, KeySpec] = {
    "scheme": READ, "ordering": READ, "allow_prerelease": READ,
    "latest_policy": {
        "enabled": Declared("the schema's latest route and its index carry the policy out"),
        "monotonic": Declared("the schema's latest route and its index carry the policy out"),
        "exclude_prerelease": Declared("the latest route's index key (its where) leaves pre-releases out"),
    },
}
_CHECK_ITEM: dict[str, KeySpec] = {"id": READ, "description": READ, "require": OPAQUE, "on_fail": READ}

KEYS: dict[str, KeySpec] = {
    "schema_version": Only(re.compile(r"1(\.[0-9]+)*"), "reads schema format 1", "1 or 1.x"),
    "type_id": Read("the OpenAPI document's title"),
    "description": Read("the OpenAPI document's description"),
    "capabilities": {
        "protocols": Only(("http",), "serves HTTP"),
        "storage": Only(("blob", "kv", "index"), "stores blobs, KV documents and indexes"),
        "features": Only(("proxy", "replication", "gc", "audit", "immutability"),
                         "offers proxying, replication, garbage collection, an audit log and immutable artifacts "
                         "(no virtual repositories)"),
    },
    "entities": {
        "versioning": _VERSIONING,
        "*": {
            "versioning": _VERSIONING,
            "fields": {"*": {"type": READ, "normalize": READ,
                             "optional": Only((True,), "refuses no missing field: constraints apply to the fields "
                                                       "a request has, and a route's path decides which it has")}},
            "primary_key": Unsupported("an artifact's identity is its document's key_template "
                                       "(storage.documents), and write-once is kv.cas_put with if_absent"),
            "constraints": [{
                "field": READ, "regex": READ, "min_length": READ, "max_length": READ, "enum": READ,
                "reserved": READ, "code": READ,
                "when_present": Only((True,), "applies every constraint only to a field that is present"),
            }],
        },
    },
    "storage": {
        "blob_stores": {"*": {
            "kind": READ, "root": READ, "bucket": READ, "prefix": READ, "endpoint_url": READ, "region": READ,
            "addressing": {"mode": READ, "digest": READ, "path_template": READ},
            "limits": {"max_blob_bytes": READ, "min_blob_bytes": READ},
        }},
        "kv_stores": {"*": {
            "kind": Only(("rocksdb",), "keeps every KV store in its one embedded rocksdict (RocksDB) database"),
            "root": Unsupported("every KV store lives in the data dir's state/ database, each under its own key "
                                "space (one database is what makes a commit atomic)"),
        }},
        "documents": {"*": {"store": READ, "key_template": READ, "schema": READ}},
        "upload_sessions": {"*": {"blob_store": READ, "ttl_seconds": READ, "max_bytes": READ}},
        "schemas": OPAQUE,
    },
    "indexes": {"*": {
        "source_document": READ, "entity": READ,
        "keys": [{"name": READ, "fields": READ, "sort": READ, "unique": READ, "where": OPAQUE}],
        "text": {"fields": READ},
        "materialization": {
            "mode": Only(("incremental",), "writes index rows as the routes upsert and delete them"),
            "trigger": Only(("on_commit",), "writes index rows in the same atomic commit as the documents"),
        },
    }},
    "auth": {
        "scopes": [{"name": READ, "actions": Unsupported("a scope grants what the routes asking for it do: "
                                                         "auth.require_scopes and auth.policies enforce scopes")}],
        "policies": [{"name": READ, "effect": READ, "when": OPAQUE, "require": OPAQUE, "challenge": READ}],
        "anonymous": OPAQUE, "login": OPAQUE, "tokens": OPAQUE,  # closed by the metaschema, read in full
        "principals": {"source": Only(("jwt",), "knows its own users: login tokens (JWT) and API tokens")},
    },
    "upstreams": {"*": {
        "base_url": READ, "timeouts_ms": {"connect": READ, "read": READ},
        "retry": {"max_attempts": READ, "backoff_ms": READ},
        "auth": {"mode": Only(("none", "bearer_token"), "sends no credentials, or the bearer token in "
                                                        "`DEPOT_UPSTREAM_<NAME>_TOKEN`")},
    }},
    "caching": {
        "response_cache": _CACHE,
        "blob_cache": dict(_CACHE, pin_on_access=_BLOB_CACHE_LATER, max_bytes=READ,
                           eviction={"policy": Only(("lru",), "removes the least recently read blobs first")}),
    },
    "ops": {
        "closed_world": Only((True,), "runs only the ops of its own closed vocabulary"),
        "allowed": READ,
        "limits": {name: READ for name in Limits.DEFAULTS},
    },
    "api": {"routes": [{"id": READ, "method": READ, "path": READ, "tags": READ, "description": READ,
                        "challenge": READ, "resource": READ, "error_body": OPAQUE, "pipeline": OPAQUE}]},
    "events": {"types": [{
        "name": READ, "schema": OPAQUE,
        "durable": Only((True,), "appends every event to the durable log, with its transaction's commit"),
    }]},
    "replication": {
        "mode": Only(("event_sourcing",), "replicates by shipping the event log and replaying it"),
        "log": {"store": READ, "key_prefix": READ, "max_event_bytes": READ,
                "ordering": Only(("append_only",), "appends events, numbered without gaps, and never rewrites "
                                                   "one")},
        "shipping": {
            "strategy": Only(("at_least_once",), "ships batches at least once; the dedupe key makes applying "
                                                 "exactly once"),
            "dedupe": {"enabled": READ, "key": READ},
            "batch": {"max_events": READ, "max_bytes": READ},
        },
        "replay": {
            "idempotency": Only(("required",), "applies each event once, by its dedupe key"),
            "apply_pipelines": {"*": READ},
        },
        "apply_pipelines": OPAQUE,
    },
    "gc": {
        "enabled": Read("false: a collection is refused (409 GC_DISABLED); a dry run still reports"),
        "retention": {
            "immutable_after_publish": Declared("the publish route writes metadata write-once (kv.cas_put with "
                                                "if_absent)"),
            "keep_last_n_versions": Unsupported("garbage collection never removes versions: delete them with the "
                                                "schema's delete route; their bytes are collected once no live "
                                                "version names them"),
            "keep_tags_forever": Only((True,), "never removes tags or documents in a collection, only blob files "
                                               "no live document names"),
        },
        "sweep": {
            "schedule": Unsupported("a collection runs when asked: POST /admin/gc, or `python -m app gc` with the "
                                    "server stopped, from a scheduler such as cron or a systemd timer"),
            "mark": {
                "mark_blobs_by": Read("document.field paths (a list's items: `[]` after a step, as in "
                                      "doc.layers[].digest); a document the schema does not declare is an error"),
                "sources": Unsupported("the mark reads the documents mark_blobs_by names (document.field)"),
            },
            "sweep_unreferenced_after_seconds": READ,
        },
    },
    "invariants": {"*": [{"id": READ, "description": READ, "assert": OPAQUE, "on_fail": READ}]},
    "features": {
        "proxy_enabled": READ,
        "*": Declared("the schema's routes carry a feature out; the server reads only proxy_enabled"),
    },
    "validation": {"load_time_checks": [_CHECK_ITEM], "runtime_checks": [_CHECK_ITEM]},
    # a pack's content is checked as the sections it is merged into (app/engine/packs.py)
    "packs": [{"file": READ, "name": READ, "mount": READ, "content": OPAQUE}],
}


def check(doc: dict[str, JsonValue], report: Report) -> None:
    """Report, as warnings with their places, every key of ``doc`` the server accepts but does not act on."""
    _walk(doc, KEYS, "", report, _named_paths(doc))


def _walk(value: JsonValue, spec: KeySpec, where: str, report: Report, named: set[str]) -> None:
    if isinstance(spec, list):
        for i, item in enumerate(value if isinstance(value, list) else []):
            _walk(item, spec[0], place(where, i), report, named)
    elif isinstance(spec, dict):
        for key, inner in (value.items() if isinstance(value, dict) else ()):
            sub = spec.get(key, spec.get("*"))
            if sub is None:
                report.warning(place(where, key), "unknown key, read by nothing; known here: %s"
                               % ", ".join(sorted(spec)), CHECK)
            else:
                _walk(inner, sub, place(where, key), report, named)
    elif isinstance(spec, Unsupported):
        report.warning(where, "%s: %s" % (UNSUPPORTED, spec.instead), CHECK)
    elif isinstance(spec, Declared) and where not in named:
        report.warning(where, "accepted but not read by this server: it describes the schema's own routes (%s), "
                       "and no invariant or validation check names it" % spec.instead, CHECK)
    elif isinstance(spec, Only):
        items: Iterable[tuple[Optional[int], JsonValue]] = (enumerate(value) if isinstance(value, list)
                                                              else [(None, value)])
        for index, item in items:
            if not spec.accepts(item):
                report.warning(where if index is None else place(where, index), "%s is %s, which %s (it implements %s)"
                               % (json.dumps(item), UNSUPPORTED, spec.does, spec.describe()), CHECK)


def _named_paths(doc: dict[str, JsonValue]) -> set[str]:
    """Every string the schema's invariants and validation checks hold: the schema paths they read."""
    found: set[str] = set()

    def collect(value: JsonValue) -> None:
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)
    collect(doc.get("invariants"))
    collect(doc.get("validation"))
    return found


def documented() -> list[tuple[str, str, str]]:
    """(key, when it is reported, what the server does) for every key OPERATIONS.md lists: all but the plainly
    read ones."""
    rows: list[tuple[str, str, str]] = []

    def visit(spec: KeySpec, path: str) -> None:
        if isinstance(spec, list):
            visit(spec[0], path + "[]")
        elif isinstance(spec, dict):
            for key, inner in spec.items():
                visit(inner, "%s.%s" % (path, key) if path else key)
        elif isinstance(spec, Unsupported):
            rows.append((path, "present (unsupported)", spec.instead))
        elif isinstance(spec, Declared):
            rows.append((path, "no invariant or validation check names it", "nothing: " + spec.instead))
        elif isinstance(spec, Only):
            rows.append((path, "a value other than %s" % spec.describe(), "Depot " + spec.does))
        elif spec.note:
            rows.append((path, "never (read)", spec.note))
    visit(KEYS, "")
    return rows
