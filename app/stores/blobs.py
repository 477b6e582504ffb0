"""Content-addressed blob files: the `filesystem` blob store kind.

Bytes are hashed while they stream into a temporary file inside the store, fsynced, and only then renamed to
the path their digest names, so a crash never leaves a partial file under a digest. Inside a transaction the
rename waits for the commit; an abort deletes the temporary file. File paths never leave this module: callers
hold BlobHandles and open them.
"""
import io
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Optional

from app.errors import bad_request, too_large
from app.metrics import FSYNC_SECONDS
from app.stores.digests import DIGEST_PREFIX, Hashers, base64_digests, split_digest
from app.stores.guard import BlobGuard, GuardedDigests
from app.stores.interfaces import BlobHandle, BlobStat, Readable, process_lock
from app.stores.interfaces import StagedBlob as Staged

CHUNK = 1024 * 1024


class BlobRef(BlobHandle):
    """A blob (stored, staged, or a temporary file such as a proxied body) as a file at ``path``."""

    __slots__ = ("path",)

    def __init__(self, store: Optional[str], digest: Optional[str], size: Optional[int], path: str) -> None:
        super().__init__(store, digest, size)
        self.path = path

    def stat(self) -> BlobStat:
        status = os.stat(self.path)
        return BlobStat(status.st_size, status.st_mtime)

    def open(self, start: int = 0, end: Optional[int] = None,
             on_close: Optional[Callable[[], None]] = None) -> BinaryIO:
        handle = ServedFile(self.path)
        handle.on_close = on_close
        if start:
            handle.seek(start)
        handle.end = end
        return handle


class StagedBlob(BlobRef):
    """Bytes a store has taken in, with every digest computed meanwhile; once promoted, a handle on the stored
    blob (a template reads $blob.digests.sha1, hex, and $blob.digests_base64.sha1)."""

    template_attrs = BlobRef.template_attrs + ("digests", "digests_base64")
    __slots__ = ("final_path", "verified", "digests")
    store: str
    digest: str
    size: int

    def __init__(self, store: str, digest: str, size: int, path: str, final_path: str,
                 digests: Optional[dict[str, str]] = None) -> None:
        super().__init__(store, digest, size, path)
        self.final_path = final_path
        self.verified = False
        self.digests = digests or {}  # algorithm name (app.stores.digests.ALGORITHMS) -> hex, computed while staging

    @property
    def digests_base64(self) -> dict[str, str]:
        return base64_digests(self.digests)


def run_on_close(reader: Any) -> None:
    """Run a reader's ``on_close`` callback, once: it is cleared before it runs."""
    callback, reader.on_close = reader.on_close, None
    if callback is not None:
        callback()


class ReadStream(io.RawIOBase):
    """A readable stream whose subclass defines ``read``: what a server's file wrapper and ``readinto`` callers
    (shutil, hashing loops) need besides."""

    def readable(self) -> bool:
        return True

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class ServedFile(io.FileIO):
    """A blob file being read, from where it is sought to up to ``end``: reads stop there, so any server's file
    wrapper sends exactly the range (and, the file being seekable, sends it without a worker thread). The
    server closes it when done, without closing the response itself, so what must happen after sending
    (``on_close``) happens here."""

    on_close: Optional[Callable[[], None]] = None
    end: Optional[int] = None

    def read(self, size: Optional[int] = -1) -> bytes:
        if self.end is None:
            return super().read(size)
        remaining = max(self.end - self.tell(), 0)
        return super().read(remaining if size is None or size < 0 or size > remaining else size)

    def close(self) -> None:
        try:
            super().close()
        finally:
            run_on_close(self)


