"""What garbage collection must not remove at this moment: the protocol between collections and writers.

A collection marks the digests live documents name, from a snapshot taken once it has begun, and sweeps the
rest. Bytes that no live document names yet, but that a write in flight needs, are protected here instead:

- an upload's temporary file is live from before it is created until it is promoted or discarded;
- a request holds every blob it stored or looked up until it ends (a later step may write a reference to it);
- a replica leases the bytes it received until the event naming them has been applied (or the lease ends);
- while a collection runs, every blob a commit promoted or a request released is remembered as seen: the
  collection's snapshot cannot show the documents that reference it, so it is kept until the next collection.

Ordering: a collection begins under the commit lock, so every commit either precedes its snapshot or notes its
blobs as seen. Every decision to delete is taken, and carried out, under ``self.lock``, the same lock that
holds, leases and promotions take, so a blob is either protected before the check or already gone before the
writer looks for it.
"""
import threading
import time
from typing import Callable, Optional

from app.stores.digests import split_digest
from app.stores.interfaces import BlobStat, CommitLock


class BlobGuard:
    def __init__(self, commit_lock: CommitLock) -> None:
        self.commit_lock = commit_lock
        self.lock = threading.Lock()
        self._holds: dict[str, int] = {}  # hex digest -> number of requests holding it
        self._leases: dict[str, float] = {}  # hex digest -> time.monotonic() deadline
        self._live_temps: set[str] = set()  # paths of temporary files uploads are writing
        self._seen: Optional[set[str]] = None  # hex digests used since the running collection began (None: none runs)
        self._collecting = threading.Lock()

    # --- writers ---------------------------------------------------------------------------------------------

    def hold(self, hexdigest: str) -> None:
        with self.lock:
            self._holds[hexdigest] = self._holds.get(hexdigest, 0) + 1

    def release(self, hexdigest: str) -> None:
        with self.lock:
            remaining = self._holds.get(hexdigest, 0) - 1
            if remaining > 0:
                self._holds[hexdigest] = remaining
            else:
                self._holds.pop(hexdigest, None)
            self._note(hexdigest)

    def lease(self, hexdigest: str, seconds: float) -> None:
        now = time.monotonic()
        with self.lock:
            if len(self._leases) >= 1024:  # forget ended leases now and then, so the table stays small
                self._leases = {d: t for d, t in self._leases.items() if t > now}
            self._leases[hexdigest] = max(self._leases.get(hexdigest, 0), now + seconds)

    def end_lease(self, hexdigest: str) -> None:
        with self.lock:
            if self._leases.pop(hexdigest, None) is not None:
                self._note(hexdigest)

    def promoted(self, hexdigest: str) -> None:
        """Call with ``self.lock`` held, right after the bytes were put (or touched) under their digest."""
        self._note(hexdigest)

    def temp_started(self, path: str) -> None:
        with self.lock:
            self._live_temps.add(path)

    def temp_ended(self, path: str) -> None:
        with self.lock:
            self._live_temps.discard(path)

    def _note(self, hexdigest: str) -> None:
        if self._seen is not None:
            self._seen.add(hexdigest)

    # --- the collector ---------------------------------------------------------------------------------------

    def begin(self) -> bool:
        """Start a collection; False when one is already running. Take the mark's snapshot after this."""
        if not self._collecting.acquire(blocking=False):
            return False
        with self.commit_lock, self.lock:
            self._seen = set()
        return True

    def end(self) -> None:
        with self.lock:
            self._seen = None
        self._collecting.release()

    def blob_in_use(self, hexdigest: str) -> bool:
        """Call with ``self.lock`` held."""
        if hexdigest in self._holds or (self._seen is not None and hexdigest in self._seen):
            return True
        deadline = self._leases.get(hexdigest)
        return deadline is not None and deadline > time.monotonic()

    def temp_in_use(self, path: str) -> bool:
        """Call with ``self.lock`` held."""
        return path in self._live_temps

    def remove_unless_needed(self, in_use: Callable[[str], bool], what: str, stat: Callable[[], Optional[BlobStat]],
                             delete: Callable[[], bool], cutoff: float, dry_run: bool = False) -> tuple[str, int]:
        """Delete ``what`` (a hex digest or an upload's name) unless ``in_use(what)`` or it was modified at or
        after ``cutoff``: decided and done under ``self.lock``, the one place a collection deletes. ``stat``
        returns a BlobStat or None (gone), ``delete`` removes and says whether it did; ``dry_run`` decides the
        same and removes nothing. -> ("in_use" | "recent" | "removed" | "gone", size in bytes)."""
        with self.lock:
            if in_use(what):
                return "in_use", 0
            status = stat()
            if status is None:
                return "gone", 0
            if status.modified >= cutoff:
                return "recent", status.size
            if not dry_run and not delete():
                return "gone", 0
        return "removed", status.size


class GuardedDigests:
    """The BlobStore methods by which a request keeps a blob from garbage collection, by digest, through the
    store's ``guard`` (every blob store kind keeps them alike)."""

    guard: BlobGuard

    def hold(self, digest: str) -> None:
        """Keep ``digest``'s bytes from garbage collection until ``release``: a request holds what it stored or
        looked up, since a later step may write a reference to it."""
        self.guard.hold(split_digest(digest))

    def release(self, digest: str) -> None:
        self.guard.release(split_digest(digest))

    def lease(self, digest: str, seconds: float) -> None:
        """Keep ``digest``'s bytes from garbage collection for ``seconds`` (or until ``end_lease``)."""
        self.guard.lease(split_digest(digest), seconds)

    def end_lease(self, digest: str) -> None:
        self.guard.end_lease(split_digest(digest))
