"""Content-addressed objects in an S3-compatible bucket: the `s3` blob store kind.

Bytes are hashed while they stream to a temporary key under ``<prefix>.tmp/`` (one PUT when they fit in one
part, else a multipart upload in parts of PART_SIZE, so an upload holds one part in memory whatever its size:
the part's buffer is what is sent, never copied). Only once the digest is known (and checked by the pipeline)
does ``promote`` copy the object to the key its digest names (``<prefix>`` + the store's path_template, as the
filesystem kind lays out files) and delete the temporary one, so no key under a digest ever holds other bytes.
Keys never leave this module: callers hold BlobHandles and open them; a read is a ranged GET streamed as it is
sent. Credentials come from the environment (boto3's chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a
profile, an instance role), never the schema.

What garbage collection must keep is the data dir's BlobGuard, as for files: holds, leases and live uploads are
known to this process only, so one collector must run for a bucket prefix at a time (a shared guard is later
work). Leftover uploads are not removed when the store is opened (another process may be writing them); the
collection removes those older than its grace period.
"""
from __future__ import annotations

import re
import uuid
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Optional, cast
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from app.errors import bad_request
from app.stores.blobcache import DiskBlobCache
from app.stores.blobs import ReadStream, bounded_chunks, run_on_close
from app.stores.digests import DIGEST_PREFIX, Hashers, base64_digests, split_digest
from app.stores.guard import BlobGuard, GuardedDigests
from app.stores.interfaces import BlobHandle, BlobStat, Readable, process_lock
from app.stores.interfaces import StagedBlob as Staged

SPEC_KEYS = ("bucket", "prefix", "endpoint_url", "region")  # what the kind reads of its spec, besides limits
LIST_PAGE = 1000  # keys a listing asks for at a time (S3's largest page)
PART_SIZE = 8 * 1024 * 1024  # a multipart upload's part (S3 wants at least 5 MiB for all but the last)
TMP = ".tmp/"  # under the prefix: uploads being written or staged, never under a digest
_MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


class S3Handle(BlobHandle):
    """A blob of an S3 blob store (stored, or staged under a temporary key) as the object at ``key``."""

    __slots__ = ("owner", "key", "located")

    def __init__(self, owner: "S3BlobStore", digest: Optional[str], size: Optional[int], key: str,
                 located: bool = False) -> None:
        super().__init__(owner.name, digest, size)
        self.owner = owner
        self.key = key
        self.located = located  # found in the bucket just now (locate): its local copy may be served

    def stat(self) -> BlobStat:
        status = self.owner.head(self.key)
        if status is None:
            raise FileNotFoundError(self.key)
        return status

    def open(self, start: int = 0, end: Optional[int] = None,
             on_close: Optional[Callable[[], None]] = None) -> BinaryIO:
        """From the store's local disk cache when it holds the blob (and the bucket still does), else by a GET,
        kept in the cache as it is read when the whole blob is (app/stores/blobcache.py)."""
        cache = self.owner.cache
        if cache is None or not self.located or self.digest is None:
            return self.owner.read(self.key, start, end, on_close)
        hexdigest = self.digest[len(DIGEST_PREFIX):]
        cached = cache.open(hexdigest, start, end, on_close)
        if cached is not None:
            return cached
        reader = self.owner.read(self.key, start, end, on_close)
        whole = start == 0 and (end is None or end == self.size) and self.size is not None
        return cache.filling(hexdigest, cast(int, self.size), reader) if whole else reader


class S3StagedBlob(S3Handle):
    """Bytes an S3 blob store has taken in under a temporary key, every digest computed meanwhile; once promoted,
    a handle on the stored object (a template reads $blob.digests.sha1 and $blob.digests_base64.sha1)."""

    template_attrs = S3Handle.template_attrs + ("digests", "digests_base64")
    __slots__ = ("final_key", "verified", "digests")
    store: str
    digest: str
    size: int

    def __init__(self, owner: "S3BlobStore", digest: str, size: int, key: str, final_key: str,
                 digests: dict[str, str]) -> None:
        super().__init__(owner, digest, size, key)
        self.final_key = final_key
        self.verified = False
        self.digests = digests

    @property
    def digests_base64(self) -> dict[str, str]:
        return base64_digests(self.digests)


