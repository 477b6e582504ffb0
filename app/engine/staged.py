"""Bytes a parse step staged in a blob store while it read the request body, bound for later steps.

parse.multipart stages a form's file part, parse.json (with `stream`) the declared string members of a JSON
body: each is hashed as it is written into the store's staging area, and bound as a ``StagedUpload``. blob.put
``from`` one takes the staged bytes over without copying them (``take``); bytes nobody took are removed when the
request ends (``discard``, which the parse step registers as a cleanup).
"""
from __future__ import annotations

from typing import BinaryIO, Callable, Optional

from app.stores.digests import base64_digests
from app.stores.interfaces import BlobHandle, BlobStat, BlobStore, StagedBlob


class StagedUpload(BlobHandle):
    """Staged bytes: a template reads .digest, .size, .store, .digests.<alg> (hex) and .digests_base64.<alg>;
    subclasses add what the client said of them."""

    template_attrs: tuple[str, ...] = ("digest", "size", "store", "digests", "digests_base64")
    __slots__ = ("staged", "taken")

    def __init__(self, staged: StagedBlob) -> None:
        super().__init__(staged.store, staged.digest, staged.size)
        self.staged = staged
        self.taken = False

    @property
    def digests(self) -> dict[str, str]:
        return self.staged.digests

    @property
    def digests_base64(self) -> dict[str, str]:
        return base64_digests(self.staged.digests)

    def stat(self) -> BlobStat:
        return self.staged.stat()

    def open(self, start: int = 0, end: Optional[int] = None,
             on_close: Optional[Callable[[], None]] = None) -> BinaryIO:
        return self.staged.open(start, end, on_close)

    def take(self, store: BlobStore) -> Optional[StagedBlob]:
        """The staged bytes, for ``store`` to promote, if they are staged in it and nobody took them yet."""
        if self.taken or self.staged.store != store.name:
            return None
        self.taken = True
        return self.staged

    def discard(self, store: BlobStore) -> None:
        """What runs when the request ends: bytes nobody took are removed."""
        if not self.taken:
            self.taken = True
            store.discard(self.staged)
