"""Whole blobs of a remote blob store (S3) kept on local disk in front of it: the schema's
`caching.blob_cache` (`enabled`, `max_bytes`, `eviction.policy: lru`).

A blob read whole from the remote store is written to the cache while it streams to its reader and hashed; only
bytes that match their digest are kept, under the digest's name, so the cache never holds other bytes than the
store (blobs never change under a digest). Reads of a cached blob, whole or by range, come from the local file
(seekable: the server sends it without a worker thread). At most ``max_bytes`` are kept: the least recently read
blobs are removed first; a blob larger than that is never cached. The store still asks the remote one whether a
blob exists before reading it, so a blob removed there (garbage collection in any process) is not served from
here. Each process keeps its own cache in its data dir; what a crash leaves half-written is removed at start.
"""
import hashlib
import os
import threading
from collections import OrderedDict
from typing import Any, BinaryIO, Callable, Optional, cast

from app.metrics import CACHE_LOOKUPS
from app.stores.blobs import ReadStream, ServedFile

_PARTIAL = ".partial-"


class DiskBlobCache:
    def __init__(self, root: str, max_bytes: int) -> None:
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sizes: "OrderedDict[str, int]" = OrderedDict()  # hex digest -> size, least recently read first
        self._bytes = 0
        self._load()

    def _load(self) -> None:
        """What an earlier run kept, least recently written first; what it left half-written goes."""
        found = []
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if name.startswith(_PARTIAL):
                os.unlink(path)
                continue
            status = os.stat(path)
            found.append((status.st_mtime, name, status.st_size))
        for _, name, size in sorted(found):
            self._sizes[name] = size
            self._bytes += size
        self._evict()

    def _path(self, hexdigest: str) -> str:
        return os.path.join(self.root, hexdigest)

    def open(self, hexdigest: str, start: int = 0, end: Optional[int] = None,
             on_close: Optional[Callable[[], None]] = None) -> Optional[BinaryIO]:
        """The cached bytes from ``start`` to ``end`` (exclusive), or None: not cached."""
        with self._lock:
            if hexdigest in self._sizes:
                self._sizes.move_to_end(hexdigest)
        try:
            handle = ServedFile(self._path(hexdigest))
        except FileNotFoundError:
            CACHE_LOOKUPS.labels("blob_disk", "miss").inc()
            return None
        CACHE_LOOKUPS.labels("blob_disk", "hit").inc()
        handle.on_close, handle.end = on_close, end
        if start:
            handle.seek(start)
        return cast(BinaryIO, handle)

    def filling(self, hexdigest: str, size: int, reader: BinaryIO) -> BinaryIO:
        """``reader`` (the whole blob from the remote store), kept in the cache as it is read through; ``reader``
        itself when the blob is larger than the whole cache."""
        if size > self.max_bytes:
            return reader
        return cast(BinaryIO, _Filling(self, hexdigest, size, reader))

    def admit(self, hexdigest: str, partial: str, size: int) -> None:
        """Keep a blob read whole and checked (its bytes in ``partial``), then make room."""
        os.replace(partial, self._path(hexdigest))
        with self._lock:
            if hexdigest not in self._sizes:
                self._bytes += size
            self._sizes[hexdigest] = size
            self._evict()

    def forget(self, hexdigest: str) -> None:
        """A blob removed from the remote store: its cached copy goes too."""
        with self._lock:
            size = self._sizes.pop(hexdigest, None)
            if size is not None:
                self._bytes -= size
        _unlink(self._path(hexdigest))

    def _evict(self) -> None:
        """Remove the least recently read blobs until what is kept fits; call with the lock held."""
        while self._bytes > self.max_bytes and self._sizes:
            hexdigest, size = self._sizes.popitem(last=False)
            self._bytes -= size
            _unlink(self._path(hexdigest))

    def partial_path(self) -> str:
        return os.path.join(self.root, _PARTIAL + os.urandom(8).hex())

    def usage(self) -> dict[str, Any]:
        with self._lock:
            return {"blobs": len(self._sizes), "bytes": self._bytes, "max_bytes": self.max_bytes}


class _Filling(ReadStream):
    """A remote blob's reader that writes what it reads to a partial file of the cache, hashing it; on close, the
    file is kept when it holds the whole blob and its bytes match the digest, else removed."""

    def __init__(self, cache: DiskBlobCache, hexdigest: str, size: int, reader: BinaryIO) -> None:
        super().__init__()
        self._cache, self._hexdigest, self._size, self._reader = cache, hexdigest, size, reader
        self._partial = cache.partial_path()
        self._file: Optional[Any] = open(self._partial, "wb")
        self._hash = hashlib.sha256()
        self._count = 0

    def read(self, size: Optional[int] = -1) -> bytes:
        data = self._reader.read(-1 if size is None else size)
        if data and self._file is not None:
            try:
                self._file.write(data)
            except OSError:  # a full disk: the reader still gets its bytes; the cache keeps nothing
                self._abandon()
            else:
                self._hash.update(data)
                self._count += len(data)
        return data

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._reader.close()
            super().close()
        finally:
            self._keep_or_drop()

    def _keep_or_drop(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if self._count == self._size and self._hash.hexdigest() == self._hexdigest:
            self._cache.admit(self._hexdigest, self._partial, self._size)
        else:
            _unlink(self._partial)

    def _abandon(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            _unlink(self._partial)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
