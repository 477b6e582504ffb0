"""One member of a stored archive, read without unpacking the rest (blob.extract).

Zip archives are read with ``zipfile`` from the blob file itself (it seeks to the central directory, then to the
member); tar archives, compressed or not, with ``tarfile`` over a decompressing reader. An archive is untrusted
input, so every cost is bounded before it is paid:

- zip: the central directory ``zipfile`` reads whole, and the entries it makes of it, are counted first (at most
  ``max_entries`` entries in at most ``max_entries`` KiB); the member's declared size, and then the bytes it
  actually inflates to, are at most ``max_member_bytes`` (a zip bomb stops there);
- tar: at most ``max_entries`` headers are read, at most ``max_scan_bytes`` decompressed bytes are passed over to
  reach the member, and no single header read is larger than MAX_HEADER_READ (a pax header claiming gigabytes
  is refused, not allocated).
"""
from __future__ import annotations

import bz2
import fnmatch
import gzip
import io
import lzma
import struct
import tarfile
import zipfile
import zlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Callable, Iterator, Optional, cast

from app.errors import DepotError
from app.stores.interfaces import BlobHandle

FORMATS = ("auto", "zip", "tar", "tar.gz")
MAX_HEADER_READ = 1024 * 1024  # the largest single read tarfile may make for a header (pax, GNU long names)
READ_CHUNK = 256 * 1024
DIRECTORY_BYTES_PER_ENTRY = 1024  # a zip's central directory may hold max_entries KiB
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory: signature, disks, entries, size, offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ENTRY = struct.Struct("<4s6H3L5H2L")  # a central directory entry's fixed part: lengths at fields 10, 11, 12
# what zipfile, tarfile and the decompressors raise on a corrupt, truncated or unsupported archive
ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, NotImplementedError,
                  RuntimeError, ValueError, struct.error, OSError)


def random_access(blob: BlobHandle, buffer_size: int) -> BinaryIO:
    """``blob``'s bytes, seekable and buffered, however its store reads: a store's own reader when it seeks (a
    file), else one that opens the blob again at each position sought (an object read by ranged GETs: the store
    keeps its readers unseekable, so a server never reads them in the thread that serves every connection)."""
    reader = blob.open()
    if not reader.seekable():
        reader.close()
        reader = cast(BinaryIO, _Reopening(blob))
    return cast(BinaryIO, io.BufferedReader(cast(Any, reader), buffer_size))