class ObjectReader(ReadStream):
    """An object's bytes as a GET streams them. Not seekable, so a server's file wrapper reads it in the request's
    thread (never in the thread that serves every connection); ``on_close`` runs once, when it is closed."""

    def __init__(self, body: Any, on_close: Optional[Callable[[], None]]) -> None:
        super().__init__()
        self._body = body  # a botocore StreamingBody, or None: nothing to read
        self.on_close = on_close

    def read(self, size: Optional[int] = -1) -> bytes:
        if self._body is None:
            return b""
        return cast(bytes, self._body.read(None if size is None or size < 0 else size))

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._body is not None:
                self._body.close()
            super().close()
        finally:
            run_on_close(self)


class S3BlobStore(GuardedDigests):
    """Blob objects in ``bucket`` under ``prefix``, at the key ``layout`` gives a hex sha-256 digest (the
    schema's ``addressing.path_template``, as for files); uploads go to ``<prefix>.tmp/`` first. ``client`` is a
    boto3 S3 client; ``guard`` (shared by every store of a data dir) says what garbage collection must keep."""

    def __init__(self, name: str, client: Any, bucket: str, prefix: str, layout: Callable[[str], str],
                 min_bytes: int = 0, max_bytes: Optional[int] = None, guard: Optional[BlobGuard] = None,
                 part_size: int = PART_SIZE, page_size: int = LIST_PAGE,
                 cache: Optional[DiskBlobCache] = None) -> None:
        self.name = name
        self.cache = cache  # whole blobs on local disk in front of the bucket (caching.blob_cache), or None
        self.client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.layout = layout
        self.min_bytes = min_bytes or 0
        self.max_bytes = max_bytes
        self.guard = guard if guard is not None else BlobGuard(process_lock())
        self.part_size = part_size
        self.page_size = page_size
        self.tmp_prefix = self.prefix + TMP

    def _key(self, hexdigest: str) -> str:
        return self.prefix + self.layout(hexdigest)

    # --- writing ------------------------------------------------------------------------------------------

    def stage(self, stream: Readable, also: Iterable[str] = ()) -> S3StagedBlob:
        """Stream ``stream`` to a temporary key while hashing it with sha-256 and the ALGORITHMS ``also``
        names. The upload is live (garbage collection leaves it alone) until it is promoted or discarded."""
        hashers = Hashers({"sha256", *also})
        key = self.tmp_prefix + "upload-" + uuid.uuid4().hex
        self.guard.temp_started(key)  # before the object exists: no collection can see it unclaimed
        upload = _Upload(self.client, self.bucket, key, self.part_size)
        try:
            for chunk in bounded_chunks(stream, 0, self.max_bytes, "max_blob_bytes"):
                hashers.update(chunk)
                upload.write(chunk)
            if upload.size < self.min_bytes:
                raise bad_request("BLOB_TOO_SMALL", "blob is smaller than min_blob_bytes (%d)" % self.min_bytes)
            upload.finish()
        except BaseException:
            upload.abandon()
            self.guard.temp_ended(key)
            raise
        digests = hashers.hexdigests()
        hexdigest = digests["sha256"]
        return S3StagedBlob(self, DIGEST_PREFIX + hexdigest, upload.size, key, self._key(hexdigest), digests)

    def promote(self, staged: Staged, defer_sync: bool = False) -> Optional[Callable[[], None]]:
        """Copy a staged object to the key its digest names, then delete the temporary one; call with the commit
        lock held. An object already there holds the same bytes: it is touched instead (copied onto itself),
        so garbage collection's grace period starts again for it. Nothing is left to sync: S3 has made the
        object durable once it answers."""
        staged = self._own(staged)
        with self.guard.lock:  # a collection decides and deletes under this lock: never between our steps
            if self.head(staged.final_key) is None:
                self._copy(staged.key, staged.final_key)
            else:
                self._copy(staged.final_key, staged.final_key)
            self.guard.promoted(staged.digest[len(DIGEST_PREFIX):])
        self._delete(staged.key)
        self.guard.temp_ended(staged.key)
        staged.key = staged.final_key
        return None

    def commit(self, staged: Staged) -> None:
        """Promote a staged blob outside a transaction."""
        with self.guard.commit_lock:
            self.promote(staged)

    def discard(self, staged: Staged) -> None:
        staged = self._own(staged)
        if staged.key != staged.final_key:
            self._delete(staged.key)
            self.guard.temp_ended(staged.key)

    def _own(self, staged: Staged) -> S3StagedBlob:
        if not isinstance(staged, S3StagedBlob):
            raise TypeError("an s3 blob store promotes only what it staged")
        return staged

    def _copy(self, source: str, target: str) -> None:
        """A server-side copy (a managed one: multipart past 5 GiB); onto itself, a touch (new metadata)."""
        extra = {"MetadataDirective": "REPLACE", "Metadata": {"touched": uuid.uuid4().hex}} \
            if source == target else None
        self.client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, target, ExtraArgs=extra)

    # --- what garbage collection must keep: hold, release, lease, end_lease (GuardedDigests) ---------------

    # --- reading ------------------------------------------------------------------------------------------

    def locate(self, digest: str) -> Optional[S3Handle]:
        hexdigest = split_digest(digest)
        status = self.head(self._key(hexdigest))
        if status is None:
            return None
        return S3Handle(self, DIGEST_PREFIX + hexdigest, status.size, self._key(hexdigest), located=True)

    def ref(self, digest: str, size: Optional[int]) -> S3Handle:
        return S3Handle(self, digest, size, self._key(split_digest(digest)))

    def exists(self, digest: str) -> bool:
        return self.stat(digest) is not None

    def stat(self, digest: str) -> Optional[BlobStat]:
        return self.head(self._key(split_digest(digest)))

    def size(self, digest: str) -> Optional[int]:
        status = self.stat(digest)
        return status.size if status is not None else None

    def open(self, digest: str, start: int = 0, end: Optional[int] = None) -> BinaryIO:
        return self.ref(digest, None).open(start, end)

    def delete(self, digest: str) -> bool:
        hexdigest = split_digest(digest)
        key = self._key(hexdigest)
        if self.cache is not None:
            self.cache.forget(hexdigest)
        if self.head(key) is None:
            return False
        self._delete(key)
        return True

    def digests(self) -> Iterator[str]:
        """Every object stored at the key its digest names (outside .tmp/), listed page by page."""
        for key, _ in self.list_objects(self.prefix):
            name = key.rpartition("/")[2]
            if not key.startswith(self.tmp_prefix) and _is_hex_digest(name) and key == self._key(name):
                yield DIGEST_PREFIX + name

    def uploads(self) -> Iterator[str]:
        """The temporary keys of uploads (the guard's names for them): staged objects, and multipart uploads a
        crash left unfinished."""
        seen = set()
        for key, _ in self.list_objects(self.tmp_prefix):
            seen.add(key)
            yield key
        for key in self._unfinished(self.tmp_prefix):
            if key not in seen:
                seen.add(key)
                yield key

    def upload_stat(self, upload: str) -> Optional[BlobStat]:
        if not upload.startswith(self.tmp_prefix):
            return None
        status = self.head(upload)
        if status is not None:
            return status
        for upload_id, initiated in self._unfinished_ids(upload):
            parts = self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=upload,
                                                                     UploadId=upload_id)
            size = sum(part["Size"] for page in parts for part in page.get("Parts", []))
            return BlobStat(size, initiated)
        return None

    def delete_upload(self, upload: str) -> bool:
        if not upload.startswith(self.tmp_prefix):
            return False
        found = self.head(upload) is not None
        if found:
            self._delete(upload)
        for upload_id, _ in self._unfinished_ids(upload):
            found = True
            _abort(self.client, self.bucket, upload, upload_id)
        return found

    def health(self, detail: bool = False) -> dict[str, Any]:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            ok, problem = True, None
        except (ClientError, BotoCoreError) as exc:
            ok, problem = False, str(exc)
        found: dict[str, Any] = {"kind": "s3", "ok": ok}
        if detail:
            found.update(bucket=self.bucket, prefix=self.prefix, endpoint_url=self.client.meta.endpoint_url)
            if problem:
                found["error"] = problem
        return found

    # --- the bucket ---------------------------------------------------------------------------------------

    def head(self, key: str) -> Optional[BlobStat]:
        """Size and modification time of the object at ``key``, or None."""
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return BlobStat(answer["ContentLength"], answer["LastModified"].timestamp())

    def read(self, key: str, start: int = 0, end: Optional[int] = None,
             on_close: Optional[Callable[[], None]] = None) -> BinaryIO:
        """The object at ``key`` from ``start`` to ``end`` (exclusive) by one ranged GET, streamed;
        FileNotFoundError when it is not there."""
        if end is not None and end <= start:  # nothing to read, but it must be there
            if self.head(key) is None:
                raise FileNotFoundError(key)
            return cast(BinaryIO, ObjectReader(None, on_close))
        ranged = {} if start == 0 and end is None else \
            {"Range": "bytes=%d-%s" % (start, "" if end is None else end - 1)}
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, **ranged)["Body"]
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(key) from exc
            if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                raise
            body = None  # it starts past the end: nothing to read, as a file sought there
        return cast(BinaryIO, ObjectReader(body, on_close))

    def _delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def list_objects(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """(key, listing entry) of every object under ``prefix``, a page (ListObjectsV2) at a time."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.page_size})
        for page in pages:
            for entry in page.get("Contents", []):
                yield entry["Key"], entry

    def _unfinished(self, prefix: str) -> Iterator[str]:
        """The keys of multipart uploads begun under ``prefix`` and never completed nor aborted."""
        for _, key, _ in self._multipart(prefix):
            yield key

    def _unfinished_ids(self, key: str) -> Iterator[tuple[str, float]]:
        for upload_id, found, initiated in self._multipart(key):
            if found == key:
                yield upload_id, initiated

    def _multipart(self, prefix: str) -> Iterator[tuple[str, str, float]]:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.page_size})
        for page in pages:
            for upload in page.get("Uploads", []) or []:
                yield upload["UploadId"], upload["Key"], upload["Initiated"].timestamp()


class _Upload:
    """One object written in order: held in memory up to one part, then sent as a multipart upload's parts; a
    body that fits in one part is one PUT."""

    def __init__(self, client: Any, bucket: str, key: str, part_size: int) -> None:
        self.client, self.bucket, self.key, self.part_size = client, bucket, key, part_size
        self.size = 0
        self._buffer = bytearray()
        self._upload_id: Optional[str] = None
        self._parts: list[dict[str, Any]] = []

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._buffer += chunk
        if len(self._buffer) >= self.part_size:
            self._send_part()

    def finish(self) -> None:
        if self._upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._buffer)
            self._buffer = bytearray()
            return
        if self._buffer:
            self._send_part()
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                              MultipartUpload={"Parts": self._parts})

    def abandon(self) -> None:
        """Leave nothing behind: the unfinished multipart upload aborted, or the object deleted."""
        try:
            if self._upload_id is not None:
                _abort(self.client, self.bucket, self.key, self._upload_id)
            self.client.delete_object(Bucket=self.bucket, Key=self.key)
        except (ClientError, BotoCoreError):
            pass  # what is left is an upload no process writes: garbage collection removes it

    def _send_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        number = len(self._parts) + 1
        answer = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                         PartNumber=number, Body=self._buffer)
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self._buffer = bytearray()


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def spec_problems(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each thing wrong with an s3 blob store's spec: what the compiler reports at load."""
    problems = []
    if not spec.get("bucket"):
        problems.append(("bucket", "an s3 blob store names its bucket"))
    elif not _BUCKET.match(spec["bucket"]) or ".." in spec["bucket"]:
        problems.append(("bucket", "%r is not a bucket name: 3 to 63 lower-case letters, digits, '.' and '-', "
                         "beginning and ending with a letter or digit" % spec["bucket"]))
    prefix = spec.get("prefix", "")
    segments = prefix[:-1].split("/") if prefix.endswith("/") else prefix.split("/")
    if prefix and any(segment in ("", ".", "..", TMP.strip("/")) for segment in segments):
        problems.append(("prefix", "a key prefix is relative path segments (e.g. \"depot/blobs\"), none empty, "
                         "'.', '..' or %r" % TMP.strip("/")))
    endpoint = spec.get("endpoint_url")
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
                or parts.query or parts.username:
            problems.append(("endpoint_url", "an endpoint is http(s)://host[:port], without a path or "
                             "credentials (credentials come from the environment): %r" % endpoint))
    if "root" in spec:
        problems.append(("root", "an s3 blob store keeps no files: its objects are under bucket and prefix"))
    return problems


def connect(endpoint_url: Optional[str], region: Optional[str]) -> Any:
    """A boto3 S3 client; credentials from the environment (boto3's chain). A custom endpoint (an S3-compatible
    server) is addressed by path (http://host/bucket/key), as such servers expect."""
    import boto3  # here, not at import: a data dir without an s3 store never loads it
    from botocore.config import Config
    config = Config(s3={"addressing_style": "path" if endpoint_url else "auto"}, max_pool_connections=32,
                    retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
                                          config=config)


def _abort(client: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as exc:
        if not _missing(exc):
            raise


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


def _is_hex_digest(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)
