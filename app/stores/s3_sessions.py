"""Resumable uploads over an `s3` blob store: UploadSessions kept in its bucket.

A session is a key prefix, ``<prefix>.sessions/<name>/<id>/``: a marker object written when it starts, then one
object per piece of at most PART_SIZE bytes, named by the offset it starts at. A piece is written only where the
session's bytes end, and with If-None-Match: * (S3's conditional write), so of two appends at one offset, from
any thread or process, one wins and the other is refused (416). An append is all or nothing: the pieces it wrote
are deleted when its stream fails or passes the limit. The session's size is the length of the unbroken run of
pieces from offset 0; its age, the newest of its objects (a session idle past its time-to-live is gone to its
callers at once, and ``expire`` deletes it). ``finish`` streams the pieces, in order, through the store's
``stage``, which hashes them into a staged blob (the bytes cross this process once more: S3 cannot concatenate
objects under 5 MiB server-side), then deletes the session.

Within one process, the changes to a session are serialised by a lock; across processes, an append racing a
finish of the same session may be lost (clients do not do that: they finish after their last append).
"""
from __future__ import annotations

import re
import threading
import time
import uuid
import weakref
from typing import Any, BinaryIO, Iterable, Iterator, NamedTuple, Optional

from botocore.exceptions import ClientError

from app.errors import DepotError, too_large, unknown_session
from app.stores.blobs import bounded_chunks
from app.stores.s3 import PART_SIZE, S3BlobStore, S3StagedBlob
from app.stores.interfaces import Readable
from app.stores.sessions import SessionSettings, UploadOffsetMismatch

_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
_PIECE = re.compile(r"^[0-9]{20}$")
MARKER = "session"


class _Session(NamedTuple):
    pieces: list[str]  # the keys of its unbroken run of pieces from offset 0, in order
    size: int
    modified: float  # time.time() of its newest object


