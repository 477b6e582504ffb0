"""Response and blob caches with a TTL, kept in the state database: the embedded cache (interfaces.Cache).

A cache entry is advisory: it is written outside any transaction and an expired or unreadable entry is a miss.
"""
import time
from typing import Any, Callable, Optional

from app.metrics import CACHE_LOOKUPS
from app.stores.codec import dumps, loads
from app.stores.state import CACHE_SPACE


class CacheStore:
    def __init__(self, state: Any, settings: dict[str, dict[str, Any]],
                 resolve_blob: Optional[Callable[[dict[str, Any]], Any]] = None) -> None:
        self.state = state
        self.settings = settings  # kind -> {"enabled", "max_entry_bytes", "default_ttl_seconds"}
        self.resolve_blob = resolve_blob

    def _key(self, kind: str, key: str) -> bytes:
        return CACHE_SPACE + kind.encode() + b"\x00" + key.encode("utf-8")

    def enabled(self, kind: str) -> bool:
        return bool(self.settings.get(kind, {}).get("enabled", False))

    def get(self, kind: str, key: str) -> tuple[bool, Any]:
        if not self.enabled(kind):
            return False, None
        raw = self.state.get(self._key(kind, key))
        if raw is None:
            CACHE_LOOKUPS.labels(kind, "miss").inc()
            return False, None
        entry = loads(raw, self.resolve_blob)
        if entry["expires_at"] <= time.time():
            self.state.write([], [self._key(kind, key)])
            CACHE_LOOKUPS.labels(kind, "miss").inc()
            return False, None
        CACHE_LOOKUPS.labels(kind, "hit").inc()
        return True, entry["value"]

    def put(self, kind: str, key: str, value: Any, ttl_seconds: Optional[int] = None) -> bool:
        """Store unless caching is off or the entry is larger than max_entry_bytes; returns whether stored."""
        settings = self.settings.get(kind, {})
        if not settings.get("enabled", False):
            return False
        ttl = ttl_seconds if ttl_seconds is not None else settings.get("default_ttl_seconds", 300)
        raw = dumps({"expires_at": time.time() + ttl, "value": value})
        limit = settings.get("max_entry_bytes")
        if limit is not None and len(raw) > limit:
            return False
        self.state.write([(self._key(kind, key), raw)])
        return True

    def invalidate(self, kind: str, key: str) -> None:
        self.state.write([], [self._key(kind, key)])
