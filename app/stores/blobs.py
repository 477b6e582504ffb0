"""Content-addressed blob files.

Bytes are hashed while they stream into a temporary file inside the store, fsynced, and only then renamed to
the path their digest names, so a crash never leaves a partial file under a digest. Inside a transaction the
rename waits for the commit; an abort deletes the temporary file.
"""
import base64
import binascii
import hashlib
import os
import re
import threading
import uuid
from dataclasses import dataclass, field

from app.errors import DepotError, bad_request, too_large
from app.expr import parse_template
from app.stores.guard import BlobGuard

CHUNK = 1024 * 1024
DIGEST_PREFIX = "sha256:"
# the Content-Digest algorithms (RFC 9530 names) Depot computes: their hashlib names and digest sizes
DIGEST_ALGORITHMS = {"sha-256": ("sha256", 32), "sha-512": ("sha512", 64)}
_DIGEST_MEMBER = re.compile(r"^([a-z][a-z0-9_.*-]*)=:([A-Za-z0-9+/=]*):(?:;.*)?$")


def split_digest(digest):
    """'sha256:<hex>' or '<hex>' -> hex, or raise 400 INVALID_DIGEST."""
    if not isinstance(digest, str):
        raise bad_request("INVALID_DIGEST", "digest must be a string", "digest")
    hexpart = digest[len(DIGEST_PREFIX):] if digest.startswith(DIGEST_PREFIX) else digest
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise bad_request("INVALID_DIGEST", "digest must be sha256:<64 lowercase hex>", "digest")
    return hexpart


class BlobRef:
    """A stored (or staged) blob: what blob.get and blob.put hand to later steps."""

    template_attrs = ("digest", "size", "store")
    __slots__ = ("store", "digest", "size", "path")

    def __init__(self, store, digest, size, path):
        self.store, self.digest, self.size, self.path = store, digest, size, path

    def to_json(self):
        return {"$blob": {"store": self.store, "digest": self.digest, "size": self.size}}


class StagedBlob(BlobRef):
    __slots__ = ("final_path", "verified", "digests")

    def __init__(self, store, digest, size, path, final_path, digests=None):
        super().__init__(store, digest, size, path)
        self.final_path = final_path
        self.verified = False
        self.digests = digests or {}  # RFC 9530 algorithm name -> hex, as computed while staging


class _FieldView:
    """The minimal context a path template renders against."""

    __slots__ = ("fields",)
    vars = {}
    principal = None
    event = None

    def __init__(self, fields):
        self.fields = fields


