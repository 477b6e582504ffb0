"""The running service: the data dir's stores, the SQL database (identities, schema versions, audit), and
the engine serving the active schema.

The active schema lives in the database. On first start it is loaded from the schema file; afterwards the
database's active version is served, and an administrator changes it through the admin API. The engine
reference is swapped atomically: a request takes it once and finishes on it.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Callable, Mapping

from app.identity import database
from app.identity.audit import Audit
from app.identity.access import Access
from app.identity.auth import (DEFAULT_TTL, Identity, PasswordChecks, holds, load_or_create_secret,
                               username_key)
from app.engine.budget import Clock
from app.engine.compiled import CompiledSchema
from app.engine.compiler import compile_or_raise, compile_schema, load_schema_file, schema_digest
from app.engine.context import Principal, RequestData
from app.engine.run import Engine
from app.errors import DepotError
from app.identity.ratelimit import RateLimiter, parse_rate
from app.engine.report import Report
from app.repository.schema_store import SchemaStore
from app.stores.interfaces import RateLimit
from app.stores.rediscache import CACHE_URL_ENV
from app.stores.pgstate import STATE_URL_ENV
from app.stores.registry import BLOB_URL_ENV, Stores

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # app/repository/ -> the root
DEFAULT_SCHEMA = os.path.join(PROJECT, "schema.json")
SCHEMA_POLL_SECONDS = 2.0  # how soon a process on shared state serves a schema version another one loaded


def private_dir(path: str) -> str:
    """``path`` as an absolute path to a directory only its owner can enter (created, or tightened: it holds
    password hashes, token hashes and the signing key)."""
    path = os.path.abspath(path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def open_data_dir(path: str) -> str:
    """For a command working on a data dir: the dir, private to its owner, and every file this process creates
    private too (the umask is the process's: only commands call this, never the library)."""
    os.umask(0o077)
    return private_dir(path)


class Service:
    def __init__(self, data_dir: str, schema: dict[str, Any] | None = None, schema_path: str | None = None,
                 sync: bool = True, announce: Callable[[str], Any] = print, read_only: bool = False,
                 load_schema: bool = False, cpu_clock: Clock | None = None, cache_url: str | None = None) -> None:
        """``cpu_clock``: what the per-request CPU budget reads instead of the thread's CPU time (app.engine.budget).
        ``cache_url``: where caches, login rate limits and the identity generation live (default: DEPOT_CACHE_URL;
        unset or empty: in this process and its data dir)."""
        self.data_dir = private_dir(data_dir)
        self.read_only = read_only
        self.cpu_clock = cpu_clock
        self.announce = announce
        self._closing = threading.Event()  # set by close(): the schema follower ends
        # first: the state store's lock is the data dir's lease (StoreLocked while another process holds it)
        self.stores = Stores(self.data_dir, sync=sync,
                             cache_url=os.environ.get(CACHE_URL_ENV) if cache_url is None else cache_url,
                             blob_url=os.environ.get(BLOB_URL_ENV), state_url=os.environ.get(STATE_URL_ENV))
        try:
            self._open(schema, schema_path, load_schema)
        except BaseException:
            self.stores.close()  # give the lease back: this process may open the data dir again
            raise

    def _open(self, schema: dict[str, Any] | None, schema_path: str | None, load_schema: bool) -> None:
        url = database.database_url(self.data_dir)
        database.upgrade(url)
        self.db, self.sessions = database.connect(url)
        shared = self.stores.shared
        self.identity = Identity(load_or_create_secret(self.data_dir), self.sessions,
                                 generation=None if shared is None else shared.generation())
        self.audit = Audit(self.sessions)
        self.access = Access(self.sessions)
        self.schemas = SchemaStore(self.sessions)
        self._swap_lock = threading.Lock()
        self.limiters: dict[str, RateLimit] = {}
        self.password_checks = BasicPasswordChecks(self)
        self._activate(self._initial_schema(schema, schema_path, load_schema))
        self.identity.ensure_admin(self.data_dir, self.announce)
        if self.stores.state_location is not None:  # other processes serve this repository and may load schemas
            threading.Thread(target=self._follow_schemas, name="depot-schema-follower", daemon=True).start()

    def _follow_schemas(self) -> None:
        """Every SCHEMA_POLL_SECONDS, serve the database's active schema version if another process loaded one
        (POST /admin/schema through another worker or node). A database that does not answer is asked again
        next time; requests go on being served meanwhile."""
        while not self._closing.wait(SCHEMA_POLL_SECONDS):
            try:
                self.follow_active_schema()
            except Exception:  # noqa: BLE001 - a blip of the database must not end the follower
                continue

    def follow_active_schema(self) -> bool:
        """Swap in the database's active schema version when it is not the one served; -> whether it was."""
        row = self.schemas.active()
        with self._swap_lock:
            if row is None or row.sha256 == self.engine.compiled.sha256:
                return False
            self._activate(self._compile_row(row))
            return True

    def _initial_schema(self, schema: dict[str, Any] | None, schema_path: str | None,
                        load: bool) -> CompiledSchema:
        """The schema to serve: the database's active version. On first start, or with ``load`` when it differs
        from the active one, ``schema`` (or the file at ``schema_path``, default schema.json) is stored as a new
        version and served instead."""
        active = self.schemas.active()
        if active is not None and not load:
            return self._compile_row(active)
        source = schema_path or (DEFAULT_SCHEMA if schema is None else "the given schema")
        if schema is None:
            schema = load_schema_file(source)
        if active is not None and active.sha256 == schema_digest(schema):
            return self._compile_row(active)
        compiled = compile_or_raise(schema, source)
        row = self.schemas.add(schema, "bootstrap" if active is None else "cli", "loaded from %s" % source)
        if active is not None:
            self.audit.record("cli", "admin.schema.load", "schema version %d" % row.version, "success",
                              detail={"file": source, "replaced_version": active.version})
        return compiled

    @staticmethod
    def _compile_row(row: Any) -> CompiledSchema:
        return compile_or_raise(json.loads(row.document), "schema version %d" % row.version)

    def _activate(self, compiled: CompiledSchema) -> None:
        self.identity.configure(compiled.auth_settings)
        self.limiters = {name: self._limiter(name, rate) for name, rate in compiled.login_limits.items()}
        self.engine = Engine(compiled, self.stores, self.read_only, self.access, self.cpu_clock,
                             ServiceAccounts(self))

    def _limiter(self, name: str, rate: str) -> RateLimit:
        """The limit ``name`` at ``rate``: the one running while its rate is unchanged (its recent hits count);
        counted in Redis when DEPOT_CACHE_URL names one, so that every process counts the same hits."""
        current = self.limiters.get(name)
        if current is not None and current.rate == rate:
            return current
        shared = self.stores.shared
        return RateLimiter(rate) if shared is None else shared.rate_limit(name, rate, *parse_rate(rate))

    def apply_schema(self, doc: dict[str, Any], by: str, comment: str = "") -> tuple[Any, Report, bool]:
        """Check ``doc`` exactly as `python -m app check` does; on success store it as the new active version
        and swap it in. On failure raise 422 SCHEMA_INVALID with the findings; nothing changes. The same schema
        as the one served (by digest) is no new version: returns (active row, its report, False)."""
        with self._swap_lock:
            if schema_digest(doc) == self.engine.compiled.sha256:
                return self.schemas.active(), self.engine.compiled.report, False
            compiled, report = compile_schema(doc, "uploaded schema")
            if compiled is None:
                raise DepotError("SCHEMA_INVALID", 422, report.summary(), details=report.to_dict()["errors"])
            row = self.schemas.add(doc, by, comment)
            self._activate(compiled)
            return row, report, True

    def active_document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.schemas.active().document)
        return document

    def limit_login(self, username: str, client: dict[str, Any], via: str = "login") -> None:
        """429 once a (username, client address) pair or a client address alone has tried too many passwords
        (auth.login's rate limits; a login and a password sent as Basic credentials count alike). There is no
        limit per username alone: anyone could then lock an account out from anywhere."""
        address = client.get("ip")
        pair = (username_key(username), address)
        for name, key in (("rate_limit_per_username_and_address", pair), ("rate_limit_per_address", address)):
            wait = self.limiters[name].hit(key)
            if wait:
                self.audit.record(username, "auth.login", username, "rate_limited", client, {"limit": name, "via": via})
                raise DepotError("RATE_LIMITED", 429, "too many login attempts; retry in %d s" % wait,
                                 headers={"Retry-After": str(wait)})

    def principal(self, request: RequestData) -> Principal | None:
        """The request's principal; without credentials, the anonymous principal when auth.anonymous is on."""
        found: Principal | None = self.identity.authenticate(request, self.password_checks)
        if found is None and self.engine.compiled.anonymous is not None:
            return self.engine.compiled.anonymous
        return found

    def close(self) -> None:
        self._closing.set()
        self.audit.close()
        self.stores.close()
        self.db.dispose()


