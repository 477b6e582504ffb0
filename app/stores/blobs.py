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
import tempfile
import threading

from app.errors import DepotError, bad_request, too_large
from app.expr import parse_template

CHUNK = 1024 * 1024
DIGEST_PREFIX = "sha256:"
_CONTENT_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/=]+):")


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
    __slots__ = ("final_path", "verified")

    def __init__(self, store, digest, size, path, final_path):
        super().__init__(store, digest, size, path)
        self.final_path = final_path
        self.verified = False


class _FieldView:
    """The minimal context a path template renders against."""

    __slots__ = ("fields",)
    vars = {}
    principal = None
    event = None

    def __init__(self, fields):
        self.fields = fields


class FileBlobStore:
    def __init__(self, name, root, path_template, min_bytes=0, max_bytes=None):
        self.name = name
        self.root = root
        self.path_template = parse_template(path_template)
        self.min_bytes = min_bytes or 0
        self.max_bytes = max_bytes
        self.tmp_dir = os.path.join(root, ".tmp")
        os.makedirs(self.tmp_dir, exist_ok=True)
        self._dir_lock = threading.Lock()

    def path_for(self, hexdigest):
        relative = self.path_template.render(_FieldView({"digest": hexdigest, "algo": "sha256"}))
        return os.path.join(self.root, relative)

    def stage(self, stream, budget=None):
        """Stream ``stream`` (anything with read(n)) into a temp file while hashing it."""
        hasher = hashlib.sha256()
        size = 0
        fd, tmp_path = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = stream.read(CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if self.max_bytes is not None and size > self.max_bytes:
                        raise too_large("blob exceeds max_blob_bytes (%d)" % self.max_bytes, "BLOB_TOO_LARGE")
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size < self.min_bytes:
                raise bad_request("BLOB_TOO_SMALL", "blob is smaller than min_blob_bytes (%d)" % self.min_bytes)
        except BaseException:
            _unlink(tmp_path)
            raise
        hexdigest = hasher.hexdigest()
        return StagedBlob(self.name, DIGEST_PREFIX + hexdigest, size, tmp_path, self.path_for(hexdigest))

    def promote(self, staged):
        """Rename a staged blob into place. Content addressing makes an existing file the same bytes; it is
        touched instead, so garbage collection's grace period starts again for it."""
        try:
            os.utime(staged.final_path)
            _unlink(staged.path)
        except FileNotFoundError:
            directory = os.path.dirname(staged.final_path)
            with self._dir_lock:
                os.makedirs(directory, exist_ok=True)
            os.replace(staged.path, staged.final_path)
            _fsync_dir(directory)
        staged.path = staged.final_path

    def discard(self, staged):
        if staged.path != staged.final_path:
            _unlink(staged.path)

    def locate(self, digest):
        path = self.path_for(split_digest(digest))
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return None
        return BlobRef(self.name, digest if digest.startswith(DIGEST_PREFIX) else DIGEST_PREFIX + digest,
                       size, path)

    def files(self):
        """(hex digest, path) of every stored blob: files named by their digest, outside .tmp."""
        for directory, subdirs, names in os.walk(self.root):
            subdirs[:] = [d for d in subdirs if os.path.join(directory, d) != self.tmp_dir]
            for name in names:
                if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
                    yield name, os.path.join(directory, name)

    def temp_files(self):
        return [os.path.join(self.tmp_dir, name) for name in os.listdir(self.tmp_dir)]

    def health(self):
        ok = os.access(self.root, os.W_OK)
        return {"kind": "filesystem", "ok": ok, "root": self.root}


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


def declared_digest(headers, query):
    """The digest a client declares for its upload: Content-Digest (RFC 9530) or ?digest=sha256:<hex>."""
    header = headers.get("Content-Digest")
    if header:
        match = _CONTENT_DIGEST.search(header)
        if match is None:
            raise bad_request("INVALID_DIGEST", "Content-Digest must carry sha-256=:<base64>:", "Content-Digest")
        try:
            raw = base64.b64decode(match.group(1), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise bad_request("INVALID_DIGEST", "Content-Digest sha-256 value is not 32 bytes", "Content-Digest")
        return DIGEST_PREFIX + raw.hex()
    value = query.get("digest")
    if value:
        return DIGEST_PREFIX + split_digest(value)
    return None
