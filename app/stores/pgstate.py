"""The `postgresql` kv store kind: the state (documents, indexes, text postings, the event log, a replica's
bookkeeping, the embedded cache's entries) in one table of a PostgreSQL database, shared by every process
serving the repository.

The table holds the same ordered byte keys as the embedded database (app/stores/state.py builds them; this module
only stores them): ``(k bytea PRIMARY KEY, v bytea)``. PostgreSQL compares bytea byte by byte, so the primary key's
B-tree keeps the state's order: a latest version is the first row of a range, a page after a cursor a range
from it, a text query a walk of posting ranges; nothing scans the table.

A commit is one database transaction that first takes a transaction-level advisory lock named after the table:
commits of every process are checked and written one after another, each wholly before or after any other (an
if-absent put has exactly one winner, an index's unique key one row), and the event log's next number is read
inside it, so readers never see a gap. Reads outside a commit see what is committed.

Connections: one per thread (a server's threads are bounded; a thread's is closed when it ends), autocommit
outside commits.
"""
import hashlib
import re
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from app.stores.interfaces import StateLocationError
from app.stores.state import key_after_prefix

STATE_URL_ENV = "DEPOT_STATE_URL"
DEFAULT_TABLE = "depot_state"
SPEC_KEYS = ("url", "table")
CONNECT_SECONDS = 10
PAGE_ROWS = 500  # rows a scan fetches at a time: memory stays bounded whatever the range
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def spec_problems(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each problem of a postgresql kv store's spec."""
    problems = []
    url = spec.get("url")
    if url is not None:
        try:
            connection_url(url)
        except StateLocationError as exc:
            problems.append(("url", str(exc)))
    table = spec.get("table", DEFAULT_TABLE)
    if not isinstance(table, str) or not _TABLE_NAME.match(table):
        problems.append(("table", "expected a table name of lower-case letters, digits and _ (at most 63)"))
    return problems


def connection_url(url: Any) -> str:
    """A ``postgresql://`` (or SQLAlchemy-style ``postgresql+psycopg://``) URL as psycopg takes it."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise StateLocationError("expected postgresql://[user@]host[:port]/database, got %r" % (url,))
    return urlunsplit(parts._replace(scheme="postgresql"))


def state_location(url: str) -> dict[str, Any]:
    """DEPOT_STATE_URL read: ``postgresql://...[?table=NAME]`` -> the spec of a postgresql kv store placed there
    (the table option is Depot's; every other option goes to the server)."""
    parts = urlsplit(url)
    options = parse_qsl(parts.query, keep_blank_values=True)
    spec = {"url": urlunsplit(parts._replace(query=urlencode([o for o in options if o[0] != "table"])))}
    spec.update((name, value) for name, value in options if name == "table")
    problems = spec_problems(spec)
    if problems:
        raise StateLocationError("%s=%s: %s" % (STATE_URL_ENV, url, "; ".join("%s: %s" % p for p in problems)))
    return spec


class _Held:
    """A thread's connection, held in its thread-local storage."""
    __slots__ = ("connection", "__weakref__")

    def __init__(self, connection: "psycopg.Connection[Any]") -> None:
        self.connection = connection


class PostgresKV:
    """interfaces' OrderedKV (app/stores/state.py) in one PostgreSQL table."""
    kind = "postgresql"
    shared = True

    def __init__(self, url: str, table: str = DEFAULT_TABLE) -> None:
        self.url = connection_url(url)
        self.table = table
        self.lock_id = int.from_bytes(hashlib.sha256(b"depot-state:" + table.encode()).digest()[:8], "big",
                                      signed=True)
        self._local = threading.local()
        self._connections: set[psycopg.Connection[Any]] = set()
        self._guard = threading.Lock()
        name = sql.Identifier(table)
        self._get = sql.SQL("SELECT v FROM {} WHERE k = %s").format(name)
        self._ranges = {(inclusive, bounded): sql.SQL("SELECT k, v FROM {} WHERE k {} %s {}ORDER BY k LIMIT %s").format(
            name, sql.SQL(">=" if inclusive else ">"), sql.SQL("AND k < %s " if bounded else ""))
            for inclusive in (True, False) for bounded in (True, False)}  # (from the low key inclusive, bounded above)
        self._last = sql.SQL("SELECT k FROM {} WHERE k >= %s AND k < %s ORDER BY k DESC LIMIT 1").format(name)
        self._open_last = sql.SQL("SELECT k FROM {} WHERE k >= %s ORDER BY k DESC LIMIT 1").format(name)
        self._seek = sql.SQL("SELECT k FROM {} WHERE k >= %s ORDER BY k LIMIT 1").format(name)
        self._delete = sql.SQL("DELETE FROM {} WHERE k = ANY(%s)").format(name)
        self._upsert = sql.SQL("INSERT INTO {} (k, v) SELECT * FROM unnest(%s::bytea[], %s::bytea[]) "
                               "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v").format(name)
        with self._connection().transaction():
            self._connection().execute("SELECT pg_advisory_xact_lock(%s)", (self.lock_id,))  # one creator at a time
            self._connection().execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (k bytea PRIMARY KEY, v bytea NOT NULL)")
                                       .format(name))

    def _connection(self) -> "psycopg.Connection[Any]":
        held = getattr(self._local, "held", None)
        if held is None or held.connection.closed:
            try:
                connection = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_SECONDS)
            except psycopg.OperationalError as exc:
                raise StateLocationError("the PostgreSQL state database does not answer: %s" % exc) from exc
            held = self._local.held = _Held(connection)
            with self._guard:
                self._connections.add(connection)
            # closed when its thread ends (Python drops a thread's locals then), so threads that come and go do
            # not pile up connections on the server
            weakref.finalize(held, self._drop, connection)
        return held.connection

    def _drop(self, connection: "psycopg.Connection[Any]") -> None:
        with self._guard:
            self._connections.discard(connection)
        connection.close()

    def _rows(self, query: "sql.SQL | sql.Composed", *params: Any) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._connection().execute(query, params).fetchall()
        return rows

    def get(self, key: bytes) -> Optional[bytes]:
        rows = self._rows(self._get, key)
        return bytes(rows[0][0]) if rows else None

    def scan(self, prefix: bytes, limit: Optional[int] = None,
             start: Optional[bytes] = None) -> Iterator[tuple[bytes, bytes]]:
        """Pages of rows, each one query (no cursor is held between them)."""
        upper = key_after_prefix(prefix)
        low, inclusive = (prefix, True) if start is None or start < prefix else (start, False)
        left = limit
        while left is None or left > 0:
            wanted = PAGE_ROWS if left is None else min(left, PAGE_ROWS)
            bounds = (low, upper) if upper is not None else (low,)
            page = self._rows(self._ranges[inclusive, upper is not None], *bounds, wanted)
            for key, value in page:
                yield bytes(key), bytes(value)
            if len(page) < wanted:
                return
            low, inclusive = bytes(page[-1][0]), False
            left = None if left is None else left - len(page)

    def last_key(self, prefix: bytes) -> Optional[bytes]:
        upper = key_after_prefix(prefix)
        rows = (self._rows(self._last, prefix, upper) if upper is not None
                else self._rows(self._open_last, prefix))
        return bytes(rows[0][0]) if rows else None

    def seeker(self) -> Callable[[bytes], Optional[bytes]]:
        def seek(key: bytes) -> Optional[bytes]:
            rows = self._rows(self._seek, key)
            return bytes(rows[0][0]) if rows else None
        return seek

    def write_in_order(self, changes: Iterable[dict[bytes, Optional[bytes]]]) -> None:
        final: dict[bytes, Optional[bytes]] = {}
        for writes in changes:
            final.update(writes)
        deletes = [key for key, value in final.items() if value is None]
        puts = [(key, value) for key, value in final.items() if value is not None]
        connection = self._connection()
        with connection.transaction():  # a savepoint inside a commit's transaction
            if deletes:
                connection.execute(self._delete, (deletes,))
            if puts:
                connection.execute(self._upsert, ([k for k, _ in puts], [v for _, v in puts]))

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        connection = self._connection()
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (self.lock_id,))
            yield

    def probe(self) -> None:
        self._rows(sql.SQL("SELECT 1"))

    def details(self) -> dict[str, Any]:
        parts = urlsplit(self.url)
        return {"server": parts.hostname, "database": parts.path.lstrip("/"), "table": self.table}

    def close(self) -> None:
        with self._guard:
            connections, self._connections = self._connections, set()
        for connection in connections:
            connection.close()