class ServiceAccounts:
    """auth.issue_token's view of the accounts: a password checked as a login (the login rate limits before it, a
    failure audited as one), then an API token made and audited as `POST /auth/tokens` makes one."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def issue_token(self, username: str, password: str, name: str, scopes: frozenset[str], ttl_seconds: int | None,
                    request: RequestData) -> dict[str, Any]:
        service, client = self.service, request_client(request)
        service.limit_login(username, client, "route")
        try:
            owner = service.identity.verify_password(username, password)
        except DepotError:
            service.audit.record(username, "auth.login", username, "failure", client, {"via": "route"})
            raise
        held = sorted(scope for scope in scopes if holds(owner["scopes"], [scope]))
        if not held:
            raise DepotError("SCOPE_NOT_HELD", 403, "%s holds none of the scopes a token here carries (%s)"
                             % (owner["sub"], ", ".join(sorted(scopes))), "scopes")
        view, secret = service.identity.create_token(owner["sub"], name, held,
                                                     ttl_seconds if ttl_seconds is not None else DEFAULT_TTL)
        service.audit.record(owner["sub"], "token.create", "%s/%s" % (owner["sub"], view["id"]), "success", client,
                             {"name": view["name"], "scopes": view["scopes"], "expires_at": view["expires_at"],
                              "via": "route"})
        return {"token": secret, "username": owner["sub"], "scopes": view["scopes"],
                "expires_at": view["expires_at"]}


    def issue_access_token(self, username: str, scopes: frozenset[str], resources: Mapping[str, str],
                           ttl_seconds: int) -> tuple[str, Any]:
        token, expires = self.service.identity.issue_access(username, scopes, resources, ttl_seconds)
        return token, expires


class BasicPasswordChecks(PasswordChecks):
    """A password sent as Basic credentials is a login: the login rate limits apply before it is checked, and a
    wrong one is audited as a failed login (``via: basic``)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def before(self, username: str, request: Any) -> None:
        self.service.limit_login(username, request_client(request), "basic")

    def failed(self, username: str, request: Any) -> None:
        self.service.audit.record(username, "auth.login", username, "failure", request_client(request),
                                  {"via": "basic"})


def request_client(request: Any) -> dict[str, Any]:
    """The audit's client fields of a request (a RequestData, or the HTTP layer's own request object)."""
    return {"ip": request.remote_addr, "user_agent": request.headers.get("User-Agent"),
            "request_id": getattr(request, "request_id", None)}
