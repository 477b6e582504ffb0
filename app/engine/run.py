"""The engine: a compiled schema bound to stores. Runs a route's pipeline for one request.

The per-request loop does lookups and I/O only: every step is already bound to its op function and arguments.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

import requests

from app.metrics import UPSTREAM_FETCHES, UPSTREAM_SECONDS
from app.identity.access import SCOPES_ONLY
from app.engine.budget import Clock, budget_clock
from app.engine.compiled import CompiledSchema, Pipeline, Route
from app.engine.context import ExecutionContext, Principal, RequestData
from app.engine.definitions import Upstream
from app.errors import DepotError
from app.stores.blobs import BlobRef
from app.stores.interfaces import BlobHandle, BlobStore
from app.stores.digests import DIGEST_PREFIX, declared_digests, split_digest

if TYPE_CHECKING:  # app.stores.registry is only named in annotations here
    from app.stores.registry import Stores

PROXY_CHUNK = 1024 * 1024


def _forbidden_param(route: Route, params: Mapping[str, str]) -> str | None:
    """The first of ``params`` holding what is never part of a path parameter: "/", "\\", NUL, "..", or a lone
    "." (a parameter spanning segments: see _forbidden_span). One call for them all, with plain `in` tests: this
    runs on every request, and a regex search costs three times as much."""
    spans = route.spans
    for name, value in params.items():
        if name in spans:
            if _forbidden_span(value):
                return name
        elif "/" in value or "\\" in value or "\x00" in value or ".." in value or value == ".":
            return name
    return None


class Accounts(Protocol):
    """The user accounts, as the engine may use them (the repository layer's Service provides them)."""

    def issue_token(self, username: str, password: str, name: str, scopes: frozenset[str], ttl_seconds: int | None,
                    request: RequestData) -> dict[str, Any]:
        """Check the password as a login (rate limits, audit) and make an API token of that user holding those of
        ``scopes`` the user holds: {"token", "username", "scopes", "expires_at"}; DepotError 401/429 otherwise."""
        ...

    def issue_access_token(self, username: str, scopes: frozenset[str], resources: Mapping[str, str],
                           ttl_seconds: int) -> tuple[str, Any]:
        """A short-lived token of ``username`` restricted to ``resources`` (name -> permission): (the token, when
        it expires)."""
        ...


def _forbidden_span(value: str) -> bool:
    """Never part of a parameter spanning segments ({name:path}): an empty, "." or ".." segment, "\\" or NUL."""
    return "\\" in value or "\x00" in value or any(part in ("", ".", "..") for part in value.split("/"))


def _in_route_format(route: Route, error: DepotError) -> DepotError:
    """``error``, its body written in the route's own error format when it declares one (error_body)."""
    if route.error_body is not None:
        error.body = route.error_body.render(error)
    return error


class Engine:
    def __init__(self, compiled: CompiledSchema, stores: Stores, read_only: bool = False, access: Any = None,
                 cpu_clock: Clock | None = None, accounts: Accounts | None = None) -> None:
        """``access``: the namespace grants (app.identity.access; default: none, the scopes decide); ``cpu_clock``: a
        callable returning nanoseconds that the CPU budget charges requests by instead of their thread's CPU
        time (see app.engine.budget); ``accounts``: what auth.issue_token asks to check a password and make a
        token (default: none, and the op answers 501)."""
        self.compiled = compiled
        self.accounts = accounts
        self.access: Any = access if access is not None else SCOPES_ONLY  # identity.access.Access, or the scopes only
        self.clock = budget_clock(cpu_clock)
        self.stores = stores
        self.read_only = read_only  # a replica: route steps that change the repository are refused
        self.state = stores.state(compiled.definitions["kv_store"])  # documents, indexes, events: one transaction
        self.documents = self.state.documents
        self.indexes = self.state.indexes
        self.limits = compiled.limits
        self.features = compiled.features
        self.runtime = compiled.runtime
        self.event_log = self.state.event_log(compiled.event_log)
        self.blob_stores = {name: stores.blob_store(d) for name, d in compiled.definitions["blob_store"].items()}
        self.upload_sessions = {name: stores.upload_sessions(d, compiled.definitions["blob_store"][d.blob_store])
                                for name, d in compiled.definitions["upload_sessions"].items()}
        self.cache = stores.cache(compiled.caching, self._blob_from_json)
        self.routes: dict[str, Route] = {route.id: route for route in compiled.routes}
        self._sessions: dict[str, requests.Session] = {}

    def blob_store(self, name: str) -> BlobStore:
        return self.blob_stores[name]

    def _blob_from_json(self, info: Mapping[str, Any]) -> BlobHandle | None:
        store = self.blob_stores.get(info.get("store", ""))
        if store is None:
            return None
        return store.ref(info["digest"], info.get("size"))

    # --- running pipelines ------------------------------------------------------------------------------

    def run(self, route: Route, request: RequestData,
            authenticate: Callable[[RequestData], Principal | None] | None = None) -> ExecutionContext:
        """Run ``route`` for ``request``; returns the context holding the ResponseSpec, or raises DepotError.
        The caller calls ``ctx.close()`` once the response has been sent (it removes temporary files)."""
        forbidden = _forbidden_param(route, request.path_params)
        if forbidden is not None:
            raise _in_route_format(route, DepotError(
                "INVALID_PATH_PARAMETER", 400, "path parameter %s contains a forbidden sequence" % forbidden, forbidden))
        if route.disabled is not None:
            raise DepotError(route.disabled[0], 404, route.disabled[1])
        ctx = ExecutionContext(self, request, None, authenticate)
        try:
            if route.policy.resource_guard is not None:
                route.policy.resource_guard(ctx)
            route.pipeline.run(ctx, self.limits.max_cpu_ns, self.clock)
        except DepotError as error:
            ctx.close()
            if (error.status == 401 or error.rechallenge) and route.policy.challenge is not None:  # as declared
                error.headers = dict(error.headers, **{
                    "WWW-Authenticate": route.policy.challenge.render(request.path_params, request)})
            raise _in_route_format(route, error)
        except BaseException:
            ctx.close()
            raise
        if ctx.response is None:
            ctx.close()
            raise DepotError("NO_RESPONSE", 500, "the pipeline finished without responding")
        if ctx.vary:
            ctx.response.vary = ctx.vary
        if ctx.txn is not None:  # a response from inside an open transaction discards it
            ctx.abort_txn()
        if ctx.held_blobs:  # no step is left to reference them
            ctx.release_blobs()
        return ctx

    def commit(self, ctx: ExecutionContext, txn: Any) -> None:
        if self.runtime.digest_verify:
            unverified = [staged for _, staged in txn.blobs if not staged.verified]
            if unverified:
                txn.abort()
                raise DepotError("RUNTIME_CHECK_FAILED", 500, "a blob was stored without blob.verify_digest "
                                 "(all_blob_puts_followed_by); nothing was recorded")
        if ctx.replayed is not None:
            txn.record_applied(*ctx.replayed)
            ctx.replayed = None
        txn.commit()

    def apply_event(self, record: dict[str, Any], applied: tuple[int, str | None] | None = None) -> None:
        """Replay one event through its apply pipeline (replication). ``applied``, (primary seq, event id or
        None), is the replica's bookkeeping: committed with the pipeline's first commit, or alone if it commits
        nothing."""
        pipeline: Pipeline | None = self.compiled.apply_pipelines.get(record["type"])
        if pipeline is None:
            raise DepotError("NO_APPLY_PIPELINE", 400, "no apply pipeline for event type %r" % record["type"])
        ctx = ExecutionContext(self, RequestData(), event=record)
        ctx.fields.update(record.get("payload") or {})
        ctx.replayed = applied
        try:
            pipeline.run(ctx, self.limits.max_cpu_ns, self.clock)
            if ctx.replayed is not None:
                self.record_applied(*ctx.replayed)
        finally:
            ctx.close()

    def record_applied(self, seq: int, event_id: str | None) -> None:
        """A replica's bookkeeping alone: the cursor moves to ``seq``, ``event_id`` (if any) counts as applied."""
        txn = self.state.transaction()
        txn.record_applied(seq, event_id)
        txn.commit()

    # --- upstreams ----------------------------------------------------------------------------------------

    def fetch_upstream(self, ctx: ExecutionContext, upstream: Upstream, method: str, path: str) -> dict[str, Any]:
        """GET/HEAD ``path`` from an upstream with bounded retries; the body streams into a temp file."""
        session = self._sessions.get(upstream.name)
        if session is None:
            session = self._sessions[upstream.name] = requests.Session()
        headers = {}
        token = os.environ.get("DEPOT_UPSTREAM_%s_TOKEN" % upstream.name.upper())
        if upstream.auth_mode == "bearer_token" and token:
            headers["Authorization"] = "Bearer " + token
        url = upstream.base_url + path
        for attempt in range(upstream.max_attempts):
            last = attempt == upstream.max_attempts - 1
            started = time.perf_counter()
            try:
                response = session.request(method, url, headers=headers, timeout=upstream.timeout, stream=True,
                                           allow_redirects=True)
            except requests.RequestException as exc:
                UPSTREAM_FETCHES.labels(upstream.name, "error").inc()
                if last:
                    return {"status": None, "headers": {}, "body": None, "size": 0, "error": type(exc).__name__}
            else:
                UPSTREAM_SECONDS.labels(upstream.name).observe(time.perf_counter() - started)
                UPSTREAM_FETCHES.labels(upstream.name, "%dxx" % (response.status_code // 100)).inc()
                if response.status_code < 500 or last:
                    return self._capture(ctx, response)
                response.close()
            time.sleep(upstream.backoff * (2 ** attempt))
        return {"status": None, "headers": {}, "body": None, "size": 0, "error": "exhausted"}

    def _capture(self, ctx: ExecutionContext, response: requests.Response) -> dict[str, Any]:
        limit = self.limits.max_request_body_bytes
        fd, path = tempfile.mkstemp(dir=self.stores.tmp_dir, prefix="upstream-")
        ctx.cleanups.append(lambda: _remove(path))
        size = 0
        with response, os.fdopen(fd, "wb") as out:
            for chunk in response.iter_content(PROXY_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise DepotError("UPSTREAM_TOO_LARGE", 502, "upstream body exceeds max_request_body_bytes")
                out.write(chunk)
        return {"status": response.status_code, "headers": dict(response.headers),
                "body": BlobRef(None, None, size, path), "size": size, "digest": upstream_digest(response.headers)}

    def health(self, detail: bool = False) -> dict[str, Any]:
        """Each store's kind and state; ``detail`` adds where it lives (for admins only)."""
        stores = {"state": self.state.health(detail)}
        for name, store in self.blob_stores.items():
            stores["blob:" + name] = store.health(detail)
        if self.stores.shared is not None:  # DEPOT_CACHE_URL's Redis: caches, login limits, the identity generation
            stores["cache"] = self.stores.shared.health(detail)
        return stores


def upstream_digest(headers: Mapping[str, str]) -> str | None:
    """The sha256 digest an upstream declares for its body (X-Depot-Digest, Content-Digest or a digest ETag)."""
    for name in ("X-Depot-Digest", "ETag"):
        value = (headers.get(name) or "").strip().strip('"')
        if value.startswith(DIGEST_PREFIX):
            try:
                hexdigest: str = split_digest(value)
                return DIGEST_PREFIX + hexdigest
            except DepotError:
                return None
    try:
        declared = [d for d in declared_digests(headers, {}) if d.algorithm == "sha-256"]
    except DepotError:
        return None
    return DIGEST_PREFIX + declared[0].hexdigest if declared else None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

