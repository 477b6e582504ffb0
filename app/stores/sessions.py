"""Resumable uploads over a `filesystem` blob store: the embedded implementation of UploadSessions.

A session is a file under the store's root (``.sessions/<name>/<id>``), so its bytes never cross memory whole and
a finished session becomes a staged blob by a rename, not a copy. Every change to a session happens under an
exclusive ``flock`` of its file, which serialises appends from any thread or process; a writer that waited checks
that the file it locked is still the session's (a finish or abort may have taken it meanwhile). A chunk is
all-or-nothing: a failed append (a client gone, a limit passed) truncates the file back to where it began, and an
accepted one is fsynced before it is acknowledged. The sha-256 of the bytes so far is carried from chunk to chunk
in this process when it can be (the file is hashed again at finish when it cannot, e.g. after a restart).
Sessions idle longer than their time-to-live are gone: ``size`` no longer sees them and ``expire`` removes them.
"""
from __future__ import annotations

import fcntl
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from app.errors import DepotError, too_large, unknown_session
from app.metrics import FSYNC_SECONDS
from app.stores.blobs import CHUNK, FileBlobStore, StagedBlob, bounded_chunks
from app.stores.digests import DIGEST_PREFIX, Hashers
from app.stores.interfaces import Readable

_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
_CARRIED = 1024  # sessions whose running hash this process keeps (the oldest are hashed again at finish)


class UploadOffsetMismatch(DepotError):
    """An append that does not start where the session's bytes end (HTTP 416); ``size`` is where they end."""

    def __init__(self, size: int, offset: int) -> None:
        super().__init__("UPLOAD_RANGE_INVALID", 416, "the chunk starts at byte %d but the upload holds %d bytes: "
                         "send the bytes from %d" % (offset, size, size), "Content-Range")
        self.size = size


class SessionSettings:
    """What every kind of upload sessions is given: sessions named ``name`` of ``store``, at most ``max_bytes``
    each (None: the store's max_blob_bytes), forgotten after ``ttl_seconds`` without a change."""

    def __init__(self, name: str, store: Any, ttl_seconds: float, max_bytes: Optional[int]) -> None:
        self.name = name
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes if max_bytes is not None else store.max_bytes