class S3UploadSessions(SessionSettings):
    """Upload sessions as objects in the store's bucket (SessionSettings says what it is given)."""

    store: S3BlobStore

    def __init__(self, name: str, store: S3BlobStore, ttl_seconds: float, max_bytes: Optional[int]) -> None:
        super().__init__(name, store, ttl_seconds, max_bytes)
        self.root = "%s.sessions/%s/" % (store.prefix, name)
        self._locks: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._locks_lock = threading.Lock()

    def start(self) -> str:
        """A new, empty session; its id (32 hex digits) is unguessable."""
        session_id = uuid.uuid4().hex
        self.store.client.put_object(Bucket=self.store.bucket, Key=self._dir(session_id) + MARKER, Body=b"",
                                     IfNoneMatch="*")
        return session_id

    def size(self, session_id: str) -> Optional[int]:
        session = self._live(session_id)
        return session.size if session is not None else None

    def append(self, session_id: str, stream: Readable, offset: Optional[int] = None) -> int:
        """Append what ``stream`` holds, checking that it starts at ``offset`` when one is given (416
        UPLOAD_RANGE_INVALID otherwise); the session's new size. 404 UPLOAD_UNKNOWN, 413 BLOB_TOO_LARGE."""
        with self._lock(session_id):
            session = self._live(session_id)
            if session is None:
                raise unknown_session(session_id)
            if offset is not None and offset != session.size:
                raise UploadOffsetMismatch(session.size, offset)
            written: list[str] = []
            position, piece = session.size, bytearray()
            try:
                for chunk in bounded_chunks(stream, session.size, self.max_bytes, "the upload's max_bytes"):
                    piece += chunk
                    if len(piece) >= PART_SIZE:
                        position = self._write_piece(session_id, session.size, position, piece, written)
                        piece = bytearray()
                if piece:
                    position = self._write_piece(session_id, session.size, position, piece, written)
            except BaseException:
                for key in written:  # the append is all or nothing
                    self.store.client.delete_object(Bucket=self.store.bucket, Key=key)
                raise
            return position

    def finish(self, session_id: str) -> S3StagedBlob:
        """The session's bytes as a blob staged in its store (promote or discard it as any staged blob); the
        session is gone."""
        with self._lock(session_id):
            session = self._live(session_id)
            if session is None:
                raise unknown_session(session_id)
            if self.max_bytes is not None and session.size > self.max_bytes:
                raise too_large("the upload exceeds its limit (%d bytes)" % self.max_bytes, "BLOB_TOO_LARGE")
            if session.size < self.store.min_bytes:
                raise DepotError("BLOB_TOO_SMALL", 400, "blob is smaller than min_blob_bytes (%d)"
                                 % self.store.min_bytes)
            staged = self.store.stage(_Pieces(self.store, session.pieces))
            self._delete_all(session_id)
        return staged

    def abort(self, session_id: str) -> bool:
        """Cancel a session; False when there was none."""
        if not _SESSION_ID.match(session_id):
            return False
        with self._lock(session_id):
            return self._delete_all(session_id) > 0

    def expire(self) -> tuple[int, int]:
        """Remove the sessions idle longer than the time-to-live -> (sessions, bytes) removed."""
        found: dict[str, list[Any]] = {}  # id -> its listing entries
        for key, entry in self.store.list_objects(self.root):
            session_id = key[len(self.root):].partition("/")[0]
            found.setdefault(session_id, []).append(entry)
        removed = removed_bytes = 0
        for session_id, entries in found.items():
            if self._expired(max(entry["LastModified"].timestamp() for entry in entries)) \
                    and self.abort(session_id):
                removed, removed_bytes = removed + 1, removed_bytes + sum(entry["Size"] for entry in entries)
        return removed, removed_bytes

    # --- inside -------------------------------------------------------------------------------------------

    def _dir(self, session_id: str) -> str:
        return self.root + session_id + "/"

    def _live(self, session_id: str) -> Optional[_Session]:
        """The session, unless there is none or it expired."""
        if not isinstance(session_id, str) or not _SESSION_ID.match(session_id):
            return None
        directory = self._dir(session_id)
        pieces: dict[int, tuple[str, int]] = {}  # offset -> (key, size)
        newest, started = 0.0, False
        for key, entry in self.store.list_objects(directory):
            name = key[len(directory):]
            newest = max(newest, entry["LastModified"].timestamp())
            started = started or name == MARKER
            if _PIECE.match(name):
                pieces[int(name)] = (key, entry["Size"])
        if not started or self._expired(newest):
            return None
        run, size = [], 0
        while size in pieces and pieces[size][1] > 0:  # the unbroken run from 0: a piece follows the last's end
            key, length = pieces[size]
            run.append(key)
            size += length
        return _Session(run, size, newest)

    def _write_piece(self, session_id: str, start: int, position: int, piece: bytearray, written: list[str]) -> int:
        """Write ``piece`` at ``position`` unless something is there already (another writer's, since this append
        began at ``start``): 416."""
        key = self._dir(session_id) + "%020d" % position
        try:
            self.store.client.put_object(Bucket=self.store.bucket, Key=key, Body=piece, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 412:
                raise
            session = self._live(session_id)
            raise UploadOffsetMismatch(session.size if session is not None else position, start)
        written.append(key)
        return position + len(piece)

    def _delete_all(self, session_id: str) -> int:
        keys = [key for key, _ in self.store.list_objects(self._dir(session_id))]
        for key in keys:
            self.store.client.delete_object(Bucket=self.store.bucket, Key=key)
        return len(keys)

    def _expired(self, modified: float) -> bool:
        return time.time() - modified > self.ttl_seconds

    def _lock(self, session_id: str) -> Any:
        with self._locks_lock:
            lock = self._locks.get(session_id)
            if lock is None:
                lock = self._locks[session_id] = _Lock()
            return lock


class _Lock:
    """A lock that can be weakly referenced (threading.Lock cannot): one per session while it is used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> "_Lock":
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _Pieces:
    """A session's pieces read one after another, as one stream."""

    def __init__(self, store: S3BlobStore, keys: Iterable[str]) -> None:
        self._store = store
        self._keys: Iterator[str] = iter(keys)
        self._current: Optional[BinaryIO] = None

    def read(self, size: int = -1, /) -> bytes:
        while True:
            if self._current is None:
                key = next(self._keys, None)
                if key is None:
                    return b""
                self._current = self._store.read(key)
            data = self._current.read(size)
            if data:
                return data
            self._current.close()
            self._current = None