class _Reopening(io.RawIOBase):
    """A blob read from any position: a seek drops the open reader, the next read opens the blob there."""

    def __init__(self, blob: BlobHandle) -> None:
        super().__init__()
        self._blob = blob
        self._size = blob.size if blob.size is not None else blob.stat().size
        self._position = 0
        self._reader: Optional[BinaryIO] = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        target = max(base + offset, 0)
        if target != self._position:
            self._drop()
            self._position = target
        return self._position

    def readinto(self, buffer: Any) -> int:
        if self._position >= self._size:
            return 0
        if self._reader is None:
            self._reader = self._blob.open(self._position)
        data = self._reader.read(len(buffer))
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        self._drop()
        super().close()

    def _drop(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()


def invalid_archive(message: str) -> DepotError:
    return DepotError("INVALID_ARCHIVE", 400, message)


@dataclass(frozen=True)
class Bounds:
    max_member_bytes: int
    max_entries: int
    max_scan_bytes: int


def member_matcher(pattern: str) -> Callable[[str], bool]:
    """A test of member names: ``pattern`` is matched segment by segment ('*' and '?' never cross a '/'), so
    "*.dist-info/METADATA" finds a wheel's top-level metadata and nothing vendored deeper. ValueError for a
    pattern no member could match (empty, absolute, or with empty, '.' or '..' segments)."""
    segments = pattern.split("/") if isinstance(pattern, str) else [""]
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError("member must be a relative path pattern such as *.dist-info/METADATA (no empty, '.' or "
                         "'..' segments, no leading '/'), not %r" % (pattern,))

    def matches(name: str) -> bool:
        parts = name.lstrip("/").removeprefix("./").split("/")
        return len(parts) == len(segments) and all(map(fnmatch.fnmatchcase, parts, segments))
    return matches


@dataclass(frozen=True)
class Member:
    name: str
    stream: "BoundedReader"


class BoundedReader:
    """A member's bytes: more than ``limit`` is 413 ARCHIVE_MEMBER_TOO_LARGE, a corrupt stream (a bad CRC, bad
    compressed data) 400 INVALID_ARCHIVE."""

    def __init__(self, stream: IO[bytes], name: str, limit: int) -> None:
        self._stream, self._name, self._limit, self._seen = stream, name, limit, 0

    def read(self, size: int = -1) -> bytes:
        wanted = READ_CHUNK if size is None or size < 0 else min(size, READ_CHUNK)
        try:
            chunk = self._stream.read(wanted)
        except ARCHIVE_ERRORS as exc:
            raise invalid_archive("archive member %s is corrupt (%s)" % (self._name, exc)) from None
        self._seen += len(chunk)
        if self._seen > self._limit:
            raise too_large_member(self._name, self._limit)
        return chunk


def too_large_member(name: str, limit: int) -> DepotError:
    return DepotError("ARCHIVE_MEMBER_TOO_LARGE", 413, "archive member %s is larger than max_member_bytes (%d)"
                      % (name, limit))


@contextmanager
def find_member(archive: BinaryIO, kind: str, matches: Callable[[str], bool],
                bounds: Bounds) -> Iterator[Optional[Member]]:
    """The member of ``archive`` (a seekable file) whose name ``matches``, open for reading, or None. ``kind``:
    one of FORMATS ("auto": a zip by its signature, otherwise a tar, compressed or not)."""
    with ExitStack() as stack:
        try:
            if kind == "auto":
                kind = "zip" if archive.read(4) in (b"PK\x03\x04", b"PK\x05\x06") else "tar"
                archive.seek(0)
            finder = _zip_member if kind == "zip" else _tar_member
            member = stack.enter_context(finder(archive, kind, matches, bounds))
        except ARCHIVE_ERRORS as exc:
            raise invalid_archive("not a readable %s archive (%s: %s)" % (kind, type(exc).__name__, exc)) from None
        yield member  # what goes wrong reading it is the reader's to say (BoundedReader), or the caller's


# --- zip ----------------------------------------------------------------------------------------------------

@contextmanager
def _zip_member(archive: BinaryIO, kind: str, matches: Callable[[str], bool],
                bounds: Bounds) -> Iterator[Optional[Member]]:
    _check_directory(archive, bounds.max_entries)
    with zipfile.ZipFile(archive) as zf:
        found = [info for info in zf.infolist() if not info.is_dir() and matches(info.filename)]
        if not found:
            yield None
            return
        if len(found) > 1:
            raise DepotError("ARCHIVE_MEMBER_AMBIGUOUS", 400, "%d archive members match: %s"
                             % (len(found), ", ".join(info.filename for info in found[:5])))
        info = found[0]
        if info.file_size > bounds.max_member_bytes:
            raise too_large_member(info.filename, bounds.max_member_bytes)
        with zf.open(info) as stream:
            yield Member(info.filename, BoundedReader(stream, info.filename, bounds.max_member_bytes))


def _check_directory(archive: BinaryIO, max_entries: int) -> None:
    """The central directory zipfile is about to read (found as zipfile finds it: right before the end
    record) holds at most ``max_entries`` entries in at most max_entries KiB: counted here, never trusted
    from the end record, since zipfile reads entries for as long as the directory's size says."""
    size = archive.seek(0, io.SEEK_END)
    tail_start = max(0, size - _EOCD.size - 0xFFFF)
    archive.seek(tail_start)
    tail = archive.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise invalid_archive("not a zip archive (no end of central directory record)")
    _, _, _, _, entries, directory_size, directory_offset, _ = _EOCD.unpack_from(tail, at)
    end = tail_start + at
    if entries == 0xFFFF or directory_size == 0xFFFFFFFF or directory_offset == 0xFFFFFFFF:
        archive.seek(end - _ZIP64_LOCATOR.size)
        locator = _ZIP64_LOCATOR.unpack(archive.read(_ZIP64_LOCATOR.size))
        archive.seek(end - _ZIP64_LOCATOR.size - _ZIP64_EOCD.size)
        record = _ZIP64_EOCD.unpack(archive.read(_ZIP64_EOCD.size))
        if locator[0] != b"PK\x06\x07" or record[0] != b"PK\x06\x06":
            raise invalid_archive("malformed zip64 end of central directory")
        directory_size = record[8]
        end -= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size
    if directory_size > max_entries * DIRECTORY_BYTES_PER_ENTRY or directory_size > end:
        raise invalid_archive("the zip's central directory (%d bytes) is larger than max_entries allows"
                              % directory_size)
    archive.seek(end - directory_size)
    _count_entries(archive.read(directory_size), max_entries)
    archive.seek(0)


def _count_entries(directory: bytes, max_entries: int) -> None:
    position, count = 0, 0
    while position + _ENTRY.size <= len(directory) and directory.startswith(b"PK\x01\x02", position):
        fields = _ENTRY.unpack_from(directory, position)
        position += _ENTRY.size + fields[10] + fields[11] + fields[12]
        count += 1
        if count > max_entries:
            raise invalid_archive("the zip has more than max_entries (%d) entries" % max_entries)


# --- tar ----------------------------------------------------------------------------------------------------

_DECOMPRESSORS: dict[bytes, Callable[[BinaryIO], Any]] = {
    b"\x1f\x8b": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
    b"BZ": lambda f: bz2.BZ2File(f),
    b"\xfd7": lambda f: lzma.LZMAFile(f)}


@contextmanager
def _tar_member(archive: BinaryIO, kind: str, matches: Callable[[str], bool],
                bounds: Bounds) -> Iterator[Optional[Member]]:
    magic = archive.read(2)
    archive.seek(0)
    opener = _DECOMPRESSORS.get(magic)
    if kind == "tar.gz" and magic != b"\x1f\x8b":
        raise invalid_archive("not a gzip-compressed tar archive")
    with (opener(archive) if opener is not None else archive) as plain:
        scanned = _Scanned(plain, bounds.max_scan_bytes)
        with tarfile.open(fileobj=scanned, mode="r:") as tar:
            for count, info in enumerate(_iter_members(tar, bounds), 1):
                if count > bounds.max_entries:
                    raise invalid_archive("the tar has more than max_entries (%d) members before the one "
                                          "sought" % bounds.max_entries)
                if info.isreg() and matches(info.name):
                    if info.size > bounds.max_member_bytes:
                        raise too_large_member(info.name, bounds.max_member_bytes)
                    stream = tar.extractfile(info)
                    assert stream is not None  # a regular file always has one
                    yield Member(info.name, BoundedReader(stream, info.name, bounds.max_member_bytes))
                    return
            yield None


def _iter_members(tar: tarfile.TarFile, bounds: Bounds) -> Iterator[tarfile.TarInfo]:
    """The members in order, each only if it ends within max_scan_bytes (passing over it costs as much)."""
    info = tar.next()  # the first member, which opening the archive has read
    while info is not None:
        if info.offset_data + info.size > bounds.max_scan_bytes:
            raise invalid_archive("the member sought is not within the first max_scan_bytes (%d) of the tar"
                                  % bounds.max_scan_bytes)
        yield info
        info = tar.next()


class _Scanned(io.RawIOBase):
    """The decompressed tar as tarfile reads it: at most ``limit`` bytes in, no single read over
    MAX_HEADER_READ."""

    def __init__(self, stream: Any, limit: int) -> None:
        super().__init__()
        self._stream, self._limit = stream, limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        position: int = self._stream.tell()
        return position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.tell() + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target > self._limit:
            raise invalid_archive("the member sought is not within the first max_scan_bytes (%d) of the tar"
                                  % self._limit)
        position: int = self._stream.seek(target)
        return position

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > MAX_HEADER_READ:
            raise invalid_archive("a tar header asks for more than %d bytes" % MAX_HEADER_READ)
        if self.tell() + size > self._limit + MAX_HEADER_READ:
            raise invalid_archive("the member sought is not within the first max_scan_bytes (%d) of the tar"
                                  % self._limit)
        data: bytes = self._stream.read(size)
        return data
