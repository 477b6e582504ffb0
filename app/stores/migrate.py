"""`python -m app migrate-store`: copy a repository's state and blobs from where they are to other stores.

The state is copied key by key between two state backends of this package (the same layout on every engine:
app/stores/state.py), in batches, into a target that holds no state yet; the response cache is not copied (a miss
is always safe). What is read from the source is fingerprinted as it is copied (a digest over the keys and
values, in order); the target is then read again and must give the same fingerprint.
Blobs are streamed from each source blob store into its target one, hashed as they are written: a blob whose
bytes do not match its digest stops the copy and is not stored; a blob the target holds already is left as it is.
"""
import hashlib
from dataclasses import dataclass
from typing import Any, Iterator

from app.stores.interfaces import BlobStore, StateBackend
from app.stores.state import CACHE_SPACE, StateStore

BATCH_KEYS = 1000


class MigrationError(Exception):
    """What stops a copy: a target already holding state, bytes not matching their digest, a copy that differs."""


@dataclass
class BlobsCopied:
    copied: int = 0
    present: int = 0  # already in the target
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"copied": self.copied, "already_present": self.present, "bytes_copied": self.bytes}


def _engine(state: StateBackend) -> Any:
    if not isinstance(state, StateStore):
        raise MigrationError("migrate-store copies between the state backends of app/stores/state.py")
    return state.engine


def _state_items(engine: Any) -> Iterator[tuple[bytes, bytes]]:
    return ((key, value) for key, value in engine.scan(b"") if not key.startswith(CACHE_SPACE))


def copy_state(source: StateBackend, target: StateBackend) -> int:
    """Copy every key of ``source`` (but the cache's) into ``target``, which must hold none; -> keys copied."""
    source_engine, target_engine = _engine(source), _engine(target)
    if next(_state_items(target_engine), None) is not None:
        raise MigrationError("the target state already holds a repository: migrate-store copies into an empty one")
    batch: dict[bytes, bytes | None] = {}
    copied = _Fingerprint()  # of what was read from the source, taken while copying it
    for key, value in _state_items(source_engine):
        copied.add(key, value)
        batch[key] = value
        if len(batch) >= BATCH_KEYS:
            _write(target_engine, batch)
            batch = {}
    _write(target_engine, batch)
    written = _Fingerprint()
    for key, value in _state_items(target_engine):
        written.add(key, value)
    if written.value() != copied.value():
        raise MigrationError("the copied state differs from its source (was the source written to meanwhile?)")
    return copied.count


def _write(engine: Any, batch: dict[bytes, bytes | None]) -> None:
    if batch:
        engine.write_in_order([batch])


class _Fingerprint:
    """A digest over (key, value) pairs in order, and their count."""

    def __init__(self) -> None:
        self.digest, self.count = hashlib.sha256(), 0

    def add(self, key: bytes, value: bytes) -> None:
        self.digest.update(b"%d:%s%d:%s" % (len(key), key, len(value), value))
        self.count += 1

    def value(self) -> tuple[int, str]:
        return self.count, self.digest.hexdigest()


def copy_blobs(source: BlobStore, target: BlobStore) -> BlobsCopied:
    """Stream every blob of ``source`` into ``target``, each verified against its digest as it is written."""
    result = BlobsCopied()
    for digest in source.digests():
        if target.exists(digest):
            result.present += 1
            continue
        with source.open(digest) as reader:
            staged = target.stage(reader)
        if staged.digest != digest:
            target.discard(staged)
            raise MigrationError("blob %s of store %s reads as %s: its bytes do not match their name; nothing of "
                                 "it was copied" % (digest, source.name, staged.digest))
        target.commit(staged)
        result.copied += 1
        result.bytes += staged.size
    return result