class FileBlobStore(GuardedDigests):
    """Blob files under ``root``, at the relative path ``layout`` gives a hex sha-256 digest (the schema's
    ``addressing.path_template``, compiled by the engine); uploads are written to
    ``root/.tmp`` first. ``guard`` (shared by every store of a data dir) says what garbage collection must keep."""

    def __init__(self, name: str, root: str, layout: Callable[[str], str], min_bytes: int = 0,
                 max_bytes: Optional[int] = None, guard: Optional[BlobGuard] = None) -> None:
        self.name = name
        self.root = root
        self.layout = layout
        self.min_bytes = min_bytes or 0
        self.max_bytes = max_bytes
        self.guard = guard if guard is not None else BlobGuard(process_lock())
        self.tmp_dir = os.path.join(root, ".tmp")
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        self._dir_lock = threading.Lock()

    def path_for(self, hexdigest: str) -> str:
        return os.path.join(self.root, self.layout(hexdigest))

    # --- writing ------------------------------------------------------------------------------------------

    def stage(self, stream: Readable, also: Iterable[str] = ()) -> StagedBlob:
        """Stream ``stream`` (anything with read(n)) into a temporary file while hashing it with sha-256, and
        with the further ALGORITHMS named in ``also``. The file is live (garbage collection leaves it alone)
        until it is promoted or discarded."""
        hashers = Hashers({"sha256", *also})
        size = 0
        tmp_path = os.path.join(self.tmp_dir, "upload-" + uuid.uuid4().hex)
        self.guard.temp_started(tmp_path)  # before the file exists: no collection can see it unclaimed
        try:
            with open(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                for chunk in bounded_chunks(stream, 0, self.max_bytes, "max_blob_bytes"):
                    size += len(chunk)
                    hashers.update(chunk)
                    out.write(chunk)
                out.flush()
                with FSYNC_SECONDS.time():
                    os.fsync(out.fileno())
            if size < self.min_bytes:
                raise bad_request("BLOB_TOO_SMALL", "blob is smaller than min_blob_bytes (%d)" % self.min_bytes)
        except BaseException:
            _unlink(tmp_path)
            self.guard.temp_ended(tmp_path)
            raise
        digests = hashers.hexdigests()
        hexdigest = digests["sha256"]
        return StagedBlob(self.name, DIGEST_PREFIX + hexdigest, size, tmp_path, self.path_for(hexdigest), digests)

    def promote(self, staged: Staged, defer_sync: bool = False) -> Optional[Callable[[], None]]:
        """Move a staged blob under its digest; call with the commit lock held (a transaction's commit holds
        it; ``commit`` takes it). Content addressing makes an existing file the same bytes: it is touched
        instead, so garbage collection's grace period starts again for it. The directory's sync that makes the
        new name durable is returned with ``defer_sync`` (interfaces.BlobStore.promote)."""
        staged = _own(staged)
        hexdigest = staged.digest[len(DIGEST_PREFIX):]
        directory = os.path.dirname(staged.final_path)
        with self.guard.lock:  # a collection decides and deletes under this lock: never between our steps
            try:
                os.utime(staged.final_path)
                renamed = False
            except FileNotFoundError:
                with self._dir_lock:
                    os.makedirs(directory, exist_ok=True)
                os.replace(staged.path, staged.final_path)
                renamed = True
            self.guard.promoted(hexdigest)
        if not renamed:
            _unlink(staged.path)
        self.guard.temp_ended(staged.path)
        staged.path = staged.final_path
        if not renamed:
            return None
        sync = _DirectorySync(directory)  # durable before the commit records a reference to it
        if defer_sync:
            return sync
        sync()
        return None

    def commit(self, staged: Staged) -> None:
        """Promote a staged blob outside a transaction."""
        with self.guard.commit_lock:
            self.promote(staged)

    def discard(self, staged: Staged) -> None:
        staged = _own(staged)
        if staged.path != staged.final_path:
            _unlink(staged.path)
            self.guard.temp_ended(staged.path)

    # --- what garbage collection must keep: hold, release, lease, end_lease (GuardedDigests) ---------------

    # --- reading ------------------------------------------------------------------------------------------

    def locate(self, digest: str) -> Optional[BlobRef]:
        path = self.path_for(split_digest(digest))
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return None
        return BlobRef(self.name, digest if digest.startswith(DIGEST_PREFIX) else DIGEST_PREFIX + digest,
                       size, path)

    def ref(self, digest: str, size: Optional[int]) -> BlobRef:
        return BlobRef(self.name, digest, size, self.path_for(split_digest(digest)))

    def exists(self, digest: str) -> bool:
        return os.path.isfile(self.path_for(split_digest(digest)))

    def stat(self, digest: str) -> Optional[BlobStat]:
        return _stat(self.path_for(split_digest(digest)))

    def size(self, digest: str) -> Optional[int]:
        status = self.stat(digest)
        return status.size if status is not None else None

    def open(self, digest: str, start: int = 0, end: Optional[int] = None) -> BinaryIO:
        return self.ref(digest, None).open(start, end)

    def delete(self, digest: str) -> bool:
        return _unlink(self.path_for(split_digest(digest)))

    def digests(self) -> Iterator[str]:
        """Every blob stored at the path its digest names (files outside .tmp named by a digest)."""
        for directory, subdirs, names in os.walk(self.root):
            subdirs[:] = [d for d in subdirs if os.path.join(directory, d) != self.tmp_dir]
            for name in names:
                if len(name) == 64 and all(c in "0123456789abcdef" for c in name) \
                        and os.path.normpath(self.path_for(name)) == os.path.normpath(os.path.join(directory, name)):
                    yield DIGEST_PREFIX + name

    def uploads(self) -> Iterator[str]:
        """The temporary files of uploads (their paths: the guard's names for them)."""
        for name in os.listdir(self.tmp_dir):
            yield os.path.join(self.tmp_dir, name)

    def upload_stat(self, upload: str) -> Optional[BlobStat]:
        return _stat(upload) if os.path.dirname(upload) == self.tmp_dir else None

    def delete_upload(self, upload: str) -> bool:
        return os.path.dirname(upload) == self.tmp_dir and _unlink(upload)

    def health(self, detail: bool = False) -> dict[str, Any]:
        ok = os.access(self.root, os.W_OK)
        return dict({"kind": "filesystem", "ok": ok}, **({"root": self.root} if detail else {}))


def bounded_chunks(stream: Readable, size: int, max_bytes: Optional[int], limit_name: str) -> Iterator[bytes]:
    """What ``stream`` holds, in chunks, onto ``size`` bytes already there: 413 BLOB_TOO_LARGE as soon as the
    total passes ``max_bytes`` (named ``limit_name`` in the message)."""
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise too_large("blob exceeds %s (%d)" % (limit_name, max_bytes), "BLOB_TOO_LARGE")
        yield chunk


def _own(staged: Staged) -> StagedBlob:
    if not isinstance(staged, StagedBlob):
        raise TypeError("a filesystem blob store promotes only what a filesystem blob store staged")
    return staged


def _stat(path: str) -> Optional[BlobStat]:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return BlobStat(status.st_size, status.st_mtime)


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class _DirectorySync:
    """A directory's pending sync; equal for one directory, so commits written together sync it once."""
    directory: str

    def __call__(self) -> None:
        _fsync_dir(self.directory)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        with FSYNC_SECONDS.time():
            os.fsync(fd)
    finally:
        os.close(fd)
