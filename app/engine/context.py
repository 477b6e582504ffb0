"""ExecutionContext: the state of one pipeline run. Knows nothing of HTTP; the request is a small adapter."""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from app.errors import DepotError

if TYPE_CHECKING:
    from app.engine.run import Engine

Principal = dict[str, Any]  # sub, scopes, kind, token_id (app.identity.auth)


class ResponseSpec:
    """What a respond.* op decided; the HTTP layer turns it into bytes on the wire."""

    __slots__ = ("status", "headers", "json", "blob", "location", "filename", "last_modified", "streamed", "stream",
                 "content_type", "vary")

    # the parameters of a JSON answer first: respond.json, which every JSON route ends with, passes them by
    # position (keyword arguments cost more to match than the object costs to fill)
    def __init__(self, status: int, headers: Mapping[str, str] | None = None, json: Any = None,
                 content_type: str | None = None, streamed: bool = False, blob: Any = None,
                 location: str | None = None, filename: str | None = None, last_modified: Any = None,
                 stream: Any = None) -> None:
        self.status = status
        self.headers = headers
        self.json = json
        self.streamed = streamed  # ``json`` holds a Stream (app.stores.codec): written as it is read
        self.blob = blob
        self.location = location
        self.filename = filename  # a blob's download name (None: the HTTP layer's default)
        self.last_modified = last_modified  # an aware datetime (None: the blob file's modification time)
        # a body streamed as it is produced: iterable of bytes, with ``length`` (None: not known) and ``close()``
        # (app.engine.pages.RenderedText)
        self.stream = stream
        self.content_type = content_type  # the Content-Type of a JSON or streamed body (None: application/json)
        self.vary: tuple[str, ...] = ()  # request headers the answer depends on (Vary), besides the URL


class EmptyBody:
    """The body of an answer that has none (respond.empty): a stream of no bytes."""

    length = 0

    def __iter__(self) -> Any:
        return iter(())

    def close(self) -> None:
        pass


EMPTY_BODY = EmptyBody()


class RequestData:
    """Everything an op may read of a request. The HTTP layer fills it; tests and replay can build one directly.

    ``stream`` has read(n); ``declared_digests`` are the digests the client said the body has (DeclaredDigest
    tuples, app.stores.digests); ``dropped_headers`` the names of request headers the server could not pass on;
    ``base_url`` the request's external base URL (scheme://host[:port] and the path prefix the app is served
    under, no trailing slash), as the HTTP layer works it out (None: there is no request, as in replay).

    Templates read the attributes named in ``template_attrs`` as ``{request.<name>}``, and nothing else of it.
    """

    template_attrs = ("base_url",)

    def __init__(self, method: str = "GET", path_params: dict[str, str] | None = None,
                 query: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None, stream: Any = None,
                 content_length: int | None = None, declared_digests: Any = (), remote_addr: str | None = None,
                 request_id: str | None = None, dropped_headers: Any = (), base_url: str | None = None) -> None:
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
        self.base_url = base_url


_UNKNOWN = object()


class ExecutionContext:
    __slots__ = ("engine", "request", "fields", "vars", "event", "txn", "response", "io_ops", "exempt_ns",
                 "exempt_wall_ns", "unverified_blobs", "held_blobs", "cleanups", "replayed", "vary", "_authenticate",
                 "_principal")

    def __init__(self, engine: Engine, request: RequestData, event: dict[str, Any] | None = None,
                 authenticate: Callable[[RequestData], Principal | None] | None = None) -> None:
        """Engine.run passes every argument by position: keyword arguments cost more to match, on every request."""
        self.engine = engine
        self.request = request
        self.fields: dict[str, Any] = {}
        self.vars: dict[str, Any] = {}
        self.event = event
        self.txn: Any = None  # the open transaction (app.stores), if any
        self.response: ResponseSpec | None = None
        self.io_ops = self.exempt_ns = self.exempt_wall_ns = 0
        self.unverified_blobs: dict[str, Any] = {}
        self.held_blobs: list[tuple[Any, str]] = []  # (store, digest) kept from GC until the pipeline ends
        self.cleanups: list[Callable[[], None]] = []  # run once the response has been sent
        # a replayed event's bookkeeping (seq, event id), committed with its first commit
        self.replayed: tuple[int, str | None] | None = None
        self.vary: tuple[str, ...] = ()  # request headers a step chose the answer by (http.negotiate: Accept)
        self._authenticate = authenticate
        self._principal: Any = None if authenticate is None else _UNKNOWN

    @property
    def principal(self) -> Principal | None:
        """Resolved on first use, so routes that never ask pay nothing for token verification."""
        principal: Principal | None = self._principal
        if principal is _UNKNOWN:
            assert self._authenticate is not None  # _UNKNOWN only with an authenticate function
            principal = self._principal = self._authenticate(self.request)
        return principal

    def count_io(self, n: int = 1) -> None:
        self.io_ops += n
        if self.io_ops > self.engine.limits.max_io_ops:
            raise DepotError("IO_LIMIT_EXCEEDED", 503,
                             "request exceeded max_io_ops_per_request (%d)" % self.engine.limits.max_io_ops)

    @contextmanager
    def streaming(self) -> Iterator[None]:
        """Time spent moving a body's bytes is not charged to max_cpu_ms_per_request."""
        clock = self.engine.clock
        start, start_wall = clock.cpu(), clock.wall()
        try:
            yield
        finally:
            self.exempt_ns += clock.cpu() - start
            self.exempt_wall_ns += clock.wall() - start_wall

    @contextmanager
    def writing(self) -> Iterator[Any]:
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

    def hold_blob(self, store: Any, digest: str) -> None:
        """Keep a blob from garbage collection until the pipeline ends: a later step may reference it."""
        store.hold(digest)
        self.held_blobs.append((store, digest))

    def release_blobs(self) -> None:
        while self.held_blobs:
            store, digest = self.held_blobs.pop()
            store.release(digest)

    def abort_txn(self) -> None:
        if self.txn is not None:
            self.txn.abort()
            self.txn = None

    def close(self) -> None:
        self.abort_txn()
        self.release_blobs()
        for cleanup in reversed(self.cleanups):
            cleanup()
        self.cleanups = []
