"""What every process serving one repository must see alike, kept in Redis when DEPOT_CACHE_URL names one
(``redis://host:port/db``, optionally ``?prefix=NAME``): the response and blob caches (interfaces.Cache), the
login rate limits (interfaces.RateLimit) and the identity generation (interfaces.Generation).

Every key starts with the URL's prefix (default ``depot``), so repositories sharing one Redis keep apart:
``<prefix>:cache:<kind>:<key>``, ``<prefix>:login:<limit>:<rate>:<client key>``, ``<prefix>:identity:generation``.
This is the one module that speaks to Redis.
"""
import itertools
import json
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from app.errors import DepotError
from app.metrics import CACHE_LOOKUPS
from app.stores.codec import dumps, loads
from app.stores.interfaces import CacheServerError

CACHE_URL_ENV = "DEPOT_CACHE_URL"
DEFAULT_PREFIX = "depot"
SCHEMES = ("redis", "rediss", "unix")
TIMEOUT_SECONDS = 5.0  # a Redis that hangs fails a request (503) after this, rather than holding its thread


def shown_url(url: str) -> str:
    """``url`` without its password, fit for a message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc="%s:***@%s" % (parts.username or "", host)))


def split_prefix(url: str) -> tuple[str, str]:
    """(the URL redis-py is given, the key prefix): ``prefix`` is Depot's query parameter, not redis-py's."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in query if name == "prefix"), DEFAULT_PREFIX)
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


@contextmanager
def answered() -> Iterator[None]:
    """A Redis that stops answering after the start fails the request that needed it: 503 CACHE_UNAVAILABLE (a
    cache entry or invalidation silently lost could serve stale answers; a lost count or generation, accept
    credentials that are no longer valid)."""
    try:
        yield
    except redis.RedisError as exc:
        raise DepotError("CACHE_UNAVAILABLE", 503, "the Redis of %s did not answer (%s)"
                         % (CACHE_URL_ENV, type(exc).__name__)) from None


class RedisServer:
    """One connection pool to the Redis DEPOT_CACHE_URL names, checked by a PING when opened."""

    def __init__(self, url: str) -> None:
        self.url = url
        if urlsplit(url).scheme not in SCHEMES:
            raise CacheServerError("%s=%s is not a Redis URL: expected redis://host:port/db (or rediss://, "
                                   "unix://)" % (CACHE_URL_ENV, shown_url(url)))
        address, self.prefix = split_prefix(url)
        if not self.prefix or ":" in self.prefix:
            raise CacheServerError("%s=%s: prefix is a non-empty name without ':'" % (CACHE_URL_ENV, shown_url(url)))
        try:
            self.client = redis.Redis.from_url(address, socket_connect_timeout=TIMEOUT_SECONDS,
                                               socket_timeout=TIMEOUT_SECONDS)
        except ValueError as exc:
            raise CacheServerError("%s=%s: %s" % (CACHE_URL_ENV, shown_url(url), exc)) from None
        try:
            self.client.ping()
        except redis.RedisError as exc:
            self.client.close()
            raise CacheServerError("%s=%s: Redis does not answer (%s)" % (CACHE_URL_ENV, shown_url(url), exc)) \
                from None

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix,) + parts)

    def cache(self, settings: dict[str, dict[str, Any]],
              resolve_blob: Optional[Callable[[dict[str, Any]], Any]] = None) -> "RedisCache":
        return RedisCache(self, settings, resolve_blob)

    def rate_limit(self, name: str, rate: str, count: int, window_seconds: float) -> "RedisRateLimit":
        """The limit ``name``: ``rate`` as the schema writes it, ``count`` hits per ``window_seconds`` (parsed by
        app.identity.ratelimit)."""
        return RedisRateLimit(self, name, rate, count, window_seconds)

    def generation(self) -> "RedisGeneration":
        return RedisGeneration(self)

    def health(self, detail: bool = False) -> dict[str, Any]:
        try:
            ok = bool(self.client.ping())
        except redis.RedisError:
            ok = False
        return dict({"kind": "redis", "ok": ok}, **({"url": shown_url(self.url)} if detail else {}))

    def close(self) -> None:
        self.client.close()