class FileUploadSessions(SessionSettings):
    """Upload sessions as files beside the store's blobs (SessionSettings says what it is given)."""

    store: FileBlobStore

    def __init__(self, name: str, store: FileBlobStore, ttl_seconds: float, max_bytes: Optional[int]) -> None:
        super().__init__(name, store, ttl_seconds, max_bytes)
        self.directory = os.path.join(store.root, ".sessions", name)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._hashes: OrderedDict[str, tuple[int, Hashers]] = OrderedDict()  # id -> (bytes hashed, sha-256 so far)
        self._hashes_lock = threading.Lock()

    def start(self) -> str:
        """A new, empty session; its id (32 hex digits) is unguessable."""
        session_id = uuid.uuid4().hex
        os.close(os.open(self._path(session_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._carry(session_id, 0, Hashers({"sha256"}))
        return session_id

    def size(self, session_id: str) -> Optional[int]:
        """The bytes the session holds, or None when there is no such live session."""
        path = self._known_path(session_id)
        try:
            status = os.stat(path) if path else None
        except FileNotFoundError:
            return None
        if status is None or self._expired(status.st_mtime):
            return None
        return status.st_size

    def append(self, session_id: str, stream: Readable, offset: Optional[int] = None) -> int:
        """Append what ``stream`` holds, checking that it starts at ``offset`` when one is given (416
        UPLOAD_RANGE_INVALID otherwise); the session's new size. 404 UPLOAD_UNKNOWN, 413 BLOB_TOO_LARGE."""
        with self._locked(session_id) as fd:
            start = os.fstat(fd).st_size
            if offset is not None and offset != start:
                raise UploadOffsetMismatch(start, offset)
            carried = self._take_carried(session_id, start)
            size = start
            try:
                for chunk in bounded_chunks(stream, start, self.max_bytes, "the upload's max_bytes"):
                    size += len(chunk)
                    if carried is not None:
                        carried.update(chunk)
                    _write_all(fd, chunk)
                with FSYNC_SECONDS.time():
                    os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, start)  # the chunk is all or nothing
                raise
            if carried is not None:
                self._carry(session_id, size, carried)
            return size

    def finish(self, session_id: str) -> StagedBlob:
        """The session's bytes as a blob staged in its store (promote or discard it as any staged blob); the
        session is gone."""
        with self._locked(session_id) as fd:
            size = os.fstat(fd).st_size
            if self.max_bytes is not None and size > self.max_bytes:
                raise too_large("the upload exceeds its limit (%d bytes)" % self.max_bytes, "BLOB_TOO_LARGE")
            if size < self.store.min_bytes:
                raise DepotError("BLOB_TOO_SMALL", 400, "blob is smaller than min_blob_bytes (%d)"
                                 % self.store.min_bytes)
            carried = self._take_carried(session_id, size)
            digests = carried.hexdigests() if carried is not None else _hash_file(fd)
            staged_path = os.path.join(self.store.tmp_dir, "upload-" + uuid.uuid4().hex)
            self.store.guard.temp_started(staged_path)  # live before it appears there
            os.rename(self._path(session_id), staged_path)
        hexdigest = digests["sha256"]
        return StagedBlob(self.store.name, DIGEST_PREFIX + hexdigest, size, staged_path,
                          self.store.path_for(hexdigest), digests)

    def abort(self, session_id: str) -> bool:
        """Cancel a session; False when there was none."""
        path = self._known_path(session_id)
        self._forget(session_id)
        if path is None:
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    def expire(self) -> tuple[int, int]:
        """Remove the sessions idle longer than the time-to-live -> (sessions, bytes) removed."""
        removed = removed_bytes = 0
        for session_id in list(self.ids()):
            path = self._path(session_id)
            try:
                status = os.stat(path)
            except FileNotFoundError:
                continue
            if self._expired(status.st_mtime) and self.abort(session_id):
                removed, removed_bytes = removed + 1, removed_bytes + status.st_size
        return removed, removed_bytes

    def ids(self) -> Iterator[str]:
        for name in os.listdir(self.directory):
            if _SESSION_ID.match(name):
                yield name

    # --- inside -------------------------------------------------------------------------------------------

    def _path(self, session_id: str) -> str:
        return os.path.join(self.directory, session_id)

    def _known_path(self, session_id: str) -> Optional[str]:
        return self._path(session_id) if _SESSION_ID.match(session_id) else None

    def _expired(self, modified: float) -> bool:
        return time.time() - modified > self.ttl_seconds

    @contextmanager
    def _locked(self, session_id: str) -> Iterator[int]:
        """The session file, open for appending under an exclusive lock; 404 UPLOAD_UNKNOWN when the session is
        not there (or was finished or cancelled while this waited for the lock, or expired)."""
        path = self._known_path(session_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND) if path else -1
        except FileNotFoundError:
            fd = -1
        if fd < 0:
            raise unknown_session(session_id)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            status = os.fstat(fd)
            try:
                current = os.stat(path).st_ino  # type: ignore[arg-type]
            except FileNotFoundError:
                current = None
            if current != status.st_ino or self._expired(status.st_mtime):
                raise unknown_session(session_id)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def _carry(self, session_id: str, size: int, hashers: Hashers) -> None:
        with self._hashes_lock:
            self._hashes[session_id] = (size, hashers)
            self._hashes.move_to_end(session_id)
            while len(self._hashes) > _CARRIED:
                self._hashes.popitem(last=False)

    def _take_carried(self, session_id: str, size: int) -> Optional[Hashers]:
        """The running hash of the session's first ``size`` bytes, if this process has it (taken: a failed
        append must not leave a hash of bytes the file no longer holds)."""
        with self._hashes_lock:
            carried = self._hashes.pop(session_id, None)
        return carried[1] if carried is not None and carried[0] == size else None

    def _forget(self, session_id: str) -> None:
        with self._hashes_lock:
            self._hashes.pop(session_id, None)


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _hash_file(fd: int) -> dict[str, str]:
    hashers = Hashers({"sha256"})
    offset = 0
    while True:
        chunk = os.pread(fd, CHUNK, offset)
        if not chunk:
            return hashers.hexdigests()
        hashers.update(chunk)
        offset += len(chunk)