class FileBlobStore:
    """Blob files under ``root``, named by their digest through ``path_template``; uploads are written to
    ``root/.tmp`` first. ``guard`` (shared by every store of a data dir) says what garbage collection must keep."""

    def __init__(self, name, root, path_template, min_bytes=0, max_bytes=None, guard=None):
        self.name = name
        self.root = root
        self.path_template = parse_template(path_template)
        self.min_bytes = min_bytes or 0
        self.max_bytes = max_bytes
        self.guard = guard if guard is not None else BlobGuard(threading.Lock())
        self.tmp_dir = os.path.join(root, ".tmp")
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        self._dir_lock = threading.Lock()

    def path_for(self, hexdigest):
        relative = self.path_template.render(_FieldView({"digest": hexdigest, "algo": "sha256"}))
        return os.path.join(self.root, relative)

    def stage(self, stream, also=()):
        """Stream ``stream`` (anything with read(n)) into a temporary file while hashing it with sha-256, and
        with the further DIGEST_ALGORITHMS named in ``also``. The file is live (garbage collection leaves it
        alone) until it is promoted or discarded."""
        hasher = hashlib.sha256()
        others = {name: hashlib.new(DIGEST_ALGORITHMS[name][0]) for name in also if name != "sha-256"}
        size = 0
        tmp_path = os.path.join(self.tmp_dir, "upload-" + uuid.uuid4().hex)
        self.guard.temp_started(tmp_path)  # before the file exists: no collection can see it unclaimed
        try:
            with open(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                while True:
                    chunk = stream.read(CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if self.max_bytes is not None and size > self.max_bytes:
                        raise too_large("blob exceeds max_blob_bytes (%d)" % self.max_bytes, "BLOB_TOO_LARGE")
                    hasher.update(chunk)
                    for other in others.values():
                        other.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size < self.min_bytes:
                raise bad_request("BLOB_TOO_SMALL", "blob is smaller than min_blob_bytes (%d)" % self.min_bytes)
        except BaseException:
            _unlink(tmp_path)
            self.guard.temp_ended(tmp_path)
            raise
        hexdigest = hasher.hexdigest()
        digests = dict({name: other.hexdigest() for name, other in others.items()}, **{"sha-256": hexdigest})
        return StagedBlob(self.name, DIGEST_PREFIX + hexdigest, size, tmp_path, self.path_for(hexdigest), digests)

    def promote(self, staged):
        """Move a staged blob under its digest; call with the commit lock held (a transaction's commit holds
        it; ``commit`` takes it). Content addressing makes an existing file the same bytes: it is touched
        instead, so garbage collection's grace period starts again for it."""
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
        if renamed:
            _fsync_dir(directory)  # durable before the commit records a reference to it
        else:
            _unlink(staged.path)
        self.guard.temp_ended(staged.path)
        staged.path = staged.final_path

    def commit(self, staged):
        """Promote a staged blob outside a transaction."""
        with self.guard.commit_lock:
            self.promote(staged)

    def discard(self, staged):
        if staged.path != staged.final_path:
            _unlink(staged.path)
            self.guard.temp_ended(staged.path)

    def hold(self, digest):
        """Keep ``digest``'s bytes from garbage collection until ``release``: a request holds what it stored or
        looked up, since a later step may write a reference to it."""
        self.guard.hold(split_digest(digest))

    def release(self, digest):
        self.guard.release(split_digest(digest))

    def lease(self, digest, seconds):
        """Keep ``digest``'s bytes from garbage collection for ``seconds`` (or until ``end_lease``)."""
        self.guard.lease(split_digest(digest), seconds)

    def end_lease(self, digest):
        self.guard.end_lease(split_digest(digest))

    def locate(self, digest):
        path = self.path_for(split_digest(digest))
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return None
        return BlobRef(self.name, digest if digest.startswith(DIGEST_PREFIX) else DIGEST_PREFIX + digest,
                       size, path)

    def _files(self):
        """(hex digest, path) of every stored blob: files named by their digest, outside .tmp."""
        for directory, subdirs, names in os.walk(self.root):
            subdirs[:] = [d for d in subdirs if os.path.join(directory, d) != self.tmp_dir]
            for name in names:
                if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
                    yield name, os.path.join(directory, name)

    def _temp_files(self):
        return [os.path.join(self.tmp_dir, name) for name in os.listdir(self.tmp_dir)]

    def sweep(self, marked, cutoff, dry_run=False):
        """Remove every blob whose hex digest is not in ``marked``, nor in use, nor touched at or after
        ``cutoff`` (a time.time()), and every temporary file no upload is writing that is that old.
        ``dry_run`` decides the same and removes nothing. -> SweepReport"""
        report = SweepReport()
        for hexdigest, path in self._files():
            if hexdigest in marked:
                report.kept += 1
                continue
            outcome, size = self._remove_unless_needed(path, cutoff, dry_run, self.guard.blob_in_use, hexdigest)
            report.count_orphan(outcome, size, DIGEST_PREFIX + hexdigest)
        for path in self._temp_files():
            outcome, size = self._remove_unless_needed(path, cutoff, dry_run, self.guard.temp_in_use, path)
            report.count_temp(outcome, size)
        return report

    def _remove_unless_needed(self, path, cutoff, dry_run, in_use, what):
        """-> ("in_use" | "recent" | "removed" | "gone", size in bytes)."""
        with self.guard.lock:
            if in_use(what):
                return "in_use", 0
            try:
                status = os.stat(path)
                if status.st_mtime >= cutoff:
                    return "recent", status.st_size
                if not dry_run:
                    os.unlink(path)
            except FileNotFoundError:
                return "gone", 0
        return "removed", status.st_size

    def remove_leftover_temps(self):
        """Remove temporary files no upload is writing (what a crash left); -> (files, bytes) removed."""
        report = SweepReport()
        for path in self._temp_files():
            report.count_temp(*self._remove_unless_needed(path, float("inf"), False, self.guard.temp_in_use, path))
        return report.temp_removed, report.temp_removed_bytes

    def health(self, detail=False):
        ok = os.access(self.root, os.W_OK)
        return dict({"kind": "filesystem", "ok": ok}, **({"root": self.root} if detail else {}))


@dataclass
class SweepReport:
    """What a sweep found and did. Orphans are blobs no live document names."""
    kept: int = 0
    removed: list = field(default_factory=list)
    removed_bytes: int = 0
    recent: int = 0
    recent_bytes: int = 0
    in_use: int = 0
    temp_removed: int = 0
    temp_removed_bytes: int = 0
    temp_kept: int = 0

    def count_orphan(self, outcome, size, digest):
        if outcome == "removed":
            self.removed.append(digest)
            self.removed_bytes += size
        elif outcome == "recent":
            self.recent += 1
            self.recent_bytes += size
        elif outcome == "in_use":
            self.in_use += 1

    def count_temp(self, outcome, size):
        if outcome == "removed":
            self.temp_removed += 1
            self.temp_removed_bytes += size
        elif outcome != "gone":
            self.temp_kept += 1


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def digest_mismatch(expected, actual):
    return DepotError("DIGEST_MISMATCH", 400, "declared digest %s does not match the uploaded bytes (%s)"
                      % (expected, actual), "digest")


@dataclass(frozen=True)
class DeclaredDigest:
    """A digest a client declares for its upload: where it said so (the Content-Digest header or the digest
    query parameter), the algorithm (RFC 9530 name) and the digest in hex."""
    source: str
    algorithm: str
    hexdigest: str

    def describe(self):
        if self.source == "digest":
            return "?digest=sha256:%s" % self.hexdigest
        return "Content-Digest %s %s" % (self.algorithm, self.hexdigest)


def declared_digests(headers, query):
    """Every digest a client declares for its upload: each Content-Digest (RFC 9530) member whose algorithm
    Depot knows, then ?digest=sha256:<hex>. A Content-Digest naming only algorithms Depot does not know is 400
    UNSUPPORTED_DIGEST_ALGORITHM; a malformed one, 400 INVALID_DIGEST. -> a tuple of DeclaredDigest."""
    declared = []
    header = headers.get("Content-Digest")
    if header:
        declared.extend(_content_digests(header))
    value = query.get("digest")
    if value:
        declared.append(DeclaredDigest("digest", "sha-256", split_digest(value)))
    return tuple(declared)


def _content_digests(header):
    known, unknown = [], []
    for member in filter(None, (part.strip() for part in header.split(","))):
        match = _DIGEST_MEMBER.match(member)
        if match is None:
            raise bad_request("INVALID_DIGEST", "Content-Digest members are <algorithm>=:<base64>:, not %r"
                              % member[:80], "Content-Digest")
        algorithm, encoded = match.groups()
        if algorithm not in DIGEST_ALGORITHMS:
            unknown.append(algorithm)
            continue
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != DIGEST_ALGORITHMS[algorithm][1]:
            raise bad_request("INVALID_DIGEST", "Content-Digest %s value is not %d bytes of base64"
                              % (algorithm, DIGEST_ALGORITHMS[algorithm][1]), "Content-Digest")
        known.append(DeclaredDigest("Content-Digest", algorithm, raw.hex()))
    if not known and unknown:
        raise bad_request("UNSUPPORTED_DIGEST_ALGORITHM", "Content-Digest names only algorithms Depot does not "
                          "compute (%s); it computes %s" % (", ".join(unknown), ", ".join(DIGEST_ALGORITHMS)),
                          "Content-Digest")
    return known
