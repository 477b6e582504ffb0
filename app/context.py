"""ExecutionContext: the state of one pipeline run. Knows nothing of HTTP; the request is a small adapter."""
from contextlib import contextmanager

from app.errors import DepotError


class ResponseSpec:
    """What a respond.* op decided; the HTTP layer turns it into bytes on the wire."""

    __slots__ = ("status", "headers", "json", "blob", "location", "filename", "last_modified")

    def __init__(self, status, headers=None, json=None, blob=None, location=None, filename=None,
                 last_modified=None):
        self.status = status
        self.headers = headers
        self.json = json
        self.blob = blob
        self.location = location
        self.filename = filename  # a blob's download name (None: the HTTP layer's default)
        self.last_modified = last_modified  # an aware datetime (None: the blob file's modification time)


class RequestData:
    """Everything an op may read of a request. The HTTP layer fills it; tests and replay can build one directly.

    ``stream`` has read(n); ``declared_digests`` are the digests the client said the body has (DeclaredDigest
    tuples, app.stores.digests); ``dropped_headers`` the names of request headers the server could not pass on.
    """

    def __init__(self, method="GET", path_params=None, query=None, headers=None, stream=None,
                 content_length=None, declared_digests=(), remote_addr=None, request_id=None, dropped_headers=()):
        self.method = method
        self.path_params = path_params if path_params is not None else {}
        self.query = query if query is not None else {}
        self.headers = headers if headers is not None else {}
        self.stream = stream
        self.content_length = content_length
        self.declared_digests = declared_digests
        self.remote_addr = remote_addr
        self.request_id = request_id
        self.dropped_headers = dropped_headers


_UNKNOWN = object()


class ExecutionContext:
    __slots__ = ("engine", "request", "fields", "vars", "event", "txn", "response", "io_ops", "exempt_ns",
                 "exempt_wall_ns", "unverified_blobs", "held_blobs", "cleanups", "replayed", "_authenticate",
                 "_principal")

    def __init__(self, engine, request, event=None, authenticate=None):
        self.engine = engine
        self.request = request
        self.fields = {}
        self.vars = {}
        self.event = event
        self.txn = None
        self.response = None
        self.io_ops = self.exempt_ns = self.exempt_wall_ns = 0
        self.unverified_blobs = {}
        self.held_blobs = []  # (store, digest) kept from garbage collection until the pipeline ends
        self.cleanups = []  # run once the response has been sent
        self.replayed = None  # a replayed event's bookkeeping (seq, event id), committed with its first commit
        self._authenticate = authenticate
        self._principal = None if authenticate is None else _UNKNOWN

    @property
    def principal(self):
        """Resolved on first use, so routes that never ask pay nothing for token verification."""
        principal = self._principal
        if principal is _UNKNOWN:
            principal = self._principal = self._authenticate(self.request)
        return principal

    def count_io(self, n=1):
        self.io_ops += n
        if self.io_ops > self.engine.limits.max_io_ops:
            raise DepotError("IO_LIMIT_EXCEEDED", 503,
                             "request exceeded max_io_ops_per_request (%d)" % self.engine.limits.max_io_ops)

    @contextmanager
    def streaming(self):
        """Time spent moving a body's bytes is not charged to max_cpu_ms_per_request."""
        clock = self.engine.clock
        start, start_wall = clock.cpu(), clock.wall()
        try:
            yield
        finally:
            self.exempt_ns += clock.cpu() - start
            self.exempt_wall_ns += clock.wall() - start_wall

    @contextmanager
    def writing(self):
        """The open transaction, or a one-op transaction committed when the block ends."""
        if self.txn is not None:
            yield self.txn
            return
        if self.engine.runtime.txn_for_writes:
            raise DepotError("RUNTIME_CHECK_FAILED", 500,
                             "a KV or index write ran outside a transaction (all_kv_or_index_writes_inside_txn)")
        txn = self.engine.state.transaction()
        try:
            yield txn
        except BaseException:
            txn.abort()
            raise
        self.engine.commit(self, txn)

    def hold_blob(self, store, digest):
        """Keep a blob from garbage collection until the pipeline ends: a later step may reference it."""
        store.hold(digest)
        self.held_blobs.append((store, digest))

    def release_blobs(self):
        while self.held_blobs:
            store, digest = self.held_blobs.pop()
            store.release(digest)

    def abort_txn(self):
        if self.txn is not None:
            self.txn.abort()
            self.txn = None

    def close(self):
        self.abort_txn()
        self.release_blobs()
        for cleanup in reversed(self.cleanups):
            cleanup()
        self.cleanups = []