class RedisCache:
    """interfaces.Cache in Redis: each entry a string whose TTL Redis keeps (PX), so an expired entry is gone."""

    def __init__(self, server: RedisServer, settings: dict[str, dict[str, Any]],
                 resolve_blob: Optional[Callable[[dict[str, Any]], Any]] = None) -> None:
        self.server = server
        self.settings = settings  # kind -> {"enabled", "max_entry_bytes", "default_ttl_seconds"}
        self.resolve_blob = resolve_blob

    def _key(self, kind: str, key: str) -> str:
        return self.server.key("cache", kind, key)

    def enabled(self, kind: str) -> bool:
        return bool(self.settings.get(kind, {}).get("enabled", False))

    def get(self, kind: str, key: str) -> tuple[bool, Any]:
        if not self.enabled(kind):
            return False, None
        with answered():
            raw = self.server.client.get(self._key(kind, key))
        if raw is None:
            CACHE_LOOKUPS.labels(kind, "miss").inc()
            return False, None
        CACHE_LOOKUPS.labels(kind, "hit").inc()
        return True, loads(raw if isinstance(raw, bytes) else raw.encode(), self.resolve_blob)

    def put(self, kind: str, key: str, value: Any, ttl_seconds: Optional[int] = None) -> bool:
        """Store unless caching is off or the entry is larger than max_entry_bytes; returns whether stored. An
        entry whose TTL has already run out is stored as expired: whatever the key held is gone."""
        settings = self.settings.get(kind, {})
        if not settings.get("enabled", False):
            return False
        ttl = ttl_seconds if ttl_seconds is not None else settings.get("default_ttl_seconds", 300)
        raw = dumps(value)
        limit = settings.get("max_entry_bytes")
        if limit is not None and len(raw) > limit:
            return False
        milliseconds = int(ttl * 1000)
        if milliseconds <= 0:
            self.invalidate(kind, key)
        else:
            with answered():
                self.server.client.set(self._key(kind, key), raw, px=milliseconds)
        return True

    def invalidate(self, kind: str, key: str) -> None:
        with answered():
            self.server.client.delete(self._key(kind, key))


# A sliding window per key, as app.identity.ratelimit.RateLimiter keeps in memory: a sorted set of the hits of the
# last window (scored by Redis's own clock in milliseconds, so every process and node counts on one clock), pruned,
# counted and added to in one atomic script. Returns 0 when the hit is allowed (and recorded), else the
# milliseconds until the oldest hit leaves the window.
_SLIDING_WINDOW = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - ms)
end
redis.call('ZADD', KEYS[1], ms, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""


class RedisRateLimit:
    """At most ``count`` hits per ``window`` for each key, counted in Redis: every process sees the same hits."""

    def __init__(self, server: RedisServer, name: str, rate: str, count: int, window_seconds: float) -> None:
        self.server, self.name, self.rate, self.count = server, name, rate, count
        self.window_ms = int(window_seconds * 1000)
        self.script = server.client.register_script(_SLIDING_WINDOW)
        self.instance = uuid.uuid4().hex  # with a count of this limiter's hits, names each hit apart from all others
        self.hits = itertools.count()

    def hit(self, key: Hashable) -> int:
        """Record a hit; returns 0 when allowed, else the seconds to wait before the next would be."""
        member = "%s:%d" % (self.instance, next(self.hits))
        with answered():
            waited = int(self.script(keys=[self.server.key("login", self.name, self.rate, json.dumps(key))],
                                     args=[self.count, self.window_ms, member]))
        return 0 if waited == 0 else max(1, -(-waited // 1000))


class RedisGeneration:
    """interfaces.Generation in Redis: one counter, bumped (INCR) by every process that ends a credential."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.key = server.key("identity", "generation")

    def current(self) -> int:
        with answered():
            value = self.server.client.get(self.key)
        return 0 if value is None else int(value)

    def bump(self) -> None:
        with answered():
            self.server.client.incr(self.key)
